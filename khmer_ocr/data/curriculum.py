"""Curriculum over the data's difficulty levels: which levels training sees, as training progresses.

A dataset is generated once with a mix of levels (DataConfig.difficulty); a schedule then reweights its
lines so that early training sees mostly short clean lines and later training the whole range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CurriculumStage:
    until: float  # end of the stage, as a fraction of training (0..1]
    mix: dict[int, float]  # difficulty level -> share of the lines seen in this stage


def default_stages() -> list[CurriculumStage]:
    return [
        CurriculumStage(until=0.15, mix={1: 0.6, 2: 0.4}),
        CurriculumStage(until=0.4, mix={1: 0.2, 2: 0.3, 3: 0.3, 4: 0.2}),
        CurriculumStage(until=1.0, mix={1: 0.1, 2: 0.2, 3: 0.25, 4: 0.25, 5: 0.2}),
    ]


@dataclass
class CurriculumSchedule:
    stages: list[CurriculumStage] = field(default_factory=default_stages)

    def __post_init__(self) -> None:
        ends = [s.until for s in self.stages]
        if not self.stages or ends != sorted(ends) or ends[-1] < 1.0:
            raise ValueError("curriculum stages must be ordered by `until` and the last must reach 1.0")

    def mix_at(self, progress: float) -> dict[int, float]:
        """The level mix at a point of training (0 = start, 1 = end), normalized to sum to 1."""
        stage = next(s for s in self.stages if progress <= s.until or s is self.stages[-1])
        total = sum(stage.mix.values())
        return {lv: w / total for lv, w in stage.mix.items() if w > 0}

    def weights(self, difficulties: np.ndarray, progress: float) -> np.ndarray:
        """Sampling weights per line (summing to 1) that give the stage's level mix.

        Levels the dataset lacks are dropped from the mix and the rest renormalized.
        """
        difficulties = np.asarray(difficulties)
        mix = self.mix_at(progress)
        counts = {lv: int((difficulties == lv).sum()) for lv in mix}
        present = {lv: w for lv, w in mix.items() if counts[lv] > 0}
        if not present:
            return np.full(len(difficulties), 1.0 / max(len(difficulties), 1))
        total = sum(present.values())
        per_line = {lv: w / total / counts[lv] for lv, w in present.items()}
        return np.asarray([per_line.get(int(d), 0.0) for d in difficulties], dtype=np.float64)
