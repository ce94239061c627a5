"""What every khmer-ocr DAG shares in its definition: the @dag settings, form parameters, pools and queues,
retry policies and default args.

Cheap to import (DAG parsing): only airflow.sdk names, constants and khmer_ocr.names (which imports nothing).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag

from khmer_ocr.names import MODEL_NAME
from khmer_ocr_airflow.callbacks import on_dag_failure, on_task_failure

START_DATE = datetime(2025, 1, 1)
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
# Training on a GPU worker: its pool (one run per GPU) and queue, the training retry policy.
GPU_TRAINING = {"pool": GPU_POOL, "queue": GPU_QUEUE, **TRAINING}

# Every task: the failure summary, no retry unless it says so, at most an hour unless it says otherwise.
DEFAULT_ARGS = {
    "owner": "khmer-ocr",
    "on_failure_callback": on_task_failure,
    "retries": 0,
    "execution_timeout": timedelta(hours=1),
}


def khmer_ocr_dag(
    dag_id: str,
    doc_md: str | None,
    tags: list[str],
    params: dict[str, Param],
    *,
    schedule: Any = None,
    max_active_runs: int | None = 1,
):
    """The @dag decorator with what every khmer-ocr DAG shares: the start date, no catchup, the tag
    khmer-ocr, the default args, the failure summary callback (and one run at a time unless
    max_active_runs is None: Airflow's default)."""
    limit = {} if max_active_runs is None else {"max_active_runs": max_active_runs}
    return dag(
        dag_id=dag_id,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        tags=["khmer-ocr", *tags],
        doc_md=doc_md,
        default_args=DEFAULT_ARGS,
        on_failure_callback=on_dag_failure,
        params=params,
        **limit,
    )


# --------------------------------------------------------------------------------------- form params
def data_param(description: str) -> Param:
    """A dataset folder or s3:// prefix; empty: the latest dataset khmer_ocr_data published."""
    return Param("", type="string", description=description)


def profile_param(description: str = "demo: minutes on a CPU; full: GPU schedule.") -> Param:
    return Param("demo", enum=TRAIN_PROFILES, description=description)


def overrides_param(
    description: str = "Training overrides KEY=VALUE.", default: list[str] | None = None
) -> Param:
    return Param(list(default or []), type="array", items={"type": "string"}, description=description)


def gates_param(
    default: str = "milestones", description: str = "Gate set (khmer_ocr/configs/gates) or YAML path."
) -> Param:
    return Param(default, type="string", description=description)


def num_samples_param(description: str) -> Param:
    return Param(0, type="integer", minimum=0, description=description)


def model_name_param(description: str = "The registered model in MLflow.") -> Param:
    return Param(MODEL_NAME, type="string", description=description)


def eval_pages_param(default: int = 12) -> Param:
    return Param(
        default,
        type="integer",
        minimum=0,
        description="Synthetic pages (the pages profile, test texts; generated once and validated) the "
        "evaluation also reads: page CER and line-finding recall / precision per page kind, logged beside "
        "the line metrics and shown in the model card, not gated. 0: lines only.",
    )
