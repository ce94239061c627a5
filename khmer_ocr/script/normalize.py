"""Khmer text normalization: one canonical encoding for every visually identical spelling.

Steps: NFC; deprecated code points replaced and invisible ones (ZWSP, ZWNJ, ZWJ, BOM, soft hyphen, the
inherent vowels U+17B4/U+17B5) removed; inside each cluster the marks sorted into the canonical order
(robat, subscripts with COENG RO last, register shifter, dependent vowel, signs above, signs after);
repeated marks dropped; split vowels typed as two code points joined (េ + ី -> ើ, េ + ា -> ោ);
whitespace collapsed to single spaces.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from khmer_ocr.script.clusters import clusters
from khmer_ocr.script.inventory import (
    COENG,
    DEPENDENT_VOWELS,
    DEPRECATED,
    INVISIBLE,
    ROBAT,
    SHIFTERS,
    SIGNS_ABOVE,
    SIGNS_AFTER,
)

_RO = "\u179a"
_TRANSLATE = str.maketrans({**DEPRECATED, **{ch: "" for ch in INVISIBLE}})
_SPACES = re.compile(r"[\s\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_COMPOSITES = (("\u17c1\u17b8", "\u17be"), ("\u17c1\u17b6", "\u17c4"))


def _rank(unit: str) -> int:
    if unit == ROBAT:
        return 1
    if unit.startswith(COENG):
        return 3 if unit == COENG + _RO else 2
    if unit in SHIFTERS:
        return 4
    if unit in DEPENDENT_VOWELS:
        return 5
    if unit in SIGNS_ABOVE:
        return 6
    if unit in SIGNS_AFTER:
        return 7
    return 8


def _units(marks: str) -> list[str]:
    """Split the marks after a base into units; COENG + its consonant is one unit."""
    units, i = [], 0
    while i < len(marks):
        take = 2 if marks[i] == COENG and i + 1 < len(marks) else 1
        units.append(marks[i : i + take])
        i += take
    return units


@functools.lru_cache(maxsize=1 << 16)  # clusters repeat endlessly
def _normalize_cluster(cluster: str) -> str:
    if len(cluster) < 3:
        return cluster
    base, units = cluster[0], _units(cluster[1:])
    ordered = sorted(units, key=_rank)  # stable: subscripts keep their typed order
    deduped = [u for k, u in enumerate(ordered) if k == 0 or u != ordered[k - 1] or u.startswith(COENG)]
    out = base + "".join(deduped)
    for pair, single in _COMPOSITES:
        out = out.replace(pair, single)
    return out


def normalize(text: str) -> str:
    """The canonical form of a line of text (idempotent: normalize(normalize(t)) == normalize(t))."""
    text = unicodedata.normalize("NFC", text).translate(_TRANSLATE)
    text = _SPACES.sub(" ", text).strip()
    text = "".join(_normalize_cluster(c) for c in clusters(text))
    return unicodedata.normalize("NFC", text)


def is_normalized(text: str) -> bool:
    """True when text is already in canonical form."""
    return normalize(text) == text
