"""Benchmark: generation (text + shaping check + render + augment + PNG encode + shard write) and validation.

Prints, for generation alone (the Python API, 1 and N worker processes; as a first run on the machine and with
the glyph cache one earlier run of other lines saved) and for the CLI (`khmer-ocr generate
--no-validate`, `khmer-ocr validate`, and the two end to end): lines/s, lines/s per core (lines/s / workers)
and lines per CPU-second (user + system time of every process involved: robust to a busy machine). CLI rates
are marginal: the extra lines of a large run over a small one by the extra time, so process start-up, imports
and the dataset's fixed files cancel out. Then where one line's time goes, stage by stage.
Run: `make bench` or `.venv/bin/python bench/generation.py [--lines N] [--cli-lines SMALL LARGE]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.generate import SampleFactory

ROOT = Path(__file__).resolve().parents[1]  # the checkout whose code is measured, in every process
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def stage_times(n: int) -> list[tuple[str, float]]:
    """Mean CPU microseconds per line of each stage, in one process."""
    from khmer_ocr.data import augment
    from khmer_ocr.data.generate import Sample
    from khmer_ocr.data.render import load_font, render_mask

    cfg = DataConfig(seed=1)
    f = SampleFactory(cfg)
    names = ["text", "shaping check", "render (RAQM)", "geometric", "photometric", "PNG encode"]
    totals = dict.fromkeys(names, 0.0)
    clock = time.process_time
    for i in range(n):
        rng = np.random.default_rng([cfg.seed, i])
        level = 1 + i % 5
        t0 = clock()
        text, _ = f.composer.compose(rng, cfg.level(level).length)
        t1 = clock()
        font = f.train_fonts[i % len(f.train_fonts)]
        f._checkers[font.name].ok(text)
        t2 = clock()
        size = int(cfg.fonts.sizes[int(rng.integers(len(cfg.fonts.sizes)))])
        mask = render_mask(text, load_font(font.path, size), rng, cfg.level(level))
        t3 = clock()
        mask = augment.geometric(mask, rng, cfg.level(level), cfg.image_height, cfg.max_width)
        t4 = clock()
        img = augment.photometric(mask, rng, cfg.level(level))
        t5 = clock()
        Sample("0", text, font, level, "", "", img, 0).png(cfg.png_compress_level)
        t6 = clock()
        for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
            totals[key] += dt
    return [(k, v / n * 1e6) for k, v in totals.items()]


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and all its processes) of a command."""
    cpu, t = _cpu_children(), time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=ENV)
    return time.perf_counter() - t, _cpu_children() - cpu


def generation_alone(lines: int, workers: int, glyphs: str, seed: int = 3) -> tuple[float, float]:
    """(lines/s, lines per CPU-second) of a whole `generate_dataset` run in a fresh process (imports
    excluded); glyphs: KHMER_OCR_GLYPH_CACHE for it ("off": a first run, every cluster rasterized anew; a
    folder: the clusters earlier runs saved there, see khmer_ocr.data.glyph_cache)."""
    code = (
        "import resource, tempfile, time\n"
        "from khmer_ocr.data.config import DataConfig\n"
        "from khmer_ocr.data.writer import generate_dataset\n"
        "def cpu():\n"
        "    s, c = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
        "    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime\n"
        f"cfg = DataConfig(name='bench', num_samples={lines}, shard_size=250, seed={seed})\n"
        "with tempfile.TemporaryDirectory() as tmp:\n"
        "    t, c = time.perf_counter(), cpu()\n"
        f"    generate_dataset(cfg, tmp + '/ds', workers={workers}, progress=False)\n"
        "    print(cfg.num_samples / (time.perf_counter() - t), cfg.num_samples / (cpu() - c))\n"
    )
    env = {**ENV, "KHMER_OCR_GLYPH_CACHE": glyphs}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT, env=env
    ).stdout
    rate, cpu_rate = map(float, out.strip().splitlines()[-1].split())
    return rate, cpu_rate


