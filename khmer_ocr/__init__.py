"""khmer-ocr: synthetic Khmer text-line data, recognizer training, registry and serving.

`from khmer_ocr import Recognizer` (khmer_ocr.inference.Recognizer) is imported on first use, so that
`import khmer_ocr` stays free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from khmer_ocr.version import __version__

__all__ = ["Recognizer", "__version__"]

if TYPE_CHECKING:
    from khmer_ocr.inference import Recognizer


def __getattr__(name: str):
    if name == "Recognizer":
        from khmer_ocr.inference import Recognizer

        return Recognizer
    raise AttributeError(f"module 'khmer_ocr' has no attribute {name!r}")
