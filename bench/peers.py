"""Benchmark: the model against a peer, Tesseract 5 with its Khmer model (`khm`), on the same test lines.

Both read exactly the same lines: the first --max-lines of each split (as `khmer-ocr evaluate --max-lines`
takes them) of a generated dataset (--data; without it a small one is generated into a temporary folder).
Prints a markdown table per split and per difficulty level (1 short and clean .. 5 long and degraded):
lines, CER of each (khmer_ocr.evaluation's `score`: NFC code points, pooled), and the median ms per line
of each, one line at a time on one thread, preprocessing included, from the decoded grayscale image (the
model: `Recognizer.predict([image])`; Tesseract: the image handed over, its own thresholding and
recognition); then a row over all lines and the speed ratio. The two run line by line in turn, so that a
busy machine slows both alike.

Tesseract runs with `--psm 7` (one text line) and OMP_THREAD_LIMIT=1. By default it is driven through its C
API (libtesseract, from the same Debian package as the CLI, through ctypes) with `khm` loaded once, as the
model is; the first --cli-check lines also go through the `tesseract` command (the PNG piped in) to check
that both give the same text and to show what a process per line costs. `--tesseract cli` uses the command
for every line (its times then include starting the process and loading `khm`). Tesseract's text is
normalized as the dataset's references are (khmer_ocr.script.normalize, strip); the model's is used as is,
as `khmer-ocr evaluate` does.

Needs the Debian packages tesseract-ocr and tesseract-ocr-khm: `bash infra/setup/bench-deps.sh` (which
`make bench` runs). Run: `.venv/bin/python bench/peers.py --data data/reference --max-lines 300` (about
half a minute here; 100 lines per split by default), `--model DIR` for another model (default: the
committed reference model).
"""

from __future__ import annotations

import os

# One thread for Tesseract: libgomp reads this once, when the first library using it (torch) loads.
os.environ["OMP_THREAD_LIMIT"] = "1"

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tesseract_api import INSTALL_HINT, PSM_SINGLE_LINE, TesseractAPI

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.reader import Dataset, decode_gray
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.evaluation.metrics import level_key, score, score_by_level
from khmer_ocr.inference import Recognizer
from khmer_ocr.models import count_parameters
from khmer_ocr.script import normalize

SPLITS = ("test", "test_unseen_font")
# Tesseract's default for an image without a resolution (the CLI says "Invalid resolution 0 dpi. Using 70").


def tesseract_cli(png: bytes, lang: str = "khm", psm: int = PSM_SINGLE_LINE) -> str:
    """One line through the `tesseract` command: the PNG on standard input, the text on standard output."""
    cmd = ["tesseract", "stdin", "stdout", "-l", lang, "--psm", str(psm)]
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    done = subprocess.run(cmd, input=png, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return done.stdout.decode("utf-8", errors="replace")


def check_tesseract(lang: str) -> str:
    """The version of the `tesseract` command, once it is known to have the language model."""
    if shutil.which("tesseract") is None:
        raise SystemExit(f"the tesseract command is missing: {INSTALL_HINT}")
    langs = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, check=False).stdout
    if lang not in langs.split():
        raise SystemExit(f"Tesseract has no {lang!r} language model: {INSTALL_HINT}")
    version = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, check=False).stdout
    return version.split("\n", 1)[0].removeprefix("tesseract ").strip()


def clean(text: str) -> str:
    """Tesseract's text in the references' form: the dataset's Khmer normalization, no surrounding space."""
    return normalize(text).strip()


def timed(fn: Callable[[], str]) -> tuple[str, float]:
    start = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - start) * 1e3


