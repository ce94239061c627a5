"""Full training checkpoints: everything an exact resume needs, in <run>/checkpoints/{last,best}.pt.

A checkpoint is a dict with the keys model, optimizer, scheduler, scaler, ema (their state dicts; ema is None
when the run keeps no running mean of its weights), state (the run's progress, RunState as a dict: epoch,
step_in_epoch, epoch_losses, best, best_epoch, bad_epochs, history, elapsed_s, samples, stream), rng (Python's
and torch's generators) and config (the TrainConfig as a dict). It is written to a temporary file that then
replaces the old one, so a process killed while writing leaves the previous checkpoint whole. A run resumes
from last.pt with the same config, but for RESUMABLE_CHANGES.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from khmer_ocr.config import ConfigError

LAST, BEST = "last.pt", "best.pt"

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


@dataclass
class RunState:
    """Where a run stands: saved in every checkpoint (as a dict: the keys are part of the format)."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # optimizer steps taken in the current epoch
    epoch_losses: list[float] = field(default_factory=list)  # the current epoch's step losses
    best: float = -1.0  # the best validation value of the early-stopping metric so far
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the best one
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    elapsed_s: float = 0.0  # training wall time of all calls so far (the time budget counts it)
    samples: int = 0  # training lines seen, all ranks
    stream: dict = field(default_factory=lambda: {"group": 0, "batch": 0})  # a streamed run's position

    @classmethod
    def from_dict(cls, saved: dict) -> RunState:
        """The state a checkpoint saved; keys it predates keep their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def kept_weights(ckpt: dict) -> dict:
    """The weights a checkpoint's run keeps: the running mean's (an AveragedModel's, under `module.`) when it
    has one, else the model's."""
    if ckpt.get("ema") is None:
        return ckpt["model"]
    return {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}


class Checkpointer:
    """Writes and reads the checkpoints of one run folder; only the process that writes (rank 0) saves."""

    def __init__(self, folder: Path, writes: bool = True) -> None:
        self.folder, self.writes = Path(folder), writes

    def load_last(self, device: torch.device) -> dict | None:
        """The last checkpoint (tensors on device), or None when the run has none yet."""
        path = self.folder / LAST
        if not path.exists():
            return None
        return torch.load(path, map_location=device, weights_only=True)

    def save(
        self,
        name: str,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        ema: torch.nn.Module | None,
        state: RunState,
        config: dict,
    ) -> None:
        if not self.writes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{name}.tmp"
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "ema": None if ema is None else ema.state_dict(),
                "state": state.to_dict(),
                "rng": rng_state(),
                "config": config,
            },
            tmp,
        )
        tmp.replace(self.folder / name)
