"""
### khmer_ocr_phase3_2_optimization: phase 3.2, from the best phase-3.1 model

`setup` -> `train` (config `phase3_2`, transfer from the starting model, `gpu` pool and queue) -> `evaluate`
(test splits, attached to the MLflow run) -> `check_gates` (the milestone gates: a failing gate fails the run,
not retried) -> `register` (a new version of `khmer-ocr` with alias `candidate`: ready for
`khmer_ocr_promotion`).

- **init_from** empty: the model `khmer_ocr_phase3_1_tuning` registered last (Asset
  `khmer-ocr://models/phase3_1/best`). Or any reference: `models:/khmer-ocr/<version>`,
  `models:/khmer-ocr@champion`, a model folder or a checkpoint.
- **data** empty: the dataset of the latest `khmer_ocr_data` run.

Library calls: `khmer_ocr.training.phases.train_config`, `khmer_ocr.evaluation.evaluate`,
`khmer_ocr.registry.log_evaluation / register`. The CLI equivalent:
`khmer-ocr train phase3_2 --init-from ...`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from khmer_ocr_airflow.callbacks import on_dag_failure
from khmer_ocr_airflow.common import (
    DATASET,
    DEFAULT_ARGS,
    GPU_POOL,
    GPU_QUEUE,
    INFRA,
    NO_RETRY,
    PHASE3_1_BEST,
    START_DATE,
    TRAIN_PROFILES,
    TRAINING,
)


@dag(
    dag_id="khmer_ocr_phase3_2_optimization",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["khmer-ocr", "training", "phase3_2"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    on_failure_callback=on_dag_failure,
    params={
        "init_from": Param(
            "",
            type="string",
            description="Model to start from: models:/khmer-ocr/<version>, models:/khmer-ocr@<alias>, "
            "a model folder or checkpoint; empty: the best phase-3.1 model registered last.",
        ),
        "data": Param(
            "",
            type="string",
            description="Dataset folder or s3:// prefix; empty: the latest dataset published by "
            "khmer_ocr_data.",
        ),
        "profile": Param(
            "demo", enum=TRAIN_PROFILES, description="demo: minutes on a CPU; full: GPU schedule."
        ),
        "overrides": Param(
            [], type="array", items={"type": "string"}, description="Training overrides KEY=VALUE."
        ),
        "gates": Param(
            "milestones", type="string", description="Gate set (khmer_ocr/configs/gates) or YAML path."
        ),
        "out": Param("", type="string", description="Run folder; empty: <state>/runs/phase3_2/<run id>."),
    },
)
def khmer_ocr_phase3_2_optimization():
    @task(inlets=[DATASET, PHASE3_1_BEST], **NO_RETRY)
    def setup(params=None, run_id=None, inlet_events=None) -> dict:
        from khmer_ocr_airflow.common import latest_event, run_folder

        init_from = params["init_from"] or latest_event(inlet_events, PHASE3_1_BEST, "phase-3.1 model")["uri"]
        data = params["data"] or latest_event(inlet_events, DATASET, "dataset")["uri"]
        out = params["out"] or str(run_folder("phase3_2", run_id))
        print(f"phase 3.2 from {init_from} on {data} ({params['profile']} profile) -> {out}")
        return {"init_from": init_from, "data": data, "out": out}

    @task(pool=GPU_POOL, queue=GPU_QUEUE, execution_timeout=timedelta(hours=48), **TRAINING)
    def train(plan: dict, params=None) -> dict:
        from khmer_ocr_airflow.common import train as run_training
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        with MlflowRegistryHook().environment() as uri:
            run = run_training(
                "phase3_2",
                plan["data"],
                plan["out"],
                params["profile"],
                params["overrides"],
                plan["init_from"],
                uri,
            )
        return {**run, "data": plan["data"]}

    @task(execution_timeout=timedelta(hours=2), **INFRA)
    def evaluate(run: dict, params=None) -> dict:
        from pathlib import Path

        from khmer_ocr_airflow.common import evaluate as run_evaluation
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        report = Path(run["out_dir"]) / "evaluation.json"
        with MlflowRegistryHook().environment() as uri:
            return run_evaluation(run["model_dir"], run["data"], params["gates"], run["run_id"], uri, report)

    @task(**NO_RETRY)
    def check_gates(evaluation: dict, params=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        if not evaluation["passed"]:
            raise AirflowFailException(
                f"phase 3.2 model fails the {params['gates']} gates {evaluation['failed_gates']} "
                f"(char accuracy {evaluation['char_accuracy']:.2%}): not registered"
            )
        print(f"all {params['gates']} gates pass (char accuracy {evaluation['char_accuracy']:.2%})")
        return evaluation

    @task(execution_timeout=timedelta(minutes=30), **INFRA)
    def register(evaluation: dict, dag_run=None) -> dict:
        from khmer_ocr_airflow.common import by, fail_fast, version_dict
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import register as register_version

        with MlflowRegistryHook().environment() as uri, fail_fast():
            info = register_version(evaluation["run_id"], by=by(dag_run), tracking_uri=uri)
        print(f"registered khmer-ocr v{info.version} {info.aliases}: promote it with khmer_ocr_promotion")
        return version_dict(info)

    register(check_gates(evaluate(train(setup()))))


khmer_ocr_phase3_2_optimization()
