"""The Khmer Unicode inventory (U+1780-U+17FF) and the character classes used across the project."""

from __future__ import annotations

from enum import StrEnum


class CharClass(StrEnum):
    """Coarse classes of characters; the model's hierarchical loss and the error analysis use them."""

    CONSONANT = "consonant"
    INDEPENDENT_VOWEL = "independent_vowel"
    DEPENDENT_VOWEL = "dependent_vowel"
    COENG = "coeng"
    SHIFTER = "register_shifter"
    SIGN = "sign"
    DIGIT = "digit"
    PUNCTUATION = "punctuation"
    LATIN = "latin"
    SPACE = "space"
    OTHER = "other"


def _span(first: int, last: int) -> str:
    return "".join(chr(c) for c in range(first, last + 1))


COENG = "\u17d2"
CONSONANTS = _span(0x1780, 0x17A2)  # 33 consonants, ក .. អ
# U+17A3 and U+17A4 are deprecated (see DEPRECATED); the rest are in current use.
INDEPENDENT_VOWELS = _span(0x17A5, 0x17B3)
DEPENDENT_VOWELS = _span(0x17B6, 0x17C5)  # ា .. ៅ
SHIFTERS = "\u17c9\u17ca"  # MUUSIKATOAN ៉, TRIISAP ៊
ROBAT = "\u17cc"
# Signs that sit above the base: NIKAHIT, BANTOC, ROBAT, TOANDAKHIAT, KAKABAT, AHSDA, SAMYOK SANNYA, VIRIAM,
# ATTHACAN; and the spacing signs after it: REAHMUK, YUUKALEAPINTU.
SIGNS_ABOVE = "\u17c6\u17cb\u17cc\u17cd\u17ce\u17cf\u17d0\u17d1\u17dd"
SIGNS_AFTER = "\u17c7\u17c8"
SIGNS = SIGNS_ABOVE + SIGNS_AFTER
KHMER_DIGITS = _span(0x17E0, 0x17E9)
# KHAN ។, BARIYOOSAN ៕, CAMNUC PII KUUH ៖, LEK TOO ៗ, PHNAEK MUAN ៙, KOOMUUT ៚, RIEL ៛, AVAKRAHASANYA ៜ
KHMER_PUNCTUATION = "\u17d4\u17d5\u17d6\u17d7\u17d9\u17da\u17db\u17dc"

# Deprecated or invisible code points and what they become (Unicode Standard, ch. 16.4).
DEPRECATED = {
    "\u17a3": "\u17a2",  # KHMER INDEPENDENT VOWEL QAQ -> QA
    "\u17a4": "\u17a2\u17b6",  # QAA -> QA + AA
    "\u17b4": "",  # inherent vowel AQ (invisible)
    "\u17b5": "",  # inherent vowel AA (invisible)
    "\u17d3": "\u17c6",  # BATHAMASAT -> NIKAHIT (visually the same)
    "\u17d8": "\u17d4\u179b\u17c2",  # BEYYAL -> KHAN LO AE (។ល។ written out)
}
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"  # ZWSP, ZWNJ, ZWJ, WJ, BOM, soft hyphen

ASCII_DIGITS = "0123456789"
LATIN_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
COMMON_PUNCTUATION = " !\"#$%&'()*+,-./:;<=>?@[]_«»–—…“”‘’"

# Consonants with a subscript form in common use (every consonant but the rare ones is allowed).
SUBSCRIPTABLE = CONSONANTS

_CLASS_OF: dict[str, CharClass] = {}
for _chars, _cls in (
    (CONSONANTS, CharClass.CONSONANT),
    (INDEPENDENT_VOWELS, CharClass.INDEPENDENT_VOWEL),
    (DEPENDENT_VOWELS, CharClass.DEPENDENT_VOWEL),
    (COENG, CharClass.COENG),
    (SHIFTERS, CharClass.SHIFTER),
    (SIGNS, CharClass.SIGN),
    (KHMER_DIGITS + ASCII_DIGITS, CharClass.DIGIT),
    (KHMER_PUNCTUATION, CharClass.PUNCTUATION),
    (LATIN_LETTERS, CharClass.LATIN),
    (" ", CharClass.SPACE),
):
    for _ch in _chars:
        _CLASS_OF[_ch] = _cls
for _ch in COMMON_PUNCTUATION.replace(" ", ""):
    _CLASS_OF[_ch] = CharClass.PUNCTUATION


def char_class(ch: str) -> CharClass:
    """The class of one character (OTHER for anything the project does not model)."""
    return _CLASS_OF.get(ch, CharClass.OTHER)


def is_khmer(ch: str) -> bool:
    """True for a code point in the Khmer block."""
    return "\u1780" <= ch <= "\u17ff"


def is_mark(ch: str) -> bool:
    """True for a character that attaches to the preceding base inside a cluster."""
    return ch == COENG or ch in DEPENDENT_VOWELS or ch in SHIFTERS or ch in SIGNS
