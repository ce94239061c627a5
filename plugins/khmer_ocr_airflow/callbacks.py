"""Failure callbacks shared by every khmer-ocr DAG: one clear summary in the log instead of a bare trace.

on_task_failure runs in the task's process after its last try failed (task-level on_failure_callback, set
through each DAG's default_args); on_dag_failure runs when a DAG run fails (DAG-level callback).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("khmer_ocr_airflow")

_HINTS = (
    ("AirflowFailException", "a deterministic failure (validation, gates, refused promotion): not retried; "
     "fix the input and trigger the DAG again"),
    ("Timeout", "the step ran past its execution_timeout or approval timeout"),
    ("Serving", "TorchServe: check the khmer_ocr_torchserve connection and that TorchServe runs"),
    ("Mlflow", "MLflow: check the khmer_ocr_mlflow connection and that the tracking server runs"),
    ("Storage", "storage: check the dataset path or the S3 endpoint and credentials"),
)  # fmt: skip


def _hint(error: str) -> str:
    for key, hint in _HINTS:
        if key.lower() in error.lower():
            return hint
    return "see the task log above the summary for the traceback"


def failure_summary(context: dict[str, Any]) -> str:
    """A few lines: what failed, where, the error, the run's parameters and what to look at."""
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    exc = context.get("exception")
    error = f"{type(exc).__name__}: {exc}" if exc is not None else str(context.get("reason") or "unknown")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?")
    run_id = getattr(ti, "run_id", None) or getattr(dag_run, "run_id", "?")
    lines = [f"khmer-ocr: FAILED {dag_id} / run {run_id}"]
    if ti is not None:
        where = f"  task {ti.task_id}" + (f"[{ti.map_index}]" if getattr(ti, "map_index", -1) >= 0 else "")
        tries = getattr(ti, "try_number", None)
        lines.append(where + (f", try {tries}" if tries else ""))
    lines.append(f"  error: {error}"[:2000])
    params = context.get("params") or {}
    if params:
        shown = ", ".join(f"{k}={params[k]!r}" for k in sorted(params))
        lines.append(f"  params: {shown}"[:1000])
    lines.append(f"  hint: {_hint(error)}")
    url = getattr(ti, "log_url", None) if ti is not None else None
    if url:
        lines.append(f"  log: {url}")
    return "\n".join(lines)


def on_task_failure(context: dict[str, Any]) -> None:
    try:
        log.error("%s", failure_summary(context))
    except Exception:  # a callback must never hide the original failure
        log.exception("khmer-ocr: could not summarise the failure")


def on_dag_failure(context: dict[str, Any]) -> None:
    try:
        log.error("%s", failure_summary(context))
    except Exception:
        log.exception("khmer-ocr: could not summarise the failure")
