"""Fonts (discovery, roles, shaping check) and text sources (validity, determinism, bounds)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from khmer_ocr.data.card import TEXT_LICENCES
from khmer_ocr.data.config import DataConfig, FontConfig, TextConfig
from khmer_ocr.data.fonts import FontError, ShapingChecker, discover_fonts, font_weights, select_fonts
from khmer_ocr.data.generate import SampleFactory
from khmer_ocr.data.sources import KNOWN_SOURCES, LineComposer, number, place, syllable_word
from khmer_ocr.data.text_tables import SLOT, TextSourceError, _without_markup, software_texts
from khmer_ocr.script import default_charset, is_normalized
from khmer_ocr.script.clusters import invalid_clusters


@pytest.fixture(scope="module")
def fonts():
    return select_fonts(FontConfig())


def test_at_least_eight_training_fonts_and_reserved_ones_kept_out(fonts) -> None:
    train, unseen = fonts
    assert len(train) >= 8
    families = {f.family for f in train}
    assert {"Khmer OS", "Noto Sans Khmer"} <= families
    assert not families & {"Khmer Mondulkiri", "Khmer Busra", "Noto Serif Khmer"}
    assert [f.name for f in unseen] == ["KhmerOSsiemreap"]
    reserved = {f.family for f in discover_fonts(FontConfig()) if f.role == "reserved"}
    assert reserved == {"Khmer Mondulkiri", "Khmer Busra", "Noto Serif Khmer"}


def test_fonts_are_drawn_by_their_weights(fonts) -> None:
    train, _ = fonts
    weights = font_weights(train, {"NotoSansKhmer-*": 6.0, "KhmerOS": 0.5})
    by_name = dict(zip([f.name for f in train], weights, strict=True))
    assert by_name["NotoSansKhmer-Regular"] == by_name["NotoSansKhmer-Bold"] == 6.0
    assert by_name["KhmerOS"] == 0.5 and by_name["KhmerOSsys"] == 1.0
    with pytest.raises(FontError, match="positive"):
        font_weights(train, {"KhmerOS": 0})
    factory = SampleFactory(DataConfig(seed=1, splits=["train"], text=TextConfig(latin_prob=0)))
    drawn = Counter(factory.make(i).font.name for i in range(300))
    share = (drawn["NotoSansKhmer-Regular"] + drawn["NotoSansKhmer-Bold"]) / 300
    assert share > 3 * 2 / len(train), drawn  # the default weights draw Noto Sans Khmer about 6x as often


def test_bad_font_settings_give_clear_errors(tmp_path) -> None:
    with pytest.raises(FontError, match="unknown font 'NoSuchFont'"):
        select_fonts(FontConfig(unseen=["NoSuchFont"]))
    with pytest.raises(FontError, match="font path does not exist"):
        select_fonts(FontConfig(dirs=[str(tmp_path / "missing")]))
    with pytest.raises(FontError, match="reserved for evaluation"):
        select_fonts(FontConfig(include=["Mondulkiri-R"], reserved_families=["Khmer Mondulkiri"]))
    with pytest.raises(FontError, match="at least 8 are required"):
        select_fonts(FontConfig(include=["KhmerOS", "KhmerOSbattambang"]))


def test_shaping_check_flags_missing_glyphs_and_dotted_circles(fonts) -> None:
    train, _ = fonts
    noto = ShapingChecker(next(f.path for f in train if f.name == "NotoSansKhmer-Regular"))
    assert noto.ok("ព្រះរាជាណាចក្រកម្ពុជា")
    assert any("missing glyph for U+0041" in p for p in noto.problems("ABC"))  # Noto Sans Khmer has no Latin
    assert any("dotted circle" in p for p in noto.problems("\u17b6ក"))  # a vowel with no base


def test_rule_based_syllables_shape_cleanly_in_every_training_font(fonts) -> None:
    train, unseen = fonts
    checkers = [ShapingChecker(f.path) for f in train + unseen]
    rng = np.random.default_rng(0)
    words = [syllable_word(rng) for _ in range(1500)]
    for w in words:
        assert is_normalized(w) and invalid_clusters(w) == [], w
        for checker in checkers:
            assert not [p for p in checker.problems(w) if "dotted circle" in p], w


def test_composer_lines_are_normalized_in_charset_and_within_bounds() -> None:
    composer = LineComposer(TextConfig())
    charset = default_charset()
    sources = set()
    for i in range(600):
        rng = np.random.default_rng([3, i])
        lo, hi = [(2, 12), (10, 40), (30, 80)][i % 3]
        text, source = composer.compose(rng, (lo, hi))
        sources.add(source)
        assert lo <= len(text) <= hi, (text, lo, hi)
        assert is_normalized(text) and not charset.unknown(text), text
        assert not invalid_clusters(text), text
    assert sources == {"words", "syllables", "places", "numbers", "cldr", "software"}


def test_sources_are_deterministic() -> None:
    composer = LineComposer(TextConfig())
    a = [composer.compose(np.random.default_rng([9, i]), (10, 40)) for i in range(50)]
    b = [composer.compose(np.random.default_rng([9, i]), (10, 40)) for i in range(50)]
    assert a == b
    assert place(np.random.default_rng(1)) == place(np.random.default_rng(1))
    assert number(np.random.default_rng(2)) == number(np.random.default_rng(2))


def test_corpus_source_reads_user_files(tmp_path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("សួស្តី\u200bពិភពលោក\nΩΩΩ not khmer ΩΩΩ\n\nការអប់រំ\n", encoding="utf-8")
    composer = LineComposer(
        TextConfig(
            sources={"corpus": 1.0}, corpus_files=[str(corpus)], latin_prob=0, inner_punctuation_prob=0
        )
    )
    texts = {composer.compose(np.random.default_rng(i), (2, 80))[0] for i in range(40)}
    corpus_chars = set("សួស្តីពិភពលោកការអប់រំ ")
    assert all(set(t.rstrip("។៕៖!?ៗ,")) <= corpus_chars and not invalid_clusters(t) for t in texts), texts
    assert any("សួស្តីពិភពលោក" in t for t in texts) and any("ការអប់រំ" in t for t in texts)


def test_software_strings_lose_their_markup_and_keep_their_text() -> None:
    """ICU plural and select keep the `other` form, arguments, `#` and printf placeholders become slots,
    tags go."""
    assert _without_markup("{n, number} {n, plural, one {# ថ្ងៃ} other {# ថ្ងៃទៀត}}") == f"{SLOT} {SLOT} ថ្ងៃទៀត"
    assert _without_markup("លុប <b>{ title }</b> %(name)s %s?") == f"លុប {SLOT} {SLOT} {SLOT}?"
    assert _without_markup("{g, select, male {គាត់} other {គេ}} បាន") == "គេ បាន"


def test_software_texts_hold_out_a_disjoint_share_for_evaluation_only() -> None:
    train, heldout = software_texts()
    assert len(train) > 1000 and 0.1 < len(heldout) / (len(train) + len(heldout)) < 0.2
    assert not set(train) & set(heldout)
    charset = default_charset()
    for text in train + heldout:
        bare = text.replace(SLOT, "")
        assert is_normalized(text) and not charset.unknown(bare) and not invalid_clusters(bare), text
    composer = LineComposer(TextConfig(sources={"software": 1.0}, latin_prob=0, inner_punctuation_prob=0))
    lines = [composer.compose(np.random.default_rng(i), (5, 60))[0] for i in range(200)]
    assert all(SLOT not in t and not charset.unknown(t) for t in lines)
    assert sum(any(t.startswith(x) or x.startswith(t) for x in train) for t in lines) > 100
    held = TextConfig(sources={"software_heldout": 1.0})
    with pytest.raises(TextSourceError, match="evaluation text"):
        SampleFactory(DataConfig(text=held))
    with pytest.raises(TextSourceError, match="evaluation text"):
        SampleFactory(DataConfig(text=held, splits=["train"]))
    sample = SampleFactory(DataConfig(text=held, splits=["test"])).make(0)
    assert sample.split == "test" and sample.source == "software_heldout"
    assert set(TEXT_LICENCES) == set(KNOWN_SOURCES)  # every source's licence goes on the dataset card


def test_bad_text_settings_give_clear_errors(tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(TextSourceError, match="no usable Khmer line"):
        LineComposer(TextConfig(sources={"corpus": 1.0}, corpus_files=[str(empty)]))
    with pytest.raises(TextSourceError, match="cannot read corpus file"):
        LineComposer(TextConfig(sources={"corpus": 1.0}, corpus_files=[str(tmp_path / "nope.txt")]))
    with pytest.raises(TextSourceError, match="unknown text source"):
        LineComposer(TextConfig(sources={"news": 1.0}))
    with pytest.raises(TextSourceError, match=r"needs text\.corpus_files"):
        LineComposer(TextConfig(sources={"corpus": 1.0}))


def test_refuses_to_run_without_raqm(monkeypatch) -> None:
    from PIL import features

    from khmer_ocr.data.fonts import require_raqm

    require_raqm()  # this machine's Pillow has it
    real_check = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "raqm" else real_check(name))
    with pytest.raises(FontError, match="no RAQM layout engine"):
        select_fonts(FontConfig())


def test_shaping_check_flags_blank_glyphs(tmp_path, fonts) -> None:
    """A font that maps a Latin letter to an empty outline would draw nothing where the label has text."""
    from fontTools.ttLib import TTFont

    train, _ = fonts
    source = next(f.path for f in train if f.name == "KhmerOS")
    assert ShapingChecker(source).ok("ក ABC 12")
    font = TTFont(source)
    glyph = font.getBestCmap()[ord("B")]
    font["glyf"][glyph].numberOfContours = 0  # an empty outline, still mapped
    font["glyf"][glyph].coordinates, font["glyf"][glyph].endPtsOfContours = [], []
    font.save(str(tmp_path / "blank.ttf"))
    problems = ShapingChecker(str(tmp_path / "blank.ttf")).problems("ក ABC 12")
    assert problems == ["empty glyph for U+0042"]


def test_font_packs_add_training_fonts_and_keep_held_out_designs_out() -> None:
    from khmer_ocr.data.fontpacks import FONT_PACKS, font_pack_dir, licence_of

    packages = {p.package for p in FONT_PACKS}
    assert "siemreap" not in packages and "noto-serif-khmer" not in packages  # held out / reserved
    train = [f for f in discover_fonts(FontConfig()) if f.role == "train"]
    from_packs = [f for f in train if licence_of(f.path)]
    assert {f.family for f in from_packs} >= {"Hanuman", "Kantumruy Pro", "Battambang", "Nokora"}
    assert all(f.path.startswith(str(font_pack_dir())) for f in from_packs)
    assert licence_of(from_packs[0].path).endswith("OFL-1.1")
    assert len(train) >= 13 + len(FONT_PACKS)


def test_a_font_pack_with_a_wrong_checksum_is_refused(tmp_path) -> None:
    from khmer_ocr.data.fontpacks import FontPack, FontPackError, install_font_packs

    bad = FontPack("hanuman", "5.3.0", "sha512-not-the-real-one")
    with pytest.raises(FontPackError, match="does not match the pinned"):
        install_font_packs(tmp_path, packs=(bad,))
    assert not list(tmp_path.glob("*.ttf"))


def test_cldr_latin_and_punctuation_stay_in_the_charset() -> None:
    from khmer_ocr.data.sources import cldr_name, latin_word, punctuate

    charset = default_charset()
    rng = np.random.default_rng(0)
    names = [cldr_name(rng) for _ in range(300)]
    assert all(is_normalized(n) and not charset.unknown(n) and not invalid_clusters(n) for n in names)
    assert len(set(names)) > 200
    latin = [latin_word(rng) for _ in range(300)]
    assert all(w.isascii() and w and not charset.unknown(w) for w in latin)
    assert any("." in w for w in latin) and any(" " in w for w in latin)  # files/versions, CLDR names
    marked = [punctuate("ក", rng) for _ in range(200)]
    assert all(not charset.unknown(m) for m in marked)
    assert {"«ក»", "(ក)", "ក,"} <= set(marked)


def test_lines_carry_punctuation_and_latin_at_realistic_rates() -> None:
    composer = LineComposer(TextConfig())
    lines = [composer.compose(np.random.default_rng([9, i]), (20, 60))[0] for i in range(400)]
    share = {
        "brackets or quotes": np.mean([any(c in t for c in "«»“”()[]") for t in lines]),
        "latin": np.mean([any("A" <= c <= "z" for c in t) for t in lines]),
        "space": np.mean([" " in t for t in lines]),
    }
    assert 0.1 < share["brackets or quotes"] < 0.6, share
    assert 0.1 < share["latin"] < 0.6, share
    assert share["space"] > 0.5, share


def test_weighted_choice_draws_as_numpy_choice_does() -> None:
    """Same index and same generator state afterwards as rng.choice(n, p=p): lines stay the same."""
    from khmer_ocr.data.draws import WeightedChoice

    for p in ([0.5, 0.35, 0.15], [1, 2, 3, 4, 5], [0.0, 1.0, 0.0], np.random.default_rng(1).random(23)):
        draw = WeightedChoice(p)
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        for _ in range(2000):
            assert draw(a) == int(b.choice(len(p), p=np.asarray(p, float) / np.sum(p)))
        assert a.random() == b.random()
