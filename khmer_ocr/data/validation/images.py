"""Per-image statistics: each record's bytes read from its shard (each shard read once, whole, so local and
s3:// datasets cost the same number of requests), checked against its checksum, decoded once (by the
decoder training uses) and measured on its histogram."""

from __future__ import annotations

import hashlib
import math
import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from khmer_ocr import storage
from khmer_ocr.data.format import shard_problem
from khmer_ocr.data.reader import Dataset, decode_gray
from khmer_ocr.preprocess import histogram, percentiles
from khmer_ocr.processes import worker_pool

# Per-image columns; None where unknown (no bytes to check, or nothing decoded), which GX counts as missing.
IMAGE_COLUMNS = (
    *("file_present", "checksum_ok", "decodes", "size_ok", "decoded_width", "decoded_height"),
    *("pixel_std", "contrast", "blank"),
)
# Blank / near-blank images, on 0..255 grayscale. The contrast is p99 - p1: the hardest generated lines
# (level 5: contrast x0.45, gray ink, textured paper) go down to std ~6 and p95 - p5 ~20 while still
# readable, so p95 - p5 < 20 would flag real lines; p99 - p1 stays above ~24 for them.
BLANK_MAX_STD = 3.0
BLANK_MAX_CONTRAST = 12.0


def image_stats(ds: Dataset, records: list[dict], progress: bool, workers: int = 0) -> list[dict]:
    """Per-record image statistics; each shard is read once, whole. Unknown values (no bytes) are None.
    Shards are read here and measured by `workers` processes (0: one per CPU core; 1: in this one)."""
    stats: list[dict] = [{} for _ in records]
    by_shard: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_shard.setdefault(str(rec.get("shard")), []).append(i)
    root = None if storage.is_s3(ds.uri) else Path(ds.uri).resolve()

    def shard_bytes(shard: str, rows: list[int]) -> bytes | None:
        if shard_problem(records[rows[0]].get("shard"), root) is not None:  # never read outside the dataset
            return None
        try:
            return storage.read_bytes(storage.join(ds.uri, shard))
        except (storage.StorageError, OSError, ValueError):
            return None

    workers = min(workers or os.cpu_count() or 1, len(by_shard))
    with tqdm(total=len(records), unit="img", desc="validate images", disable=not progress) as bar:
        if workers <= 1:
            for shard, rows in by_shard.items():
                data = shard_bytes(shard, rows)
                for i in rows:
                    stats[i] = _one_image(records[i], data)
                bar.update(len(rows))
            return stats
        with worker_pool(workers) as pool:
            pending: deque = deque()  # a few shards in flight: memory stays bounded on large datasets

            def collect() -> None:
                rows, result = pending.popleft()
                for i, st in zip(rows, result.get(), strict=True):
                    stats[i] = st
                bar.update(len(rows))

            for shard, rows in by_shard.items():
                recs = [records[i] for i in rows]
                pending.append((rows, pool.apply_async(_shard_stats, (recs, shard_bytes(shard, rows)))))
                while len(pending) > 2 * workers:
                    collect()
            while pending:
                collect()
    return stats


def _shard_stats(records: list[dict], shard: bytes | None) -> list[dict]:
    return [_one_image(rec, shard) for rec in records]


def _one_image(rec: dict, shard: bytes | None) -> dict:
    out: dict[str, Any] = dict.fromkeys(IMAGE_COLUMNS)
    out["file_present"] = False
    try:
        offset, size = int(rec["offset"]), int(rec["size"])
    except (KeyError, TypeError, ValueError):
        return out
    if shard is None or offset < 0 or size <= 0 or offset + size > len(shard):
        return out
    png = shard[offset : offset + size]
    out["file_present"] = True
    out["checksum_ok"] = "sha256:" + hashlib.sha256(png).hexdigest() == rec.get("checksum")
    try:
        gray = decode_gray(png, rec)  # the decoder training reads with; decoded once, kept uint8
    except Exception:  # any decoder error means: not an image
        out["decodes"] = False
        return out
    out["decodes"] = True
    h, w = gray.shape
    out["decoded_width"], out["decoded_height"] = int(w), int(h)
    out["size_ok"] = (w, h) == (rec.get("width"), rec.get("height"))
    if gray.size == 0:
        out["pixel_std"], out["contrast"], out["blank"] = 0.0, 0.0, True
        return out
    std, contrast = gray_stats(gray)
    out["pixel_std"], out["contrast"] = round(std, 2), round(contrast, 2)
    out["blank"] = std < BLANK_MAX_STD or contrast < BLANK_MAX_CONTRAST
    return out


_LEVELS = np.arange(256, dtype=np.float64)


def gray_stats(gray: np.ndarray) -> tuple[float, float]:
    """(standard deviation, p99 - p1) of a non-empty uint8 image, from its histogram: the values of
    np.std and of np.percentile's linear method, without sorting or converting the pixels."""
    n = gray.size
    counts = histogram(gray)
    mean = float(counts @ _LEVELS) / n
    std = math.sqrt(float(counts @ (_LEVELS - mean) ** 2) / n)
    p1, p99 = percentiles(gray, (1, 99), counts)
    return std, float(p99 - p1)
