"""Turning any line image into model input: the one preprocessing used by training and by prediction.

Input: a grayscale or colour line crop of any size, dark text on light or light text on dark. Output:
float32 (height, width) with ink = 1 and paper = 0, at the model's input height, aspect ratio kept.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_WIDTH = 16


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grayscale from uint8/float, gray/RGB/RGBA arrays."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 3:
        if img.shape[2] == 4:  # alpha over white
            alpha = img[:, :, 3:4].astype(np.float32) / 255.0
            img = (img[:, :, :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_RGB2GRAY) if img.shape[2] >= 3 else img[:, :, 0]
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"not a line image: shape {np.asarray(image).shape}")
    return img


# Paper around the text. Training lines carry 2-30 % of the ink's height above and below it and up to about
# half of it at either end; a crop with much more (a detector's generous box, a line rendered on a tall
# canvas) would shrink the text at the model's input height: a margin beyond its MAX_* is cut back to its
# KEEP_* (fractions of the ink's height). Above and below, every margin is capped at 15 %: the reference
# model read 600 val lines best so (CER 5.96 % against 6.28 % as given, 6.11 % capped at 20 %, 5.96-6.01 %
# cut back to 20-25 %); with 25-100 % of extra paper they read at 7.1-7.4 % instead of 22-93 %.
KEEP_MARGIN = MAX_MARGIN = 0.15  # above and below the ink
KEEP_SIDE, MAX_SIDE = 0.3, 1.0  # before and after it
TRIM_PASSES = 3


def histogram(gray: np.ndarray) -> np.ndarray:
    """Exact counts (float64) of the 256 levels of a uint8 image."""
    if gray.size < 1 << 24:  # OpenCV's float32 counts stay exact
        return cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    return np.bincount(gray.ravel(), minlength=256).astype(np.float64)


def percentiles(gray: np.ndarray, qs: tuple[float, ...], counts: np.ndarray | None = None) -> np.ndarray:
    """np.percentile(gray, qs) of a non-empty uint8 image to the last bit, from its histogram (`counts`,
    when already made): 8x faster, no sort."""
    below = np.cumsum(histogram(gray) if counts is None else counts)  # values <= v
    rank = (gray.size - 1) * (np.asarray(qs, np.float64) / 100.0)
    i = np.floor(rank)
    a = np.searchsorted(below, i, side="right").astype(np.float64)  # the i-th smallest value
    b = np.searchsorted(below, np.minimum(i + 1, gray.size - 1), side="right").astype(np.float64)
    t = rank - i
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)  # numpy's linear interpolation


def _stretched(gray: np.ndarray) -> np.ndarray:
    """Polarity fixed (the median is paper) and contrast stretched between the 2nd and 98th percentiles:
    float32, ink = 1."""
    lo, med, hi = percentiles(gray, (2, 50, 98))
    ink = (hi - gray.astype(np.float32)) if med >= (lo + hi) / 2 else (gray.astype(np.float32) - lo)
    return np.clip(ink / max(float(hi - lo), 16.0), 0.0, 1.0)


def scaled_ink(gray: np.ndarray, height: int, max_width: int) -> np.ndarray:
    """Resized to `height` (aspect kept), polarity fixed, contrast stretched, rules erased; ink = 1."""
    h, w = gray.shape
    new_w = int(min(max_width, max(MIN_WIDTH, round(w * height / h))))
    # shrink by area; enlarge bicubically: small (screen) text read better so (600 val lines scaled to 24 / 20
    # px high: CER 7.4 / 10.8 % against 9.0 / 12.6 % enlarged linearly; lines as generated alike)
    interp = cv2.INTER_AREA if h > height else cv2.INTER_CUBIC
    gray = cv2.resize(gray, (new_w, height), interpolation=interp)
    ink = _stretched(gray)
    cleared = remove_rules(ink)
    if cleared is ink:
        return ink
    # a rule as dark as ink or darker sets the contrast: stretch again with the rules made paper
    gray[(cleared == 0.0) & (ink != 0.0)] = int(np.median(gray))
    return _stretched(gray)


RULE_LENGTH = 2.0  # a horizontal run of ink this many line heights long (or 90 % of a short line) is a rule
RULE_SPAN = 0.9  # a vertical run of ink over this share of the height is a rule (a table border)
RULE_THICKNESS = 0.1  # of the line's height at most, with paper on at least one side of it


def _rules(on: np.ndarray, length: int, thickness: int) -> np.ndarray | None:
    """Where `on` (uint8, 1 = ink) has rules along its rows, with their fringes (a bool mask), or None: runs
    at least `length` long in a band of rows at most `thickness` thick with mostly paper a row or two on
    either side."""
    rows = np.flatnonzero(cv2.reduce(on, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() >= length)
    if rows.size == 0:  # no row has that much ink
        return None
    run = cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1))
    centres = cv2.erode(on[rows], run)  # where a run of `length` fits
    found = centres.any(axis=1)
    if not found.any():
        return None
    rows, runs = rows[found], cv2.dilate(centres[found], run).astype(bool)  # the runs themselves
    mask, n = None, on.shape[0]
    for band in np.split(np.arange(rows.size), np.flatnonzero(np.diff(rows) > 1) + 1):
        top, bottom = int(rows[band[0]]), int(rows[band[-1]]) + 1
        if bottom - top > thickness:
            continue
        cols = runs[band].any(axis=0)
        before = on[top - 2, cols].mean() if top >= 2 else 0.0
        after = on[bottom + 1, cols].mean() if bottom + 1 < n else 0.0
        if before >= 0.5 or after >= 0.5:
            continue
        mask = np.zeros(on.shape, bool) if mask is None else mask
        mask[max(0, top - 1) : bottom + 1, cols] = True  # with the rule's anti-aliased edges
    return mask


def remove_rules(ink: np.ndarray) -> np.ndarray:
    """ink with rules erased: underlines, table and form borders. A rule is an unbroken run of ink longer
    than any letter (RULE_LENGTH, RULE_SPAN) in a thin band (RULE_THICKNESS) with mostly paper just beside
    it; blurred text also makes long runs, but in thick bands inside ink. ink itself when there is none."""
    h, w = ink.shape
    thickness = max(2, round(RULE_THICKNESS * h))
    on = (ink > 0.5).view(np.uint8)
    across = min(round(RULE_LENGTH * h), round(0.9 * w))
    rows = _rules(on, across, thickness) if across >= h else None
    cols = _rules(np.ascontiguousarray(on.T), round(RULE_SPAN * h), thickness)
    if rows is None and cols is None:
        return ink
    out = ink.copy()
    if rows is not None:
        out[rows] = 0.0
    if cols is not None:
        out[cols.T] = 0.0
    return out


def ink_box(ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), end-exclusive, of the text in a normalized line (ink = 1): the rows and
    columns where ink (> 0.5) is more than stray noise; None when there is none. Anything that looks like
    ink widens the box: the box errs towards keeping paper, never towards cutting text."""
    on = ink > 0.5
    per_row = np.count_nonzero(on, axis=1)
    if per_row.max() < max(3, 0.02 * ink.shape[1]):  # no row that text would fill: stray ink only
        return None
    rows = np.flatnonzero(per_row >= max(2, 0.01 * per_row.max()))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(np.count_nonzero(on[top:bottom], axis=0))
    return top, bottom, int(cols[0]), int(cols[-1]) + 1


