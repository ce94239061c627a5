"""Geometric and photometric augmentation of line images, driven by a curriculum level and a seeded rng.

Geometric steps work on the ink coverage mask (rotation, shear, perspective and the scaling to the target
height, as one warp); photometric steps compose ink over paper and degrade the result (texture,
illumination gradient, contrast, brightness, Gaussian and motion blur, down-and-up scaling, binarization,
noise, JPEG artefacts, inversion). Images are 2-D uint8 arrays; OpenCV does the resampling and filtering.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from khmer_ocr.data.config import LevelConfig
from khmer_ocr.preprocess import percentiles


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1])) if bounds[1] > bounds[0] else float(bounds[0])


def geometric(
    mask: np.ndarray, rng: np.random.Generator, lv: LevelConfig, height: int, max_width: int
) -> np.ndarray:
    """Shear, rotation, a perspective warp and the scaling to the target height as one warp, so the line
    is resampled once, at output resolution; the canvas grows so that nothing is cut."""
    h, w = mask.shape
    # a long line turns at most so far that its ends move a third of its height: real line crops are
    # deskewed or tall, and a steeper turn would shrink the text to a sliver when scaled to the height
    max_turn = min(lv.rotation, math.degrees(math.atan(h / (3.0 * w))))
    angle = math.radians(rng.uniform(-max_turn, max_turn)) if lv.rotation else 0.0
    shear = rng.uniform(-lv.shear, lv.shear) if lv.shear else 0.0
    if not (angle or shear or lv.perspective):
        return fit_height(mask, height, max_width)
    c, s = math.cos(angle), math.sin(angle)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = src @ np.array([[c, -s + c * shear], [s, c + s * shear]], np.float32).T  # shear, then rotate
    if lv.perspective:
        dst += rng.uniform(-lv.perspective * h, lv.perspective * h, size=(4, 2)).astype(np.float32)
    dst -= dst.min(0)
    scale = height / dst[:, 1].max()
    dst[:, 1] *= scale
    dst[:, 0] *= min(scale, max_width / dst[:, 0].max())  # squeezed only beyond max_width
    size = (max(1, math.ceil(dst[:, 0].max())), height)
    if not lv.perspective:
        return cv2.warpAffine(mask, cv2.getAffineTransform(src[:3], dst[:3]), size, flags=cv2.INTER_LINEAR)
    return cv2.warpPerspective(mask, cv2.getPerspectiveTransform(src, dst), size, flags=cv2.INTER_LINEAR)


def fit_height(image: np.ndarray, height: int, max_width: int) -> np.ndarray:
    """Scale to the target height keeping the aspect ratio (squeezed only beyond max_width)."""
    h, w = image.shape
    new_w = max(1, min(max_width, round(w * height / max(h, 1))))
    shrink = height < h
    return cv2.resize(image, (new_w, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


_NOISE_BANK = np.random.default_rng(20261125).standard_normal(1 << 20).astype(np.float32)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Standard normal noise of a shape: a window of a fixed bank at an rng-chosen offset (deterministic,
    and far cheaper than drawing fresh normals for every pixel)."""
    n = shape[0] * shape[1]
    if n > _NOISE_BANK.size:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, _NOISE_BANK.size - n + 1))
    return _NOISE_BANK[start : start + n].reshape(shape)


