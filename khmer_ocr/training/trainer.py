"""The trainer: AdamW, warmup + cosine, gradient clipping, mixed precision on GPU, early stopping,
curriculum, full checkpoints with exact resume, transfer learning, DistributedDataParallel under torchrun.

The same code runs on a CPU (tests, demo) and on GPUs; `train(cfg, out_dir)` is the one entry point.
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
from tqdm import tqdm

from khmer_ocr.config import ConfigError, save_config, to_dict
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.dataset import Dataset
from khmer_ocr.evaluation.metrics import score
from khmer_ocr.inference import load_model, save_model
from khmer_ocr.models import build_model
from khmer_ocr.training.config import TrainConfig
from khmer_ocr.training.data import Batch, LineSamples, collate, width_batches
from khmer_ocr.training.losses import RecognitionLoss
from khmer_ocr.training.schedule import warmup_cosine, warmup_cosine_progress
from khmer_ocr.training.stream import LineStream, StreamPosition, stream_batches

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


def _transfer(model: torch.nn.Module, ref: str) -> str:
    """Load the weights whose names and shapes match from a checkpoint, model folder or registry ref;
    returns what was transferred and what was not, by module, in one line."""
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

    def by_module(keys) -> str:
        counts: dict[str, int] = {}
        for k in keys:
            counts[".".join(k.split(".")[:2])] = counts.get(".".join(k.split(".")[:2]), 0) + 1
        return ", ".join(f"{m} ({n})" for m, n in sorted(counts.items())) or "nothing"

    fresh = [k for k in own if k not in matched]
    return (
        f"init_from {ref}: transferred {len(matched)} of {len(own)} tensors: {by_module(matched)}; "
        f"trained from scratch (new in this model or shaped differently): {by_module(fresh)}"
    )


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


def _eval_dataset(cfg: TrainConfig, out: Path, data_cfg: DataConfig, rank: int) -> str:
    """The dataset validation reads: cfg.data.dataset, or (streamed training without one) a small set of
    val/test lines generated into out/eval-data with the stream's split fractions, validated with Great
    Expectations when it is installed."""
    if cfg.data.dataset:
        return cfg.data.dataset
    path = out / "eval-data"
    if rank == 0 and not (path / "manifest.jsonl").exists():
        from khmer_ocr.data.dataset import generate_dataset

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
            from khmer_ocr.data.validate import validate_dataset

            report = validate_dataset(str(path), path, progress=False)
            if not report.success:
                raise ValueError(
                    f"the generated evaluation set {path} failed validation:\n{report.summary()}"
                )
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return str(path)


# What a resumed run may change: they only extend or watch it (the rest would be silently ignored, since the
# optimizer, schedule, data order and RNG all come back from the checkpoint).
RESUMABLE_CHANGES = (
    "optim.epochs",
    "time_budget_minutes",
    "checkpoint_every_steps",
    "early_stopping_patience",
    "data.max_val_lines",
    "data.stream.workers",
    "data.num_workers",
    "init_from",
)


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("mix",):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.loads(json.dumps(v, default=str))  # tuples and lists compare equal
    return out


def refuse_changed_config(saved: dict, current: dict, out: Path) -> None:
    """ConfigError when resuming `out` with a config that differs from its checkpoint's in anything but
    RESUMABLE_CHANGES (keys the checkpoint predates are not compared)."""
    old, new = _flat(saved), _flat(current)
    changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k] and k not in RESUMABLE_CHANGES)
    if changed:
        details = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise ConfigError(
            f"{out} holds a run trained with another config ({details}); a resumed run keeps its "
            f"checkpoint's optimizer, schedule and data order, so only {', '.join(RESUMABLE_CHANGES)} may "
            "change. Use a new --out (with --init-from to start from its weights)."
        )


def stream_data_config(cfg: TrainConfig) -> DataConfig:
    """The data config of streamed training lines: the stream's profile and overrides, seed = cfg.seed
    unless an override sets it."""
    from khmer_ocr.config import load_config, profile_path

    overrides = [f"seed={cfg.seed}", *cfg.data.stream.overrides]
    return load_config(DataConfig, profile_path("data", cfg.data.stream.profile), overrides)


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    stop_after_steps: int | None = None,
    tracker: Tracker | None = None,
) -> TrainResult:
    """Train (or resume training) cfg into out_dir: checkpoints/, model/ (best weights), history.json.

    Lines come from a generated dataset (cfg.data.dataset) or, with cfg.data.stream.enabled, from the
    generator on the fly (validation then reads cfg.data.dataset or a small generated set). With
    cfg.time_budget_minutes the schedule follows the wall clock and the run ends when the budget is spent.
    stop_after_steps ends the run after that many optimizer steps of this call (used to test resume).
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    rank, local_rank, world = _distributed()
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    _seed_all(cfg.seed + rank)
    streaming = cfg.data.stream.enabled
    data_cfg = stream_data_config(cfg) if streaming else None
    if not cfg.data.dataset and not streaming:
        raise ValueError("data.dataset is not set: pass a generated dataset folder or s3:// prefix")
    dataset = Dataset(_eval_dataset(cfg, out, data_cfg, rank) if streaming else cfg.data.dataset)
    charset = dataset.charset
    cfg.model.num_classes = len(charset)
    model = build_model(cfg.model).to(device)
    line_args = (charset, cfg.model.input_height, cfg.data.max_width, cfg.model.max_length)
    train_set = None if streaming else LineSamples(dataset, cfg.data.train_splits, *line_args)
    val_set = LineSamples(dataset, [cfg.data.val_split], *line_args)
    val_idx = list(range(min(len(val_set), cfg.data.max_val_lines)))
    loss_fn = RecognitionLoss(cfg.loss, charset)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if streaming:
        steps_per_epoch = cfg.data.stream.steps_per_epoch
    else:
        steps_per_epoch = -(-len(train_set) // (cfg.optim.batch_size * world))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = steps_per_epoch * cfg.optim.epochs
    warmup = int(cfg.optim.warmup_fraction * total)
    budget_s = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None
    state = {
        "epoch": 0,
        "step_in_epoch": 0,
        "epoch_losses": [],
        "best": -1.0,
        "best_epoch": -1,
        "bad_epochs": 0,
        "history": [],
        "elapsed_s": 0.0,  # training wall time of all calls so far (the time budget counts it)
        "samples": 0,
        "stream": {"group": 0, "batch": 0},
    }

    def lr_factor(step: int) -> float:
        if budget_s:
            return warmup_cosine_progress(
                state["elapsed_s"] / budget_s, cfg.optim.warmup_fraction, cfg.optim.min_lr_ratio
            )
        return warmup_cosine(step, total, warmup, cfg.optim.min_lr_ratio)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if (ckpt_dir / LAST).exists():  # exact resume
        ckpt = torch.load(ckpt_dir / LAST, map_location=device, weights_only=True)
        refuse_changed_config(ckpt.get("config", {}), to_dict(cfg), out)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        state = {**state, **ckpt["state"]}
        _set_rng_state(ckpt["rng"])
    elif cfg.init_from:
        transferred = _transfer(model, cfg.init_from)
        if rank == 0:
            print(transferred, flush=True)
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

    stream_iter = None
    if streaming:
        if world > 1:
            raise ValueError("streamed training runs on one process; use a generated dataset with torchrun")
        stream = LineStream(
            data_cfg,
            *line_args,
            batch_size=cfg.optim.batch_size,
            group_batches=cfg.data.stream.group_batches,
            curriculum=cfg.data.schedule if cfg.data.curriculum else None,
            curriculum_samples=cfg.data.stream.curriculum_samples,
        )
        position = StreamPosition(**state["stream"])
        stream_iter = stream_batches(stream, position, cfg.data.stream.workers)

    def epoch_batches(epoch: int) -> Iterator[Batch]:
        """The rest of this epoch's batches (after the steps a resumed run already took)."""
        todo = steps_per_epoch - state["step_in_epoch"]
        if stream_iter is not None:
            for _ in range(todo):
                batch = next(stream_iter)
                state["stream"] = {"group": position.group, "batch": position.batch}
                yield batch
            return
        weights = None
        if cfg.data.curriculum:
            weights = cfg.data.schedule.weights(train_set.difficulties, epoch / max(1, cfg.optim.epochs - 1))
        batches = width_batches(train_set.widths, cfg.optim.batch_size * world, cfg.seed, epoch, weights)
        batches = [b[rank::world] for b in batches[:steps_per_epoch]]
        for idx in batches[state["step_in_epoch"] :]:
            yield collate([train_set[i] for i in idx])

    steps_this_call = 0
    stopped_early = out_of_time = False
    while state["epoch"] < cfg.optim.epochs and not out_of_time:
        epoch = state["epoch"]
        net.train()
        t0, seen, losses = time.perf_counter(), 0, state["epoch_losses"]
        bar = tqdm(
            epoch_batches(epoch),
            total=steps_per_epoch,
            initial=state["step_in_epoch"],
            desc=f"{cfg.name} epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not progress or rank != 0,
            unit="batch",
        )
        step_start = time.perf_counter()
        for cpu_batch in bar:
            batch = cpu_batch.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                outputs = net(batch.images, batch.widths, batch.targets[:, :-1])
                loss, _ = loss_fn(outputs, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            scaler.step(opt)
            scaler.update()
            now = time.perf_counter()
            state["elapsed_s"] += now - step_start
            step_start = now
            sched.step()
            state["step_in_epoch"] += 1
            state["samples"] += len(batch.texts) * world
            seen += len(batch.texts)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            steps_this_call += 1
            if state["step_in_epoch"] % cfg.checkpoint_every_steps == 0:
                checkpoint(LAST)
            if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                checkpoint(LAST)
                return TrainResult(out, state["best"], state["best_epoch"], epoch, False, state["history"])
            if budget_s and state["elapsed_s"] >= budget_s:
                out_of_time = True  # validate and keep the model as at the end of an epoch
                break
        bar.close()
        seconds = time.perf_counter() - t0
        refs = [val_set.records[i]["text"] for i in val_idx]
        metrics = score(refs, decode_texts(model, val_set, val_idx, device)).to_dict()
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": sched.get_last_lr()[0],
            "samples_per_s": seen * world / max(seconds, 1e-9),
            "samples": state["samples"],
            "elapsed_min": state["elapsed_s"] / 60,
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
        # with a time budget the schedule anneals over the budget: stopping early would keep a model that
        # never saw the low learning rates, so the budget alone ends the run
        if not budget_s and state["bad_epochs"] >= cfg.early_stopping_patience:
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
