"""Benchmark: reading whole pages, the project's PageReader against Tesseract 5 `khm`, on the same pages.

Pages are synthetic (khmer_ocr.data.pages: clean documents, application screenshots, scans, phone photos;
mixed sizes and fonts, headings, indents, two columns), generated here from --seed (or read from a page
dataset with --data). For every page and method: line finding precision and recall (a found line matches a
true line one to one at box IoU >= 0.5), page CER (the lines' texts joined by newlines in reading order;
khmer_ocr.evaluation's `score`, pooled over the pages) and ms per page (median, one thread, from the decoded
grayscale image, everything included: finding, cropping, recognition).

Methods:
  khmer-ocr            PageReader: the classical line finder (khmer_ocr.pages.layout) + the recognizer
  tesseract --psm 6    Tesseract `khm`, one uniform block of text (its line boxes from its TSV output)
  tesseract --psm 3    Tesseract `khm`, its full automatic page segmentation
  --detectors also times and scores line finding alone for: the classical finder, Tesseract's layout
  analysis (--psm 3, no recognition) and, when the package can be imported, PP-OCRv4's text detector as
  shipped in the rapidocr-onnxruntime wheel (Apache-2.0; weights in the wheel, nothing downloaded), with
  its boxes read by the project's recognizer for a page CER.

Tesseract runs through its C API (libtesseract, from the Debian package tesseract-ocr; `khm` from
tesseract-ocr-khm: `bash infra/setup/bench-deps.sh`), OMP_THREAD_LIMIT=1, `khm` loaded once. Its text is
normalized as the references are (khmer_ocr.script.normalize per line, empty lines dropped).

Run: `.venv/bin/python bench/pages.py` (80 pages, about two minutes here); `--pages N`, `--seed S`,
`--data DIR` (a dataset of kind pages), `--model DIR`, `--detectors`. PP-OCRv4 det is no dependency of the
project; to measure it, install it beside the venv and put it on the path, e.g.
`pip install --no-deps --target /tmp/rapid rapidocr-onnxruntime==1.4.4 onnxruntime pyclipper shapely
flatbuffers` then `PYTHONPATH=/tmp/rapid .venv/bin/python bench/pages.py --detectors`.
"""

from __future__ import annotations

import os

os.environ["OMP_THREAD_LIMIT"] = "1"  # Tesseract: one thread (libgomp reads it when torch loads)

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tesseract_api import TesseractAPI

from khmer_ocr.evaluation.pages import TruthPage, load_pages
from khmer_ocr.pages import LineFinder, PageReader
from khmer_ocr.pages.layout import _xy_order
from khmer_ocr.pages.metrics import PageScores


@dataclass
class Result:
    text: str
    boxes: list[tuple[int, int, int, int]]
    ms: float


