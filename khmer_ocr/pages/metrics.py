"""Scoring page reading: line finding (precision and recall of boxes at IoU >= 0.5, matched one to one)
and page CER (the lines' texts joined by newlines in reading order, scored as khmer_ocr.evaluation does),
per page kind (PageScores: what `khmer-ocr evaluate` on a page dataset and bench/pages.py report)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IOU_MATCH = 0.5

Box = Sequence[int]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes [x0, y0, x1, y1) (x1, y1 exclusive)."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    truth: Sequence[Box], found: Sequence[Box], threshold: float = IOU_MATCH
) -> list[tuple[int, int]]:
    """Pairs (truth index, found index), one to one, greedily by IoU, each at least threshold."""
    pairs = []
    for i, t in enumerate(truth):
        for j, f in enumerate(found):
            v = iou(t, f)
            if v >= threshold:
                pairs.append((v, i, j))
    pairs.sort(reverse=True)
    used_t, used_f, out = set(), set(), []
    for _, i, j in pairs:
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            out.append((i, j))
    return sorted(out)


@dataclass
class DetectionCounts:
    truth: int = 0
    found: int = 0
    matched: int = 0

    def add(self, truth: Sequence[Box], found: Sequence[Box]) -> DetectionCounts:
        self.truth += len(truth)
        self.found += len(found)
        self.matched += len(match_boxes(truth, found))
        return self

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else float("nan")

    @property
    def precision(self) -> float:
        return self.matched / self.found if self.found else float("nan")


def page_cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Pooled CER over pages whose texts are their lines joined by newlines (newlines count)."""
    from khmer_ocr.evaluation.metrics import score

    return score(list(refs), list(hyps)).cer


@dataclass
class PageTally:
    """Pages read by one method: line-finding counts, the pages' true and read texts, ms per page."""

    det: DetectionCounts = field(default_factory=DetectionCounts)
    refs: list[str] = field(default_factory=list)
    hyps: list[str] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)

    def add(self, truth: Sequence[Box], ref: str, found: Sequence[Box], hyp: str, ms: float | None) -> None:
        self.det.add(truth, found)
        self.refs.append(ref)
        self.hyps.append(hyp)
        if ms is not None:
            self.ms.append(ms)

    def extend(self, other: PageTally) -> PageTally:
        self.det.truth += other.det.truth
        self.det.found += other.det.found
        self.det.matched += other.det.matched
        self.refs += other.refs
        self.hyps += other.hyps
        self.ms += other.ms
        return self

    def to_dict(self, with_text: bool = True) -> dict[str, Any]:
        """pages, lines (true), found, matched, line_recall, line_precision, page_cer (None without text),
        char_errors, n_chars and ms_p50 (the median of the timed pages; None when none was timed)."""
        from khmer_ocr.evaluation.metrics import score

        text = score(self.refs, self.hyps) if with_text and self.refs else None
        return {
            "pages": len(self.refs),
            "lines": self.det.truth,
            "found": self.det.found,
            "matched": self.det.matched,
            "line_recall": self.det.recall,
            "line_precision": self.det.precision,
            "page_cer": text.cer if text else None,
            "char_errors": text.char_errors if text else None,
            "n_chars": text.n_chars if text else None,
            "ms_p50": float(np.median(self.ms)) if self.ms else None,
        }


@dataclass
class PageScores:
    """PageTally per page kind (the dataset's `style`: clean, screen, scan, photo), kinds in the order of
    their difficulty level, and over all pages ("all")."""

    kinds: dict[str, PageTally] = field(default_factory=dict)
    levels: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        kind: str,
        level: int,
        truth: Sequence[Box],
        ref: str,
        found: Sequence[Box],
        hyp: str,
        ms: float | None = None,
    ) -> None:
        self.levels.setdefault(kind, level)
        self.kinds.setdefault(kind, PageTally()).add(truth, ref, found, hyp, ms)

    def ordered(self) -> list[tuple[str, PageTally]]:
        """(kind, tally) by difficulty level, then ("all", every page)."""
        kinds = sorted(self.kinds, key=lambda k: (self.levels[k], k))
        total = PageTally()
        for k in kinds:
            total.extend(self.kinds[k])
        return [*((k, self.kinds[k]) for k in kinds), ("all", total)]

    def to_dict(self, with_text: bool = True) -> dict[str, dict[str, Any]]:
        return {k: t.to_dict(with_text) for k, t in self.ordered()}


def boxes_array(boxes: Sequence[Box]) -> np.ndarray:
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
