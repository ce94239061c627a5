"""
### khmer_ocr_phase3_1_tuning: phase 3.1, the seven configurations compared

`setup` -> `train` (mapped, one task per configuration, on the `gpu` pool and queue) -> `evaluate` (mapped:
test splits and milestone gates, and the **eval_pages** synthetic pages of `page_data` read whole: page CER
and line finding, not gated; attached to each MLflow run) -> `select_best` (by **validation character
accuracy**; logs the comparison table, with each configuration's page CER, and tags the MLflow runs) ->
`register_best` (a new version of the registered model `khmer-ocr`; alias `candidate` if it passes its
gates; Asset `khmer-ocr://models/phase3_1/best`).

- **data** empty: the dataset of the latest `khmer_ocr_data` run (Asset `khmer_ocr_dataset`).
- **profile** `demo` scales every configuration to minutes on a CPU; `full` is the GPU schedule.
- Each configuration is its own MLflow run (experiment `khmer-ocr`); a retried training resumes from its
  last checkpoint. `khmer_ocr_phase3_2_optimization` starts from the model registered here.

Library calls: `khmer_ocr.training.phases.train_config / comparison_table`, `khmer_ocr.evaluation.evaluate`,
`khmer_ocr.registry.log_evaluation / register` (through `khmer_ocr_airflow.tasks`). The CLI equivalent:
`khmer-ocr tune`.
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

from khmer_ocr.names import PHASE3_1


@khmer_ocr_dag(
    "khmer_ocr_phase3_1_tuning",
    __doc__,
    ["training", "phase3_1"],
    {
        "data": data_param(
            "Dataset folder or s3:// prefix; empty: the latest dataset published by khmer_ocr_data."
        ),
        "configs": Param(
            list(PHASE3_1),
            type="array",
            items={"type": "string", "enum": list(PHASE3_1)},
            uniqueItems=True,
            minItems=1,
            description="The phase-3.1 configurations to compare.",
        ),
        "profile": profile_param(),
        "overrides": overrides_param(
            "Training overrides KEY=VALUE for every configuration (e.g. optim.epochs=5)."
        ),
        "gates": gates_param(),
        "eval_pages": eval_pages_param(),
        "out": Param(
            "", type="string", description="Folder for the runs; empty: <state>/runs/phase3_1/<run id>."
        ),
    },
)
def khmer_ocr_phase3_1_tuning():
    @task(inlets=[DATASET], **NO_RETRY)
    def setup(params=None, run_id=None, inlet_events=None) -> list[dict]:
        from khmer_ocr_airflow.paths import run_folder
        from khmer_ocr_airflow.tasks import latest_event

        data = params["data"] or latest_event(inlet_events, DATASET, "dataset")["uri"]
        out = params["out"] or str(run_folder("phase3_1", run_id))
        print(f"phase 3.1 on {data}: {', '.join(params['configs'])} ({params['profile']} profile) -> {out}")
        return [{"config": c, "data": data, "out": out} for c in params["configs"]]

    @task(
        execution_timeout=timedelta(hours=24),
        map_index_template="{{ task.op_kwargs['config'] }}",
        **GPU_TRAINING,
    )
    def train(config: str, data: str, out: str, params=None) -> dict:
        from pathlib import Path

        from khmer_ocr_airflow.tasks import train as run_training

        return {**run_training(f"phase3_1/{config}", data, Path(out) / config, params), "root": out}

    evaluate = evaluate_task(
        with_run=True,
        execution_timeout=timedelta(hours=2),
        map_index_template="{{ task.op_kwargs['run']['config'] }}",
        **INFRA,
    )

    page_data = page_data_task(execution_timeout=timedelta(minutes=30), **NO_RETRY)

    @task(**INFRA)
    def select_best(runs: list[dict]) -> dict:
        from pathlib import Path

        from khmer_ocr_airflow.tasks import tracking_uri

        from khmer_ocr.tracking import tag_comparison
        from khmer_ocr.training.phases import PhaseRun, comparison_table
        from khmer_ocr.training.trainer import TrainResult

        runs = [runs[i] for i in range(len(runs))]
        phase_runs = [
            PhaseRun(
                r["name"],
                TrainResult(
                    Path(r["out_dir"]),
                    r["best_metric"],
                    r["best_epoch"],
                    r["epochs_run"],
                    r["stopped_early"],
                    model_dir=Path(r["model_dir"]),
                ),
                r["val_char_accuracy"],
                r["val_sequence_accuracy"],
                r["run_id"],
                r["eval"].get("page_cer"),
            )
            for r in runs
        ]
        best = max(runs, key=lambda r: r["val_char_accuracy"])
        table = comparison_table(phase_runs)
        print(f"phase 3.1, best by validation character accuracy: {best['name']}\n{table}")
        (Path(best["root"]) / "comparison.md").write_text(table + "\n", encoding="utf-8")
        pairs = [(r.name, r.run_id) for r in phase_runs if r.run_id]
        tag_comparison(tracking_uri(), pairs, best["name"], table)
        return best

    @task(outlets=[PHASE3_1_BEST], execution_timeout=timedelta(minutes=30), **INFRA)
    def register_best(best: dict, dag_run=None, outlet_events=None) -> dict:
        from khmer_ocr_airflow.tasks import register

        version = register(best["run_id"], dag_run)
        registered = {**version, "model_uri": version["uri"], "val_char_accuracy": best["val_char_accuracy"]}
        outlet_events[PHASE3_1_BEST].extra = registered
        return registered

    runs = train.expand_kwargs(setup())
    register_best(select_best(evaluate.partial(pages=page_data()).expand(run=runs)))


khmer_ocr_phase3_1_tuning()
