"""Typed training configuration; the phase files live in khmer_ocr/configs/train/."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from khmer_ocr.config import ConfigError, load_config, profile_path
from khmer_ocr.data.curriculum import CurriculumSchedule
from khmer_ocr.models import ModelConfig
from khmer_ocr.training.losses import LossConfig


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    epochs: int = 20
    warmup_fraction: float = 0.05  # linear warmup over this share of all steps, then cosine annealing
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    # a running mean of the weights, updated after each step with this decay (0: off; 0.999 averages about
    # the last 1,000 steps); validation, the best model and its checkpoint then read the mean
    ema_decay: float = 0.0


@dataclass
class StreamConfig:
    """Training lines rendered on the fly (`khmer-ocr train --stream`) instead of read from a dataset."""

    enabled: bool = False
    profile: str = "reference"  # data profile (khmer_ocr/configs/data/) the lines are generated with
    overrides: list[str] = field(default_factory=list)  # key=value into that data config
    workers: int = 1  # generator processes (0: in the training process)
    group_batches: int = 8  # batches rendered together and grouped by width
    steps_per_epoch: int = 1000  # steps between validations, checkpoints of the best model
    curriculum_samples: int = 0  # the curriculum schedule runs over this many samples (0: none)
    eval_lines: int = 2000  # size of the validation/test set generated at start when no dataset is given


@dataclass
class TrainDataConfig:
    dataset: str = ""  # folder or s3:// prefix of a generated dataset (with --stream: val/test only)
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    val_split: str = "val"
    max_width: int = 1600
    max_val_lines: int = 2000
    num_workers: int = 0
    curriculum: bool = False
    schedule: CurriculumSchedule = field(default_factory=CurriculumSchedule)
    stream: StreamConfig = field(default_factory=StreamConfig)


@dataclass
class TrainConfig:
    name: str = "run"
    phase: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    seed: int = 0
    amp: bool = True  # mixed precision, on GPU only
    early_stopping_metric: str = "sequence_accuracy"
    early_stopping_patience: int = 15
    init_from: str | None = None  # checkpoint, model folder, or models:/name@alias to transfer from
    max_steps_per_epoch: int | None = None
    checkpoint_every_steps: int = 200
    # wall-clock budget of the whole run (resumes included): the learning-rate schedule is laid over it
    # and training stops, validates and writes the model when it is spent; epochs then only cap the run
    # and early stopping is off (the schedule only reaches its low rates at the end of the budget)
    time_budget_minutes: float | None = None
    # a model folder whose character language model (lm.safetensors and model.yaml's decoding:) every model
    # folder of the run gets, so that it is decoded as that model is; "reference": the committed reference
    # model's; null: none (best-path decoding)
    language_model: str | None = "reference"


def load_train_config(
    name_or_path: str, profile: str | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """A phase config by name (e.g. `phase3_1/baseline_optimized`, `phase3_2`) or path, scaled by a
    profile (`demo`: minutes on a CPU, `full`: GPU) and `key=value` overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = profile_path("train", name_or_path)
    layers = [profile_path("train/profiles", profile)] if profile else []
    cfg = load_config(TrainConfig, path, overrides, layers)
    if cfg.early_stopping_metric not in ("sequence_accuracy", "char_accuracy"):
        raise ConfigError("early_stopping_metric must be sequence_accuracy or char_accuracy")
    return cfg
