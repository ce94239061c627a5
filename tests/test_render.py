"""Rendering: RAQM shaping, determinism, sizes, augmentation levels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import ImageFont

from khmer_ocr.data import augment
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.fonts import select_fonts
from khmer_ocr.data.generate import SampleFactory
from khmer_ocr.data.render import LineRenderer, load_font, render_mask

KHMER_OS = "/usr/share/fonts/truetype/khmeros/KhmerOS.ttf"


def _ink_width(font: ImageFont.FreeTypeFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return right - left


def test_raqm_stacks_subscripts_where_basic_layout_does_not() -> None:
    raqm = load_font(KHMER_OS, 40)
    basic = ImageFont.truetype(KHMER_OS, 40, layout_engine=ImageFont.Layout.BASIC)
    # With shaping, COENG + KA is a subscript under the first KA: about as wide as one letter.
    assert _ink_width(raqm, "ក្ក") < 1.3 * _ink_width(raqm, "ក")
    # The BASIC engine draws the COENG and the second KA side by side: far wider.
    assert _ink_width(basic, "ក្ក") > 1.6 * _ink_width(basic, "ក")
    # The pre-base vowel E is drawn to the left of its consonant although typed after it.
    assert raqm.getbbox("កេ")[0] < raqm.getbbox("ក")[0] or _ink_width(raqm, "កេ") > _ink_width(raqm, "ក")


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_every_level_renders_a_line_of_the_configured_height(level: int) -> None:
    cfg = DataConfig()
    train, _ = select_fonts(cfg.fonts)
    renderer = LineRenderer(cfg)
    for k, font in enumerate(train):
        img = renderer.render("ព្រះរាជាណាចក្រកម្ពុជា ១២៣", font, level, np.random.default_rng([level, k]))
        assert img.dtype == np.uint8 and img.ndim == 2
        assert img.shape[0] == cfg.image_height and 16 <= img.shape[1] <= cfg.max_width
        assert float(img.std()) > 5 and int(img.max()) - int(img.min()) > 20  # there is text on it


def test_samples_are_deterministic_by_seed_and_index() -> None:
    factory = SampleFactory(DataConfig(seed=5))
    a, b = factory.make(17), factory.make(17)
    assert a.text == b.text and a.font == b.font and a.png() == b.png()
    other = SampleFactory(DataConfig(seed=6)).make(17)
    assert (other.text, other.png()) != (a.text, a.png())


def test_higher_levels_degrade_more() -> None:
    cfg = DataConfig()
    factory = SampleFactory(cfg)

    def mean_contrast(level: int) -> float:
        lv = cfg.level(level)
        values = []
        for i in range(40):
            img = factory.renderer.render(
                "កម្ពុជា", factory.train_fonts[i % 5], level, np.random.default_rng(i)
            )
            values.append(np.percentile(img, 95) - np.percentile(img, 5))
        assert lv.level == level
        return float(np.mean(values))

    assert mean_contrast(1) > mean_contrast(5)


def test_png_encoder_round_trips_through_pillow() -> None:
    import io

    from PIL import Image

    from khmer_ocr.data.png import encode_png

    rng = np.random.default_rng(0)
    for shape in [(48, 1), (1, 300), (48, 333), (7, 5)]:
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        for level in (0, 1, 3, 6, 9):
            decoded = Image.open(io.BytesIO(encode_png(img, level)))
            assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), img)
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_png(np.zeros((4, 4, 3), np.uint8))


def test_clusters_are_rasterized_as_getmask2_draws_them() -> None:
    """The direct rasterizer (Pillow drawing into a numpy array) gives getmask2's ink and offsets."""
    from PIL import Image

    from khmer_ocr.data.render import _rasterize

    for size in (18, 32):
        font = load_font(KHMER_OS, size)
        for text in ["ក", "ស្ត្រី", "ព្រះ", "៉", " ", "Wi-Fi", "១២៣", "«ក»"]:
            ink, ox, oy = _rasterize(font, text)
            core, offset = font.getmask2(text, mode="L")
            ref = np.asarray(Image.Image()._new(core)) if core.size[0] and core.size[1] else None
            assert (ox, oy) == offset
            assert (ink.size == 0) if ref is None else np.array_equal(ink, ref)


def test_baseline_wave_moves_columns_as_rolling_them_would() -> None:
    from khmer_ocr.data.render import _shift_columns

    rng = np.random.default_rng(0)
    for amp in (1, 3, 7):
        ink = rng.integers(0, 256, (20, 50)).astype(np.uint8)
        canvas = np.pad(ink, ((amp + 1, amp + 2), (0, 0)))  # the padding render_mask guarantees
        shift = rng.integers(-amp, amp + 1, canvas.shape[1])
        rolled = np.stack([np.roll(canvas[:, c], s) for c, s in enumerate(shift)], axis=1)
        assert np.array_equal(_shift_columns(canvas, shift), rolled)


def test_binarized_lines_are_black_and_white_with_the_text_kept() -> None:
    cfg = DataConfig()
    soft = replace(cfg.level(3), blur_prob=1.0, noise_prob=0.0, jpeg_prob=0.0, invert_prob=0.0)
    soft = replace(soft, binarize_prob=0.0, background_prob=0.0, gradient_prob=0.0, downup_prob=0.0)
    hard = replace(soft, binarize_prob=1.0)
    mask = render_mask("ព្រះរាជាណាចក្រកម្ពុជា", load_font(KHMER_OS, 24), np.random.default_rng(0), soft)
    mask = augment.fit_height(mask, cfg.image_height, cfg.max_width)
    for seed in range(5):
        gray = augment.photometric(mask, np.random.default_rng(seed), soft)
        bw = augment.photometric(mask, np.random.default_rng(seed), hard)
        assert set(np.unique(bw).tolist()) == {0, 255}
        ink, ink_bw = gray < np.percentile(gray, 50) - 40, bw == 0
        # the threshold sits near Otsu's: the black pixels are the gray line's ink, give or take its fringe
        assert (ink & ink_bw).sum() > 0.6 * ink.sum() and ink_bw.sum() < 2.0 * ink.sum()
