"""What every khmer-ocr DAG shares: assets, choices for Param forms, retry settings, paths, small helpers.

Cheap to import (DAG parsing): only airflow.sdk names and constants. Helpers that touch khmer_ocr import it
inside the function.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException

from khmer_ocr_airflow.callbacks import on_task_failure

START_DATE = datetime(2025, 1, 1)
MODEL_NAME = "khmer-ocr"

# ---------------------------------------------------------------------------------------------- assets
# A validated dataset version (extra: name, version, uri, num_samples, validation_report, counts).
DATASET = Asset(name="khmer_ocr_dataset", uri="khmer-ocr://datasets/latest", group="khmer-ocr")
# The best phase-3.1 model, registered (extra: version, model_uri, run_id, config, val_char_accuracy).
PHASE3_1_BEST = Asset(
    name="khmer_ocr_phase3_1_best", uri="khmer-ocr://models/phase3_1/best", group="khmer-ocr"
)
# The registry's champion alias moved (extra: version, model_uri, previous, by): khmer_ocr_deploy runs on it.
CHAMPION = Asset(name="khmer_ocr_champion", uri="khmer-ocr://registry/khmer-ocr/champion", group="khmer-ocr")

# --------------------------------------------------------------------------------------- form choices
# The seven phase-3.1 configurations (khmer_ocr.training.config.PHASE3_1; tests/test_dags.py checks they
# match: importing the library here would import torch on every DAG parse).
PHASE3_1_CONFIGS = [
    "conservative_small",
    "baseline_optimized",
    "focal_loss_experiment",
    "aggressive_learning",
    "fast_convergence",
    "large_model_regularized",
    "ctc_alignment_free",
]
TRAIN_CONFIGS = ["production_fast", "phase3_2", *(f"phase3_1/{c}" for c in PHASE3_1_CONFIGS)]
DATA_PROFILES = ["demo", "reference", "full"]
TRAIN_PROFILES = ["demo", "full"]

# ------------------------------------------------------------------------------------ task settings
# Pools must exist or the scheduler never runs their tasks (infra/airflow/init.sh creates them):
#   airflow pools set gpu 1 ...; airflow pools set datagen 8 ...; airflow pools set torchserve 1 ...
GPU_POOL = "gpu"  # training: one run per GPU worker
GPU_QUEUE = "gpu"  # the queue GPU workers listen to (CeleryExecutor); LocalExecutor ignores queues
DATAGEN_POOL = "datagen"  # mapped data-generation shards running at once
TORCHSERVE_POOL = "torchserve"  # deployments, one at a time
# Tasks that write TorchServe's model store run where it is mounted: the central machine's workers listen
# to `deploy` (docker-compose.yml; infra/compose.workers.yml elsewhere does not). LocalExecutor ignores it.
DEPLOY_QUEUE = "deploy"

# Steps that call MLflow, TorchServe or S3: retried with exponential backoff. Deterministic failures inside
# them (bad config, refused promotion, failed smoke test) are raised as AirflowFailException: never retried.
INFRA = {
    "retries": 3,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}
# Deterministic steps (validation, gates, comparisons): a retry would fail the same way.
NO_RETRY = {"retries": 0}
# Training resumes exactly from its last checkpoint, so a lost worker or GPU is worth one more try.
TRAINING = {"retries": 1, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": 2.0}

# Every task: the failure summary, no retry unless it says so, at most an hour unless it says otherwise.
DEFAULT_ARGS = {
    "owner": "khmer-ocr",
    "on_failure_callback": on_task_failure,
    "retries": 0,
    "execution_timeout": timedelta(hours=1),
}


@contextmanager
def fail_fast() -> Iterator[None]:
    """Turn the library's deterministic errors (bad config or dataset, a model that cannot load, a registry
    refusal such as PromotionRefused, a failed smoke test) into AirflowFailException: a clear message and no
    retry. Anything else (connection errors, timeouts) propagates and is retried by the task's settings."""
    from khmer_ocr.config import ConfigError
    from khmer_ocr.data.dataset import DatasetError
    from khmer_ocr.errors import DeployError, ModelLoadError, RegistryError

    try:
        yield
    except (ConfigError, DatasetError, ModelLoadError, RegistryError, DeployError) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------------------- paths
def state_dir() -> Path:
    """Where DAGs keep datasets, runs and archives: $KHMER_OCR_STATE, else ./.khmer-ocr."""
    return Path(os.environ.get("KHMER_OCR_STATE") or Path.cwd() / ".khmer-ocr").resolve()


def run_folder(kind: str, run_id: str) -> Path:
    """A folder per DAG run, e.g. <state>/runs/phase3_1/manual__2025-01-01T00_00_00"""
    return state_dir() / "runs" / kind / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


def by(dag_run: Any) -> str:
    """Who acts, for the registry's audit tags: the person who triggered the run, else the DAG."""
    user = getattr(dag_run, "triggering_user_name", None)
    dag_id = getattr(dag_run, "dag_id", "airflow")
    return f"{user} via {dag_id}" if user else f"airflow:{dag_id}"


def latest_event(inlet_events: Any, asset: Asset, what: str) -> dict[str, Any]:
    """The extra of the asset's latest event (an inlet of the task), or a clear failure."""
    events = inlet_events[asset]
    if not len(events):
        raise AirflowFailException(f"no {what} yet ({asset.uri}): produce one first, or give it as a param")
    return dict(events[-1].extra)


