"""Segmentation of text into orthographic clusters (a base and the marks that attach to it)."""

from __future__ import annotations

from khmer_ocr.script.inventory import COENG, CONSONANTS, INDEPENDENT_VOWELS, is_mark


def clusters(text: str) -> list[str]:
    """Split text into orthographic clusters.

    A Khmer cluster is a base (consonant or independent vowel) followed by its subscripts (COENG + consonant),
    register shifter, dependent vowel and signs. Every other character is a cluster of its own. A mark with
    no base before it starts a cluster of its own, so that invalid text still round-trips:
    ''.join(clusters(t)) == t for every t.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        if text[i] in CONSONANTS or text[i] in INDEPENDENT_VOWELS or is_mark(text[i]):
            while j < n:
                if text[j] == COENG:
                    # COENG takes the next consonant (or independent vowel) with it as a subscript.
                    j += (
                        2
                        if j + 1 < n and (text[j + 1] in CONSONANTS or text[j + 1] in INDEPENDENT_VOWELS)
                        else 1
                    )
                elif is_mark(text[j]):
                    j += 1
                else:
                    break
        out.append(text[i:j])
        i = j
    return out


def invalid_clusters(text: str) -> list[str]:
    """Clusters that are not well-formed Khmer: a mark with no base, a COENG with nothing to subscript,
    more than one dependent vowel, or more than two subscripts."""
    from khmer_ocr.script.inventory import DEPENDENT_VOWELS

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