def _trimmed(gray: np.ndarray, ink: np.ndarray) -> np.ndarray | None:
    """gray with its excess margins cut back (see KEEP_MARGIN), or None when none is in excess."""
    box = ink_box(ink)
    if box is None:
        return None
    top, bottom, left, right = box
    text = bottom - top
    h, w = ink.shape
    margins = (top, h - bottom, left, w - right)
    limits = (MAX_MARGIN, MAX_MARGIN, MAX_SIDE, MAX_SIDE)
    excess = [m > limit * text + 1 for m, limit in zip(margins, limits, strict=True)]  # 1 px: precision
    if not any(excess):
        return None
    keeps = (KEEP_MARGIN, KEEP_MARGIN, KEEP_SIDE, KEEP_SIDE)  # each <= its limit: cutting back never adds
    keep = [k * text if e else m for m, k, e in zip(margins, keeps, excess, strict=True)]
    sy, sx = gray.shape[0] / h, gray.shape[1] / w  # original pixels per normalized pixel
    y0, y1 = max(0, int((top - keep[0]) * sy)), min(gray.shape[0], int(np.ceil((bottom + keep[1]) * sy)))
    x0, x1 = max(0, int((left - keep[2]) * sx)), min(gray.shape[1], int(np.ceil((right + keep[3]) * sx)))
    return gray[y0:y1, x0:x1]


def prepare_line(image: np.ndarray, height: int, max_width: int = 1600) -> np.ndarray:
    """Grayscale, polarity fixed (the background, the majority of pixels, becomes paper), excess paper
    around the text cut back, contrast stretched, resized to `height` keeping the aspect ratio; returns
    float32 with ink = 1."""
    gray = to_gray(image)
    ink = scaled_ink(gray, height, max_width)
    for _ in range(TRIM_PASSES):  # each pass finds the text more precisely at its larger scale
        trimmed = _trimmed(gray, ink)
        if trimmed is None:
            break
        gray, ink = trimmed, scaled_ink(trimmed, height, max_width)
    return ink


def batch_lines(lines: list[np.ndarray], multiple: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad prepared lines (with paper = 0) into (B, 1, H, W) and their widths."""
    widths = np.asarray([ln.shape[1] for ln in lines], dtype=np.int64)
    w = int(-(-widths.max() // multiple) * multiple)
    out = np.zeros((len(lines), 1, lines[0].shape[0], w), np.float32)
    for i, ln in enumerate(lines):
        out[i, 0, :, : ln.shape[1]] = ln
    return out, widths
