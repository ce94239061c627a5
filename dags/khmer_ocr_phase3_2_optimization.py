"""
### khmer_ocr_phase3_2_optimization: phase 3.2, from the best phase-3.1 model

`setup` -> `train` (config `phase3_2`, transfer from the starting model, `gpu` pool and queue) -> `evaluate`
(test splits, and the **eval_pages** synthetic pages of `page_data` read whole: page CER and line finding,
not gated; attached to the MLflow run) -> `check_gates` (the milestone gates: a failing gate fails the run,
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

from airflow.sdk import Param, task
from khmer_ocr_airflow.assets import DATASET, PHASE3_1_BEST
from khmer_ocr_airflow.settings import (
    GPU_TRAINING,
    INFRA,
    NO_RETRY,
    data_param,
    eval_pages_param,
    gates_param,
    khmer_ocr_dag,
    overrides_param,
    profile_param,
)
from khmer_ocr_airflow.tasks import evaluate_task, page_data_task


@khmer_ocr_dag(
    "khmer_ocr_phase3_2_optimization",
    __doc__,
    ["training", "phase3_2"],
    {
        "init_from": Param(
            "",
            type="string",
            description="Model to start from: models:/khmer-ocr/<version>, models:/khmer-ocr@<alias>, "
            "a model folder or checkpoint; empty: the best phase-3.1 model registered last.",
        ),
        "data": data_param(
            "Dataset folder or s3:// prefix; empty: the latest dataset published by khmer_ocr_data."
        ),
        "profile": profile_param(),
        "overrides": overrides_param(),
        "gates": gates_param(),
        "eval_pages": eval_pages_param(),
        "out": Param("", type="string", description="Run folder; empty: <state>/runs/phase3_2/<run id>."),
    },
)
def khmer_ocr_phase3_2_optimization():
    @task(inlets=[DATASET, PHASE3_1_BEST], **NO_RETRY)
    def setup(params=None, run_id=None, inlet_events=None) -> dict:
        from khmer_ocr_airflow.paths import run_folder
        from khmer_ocr_airflow.tasks import latest_event

        init_from = params["init_from"] or latest_event(inlet_events, PHASE3_1_BEST, "phase-3.1 model")["uri"]
        data = params["data"] or latest_event(inlet_events, DATASET, "dataset")["uri"]
        out = params["out"] or str(run_folder("phase3_2", run_id))
        print(f"phase 3.2 from {init_from} on {data} ({params['profile']} profile) -> {out}")
        return {"init_from": init_from, "data": data, "out": out}

    @task(execution_timeout=timedelta(hours=48), **GPU_TRAINING)
    def train(plan: dict, params=None) -> dict:
        from khmer_ocr_airflow.tasks import train as run_training

        return run_training("phase3_2", plan["data"], plan["out"], params, plan["init_from"])

    evaluate = evaluate_task(execution_timeout=timedelta(hours=2), **INFRA)
    page_data = page_data_task(execution_timeout=timedelta(minutes=30), **NO_RETRY)

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
        from khmer_ocr_airflow.tasks import register as register_run

        return register_run(evaluation["run_id"], dag_run)

    register(check_gates(evaluate(train(setup()), page_data())))


khmer_ocr_phase3_2_optimization()
