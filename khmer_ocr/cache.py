"""The local cache: derived text tables, downloaded models and dataset shards (KHMER_OCR_CACHE, else
~/.cache/khmer-ocr)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where derived resources and downloads are cached (KHMER_OCR_CACHE, else ~/.cache/khmer-ocr)."""
    path = Path(os.environ.get("KHMER_OCR_CACHE", Path.home() / ".cache" / "khmer-ocr"))
    path.mkdir(parents=True, exist_ok=True)
    return path
