"""The trainer: AdamW, warmup + cosine, gradient clipping, mixed precision on GPU, early stopping,
curriculum, full checkpoints with exact resume, transfer learning, DistributedDataParallel under torchrun.

The same code runs on a CPU (tests, demo) and on GPUs; `train(cfg, out_dir)` is the one entry point.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from khmer_ocr.config import save_config, to_dict
from khmer_ocr.data.dataset import Dataset
from khmer_ocr.evaluation.metrics import score
from khmer_ocr.inference import load_model, save_model
from khmer_ocr.models import build_model
from khmer_ocr.training.config import TrainConfig
from khmer_ocr.training.data import Batch, LineSamples, collate, width_batches
from khmer_ocr.training.losses import RecognitionLoss
from khmer_ocr.training.schedule import warmup_cosine

LAST, BEST = "last.pt", "best.pt"


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


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size); initializes the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _transfer(model: torch.nn.Module, ref: str) -> int:
    """Load the weights whose names and shapes match from a checkpoint, model folder or registry ref."""
    if ref.startswith("models:/"):
        from khmer_ocr.registry import download_model

        ref = str(download_model(ref))
    path = Path(ref)
    if path.is_dir():
        state = load_model(path)[0].state_dict()
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return len(matched)


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


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    stop_after_steps: int | None = None,
    tracker: Tracker | None = None,
) -> TrainResult:
    """Train (or resume training) cfg into out_dir: checkpoints/, model/ (best weights), history.json.

    stop_after_steps ends the run after that many optimizer steps of this call (used to test resume).
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    rank, local_rank, world = _distributed()
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    _seed_all(cfg.seed + rank)
    if not cfg.data.dataset:
        raise ValueError("data.dataset is not set: pass a generated dataset folder or s3:// prefix")
    dataset = Dataset(cfg.data.dataset)
    charset = dataset.charset
    cfg.model.num_classes = len(charset)
    model = build_model(cfg.model).to(device)
    train_set = LineSamples(
        dataset,
        cfg.data.train_splits,
        charset,
        cfg.model.input_height,
        cfg.data.max_width,
        cfg.model.max_length,
    )
    val_set = LineSamples(
        dataset,
        [cfg.data.val_split],
        charset,
        cfg.model.input_height,
        cfg.data.max_width,
        cfg.model.max_length,
    )
    val_idx = list(range(min(len(val_set), cfg.data.max_val_lines)))
    loss_fn = RecognitionLoss(cfg.loss, charset)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    steps_per_epoch = -(-len(train_set) // (cfg.optim.batch_size * world))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = steps_per_epoch * cfg.optim.epochs
    warmup = int(cfg.optim.warmup_fraction * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, total, warmup, cfg.optim.min_lr_ratio)
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state = {
        "epoch": 0,
        "step_in_epoch": 0,
        "epoch_losses": [],
        "best": -1.0,
        "best_epoch": -1,
        "bad_epochs": 0,
        "history": [],
    }
    if (ckpt_dir / LAST).exists():  # exact resume
        ckpt = torch.load(ckpt_dir / LAST, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        state = ckpt["state"]
        _set_rng_state(ckpt["rng"])
    elif cfg.init_from:
        _transfer(model, cfg.init_from)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None
        )
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if tracker:
            tracker.start(cfg, dataset)

    def checkpoint(name: str) -> None:
        if rank != 0:
            return
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_dir / f".{name}.tmp"
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "state": state,
                "rng": _rng_state(),
                "config": to_dict(cfg),
            },
            tmp,
        )
        tmp.replace(ckpt_dir / name)

    steps_this_call = 0
    stopped_early = False
    while state["epoch"] < cfg.optim.epochs:
        epoch = state["epoch"]
        weights = None
        if cfg.data.curriculum:
            weights = cfg.data.schedule.weights(train_set.difficulties, epoch / max(1, cfg.optim.epochs - 1))
        batches = width_batches(train_set.widths, cfg.optim.batch_size * world, cfg.seed, epoch, weights)
        batches = [b[rank::world] for b in batches[:steps_per_epoch]]
        net.train()
        t0, seen, losses = time.perf_counter(), 0, state["epoch_losses"]
        bar = tqdm(
            batches[state["step_in_epoch"] :],
            desc=f"{cfg.name} epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not progress or rank != 0,
            unit="batch",
        )
        for idx in bar:
            batch: Batch = collate([train_set[i] for i in idx]).to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                outputs = net(batch.images, batch.widths, batch.targets[:, :-1])
                loss, _ = loss_fn(outputs, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            state["step_in_epoch"] += 1
            seen += len(idx)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            steps_this_call += 1
            if state["step_in_epoch"] % cfg.checkpoint_every_steps == 0:
                checkpoint(LAST)
            if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                checkpoint(LAST)
                return TrainResult(out, state["best"], state["best_epoch"], epoch, False, state["history"])
        seconds = time.perf_counter() - t0
        refs = [val_set.records[i]["text"] for i in val_idx]
        metrics = score(refs, decode_texts(model, val_set, val_idx, device)).to_dict()
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": sched.get_last_lr()[0],
            "samples_per_s": seen * world / max(seconds, 1e-9),
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        state["history"].append(row)
        value = metrics[cfg.early_stopping_metric]
        improved = value > state["best"]
        if improved:
            state.update(best=value, best_epoch=epoch + 1, bad_epochs=0)
            if rank == 0:
                save_model(model, cfg.model, charset, out / "model")
                checkpoint(BEST)
        else:
            state["bad_epochs"] += 1
        state["epoch"], state["step_in_epoch"], state["epoch_losses"] = epoch + 1, 0, []
        checkpoint(LAST)
        if rank == 0:
            (out / "history.json").write_text(json.dumps(state["history"], indent=1))
            if on_epoch:
                on_epoch(row)
            if tracker:
                tracker.log_epoch(row)
        if state["bad_epochs"] >= cfg.early_stopping_patience:
            stopped_early = True
            break
    result = TrainResult(
        out,
        state["best"],
        state["best_epoch"],
        state["epoch"],
        stopped_early,
        state["history"],
        out / "model",
    )
    if tracker and rank == 0:
        best_model = load_model(out / "model", device)[0]
        refs = [val_set.records[i]["text"] for i in val_idx]
        tracker.finish(result, refs, decode_texts(best_model, val_set, val_idx, device))
    return result
