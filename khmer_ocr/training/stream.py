"""Training lines rendered on the fly: an endless, deterministic, resumable stream of width-grouped batches.

The same generator as `khmer-ocr generate` (fonts, text sources, augmentation) makes the lines, but nothing
is written to disk. Group g of the stream holds the generator's samples [g * n, (g + 1) * n) for
n = batch_size * group_batches: they are rendered, prepared, sorted by width (little padding), cut into
batches, and the batches shuffled by (seed, g). A group is a pure function of (data config, g), so a
resumed run sees exactly the batches it would have seen; DataLoader workers render groups w, w + N, ...
and the loader hands them back in group order.

Only lines whose text falls in the train split are streamed (`DataConfig.splits = [train]`): validation
and test lines of a dataset generated with the same split fractions can never be trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.curriculum import CurriculumSchedule
from khmer_ocr.preprocess import prepare_line
from khmer_ocr.script import Charset
from khmer_ocr.training.data import Batch, collate

if TYPE_CHECKING:
    from khmer_ocr.training.config import TrainConfig


@dataclass
class StreamPosition:
    """Where a stream stands: the next group, and how many of its batches were already used."""

    group: int = 0
    batch: int = 0


class LineStream(torch.utils.data.IterableDataset):
    """Yields (group index, list of Batch) from `start_group` on, forever."""

    def __init__(
        self,
        data_cfg: DataConfig,
        charset: Charset,
        height: int,
        max_width: int,
        max_length: int,
        batch_size: int,
        group_batches: int = 8,
        start_group: int = 0,
        curriculum: CurriculumSchedule | None = None,
        curriculum_samples: int = 0,
    ) -> None:
        super().__init__()
        if data_cfg.splits not in ([], ["train"]):
            raise ValueError(f"a training stream renders train-split lines only, not {data_cfg.splits}")
        self.cfg = replace(data_cfg, splits=["train"])
        self.charset, self.height, self.max_width, self.max_length = charset, height, max_width, max_length
        self.batch_size, self.group_batches, self.start_group = batch_size, group_batches, start_group
        self.curriculum = curriculum if curriculum_samples > 0 else None
        self.curriculum_samples = curriculum_samples
        self._factory = None

    @property
    def group_size(self) -> int:
        return self.batch_size * self.group_batches

    def _level(self, index: int) -> int | None:
        """The curriculum's level for a sample (None: the data config's own mix)."""
        if self.curriculum is None:
            return None
        mix = self.curriculum.mix_at(min(1.0, index / self.curriculum_samples))
        levels = sorted(mix)
        rng = np.random.default_rng([self.cfg.seed, index, 1])
        return int(levels[int(rng.choice(len(levels), p=[mix[lv] for lv in levels]))])

    def group(self, g: int) -> list[Batch]:
        """The batches of group g, in training order."""
        if self._factory is None:
            from khmer_ocr.data.generate import SampleFactory

            self._factory = SampleFactory(self.cfg)
        samples = []
        for i in range(g * self.group_size, (g + 1) * self.group_size):
            s = self._factory.make(i, self._level(i))
            line = prepare_line(s.image, self.height, self.max_width)
            samples.append((line, self.charset.encode(s.text)[: self.max_length], s.text))
        order = np.argsort([s[0].shape[1] for s in samples], kind="stable")
        batches = [
            collate([samples[k] for k in order[i : i + self.batch_size]])
            for i in range(0, len(order), self.batch_size)
        ]
        shuffle = np.random.default_rng([self.cfg.seed, g, 2]).permutation(len(batches))
        return [batches[k] for k in shuffle]

    def __iter__(self) -> Iterator[tuple[int, list[Batch]]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        g = self.start_group + worker
        while True:
            yield g, self.group(g)
            g += workers


def stream_batches(stream: LineStream, position: StreamPosition, workers: int) -> Iterator[Batch]:
    """Batches from `position` on; advances `position` as each batch is handed out (so a checkpoint taken
    after a step records exactly where to resume)."""
    stream.start_group = position.group
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
        multiprocessing_context="fork" if workers else None,
        generator=torch.Generator().manual_seed(0),  # leaves the global RNG (dropout) as a resume restored it
    )
    for g, batches in loader:
        if g != position.group:
            raise RuntimeError(f"stream out of order: group {g}, expected {position.group}")
        if position.batch >= len(batches):  # a position that ends a group: its batches are all used
            position.group, position.batch = g + 1, 0
            continue
        for k in range(position.batch, len(batches)):
            last = k + 1 == len(batches)
            position.group, position.batch = (g + 1, 0) if last else (g, k + 1)
            yield batches[k]


def stream_data_config(cfg: TrainConfig) -> DataConfig:
    """The data config of streamed training lines: the stream's profile and overrides, seed = cfg.seed
    unless an override sets it."""
    from khmer_ocr.config import load_config, profile_path

    overrides = [f"seed={cfg.seed}", *cfg.data.stream.overrides]
    return load_config(DataConfig, profile_path("data", cfg.data.stream.profile), overrides)


def validation_dataset(cfg: TrainConfig, out: Path, data_cfg: DataConfig, rank: int) -> str:
    """The dataset validation reads in a streamed run: cfg.data.dataset, or (none given) a small set of
    val/test lines generated into out/eval-data with the stream's split fractions, validated with Great
    Expectations when it is installed."""
    if cfg.data.dataset:
        return cfg.data.dataset
    path = out / "eval-data"
    if rank == 0 and not (path / "manifest.jsonl").exists():
        from khmer_ocr.data.writer import generate_dataset

        eval_cfg = replace(
            data_cfg,
            name=f"{data_cfg.name}-eval",
            num_samples=cfg.data.stream.eval_lines,
            seed=data_cfg.seed + 1,
            splits=["val", "test"],
        )
        generate_dataset(
            eval_cfg, path, workers=max(1, cfg.data.stream.workers), overwrite=True, progress=False
        )
        import importlib.util

        if importlib.util.find_spec("great_expectations") is None:  # validate imports it when it runs
            print(f"{path}: not validated (great-expectations is not installed here)")
        else:
            from khmer_ocr.data.validation import validate_dataset

            report = validate_dataset(str(path), path, progress=False)
            if not report.success:
                raise ValueError(
                    f"the generated evaluation set {path} failed validation:\n{report.summary()}"
                )
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return str(path)
