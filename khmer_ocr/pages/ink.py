"""The page image primitives of line finding (khmer_ocr.pages.layout, steps 1 and 2): ink against the local
background, in both polarities; the text's scale; the skew angle, judged on vertical strips; rotation.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

MAX_SKEW = 6.0  # degrees either way
BACKGROUND_WINDOW = 64  # px: the median that estimates the background; smaller for small text
MIN_WINDOW = 16
STRIPS = 4  # vertical strips whose row profiles judge a skew angle


def _background(gray: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The local background, a median over about `window` px computed on a reduced image (a median keeps
    the sharp edges of panels and page borders), and how much it changes around each pixel."""
    h, w = gray.shape
    f = max(1, window // 16)
    small = cv2.resize(gray, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    k = max(3, (window // f) | 1)
    if k >= min(small.shape):
        k = max(3, (min(small.shape) // 2) * 2 - 1)
    bg = cv2.medianBlur(small, k)
    # where the background itself changes sharply (the edge of a panel, of the page in a photo) the
    # estimate is unsure: those pixels are never ink
    edge = cv2.morphologyEx(bg, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    edges = cv2.resize(edge, (w, h), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR), edges


def ink_mask(gray: np.ndarray, window: int = BACKGROUND_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(mask, background): mask is uint8 1 where a pixel differs from its local background by more than
    the noise and a share of the page's contrast allow, either darker or lighter."""
    bg, edges = _background(gray, window)
    mag = cv2.absdiff(gray, bg)
    if window > 2 * MIN_WINDOW:
        # a second, tighter background: a thin bar or the rim of a panel that the wide median misjudges
        # is no ink for the tight one, while strokes stay ink for both
        tight, _ = _background(gray, max(MIN_WINDOW, window // 2))
        mag = np.minimum(mag, cv2.absdiff(gray, tight))
    noise = float(np.median(mag)) * 1.4826 + 0.5
    hi = float(np.percentile(mag, 99.5))
    # Otsu on the magnitude separates strokes from paper; never below the noise floor
    otsu, _ = cv2.threshold(mag, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    t = max(4.0 * noise, 0.5 * otsu, 0.12 * hi, 8.0)
    mask = ((mag > t) & (edges < max(t, 24.0))).astype(np.uint8)
    return mask, bg


def text_scale(mask: np.ndarray) -> float:
    """The typical height of a character body: the median height of the ink components that are not
    small marks."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    h, area = stats[1:, 3], stats[1:, 4]
    sized = (h >= 3) & (area >= 6)
    if not sized.any():
        return 10.0
    med = float(np.median(h[sized]))
    core = h[sized & (h >= 0.5 * med)]
    return max(4.0, float(np.median(core)) if len(core) else med)


def estimate_skew(mask: np.ndarray) -> float:
    """Degrees to turn the page by (counter-clockwise positive, as cv2.getRotationMatrix2D) so that its
    lines are horizontal: the angle whose sheared row profile has the most energy."""
    h, w = mask.shape
    f = max(1.0, max(h, w) / 800.0)
    small = cv2.resize(mask * 255, (max(1, int(w / f)), max(1, int(h / f))), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(small > 64)
    if len(ys) < 50:
        return 0.0
    if len(ys) > 60_000:
        keep = np.random.default_rng(0).choice(len(ys), 60_000, replace=False)
        ys, xs = ys[keep], xs[keep]
    # profiles per vertical strip, so that two columns whose lines do not line up cannot make a wrong
    # angle look sharp
    strip = (xs * STRIPS // max(1, small.shape[1])).astype(np.int64)
    xs = xs.astype(np.float32) - small.shape[1] / 2
    ys = ys.astype(np.float32)
    n_rows = small.shape[0] + small.shape[1]

    def energy(deg: float) -> float:
        t = math.tan(math.radians(deg))
        rows = np.clip(np.round(ys + xs * t).astype(np.int64) + small.shape[1] // 2, 0, n_rows - 1)
        counts = np.bincount(rows + strip * n_rows, minlength=n_rows * STRIPS).astype(np.float64)
        return float((counts * counts).sum())

    coarse = np.arange(-MAX_SKEW, MAX_SKEW + 1e-6, 0.5)
    best = max(coarse, key=energy)
    fine = np.arange(best - 0.5, best + 0.5 + 1e-6, 0.1)
    best = float(max(fine, key=energy))
    # rows = y + x*tan(a) flatten lines that fall to the right by a: the image turns by -a (cv2 convention)
    return -best if abs(best) >= 0.15 else 0.0


def rotate(image: np.ndarray, angle: float, border: int) -> tuple[np.ndarray, np.ndarray]:
    """The image turned by angle degrees on an enlarged canvas, and the 2x3 matrix that did it."""
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = math.ceil(h * s + w * c), math.ceil(h * c + w * s)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(
        image, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )
    return out, m
