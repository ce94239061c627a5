"""What happens to a whole synthetic page after its lines are composed (khmer_ocr.data.pages): the geometry
of a scan or a photo (rotation, perspective), uneven light, and the degradation of the image (blur,
down-scaling, noise, JPEG)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from khmer_ocr.data import augment

if TYPE_CHECKING:
    from khmer_ocr.data.config import PageConfig


def warp(
    rng: np.random.Generator, style: str, img: np.ndarray, corners: list[np.ndarray], pc: PageConfig
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rotation (and for photos perspective, on a darker surface around the page), within the page config's
    limits; returns the page and its lines' corners, moved."""
    h, w = img.shape
    angle = math.radians(float(rng.uniform(-pc.rotation, pc.rotation)))
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    c, s = math.cos(angle), math.sin(angle)
    centre = np.array([w / 2, h / 2], np.float32)
    dst = (src - centre) @ np.array([[c, -s], [s, c]], np.float32).T + centre
    if style == "photo":
        dst += rng.uniform(-pc.perspective, pc.perspective, size=(4, 2)).astype(np.float32) * min(w, h)
        border = rng.uniform(0.03, 0.08, size=2) * np.array([w, h])
    else:
        border = np.array([0.0, 0.0])
    dst -= dst.min(0) - border.astype(np.float32)
    size = np.ceil(dst.max(0) + border).astype(int)
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    surface = float(rng.uniform(0.15, 0.5)) if style == "photo" else float(np.median(img))
    warped = cv2.warpPerspective(
        img,
        m,
        (int(size[0]), int(size[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=surface,
    )
    moved = [cv2.perspectiveTransform(c[None], m)[0] for c in corners]
    return warped, moved


def light(rng: np.random.Generator, style: str, img: np.ndarray) -> np.ndarray:
    """Uneven illumination: a ramp in a random direction, and for photos a soft shadow and vignette."""
    h, w = img.shape
    ramp = augment.illumination_ramp(rng, (h, w))
    strength = float(rng.uniform(0.05, 0.25) if style == "scan" else rng.uniform(0.2, 0.45))
    img = img * (1.0 - strength * ramp)
    if style == "photo":
        yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
        xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
        img *= 1.0 - float(rng.uniform(0.05, 0.2)) * (xx * xx + yy * yy) / 2
        cx, cy, r = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.3, 0.8)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img *= 1.0 - float(rng.uniform(0.1, 0.3)) * blob
    return img


def degrade(rng: np.random.Generator, style: str, out: np.ndarray) -> np.ndarray:
    """A screenshot shared as JPEG; a scan or photo blurred, down-scaled, noisy, re-encoded."""
    if style == "clean":
        return out
    if style == "screen":
        if rng.random() < 0.3:  # shared through a chat application
            _, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 90))])
            out = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        return out
    scan = style == "scan"
    if rng.random() < (0.5 if scan else 0.8):
        sigma = float(rng.uniform(0.3, 0.9) if scan else rng.uniform(0.5, 1.2))
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    if rng.random() < (0.2 if scan else 0.3):
        h, w = out.shape
        f = float(rng.uniform(0.65, 0.85))
        small = cv2.resize(out, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.7:
        std = float(rng.uniform(2.0, 6.0) if scan else rng.uniform(3.0, 9.0))
        noisy = out.astype(np.float32) + std * augment.gaussian_noise(rng, out.shape)
        out = np.clip(noisy, 0, 255).astype(np.uint8)
    if rng.random() < (0.4 if scan else 0.8):
        quality = int(rng.integers(45, 90) if scan else rng.integers(35, 80))
        _, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return np.ascontiguousarray(out)
