"""The glyph cache on disk: a later process draws the same lines without rasterizing what an earlier one
saved; torn or foreign files and unwritable folders never stop rendering."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from khmer_ocr.data.glyph_cache import MAGIC, GlyphTable, read_chunks
from khmer_ocr.data.render import line_ink, load_font
from khmer_ocr.script.inventory import COENG, CONSONANTS, DEPENDENT_VOWELS

KHMER_OS = "/usr/share/fonts/truetype/khmeros/KhmerOS.ttf"
ROOT = Path(__file__).resolve().parents[1]
LINES = ["ព្រះរាជាណាចក្រកម្ពុជា ១២៣", "ខ្ញុំស្រឡាញ់ភាសាខ្មែរ (Khmer) 42%", "សួស្តី «ពិភពលោក»!"]

# Draws LINES in a fresh process with the glyph cache in argv[1]; prints how many clusters it rasterized
# and a digest of the inks.
DRAW = """
import hashlib, sys
from khmer_ocr.data import render
from khmer_ocr.data.glyph_cache import save_glyph_cache
drawn = []
rasterize = render._rasterize
render._rasterize = lambda font, text: drawn.append(text) or rasterize(font, text)
font = render.load_font(sys.argv[2], 32)
digest = hashlib.sha256(b"".join(render.line_ink(t, font).tobytes() for t in sys.argv[3:])).hexdigest()
save_glyph_cache()
print(len(drawn), digest)
"""


def _draw(glyphs: str) -> tuple[int, str]:
    env = {**os.environ, "KHMER_OCR_GLYPH_CACHE": glyphs, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", DRAW, glyphs, KHMER_OS, *LINES],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), out[1]


def test_a_later_process_draws_the_same_lines_from_the_saved_clusters(tmp_path: Path) -> None:
    first, digest = _draw(str(tmp_path))
    assert first > 20  # every distinct cluster of the lines, rasterized
    assert list(tmp_path.glob("KhmerOS-32-*.glyphs"))
    again, same = _draw(str(tmp_path))
    assert (again, same) == (0, digest)
    off, unsaved = _draw("off")
    assert (off, unsaved) == (first, digest)


# Runs the shaping check of every line in argv[2:] over Khmer OS in a fresh process with the cache in argv[1];
# prints how many clusters it shaped and what it found.
CHECK = f"""
import json, sys
from khmer_ocr.data import fonts
shaped = []
shape = fonts.ShapingChecker._shape_problems
fonts.ShapingChecker._shape_problems = lambda self, text: shaped.append(text) or shape(self, text)
checker = fonts.ShapingChecker({KHMER_OS!r})
found = [checker.problems(t) for t in sys.argv[2:]]
print(len(shaped), json.dumps(found))
"""


def test_a_later_process_reuses_the_shaping_checks(tmp_path: Path) -> None:
    syllables = "".join(c + v for c in CONSONANTS for v in DEPENDENT_VOWELS)  # hundreds of clusters
    lines = [*LINES, syllables, "ABC " + COENG]

    def check(glyphs: str) -> tuple[int, str]:
        env = {**os.environ, "KHMER_OCR_GLYPH_CACHE": glyphs, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", CHECK, glyphs, *lines], env=env, capture_output=True, text=True, check=True
        ).stdout
        shaped, found = out.split(" ", 1)
        return int(shaped), found

    first, found = check(str(tmp_path))
    assert first > 400 and "dotted circle" in found  # the lone COENG
    (saved,) = tmp_path.glob("KhmerOS-check-*.jsonl")
    with open(saved, "ab") as f:
        f.write(b'["\xe1\x9e\x80", [')  # a write cut short: that line alone is dropped
    assert check(str(tmp_path)) == (first % 64, found)  # saved 64 at a time: only the last few again
    assert check("off") == (first, found)


def test_a_torn_tail_is_dropped_and_the_file_compacted(tmp_path: Path) -> None:
    font = load_font(KHMER_OS, 24)
    table = GlyphTable(font, tmp_path)
    ink = np.arange(12, dtype=np.uint8).reshape(3, 4)
    table.put("ក", (ink, 1, -2, 9.5))
    table.save()
    table.put("ខ", (ink[:2], 0, 0, 7.25))
    table.save()
    path = table.path
    good = path.read_bytes()
    path.write_bytes(good + MAGIC + b"\xff" * 11)  # a write cut short by a crash
    glyphs, chunks, read = read_chunks(path.read_bytes())
    assert (sorted(glyphs), chunks, read) == (["ក", "ខ"], 2, len(good))
    again = GlyphTable(font, tmp_path)  # loads what parses and rewrites the file as one chunk
    assert np.array_equal(again.get("ក")[0], ink) and again.get("ក")[1:] == (1, -2, 9.5)
    assert again.get("ខ")[3] == 7.25
    assert read_chunks(path.read_bytes())[1:] == (1, len(path.read_bytes()))
    path.write_bytes(b"not a glyph table at all")
    assert GlyphTable(font, tmp_path).glyphs == {}


def test_an_unwritable_folder_leaves_rendering_in_memory(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    table = GlyphTable(load_font(KHMER_OS, 18), blocked / "glyphs")
    for k in range(70):  # past one save: the folder cannot be made, the table keeps going in memory
        table.put(f"x{k}", (np.zeros((1, 1), np.uint8), 0, 0, 1.0))
    assert table.path is None and len(table.glyphs) == 70
    assert line_ink(LINES[0], load_font(KHMER_OS, 18)).max() == 255


def test_a_file_keeps_its_first_clusters_and_memory_drops_the_least_recently_used_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from khmer_ocr.data import glyph_cache

    font = load_font(KHMER_OS, 24)
    ink = np.ones((2, 2), np.uint8)
    path = glyph_cache.font_cache_path(tmp_path, font.path, "24", ".glyphs")
    many = {f"c{k}": (ink * (k % 256), k, 0, float(k)) for k in range(glyph_cache.MAX_FILE_ENTRIES + 50)}
    path.write_bytes(glyph_cache.encode_chunk(many))  # a file an earlier, larger limit let grow
    table = GlyphTable(font, tmp_path)
    assert list(table.glyphs) == list(many)[: glyph_cache.MAX_FILE_ENTRIES]  # the first ones, in order
    assert list(read_chunks(path.read_bytes())[0]) == list(table.glyphs)  # and the file rewritten so
    assert table.get("c7")[0].max() == 7 and table.get("c7")[3] == 7.0

    tables = glyph_cache._Tables()
    monkeypatch.setattr(glyph_cache, "glyph_dir", lambda: tmp_path)
    monkeypatch.setattr(glyph_cache, "MAX_MEMORY_ENTRIES", glyph_cache.MAX_FILE_ENTRIES + 2)
    big, small, new = font, load_font(KHMER_OS, 18), load_font(KHMER_OS, 20)
    tables.table(big)  # the full table
    for cluster in ("ក", "ខ"):
        tables.table(small).put(cluster, (ink, 0, 0, 1.0))  # the limit is reached
    tables.table(big)  # used last: small is now the least recently used
    tables.table(new)  # room is made by dropping small (saved first), not big
    assert list(tables.tables) == [(KHMER_OS, 24), (KHMER_OS, 20)]
    assert sorted(GlyphTable(small, tmp_path).glyphs) == ["ក", "ខ"]