# ---------------------------------------------------------------------------------- library glue
def data_config(profile: str, overrides: list[str] | None = None, num_samples: int = 0, seed: int = -1):
    """A DataConfig from a packaged profile plus --set style overrides (num_samples / seed when given)."""
    from khmer_ocr.config import load_config, profile_path
    from khmer_ocr.data.config import DataConfig

    extra = list(overrides or [])
    if num_samples and num_samples > 0:
        extra.append(f"num_samples={int(num_samples)}")
    if seed is not None and seed >= 0:
        extra.append(f"seed={int(seed)}")
    with fail_fast():
        return load_config(DataConfig, profile_path("data", profile), extra)


def validate(uri: str, ti: Any = None) -> dict[str, Any]:
    """Great Expectations validation of a dataset; reports written beside it. A failing dataset raises
    AirflowFailException naming the failed checks and the report (also pushed as XCom validation_report)."""
    import logging

    # Great Expectations imported after Airflow logs every API it registers: keep its warnings only
    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
    from khmer_ocr import storage
    from khmer_ocr.data.validate import REPORT_HTML, validate_dataset

    with fail_fast():
        report = validate_dataset(uri, report_dir=uri, progress=False)
    html = storage.join(uri, REPORT_HTML)
    print(report.summary())
    print(f"validation report: {html}")
    if ti is not None:
        ti.xcom_push(key="validation_report", value=html)
    if not report.success:
        failed = ", ".join(f"{c.name} ({c.details})" for c in report.failed)
        raise AirflowFailException(
            f"dataset {report.version} at {uri} failed validation: {failed}; report: {html}"
        )
    return {"uri": uri, "version": report.version, "report": html, "checks": len(report.checks)}


def train(config: str, data: str, out: str | Path, profile: str, overrides: list[str], init_from: str | None,
          tracking_uri: str) -> dict[str, Any]:  # fmt: skip
    """khmer_ocr.training.phases.train_config, tracked in MLflow; a plain dict for XCom."""
    from khmer_ocr.training.phases import train_config

    with fail_fast():
        run = train_config(
            config, data, out, profile or None, list(overrides or []), init_from or None,
            progress=False, tracking_uri=tracking_uri,
        )  # fmt: skip
    r = run.result
    return {
        "name": run.name,
        "config": config,
        "run_id": run.run_id,
        "model_dir": str(r.model_dir),
        "out_dir": str(r.out_dir),
        "val_char_accuracy": run.val_char_accuracy,
        "val_sequence_accuracy": run.val_sequence_accuracy,
        "best_epoch": r.best_epoch,
        "best_metric": r.best_metric,
        "epochs_run": r.epochs_run,
        "stopped_early": r.stopped_early,
    }


def evaluate(model: str, data: str, gates: str, run_id: str | None, tracking_uri: str,
             report_path: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """khmer_ocr.evaluation.evaluate on the test splits + gates; attached to the MLflow run when given."""
    from khmer_ocr.evaluation.evaluate import evaluate as run_evaluation

    with fail_fast():
        report = run_evaluation(model, data, gates=gates)
    print(report.summary())
    if report_path:
        print(f"evaluation report: {report.write(report_path)}")
    if run_id:
        from khmer_ocr.registry import log_evaluation

        log_evaluation(run_id, report, tracking_uri)
    primary = report.splits[report.primary_split]
    return {
        "model": str(model),
        "run_id": run_id,
        "passed": report.passed,
        "split": report.primary_split,
        "char_accuracy": primary.get("char_accuracy"),
        "sequence_accuracy": primary.get("sequence_accuracy"),
        "dataset_version": report.dataset_version,
        "failed_gates": [g["name"] for g in report.gates if not g["passed"]],
    }


def version_dict(info: Any) -> dict[str, Any]:
    """A registry VersionInfo as XCom: version, uri, run_id, aliases, gates_passed, approval, metrics."""
    return {
        "version": info.version,
        "uri": info.uri,
        "run_id": info.run_id,
        "aliases": list(info.aliases),
        "gates_passed": info.gates_passed,
        "approval": info.approval,
        "char_accuracy": info.metric("char_accuracy"),
        "config": info.tags.get("config", ""),
    }


def deploy_model(model_ref: str, model_name: str = MODEL_NAME) -> dict[str, Any]:
    """khmer_ocr.torchserve.deploy.deploy on the TorchServe of the khmer_ocr_torchserve connection: archive
    into its model store, register beside the serving version, warm, smoke-test, switch, unregister the old.
    A failed smoke test (DeployError) is an AirflowFailException; the old version keeps serving."""
    from khmer_ocr.torchserve.deploy import deploy
    from khmer_ocr_airflow.hooks import MlflowRegistryHook, TorchServeHook

    torchserve = TorchServeHook()
    client = torchserve.get_conn()
    if not client.healthy():  # infrastructure, retried (deploy() would call it a DeployError: not retried)
        raise ConnectionError(f"TorchServe at {client.inference_url} is not healthy (or not running)")
    with MlflowRegistryHook().environment(), fail_fast():
        result = deploy(model_ref, client, torchserve.model_store, model_name=model_name)
    print(
        f"deployed {model_ref} as {result.model_name} version {result.version} (was "
        f"{result.previous or 'nothing'}); smoke test read {result.smoke.get('text')!r}"
    )
    return {
        "model_ref": model_ref,
        "model_name": result.model_name,
        "version": result.version,
        "previous": result.previous,
        "archive": str(result.archive),
        "smoke": result.smoke,
    }
