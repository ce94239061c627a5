"""Image grids for people to look at: line images with their labels rendered underneath."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from khmer_ocr.data.fonts import FontConfig, discover_fonts
from khmer_ocr.data.render import load_font


def _label_font(size: int):
    fonts = {f.name: f for f in discover_fonts(FontConfig(unseen=[]))}
    for name in ("KhmerOSbattambang", "KhmerOS", "NotoSansKhmer-Regular"):
        if name in fonts:
            return load_font(fonts[name].path, size)
    return load_font(next(iter(fonts.values())).path, size)


def sample_grid(
    images: list[np.ndarray], captions: list[str], labels: list[str], width: int = 1000
) -> Image.Image:
    """One column of (caption, image, label) rows on white; labels are shaped Khmer (RAQM)."""
    label_font, caption_font = _label_font(22), _label_font(13)
    rows = []
    for img, cap, lab in zip(images, captions, labels, strict=True):
        tile = Image.fromarray(img).convert("RGB")
        if tile.width > width - 20:
            tile = tile.resize((width - 20, max(1, tile.height * (width - 20) // tile.width)))
        row = Image.new("RGB", (width, tile.height + 62), "white")
        draw = ImageDraw.Draw(row)
        draw.text((10, 2), cap, font=caption_font, fill=(120, 120, 120))
        row.paste(tile, (10, 20))
        draw.rectangle((9, 19, 10 + tile.width, 20 + tile.height), outline=(200, 0, 0))
        draw.text((10, 24 + tile.height), lab, font=label_font, fill=(0, 0, 160))
        rows.append(row)
    grid = Image.new("RGB", (width, sum(r.height for r in rows) or 1), "white")
    y = 0
    for r in rows:
        grid.paste(r, (0, y))
        y += r.height
    return grid
