"""Training batches from a generated dataset: decoded, preprocessed lines grouped by width."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from khmer_ocr.data.reader import Dataset, ShardReader
from khmer_ocr.models import EOS, PAD, SOS
from khmer_ocr.preprocess import batch_lines, prepare_line
from khmer_ocr.script import Charset


class LineSamples(torch.utils.data.Dataset):
    """(prepared line, token ids, text) for the records of some splits of a dataset."""

    def __init__(
        self,
        dataset: Dataset,
        splits: list[str],
        charset: Charset,
        height: int,
        max_width: int,
        max_length: int,
    ) -> None:
        self.records = [r for r in dataset.records if r["split"] in splits]
        if not self.records:
            raise ValueError(f"{dataset.uri} has no lines in split(s) {splits}")
        self.reader = ShardReader(dataset)
        self.charset, self.height, self.max_width, self.max_length = charset, height, max_width, max_length
        self.widths = np.asarray([r["width"] * height / r["height"] for r in self.records])
        self.difficulties = np.asarray([r["difficulty"] for r in self.records])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[np.ndarray, list[int], str]:
        rec = self.records[i]
        line = prepare_line(self.reader.image(rec), self.height, self.max_width)
        return line, self.charset.encode(rec["text"])[: self.max_length], rec["text"]


@dataclass
class Batch:
    images: torch.Tensor  # (B, 1, H, W) ink = 1
    widths: torch.Tensor  # (B,)
    targets: torch.Tensor  # (B, L + 2): <sos> ids <eos>, padded with <pad>
    target_lengths: torch.Tensor  # (B,) number of ids (without <sos>/<eos>)
    texts: list[str]

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.images.to(device, non_blocking=True),
            self.widths.to(device),
            self.targets.to(device),
            self.target_lengths.to(device),
            self.texts,
        )


# Training batches are padded to a multiple of this width: a few shapes instead of hundreds keeps oneDNN's
# per-shape kernel cache and the allocator's fragmentation small over a long CPU run (its memory kept
# growing by gigabytes an hour with 4-pixel steps), for about 4 % more columns.
TRAIN_WIDTH_MULTIPLE = 32


def collate(samples: list[tuple[np.ndarray, list[int], str]], multiple: int = TRAIN_WIDTH_MULTIPLE) -> Batch:
    images, widths = batch_lines([s[0] for s in samples], multiple)
    longest = max(len(s[1]) for s in samples)
    targets = torch.full((len(samples), longest + 2), PAD, dtype=torch.long)
    for i, (_, ids, _) in enumerate(samples):
        targets[i, 0] = SOS
        targets[i, 1 : len(ids) + 1] = torch.tensor(ids, dtype=torch.long)
        targets[i, len(ids) + 1] = EOS
    return Batch(
        torch.from_numpy(images),
        torch.from_numpy(widths),
        targets,
        torch.tensor([len(s[1]) for s in samples], dtype=torch.long),
        [s[2] for s in samples],
    )


def width_batches(
    widths: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    weights: np.ndarray | None = None,
    shuffle: bool = True,
) -> list[list[int]]:
    """Batches of indices with similar widths (less padding), in a random order fixed by (seed, epoch).

    With weights (a curriculum), indices are drawn with replacement in proportion to them.
    """
    n = len(widths)
    rng = np.random.default_rng([seed, epoch])
    if weights is not None:
        order = rng.choice(n, size=n, replace=True, p=weights)
    else:
        order = rng.permutation(n) if shuffle else np.arange(n)
    chunk = batch_size * 32  # sort by width inside large chunks, so batches stay random across the set
    batches = []
    for start in range(0, n, chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(widths[part], kind="stable")]
        batches += [part[i : i + batch_size].tolist() for i in range(0, len(part), batch_size)]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
