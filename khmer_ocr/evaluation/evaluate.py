"""Evaluating a model on a dataset's test splits: metrics per split and per difficulty level, latency, gates,
error analysis."""

from __future__ import annotations

from pathlib import Path

import torch

from khmer_ocr.data.reader import Dataset, ShardReader
from khmer_ocr.evaluation.gates import load_gates
from khmer_ocr.evaluation.metrics import measure_latency
from khmer_ocr.evaluation.report import EvaluationReport, build_report
from khmer_ocr.inference import Recognizer

DEFAULT_SPLITS = ("test", "test_unseen_font")


def evaluate(
    model_ref: str | Path | None,
    dataset_uri: str,
    splits: tuple[str, ...] = DEFAULT_SPLITS,
    gates: str = "milestones",
    max_lines: int | None = None,
    latency_lines: int = 50,
    batch_size: int = 32,
    tracking_uri: str | None = None,
) -> EvaluationReport:
    """Recognize every line of the splits, score them (each split whole and per difficulty level, from the
    records' `difficulty` field), time batch-1 inference on one thread, check gates.

    Latency is measured the way the gates mean it: one line at a time, one CPU thread, preprocessing
    included. tracking_uri: the MLflow registry of a models:/ or runs:/ model_ref.
    """
    recognizer = Recognizer.load(model_ref, tracking_uri=tracking_uri)
    dataset = Dataset(dataset_uri)
    reader = ShardReader(dataset)
    per_split: dict[str, tuple[list[str], list[str]]] = {}
    levels: dict[str, list[int | None]] = {}
    sample_images = []
    for split in splits:
        records = dataset.split(split)[:max_lines]
        if not records:
            continue
        images = [reader.image(r) for r in records]
        sample_images += images[: max(0, latency_lines - len(sample_images))]
        hyps = [p.text for p in recognizer.predict(images, batch_size=batch_size)]
        per_split[split] = ([r["text"] for r in records], hyps)
        levels[split] = [r.get("difficulty") for r in records]
    if not per_split:
        raise ValueError(f"{dataset_uri} has no lines in splits {list(splits)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        latency = measure_latency(lambda im: recognizer.predict([im]), sample_images, warmup=5)
    finally:
        torch.set_num_threads(threads)
    card = dataset.card
    primary = splits[0] if splits[0] in per_split else next(iter(per_split))
    return build_report(
        model=str(model_ref or "reference"),
        dataset=dataset_uri,
        dataset_version=card.get("version"),
        per_split=per_split,
        latency=latency,
        gates=load_gates(gates),
        primary_split=primary,
        gate_set=str(gates),
        levels=levels,
    )
