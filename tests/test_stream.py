"""Streamed training: lines rendered on the fly, deterministic and resumable, within a wall-clock budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.generate import split_of
from khmer_ocr.data.reader import Dataset
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.script import default_charset
from khmer_ocr.training.config import load_train_config
from khmer_ocr.training.stream import LineStream, StreamPosition, stream_batches
from khmer_ocr.training.trainer import train

TINY = ["model.size=tiny", "optim.batch_size=4", "data.max_val_lines=8", "data.stream.group_batches=2"]


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("stream") / "eval"
    cfg = DataConfig(name="e", num_samples=60, shard_size=60, seed=5, splits=["val", "test"])
    generate_dataset(cfg, out, workers=1, progress=False)
    return str(out)


def stream(**kw) -> LineStream:
    cfg = DataConfig(name="s", seed=11, difficulty={1: 0.5, 2: 0.5})
    return LineStream(cfg, default_charset(), 32, 800, 100, batch_size=4, group_batches=3, **kw)


def test_a_group_is_a_pure_function_of_its_index() -> None:
    a, b = stream().group(2), stream().group(2)
    assert [x.texts for x in a] == [x.texts for x in b]
    assert all(torch.equal(x.images, y.images) for x, y in zip(a, b, strict=True))
    assert stream().group(3)[0].texts != a[0].texts
    texts = [t for batch in a for t in batch.texts]
    assert len(texts) == 12 and all(split_of(t, 0.05, 0.05) == "train" for t in texts)
    widths = sorted(int(batch.images.shape[-1]) for batch in a)  # batches cut from width-sorted lines
    spans = [batch.widths.max() - batch.widths.min() for batch in a]
    assert max(spans) < widths[-1]


def test_stream_hands_out_groups_in_order_and_resumes_mid_group() -> None:
    whole = stream_batches(stream(), StreamPosition(), workers=2)
    first = [next(whole).texts for _ in range(7)]
    position = StreamPosition(group=1, batch=1)  # as a checkpoint after the 4th batch records it
    resumed = stream_batches(stream(), position, workers=0)
    assert [next(resumed).texts for _ in range(3)] == first[4:7]
    assert (position.group, position.batch) == (2, 1)
    spent = StreamPosition(group=0, batch=3)  # a group fully used (as older checkpoints record it)
    assert next(stream_batches(stream(), spent, workers=0)).texts == first[3]


def test_curriculum_follows_the_sample_index() -> None:
    from khmer_ocr.data.curriculum import CurriculumSchedule, CurriculumStage

    schedule = CurriculumSchedule([CurriculumStage(0.5, {1: 1.0}), CurriculumStage(1.0, {2: 1.0})])
    s = stream(curriculum=schedule, curriculum_samples=24)
    assert s._level(0) == 1 and s._level(11) == 1 and s._level(13) == 2 and s._level(10_000) == 2
    assert stream()._level(5) is None  # no curriculum: the data config's mix


def test_a_stream_refuses_validation_lines() -> None:
    with pytest.raises(ValueError, match="train-split lines only"):
        LineStream(DataConfig(splits=["val"]), default_charset(), 32, 800, 100, batch_size=4)


def _cfg(eval_set: str, *extra: str):
    return load_train_config(
        "production_fast",
        None,
        [
            "data.stream.enabled=true",
            f"data.dataset={eval_set}",
            "data.stream.profile=demo",
            "data.stream.steps_per_epoch=3",
            "data.stream.workers=1",
            "optim.epochs=2",
            "checkpoint_every_steps=1",
            *TINY,
            *extra,
        ],
    )


def test_streamed_training_resumes_exactly(eval_set: str, tmp_path: Path) -> None:
    cfg = _cfg(eval_set)
    whole = train(cfg, tmp_path / "whole", progress=False)
    part = train(cfg, tmp_path / "resumed", progress=False, stop_after_steps=4)  # inside epoch 2
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert state["stream"] == {"group": 2, "batch": 0} and state["samples"] == 16 and part.epochs_run == 1
    resumed = train(cfg, tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    assert a["state"]["samples"] == b["state"]["samples"] == 24


def test_time_budget_stops_the_run_and_anneals_the_rate(eval_set: str, tmp_path: Path) -> None:
    cfg = _cfg(eval_set, "time_budget_minutes=0.05", "optim.epochs=1000", "optim.warmup_fraction=0.0")
    result = train(cfg, tmp_path / "run", progress=False)
    last = result.history[-1]
    assert result.epochs_run < 1000 and last["elapsed_min"] >= 0.05
    assert last["lr"] == pytest.approx(cfg.optim.lr * cfg.optim.min_lr_ratio, rel=1e-6)
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_without_a_dataset_a_validated_eval_set_is_generated(tmp_path: Path) -> None:
    cfg = load_train_config(
        "production_fast",
        None,
        [
            "data.stream.enabled=true",
            "data.stream.profile=demo",
            "data.stream.eval_lines=30",
            "data.stream.steps_per_epoch=1",
            "data.stream.workers=0",
            "optim.epochs=1",
            *TINY,
        ],
    )
    train(cfg, tmp_path / "run", progress=False)
    ds = Dataset(tmp_path / "run" / "eval-data")
    assert len(ds) == 30 and {r["split"] for r in ds.records} <= {"val", "test", "test_unseen_font"}
    assert json.loads((tmp_path / "run" / "eval-data" / "validation.json").read_text())["success"]
    fractions = ds.card["generator_config"]["val_fraction"], ds.card["generator_config"]["test_fraction"]
    assert fractions == (0.05, 0.1)  # the demo profile's, which the stream also splits by
    assert np.all([split_of(r["text"], *fractions) != "train" for r in ds.records])


def test_cli_trains_streamed_for_a_budget(eval_set: str, tmp_path: Path) -> None:
    from khmer_ocr.cli import main

    args = ["train", "production_fast", "--stream", "--data", eval_set, "--out", str(tmp_path / "r")]
    args += ["--data-profile", "demo", "--workers", "0", "--time-budget", "0.03"]
    for item in [*TINY, "data.stream.steps_per_epoch=2", "optim.epochs=1000"]:
        args += ["--set", item]
    assert main(args) == 0
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert history and history[-1]["elapsed_min"] >= 0.03
    assert main(["train", "production_fast", "--out", str(tmp_path / "x")]) == 2  # no --data, no --stream
