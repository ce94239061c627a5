"""The pictures logged with a training run: learning curves, a grid of validation readings, and a rendered
line (the logged model's input example). Matplotlib and Pillow are imported inside the functions."""

from __future__ import annotations

import io
import math

GRID_ROWS = 40  # val lines drawn in val_predictions.png


def learning_curves(history: list[dict]):
    """A matplotlib Figure: training loss, learning rate and the validation metrics by epoch."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
    ax_loss.plot(epochs, [r.get("loss", math.nan) for r in history], "o-", color="tab:blue")
    ax_loss.set(title="training loss", xlabel="epoch")
    ax_lr.plot(epochs, [r.get("lr", math.nan) for r in history], "o-", color="tab:gray")
    ax_lr.set(title="learning rate (end of epoch)", xlabel="epoch")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for key in ("val_char_accuracy", "val_sequence_accuracy", "val_cer", "val_cluster_cer"):
        if any(key in r for r in history):
            ax_val.plot(epochs, [r.get(key, math.nan) for r in history], "o-", label=key[4:])
    ax_val.set(title="validation", xlabel="epoch")
    ax_val.legend(fontsize="small")
    for ax in (ax_loss, ax_lr, ax_val):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _khmer_font(size: int):
    """A Khmer font (RAQM layout) with Latin glyphs too where one is installed; Pillow's default otherwise."""
    from PIL import ImageFont

    from khmer_ocr.data.config import FontConfig
    from khmer_ocr.data.fonts import discover_fonts
    from khmer_ocr.data.render import load_font

    try:
        fonts = {f.name: f for f in discover_fonts(FontConfig(unseen=[]))}
    except (OSError, ValueError):
        fonts = {}
    for name in ("KhmerOSbattambang", "KhmerOS", "NotoSansKhmer-Regular", *sorted(fonts)):
        if name in fonts:
            return load_font(fonts[name].path, size)
    return ImageFont.load_default(size)


def line_png(text: str, size: int = 32) -> bytes:
    """A text line rendered black on white, as PNG bytes (the logged model's input example)."""
    from PIL import Image, ImageDraw

    font = _khmer_font(size)
    left, top, right, bottom = font.getbbox(text or " ")
    img = Image.new("L", (max(1, right - left) + 16, max(1, bottom - top) + 16), 255)
    ImageDraw.Draw(img).text((8 - left, 8 - top), text, font=font, fill=0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def predictions_grid(refs: list[str], hyps: list[str], max_rows: int = GRID_ROWS, width: int = 1000):
    """A PIL image: for each of the first max_rows val lines, the reference (blue) above the model's reading
    (green when exactly right, red and on a pink row when not)."""
    from PIL import Image, ImageDraw, ImageFont

    khmer, latin = _khmer_font(24), ImageFont.load_default(14)
    line_h, pad, text_x = 44, 8, 112
    shown = list(zip(refs, hyps, strict=True))[:max_rows]
    longest = max((khmer.getlength(t) for pair in shown for t in pair if t), default=0)
    width = max(width, min(3000, text_x + int(longest) + 2 * pad))
    wrong = sum(r != h for r, h in zip(refs, hyps, strict=True))
    header = 30
    img = Image.new("RGB", (width, header + len(shown) * (2 * line_h + pad)), "white")
    draw = ImageDraw.Draw(img)
    draw.text(
        (pad, 8),
        f"validation predictions: {wrong} of {len(refs)} lines wrong (first {len(shown)} shown); "
        "blue = reference, green = right, red = wrong",
        font=latin,
        fill=(0, 0, 0),
    )
    y = header
    for i, (ref, hyp) in enumerate(shown):
        ok = ref == hyp
        if not ok:
            draw.rectangle((0, y, width, y + 2 * line_h + pad - 2), fill=(255, 232, 232))
        draw.text((pad, y + 4), f"#{i} ref", font=latin, fill=(90, 90, 90))
        draw.text((pad, y + line_h + 4), "hyp " + ("ok" if ok else "WRONG"), font=latin, fill=(90, 90, 90))
        draw.text((text_x, y + 2), ref, font=khmer, fill=(0, 0, 160))
        colour = (0, 130, 0) if ok else (210, 0, 0)
        draw.text(
            (text_x, y + line_h + 2), hyp if hyp else "(empty)", font=khmer if hyp else latin, fill=colour
        )
        y += 2 * line_h + pad
        draw.line((0, y - 2, width, y - 2), fill=(220, 220, 220))
    return img
