"""Khmer Unicode: normalization, clusters and the charset."""

from __future__ import annotations

import random

import pytest

from khmer_ocr.script import (
    CharClass,
    Charset,
    char_class,
    clusters,
    default_charset,
    is_normalized,
    normalize,
)
from khmer_ocr.script.clusters import invalid_clusters


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ក\u17c1\u17b8", "ក\u17be"),  # េ + ី typed as two code points -> ើ
        ("ក\u17c1\u17b6", "ក\u17c4"),  # េ + ា -> ោ
        ("ក\u17c6\u17b6", "ក\u17b6\u17c6"),  # nikahit typed before the vowel -> ាំ
        (
            "ស\u17d2\u179a\u17d2\u178f\u17b8",
            "ស\u17d2\u178f\u17d2\u179a\u17b8",
        ),  # COENG RO goes after the other subscript
        ("ប\u17bb\u17c9", "ប\u17c9\u17bb"),  # register shifter before the vowel
        ("ក\u200bខ\u200cគ\ufeff", "កខគ"),  # invisible characters removed
        ("\u17a3ក", "អក"),  # deprecated independent vowel QAQ -> QA
        ("ក\u17b4ា", "កា"),  # invisible inherent vowel removed
        ("ក\u17b6\u17b6", "ក\u17b6"),  # a repeated vowel typed twice
        ("  ខ្មែរ \u00a0 ភាសា\t", "ខ្មែរ ភាសា"),  # whitespace collapsed
    ],
)
def test_normalize_fixes_visually_identical_encodings(raw: str, expected: str) -> None:
    assert normalize(raw) == expected
    assert is_normalized(expected)
    assert not is_normalized(raw)


@pytest.mark.parametrize("word", ["ប្រសិទ្ធភាព", "ស្ត្រី", "កម្ពុជា", "ព្រះរាជាណាចក្រ", "ក្រសួងអប់រំ", "ធម៌", "ម៉ោង"])
def test_correct_words_are_already_normal(word: str) -> None:
    assert normalize(word) == word
    assert invalid_clusters(word) == []


def test_normalize_is_idempotent_on_random_khmer() -> None:
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(0x1780, 0x17FA)] + [" ", "\u200b", "a", "1"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        once = normalize(text)
        assert normalize(once) == once, repr(text)


def test_clusters_round_trip_and_split_at_bases() -> None:
    assert clusters("ប្រសិទ្ធភាព") == ["ប្រ", "សិ", "ទ្ធ", "ភា", "ព"]
    assert clusters("ស្ត្រី") == ["ស្ត្រី"]
    assert clusters("ab ១") == ["a", "b", " ", "១"]
    rng = random.Random(1)
    for _ in range(500):
        text = "".join(chr(rng.randint(0x1780, 0x17F9)) for _ in range(rng.randint(0, 10)))
        assert "".join(clusters(text)) == text


def test_invalid_clusters_are_found() -> None:
    assert invalid_clusters("\u17b6ក") == ["\u17b6"]  # vowel with no base
    assert invalid_clusters("ក\u17d2") == ["ក\u17d2"]  # COENG with nothing to subscript
    assert invalid_clusters("ក\u17b6\u17b7") == ["ក\u17b6\u17b7"]  # two dependent vowels


def test_char_classes() -> None:
    assert char_class("ក") is CharClass.CONSONANT
    assert char_class("ឥ") is CharClass.INDEPENDENT_VOWEL
    assert char_class("ា") is CharClass.DEPENDENT_VOWEL
    assert char_class("\u17d2") is CharClass.COENG
    assert char_class("៉") is CharClass.SHIFTER
    assert char_class("ំ") is CharClass.SIGN
    assert char_class("៣") is CharClass.DIGIT
    assert char_class("។") is CharClass.PUNCTUATION
    assert char_class("x") is CharClass.LATIN
    assert char_class("Ω") is CharClass.OTHER


def test_charset_encodes_decodes_and_is_versioned(tmp_path) -> None:
    cs = default_charset()
    text = "ព្រះរាជាណាចក្រកម្ពុជា ១២៣ ABC ។"
    assert cs.decode(cs.encode(text)) == text
    assert cs.encode("Ω") == [cs.specials.index("<unk>")]
    assert cs.unknown("កΩ") == {"Ω"}
    assert len(cs) == len(cs.specials) + len(cs.chars)
    cs.save(tmp_path / "charset.json")
    again = Charset.load(tmp_path / "charset.json")
    assert again == cs and again.version == cs.version
    other = Charset(name="khmer", chars=cs.chars[:-1])
    assert other.version != cs.version
    import re

    assert re.match(cs.pattern, text) and not re.match(cs.pattern, "កΩ")


def test_charset_file_with_wrong_version_is_refused(tmp_path) -> None:
    data = default_charset().to_dict()
    data["chars"] = data["chars"][:-1]
    with pytest.raises(ValueError, match="inconsistent"):
        Charset.from_dict(data)


def _clusters_reference(text: str) -> list[str]:
    """The character loop clusters() replaced by a regular expression."""
    from khmer_ocr.script.inventory import COENG, CONSONANTS, INDEPENDENT_VOWELS, is_mark

    out, i, n = [], 0, len(text)
    while i < n:
        j = i + 1
        if text[i] in CONSONANTS or text[i] in INDEPENDENT_VOWELS or is_mark(text[i]):
            while j < n:
                if text[j] == COENG:
                    bases = CONSONANTS + INDEPENDENT_VOWELS
                    j += 2 if j + 1 < n and text[j + 1] in bases else 1
                elif is_mark(text[j]):
                    j += 1
                else:
                    break
        out.append(text[i:j])
        i = j
    return out


def test_clusters_split_any_text_as_the_character_loop_did() -> None:
    import numpy as np

    from khmer_ocr.script import clusters

    alphabet = [chr(c) for c in range(0x1780, 0x1800)] + list("ab 1.\n\t") + ["\u200b", "\u25cc"]
    rng = np.random.default_rng(0)
    for _ in range(3000):
        text = "".join(alphabet[int(k)] for k in rng.integers(0, len(alphabet), int(rng.integers(0, 30))))
        assert clusters(text) == _clusters_reference(text)
