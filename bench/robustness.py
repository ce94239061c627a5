"""Benchmark: how a model reads line crops unlike its training lines.

The same lines of a generated dataset (--data; without it a small one is generated into a temporary folder)
read as generated and transformed as real crops often are: extra paper around the text (a detector's
generous box, a line rendered on a tall canvas), smaller text (screen text scaled down to 24, 20 or 16 px of
image height), a rule under the line (an underline) or a ruled box around it (a table cell), and bilevel
scans (Otsu binarization).
Prints one markdown table of CER per variant, with the change against the lines as generated. Margins and
rules are `prepare_line`'s to handle (docs/recognizer.md, "Margins and rules"); small text and bilevel
scans are for the training data.

Run: `.venv/bin/python bench/robustness.py --data data/eval-final --split val --max-lines 600` (about a
minute per 600 lines and variant on one core).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.reader import Dataset
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.evaluation.metrics import score
from khmer_ocr.inference import Recognizer

Variant = Callable[[np.ndarray], np.ndarray]


def _paper(gray: np.ndarray) -> int:
    return int(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))


def padded(vertical: float, ends: float) -> Variant:
    """More paper: `vertical` of the image's height above and below, `ends` of it before and after."""

    def pad(gray: np.ndarray) -> np.ndarray:
        v, e = round(vertical * gray.shape[0]), round(ends * gray.shape[0])
        return cv2.copyMakeBorder(gray, v, v, e, e, cv2.BORDER_CONSTANT, value=_paper(gray))

    return pad


def scaled_to(height: int) -> Variant:
    """The line scaled down to an image height (area averaging, as a screen or a small render)."""

    def scale(gray: np.ndarray) -> np.ndarray:
        width = max(1, round(gray.shape[1] * height / gray.shape[0]))
        return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)

    return scale


def underlined(gray: np.ndarray) -> np.ndarray:
    """A rule 4 % of the height thick, 10 % of the height below the line, across it."""
    h = gray.shape[0]
    out = cv2.copyMakeBorder(gray, 0, h // 4, 0, 0, cv2.BORDER_CONSTANT, value=_paper(gray))
    ink = 255 if np.median(gray) < 128 else 0
    out[h + h // 10 : h + h // 10 + max(1, h // 25)] = ink
    return out


def boxed(gray: np.ndarray) -> np.ndarray:
    """In a ruled box (a table cell): rules 4 % of the height thick, 20 % of the height from the line."""
    h = gray.shape[0]
    m, t = h // 5, max(1, h // 25)
    out = cv2.copyMakeBorder(gray, m, m, m, m, cv2.BORDER_CONSTANT, value=_paper(gray))
    ink = 255 if np.median(gray) < 128 else 0
    out[:t], out[-t:], out[:, :t], out[:, -t:] = ink, ink, ink, ink
    return out


def binarized(gray: np.ndarray) -> np.ndarray:
    return cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1]


VARIANTS: dict[str, Variant] = {
    "as generated": lambda gray: gray,
    "25 % more paper above and below": padded(0.25, 0),
    "50 % above and below": padded(0.5, 0),
    "100 % above and below": padded(1.0, 0),
    "twice the height before and after": padded(0, 2.0),
    "50 % above and below, twice the height at the ends": padded(0.5, 2.0),
    "scaled to 24 px high": scaled_to(24),
    "scaled to 20 px high": scaled_to(20),
    "scaled to 16 px high": scaled_to(16),
    "a rule under the line": underlined,
    "in a ruled box (a table cell)": boxed,
    "Otsu binarized": binarized,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="dataset folder or s3:// prefix (default: a small generated one)")
    parser.add_argument("--model", help="model folder or models:/ reference (default: the reference model)")
    parser.add_argument(
        "--no-lm", action="store_true", help="best-path decoding, not the folder's language model"
    )
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-lines", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="khmer-ocr-robustness-") as tmp:
        data = args.data
        if not data:
            data = str(Path(tmp) / "ds")
            cfg = DataConfig(name="bench-robustness", num_samples=max(400, args.max_lines * 20), seed=11)
            print(f"no --data: generating {cfg.num_samples} lines into {data} ...", flush=True)
            generate_dataset(cfg, data, workers=1, progress=False)
        dataset = Dataset(data)
        records = dataset.split(args.split)[: args.max_lines]
        if not records:
            raise SystemExit(f"{data} has no lines in split {args.split}")
        images = [dataset.image(r) for r in records]
    refs = [r["text"] for r in records]
    recognizer = Recognizer.load(args.model, use_lm=not args.no_lm)
    print(f"\n{len(refs)} {args.split} lines of {data}, model {args.model or 'reference'}\n")
    print("| variant | CER | vs as generated |\n|---|---|---|")
    base = None
    for name, variant in VARIANTS.items():
        hyps = [p.text for p in recognizer.predict([variant(im) for im in images], batch_size=32)]
        cer = 100 * score(refs, hyps).cer
        base = cer if base is None else base
        print(f"| {name} | {cer:.2f} % | {cer / max(base, 1e-9):.2f}x |", flush=True)


if __name__ == "__main__":
    main()
