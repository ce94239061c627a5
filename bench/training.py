"""Benchmark: training throughput (samples/s) of each architecture on this machine.

One optimizer step = forward, loss, backward, AdamW update, on random ink of a typical line width.
Run: `.venv/bin/python bench/training.py [--steps N] [--width W]`.
"""

from __future__ import annotations

import argparse
import time

import torch

from khmer_ocr.models import ModelConfig, build_model, count_parameters
from khmer_ocr.script import default_charset
from khmer_ocr.training.data import Batch
from khmer_ocr.training.losses import LossConfig, RecognitionLoss

CASES = [
    ("fast", "base", 32, 64),
    ("fast", "small", 32, 64),
    ("ctc", "small", 48, 32),
    ("hybrid", "small", 48, 32),
]


def step_rate(arch: str, size: str, height: int, batch: int, width: int, steps: int) -> float:
    charset = default_charset()
    model = build_model(ModelConfig(arch=arch, size=size, input_height=height, num_classes=len(charset)))
    loss_fn = RecognitionLoss(LossConfig(ctc_weight=0.3 if arch == "hybrid" else 0.0), charset)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    length = width // 12  # about one character per 12 px at this height
    targets = torch.randint(4, len(charset), (batch, length + 2), generator=gen)
    targets[:, 0], targets[:, -1] = 1, 2
    data = Batch(
        torch.rand(batch, 1, height, width, generator=gen),
        torch.full((batch,), width),
        targets,
        torch.full((batch,), length),
        [""] * batch,
    )
    model.train()
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            start = time.perf_counter()
        out = model(data.images, data.widths, data.targets[:, :-1])
        loss, _ = loss_fn(out, data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--width", type=int, default=400, help="line width in pixels at height 48")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"\nTraining throughput, CPU, {threads} threads, lines {args.width} px wide at height 48 (scaled)")
    print("| arch | size | params | input height | batch | samples/s |")
    print("|---|---|---|---|---|---|")
    for arch, size, height, batch in CASES:
        width = args.width * height // 48
        rate = step_rate(arch, size, height, batch, width, args.steps)
        params = count_parameters(build_model(ModelConfig(arch=arch, size=size, input_height=height)))
        print(f"| {arch} | {size} | {params:,} | {height} | {batch} | {rate:.0f} |")


if __name__ == "__main__":
    main()
