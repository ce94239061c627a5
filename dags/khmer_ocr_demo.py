"""
### khmer_ocr_demo: the whole platform, end to end, in a few minutes on a CPU

`data` (the demo dataset) -> `validate` (Great Expectations) -> `train` (`production_fast`, demo profile,
fine-tuned from the committed reference model: well under a minute on 2 cores) -> `evaluate` (test splits,
gate set **gates**, attached to the MLflow run) -> `register` (a new version of `khmer-ocr`, alias
`candidate`) -> `auto_approve` (recorded in MLflow as approved_by=auto_approve: **for the local demo
only**) -> `wait_for_approval` (the same deferrable approval step as `khmer_ocr_promotion`; already
approved, it goes straight on) -> `promote` (alias `champion`) -> `deploy` (TorchServe: archive, smoke
test, switch).

It calls the same library functions as the other DAGs. If the new model is not better than the current
champion on the same data, `promote` is skipped and `deploy` serves the current champion. This DAG does not
emit the champion Asset (it deploys itself; `khmer_ocr_deploy` is for promotions made by people).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from khmer_ocr_airflow.callbacks import on_dag_failure
from khmer_ocr_airflow.common import (
    DEFAULT_ARGS,
    DEPLOY_QUEUE,
    INFRA,
    MODEL_NAME,
    NO_RETRY,
    START_DATE,
    TRAIN_CONFIGS,
    TRAIN_PROFILES,
    TRAINING,
)
from khmer_ocr_airflow.operators import ModelApprovalOperator

REFERENCE = "reference"


@dag(
    dag_id="khmer_ocr_demo",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["khmer-ocr", "demo"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    on_failure_callback=on_dag_failure,
    params={
        "data_profile": Param("demo", enum=["demo", "reference"], description="Data profile."),
        "config": Param("production_fast", enum=TRAIN_CONFIGS, description="Training configuration."),
        "profile": Param("demo", enum=TRAIN_PROFILES, description="demo: minutes on a CPU."),
        "init_from": Param(
            REFERENCE,
            type="string",
            description="Start from: `reference` (the committed reference model), a model reference, or "
            "empty for random weights (a minute of training then reads almost nothing).",
        ),
        "overrides": Param(
            ["optim.lr=0.0003", "max_steps_per_epoch=40", "optim.epochs=3"],
            type="array",
            items={"type": "string"},
            description="Training overrides KEY=VALUE.",
        ),
        "gates": Param(
            "demo",
            type="string",
            description="Gate set (khmer_ocr/configs/gates) or YAML path; `demo` asks what a minute of "
            "CPU fine-tuning reaches (milestone 1-2 character accuracy, latency).",
        ),
        "num_samples": Param(0, type="integer", minimum=0, description="Lines of data; 0: the profile's."),
        "model_name": Param(MODEL_NAME, type="string", description="The registered model in MLflow."),
        "deploy": Param(True, type="boolean", description="Deploy the champion to TorchServe at the end."),
    },
)
def khmer_ocr_demo():
    @task(execution_timeout=timedelta(minutes=30), **INFRA)
    def data(params=None) -> str:
        from khmer_ocr_airflow.common import data_config, fail_fast, state_dir

        from khmer_ocr.data.dataset import generate_dataset

        cfg = data_config(params["data_profile"], num_samples=params["num_samples"])
        out = state_dir() / "datasets" / cfg.name
        with fail_fast():
            result = generate_dataset(cfg, out, progress=False)
        print(f"dataset {result.version}: {result.num_samples} lines at {out} ({result.generated} rendered)")
        return str(out)

    @task(execution_timeout=timedelta(minutes=30), **NO_RETRY)
    def validate(dataset: str, ti=None) -> str:
        from khmer_ocr_airflow.common import validate as run_validation

        return run_validation(dataset, ti)["uri"]

    @task(execution_timeout=timedelta(hours=1), **TRAINING)
    def train(dataset: str, params=None, run_id=None) -> dict:
        from khmer_ocr_airflow.common import run_folder
        from khmer_ocr_airflow.common import train as run_training
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        init_from = params["init_from"]
        if init_from == REFERENCE:
            from khmer_ocr.inference import REFERENCE_MODEL

            init_from = str(REFERENCE_MODEL)
        out = run_folder("demo", run_id)
        with MlflowRegistryHook().environment() as uri:
            run = run_training(
                params["config"], dataset, out, params["profile"], params["overrides"], init_from, uri
            )
        print(f"{run['name']}: val char accuracy {run['val_char_accuracy']:.2%}; model at {run['model_dir']}")
        return {**run, "data": dataset}

    @task(execution_timeout=timedelta(minutes=30), **INFRA)
    def evaluate(run: dict, params=None) -> dict:
        from pathlib import Path

        from khmer_ocr_airflow.common import evaluate as run_evaluation
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        report = Path(run["out_dir"]) / "evaluation.json"
        with MlflowRegistryHook().environment() as uri:
            return run_evaluation(run["model_dir"], run["data"], params["gates"], run["run_id"], uri, report)

    @task(multiple_outputs=True, execution_timeout=timedelta(minutes=10), **INFRA)
    def register(evaluation: dict, params=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from khmer_ocr_airflow.common import by, fail_fast, version_dict
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import register as register_version

        if not evaluation["passed"]:
            raise AirflowFailException(
                f"the demo model fails the {params['gates']} gates {evaluation['failed_gates']}: "
                "not registered"
            )
        with MlflowRegistryHook().environment() as uri, fail_fast():
            info = register_version(
                evaluation["run_id"], by=by(dag_run), name=params["model_name"], tracking_uri=uri
            )
        print(f"registered {info.name} v{info.version} {info.aliases}")
        return version_dict(info)

    @task(execution_timeout=timedelta(minutes=10), **INFRA)
    def auto_approve(version: dict, params=None) -> str:
        from khmer_ocr_airflow.common import fail_fast
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import approve

        with MlflowRegistryHook().environment() as uri, fail_fast():
            approve(
                version["version"], "auto_approve", "local demo", name=params["model_name"], tracking_uri=uri
            )
        return version["version"]

    @task(execution_timeout=timedelta(minutes=30), **INFRA)
    def promote(version: dict, approval: dict, params=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from khmer_ocr_airflow.common import by, version_dict
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import PromotionRefused
        from khmer_ocr.registry import promote as promote_version

        with MlflowRegistryHook().environment() as uri:
            try:
                reason = f"approved by {approval['by']}"
                info = promote_version(
                    version["version"], by(dag_run), reason, name=params["model_name"], tracking_uri=uri
                )
            except PromotionRefused as exc:  # e.g. not better than the champion: that one stays and is served
                raise AirflowSkipException(f"not promoted: {exc.reason}") from exc
        print(f"{info.name} v{info.version} is the champion")
        return version_dict(info)

    @task(trigger_rule="none_failed", queue=DEPLOY_QUEUE, execution_timeout=timedelta(minutes=30), **INFRA)
    def deploy(params=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
        from khmer_ocr_airflow.common import deploy_model
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import CHAMPION, get_version

        if not params["deploy"]:
            raise AirflowSkipException("deploy is off")
        with MlflowRegistryHook().environment() as uri:
            champion = get_version(CHAMPION, name=params["model_name"], tracking_uri=uri)
        if champion is None:
            raise AirflowFailException("no champion to deploy")
        return deploy_model(champion.uri, MODEL_NAME)

    version = register(evaluate(train(validate(data()))))
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
