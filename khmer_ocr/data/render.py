"""Rendering a line of Khmer text with Pillow's RAQM layout engine (HarfBuzz shaping: COENG subscripts,
vowel reordering) into a coverage mask, then into a finished, augmented grayscale line image."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageFont

from khmer_ocr.data import augment
from khmer_ocr.data.config import DataConfig, LevelConfig
from khmer_ocr.data.fonts import FontInfo, require_raqm
from khmer_ocr.data.glyph_cache import Glyph, GlyphTable, glyph_table
from khmer_ocr.script import clusters


@lru_cache(maxsize=256)
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """A font at a size, shaped by RAQM (never the BASIC engine, which cannot lay out Khmer)."""
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.RAQM)


def _new_cluster(table: GlyphTable, font: ImageFont.FreeTypeFont, cluster: str) -> Glyph:
    """(ink, x offset, y offset, advance) of a cluster the table does not hold yet: shaped and rasterized
    once per font and size, then kept (khmer_ocr.data.glyph_cache, in memory and on disk)."""
    ink, ox, oy = _rasterize(font, cluster)
    glyph = (ink, ox, oy, font.getlength(cluster))
    table.put(cluster, glyph)
    return glyph


_DIRECT = True  # Pillow's renderer draws straight into a numpy array (False: this Pillow's API differs)


def _rasterize(font: ImageFont.FreeTypeFont, text: str) -> tuple[np.ndarray, int, int]:
    """(ink, x offset, y offset) of text, as font.getmask2(text, mode="L") draws it. Pillow's renderer is
    handed a canvas that shares a numpy array's memory, which saves converting its image afterwards."""
    global _DIRECT
    if _DIRECT:
        made: list[np.ndarray] = []

        def canvas(width: int, height: int) -> object:
            made.append(np.zeros((height, width), np.uint8))
            if not (width and height):
                return Image.core.fill("L", (width, height))
            return Image.core.map_buffer(made[-1], (width, height), "raw", 0, ("L", 0, 1))

        try:  # the arguments FreeTypeFont.getmask2 passes (Pillow >= 11)
            _, (ox, oy) = font.font.render(text, canvas, "L", None, None, None, 0, False, None, 0, (0, 0))
            return made[-1], ox, oy
        except (TypeError, AttributeError, IndexError):
            _DIRECT = False
    core, (ox, oy) = font.getmask2(text, mode="L")
    if not (core.size[0] and core.size[1]):
        return np.zeros((0, 0), np.uint8), ox, oy
    return np.asarray(Image.Image()._new(core)), ox, oy


def line_ink(text: str, font: ImageFont.FreeTypeFont, line_box: bool = False) -> np.ndarray:
    """Shaped and rasterized ink of a line (255 = ink), cropped to its ink box; with line_box, vertically
    to the union of the ink box and the font's line box (ascent + descent) instead.

    Khmer shaping (subscripts, vowel reordering, mark positioning) never crosses an orthographic cluster,
    so each cluster is shaped by RAQM on its own, rasterized once per font and size, and placed at its
    advance; this is several times faster than rasterizing whole lines and draws the same glyphs.
    """
    placed = []
    x = 0.0
    x0 = y0 = 1 << 30
    x1 = y1 = -(1 << 30)
    table = glyph_table(font)
    for cluster in clusters(text):  # the hot loop of generation: bounds kept on the way
        ink, ox, oy, advance = table.get(cluster) or _new_cluster(table, font, cluster)
        h, w = ink.shape
        if h and w:
            px = round(x) + ox
            placed.append((px, oy, h, w, ink))
            if px < x0:
                x0 = px
            if px + w > x1:
                x1 = px + w
            if oy < y0:
                y0 = oy
            if oy + h > y1:
                y1 = oy + h
        x += advance
    if not placed:
        return np.zeros((1, 1), np.uint8)
    if line_box:  # Pillow's origin is the top of the ascent: the line box is rows 0 .. ascent + descent
        y0, y1 = min(y0, 0), max(y1, sum(font.getmetrics()))
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for px, py, h, w, ink in placed:
        view = canvas[py - y0 : py - y0 + h, px - x0 : px - x0 + w]
        np.maximum(view, ink, out=view)
    return canvas


def render_mask(
    text: str, font: ImageFont.FreeTypeFont, rng: np.random.Generator, lv: LevelConfig
) -> np.ndarray:
    """Ink coverage (uint8, 255 = ink) of the line with random margins; with baseline jitter the line
    rides a gentle wave, as on a curled page."""
    ink = line_ink(text, font, line_box=bool(rng.random() < lv.line_box_prob))
    h, w = ink.shape
    mt, mb = (rng.uniform(*lv.margin, size=2) * h).astype(int) + 1
    ml, mr = (rng.uniform(0.05, 0.6, size=2) * font.size).astype(int) + 1
    amp = round(lv.baseline_jitter * h * rng.random()) if lv.baseline_jitter else 0
    canvas = np.zeros((h + mt + mb + 2 * amp, w + ml + mr), np.uint8)
    canvas[mt + amp : mt + amp + h, ml : ml + w] = ink
    if amp:
        period = rng.uniform(1.5, 6.0) * h
        cols = np.arange(canvas.shape[1])
        shift = np.rint(amp * np.sin(2 * np.pi * cols / period + rng.uniform(0, 2 * np.pi))).astype(int)
        canvas = _shift_columns(canvas, shift)
    return canvas


def _shift_columns(canvas: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Each column moved down by its shift (up when negative), rows that come in being 0: the same as
    rolling each column, since at least |shift| + 1 blank rows pad the ink above and below. The shift is a
    smooth wave, so columns are moved a run of equal shifts at a time."""
    rows = canvas.shape[0]
    out = np.zeros_like(canvas)
    edges = (np.flatnonzero(np.diff(shift)) + 1).tolist()
    for a, b in zip([0, *edges], [*edges, len(shift)], strict=True):
        s = int(shift[a])
        if s >= 0:
            out[s:, a:b] = canvas[: rows - s, a:b]
        else:
            out[: rows + s, a:b] = canvas[-s:, a:b]
    return out


class LineRenderer:
    """Turns (text, font, level, rng) into a finished uint8 line image of the configured height."""

    def __init__(self, cfg: DataConfig) -> None:
        require_raqm()
        self.cfg = cfg

    def render(self, text: str, font: FontInfo, level: int, rng: np.random.Generator) -> np.ndarray:
        lv = self.cfg.level(level)
        size = int(self.cfg.fonts.sizes[int(rng.integers(len(self.cfg.fonts.sizes)))])
        mask = render_mask(text, load_font(font.path, size), rng, lv)
        mask = augment.geometric(mask, rng, lv, self.cfg.image_height, self.cfg.max_width)
        return augment.photometric(mask, rng, lv)
