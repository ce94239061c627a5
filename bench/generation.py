"""Benchmark: end-to-end generation (text + shaping check + render + augment + PNG encode + shard write).

Prints lines/s per core for 1 and N worker processes, and where the time goes for one line.
Run: `make bench` or `.venv/bin/python bench/generation.py [--lines N]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.generate import SampleFactory


def stage_times(n: int) -> list[tuple[str, float]]:
    """Mean microseconds per line of each stage, in one process."""
    from khmer_ocr.data import augment
    from khmer_ocr.data.render import load_font, render_mask

    cfg = DataConfig(seed=1)
    f = SampleFactory(cfg)
    totals = dict.fromkeys(
        ["text", "shaping check", "render (RAQM)", "geometric", "photometric", "PNG encode"], 0.0
    )
    for i in range(n):
        rng = np.random.default_rng([cfg.seed, i])
        level = 1 + i % 5
        t0 = time.perf_counter()
        text, _ = f.composer.compose(rng, cfg.level(level).length)
        t1 = time.perf_counter()
        font = f.train_fonts[i % len(f.train_fonts)]
        f._checkers[font.name].ok(text)
        t2 = time.perf_counter()
        mask = render_mask(
            text,
            load_font(font.path, int(cfg.fonts.sizes[int(rng.integers(len(cfg.fonts.sizes)))])),
            rng,
            cfg.level(level),
        )
        t3 = time.perf_counter()
        mask = augment.geometric(mask, rng, cfg.level(level), cfg.image_height, cfg.max_width)
        t4 = time.perf_counter()
        img = augment.photometric(mask, rng, cfg.level(level))
        t5 = time.perf_counter()
        from khmer_ocr.data.generate import Sample

        Sample("0", text, font, level, "", "", img, 0).png(cfg.png_compress_level)
        t6 = time.perf_counter()
        for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
            totals[key] += dt
    return [(k, v / n * 1e6) for k, v in totals.items()]


def end_to_end(lines: int, workers: int) -> float:
    """Lines per second of a whole `generate_dataset` run in a fresh process (cold caches included)."""
    code = (
        "import sys, tempfile, time\n"
        "from khmer_ocr.data.config import DataConfig\n"
        "from khmer_ocr.data.writer import generate_dataset\n"
        f"cfg = DataConfig(name='bench', num_samples={lines}, shard_size=250, seed=3)\n"
        "with tempfile.TemporaryDirectory() as tmp:\n"
        "    t = time.perf_counter()\n"
        f"    generate_dataset(cfg, tmp + '/ds', workers={workers}, progress=False)\n"
        "    print(cfg.num_samples / (time.perf_counter() - t))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=8000, help="lines per end-to-end run")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    SampleFactory(DataConfig())  # build caches (word model, place names) outside the timings
    rows = []
    for workers in sorted({1, cores}):
        rate = end_to_end(args.lines, workers)
        rows.append((workers, rate, rate / workers))
    print(
        f"\nEnd-to-end generation, {args.lines} lines (all 5 difficulty levels, default mix), {cores} cores"
    )
    print(f"| {'workers':>7} | {'lines/s':>8} | {'lines/s per core':>16} |")
    print(f"|{'-' * 9}|{'-' * 10}|{'-' * 18}|")
    for workers, rate, per_core in rows:
        print(f"| {workers:>7} | {rate:>8.0f} | {per_core:>16.0f} |")
    print("\nWhere one line's time goes (one process, levels 1-5 in turn, after 2000 warm-up lines)")
    stage_times(2000)
    stages = stage_times(2000)
    total = sum(us for _, us in stages)
    print(f"| {'stage':<14} | {'us/line':>8} | {'share':>6} |")
    print(f"|{'-' * 16}|{'-' * 10}|{'-' * 8}|")
    for name, us in stages:
        print(f"| {name:<14} | {us:>8.0f} | {us / total:>6.0%} |")
    print(f"| {'total':<14} | {total:>8.0f} | {1:>6.0%} |")


if __name__ == "__main__":
    main()
