"""The trainer: AdamW, warmup + cosine, gradient clipping, mixed precision on GPU, early stopping,
curriculum, a running mean (EMA) of the weights, full checkpoints with exact resume, transfer learning,
DistributedDataParallel under torchrun.

The same code runs on a CPU (tests, demo) and on GPUs; `train(cfg, out_dir)` is the one entry point. It builds
a Trainer, which owns one run: the model, optimizer, schedule, scaler and checkpointer (built from the config,
or restored from the run folder's last checkpoint), and trains it epoch by epoch (train_one_epoch, then
validate and record the epoch) until the epochs, the patience or the time budget run out.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from khmer_ocr.config import ConfigError, save_config, to_dict
from khmer_ocr.data.reader import Dataset
from khmer_ocr.evaluation.metrics import score
from khmer_ocr.inference import CTC_ARCHS, load_model, save_model
from khmer_ocr.models import build_model
from khmer_ocr.training.checkpoint import (
    BEST,
    LAST,
    Checkpointer,
    RunState,
    refuse_changed_config,
    set_rng_state,
)
from khmer_ocr.training.config import TrainConfig
from khmer_ocr.training.data import Batch, LineSamples, collate, width_batches
from khmer_ocr.training.language_model import copy_language_model
from khmer_ocr.training.losses import RecognitionLoss
from khmer_ocr.training.schedule import warmup_cosine, warmup_cosine_progress
from khmer_ocr.training.stream import (
    LineStream,
    StreamPosition,
    stream_batches,
    stream_data_config,
    validation_dataset,
)
from khmer_ocr.training.transfer import transfer_weights


class Tracker(Protocol):
    """Where a run is recorded (MLflow: khmer_ocr.tracking.MlflowTracker). Called on rank 0 only."""

    def start(self, cfg: TrainConfig, dataset: Dataset) -> None: ...

    def log_epoch(self, row: dict) -> None: ...

    def finish(self, result: TrainResult, val_refs: list[str], val_hyps: list[str]) -> None: ...


@dataclass
class TrainResult:
    out_dir: Path
    best_metric: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    model_dir: Path | None = None


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size); initializes the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


@torch.inference_mode()
def decode_texts(
    model: torch.nn.Module, samples: LineSamples, indices: list[int], device, batch_size: int = 64
):
    """Greedy transcriptions of some samples (in the order of indices)."""
    model.eval()
    hyps: dict[int, str] = {}
    for batch_idx in width_batches(samples.widths[indices], batch_size, 0, 0, shuffle=False):
        chosen = [indices[i] for i in batch_idx]
        batch = collate([samples[i] for i in chosen]).to(device)
        ids, _ = model.decode(batch.images, batch.widths)
        for i, tok in zip(chosen, ids, strict=True):
            hyps[i] = samples.charset.decode(list(tok))
    return [hyps[i] for i in indices]


class Trainer:
    """One training run in out_dir (see the module docstring). The config passed in is never changed: the
    run's own copy has the model's num_classes set from the dataset's charset."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path,
        progress: bool = True,
        tracker: Tracker | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        self.out = Path(out_dir)
        self.progress, self.tracker = progress, tracker
        self.rank, self.local_rank, self.world = _distributed()
        self.device = torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        _seed_all(cfg.seed + self.rank)
        self.cfg = self._build_data(cfg)
        self.model = build_model(self.cfg.model).to(self.device)  # (drawing its initial weights)
        self.loss_fn = RecognitionLoss(self.cfg.loss, self.charset)
        self._build_optimization()
        self.checkpoints = Checkpointer(self.out / "checkpoints", writes=self.rank == 0)
        ckpt = self.checkpoints.load_last(self.device)
        if ckpt is None and self.cfg.init_from:
            transferred = transfer_weights(self.model, self.cfg.init_from, tracking_uri)
            if self.rank == 0:
                print(transferred, flush=True)
        self.ema = self._build_ema()
        if ckpt is not None:  # exact resume
            self._resume(ckpt)
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.local_rank] if self.device.type == "cuda" else None
            )
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
            if tracker:
                tracker.start(self.cfg, self.dataset)
        self.position, self.stream_iter = self._stream()
        self.steps_this_call = 0

    # ----------------------------------------------------------------------------------------- building
    def _build_data(self, cfg: TrainConfig) -> TrainConfig:
        """The dataset (and a streamed run's data config), the training and validation lines; returns the
        run's config: cfg with the model's num_classes set from the dataset's charset."""
        self.streaming = cfg.data.stream.enabled
        self.data_cfg = stream_data_config(cfg) if self.streaming else None
        if not cfg.data.dataset and not self.streaming:
            raise ValueError("data.dataset is not set: pass a generated dataset folder or s3:// prefix")
        uri = cfg.data.dataset
        if self.streaming:
            uri = validation_dataset(cfg, self.out, self.data_cfg, self.rank)
        self.dataset = Dataset(uri)
        self.charset = self.dataset.charset
        cfg = replace(cfg, model=replace(cfg.model, num_classes=len(self.charset)))
        self.line_args = (self.charset, cfg.model.input_height, cfg.data.max_width, cfg.model.max_length)
        self.train_set = None
        if not self.streaming:
            self.train_set = LineSamples(self.dataset, cfg.data.train_splits, *self.line_args)
        self.val_set = LineSamples(self.dataset, [cfg.data.val_split], *self.line_args)
        self.val_idx = list(range(min(len(self.val_set), cfg.data.max_val_lines)))
        return cfg

    def _build_optimization(self) -> None:
        """AdamW, the warmup + cosine schedule (over the steps, or over the time budget), the AMP scaler."""
        cfg = self.cfg
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        if self.streaming:
            steps_per_epoch = cfg.data.stream.steps_per_epoch
        else:
            steps_per_epoch = -(-len(self.train_set) // (cfg.optim.batch_size * self.world))
        if cfg.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        total = steps_per_epoch * cfg.optim.epochs
        warmup = int(cfg.optim.warmup_fraction * total)
        self.budget_s = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None
        self.state = RunState()

        def lr_factor(step: int) -> float:  # a function (not a method): LambdaLR then saves no state for it
            if self.budget_s:
                return warmup_cosine_progress(
                    self.state.elapsed_s / self.budget_s, cfg.optim.warmup_fraction, cfg.optim.min_lr_ratio
                )
            return warmup_cosine(step, total, warmup, cfg.optim.min_lr_ratio)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        cuda = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.use_amp = cfg.amp and cuda
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

    def _build_ema(self) -> AveragedModel | None:
        """The running mean of the weights (cfg.optim.ema_decay), or None when the run keeps none."""
        decay = self.cfg.optim.ema_decay
        if not decay:
            return None
        return AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def kept_model(self) -> torch.nn.Module:
        """The weights the run validates and keeps: their running mean when it has one."""
        return self.model if self.ema is None else self.ema.module

    def _resume(self, ckpt: dict) -> None:
        refuse_changed_config(ckpt.get("config", {}), to_dict(self.cfg), self.out)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise ConfigError(
                    f"{self.out}: its checkpoint holds no running mean of the weights to resume"
                )
            self.ema.load_state_dict(ckpt["ema"])
        self.state = RunState.from_dict(ckpt["state"])
        set_rng_state(ckpt["rng"])

    def _stream(self) -> tuple[StreamPosition | None, Iterator[Batch] | None]:
        """A streamed run's position and batches, from where its state says it stands."""
        if not self.streaming:
            return None, None
        if self.world > 1:
            raise ValueError("streamed training runs on one process; use a generated dataset with torchrun")
        cfg = self.cfg
        stream = LineStream(
            self.data_cfg,
            *self.line_args,
            batch_size=cfg.optim.batch_size,
            group_batches=cfg.data.stream.group_batches,
            curriculum=cfg.data.schedule if cfg.data.curriculum else None,
            curriculum_samples=cfg.data.stream.curriculum_samples,
        )
        position = StreamPosition(**self.state.stream)
        return position, stream_batches(stream, position, cfg.data.stream.workers)

    def checkpoint(self, name: str) -> None:
        self.checkpoints.save(
            name,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            ema=self.ema,
            state=self.state,
            config=to_dict(self.cfg),
        )

    # ----------------------------------------------------------------------------------------- training
    def epoch_batches(self, epoch: int) -> Iterator[Batch]:
        """The rest of this epoch's batches (after the steps a resumed run already took)."""
        state, cfg = self.state, self.cfg
        todo = self.steps_per_epoch - state.step_in_epoch
        if self.stream_iter is not None:
            for _ in range(todo):
                batch = next(self.stream_iter)
                state.stream = {"group": self.position.group, "batch": self.position.batch}
                yield batch
            return
        weights = None
        if cfg.data.curriculum:
            progress = epoch / max(1, cfg.optim.epochs - 1)
            weights = cfg.data.schedule.weights(self.train_set.difficulties, progress)
        batches = width_batches(
            self.train_set.widths, cfg.optim.batch_size * self.world, cfg.seed, epoch, weights
        )
        batches = [b[self.rank :: self.world] for b in batches[: self.steps_per_epoch]]
        for idx in batches[state.step_in_epoch :]:
            yield collate([self.train_set[i] for i in idx])

    def train_one_epoch(self, stop_after_steps: int | None = None) -> tuple[int, str | None]:
        """Train the rest of the current epoch; returns (lines this process trained on, why it ended early:
        "stopped" after stop_after_steps steps of this call (checkpointed), "out_of_time" when the budget
        is spent, None when the epoch is complete)."""
        state, cfg, device = self.state, self.cfg, self.device
        epoch = state.epoch
        self.net.train()
        seen, losses = 0, state.epoch_losses
        bar = tqdm(
            self.epoch_batches(epoch),
            total=self.steps_per_epoch,
            initial=state.step_in_epoch,
            desc=f"{cfg.name} epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not self.progress or self.rank != 0,
            unit="batch",
        )
        ended = None
        step_start = time.perf_counter()
        for cpu_batch in bar:
            batch = cpu_batch.to(device)
            with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                outputs = self.net(batch.images, batch.widths, batch.targets[:, :-1])
                loss, _ = self.loss_fn(outputs, batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            now = time.perf_counter()
            state.elapsed_s += now - step_start
            step_start = now
            self.scheduler.step()
            state.step_in_epoch += 1
            state.samples += len(batch.texts) * self.world
            seen += len(batch.texts)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            self.steps_this_call += 1
            if state.step_in_epoch % cfg.checkpoint_every_steps == 0:
                self.checkpoint(LAST)
            if stop_after_steps is not None and self.steps_this_call >= stop_after_steps:
                self.checkpoint(LAST)
                ended = "stopped"
                break
            if self.budget_s and state.elapsed_s >= self.budget_s:
                ended = "out_of_time"  # validate and keep the model as at the end of an epoch
                break
        bar.close()
        return seen, ended

    def validate(self, model: torch.nn.Module | None = None) -> tuple[list[str], list[str]]:
        """(references, the model's readings) of the validation lines (default model: the one kept)."""
        refs = [self.val_set.records[i]["text"] for i in self.val_idx]
        return refs, decode_texts(
            self.kept_model if model is None else model, self.val_set, self.val_idx, self.device
        )

    def end_epoch(self, metrics: dict, seen: int, seconds: float) -> dict:
        """Record a finished epoch: its history row, the best model (model/ and best.pt) when it improved,
        the last checkpoint, history.json; returns the row."""
        state, cfg = self.state, self.cfg
        epoch = state.epoch
        losses = state.epoch_losses
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": seen * self.world / max(seconds, 1e-9),
            "samples": state.samples,
            "elapsed_min": state.elapsed_s / 60,
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        state.history.append(row)
        value = metrics[cfg.early_stopping_metric]
        if value > state.best:
            state.best, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
            if self.rank == 0:
                save_model(self.kept_model, cfg.model, self.charset, self.out / "model")
                if cfg.language_model and cfg.model.arch in CTC_ARCHS:
                    copy_language_model(cfg.language_model, self.out / "model")
                self.checkpoint(BEST)
        else:
            state.bad_epochs += 1
        state.epoch, state.step_in_epoch, state.epoch_losses = epoch + 1, 0, []
        self.checkpoint(LAST)
        if self.rank == 0:
            (self.out / "history.json").write_text(json.dumps(state.history, indent=1))
        return row

    def fit(
        self, on_epoch: Callable[[dict], None] | None = None, stop_after_steps: int | None = None
    ) -> TrainResult:
        """Train until the epochs, the patience (without a time budget) or the budget run out."""
        cfg = self.cfg
        stopped_early = out_of_time = False
        while self.state.epoch < cfg.optim.epochs and not out_of_time:
            t0 = time.perf_counter()
            seen, ended = self.train_one_epoch(stop_after_steps)
            state = self.state
            if ended == "stopped":
                return TrainResult(self.out, state.best, state.best_epoch, state.epoch, False, state.history)
            out_of_time = ended == "out_of_time"
            seconds = time.perf_counter() - t0
            row = self.end_epoch(score(*self.validate()).to_dict(), seen, seconds)
            if self.rank == 0:
                if on_epoch:
                    on_epoch(row)
                if self.tracker:
                    self.tracker.log_epoch(row)
            # with a time budget the schedule anneals over the budget: stopping early would keep a model
            # that never saw the low learning rates, so the budget alone ends the run
            if not self.budget_s and state.bad_epochs >= cfg.early_stopping_patience:
                stopped_early = True
                break
        state = self.state
        result = TrainResult(
            self.out,
            state.best,
            state.best_epoch,
            state.epoch,
            stopped_early,
            state.history,
            self.out / "model",
        )
        if self.tracker and self.rank == 0:
            best_model = load_model(self.out / "model", self.device)[0]
            self.tracker.finish(result, *self.validate(best_model))
        return result


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    stop_after_steps: int | None = None,
    tracker: Tracker | None = None,
    *,
    tracking_uri: str | None = None,
) -> TrainResult:
    """Train (or resume training) cfg into out_dir: checkpoints/, model/ (best weights), history.json.

    Lines come from a generated dataset (cfg.data.dataset) or, with cfg.data.stream.enabled, from the
    generator on the fly (validation then reads cfg.data.dataset or a small generated set). With
    cfg.time_budget_minutes the schedule follows the wall clock and the run ends when the budget is spent.
    stop_after_steps ends the run after that many optimizer steps of this call (used to test resume).
    tracking_uri: the MLflow registry of a models:/ or runs:/ cfg.init_from.
    """
    trainer = Trainer(cfg, out_dir, progress=progress, tracker=tracker, tracking_uri=tracking_uri)
    return trainer.fit(on_epoch, stop_after_steps)
