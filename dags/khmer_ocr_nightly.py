"""
### khmer_ocr_nightly: fine-tune the champion on fresh data, keep it only if it is better

Every night at 02:00 (UTC): `champion` (skips the night when there is none yet) -> `fresh_data` (a new
dataset, seeded by the date) -> `validate` (Great Expectations) -> `train` (fine-tune from the champion's
exact version) -> `compare` (the new model and the champion on the **same** fresh test data; the new
model's evaluation is attached to its MLflow run) -> `register_if_better` (a new version with alias
`candidate` only if it reads more characters correctly than the champion; otherwise the task is skipped and
nothing is registered). Promotion stays a person's decision: `khmer_ocr_promotion`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from khmer_ocr_airflow.callbacks import on_dag_failure
from khmer_ocr_airflow.common import (
    DATA_PROFILES,
    DEFAULT_ARGS,
    GPU_POOL,
    GPU_QUEUE,
    INFRA,
    NO_RETRY,
    START_DATE,
    TRAIN_CONFIGS,
    TRAIN_PROFILES,
    TRAINING,
)

SAME_AS_CHAMPION = "same as the champion"


@dag(
    dag_id="khmer_ocr_nightly",
    schedule="0 2 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["khmer-ocr", "training", "nightly"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    on_failure_callback=on_dag_failure,
    params={
        "data_profile": Param("demo", enum=DATA_PROFILES, description="Data profile of the fresh dataset."),
        "num_samples": Param(0, type="integer", minimum=0, description="Lines; 0: the profile's."),
        "config": Param(
            SAME_AS_CHAMPION,
            enum=[SAME_AS_CHAMPION, *TRAIN_CONFIGS],
            description="Training configuration; default: the one the champion was trained with.",
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
    },
)
def khmer_ocr_nightly():
    @task(execution_timeout=timedelta(minutes=10), **INFRA)
    def champion() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from khmer_ocr_airflow.common import version_dict
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import CHAMPION, get_version

        with MlflowRegistryHook().environment() as uri:
            info = get_version(CHAMPION, tracking_uri=uri)
        if info is None:
            raise AirflowSkipException("no champion yet: promote a model first (khmer_ocr_promotion)")
        print(f"champion: khmer-ocr v{info.version} ({info.tags.get('config', '?')})")
        return version_dict(info)

    @task(execution_timeout=timedelta(hours=6), **INFRA)
    def fresh_data(params=None, dag_run=None) -> str:
        from khmer_ocr_airflow.common import data_config, fail_fast, state_dir

        from khmer_ocr.data.dataset import generate_dataset

        day = dag_run.run_after.strftime("%Y%m%d")
        cfg = data_config(params["data_profile"], [f"name=nightly-{day}"], params["num_samples"], int(day))
        out = state_dir() / "datasets" / cfg.name
        with fail_fast():
            result = generate_dataset(cfg, out, progress=False)
        print(f"fresh dataset {result.version}: {result.num_samples} lines at {out}")
        return str(out)

    @task(execution_timeout=timedelta(hours=2), **NO_RETRY)
    def validate(data: str, ti=None) -> str:
        from khmer_ocr_airflow.common import validate as run_validation

        return run_validation(data, ti)["uri"]

    @task(pool=GPU_POOL, queue=GPU_QUEUE, execution_timeout=timedelta(hours=24), **TRAINING)
    def train(current: dict, data: str, params=None, run_id=None) -> dict:
        from khmer_ocr_airflow.common import TRAIN_CONFIGS, run_folder
        from khmer_ocr_airflow.common import train as run_training
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        config = params["config"]
        if config == SAME_AS_CHAMPION:
            tag = current["config"]
            config = next((c for c in (tag, f"phase3_1/{tag}") if c in TRAIN_CONFIGS), "production_fast")
        out = run_folder("nightly", run_id)
        print(f"fine-tuning {config} from khmer-ocr v{current['version']} on {data}")
        with MlflowRegistryHook().environment() as uri:
            run = run_training(config, data, out, params["profile"], params["overrides"], current["uri"], uri)
        return {**run, "data": data}

    @task(execution_timeout=timedelta(hours=2), **INFRA)
    def compare(current: dict, run: dict, params=None) -> dict:
        from khmer_ocr_airflow.common import evaluate
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        with MlflowRegistryHook().environment() as uri:
            new = evaluate(run["model_dir"], run["data"], params["gates"], run["run_id"], uri)
            old = evaluate(current["uri"], run["data"], params["gates"], None, uri)
        better = (new["char_accuracy"] or 0.0) > (old["char_accuracy"] or 0.0)
        print(
            f"on {new['dataset_version']}: new {new['char_accuracy']:.2%}, champion v{current['version']} "
            f"{old['char_accuracy']:.2%} -> {'better' if better else 'not better'}"
        )
        return {"run_id": run["run_id"], "new": new, "champion": old, "better": better}

    @task(execution_timeout=timedelta(minutes=30), **INFRA)
    def register_if_better(comparison: dict, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from khmer_ocr_airflow.common import by, fail_fast, version_dict
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import register

        if not comparison["better"]:
            raise AirflowSkipException("the fine-tuned model does not beat the champion: nothing registered")
        with MlflowRegistryHook().environment() as uri, fail_fast():
            info = register(comparison["run_id"], by=by(dag_run), tracking_uri=uri)
        print(f"registered khmer-ocr v{info.version} {info.aliases}: promote it with khmer_ocr_promotion")
        return version_dict(info)

    current = champion()
    data = fresh_data()
    current >> data  # no champion: the night is skipped before any work
    run = train(current, validate(data))
    register_if_better(compare(current, run))


khmer_ocr_nightly()
