"""PageReader: whole pages in, lines with boxes and text out (line finding + the line recognizer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from khmer_ocr.inference import Recognizer
from khmer_ocr.pages.layout import LineFinder, PageLayout


@dataclass
class PageLine:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels of the page image
    text: str
    confidence: float

    def to_dict(self) -> dict:
        return {"box": list(self.box), "text": self.text, "confidence": round(self.confidence, 4)}


@dataclass
class PagePrediction:
    lines: list[PageLine] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The lines' texts joined by newlines, in reading order."""
        return "\n".join(ln.text for ln in self.lines)

    def to_dict(self) -> dict:
        return {"text": self.text, "lines": [ln.to_dict() for ln in self.lines]}


class PageReader:
    """`PageReader.load(ref).read(images)`: each page's lines in reading order with boxes, text and
    confidence. The line crops of all the pages are read by the recognizer in batches."""

    def __init__(self, recognizer: Recognizer, finder: LineFinder | None = None) -> None:
        self.recognizer = recognizer
        self.finder = finder or LineFinder()

    @classmethod
    def load(cls, ref: str | Path | None = None, device: str = "cpu") -> PageReader:
        """ref as for Recognizer.load (None: the committed reference model)."""
        return cls(Recognizer.load(ref, device))

    def read(self, images: list, batch_size: int = 32) -> list[PagePrediction]:
        """images: paths, PIL images or arrays (grayscale or colour, any polarity)."""
        return self.read_layouts([self.find(im) for im in images], batch_size)

    def find(self, image: np.ndarray | str | Path) -> PageLayout:
        """The page's lines (boxes and crops), not yet read."""
        return self.finder.find(self.recognizer.read_image(image))

    def read_layouts(self, layouts: list[PageLayout], batch_size: int = 32) -> list[PagePrediction]:
        """Read the lines the finder found (`find`) on each page, all pages' crops batched."""
        crops = [ln.crop for lay in layouts for ln in lay.lines]
        preds = self.recognizer.predict(crops, batch_size=batch_size) if crops else []
        out, at = [], 0
        for lay in layouts:
            page = PagePrediction()
            for ln in lay.lines:
                p = preds[at]
                at += 1
                if p.text.strip():  # a found region the recognizer reads as nothing is not a line
                    page.lines.append(PageLine(ln.box, p.text, p.confidence))
            out.append(page)
        return out

    def read_one(self, image: np.ndarray | str | Path) -> PagePrediction:
        return self.read([image])[0]
