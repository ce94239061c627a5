"""`khmer-ocr` registry commands: register, approve, reject, promote, rollback, models."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path

from khmer_ocr.names import MODEL_NAME

REGISTRY_HELP = (
    "The registered model `khmer-ocr` in MLflow at --tracking-uri (default $MLFLOW_TRACKING_URI, else the "
    "MLflow of the local platform running from here (`make run`), else ./mlflow.db). Aliases: candidate "
    "(passes its gates), champion (promoted, served), previous (the champion before). Approval is the "
    "model-version tag approval=approved with approved_by (set in the MLflow UI, or with `khmer-ocr "
    "approve`)."
)


# Moving an alias from here triggers no Airflow DAG (the champion Asset is updated by DAG tasks only).
DEPLOY_HINT = (
    "  TorchServe keeps serving what it served: deploy the new champion with `khmer-ocr deploy` or by "
    "triggering the Airflow DAG khmer_ocr_deploy"
)


def _common(p: argparse.ArgumentParser, who: bool = True) -> None:
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI") or None,
        help="MLflow tracking/registry URI (http://host:port or sqlite:///file.db); default "
        "$MLFLOW_TRACKING_URI, else the local platform's MLflow when `make run` runs from here, else "
        "./mlflow.db",
    )
    p.add_argument("--name", default=MODEL_NAME, help="registered model name")
    if who:
        p.add_argument("--by", default=getpass.getuser(), help="who is acting (recorded in tags)")


def add_commands(sub: argparse._SubParsersAction) -> dict:
    """Register the registry subcommands; returns their handlers by name."""
    p = sub.add_parser(
        "register",
        help="register a tracked run's model (alias candidate if it passes its gates)",
        description="Create a model version from an MLflow run's logged model, tagged with its gate "
        "results, metrics, dataset, config and code versions. With --data the model is evaluated on that "
        "dataset first; --model registers a model folder (e.g. the reference model) through a new run. "
        + REGISTRY_HELP,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--run",
        help="MLflow run id (khmer-ocr train --tracking-uri prints it), or that training's --out folder "
        "(its mlflow_run.json names the run and the tracking server)",
    )
    src.add_argument("--model", help="a model folder to track as a new run, then register")
    p.add_argument("--data", help="evaluate on this dataset now (required for --model)")
    p.add_argument("--gates", default="milestones", help="gate set name or YAML path (default: milestones)")
    p.add_argument("--page-data", help="with --data: also read this page dataset's pages (not gated)")
    _common(p)
    p = sub.add_parser("approve", help="approve a model version for promotion", description=REGISTRY_HELP)
    p.add_argument("version", help="model version number")
    p.add_argument("--reason", default="", help="why (recorded)")
    _common(p)
    p = sub.add_parser("reject", help="reject a model version", description=REGISTRY_HELP)
    p.add_argument("version", help="model version number")
    p.add_argument("--reason", required=True, help="why (recorded)")
    _common(p)
    p = sub.add_parser(
        "promote",
        help="make an approved, gate-passing version the champion",
        description="Moves the alias champion to VERSION if it is approved, passes its gates and reads at "
        "least as many characters as the current champion on the same evaluation data; the old champion "
        "keeps the alias previous. Otherwise refuses and says why (exit 1). " + REGISTRY_HELP,
    )
    p.add_argument("version", help="model version number")
    p.add_argument("--reason", default="", help="why (recorded)")
    _common(p)
    p = sub.add_parser(
        "rollback", help="move champion back to the previous champion", description=REGISTRY_HELP
    )
    p.add_argument("--reason", default="", help="why (recorded)")
    _common(p)
    p = sub.add_parser("models", help="list the registered versions", description=REGISTRY_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p, who=False)
    return {
        "register": _register,
        "approve": _approve,
        "reject": _reject,
        "promote": _promote,
        "rollback": _rollback,
        "models": _models,
    }


def _show(info, what: str) -> int:
    aliases = ", ".join(info.aliases) or "no alias"
    gates = "passes its gates" if info.gates_passed else "fails its gates"
    print(f"{what}: {info.name} version {info.version} ({aliases}; {gates}; approval {info.approval})")
    return 0


def _register(args: argparse.Namespace) -> int:
    from khmer_ocr import registry

    run_id = args.run
    run_file = Path(args.run or "") / "mlflow_run.json"
    if args.run and run_file.is_file():  # a training's run folder
        recorded = json.loads(run_file.read_text(encoding="utf-8"))
        run_id = recorded["run_id"]
        args.tracking_uri = args.tracking_uri or recorded.get("tracking_uri")
        print(f"{args.run}: MLflow run {run_id} at {args.tracking_uri}")
    if args.model:
        from khmer_ocr.tracking import log_model_folder

        if not args.data:
            from khmer_ocr.errors import RegistryError

            raise RegistryError("--model needs --data: a model is registered with its evaluation")
        run_id = log_model_folder(args.model, tracking_uri=args.tracking_uri, run_name="imported-model")
        print(f"tracked {args.model} as run {run_id}")
    info = registry.register(
        run_id, data=args.data, gates=args.gates, page_data=args.page_data, by=args.by, name=args.name,
        tracking_uri=args.tracking_uri,
    )  # fmt: skip
    for key in sorted(k for k in info.tags if k.startswith(("gate.", "metric."))):
        print(f"  {key}: {info.tags[key]}")
    print(f"  line_finder_version: {info.tags.get('line_finder_version', '-')}")
    return _show(info, "registered")


def _approve(args: argparse.Namespace) -> int:
    from khmer_ocr import registry

    where = {"name": args.name, "tracking_uri": args.tracking_uri}
    info = registry.approve(args.version, args.by, args.reason, **where)
    return _show(info, f"approved by {args.by}")


def _reject(args: argparse.Namespace) -> int:
    from khmer_ocr import registry

    where = {"name": args.name, "tracking_uri": args.tracking_uri}
    info = registry.reject(args.version, args.by, args.reason, **where)
    return _show(info, f"rejected by {args.by}")


def _promote(args: argparse.Namespace) -> int:
    from khmer_ocr import registry

    where = {"name": args.name, "tracking_uri": args.tracking_uri}
    info = registry.promote(args.version, args.by, args.reason, **where)
    print(f"  {info.tags.get('comparison', '')}")
    _show(info, "promoted")
    print(DEPLOY_HINT)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from khmer_ocr import registry

    info = registry.rollback(args.by, args.reason, name=args.name, tracking_uri=args.tracking_uri)
    _show(info, "champion is now")
    print(DEPLOY_HINT)
    return 0


def _models(args: argparse.Namespace) -> int:
    from khmer_ocr import registry

    versions = registry.list_versions(name=args.name, tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps([v.to_dict() for v in versions], indent=1, ensure_ascii=False))
        return 0
    print(
        f"{'version':>7}  {'aliases':<20}{'approval':<10}{'gates':<6}{'char acc':>9}{'page CER':>9}"
        f"{'line rec':>9}  {'line finder':<13}config"
    )
    for v in versions:
        shown = [v.metric(k) for k in ("char_accuracy", "page_cer", "line_recall")]
        acc, cer, recall = (f"{x:.2%}" if x is not None else "-" for x in shown)
        print(
            f"{v.version:>7}  {','.join(v.aliases) or '-':<20}{v.approval:<10}"
            f"{'pass' if v.gates_passed else 'fail':<6}{acc:>9}{cer:>9}{recall:>9}  "
            f"{v.tags.get('line_finder_version', '-'):<13}{v.tags.get('config', '')}"
        )
    return 0
