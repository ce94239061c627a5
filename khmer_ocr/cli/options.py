"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
import os


def add_overrides(p: argparse.ArgumentParser, example: str) -> None:
    """--set KEY=VALUE (repeatable): override a config value."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )


def add_tracking(p: argparse.ArgumentParser) -> None:
    """--tracking-uri: where MLflow records the run."""
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI") or None,
        help="record the run in MLflow at this tracking URI (http://host:port, sqlite:///file.db); "
        "default: $MLFLOW_TRACKING_URI; neither given: no tracking",
    )
