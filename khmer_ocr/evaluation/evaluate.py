"""Evaluating a model on a dataset's test splits: metrics per split and per difficulty level, latency, gates,
error analysis."""

from __future__ import annotations

from pathlib import Path

from khmer_ocr.data.format import DatasetError
from khmer_ocr.data.reader import Dataset, ShardReader
from khmer_ocr.evaluation.gates import load_gates
from khmer_ocr.evaluation.metrics import measure_latency, one_thread
from khmer_ocr.evaluation.pages import evaluate_pages
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
    page_data: str | None = None,
    max_pages: int | None = None,
    use_lm: bool = True,
) -> EvaluationReport:
    """Recognize every line of the splits, score them (each split whole and per difficulty level, from the
    records' `difficulty` field), time batch-1 inference on one thread, check gates.

    Latency is measured the way the gates mean it: one line at a time, one CPU thread, preprocessing
    included. tracking_uri: the MLflow registry of a models:/ or runs:/ model_ref. page_data: a page
    dataset the same model also reads pages of (khmer_ocr.evaluation.pages, at most max_pages per split),
    kept in the report's `pages`; the gates stay on the lines.
    """
    recognizer = Recognizer.load(model_ref, tracking_uri=tracking_uri, use_lm=use_lm)
    dataset = Dataset(dataset_uri)
    if dataset.kind != "lines":
        raise DatasetError(
            f"{dataset_uri} is a dataset of kind {dataset.kind}: read it with "
            "khmer_ocr.evaluation.pages.evaluate_pages, or give it as page_data"
        )
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
    with one_thread():  # one untimed pass first: right after the batched reading above, batch-1 calls run
        # 30-60 % slower for a few dozen calls (memory handed back and faulted in again), which serving
        # at batch 1 never sees
        latency = measure_latency(
            lambda im: recognizer.predict([im]), sample_images, warmup=len(sample_images)
        )
    card = dataset.card
    primary = splits[0] if splits[0] in per_split else next(iter(per_split))
    report = build_report(
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
    report.decoding = recognizer.decoding_name
    if page_data:
        pages = evaluate_pages(
            model_ref, page_data, splits, max_pages, batch_size=batch_size, recognizer=recognizer
        )
        report.pages = pages.to_dict()
    return report
