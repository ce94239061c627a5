"""What a dataset holds (docs/dataset-format.md): its file names, manifest fields and splits, and where a
manifest's shard may lie. Cheap to import: the writer, the reader and validation share it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from khmer_ocr import storage
from khmer_ocr.errors import KhmerOcrError

if TYPE_CHECKING:
    from khmer_ocr.data.config import DataConfig

MANIFEST, CARD, CONFIG, CHARSET, GRID = (
    "manifest.jsonl",
    "card.json",
    "config.yaml",
    "charset.json",
    "samples.png",
)
GENERATOR = "generator.json"
SPLITS = ("train", "val", "test", "test_unseen_font")
MANIFEST_FIELDS = (
    "id",
    "text",
    "font",
    "font_family",
    "difficulty",
    "source",
    "width",
    "height",
    "checksum",
    "split",
    "shard",
    "offset",
    "size",
)  # see docs/dataset-format.md


class DatasetError(KhmerOcrError, ValueError):
    """A dataset that cannot be written or read as asked (config mismatch, incomplete, not found)."""


def shard_name(k: int) -> str:
    return f"shards/shard-{k:05d}"


# What a dataset folder may hold (docs/dataset-format.md), besides its shards/ folder; validation reports too.
DATASET_FILES = frozenset(
    {MANIFEST, CARD, "card.md", CONFIG, GENERATOR, CHARSET, GRID, "validation.json", "validation.html"}
)
SHARD_FILE = re.compile(r"^shard-(\d{5,})\.(?:tar|jsonl)$")  # a shard's file name; group 1: its number
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def shard_problem(shard: object, local_root: Path | None = None) -> str | None:
    """Why a manifest `shard` value is not a path inside the dataset (None when it is): it must be a
    relative path of plain names, e.g. shards/shard-00000.tar; no absolute path, no `..`, no URI; under a
    local dataset folder local_root (resolved), no symbolic link out of it either."""
    if not isinstance(shard, str) or not shard:
        return "not a path"
    if shard.startswith(("/", "~")) or "://" in shard or "\\" in shard:
        return "not a relative path inside the dataset"
    if not all(_SEGMENT.fullmatch(part) for part in shard.split("/")):
        return "outside the dataset folder (only plain names, no '..' or empty parts)"
    if local_root is not None and not (local_root / shard).resolve().is_relative_to(local_root):
        return "a link out of the dataset folder"
    return None


def shard_uri(uri: str, shard: object) -> str:
    """The location of a manifest's shard inside the dataset at uri; DatasetError when it would be outside."""
    if (problem := shard_problem(shard)) is not None:
        raise DatasetError(f"shard {shard!r} of {uri}: {problem}")
    return storage.join(uri, str(shard))


def shard_ranges(cfg: DataConfig) -> dict[int, range]:
    """The sample indices of each shard of the dataset cfg describes, by shard id."""
    n_shards = -(-cfg.num_samples // cfg.shard_size)
    return {
        k: range(k * cfg.shard_size, min(cfg.num_samples, (k + 1) * cfg.shard_size)) for k in range(n_shards)
    }
