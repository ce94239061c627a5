"""The one preprocessing of training and prediction: excess paper around a line is cut back, so a generous
crop reads like a tight one, and rules (underlines, table borders) are erased."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from khmer_ocr.model_folder import REFERENCE_MODEL
from khmer_ocr.preprocess import (
    KEEP_MARGIN,
    ink_box,
    percentiles,
    prepare_line,
    remove_rules,
    scaled_ink,
)
from khmer_ocr.torchserve.deploy import SMOKE_IMAGE, SMOKE_TEXT

HEIGHT = 48


def _smoke_line() -> np.ndarray:
    return np.asarray(Image.open(SMOKE_IMAGE).convert("L"))


def _pad(gray: np.ndarray, vertical: float, sides: float) -> np.ndarray:
    """The line on a larger sheet of its own paper: margins as fractions of its height."""
    h = gray.shape[0]
    paper = int(np.median(np.concatenate([gray[0], gray[-1]])))
    v, s = round(vertical * h), round(sides * h)
    return cv2.copyMakeBorder(gray, v, v, s, s, cv2.BORDER_CONSTANT, value=paper)


def _margins(prepared: np.ndarray) -> tuple[float, float]:
    """(top, bottom) paper of a prepared line, as fractions of its text's height."""
    top, bottom, _, _ = ink_box(prepared)
    text = bottom - top
    return top / text, (prepared.shape[0] - bottom) / text


@pytest.mark.parametrize(("vertical", "sides"), [(0.5, 0.0), (1.0, 3.0), (3.0, 1.0)])
def test_excess_paper_is_cut_back_to_the_margins_training_uses(vertical: float, sides: float) -> None:
    tight = prepare_line(_smoke_line(), HEIGHT)
    padded = prepare_line(_pad(_smoke_line(), vertical, sides), HEIGHT)
    assert padded.shape[0] == HEIGHT
    for margin in _margins(padded):
        assert margin <= KEEP_MARGIN + 2 / HEIGHT  # within two rows of the kept margin
    # the text keeps its scale: the prepared line is about as wide as the tight crop's
    assert abs(padded.shape[1] - tight.shape[1]) <= 0.15 * tight.shape[1]


def test_a_line_within_the_margins_is_left_as_it_is() -> None:
    gray = _smoke_line()
    rows = np.flatnonzero((gray < 128).any(axis=1))
    cols = np.flatnonzero((gray < 128).any(axis=0))
    text = rows[-1] + 1 - rows[0]
    crop = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    within = _pad(crop, 0.1 * text / crop.shape[0], 0.5 * text / crop.shape[0])  # 10 % above and below
    assert np.array_equal(prepare_line(within, HEIGHT), scaled_ink(within, HEIGHT, 1600))


@pytest.mark.parametrize("image", ["blank", "noise"])
def test_a_line_with_no_text_is_prepared_without_cutting(image: str) -> None:
    rng = np.random.default_rng(0)
    gray = (
        np.full((60, 400), 240, np.uint8) if image == "blank" else rng.integers(0, 256, (60, 400), np.uint8)
    )
    prepared = prepare_line(gray, HEIGHT)
    assert prepared.shape == (HEIGHT, 320)  # the whole image, at the model's height


def test_the_reference_model_reads_a_line_on_a_tall_canvas_as_it_reads_the_crop() -> None:
    from khmer_ocr.inference import Recognizer

    recognizer = Recognizer.load(REFERENCE_MODEL)
    truth = SMOKE_TEXT.read_text(encoding="utf-8").strip()
    tight, tall, wide = recognizer.predict(
        [_smoke_line(), _pad(_smoke_line(), 1.0, 0.0), _pad(_smoke_line(), 0.5, 3.0)]
    )
    assert tight.text == truth
    assert tall.text == truth
    assert wide.text == truth


def test_percentiles_from_the_histogram_equal_numpys_to_the_last_bit() -> None:
    rng = np.random.default_rng(7)
    for k in range(300):
        h, w = (int(v) for v in rng.integers(1, 80, 2) * (1, 9))
        gray = rng.integers(0, 256, (h, w)).astype(np.uint8)
        if k % 3 == 0:
            gray = np.clip(gray, 200, 220).astype(np.uint8)  # few distinct values: ties everywhere
        assert np.array_equal(percentiles(gray, (2, 50, 98)), np.percentile(gray, (2, 50, 98)))


def _ruled(gray: np.ndarray, box: bool) -> np.ndarray:
    """A rule under the line (an underline), or a ruled box around it (a table cell)."""
    h = gray.shape[0]
    m, t = h // 5, max(2, h // 16)
    out = _pad(gray, m / h, m / h if box else 0.0)
    if box:
        out[:t], out[-t:], out[:, :t], out[:, -t:] = 0, 0, 0, 0
    else:  # just under the letters, inside the margin that trimming keeps
        below = m + int(np.flatnonzero((gray < 128).any(axis=1))[-1]) + 2
        out[below : below + t] = 0
    return out


@pytest.mark.parametrize("box", [False, True])
def test_rules_are_erased_and_the_line_reads_as_without_them(box: bool) -> None:
    from khmer_ocr.inference import Recognizer

    ruled = prepare_line(_ruled(_smoke_line(), box), HEIGHT)
    rows = np.count_nonzero(ruled > 0.5, axis=1)
    assert rows.max() < 0.9 * ruled.shape[1]  # no row of unbroken ink is left
    assert np.count_nonzero(ruled[:, :2] > 0.5) == 0  # nor the box's sides
    (pred,) = Recognizer.load(REFERENCE_MODEL).predict([_ruled(_smoke_line(), box)])
    assert pred.text == SMOKE_TEXT.read_text(encoding="utf-8").strip()


def test_blurred_text_is_not_taken_for_a_rule() -> None:
    """Blur joins letters into long runs of ink, but in a thick band inside the text: nothing is erased."""
    blurred = cv2.GaussianBlur(_smoke_line(), (0, 0), 3.0)
    ink = scaled_ink(blurred, HEIGHT, 1600)
    run = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * HEIGHT, 1))
    assert cv2.erode((ink > 0.5).astype(np.uint8), run).any()  # runs as long as a rule's are there
    assert remove_rules(ink) is ink
