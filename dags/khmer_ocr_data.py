"""
### khmer_ocr_data: generate, validate and publish a synthetic Khmer text-line dataset

`plan` -> `generate_shards` (mapped: the dataset's shards split into **chunks** groups, one task each) ->
`finalize` (manifest, card, sample grid) -> `validate` (Great Expectations) -> `publish` (Asset
`khmer-ocr://datasets/latest`).

- **Parallel**: the mapped tasks run on any worker, at most as many at once as the `datagen` pool allows;
  with several machines write to S3 (`out: s3://bucket/prefix`) so that they all write to the same place.
- **Resumable**: shards already written are skipped, so clearing a failed run finishes the dataset; a larger
  `num_samples` extends it. The output is the same, byte for byte, whatever the number of chunks.
- **Validation** failing stops everything downstream: nothing is published. The log names the failed checks;
  the HTML report lies beside the dataset (`validation.html`, also in the task's XCom `validation_report`).
- **Published** as an event of the Asset `khmer_ocr_dataset` with its version, location, size, counts and
  report: the training DAGs take the latest one when their `data` param is empty.

Library calls: `khmer_ocr.data.writer.prepare_dataset / generate_shards / finalize_dataset`,
`khmer_ocr.data.validation.validate_dataset`. The CLI equivalent: `khmer-ocr generate --profile demo`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, task
from khmer_ocr_airflow.assets import DATASET
from khmer_ocr_airflow.settings import (
    DATA_PROFILES,
    DATAGEN_POOL,
    INFRA,
    NO_RETRY,
    khmer_ocr_dag,
    num_samples_param,
    overrides_param,
)


def _data_config(params: dict):
    """The data config the run's params describe (khmer_ocr is imported when a task runs, not at parse)."""
    from khmer_ocr_airflow.tasks import data_config

    return data_config(params["profile"], params["overrides"], params["num_samples"], params["seed"])


@khmer_ocr_dag(
    "khmer_ocr_data",
    __doc__,
    ["data"],
    {
        "profile": Param(
            "demo", enum=DATA_PROFILES, description="Packaged data profile (khmer_ocr/configs/data)."
        ),
        "out": Param(
            "",
            type="string",
            description="Dataset folder or s3://bucket/prefix; empty: "
            "<state>/datasets/<dataset name> ($KHMER_OCR_STATE, else ./.khmer-ocr).",
        ),
        "num_samples": num_samples_param("Number of lines; 0: the profile's."),
        "seed": Param(-1, type="integer", minimum=-1, description="Random seed; -1: the profile's."),
        "chunks": Param(
            4,
            type="integer",
            minimum=1,
            maximum=256,
            description="Parallel generation tasks; the shards are split between them.",
        ),
        "overrides": overrides_param("Config overrides KEY=VALUE, as `--set` (e.g. shard_size=500)."),
        "overwrite": Param(
            False,
            type="boolean",
            description="Delete an existing dataset at `out` first (local folders only).",
        ),
    },
)
def khmer_ocr_data():
    @task(execution_timeout=timedelta(minutes=10), **INFRA)
    def plan(params=None) -> list[dict]:
        from khmer_ocr_airflow.paths import state_dir
        from khmer_ocr_airflow.tasks import fail_fast

        from khmer_ocr.data.format import shard_ranges
        from khmer_ocr.data.writer import prepare_dataset

        cfg = _data_config(params)
        out = params["out"] or str(state_dir() / "datasets" / cfg.name)
        with fail_fast():
            todo = prepare_dataset(cfg, out, overwrite=params["overwrite"])
        ids = list(shard_ranges(cfg))
        n = min(params["chunks"], len(ids))
        chunks = [ids[i * len(ids) // n : (i + 1) * len(ids) // n] for i in range(n)]
        print(f"{cfg.name}: {cfg.num_samples} lines, {len(ids)} shards ({len(todo)} to render) at {out}")
        return [{"out": out, "shard_ids": c} for c in chunks]

    @task(
        pool=DATAGEN_POOL,
        execution_timeout=timedelta(hours=6),
        map_index_template="shards {{ task.op_kwargs['shard_ids'] }}",
        **INFRA,
    )
    def generate_shards(out: str, shard_ids: list[int], params=None) -> int:
        from khmer_ocr_airflow.tasks import fail_fast

        from khmer_ocr.data.writer import generate_shards as render

        cfg = _data_config(params)
        with fail_fast():
            return render(cfg, out, shard_ids)

    @task(execution_timeout=timedelta(minutes=30), **INFRA)
    def finalize(chunks: list[dict], rendered: list[int], params=None) -> dict:
        from khmer_ocr_airflow.tasks import fail_fast

        from khmer_ocr.data.writer import finalize_dataset

        out = chunks[0]["out"]
        cfg = _data_config(params)
        with fail_fast():
            result = finalize_dataset(cfg, out)
        now = sum(rendered[i] for i in range(len(rendered)))
        print(f"dataset {result.version}: {result.num_samples} lines at {out} ({now} rendered by this run)")
        return {"name": cfg.name, "uri": out, "version": result.version, "num_samples": result.num_samples,
                "counts": result.card["counts"]}  # fmt: skip

    @task(execution_timeout=timedelta(hours=2), **NO_RETRY)
    def validate(dataset: dict, ti=None) -> dict:
        from khmer_ocr_airflow.tasks import validate as run_validation

        return run_validation(dataset["uri"], ti)

    @task(outlets=[DATASET], **NO_RETRY)
    def publish(dataset: dict, validation: dict, outlet_events=None) -> dict:
        extra = {**dataset, "validation_report": validation["report"]}
        outlet_events[DATASET].extra = extra
        print(f"published {dataset['version']} ({dataset['uri']})")
        return extra

    chunks = plan()
    dataset = finalize(chunks, generate_shards.expand_kwargs(chunks))
    publish(dataset, validate(dataset))


khmer_ocr_data()
