"""The rasterized clusters of each (font, size), kept in memory and on disk across runs.

Shaping and rasterizing a cluster the first time costs about 100 us (RAQM layout, FreeType, the advance),
and a fresh process meets tens of thousands of (font, size, cluster) triples in its first thousands of lines:
a third of a short generation run's time. The clusters of each (font, size) are therefore also appended to a
file in `cache_dir()/glyphs/` and loaded by every later process (every worker of `generate`, every streamed
training run, every DAG task), so only clusters never drawn before on this machine are rasterized.

A file is named after everything that decides its pixels: the font file (path, size, modification time),
the pixel size, and the versions of Pillow, RAQM, HarfBuzz, FriBiDi and FreeType; anything else changes the
name and the file is simply not found. A file is a sequence of chunks, each a JSON index (cluster, offset,
height, width, x and y offsets, advance) and the raw uint8 ink of its clusters: no pickle. Processes append
chunks under a lock; a reader keeps the chunks before the first one that does not parse (a torn write), and
a file of many chunks, or of more than MAX_FILE_ENTRIES clusters, is rewritten as one (the first ones kept).
A process keeps its tables in order of use and drops the least recently used beyond MAX_MEMORY_ENTRIES.
A cache folder that cannot be written turns saving off with one warning. KHMER_OCR_GLYPH_CACHE names another
folder, or is `off` to keep the clusters in memory only (what a first run does, e.g. to benchmark one).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL
from PIL import ImageFont, features

from khmer_ocr.cache import cache_dir

try:
    import fcntl
except ImportError:  # Windows: appends are not serialized (a torn chunk is only dropped by the reader)
    fcntl = None

log = logging.getLogger(__name__)

Glyph = tuple[np.ndarray, int, int, float]  # (ink, x offset, y offset, advance)
MAGIC = b"KOGLYPH2"
HEADER = struct.Struct("<QQ")  # index bytes, ink bytes
# Per (font, size) on disk: the clusters met first, i.e. the frequent ones (3,000 cover 99.7 % of the
# clusters of the reference profile's lines); small enough that the tables of every font at every line size
# (39 x 3) fit in memory together: a process that had to drop and reload them read a whole file per few lines.
MAX_FILE_ENTRIES = 3000
MAX_CHUNKS = 64  # a file of more chunks (or entries) is compacted into one when read
MAX_MEMORY_ENTRIES = 400_000  # over every table of a process; beyond it the least recently used are dropped
SAVE_EVERY = 64  # new clusters of a table between appends


@functools.cache
def _versions() -> str:
    """The versions of everything that draws: Pillow and its layout and raster libraries."""
    names = ("raqm", "harfbuzz", "fribidi", "freetype2")
    libs = "|".join(f"{n}={features.version(n) if n in features.features else None}" for n in names)
    return f"Pillow={PIL.__version__}|{libs}"


def glyph_dir() -> Path | None:
    """Where tables are saved: KHMER_OCR_GLYPH_CACHE (a folder, or "off" for memory only), else
    cache_dir()/glyphs."""
    setting = os.environ.get("KHMER_OCR_GLYPH_CACHE", "").strip()
    if setting.lower() in {"off", "0", "false", "no"}:
        return None
    return Path(setting) if setting else cache_dir() / "glyphs"


def encode_chunk(glyphs: dict[str, Glyph]) -> bytes:
    index, inks, offset = [], [], 0
    for cluster, (ink, ox, oy, advance) in glyphs.items():
        h, w = ink.shape
        index.append([cluster, offset, h, w, int(ox), int(oy), float(advance)])
        inks.append(np.ascontiguousarray(ink, np.uint8).tobytes())
        offset += h * w
    head = json.dumps(index, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return MAGIC + HEADER.pack(len(head), offset) + head + b"".join(inks)


def read_chunks(data: bytes) -> tuple[dict[str, Glyph], int, int]:
    """(glyphs, chunks read, bytes read) of a table file's contents, up to the first chunk that does not
    parse. Inks are read-only views of `data`: the cache is never drawn on."""
    glyphs: dict[str, Glyph] = {}
    pos = chunks = 0
    while pos < len(data):
        try:
            if data[pos : pos + len(MAGIC)] != MAGIC:
                raise ValueError("no chunk header")
            n_index, n_ink = HEADER.unpack_from(data, pos + len(MAGIC))
            start = pos + len(MAGIC) + HEADER.size
            if start + n_index + n_ink > len(data):
                raise ValueError("a chunk cut short")
            index = json.loads(data[start : start + n_index].decode("utf-8"))
            ink = np.frombuffer(data, np.uint8, count=n_ink, offset=start + n_index)
            found = {}
            for cluster, offset, h, w, ox, oy, advance in index:
                if offset < 0 or h < 0 or w < 0 or offset + h * w > n_ink:
                    raise ValueError("an entry outside its chunk")
                found[str(cluster)] = (ink[offset : offset + h * w].reshape(h, w), int(ox), int(oy), advance)
        except (ValueError, TypeError, struct.error, UnicodeDecodeError) as exc:
            log.warning("glyph cache: ignoring what follows byte %d of a table (%s)", pos, exc)
            break
        for cluster, glyph in found.items():
            glyphs.setdefault(cluster, glyph)
        pos, chunks = start + n_index + n_ink, chunks + 1
    return glyphs, chunks, pos


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def font_cache_path(directory: Path, font_path: str, tag: str, suffix: str) -> Path:
    """The cache file of a font for `tag` (a pixel size, "check"), named after the font file (path, size,
    modification time) and the versions of the libraries that shape and draw it."""
    st = os.stat(font_path)
    ident = f"{os.path.realpath(font_path)}|{st.st_size}|{st.st_mtime_ns}|{tag}|{_versions()}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return directory / f"{Path(font_path).stem}-{tag}-{digest}{suffix}"


def write_cache_file(path: Path, data: bytes, replace: bool) -> bool:
    """Append data to a cache file (or replace it, atomically), under the folder's lock; False, with one
    warning and no more saving in that folder by this process, when it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent):
            if replace:
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            else:
                with open(path, "ab") as f:
                    f.write(data)
        return True
    except OSError as exc:
        log.warning("glyph cache: %s not written (%s); it stays in memory only", path, exc)
        if _TABLES.directory == path.parent:
            _TABLES.directory = None
        return False