def rapidocr_detector() -> tuple[Callable[[np.ndarray], list[tuple[int, int, int, int]]], str] | None:
    """PP-OCRv4's text detector from the rapidocr-onnxruntime wheel (its ONNX weights ship in the wheel),
    one thread; None when the package is not installed."""
    try:
        from importlib.metadata import version

        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        return None
    engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)

    def detect(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        bgr = np.repeat(gray[:, :, None], 3, axis=2)
        found, _ = engine(bgr, use_det=True, use_cls=False, use_rec=False)
        boxes = []
        for quad in found or []:
            q = np.asarray(quad, float)
            boxes.append((int(q[:, 0].min()), int(q[:, 1].min()), int(q[:, 0].max()), int(q[:, 1].max())))
        return boxes

    return detect, f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')} (PP-OCRv4 det, Apache-2.0)"


def read_boxes(reader: PageReader, gray: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> str:
    """Another detector's boxes read by the project's recognizer, in XY-cut reading order."""
    if not boxes:
        return ""
    heights = [b[3] - b[1] for b in boxes]
    order = _xy_order(boxes, float(np.median(heights)) * 0.5)
    crops = []
    for k in order:
        x0, y0, x1, y1 = boxes[k]
        p = int(0.1 * (y1 - y0)) + 1
        crops.append(gray[max(0, y0 - p) : y1 + p, max(0, x0 - p) : x1 + p])
    preds = reader.recognizer.predict(crops)
    return "\n".join(p.text for p in preds if p.text.strip())


def synthetic_pages(n: int, seed: int) -> list[TruthPage]:
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.pages import PageFactory

    cfg = DataConfig(name="bench-pages", kind="pages", seed=seed, splits=["test"])
    factory = PageFactory(cfg)
    pages = []
    for i in range(n):
        s = factory.make(i, level=1 + i % 4)  # the four styles in turn
        pages.append(TruthPage(s.split, s.image, s.style, s.difficulty, s.text, [ln.box for ln in s.lines]))
    return pages


def timed(fn: Callable[[], tuple[str, list]]) -> Result:
    start = time.perf_counter()
    text, boxes = fn()
    return Result(text, boxes, (time.perf_counter() - start) * 1e3)


def table(scores: dict[str, PageScores], with_text: dict[str, bool]) -> str:
    rows = [
        "| method | pages | lines | line recall | line precision | page CER | ms/page |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, by_kind in scores.items():
        for kind, m in by_kind.to_dict(with_text[method]).items():
            cer = f"{m['page_cer']:.2%}" if m["page_cer"] is not None else "-"
            rows.append(
                f"| {method} ({kind}) | {m['pages']} | {m['lines']} | {m['line_recall']:.2%} | "
                f"{m['line_precision']:.2%} | {cer} | {m['ms_p50']:.0f} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pages", type=int, default=80, help="pages (the four styles in turn; with --data: per test split)"
    )
    parser.add_argument("--seed", type=int, default=2027, help="seed of the synthetic pages")
    parser.add_argument("--data", help="a page dataset (kind pages) instead of generated pages")
    parser.add_argument("--model", help="model folder or models:/ reference (default: the reference model)")
    parser.add_argument("--detectors", action="store_true", help="also line finding alone, and PP-OCRv4 det")
    parser.add_argument("--no-tesseract", action="store_true", help="only the project's reader")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    pages = (
        load_pages(args.data, max_pages=args.pages)[0]
        if args.data
        else synthetic_pages(args.pages, args.seed)
    )
    reader = PageReader.load(args.model)
    finder = LineFinder()

    def ours(page: TruthPage) -> Result:
        def run() -> tuple[str, list]:
            pred = reader.read([page.image])[0]
            return pred.text, [ln.box for ln in pred.lines]

        return timed(run)

    methods: dict[str, Callable[[TruthPage], Result]] = {"khmer-ocr PageReader": ours}
    with_text = {"khmer-ocr PageReader": True}
    engines = []
    version = ""
    if not args.no_tesseract:
        for psm in (6, 3):
            tess = TesseractAPI(psm=psm)
            engines.append(tess)
            version = tess.version
            methods[f"tesseract khm --psm {psm}"] = lambda p, t=tess: timed(lambda: t.page(p.image))
            with_text[f"tesseract khm --psm {psm}"] = True
    notes = []
    if args.detectors:
        methods["line finder alone"] = lambda p: timed(
            lambda: ("", [ln.box for ln in finder.find(p.image).lines])
        )
        with_text["line finder alone"] = False
        if not args.no_tesseract:
            layout = TesseractAPI(psm=3)
            engines.append(layout)
            methods["tesseract layout (--psm 3, no text)"] = lambda p: timed(
                lambda: ("", layout.layout(p.image))
            )
            with_text["tesseract layout (--psm 3, no text)"] = False
        found = rapidocr_detector()
        if found is None:
            notes.append("rapidocr-onnxruntime is not installed: PP-OCRv4 det not measured")
        else:
            detect, desc = found
            notes.append(f"PP-OCRv4 det: {desc}")

            def ppocr(p: TruthPage) -> Result:
                det = timed(lambda: ("", detect(p.image)))
                text = read_boxes(reader, p.image, det.boxes)
                return Result(text, det.boxes, det.ms)

            methods["PP-OCRv4 det + khmer-ocr recognizer (ms: det only)"] = ppocr
            with_text["PP-OCRv4 det + khmer-ocr recognizer (ms: det only)"] = True

    for page in pages[:2]:  # warm up every method
        for fn in methods.values():
            fn(page)
    scores: dict[str, PageScores] = {m: PageScores() for m in methods}
    started = time.perf_counter()
    for page in pages:  # page by page, each method in turn: a busy machine slows them alike
        for name, fn in methods.items():
            r = fn(page)
            scores[name].add(page.kind, page.level, page.boxes, page.text, r.boxes, r.text, r.ms)
    elapsed = time.perf_counter() - started
    for e in engines:
        e.close()
    source = args.data or f"synthetic pages, seed {args.seed} (test-split texts, the four styles in turn)"
    print(f"\npages: {len(pages)} from {source}; {sum(len(p.boxes) for p in pages)} lines")
    print(
        f"model: {args.model or 'the committed reference model'}; Tesseract {version or '-'} khm, one thread"
    )
    print(f"one thread each; ms/page = median; {elapsed:.0f} s timed; load {os.getloadavg()[0]:.2f}\n")
    print(table(scores, with_text))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
