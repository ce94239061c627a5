"""Learning-rate schedule: linear warmup, then cosine annealing down to min_lr_ratio."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at a step."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_progress(progress: float, warmup_fraction: float, min_ratio: float) -> float:
    """The same shape over a fraction of the run (0..1), for schedules laid over a time budget."""
    if warmup_fraction > 0 and progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    rest = min(1.0, (progress - warmup_fraction) / max(1e-9, 1 - warmup_fraction))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * rest))