def cli_runs(small: int, large: int, workers: int) -> dict[str, tuple[float, float]]:
    """Marginal (lines/s, lines per CPU-second) of `khmer-ocr generate --no-validate`, `khmer-ocr validate`
    and the two together, from a small and a large run of the demo profile."""
    cli = [sys.executable, "-m", "khmer_ocr"]
    runs: dict[str, dict[int, tuple[float, float]]] = {"generate": {}, "validate": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (small, large):
            out = f"{tmp}/ds{n}"
            runs["generate"][n] = timed(
                [
                    *cli,
                    "generate",
                    "--profile",
                    "demo",
                    "--num-samples",
                    str(n),
                    "--workers",
                    str(workers),
                    "--out",
                    out,
                    "--no-validate",
                ]
            )
            runs["validate"][n] = timed([*cli, "validate", out])
    runs["end to end"] = {
        n: tuple(a + b for a, b in zip(runs["generate"][n], runs["validate"][n], strict=True))
        for n in (small, large)
    }
    extra = large - small
    return {
        name: (extra / (r[large][0] - r[small][0]), extra / (r[large][1] - r[small][1]))
        for name, r in runs.items()
    }


def _median(rows: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=8000, help="lines per generation-alone run")
    parser.add_argument(
        "--cli-lines",
        type=int,
        nargs=2,
        default=(400, 12400),
        metavar=("SMALL", "LARGE"),
        help="lines of the small and the large CLI run (their difference is what is measured)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers of the N runs")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measure (medians are shown)")
    parser.add_argument("--stages", type=int, default=2000, help="lines of the stage breakdown (0: skip)")
    parser.add_argument("--skip-cli", action="store_true", help="only generation alone and the stages")
    args = parser.parse_args()
    SampleFactory(DataConfig())  # build caches (word model, place names) outside the timings
    rows: list[tuple[str, int, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as glyphs:
        generation_alone(args.lines, 1, glyphs, seed=99)  # what one earlier run on this machine saved
        for workers in sorted({1, args.workers}):
            for label, setting in (("first run", "off"), ("glyph cache of 1 run", glyphs)):
                rate = _median([generation_alone(args.lines, workers, setting) for _ in range(args.repeat)])
                rows.append((f"generation alone, {args.lines} lines, {label}", workers, rate))
    if not args.skip_cli:
        small, large = args.cli_lines
        cli = [cli_runs(small, large, args.workers) for _ in range(args.repeat)]
        for name, workers in (("generate", args.workers), ("validate", 1), ("end to end", args.workers)):
            rows.append((f"CLI {name}, {large} over {small} lines", workers, _median([c[name] for c in cli])))
    load = os.getloadavg()[0]
    print(f"\n{os.cpu_count()} cores, load average {load:.1f} at the end; medians of {args.repeat} run(s)")
    print(f"| {'measure':<58} | {'workers':>7} | {'lines/s':>8} | {'per core':>8} | {'per CPU-s':>9} |")
    print(f"|{'-' * 60}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
    for name, workers, (rate, cpu_rate) in rows:
        print(f"| {name:<58} | {workers:>7} | {rate:>8.0f} | {rate / workers:>8.0f} | {cpu_rate:>9.0f} |")
    if not args.stages:
        return
    print(
        f"\nWhere one line's CPU time goes (one process, levels 1-5 in turn, after {args.stages} warm-up "
        "lines)"
    )
    stage_times(args.stages)
    stages = stage_times(args.stages)
    total = sum(us for _, us in stages)
    print(f"| {'stage':<14} | {'us/line':>8} | {'share':>6} |")
    print(f"|{'-' * 16}|{'-' * 10}|{'-' * 8}|")
    for name, us in stages:
        print(f"| {name:<14} | {us:>8.0f} | {us / total:>6.0%} |")
    print(f"| {'total':<14} | {total:>8.0f} | {1:>6.0%} |")


if __name__ == "__main__":
    main()
