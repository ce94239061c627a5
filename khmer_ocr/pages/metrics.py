"""Scoring page reading: line finding (precision and recall of boxes at IoU >= 0.5, matched one to one)
and page CER (the lines' texts joined by newlines in reading order, scored as khmer_ocr.evaluation does)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def boxes_array(boxes: Sequence[Box]) -> np.ndarray:
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
