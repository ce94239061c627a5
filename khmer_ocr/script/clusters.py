"""Segmentation of text into orthographic clusters (a base and the marks that attach to it)."""

from __future__ import annotations

import re

from khmer_ocr.script.inventory import (
    COENG,
    CONSONANTS,
    DEPENDENT_VOWELS,
    INDEPENDENT_VOWELS,
    SHIFTERS,
    SIGNS,
    is_mark,
)


def _cluster_pattern() -> re.Pattern[str]:
    """A base (consonant, independent vowel, or a mark with no base) and what attaches to it: COENG with the
    consonant or independent vowel it subscripts, a COENG alone, or a mark; any other character alone."""

    def cls(chars: str) -> str:
        return "[" + "".join(re.escape(c) for c in sorted(set(chars))) + "]"

    marks = cls(COENG + DEPENDENT_VOWELS + SHIFTERS + SIGNS)
    bases = cls(CONSONANTS + INDEPENDENT_VOWELS)
    coeng = re.escape(COENG)
    return re.compile(f"(?:{bases}|{marks})(?:{coeng}{bases}|{marks})*|.", re.DOTALL)


_CLUSTER = _cluster_pattern()


def clusters(text: str) -> list[str]:
    """Split text into orthographic clusters.

    A Khmer cluster is a base (consonant or independent vowel) followed by its subscripts (COENG + consonant),
    register shifter, dependent vowel and signs. Every other character is a cluster of its own. A mark with
    no base before it starts a cluster of its own, so that invalid text still round-trips:
    ''.join(clusters(t)) == t for every t.
    """
    return _CLUSTER.findall(text)


def invalid_clusters(text: str) -> list[str]:
    """Clusters that are not well-formed Khmer: a mark with no base, a COENG with nothing to subscript,
    more than one dependent vowel, or more than two subscripts."""
    bad = []
    for c in clusters(text):
        if is_mark(c[0]):
            bad.append(c)
            continue
        if c[0] not in CONSONANTS and c[0] not in INDEPENDENT_VOWELS:
            continue
        n_coeng = c.count(COENG)
        dangling = any(
            ch == COENG and (k + 1 == len(c) or c[k + 1] not in CONSONANTS + INDEPENDENT_VOWELS)
            for k, ch in enumerate(c)
        )
        if dangling or n_coeng > 2 or sum(ch in DEPENDENT_VOWELS for ch in c) > 1:
            bad.append(c)
    return bad
