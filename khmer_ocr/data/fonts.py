"""Khmer font discovery, roles (train / unseen / reserved) and the per-line shaping check."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uharfbuzz as hb
from PIL import ImageFont, features

from khmer_ocr.data.config import FontConfig
from khmer_ocr.data.glyph_cache import cache_folder, font_cache_path, write_cache_file
from khmer_ocr.errors import KhmerOcrError
from khmer_ocr.script import clusters

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
# Font folders (os.pathsep-separated) searched instead of the system's fonts when set: a training bundle's
# fonts/, so that a machine without fontconfig or Khmer fonts renders with exactly the fonts shipped.
FONT_DIRS_ENV = "KHMER_OCR_FONT_DIRS"
_DOTTED_CIRCLE = 0x25CC
_MAX_CHECKED = 200_000  # clusters whose check a ShapingChecker remembers


def _draws_ink(ch: str) -> bool:
    """Characters that must draw ink on their own: ASCII letters, digits and punctuation."""
    return "!" <= ch <= "~"


class FontError(KhmerOcrError, ValueError):
    """A font setting that cannot be honoured (unknown name, missing path, too few fonts, no RAQM)."""


@dataclass(frozen=True)
class FontInfo:
    name: str  # file stem, e.g. KhmerOSbattambang
    family: str  # e.g. Khmer OS Battambang
    style: str
    path: str
    role: str = "train"  # train | unseen | reserved


def require_raqm() -> None:
    """Refuse to go on without Pillow's RAQM layout engine: without it Khmer is rendered unshaped."""
    if not features.check("raqm"):
        raise FontError(
            "Pillow has no RAQM layout engine, so Khmer cannot be shaped (subscripts and vowels would be "
            "drawn wrong). Install a Pillow wheel from PyPI (it bundles RAQM) or libraqm, then retry."
        )


def _covers_khmer(path: str) -> bool:
    try:
        font = hb.Font(hb.Face(hb.Blob.from_file_path(path)))
    except Exception:
        return False
    return all(font.get_nominal_glyph(cp) for cp in (0x1780, 0x17D2, 0x17B6))


