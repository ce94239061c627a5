"""Page OCR: finding the text lines of a page (khmer_ocr.pages.layout), reading them (PageReader) and
scoring both (khmer_ocr.pages.metrics)."""

from khmer_ocr.pages.layout import FoundLine, LineFinder, PageLayout, find_lines
from khmer_ocr.pages.reader import PageLine, PagePrediction, PageReader
from khmer_ocr.version import LINE_FINDER_VERSION

__all__ = [
    "LINE_FINDER_VERSION",
    "FoundLine",
    "LineFinder",
    "PageLayout",
    "PageLine",
    "PagePrediction",
    "PageReader",
    "find_lines",
]
