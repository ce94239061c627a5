"""Synthetic pages: several Khmer lines laid out as a document, a scan, a phone photo or an application
screenshot, with each line's box and text (datasets of `kind: pages`).

Lines are shaped and rasterized by khmer_ocr.data.render (`line_ink`, the same glyphs as line datasets),
placed on a page (mixed sizes and fonts, headings, indents, ragged ends, an optional second column, tight
and loose line spacing), composed over paper or UI panels and degraded as a whole page:

  clean    flat paper, dark ink, upright
  screen   an application window: title bar, side menu, content panel; dark or light theme (light text on
           dark panels), anti-aliased small text, sometimes re-encoded as JPEG
  scan     textured paper, a few degrees of rotation, uneven illumination, blur, noise, JPEG
  photo    the page on a darker surface, perspective, rotation, strong uneven light and shadow, blur, noise,
           JPEG

Each line's box is the axis-aligned bounding box of its ink after the page's geometric transform, in the
final image's pixel coordinates [x0, y0, x1, y1) (x1, y1 exclusive). The reading order of the lines is the
order of the layout: title bar, side menu, then content for screens; heading, then the left column, then
the right one for documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from khmer_ocr.data import augment
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.fonts import FontInfo, ShapingChecker, require_raqm, select_fonts
from khmer_ocr.data.generate import MAX_SPLIT_TRIES, split_of
from khmer_ocr.data.page_effects import degrade, light, warp
from khmer_ocr.data.png import encode_png
from khmer_ocr.data.render import line_ink, load_font
from khmer_ocr.data.sources import LineComposer

# The difficulty level recorded for each page style (the manifest's `difficulty` field).
STYLE_LEVEL = {"clean": 1, "screen": 2, "scan": 3, "photo": 4}
LEVEL_STYLE = {v: k for k, v in STYLE_LEVEL.items()}
MAX_LINE_CHARS = 70  # the recognizer reads lines of up to 80 characters
MAX_TEXT_TRIES = 30


@dataclass
class PageLine:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in the page image
    text: str
    font: str
    size: int  # font size in pixels before any page scaling

    def record(self) -> dict:
        return {"box": list(self.box), "text": self.text, "font": self.font, "size": self.size}


@dataclass
class PageSample:
    """One synthetic page; the same fields as a line Sample (generate.Sample), plus its lines and style."""

    id: str
    text: str  # the lines' texts joined by "\n" in reading order
    font: FontInfo  # the body font
    difficulty: int  # STYLE_LEVEL[style]
    source: str  # the text source of the first line
    split: str
    image: np.ndarray
    skipped_pairs: int
    style: str
    lines: list[PageLine] = field(default_factory=list)

    def png(self, compress_level: int = 1) -> bytes:
        return encode_png(self.image, compress_level)

    def extra_fields(self) -> dict:
        """Manifest fields of a page beyond a line's (docs/dataset-format.md)."""
        return {"style": self.style, "lines": [ln.record() for ln in self.lines]}


@dataclass
class _Line:
    """A line laid out on the flat page, before composition."""

    text: str
    font: FontInfo
    size: int
    x: int
    y: int  # top of the ink
    ink: np.ndarray  # uint8 coverage, 255 = ink, tight
    color: float  # ink level 0..1
    source: str


@dataclass
class _Panel:
    x0: int
    y0: int
    x1: int
    y1: int
    level: float  # background 0..1
    ink: float  # text level 0..1


