"""The founding plan's training phases as library calls (the CLI and the Airflow DAGs call these).

Phase 3.1 trains the seven named configurations and picks the best by validation character accuracy;
phase 3.2 starts from that model with the phase-3.2 configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from khmer_ocr.names import PHASE3_1
from khmer_ocr.training.config import load_train_config
from khmer_ocr.training.trainer import TrainResult, train


@dataclass
class PhaseRun:
    name: str
    result: TrainResult
    val_char_accuracy: float
    val_sequence_accuracy: float
    run_id: str | None = None  # the MLflow run, when tracked
    page_cer: float | None = None  # on the evaluation's pages, when it read pages (not a ranking criterion)


def _best_row(result: TrainResult) -> dict:
    rows = [r for r in result.history if r["epoch"] == result.best_epoch] or result.history[-1:]
    return rows[0] if rows else {}


def train_config(
    name: str,
    dataset: str | None,
    out_dir: str | Path,
    profile: str | None = None,
    overrides: list[str] | None = None,
    init_from: str | None = None,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = False,
) -> PhaseRun:
    """Train one named configuration (e.g. phase3_1/baseline_optimized) on a dataset.

    The run's inputs are arguments: the dataset (a folder or s3:// prefix; with data.stream.enabled only its
    val/test lines are read) and init_from (a checkpoint or any model reference; tracking_uri is its
    registry) are set on the loaded config, after the overrides. With track or a tracking_uri the run is
    recorded in MLflow (khmer_ocr.tracking.MlflowTracker; the URI defaults as
    khmer_ocr.mlflow_client.resolve_tracking_uri says); re-running into the same out_dir resumes its run.
    """
    cfg = load_train_config(name, profile, overrides)
    if dataset:
        cfg = replace(cfg, data=replace(cfg.data, dataset=str(dataset)))
    if init_from:
        cfg = replace(cfg, init_from=str(init_from))
    tracker = None
    if track or tracking_uri:
        from khmer_ocr.tracking import MlflowTracker  # MLflow is only imported when tracking

        tracker = MlflowTracker(tracking_uri, run_name=cfg.name, run_file=Path(out_dir) / "mlflow_run.json")
    result = train(cfg, Path(out_dir), progress=progress, tracker=tracker, tracking_uri=tracking_uri)
    best = _best_row(result)
    return PhaseRun(
        cfg.name,
        result,
        best.get("val_char_accuracy", 0.0),
        best.get("val_sequence_accuracy", 0.0),
        tracker.run_id if tracker else None,
    )


def comparison_table(runs: list[PhaseRun]) -> str:
    """Markdown table of the runs, best first (with a page CER column when some run's pages were read)."""
    pages = any(r.page_cer is not None for r in runs)
    head = "| config | best epoch | val char acc | val seq acc | epochs run |" + (
        " page CER |" if pages else ""
    )
    lines = [head, "|---|---|---|---|---|" + ("---|" if pages else "")]
    for r in sorted(runs, key=lambda r: -r.val_char_accuracy):
        cer = "" if not pages else f" {r.page_cer:.2%} |" if r.page_cer is not None else " - |"
        lines.append(
            f"| {r.name} | {r.result.best_epoch} | {r.val_char_accuracy:.2%} | {r.val_sequence_accuracy:.2%} "
            f"| {r.result.epochs_run} |{cer}"
        )
    if len(runs) > 1 and len({round(r.val_char_accuracy, 6) for r in runs}) == 1:
        lines.append(
            f"\nAll {len(runs)} configurations tie at {runs[0].val_char_accuracy:.2%} validation character "
            "accuracy: too little training to rank them (the demo profile trains for minutes from scratch); "
            f"the best is the first one in order ({runs[0].name}). Train longer (--profile full) to compare."
        )
    return "\n".join(lines)


def run_phase3_1(
    dataset: str,
    out_dir: str | Path,
    profile: str | None = None,
    configs: tuple[str, ...] = PHASE3_1,
    overrides: list[str] | None = None,
    progress: bool = True,
    tracking_uri: str | None = None,
    track: bool = False,
) -> tuple[PhaseRun, list[PhaseRun]]:
    """Train each phase-3.1 configuration; the best by validation character accuracy is returned first.

    When tracked, each configuration is its own MLflow run; at the end every run gets the comparison table
    (comparison.md) and the tags phase3_1_best / phase3_1_is_best.
    """
    out = Path(out_dir)
    runs = []
    for i, c in enumerate(configs, 1):
        if progress:
            print(f"phase 3.1: configuration {i}/{len(configs)}: {c}", flush=True)
        runs.append(
            train_config(
                f"phase3_1/{c}",
                dataset,
                out / c,
                profile,
                overrides,
                progress=progress,
                tracking_uri=tracking_uri,
                track=track,
            )
        )
    best = max(runs, key=lambda r: r.val_char_accuracy)  # the first of equals: see comparison_table
    table = comparison_table(runs)
    (out / "comparison.md").write_text(table + "\n", encoding="utf-8")
    if track or tracking_uri:
        from khmer_ocr.tracking import tag_comparison

        tag_comparison(tracking_uri, [(r.name, r.run_id) for r in runs if r.run_id], best.name, table)
    (out / "best.json").write_text(
        json.dumps({"best": best.name, "model_dir": str(best.result.model_dir)}, indent=1), encoding="utf-8"
    )
    return best, runs
