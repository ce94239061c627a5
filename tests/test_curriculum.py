"""Curriculum schedule: level mixes by training progress, and sampling weights that realise them."""

from __future__ import annotations

import numpy as np
import pytest

from khmer_ocr.data.curriculum import CurriculumSchedule, CurriculumStage


def test_mix_moves_from_easy_to_all_levels() -> None:
    schedule = CurriculumSchedule()
    assert set(schedule.mix_at(0.0)) == {1, 2}
    assert set(schedule.mix_at(1.0)) == {1, 2, 3, 4, 5}
    assert sum(schedule.mix_at(0.3).values()) == pytest.approx(1.0)


def test_weights_realise_the_mix_whatever_the_dataset_mix() -> None:
    rng = np.random.default_rng(0)
    difficulties = rng.choice([1, 2, 3, 4, 5], p=[0.05, 0.15, 0.3, 0.3, 0.2], size=20000)
    schedule = CurriculumSchedule()
    for progress in (0.0, 0.3, 0.9):
        w = schedule.weights(difficulties, progress)
        assert w.sum() == pytest.approx(1.0)
        drawn = rng.choice(difficulties, p=w, size=20000)
        for level, share in schedule.mix_at(progress).items():
            assert (drawn == level).mean() == pytest.approx(share, abs=0.02)


def test_missing_levels_are_renormalized_and_bad_stages_refused() -> None:
    w = CurriculumSchedule().weights(np.array([1, 1, 3]), 1.0)
    assert w.sum() == pytest.approx(1.0) and w[2] > 0
    with pytest.raises(ValueError, match="ordered"):
        CurriculumSchedule(stages=[CurriculumStage(until=0.5, mix={1: 1.0})])
