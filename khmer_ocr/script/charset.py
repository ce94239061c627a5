"""The model's charset: code points plus special tokens, versioned and saved with every dataset and model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from khmer_ocr.script import inventory as inv

SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")


@dataclass(frozen=True)
class Charset:
    """An ordered set of code points; token ids are len(specials) + index. <pad> (id 0) is the CTC blank."""

    name: str
    chars: tuple[str, ...]
    specials: tuple[str, ...] = SPECIALS
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("charset chars must be unique single code points")
        index = {c: i + len(self.specials) for i, c in enumerate(self.chars)}
        object.__setattr__(self, "_index", index)

    @property
    def version(self) -> str:
        """Name plus a short content hash: two charsets with the same version encode identically."""
        digest = hashlib.sha256(json.dumps([self.specials, self.chars]).encode()).hexdigest()[:10]
        return f"{self.name}-{digest}"

    @property
    def pattern(self) -> str:
        """A regular expression that matches a non-empty line made only of this charset's characters."""
        escaped = "".join("\\" + c if c in "\\]^-[" else c for c in self.chars)
        return f"^[{escaped}]+$"

    def __len__(self) -> int:
        return len(self.specials) + len(self.chars)

    def __contains__(self, ch: object) -> bool:
        return ch in self._index

    def unknown(self, text: str) -> set[str]:
        """Characters of text this charset cannot encode."""
        return {c for c in text if c not in self._index}

    def encode(self, text: str) -> list[int]:
        unk = self.specials.index("<unk>")
        return [self._index.get(c, unk) for c in text]

    def decode(self, ids: list[int]) -> str:
        n = len(self.specials)
        return "".join(self.chars[i - n] for i in ids if i >= n)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "specials": list(self.specials),
            "chars": list(self.chars),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict) -> Charset:
        charset = cls(name=data["name"], chars=tuple(data["chars"]), specials=tuple(data["specials"]))
        if "version" in data and data["version"] != charset.version:
            raise ValueError(f"charset file is inconsistent: version {data['version']} != {charset.version}")
        return charset

    @classmethod
    def load(cls, path: str | Path) -> Charset:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def default_charset() -> Charset:
    """Every Khmer character in current use, digits, Latin letters and common punctuation."""
    chars = (
        inv.CONSONANTS
        + inv.INDEPENDENT_VOWELS
        + inv.DEPENDENT_VOWELS
        + inv.COENG
        + inv.SHIFTERS
        + inv.SIGNS
        + inv.KHMER_DIGITS
        + inv.KHMER_PUNCTUATION
        + inv.ASCII_DIGITS
        + inv.LATIN_LETTERS
        + inv.COMMON_PUNCTUATION
    )
    return Charset(name="khmer", chars=tuple(dict.fromkeys(chars)))
