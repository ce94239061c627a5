"""Benchmark: recognizer inference speed on this CPU, per architecture and size.

Prints a markdown table: parameters, milliseconds per 48x400 line at batch 1 on one thread (median of up
to --reps decodes, eager PyTorch under torch.inference_mode(); as built and as `Recognizer` serves it,
`serving_model`: BatchNorm folded and, for CTC models, traced), and lines/s for batches of 32 such lines on
one thread and on all threads. Decoding is included: best path for CTC models; for the hybrid, greedy
attention decoding of exactly --tokens steps (<eos> is masked: untrained weights would stop at random).

On a machine shared with other jobs the numbers move by 10-30%, and multi-threaded runs suffer most
(OpenMP threads wait for each other): the load average is printed before and after.

Run: `.venv/bin/python bench/inference.py` (two to six minutes), `--arch fast` for one architecture,
`--fast-variants` to compare the candidate configurations the fast presets were chosen from.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from khmer_ocr.models import EOS, SIZES, ModelConfig, build_model, count_parameters, serving_model
from khmer_ocr.models import builder as model_builder
from khmer_ocr.models.builder import FastPreset

# Candidates for the fast presets (stem, depthwise-separable blocks, features, BiLSTM hidden).
S2, S21, S1 = (2, 2), (2, 1), (1, 1)
_CNN_16_96 = (16, ((32, S2), (64, S21), (64, S1), (96, S21), (96, S1)))
_CNN_16_160 = (16, ((32, S2), (48, S1), (96, S21), (96, S1), (160, S21), (160, S1)))
_CNN_24_160 = (24, ((48, S2), (48, S1), (96, S21), (96, S1), (160, S21), (160, S1)))
_CNN_32_192 = (32, ((64, S2), (64, S1), (128, S21), (128, S1), (192, S21), (192, S1)))
_CNN_32_256 = (32, ((64, S2), (64, S1), (128, S21), (128, S1), (256, S21), (256, S1)))
FAST_VARIANTS: dict[str, FastPreset] = {
    "16-96 CNN, 128 features, no BiLSTM (tiny)": FastPreset(*_CNN_16_96, 128, 0),
    "24-160 CNN, 192 features, no BiLSTM": FastPreset(*_CNN_24_160, 192, 0),
    "32-256 CNN, 256 features, no BiLSTM": FastPreset(*_CNN_32_256, 256, 0),
    "16-96 CNN, 128 features, BiLSTM 64": FastPreset(*_CNN_16_96, 128, 64),
    "16-160 CNN, 128 features, BiLSTM 64": FastPreset(*_CNN_16_160, 128, 64),
    "16-160 CNN, 128 features, BiLSTM 80": FastPreset(*_CNN_16_160, 128, 80),
    "16-160 CNN, 128 features, BiLSTM 96 (small)": FastPreset(*_CNN_16_160, 128, 96),
    "24-160 CNN, 128 features, BiLSTM 96": FastPreset(*_CNN_24_160, 128, 96),
    "24-160 CNN, 192 features, BiLSTM 96": FastPreset(*_CNN_24_160, 192, 96),
    "32-192 CNN, 128 features, BiLSTM 96": FastPreset(*_CNN_32_192, 128, 96),
    "32-192 CNN, 192 features, BiLSTM 128 (base)": FastPreset(*_CNN_32_192, 192, 128),
}


def line_batch(batch: int, width: int, height: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(batch, 1, height, width, generator=gen) > 0.8).float()
    return images, torch.full((batch,), width, dtype=torch.long)


def median_ms(
    model: nn.Module,
    images: torch.Tensor,
    widths: torch.Tensor,
    reps: int,
    warmup: int,
    budget_s: float,
    min_runs: int = 3,
) -> float:
    """Median wall time of `model.decode` in ms: up to `reps` timed runs, fewer (at least `min_runs`) once
    `budget_s` seconds are spent."""
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model.decode(images, widths)
        started = time.perf_counter()
        while len(times) < reps and (len(times) < min_runs or time.perf_counter() - started < budget_s):
            start = time.perf_counter()
            model.decode(images, widths)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def prepare(model: nn.Module, tokens: int) -> nn.Module:
    model.eval()
    if hasattr(model, "decoder"):  # hybrid: always run `tokens` decoder steps
        model.decoder.max_length = tokens
        with torch.no_grad():
            model.decoder.classifier.bias[EOS] = float("-inf")
    return model


def measure(model: nn.Module, args: argparse.Namespace, batched: bool = True) -> dict[str, float]:
    model = prepare(model, args.tokens)
    fused = serving_model(model)  # as Recognizer serves it
    one = line_batch(1, args.width)
    torch.set_num_threads(1)
    row: dict[str, float] = {"params": count_parameters(model)}
    row["ms"] = median_ms(model, *one, args.reps, 3, args.budget)
    row["ms_fused"] = median_ms(fused, *one, args.reps, 3, args.budget)
    if batched:
        many = line_batch(args.batch, args.width)
        for threads in sorted({1, args.threads}):
            torch.set_num_threads(threads)
            ms = median_ms(fused, *many, args.batch_reps, 1, args.budget, min_runs=1)
            row[f"lines_s_{threads}"] = args.batch / (ms / 1e3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=50, help="timed batch-1 decodes per model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batch-reps", type=int, default=5, help="timed batched decodes per model")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per measurement, about")
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=40, help="hybrid decoder steps per line")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="all threads: this many")
    parser.add_argument("--arch", action="append", help="only these archs (repeatable)")
    parser.add_argument("--fast-variants", action="store_true", help="compare fast candidates instead")
    args = parser.parse_args()
    torch.manual_seed(0)

    print(
        f"48x{args.width} lines, eager PyTorch {torch.__version__}, {os.cpu_count()} CPUs, load average"
        f" {os.getloadavg()[0]:.1f} at start (other processes skew wall times, multi-threaded ones most).\n"
        f"Batch 1: one thread, median of up to {args.reps} decodes or {args.budget:g} s. Batch {args.batch}:"
        f" as served, on 1 and on {args.threads} threads.\n"
    )
    cols = ["params", "ms/line, 1 thread", "ms/line, as served"]
    if args.fast_variants:
        print("| fast candidate | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for name, preset in FAST_VARIANTS.items():
            model_builder.FAST_PRESETS["_candidate"] = preset
            model = model_builder.build_fast(ModelConfig(arch="fast", size="_candidate"))
            r = measure(model, args, batched=False)
            cells = [f"{r['params']:,}", f"{r['ms']:.2f}", f"{r['ms_fused']:.2f}"]
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        return

    thread_counts = sorted({1, args.threads})
    cols += [f"lines/s, batch {args.batch}, {n} thread{'s' if n > 1 else ''}" for n in thread_counts]
    print("| arch | size | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for arch, sizes in SIZES.items():
        if args.arch and arch not in args.arch:
            continue
        for size in sizes:
            if size == "tiny" and arch != "fast":
                continue  # test-only size
            r = measure(build_model(ModelConfig(arch=arch, size=size)), args)
            cells = [f"{r['params']:,}", f"{r['ms']:.2f}", f"{r['ms_fused']:.2f}"]
            cells += [f"{r[f'lines_s_{n}']:,.0f}" for n in thread_counts]
            print(f"| {arch} | {size} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