def _candidate_files(extra: list[str]) -> list[str]:
    files: set[str] = set()
    if only := [d for d in os.environ.get(FONT_DIRS_ENV, "").split(os.pathsep) if d]:
        extra = [*only, *extra]
    elif shutil.which("fc-list"):
        out = subprocess.run(
            ["fc-list", ":lang=km", "file"], capture_output=True, text=True, check=False
        ).stdout
        files.update(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
    else:
        for d in FONT_DIRS:
            root = Path(os.path.expanduser(d))
            if root.is_dir():
                files.update(str(p) for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    for item in extra:
        p = Path(os.path.expanduser(item))
        if not p.exists():
            raise FontError(f"font path does not exist: {item}")
        found = [p] if p.is_file() else [q for q in p.rglob("*") if q.suffix.lower() in (".ttf", ".otf")]
        if not found:
            raise FontError(f"no .ttf/.otf font files under {item}")
        files.update(str(q) for q in found)
    return sorted(files)


@functools.cache
def _describe(path: str) -> tuple[str, str]:
    family, style = ImageFont.truetype(path, 12).getname()
    return family or Path(path).stem, style or "Regular"


def discover_fonts(cfg: FontConfig) -> list[FontInfo]:
    """All installed Khmer fonts (and those under cfg.dirs), each with its role; sorted by name."""
    fonts: dict[str, FontInfo] = {}
    for path in _candidate_files(cfg.dirs):
        if not _covers_khmer(path):
            continue
        name = Path(path).stem
        family, style = _describe(path)
        if family in cfg.reserved_families:
            role = "reserved"
        elif name in cfg.unseen:
            role = "unseen"
        elif not cfg.include or any(fnmatch.fnmatch(name, pat) for pat in cfg.include):
            role = "train"
        else:
            continue
        fonts.setdefault(name, FontInfo(name, family, style, path, role))
    return sorted(fonts.values(), key=lambda f: f.name)


def select_fonts(cfg: FontConfig) -> tuple[list[FontInfo], list[FontInfo]]:
    """The (train, unseen) fonts for generation; FontError with a clear message when they fall short."""
    require_raqm()
    fonts = discover_fonts(cfg)
    names = {f.name for f in fonts}
    for wanted in cfg.unseen + [p for p in cfg.include if not any(c in p for c in "*?[")]:
        if wanted not in names:
            available = ", ".join(sorted(names)) or "none (install fonts-khmeros / fonts-noto-core)"
            raise FontError(f"unknown font {wanted!r}; installed Khmer fonts: {available}")
    reserved_asked = [f.name for f in fonts if f.role == "reserved" and f.name in cfg.include + cfg.unseen]
    if reserved_asked:
        raise FontError(
            f"fonts {reserved_asked} are reserved for evaluation and cannot be used to generate data"
        )
    train = [f for f in fonts if f.role == "train"]
    unseen = [f for f in fonts if f.role == "unseen"]
    if len(train) < cfg.min_train_fonts:
        raise FontError(
            f"only {len(train)} training fonts found ({', '.join(f.name for f in train)}); at least "
            f"{cfg.min_train_fonts} are required. Install fonts-khmeros and fonts-noto-core "
            "(make setup does) or add font folders to fonts.dirs"
        )
    return train, unseen


def font_weights(fonts: list[FontInfo], weights: dict[str, float]) -> np.ndarray:
    """Each font's drawing weight: that of the first pattern of `weights` its name matches, else 1."""
    if any(w <= 0 for w in weights.values()):
        raise FontError(f"fonts.weights must be positive: {weights}")
    return np.asarray(
        [next((w for pat, w in weights.items() if fnmatch.fnmatchcase(f.name, pat)), 1.0) for f in fonts]
    )


class ShapingChecker:
    """Shapes a line in a font with HarfBuzz and says whether every glyph is real.

    A line fails in a font when shaping yields .notdef (glyph 0: a character the font lacks), an empty
    glyph for a visible base character (some fonts map Latin letters or digits to blank outlines, which
    would draw nothing where the label has text) or a dotted circle that the text did not contain (the
    shaper's mark for a malformed cluster).
    """

    def __init__(self, path: str) -> None:
        self._font = hb.Font(hb.Face(hb.Blob.from_file_path(path)))
        self._dotted = self._font.get_nominal_glyph(_DOTTED_CIRCLE)
        self._blank: dict[int, bool] = {}
        self._checked: dict[str, list[str]] = {}  # cluster -> problems; kept across runs as JSON lines
        self._unsaved: list[str] = []
        folder = cache_folder()
        self._file = font_cache_path(folder, path, f"check-{hb.__version__}", ".jsonl") if folder else None
        if self._file is not None and self._file.exists():
            lines = self._file.read_bytes().decode("utf-8", "replace").splitlines()
            try:  # one parse for the whole file; line by line only when a line is torn
                rows = json.loads("[" + ",".join(lines) + "]")
            except ValueError:
                rows = []
                for line in lines:
                    with contextlib.suppress(ValueError):  # a torn line: checked again
                        rows.append(json.loads(line))
            for row in rows:
                with contextlib.suppress(ValueError, TypeError):
                    cluster, problems = row
                    self._checked[str(cluster)] = [str(p) for p in problems]

    def _is_blank(self, glyph: int) -> bool:
        if glyph not in self._blank:
            ext = self._font.get_glyph_extents(glyph)
            self._blank[glyph] = ext is None or ext.width == 0 or ext.height == 0
        return self._blank[glyph]

    def problems(self, text: str) -> list[str]:
        """What is wrong with the text in this font, cluster by cluster (shaping never crosses a cluster,
        and the renderer shapes each on its own: khmer_ocr.data.render), each cluster checked once."""
        out = []
        for cluster in clusters(text):
            found = self._checked.get(cluster)
            if found is None:
                if len(self._checked) >= _MAX_CHECKED:
                    self._checked.clear()
                found = self._checked[cluster] = self._shape_problems(cluster)
                if self._file is not None:
                    self._unsaved.append(json.dumps([cluster, found], ensure_ascii=False))
                    if len(self._unsaved) >= 64:
                        data = ("\n".join(self._unsaved) + "\n").encode("utf-8")
                        self._unsaved = []
                        if not write_cache_file(self._file, data, replace=False):
                            self._file = None
            out.extend(found)
        return out

    def _shape_problems(self, text: str) -> list[str]:
        buf = hb.Buffer()
        buf.add_str(text)
        buf.guess_segment_properties()
        hb.shape(self._font, buf, {})
        out = []
        for info in buf.glyph_infos:
            ch = text[info.cluster] if info.cluster < len(text) else "?"
            if info.codepoint == 0:
                out.append(f"missing glyph for U+{ord(ch):04X}")
            elif _draws_ink(ch) and self._is_blank(info.codepoint):
                out.append(f"empty glyph for U+{ord(ch):04X}")
            elif self._dotted is not None and info.codepoint == self._dotted and "\u25cc" not in text:
                out.append(f"dotted circle at U+{ord(ch):04X} (malformed cluster)")
        return out

    def ok(self, text: str) -> bool:
        return not self.problems(text)
