"""
### khmer_ocr_nightly: fine-tune the champion on fresh data, keep it only if it is better

Every night at 02:00 (UTC): `champion` (skips the night when there is none yet) -> `fresh_data` (a new
dataset, seeded by the date) -> `validate` (Great Expectations) -> `train` (fine-tune from the champion's
exact version) -> `compare` (the new model and the champion on the **same** fresh test data; the new
model's evaluation, with the **eval_pages** synthetic pages of `page_data` read whole (page CER and line
finding, not compared), is attached to its MLflow run) -> `register_if_better` (a new version with alias
`candidate` only if it reads more characters correctly than the champion; otherwise the task is skipped and
nothing is registered). Promotion stays a person's decision: `khmer_ocr_promotion`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, task
from khmer_ocr_airflow.settings import (
    DATA_PROFILES,
    GPU_TRAINING,
    INFRA,
    NO_RETRY,
    eval_pages_param,
    gates_param,
    khmer_ocr_dag,
    num_samples_param,
    overrides_param,
    profile_param,
)
from khmer_ocr_airflow.tasks import page_data_task

from khmer_ocr.names import TRAIN_CONFIGS

SAME_AS_CHAMPION = "same as the champion"


@khmer_ocr_dag(
    "khmer_ocr_nightly",
    __doc__,
    ["training", "nightly"],
    {
        "data_profile": Param("demo", enum=DATA_PROFILES, description="Data profile of the fresh dataset."),
        "num_samples": num_samples_param("Lines; 0: the profile's."),
        "config": Param(
            SAME_AS_CHAMPION,
            enum=[SAME_AS_CHAMPION, *TRAIN_CONFIGS],
            description="Training configuration; default: the one the champion was trained with.",
        ),
        "profile": profile_param(),
        "overrides": overrides_param(),
        "gates": gates_param(),
        "eval_pages": eval_pages_param(),
    },
    schedule="0 2 * * *",
)
def khmer_ocr_nightly():
    @task(execution_timeout=timedelta(minutes=10), **INFRA)
    def champion() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from khmer_ocr_airflow.tasks import registry, version_dict

        from khmer_ocr.registry import CHAMPION

        info = registry("get_version", CHAMPION)
        if info is None:
            raise AirflowSkipException("no champion yet: promote a model first (khmer_ocr_promotion)")
        print(f"champion: khmer-ocr v{info.version} ({info.tags.get('config', '?')})")
        return version_dict(info)

    @task(execution_timeout=timedelta(hours=6), **INFRA)
    def fresh_data(params=None, dag_run=None) -> str:
        from khmer_ocr_airflow.paths import state_dir
        from khmer_ocr_airflow.tasks import data_config, generate

        day = dag_run.run_after.strftime("%Y%m%d")
        cfg = data_config(params["data_profile"], [f"name=nightly-{day}"], params["num_samples"], int(day))
        return generate(cfg, state_dir() / "datasets" / cfg.name)

    @task(execution_timeout=timedelta(hours=2), **NO_RETRY)
    def validate(data: str, ti=None) -> str:
        from khmer_ocr_airflow.tasks import validate as run_validation

        return run_validation(data, ti)["uri"]

    @task(execution_timeout=timedelta(hours=24), **GPU_TRAINING)
    def train(current: dict, data: str, params=None, run_id=None) -> dict:
        from khmer_ocr_airflow.paths import run_folder
        from khmer_ocr_airflow.tasks import train as run_training

        config = params["config"]
        if config == SAME_AS_CHAMPION:
            tag = current["config"]
            config = next((c for c in (tag, f"phase3_1/{tag}") if c in TRAIN_CONFIGS), "production_fast")
        print(f"fine-tuning {config} from khmer-ocr v{current['version']} on {data}")
        return run_training(config, data, run_folder("nightly", run_id), params, current["uri"])

    page_data = page_data_task(execution_timeout=timedelta(minutes=30), **NO_RETRY)

    @task(execution_timeout=timedelta(hours=2), **INFRA)
    def compare(current: dict, run: dict, pages: str | None, params=None) -> dict:
        from khmer_ocr_airflow.tasks import evaluate

        new = evaluate(run["model_dir"], run["data"], params["gates"], run["run_id"], pages=pages)
        old = evaluate(current["uri"], run["data"], params["gates"])
        better = (new["char_accuracy"] or 0.0) > (old["char_accuracy"] or 0.0)
        print(
            f"on {new['dataset_version']}: new {new['char_accuracy']:.2%}, champion v{current['version']} "
            f"{old['char_accuracy']:.2%} -> {'better' if better else 'not better'}"
        )
        return {"run_id": run["run_id"], "new": new, "champion": old, "better": better}

    @task(execution_timeout=timedelta(minutes=30), **INFRA)
    def register_if_better(comparison: dict, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from khmer_ocr_airflow.tasks import register

        if not comparison["better"]:
            raise AirflowSkipException("the fine-tuned model does not beat the champion: nothing registered")
        return register(comparison["run_id"], dag_run)

    current = champion()
    data, pages = fresh_data(), page_data()
    current >> [data, pages]  # no champion: the night is skipped before any work
    run = train(current, validate(data))
    register_if_better(compare(current, run, pages))


khmer_ocr_nightly()