def paper(rng: np.random.Generator, shape: tuple[int, int], level: float, textured: bool) -> np.ndarray:
    """A background in [0, 1]: flat paper, or paper with low-frequency mottling, fibres and speckles."""
    h, w = shape
    if not textured:
        return np.full(shape, level, np.float32)
    small = gaussian_noise(rng, (max(2, h // 12), max(2, w // 12)))
    mottle = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)  # cubic: 10x the time, same look
    bg = np.multiply(mottle, 0.035, out=mottle)  # in place, as below: level + 0.035 mottle + 0.012 noise
    bg += level
    bg += gaussian_noise(rng, shape) * 0.012
    for _ in range(int(rng.integers(0, 4))):  # fibres
        y = int(rng.integers(0, h))
        bg[y : y + 1, :] -= float(rng.uniform(0.02, 0.06))
    n_speckles = int(rng.integers(0, 1 + h * w // 500))
    bg[rng.integers(0, h, n_speckles), rng.integers(0, w, n_speckles)] -= 0.3
    return np.clip(bg, 0.0, 1.0, out=bg)


def illumination_ramp(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A linear ramp from 0 to 1 across the image, in a random direction (float32, the image's shape)."""
    h, w = shape
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (
        np.linspace(0.0, math.cos(theta), w, dtype=np.float32)[None, :]
        + np.linspace(0.0, math.sin(theta), h, dtype=np.float32)[:, None]
    )
    ramp -= ramp.min()
    ramp /= max(float(ramp.max()), 1e-6)
    return ramp


def _gradient(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A multiplicative illumination ramp in a random direction, from 1 down to 1 - strength."""
    ramp = illumination_ramp(rng, shape)
    return 1.0 - float(rng.uniform(0.1, 0.35)) * ramp


def _motion_kernel(rng: np.random.Generator) -> np.ndarray:
    """A 5-tap line kernel: horizontal, diagonal or vertical camera shake."""
    k = np.zeros((5, 5), np.float32)
    direction = int(rng.integers(3))
    if direction == 0:
        k[2, :] = 1
    elif direction == 1:
        np.fill_diagonal(k, 1)
    else:
        k[:, 2] = 1
    return k / k.sum()


def binarize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black and white as a bilevel scanner or fax makes it: a threshold near Otsu's, up to a tenth of the
    ink-paper distance darker or lighter, so strokes come out thinner or bolder, sometimes broken."""
    otsu, _ = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    lo, hi = (float(v) for v in percentiles(image, (2, 98)))
    level = otsu + rng.uniform(-0.1, 0.1) * max(hi - lo, 1.0)
    return np.where(image > level, np.uint8(255), np.uint8(0))


def photometric(mask: np.ndarray, rng: np.random.Generator, lv: LevelConfig) -> np.ndarray:
    """Compose ink over paper and degrade it; returns uint8 grayscale, dark text on light unless inverted."""
    level, ink = _uniform(rng, lv.paper) / 255.0, _uniform(rng, lv.gray_ink) / 255.0
    textured, lit = rng.random() < lv.background_prob, rng.random() < lv.gradient_prob
    contrast, brightness = _uniform(rng, lv.contrast), _uniform(rng, lv.brightness)
    if textured or lit:
        alpha = np.multiply(mask, np.float32(1.0 / 255.0), dtype=np.float32)
        bg = paper(rng, alpha.shape, level, textured)
        img = np.subtract(np.float32(ink), bg)  # in place from here on: bg + (ink - bg) * alpha
        img *= alpha
        img += bg
        if lit:
            img *= _gradient(rng, img.shape)
    else:  # flat paper: the whole composition is a function of the mask value, so a 256-entry table
        img = level + (ink - level) * np.linspace(0.0, 1.0, 256, dtype=np.float32)
    if contrast != 1.0 or brightness:
        img -= 0.5  # (img - 0.5) * contrast + 0.5 + brightness
        img *= contrast
        img += 0.5
        img += brightness
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    img += 0.5
    out = img.astype(np.uint8)
    if not (textured or lit):
        out = cv2.LUT(mask, out)
    if rng.random() < lv.blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), _uniform(rng, lv.blur_sigma))
    if rng.random() < lv.motion_blur_prob:
        out = cv2.filter2D(out, -1, _motion_kernel(rng))
    if rng.random() < lv.downup_prob:
        h, w = out.shape
        f = _uniform(rng, lv.downup_scale)
        small = cv2.resize(out, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if lv.binarize_prob and rng.random() < lv.binarize_prob:
        out = binarize(out, rng)
    if rng.random() < lv.noise_prob:
        std = _uniform(rng, lv.noise_std)
        noisy = gaussian_noise(rng, out.shape) * std  # in place: out + std * noise
        noisy += out
        out = np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
    if rng.random() < lv.jpeg_prob:
        quality = int(rng.integers(*lv.jpeg_quality))
        _, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if rng.random() < lv.invert_prob:
        out = 255 - out
    return np.ascontiguousarray(out)