class GlyphTable:
    """The clusters of one font at one pixel size: `get` from memory, `put` new ones (appended to the
    table's file every SAVE_EVERY, or by `save`)."""

    def __init__(self, font: ImageFont.FreeTypeFont, directory: Path | None) -> None:
        self.glyphs: dict[str, Glyph] = {}
        self.new: dict[str, Glyph] = {}
        self.path: Path | None = None
        self.on_disk = 0
        if directory is not None:
            self.path = font_cache_path(directory, font.path, str(font.size), ".glyphs")
            self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError:
            return
        self.glyphs, chunks, good = read_chunks(data)
        if chunks > MAX_CHUNKS or good < len(data) or len(self.glyphs) > MAX_FILE_ENTRIES:
            # compact into one chunk (dropping a torn tail and the clusters beyond the first MAX_FILE_ENTRIES)
            chunk = encode_chunk(dict(itertools.islice(self.glyphs.items(), MAX_FILE_ENTRIES)))
            self.glyphs = read_chunks(chunk)[0]  # views of the compact bytes: the old file's are let go
            self._write(chunk, replace=True)
        self.on_disk = len(self.glyphs)

    def get(self, cluster: str) -> Glyph | None:
        return self.glyphs.get(cluster)

    def put(self, cluster: str, glyph: Glyph) -> None:
        self.glyphs[cluster] = glyph
        if self.path is not None and self.on_disk + len(self.new) < MAX_FILE_ENTRIES:
            self.new[cluster] = glyph
            if len(self.new) >= SAVE_EVERY:
                self.save()

    def save(self) -> None:
        """Append the clusters drawn since the last save."""
        if self.path is None or not self.new:
            return
        chunk, self.on_disk, self.new = encode_chunk(self.new), self.on_disk + len(self.new), {}
        self._write(chunk, replace=False)

    def _write(self, chunk: bytes, replace: bool) -> None:
        if not write_cache_file(self.path, chunk, replace):
            self.path = None


class _Tables:
    """Every GlyphTable of this process, by (font path, size)."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, int], GlyphTable] = {}
        self.directory: Path | None = None
        self.pid = -1

    def folder(self) -> Path | None:
        """The folder of this process's cache files (None: memory only)."""
        if self.pid != os.getpid():  # a new process (a forked worker): its own saving from here on
            self.pid = os.getpid()
            self.directory = glyph_dir()
            for table in self.tables.values():
                table.new = {}
        return self.directory

    def table(self, font: ImageFont.FreeTypeFont) -> GlyphTable:
        self.folder()
        key = (font.path, font.size)
        table = self.tables.pop(key, None)  # re-inserted last: the tables are kept in order of use
        if table is None:
            held = sum(len(t.glyphs) for t in self.tables.values())
            while self.tables and held >= MAX_MEMORY_ENTRIES:  # drop the least recently used
                dropped = self.tables.pop(next(iter(self.tables)))
                dropped.save()
                held -= len(dropped.glyphs)
            table = GlyphTable(font, self.directory)
        self.tables[key] = table
        return table

    def save(self) -> None:
        for table in self.tables.values():
            table.save()


_TABLES = _Tables()


def cache_folder() -> Path | None:
    """Where this process keeps cache files of fonts (None when KHMER_OCR_GLYPH_CACHE is off or the folder
    cannot be written)."""
    return _TABLES.folder()


def glyph_table(font: ImageFont.FreeTypeFont) -> GlyphTable:
    """The (loaded or new) table of this font at its size."""
    return _TABLES.table(font)


def save_glyph_cache() -> None:
    """Append every table's new clusters (the end of a shard, of a run)."""
    _TABLES.save()
