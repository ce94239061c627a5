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


def prepare_line(image: np.ndarray, height: int, max_width: int = 1600) -> np.ndarray:
    """Grayscale, polarity fixed (the background, the majority of pixels, becomes paper), contrast
    stretched, resized to `height` keeping the aspect ratio; returns float32 with ink = 1."""
    gray = to_gray(image)
    h, w = gray.shape
    new_w = int(min(max_width, max(MIN_WIDTH, round(w * height / h))))
    interp = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
    gray = cv2.resize(gray, (new_w, height), interpolation=interp)
    lo, med, hi = np.percentile(gray, (2, 50, 98))
    ink = (hi - gray.astype(np.float32)) if med >= (lo + hi) / 2 else (gray.astype(np.float32) - lo)
    return np.clip(ink / max(float(hi - lo), 16.0), 0.0, 1.0)


def batch_lines(lines: list[np.ndarray], multiple: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad prepared lines (with paper = 0) into (B, 1, H, W) and their widths."""
    widths = np.asarray([ln.shape[1] for ln in lines], dtype=np.int64)
    w = int(-(-widths.max() // multiple) * multiple)
    out = np.zeros((len(lines), 1, lines[0].shape[0], w), np.float32)
    for i, ln in enumerate(lines):
        out[i, 0, :, : ln.shape[1]] = ln
    return out, widths
