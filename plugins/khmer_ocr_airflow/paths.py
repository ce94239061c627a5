"""Where the DAGs keep what they write (cheap to import: DAG parsing)."""

from __future__ import annotations

import os
import re
from pathlib import Path


def state_dir() -> Path:
    """Where DAGs keep datasets, runs and archives: $KHMER_OCR_STATE, else ./.khmer-ocr."""
    return Path(os.environ.get("KHMER_OCR_STATE") or Path.cwd() / ".khmer-ocr").resolve()


def run_folder(kind: str, run_id: str) -> Path:
    """A folder per DAG run, e.g. <state>/runs/phase3_1/manual__2025-01-01T00_00_00"""
    return state_dir() / "runs" / kind / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


def dataset_location(name: str) -> str:
    """Where a DAG writes a new dataset: $KHMER_OCR_DATASETS/<name> (a folder or an s3:// prefix that every
    worker reaches: the distributed platform points it at its S3 server), else <state>/datasets/<name>."""
    root = os.environ.get("KHMER_OCR_DATASETS") or str(state_dir() / "datasets")
    return f"{root.rstrip('/')}/{name}"
