"""`khmer-ocr` data commands: generate, validate, fonts, demo."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from khmer_ocr.cli.options import add_overrides


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="render a synthetic Khmer text-line dataset (resumable, parallel)",
        description="Render a versioned dataset of Khmer text-line images: image shards, manifest.jsonl, "
        "card.json/card.md, charset.json and a samples.png grid. Re-running with the same config resumes "
        "or does nothing; a larger --num-samples extends the dataset (a smaller one is refused: it would "
        "shrink it). --out must be new, empty, or a dataset of this config.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="a data config YAML (see khmer_ocr/configs/data/)")
    src.add_argument(
        "--profile", choices=["demo", "reference", "full", "pages"], help="a packaged data profile"
    )
    p.add_argument("--out", required=True, help="dataset folder or s3://bucket/prefix")
    p.add_argument("--num-samples", type=int, help="number of lines (overrides the config)")
    p.add_argument("--seed", type=int, help="random seed (overrides the config)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: one per CPU core)")
    add_overrides(p, "text.latin_prob=0.1")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an existing dataset at --out first (only a khmer-ocr dataset folder holding nothing "
        "else; never the working directory, one of its parents or a repository)",
    )
    p.add_argument("--no-validate", action="store_true", help="skip the Great Expectations validation")


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="validate a dataset with Great Expectations (exit 1 if it fails)",
        description="Run the dataset expectation suite (labels, charset, normal form, sizes, blank images, "
        "files and checksums, font/difficulty balance, reserved fonts, unique ids, disjoint splits). Writes "
        "validation.json and validation.html; exits 0 when every check passes, 1 otherwise.",
    )
    p.add_argument("dataset", help="dataset folder or s3://bucket/prefix")
    p.add_argument("--report-dir", help="where to write the reports (default: the dataset folder)")


def add_commands(sub: argparse._SubParsersAction) -> dict:
    """Register the data subcommands; returns their handlers by name."""
    _add_generate(sub)
    _add_validate(sub)
    p = sub.add_parser(
        "fonts",
        help="list the installed Khmer fonts and their roles; --install adds the OFL font packs",
        description="List installed Khmer fonts: train, unseen (held-out test font) or "
        "reserved (evaluation only, never used to generate data). --install first downloads Google's "
        "Khmer font families (SIL OFL 1.1) from the npm registry's Fontsource packages, pinned by version "
        "and checksum, and converts them to TTF in the user font folder (KHMER_OCR_FONT_DIR to choose).",
    )
    p.add_argument("--config", type=Path, help="a data config YAML whose font settings to apply")
    p.add_argument("--install", action="store_true", help="install the pinned font packs first")
    p = sub.add_parser(
        "demo",
        help="generate and validate the demo dataset (what `make run` does)",
        description="Generate the demo dataset, validate it and print where to look.",
    )
    p.add_argument("--state", default=".khmer-ocr", help="state folder for datasets and logs")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: one per CPU core)")
    return {
        "generate": _generate,
        "validate": lambda a: _validate_and_report(a.dataset, a.report_dir),
        "fonts": _fonts,
        "demo": _demo,
    }


def _generate(args: argparse.Namespace) -> int:
    from khmer_ocr.config import load_config, profile_path
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.writer import generate_dataset

    path = args.config if args.config else profile_path("data", args.profile)
    overrides = list(args.overrides)
    if args.num_samples is not None:
        overrides.append(f"num_samples={args.num_samples}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(DataConfig, path, overrides)
    result = generate_dataset(cfg, args.out, workers=args.workers, overwrite=args.overwrite)
    print(
        f"dataset {result.version}: {result.num_samples} {'pages' if cfg.kind == 'pages' else 'lines'} "
        f"at {result.uri} "
        f"({result.generated} rendered in {result.seconds:.1f} s)"
    )
    print(f"sample grid: {_path(result.uri, 'samples.png')}")
    if args.no_validate:
        return 0
    return _validate_and_report(result.uri, None)


def _path(uri: str, name: str) -> str:
    from khmer_ocr import storage

    return storage.join(uri if storage.is_s3(uri) else os.path.abspath(uri), name)


def _validate_and_report(uri: str, report_dir: str | None) -> int:
    from khmer_ocr import storage
    from khmer_ocr.data.validation import validate_dataset

    if report_dir is None and not storage.is_s3(uri):
        report_dir = uri
    report = validate_dataset(uri, report_dir=report_dir)
    print(report.summary())
    if report_dir:
        print(f"report: {_path(str(report_dir), 'validation.html')}")
    return 0 if report.success else 1


def _fonts(args: argparse.Namespace) -> int:
    from khmer_ocr.config import load_config
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.fonts import discover_fonts

    if args.install:
        from khmer_ocr.data.fontpacks import FontPackError, font_pack_dir, install_font_packs

        try:
            installed = install_font_packs()
        except FontPackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{len(installed)} font files from the pinned packs in {font_pack_dir()}")
    cfg = load_config(DataConfig, args.config)
    fonts = discover_fonts(cfg.fonts)
    width = max((len(f.name) for f in fonts), default=4)
    print(f"{'name':<{width}}  {'role':<8}  family / style / path")
    for f in fonts:
        print(f"{f.name:<{width}}  {f.role:<8}  {f.family} / {f.style} / {f.path}")
    print(
        f"{sum(f.role == 'train' for f in fonts)} train, {sum(f.role == 'unseen' for f in fonts)} unseen, "
        f"{sum(f.role == 'reserved' for f in fonts)} reserved for evaluation"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from khmer_ocr.config import load_config, profile_path
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.writer import generate_dataset

    cfg = load_config(DataConfig, profile_path("data", "demo"))
    out = Path(args.state, "datasets", cfg.name)
    result = generate_dataset(cfg, out, workers=args.workers)
    print(
        f"dataset {result.version}: {result.num_samples} lines at {out.resolve()} "
        f"({result.generated} rendered in {result.seconds:.1f} s)"
    )
    rc = _validate_and_report(str(out), None)
    print(f"sample grid: {_path(str(out), 'samples.png')}")
    print(f"dataset card: {_path(str(out), 'card.md')}")
    if rc == 0:
        _read_a_few(str(out))
    return rc


def _read_a_few(uri: str, n: int = 5) -> None:
    """Show the committed reference model reading some unseen-font test lines of the dataset."""
    from khmer_ocr.data.reader import Dataset, ShardReader
    from khmer_ocr.inference import Recognizer

    ds = Dataset(uri)
    records = [r for r in ds.split("test_unseen_font") if r["difficulty"] <= 2][:n]
    reader = ShardReader(ds)
    preds = Recognizer.load().predict([reader.image(r) for r in records])
    print("the reference model reading unseen-font test lines (truth | read, confidence):")
    for rec, pred in zip(records, preds, strict=True):
        mark = "=" if pred.text == rec["text"] else "~"
        print(f"  {mark} {rec['text']} | {pred.text} ({pred.confidence:.2f})")