def small_dataset(root: Path, lines_per_split: int) -> str:
    # test is 5 % of the lines, half of it in the held-out font
    cfg = DataConfig(name="bench-peers", num_samples=max(400, lines_per_split * 40), shard_size=500, seed=7)
    print(f"no --data: generating {cfg.num_samples} lines into {root} ...", flush=True)
    generate_dataset(cfg, root, workers=1, progress=False)
    return str(root)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def row(
    split: str,
    level: str,
    n: int,
    model_cer: float,
    tess_cer: float,
    model_ms: list[float],
    tess_ms: list[float],
) -> str:
    return (
        f"| {split} | {level} | {n} | {model_cer:.2%} | {tess_cer:.2%} | {median(model_ms):.2f} "
        f"| {median(tess_ms):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="dataset folder or s3:// prefix (default: a small generated one)")
    parser.add_argument("--model", help="model folder or models:/ reference (default: the reference model)")
    parser.add_argument(
        "--no-lm", action="store_true", help="best-path decoding, not the folder's language model"
    )
    parser.add_argument("--splits", nargs="+", default=list(SPLITS))
    parser.add_argument("--max-lines", type=int, default=100, help="at most this many lines per split")
    parser.add_argument("--tesseract", choices=["api", "cli"], default="api", help="how to run Tesseract")
    parser.add_argument("--cli-check", type=int, default=20, help="lines also run through the CLI (api mode)")
    parser.add_argument("--lang", default="khm", help="Tesseract language model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed lines before timing, each engine")
    args = parser.parse_args()
    tesseract_version = check_tesseract(args.lang)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="khmer-ocr-peers-") as tmp:
        data = args.data or small_dataset(Path(tmp) / "ds", args.max_lines)
        dataset = Dataset(data)
        records = [(s, r) for s in args.splits for r in dataset.split(s)[: args.max_lines]]
        if not records:
            raise SystemExit(f"{data} has no lines in splits {args.splits}")
        pngs = [dataset.image_bytes(r) for _, r in records]
        images = [decode_gray(png, r) for png, (_, r) in zip(pngs, records, strict=True)]
        card = dataset.card

    recognizer = Recognizer.load(args.model, use_lm=not args.no_lm)
    api = TesseractAPI(args.lang) if args.tesseract == "api" else None

    def read_tesseract(k: int) -> str:
        return api.text(images[k]) if api is not None else tesseract_cli(pngs[k], args.lang)

    load = os.getloadavg()
    for k in range(min(args.warmup, len(images))):
        recognizer.predict([images[k]])
        read_tesseract(k)
    model_hyps, tess_hyps, model_ms, tess_ms = [], [], [], []
    started = time.perf_counter()
    for k, image in enumerate(images):  # in turn, line by line: a busy machine slows both alike
        pred, ms = timed(lambda im=image: recognizer.predict([im])[0].text)
        model_hyps.append(pred)
        model_ms.append(ms)
        text, ms = timed(lambda k=k: read_tesseract(k))
        tess_hyps.append(clean(text))
        tess_ms.append(ms)
    elapsed = time.perf_counter() - started

    cli_note = ""
    if api is not None and args.cli_check > 0:
        n = min(args.cli_check, len(pngs))
        cli = [timed(lambda k=k: tesseract_cli(pngs[k], args.lang)) for k in range(n)]
        same = sum(clean(text) == tess_hyps[k] for k, (text, _) in enumerate(cli))
        cli_note = (
            f"Tesseract CLI check (`tesseract stdin stdout -l {args.lang} --psm 7`, one process per line, "
            f"PNG piped in): {same}/{n} lines read the same as through the API; "
            f"{median([ms for _, ms in cli]):.1f} ms per call (process start and model load included)."
        )
    if api is not None:
        api.close()

    refs = [r["text"] for _, r in records]
    levels = [level_key(r.get("difficulty")) for _, r in records]
    lines = [
        "| split | level | lines | CER model | CER tesseract | ms/line model | ms/line tesseract |",
        "|---|---|---|---|---|---|---|",
    ]
    for split in args.splits:
        idx = [k for k, (s, _) in enumerate(records) if s == split]
        if not idx:
            continue
        r, lv = [refs[k] for k in idx], [levels[k] for k in idx]
        m_hyp, t_hyp = [model_hyps[k] for k in idx], [tess_hyps[k] for k in idx]
        m_levels, t_levels = score_by_level(r, m_hyp, lv), score_by_level(r, t_hyp, lv)
        for level, m in m_levels.items():
            at = [k for k in idx if levels[k] == level]
            t_ms = [tess_ms[k] for k in at]
            lines.append(
                row(split, level, m.n_lines, m.cer, t_levels[level].cer, [model_ms[k] for k in at], t_ms)
            )
        m_all, t_all = score(r, m_hyp), score(r, t_hyp)
        t_ms = [tess_ms[k] for k in idx]
        lines.append(row(split, "all", len(idx), m_all.cer, t_all.cer, [model_ms[k] for k in idx], t_ms))
    m_all, t_all = score(refs, model_hyps), score(refs, tess_hyps)
    lines.append(row("all splits", "all", len(refs), m_all.cer, t_all.cer, model_ms, tess_ms))

    model_p50, tess_p50 = median(model_ms), median(tess_ms)
    model_desc = args.model or "the committed reference model"
    print(
        f"\nmodel: {model_desc} ({recognizer.cfg.arch}/{recognizer.cfg.size}, "
        f"{count_parameters(recognizer.model):,} parameters, input height {recognizer.cfg.input_height})"
    )
    print(
        f"Tesseract {tesseract_version}, language {args.lang}, --psm 7, OMP_THREAD_LIMIT=1, through its "
        f"{'C API (loaded once)' if api is not None else 'CLI (a process per line)'}"
    )
    print(
        f"data: {data} ({card.get('version', '?')}), {len(records)} lines: the first {args.max_lines} of "
        f"each of {', '.join(args.splits)}; batch 1, one thread, preprocessing included; ms/line = median"
    )
    print(f"load average before: {load[0]:.2f}, after: {os.getloadavg()[0]:.2f}; {elapsed:.0f} s timed\n")
    print("\n".join(lines))
    print(
        f"\nspeed: the model reads a line in {model_p50:.2f} ms, Tesseract in {tess_p50:.2f} ms (median): "
        f"the model is {tess_p50 / model_p50:.1f}x faster"
        if model_p50 <= tess_p50
        else f"\nspeed: the model reads a line in {model_p50:.2f} ms, Tesseract in {tess_p50:.2f} ms "
        f"(median): Tesseract is {model_p50 / tess_p50:.1f}x faster"
    )
    if cli_note:
        print(cli_note)


if __name__ == "__main__":
    main()