class PageFactory:
    """Deterministic: page i depends only on (cfg, seed, i)."""

    def __init__(self, cfg: DataConfig) -> None:
        require_raqm()
        cv2.setNumThreads(1)
        self.cfg = cfg
        self.train_fonts, self.unseen_fonts = select_fonts(cfg.fonts)
        self.composer = LineComposer(cfg.text)
        self.composer.warm_up()
        self._checkers = {f.name: ShapingChecker(f.path) for f in self.train_fonts + self.unseen_fonts}
        styles = {k: v for k, v in cfg.pages.styles.items() if v > 0}
        unknown = set(styles) - set(STYLE_LEVEL)
        if unknown or not styles:
            raise ValueError(f"pages.styles: give positive weights to some of {sorted(STYLE_LEVEL)}")
        self._styles = sorted(styles)
        p = np.asarray([styles[s] for s in self._styles], float)
        self._style_p = p / p.sum()

    # ------------------------------------------------------------------------------------------- text
    def _fits(self, font: FontInfo, text: str) -> bool:
        return self._checkers[font.name].ok(text)

    def _text(
        self, rng: np.random.Generator, length: tuple[int, int], split: str | None
    ) -> tuple[str, str, str]:
        """(text, source, split) of a line; of the page's split when one is given."""
        wanted = {split} if split else set(self.cfg.splits)
        if split == "test_unseen_font":
            wanted = {"test"}
        for _ in range(MAX_SPLIT_TRIES):
            text, source = self.composer.compose(rng, length)
            s = split_of(text, self.cfg.val_fraction, self.cfg.test_fraction)
            if not wanted or s in wanted:
                return text, source, s
        raise RuntimeError(f"no text of splits {sorted(wanted)} in {MAX_SPLIT_TRIES} tries: check fractions")

    def _line(
        self,
        rng: np.random.Generator,
        font: FontInfo,
        size: int,
        width: int,
        split: str,
        fill: float,
        counter: list[int],
    ) -> tuple[str, str, np.ndarray] | None:
        """A line of text in font at size whose ink is at most `width` px wide (about fill * width)."""
        pil_font = load_font(font.path, size)
        per_char = 0.42 * size  # a Khmer code point's average advance, roughly
        target = max(2, min(MAX_LINE_CHARS, int(width * fill / per_char)))
        for _ in range(MAX_TEXT_TRIES):
            lo = max(1, int(target * 0.7))
            text, source, _ = self._text(rng, (lo, target), split)
            if not self._fits(font, text):
                counter[0] += 1
                continue
            ink = line_ink(text, pil_font)
            if ink.shape[1] <= width and ink.max() > 0:
                return text, source, ink
            target = max(2, int(target * width / ink.shape[1] * 0.95))
        return None

    # ------------------------------------------------------------------------------------------- layout
    def make(self, index: int, level: int | None = None) -> PageSample:
        rng = np.random.default_rng([self.cfg.seed, index])
        if level is not None:
            style = LEVEL_STYLE[level]
        else:
            style = self._styles[int(rng.choice(len(self._styles), p=self._style_p))]
        pc = self.cfg.pages
        _, _, split = self._text(rng, (5, 20), None)
        pool = self.train_fonts
        if split == "test" and self.unseen_fonts and rng.random() < self.cfg.unseen_font_fraction:
            pool, split = self.unseen_fonts, "test_unseen_font"
        body_font = pool[int(rng.integers(len(pool)))]
        other_font = pool[int(rng.integers(len(pool)))] if rng.random() < pc.mixed_fonts_prob else body_font
        counter = [0]
        if style == "screen":
            size = int(rng.choice(pc.screen_sizes))
            width = int(rng.integers(*pc.screen_width))
            lines, panels, height = self._screen(rng, width, size, body_font, other_font, split, counter)
        else:
            size = int(rng.choice(pc.sizes))
            width = int(rng.integers(*pc.width))
            lines, height = self._document(rng, width, size, body_font, other_font, split, counter)
            panels = []
        if not lines:
            raise RuntimeError(f"page {index}: no line could be laid out")
        image, boxes = self._compose(rng, style, lines, panels, width, height)
        page_lines = [
            PageLine(box, ln.text, ln.font.name, ln.size) for ln, box in zip(lines, boxes, strict=True)
        ]
        return PageSample(
            id=f"{index:09d}",
            text="\n".join(ln.text for ln in lines),
            font=body_font,
            difficulty=STYLE_LEVEL[style],
            source=lines[0].source,
            split=split,
            image=image,
            skipped_pairs=counter[0],
            style=style,
            lines=page_lines,
        )

    def _column(
        self,
        rng: np.random.Generator,
        x0: int,
        width: int,
        y: int,
        n: int,
        font: FontInfo,
        size: int,
        split: str,
        counter: list[int],
        color: float,
        indent_prob: float,
    ) -> tuple[list[_Line], int]:
        """n lines stacked from y in a column [x0, x0 + width): paragraphs with first-line indents and short
        last lines; returns the lines and the y below the last one."""
        pc = self.cfg.pages
        pil_font = load_font(font.path, size)
        line_box = sum(pil_font.getmetrics())
        spacing = float(rng.uniform(*pc.line_spacing))
        out: list[_Line] = []
        prev_bottom = None
        para_left = 0
        for k in range(n):
            indent = 0
            if k == 0 or para_left == 0:
                para_left = int(rng.integers(2, 6))
                if rng.random() < indent_prob:
                    indent = int(rng.uniform(1.0, 3.0) * size)
            para_left -= 1
            fill = 1.0 if para_left > 0 and rng.random() < 0.7 else float(rng.uniform(0.3, 1.0))
            made = self._line(rng, font, size, width - indent, split, fill, counter)
            if made is None:
                continue
            text, source, ink = made
            top = int(pil_font.getbbox(text, anchor="la")[1])  # ink top below the line box top
            ink_y = y + top
            if prev_bottom is not None:
                ink_y = max(ink_y, prev_bottom + 1)  # ink of two lines never overlaps: tight, not merged
            out.append(_Line(text, font, size, x0 + indent, ink_y, ink, color, source))
            prev_bottom = ink_y + ink.shape[0]
            y += round(line_box * spacing)
            y = max(y, prev_bottom - top + 1)
        return out, y

    def _document(
        self,
        rng: np.random.Generator,
        width: int,
        size: int,
        body: FontInfo,
        other: FontInfo,
        split: str,
        counter: list[int],
    ) -> tuple[list[_Line], int]:
        pc = self.cfg.pages
        margin = int(rng.uniform(0.04, 0.1) * width)
        y = int(rng.uniform(0.03, 0.08) * width)
        lines: list[_Line] = []
        ink = float(rng.uniform(0.0, 0.16))
        n_lines = int(rng.integers(pc.lines[0], pc.lines[1] + 1))
        if rng.random() < pc.heading_prob:
            h_size = int(size * rng.uniform(1.3, 1.9))
            head, y = self._column(
                rng, margin, width - 2 * margin, y, 1, other, h_size, split, counter, ink, 0
            )
            if head and rng.random() < 0.5:  # centred
                head[0].x = (width - head[0].ink.shape[1]) // 2
            lines += head
            y += int(rng.uniform(0.2, 1.0) * size)
            n_lines = max(1, n_lines - 1)
        two = rng.random() < pc.two_columns_prob and n_lines >= 4
        if two:
            gutter = int(rng.uniform(1.5, 3.5) * size)
            col_w = (width - 2 * margin - gutter) // 2
            n_left = (n_lines + 1) // 2
            left, y_left = self._column(
                rng, margin, col_w, y, n_left, body, size, split, counter, ink, pc.indent_prob
            )
            right, y_right = self._column(
                rng,
                margin + col_w + gutter,
                col_w,
                y,
                n_lines - n_left,
                body,
                size,
                split,
                counter,
                ink,
                pc.indent_prob,
            )
            lines += left + right
            y = max(y_left, y_right)
        else:
            col, y = self._column(
                rng, margin, width - 2 * margin, y, n_lines, body, size, split, counter, ink, pc.indent_prob
            )
            lines += col
        bottom = max(ln.y + ln.ink.shape[0] for ln in lines) if lines else y
        return lines, bottom + int(rng.uniform(0.03, 0.1) * width)

    def _screen(
        self,
        rng: np.random.Generator,
        width: int,
        size: int,
        body: FontInfo,
        other: FontInfo,
        split: str,
        counter: list[int],
    ) -> tuple[list[_Line], list[_Panel], int]:
        """An application window: a title bar, a side menu (sometimes) and the content panel."""
        pc = self.cfg.pages
        dark = rng.random() < 0.5
        if dark:
            window, content = float(rng.uniform(0.08, 0.2)), float(rng.uniform(0.12, 0.28))
            text_level = float(rng.uniform(0.82, 1.0))
        else:
            window, content = float(rng.uniform(0.85, 0.95)), float(rng.uniform(0.95, 1.0))
            text_level = float(rng.uniform(0.0, 0.25))
        bar_dark = rng.random() < 0.6  # a coloured bar: light text on a darker band, in either theme
        bar_level = float(rng.uniform(0.2, 0.45)) if bar_dark else window
        bar_text = float(rng.uniform(0.9, 1.0)) if bar_dark else text_level
        lines: list[_Line] = []
        panels: list[_Panel] = []
        pad = int(rng.uniform(0.5, 1.0) * size)
        bar_size = int(size * rng.uniform(1.0, 1.4))
        bar_lines, bar_y = self._column(
            rng, pad, width // 2, pad, 1, other, bar_size, split, counter, bar_text, 0
        )
        bar_h = bar_y + pad // 2
        panels.append(_Panel(0, 0, width, bar_h, bar_level, bar_text))
        lines += bar_lines
        x_content = pad
        n_lines = int(rng.integers(pc.lines[0], pc.lines[1] + 1))
        if rng.random() < 0.6 and width >= 700:
            side_w = int(width * rng.uniform(0.2, 0.3))
            n_menu = int(rng.integers(3, 7))
            menu: list[_Line] = []
            y = bar_h + pad
            for _ in range(n_menu):
                got, y = self._column(
                    rng, pad, side_w - 2 * pad, y, 1, body, size, split, counter, text_level, 0
                )
                y += int(rng.uniform(0.3, 1.0) * size)
                menu += got
            lines += menu
            panels.append(_Panel(0, bar_h, side_w, 1 << 30, window, text_level))
            x_content = side_w + pad
        content_lines, _ = self._column(
            rng,
            x_content + pad,
            width - x_content - 2 * pad,
            bar_h + pad,
            n_lines,
            body,
            size,
            split,
            counter,
            text_level,
            0.15,
        )
        lines += content_lines
        height = max(ln.y + ln.ink.shape[0] for ln in lines) + 2 * pad
        panels.insert(0, _Panel(0, 0, width, height, content, text_level))
        for p in panels:
            p.y1 = min(p.y1, height)
        return lines, panels, height

    # ------------------------------------------------------------------------------------------- image
    def _compose(
        self,
        rng: np.random.Generator,
        style: str,
        lines: list[_Line],
        panels: list[_Panel],
        width: int,
        height: int,
    ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        shape = (height, width)
        if style == "screen":
            img = np.empty(shape, np.float32)
            for p in panels:
                img[p.y0 : p.y1, p.x0 : p.x1] = p.level
        elif style == "clean":
            img = np.full(shape, float(rng.uniform(0.92, 1.0)), np.float32)
        else:
            img = augment.paper(rng, shape, float(rng.uniform(0.8, 0.97)), textured=True)
        for ln in lines:
            h, w = ln.ink.shape
            alpha = ln.ink.astype(np.float32) * (1.0 / 255.0)
            view = img[ln.y : ln.y + h, ln.x : ln.x + w]
            view += (ln.color - view) * alpha[: view.shape[0], : view.shape[1]]
        corners = [
            np.array(
                [
                    [ln.x, ln.y],
                    [ln.x + ln.ink.shape[1], ln.y],
                    [ln.x + ln.ink.shape[1], ln.y + ln.ink.shape[0]],
                    [ln.x, ln.y + ln.ink.shape[0]],
                ],
                np.float32,
            )
            for ln in lines
        ]
        if style in ("scan", "photo"):
            img, corners = warp(rng, style, img, corners, self.cfg.pages)
            img = light(rng, style, img)
        out = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        out = degrade(rng, style, out)
        boxes = []
        for c in corners:
            x0, y0 = np.floor(c.min(0)).astype(int)
            x1, y1 = np.ceil(c.max(0)).astype(int)
            boxes.append(
                (
                    int(max(0, x0)),
                    int(max(0, y0)),
                    int(min(out.shape[1], x1)),
                    int(min(out.shape[0], y1)),
                )
            )
        return out, boxes
