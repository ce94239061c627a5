"""Evaluating page reading on a page dataset (kind `pages`, khmer_ocr.data.pages): per page kind (clean,
screen, scan, photo), line-finding recall and precision (a found line matches a true line one to one at box
IoU >= 0.5), page CER (each page's lines joined by newlines in reading order, scored as `score` does,
pooled) and the line finder's ms per page on one thread; then whole pages read one at a time on one thread
(finding + recognition). `khmer-ocr evaluate` writes this report for a page dataset; a line evaluation
that also read pages (`evaluate(..., page_data=...)`) keeps it under `pages`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from khmer_ocr.evaluation.json_report import JsonReport
from khmer_ocr.evaluation.metrics import measure_latency, one_thread
from khmer_ocr.version import LINE_FINDER_VERSION

if TYPE_CHECKING:
    from khmer_ocr.inference import Recognizer

DEFAULT_SPLITS = ("test", "test_unseen_font")
# The flat metrics a page evaluation adds to a run (eval_<name>) and to a version's tags (metric.<name>).
HEADLINE = ("page_cer", "line_recall", "line_precision")


@dataclass
class TruthPage:
    """A page of a page dataset: its image, kind (style), difficulty level, text and true line boxes."""

    split: str
    image: np.ndarray
    kind: str
    level: int
    text: str
    boxes: list[tuple[int, int, int, int]]


def load_pages(
    uri: str, splits: tuple[str, ...] = DEFAULT_SPLITS, max_pages: int | None = None
) -> tuple[list[TruthPage], dict]:
    """The first max_pages pages of each split of a page dataset, and its card."""
    from khmer_ocr.data.format import DatasetError
    from khmer_ocr.data.reader import Dataset, ShardReader

    dataset = Dataset(uri)
    if dataset.kind != "pages":
        raise DatasetError(f"{uri} is a dataset of kind {dataset.kind!r}, not pages")
    records = [r for s in splits for r in dataset.split(s)[:max_pages]]
    if not records:
        raise DatasetError(f"{uri} has no pages in splits {list(splits)}")
    reader = ShardReader(dataset)
    pages = [
        TruthPage(
            r["split"],
            reader.image(r),
            str(r.get("style", "unknown")),
            int(r.get("difficulty") or 0),
            r["text"],
            [tuple(ln["box"]) for ln in r["lines"]],
        )
        for r in records
    ]
    reader.close()
    return pages, dataset.card


@dataclass
class PageReport(JsonReport):
    model: str
    dataset: str
    dataset_version: str | None
    splits: list[str]
    kinds: dict[str, dict[str, Any]]  # PageScores.to_dict(): kind -> metrics, then "all"
    latency: dict[str, Any]  # whole pages (find + read), one at a time, one thread: measure_latency()
    line_finder_version: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def metrics(self) -> dict[str, float]:
        """Flat metrics: page_cer, line_recall, line_precision (all pages), the same per kind as
        page_<kind>_cer / _line_recall / _line_precision, page_find_ms_p50 and page_latency_ms_p50."""
        out: dict[str, float] = {}
        for kind, m in self.kinds.items():
            prefix = "" if kind == "all" else f"page_{kind}_"
            for key in HEADLINE:
                name = key if kind == "all" else prefix + key.removeprefix("page_")
                if isinstance(m.get(key), int | float):
                    out[name] = float(m[key])
        if isinstance(self.kinds.get("all", {}).get("ms_p50"), int | float):
            out["page_find_ms_p50"] = float(self.kinds["all"]["ms_p50"])
        if isinstance(self.latency.get("ms_p50"), int | float):
            out["page_latency_ms_p50"] = float(self.latency["ms_p50"])
        return out

    def summary(self) -> str:
        version = f"@{self.dataset_version}" if self.dataset_version else ""
        lines = [
            f"page reading: model {self.model} on {self.dataset}{version} (splits {', '.join(self.splits)}; "
            f"line finder {self.line_finder_version})",
            f"{'kind':<10}{'pages':>7}{'lines':>7}{'found':>7}{'line recall':>13}{'line precision':>16}"
            f"{'page CER':>10}{'find ms/page':>14}",
        ]
        for kind, m in self.kinds.items():
            cer = f"{m['page_cer']:.2%}" if m.get("page_cer") is not None else "-"
            ms = f"{m['ms_p50']:.1f}" if m.get("ms_p50") is not None else "-"
            lines.append(
                f"{kind:<10}{m['pages']:>7}{m['lines']:>7}{m['found']:>7}{m['line_recall']:>13.2%}"
                f"{m['line_precision']:>16.2%}{cer:>10}{ms:>14}"
            )
        if self.latency:
            lines.append(
                "whole pages (find + read, one at a time, one thread): median "
                f"{self.latency['ms_p50']:.1f} ms, p95 {self.latency['ms_p95']:.1f} ms over "
                f"{self.latency['n_calls']} pages"
            )
        return "\n".join(lines)

    def table(self) -> str:
        """Markdown: one row per kind (model cards)."""
        rows = [
            "| kind | pages | lines | line recall | line precision | page CER | find ms/page |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind, m in self.kinds.items():
            cer = f"{m['page_cer']:.2%}" if m.get("page_cer") is not None else "-"
            ms = f"{m['ms_p50']:.1f}" if m.get("ms_p50") is not None else "-"
            rows.append(
                f"| {kind} | {m['pages']} | {m['lines']} | {m['line_recall']:.2%} "
                f"| {m['line_precision']:.2%} | {cer} | {ms} |"
            )
        return "\n".join(rows)


def evaluate_pages(
    model_ref: str | Path | None,
    dataset_uri: str,
    splits: tuple[str, ...] = DEFAULT_SPLITS,
    max_pages: int | None = None,
    latency_pages: int = 10,
    batch_size: int = 32,
    tracking_uri: str | None = None,
    recognizer: Recognizer | None = None,
) -> PageReport:
    """Find and read the lines of every page of the splits (PageReader: the classical line finder and the
    model; `recognizer` when already loaded) and score them per page kind. The line finder is timed on
    one thread on every page; whole pages (finding + recognition) on the first latency_pages pages."""
    from khmer_ocr.inference import Recognizer
    from khmer_ocr.pages import PageReader
    from khmer_ocr.pages.metrics import PageScores

    pages, card = load_pages(dataset_uri, splits, max_pages)
    reader = PageReader(recognizer or Recognizer.load(model_ref, tracking_uri=tracking_uri))
    layouts, find_ms = [], []
    with one_thread():
        for page in pages:
            start = time.perf_counter()
            layouts.append(reader.find(page.image))
            find_ms.append((time.perf_counter() - start) * 1e3)
        timed = [p.image for p in pages[: max(0, latency_pages)]]
        latency = measure_latency(lambda im: reader.read([im]), timed, warmup=1) if timed else {}
    scores = PageScores()
    for page, read, ms in zip(pages, reader.read_layouts(layouts, batch_size), find_ms, strict=True):
        found = [ln.box for ln in read.lines]
        scores.add(page.kind, page.level, page.boxes, page.text, found, read.text, ms)
    return PageReport(
        model=str(model_ref or "reference"),
        dataset=dataset_uri,
        dataset_version=card.get("version"),
        splits=list(dict.fromkeys(p.split for p in pages)),
        kinds=scores.to_dict(),
        latency=latency,
        line_finder_version=LINE_FINDER_VERSION,
    )
