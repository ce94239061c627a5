"""
### khmer_ocr_demo: the whole platform, end to end, in a few minutes on a CPU

`data` (the demo dataset; `$KHMER_OCR_DATASETS/demo` when set, e.g. on S3) -> `validate` (Great
Expectations) -> `train` (`production_fast`, demo profile, fine-tuned from the committed reference model:
well under a minute on 2 cores; on the `gpu` queue, the default pool) -> `evaluate` (test splits, gate set
**gates**, and the **eval_pages** synthetic pages of `page_data` read whole: page CER and line finding
beside the line metrics, not gated; all attached to the MLflow run) -> `register` (a new version of
`khmer-ocr`, alias `candidate`) -> `auto_approve` (recorded in MLflow as approved_by=auto_approve: **for
the local demo only**) -> `wait_for_approval` (the same deferrable approval step as `khmer_ocr_promotion`;
already approved, it goes straight on) -> `promote` (alias `champion`) -> `deploy` (TorchServe: archive,
smoke test, switch).

It calls the same library functions as the other DAGs. If the new model is not better than the current
champion on the same data, `promote` is skipped and `deploy` serves the current champion. This DAG does not
emit the champion Asset (it deploys itself; `khmer_ocr_deploy` is for promotions made by people).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, task
from khmer_ocr_airflow.operators import ModelApprovalOperator
from khmer_ocr_airflow.settings import (
    DEPLOY_QUEUE,
    GPU_QUEUE,
    INFRA,
    NO_RETRY,
    TRAINING,
    eval_pages_param,
    gates_param,
    khmer_ocr_dag,
    model_name_param,
    num_samples_param,
    overrides_param,
    profile_param,
)
from khmer_ocr_airflow.tasks import evaluate_task, page_data_task

from khmer_ocr.names import MODEL_NAME, TRAIN_CONFIGS

REFERENCE = "reference"


@khmer_ocr_dag(
    "khmer_ocr_demo",
    __doc__,
    ["demo"],
    {
        "data_profile": Param("demo", enum=["demo", "reference"], description="Data profile."),
        "config": Param("production_fast", enum=list(TRAIN_CONFIGS), description="Training configuration."),
        "profile": profile_param("demo: minutes on a CPU."),
        "init_from": Param(
            REFERENCE,
            type="string",
            description="Start from: `reference` (the committed reference model), a model reference, or "
            "empty for random weights (a minute of training then reads almost nothing).",
        ),
        "overrides": overrides_param(default=["optim.lr=0.0003", "max_steps_per_epoch=40", "optim.epochs=3"]),
        "gates": gates_param(
            "demo",
            "Gate set (khmer_ocr/configs/gates) or YAML path; `demo` asks what a minute of CPU fine-tuning "
            "reaches (milestone 1-2 character accuracy, latency).",
        ),
        "num_samples": num_samples_param("Lines of data; 0: the profile's."),
        "eval_pages": eval_pages_param(8),
        "model_name": model_name_param(),
        "deploy": Param(True, type="boolean", description="Deploy the champion to TorchServe at the end."),
    },
)
def khmer_ocr_demo():
    @task(execution_timeout=timedelta(minutes=30), **INFRA)
    def data(params=None) -> str:
        from khmer_ocr_airflow.paths import dataset_location
        from khmer_ocr_airflow.tasks import data_config, generate

        cfg = data_config(params["data_profile"], num_samples=params["num_samples"])
        return generate(cfg, dataset_location(cfg.name))

    @task(execution_timeout=timedelta(minutes=30), **NO_RETRY)
    def validate(dataset: str, ti=None) -> str:
        from khmer_ocr_airflow.tasks import validate as run_validation

        return run_validation(dataset, ti)["uri"]

    @task(queue=GPU_QUEUE, execution_timeout=timedelta(hours=1), **TRAINING)
    def train(dataset: str, params=None, run_id=None) -> dict:
        from khmer_ocr_airflow.paths import run_folder
        from khmer_ocr_airflow.tasks import train as run_training

        init_from = params["init_from"]
        if init_from == REFERENCE:
            from khmer_ocr.model_folder import REFERENCE_MODEL

            init_from = str(REFERENCE_MODEL)
        run = run_training(params["config"], dataset, run_folder("demo", run_id), params, init_from)
        print(f"{run['name']}: val char accuracy {run['val_char_accuracy']:.2%}; model at {run['model_dir']}")
        return run

    evaluate = evaluate_task(execution_timeout=timedelta(minutes=30), **INFRA)
    page_data = page_data_task(execution_timeout=timedelta(minutes=30), **NO_RETRY)

    @task(multiple_outputs=True, execution_timeout=timedelta(minutes=10), **INFRA)
    def register(evaluation: dict, params=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from khmer_ocr_airflow.tasks import register as register_run

        if not evaluation["passed"]:
            raise AirflowFailException(
                f"the demo model fails the {params['gates']} gates {evaluation['failed_gates']}: "
                "not registered"
            )
        return register_run(evaluation["run_id"], dag_run, params["model_name"])

    @task(execution_timeout=timedelta(minutes=10), **INFRA)
    def auto_approve(version: dict, params=None) -> str:
        from khmer_ocr_airflow.tasks import approve_automatically

        approve_automatically(version["version"], params["model_name"], "local demo")
        return version["version"]

    @task(execution_timeout=timedelta(minutes=30), **INFRA)
    def promote(version: dict, approval: dict, params=None, dag_run=None) -> dict:
        from khmer_ocr_airflow.tasks import promote as promote_version

        reason = f"approved by {approval['by']}"  # not better than the champion: skipped, that one is served
        return promote_version(
            version["version"], dag_run, reason, params["model_name"], skip_if_refused=True
        )

    @task(trigger_rule="none_failed", queue=DEPLOY_QUEUE, execution_timeout=timedelta(minutes=30), **INFRA)
    def deploy(params=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
        from khmer_ocr_airflow.tasks import deploy_model, registry

        from khmer_ocr.registry import CHAMPION

        if not params["deploy"]:
            raise AirflowSkipException("deploy is off")
        champion = registry("get_version", CHAMPION, name=params["model_name"])
        if champion is None:
            raise AirflowFailException("no champion to deploy")
        return deploy_model(champion.uri, MODEL_NAME)

    version = register(evaluate(train(validate(data())), page_data()))
    wait = ModelApprovalOperator(
        task_id="wait_for_approval",
        version=version["version"],
        model_name="{{ params.model_name }}",
        poll_interval=5,
        timeout_minutes=60,
        retries=2,
        retry_delay=timedelta(seconds=10),
    )
    auto_approve(version) >> wait
    promote(version, wait.output) >> deploy()


khmer_ocr_demo()
