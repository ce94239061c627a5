"""`khmer-ocr` model commands: train, tune (phase 3.1), evaluate, predict, export, average, lm."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from khmer_ocr.cli.options import add_overrides, add_tracking


def add_commands(sub: argparse._SubParsersAction) -> dict:
    """Register the model subcommands; returns their handlers by name."""
    p = sub.add_parser(
        "train",
        help="train one configuration (a phase config name or a YAML file)",
        description="Train a recognizer on a generated dataset, or with --stream on lines rendered on the "
        "fly (nothing written to disk; --data then only gives the validation/test lines, and without it a "
        "small validated set is generated into OUT/eval-data). CONFIG is a packaged name "
        "(phase3_1/conservative_small ... phase3_1/ctc_alignment_free, phase3_2, production_fast) or a YAML "
        "file. --time-budget lays the learning-rate schedule over a wall-clock budget and stops, validates "
        "and writes the model when it is spent. Re-running with the same --out resumes exactly from the "
        "last checkpoint (the same streamed lines too).",
    )
    p.add_argument("config", help="config name or YAML path")
    p.add_argument("--data", help="dataset folder or s3:// prefix (required without --stream)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, model/, history.json")
    p.add_argument("--stream", action="store_true", help="train on lines generated on the fly")
    p.add_argument(
        "--data-profile", help="data profile the streamed lines are generated with (default: reference)"
    )
    p.add_argument("--workers", type=int, help="generator processes for --stream (default 1)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES", help="train for this many minutes")
    p.add_argument("--profile", choices=["demo", "full"], help="scale the config: demo = minutes on a CPU")
    p.add_argument(
        "--init-from",
        help="transfer from a checkpoint (.pt) or a model folder, s3://..., models:/name@alias, runs:/ID/...",
    )
    add_overrides(p, "optim.lr=0.0005")
    add_tracking(p)
    p = sub.add_parser(
        "tune",
        help="phase 3.1: train the seven configurations and pick the best",
        description="Train every phase-3.1 configuration on the dataset and compare them; the best by "
        "validation character accuracy is written to OUT/best.json (OUT/best links to its run folder, so "
        "OUT/best/model is its model), the table to OUT/comparison.md.",
    )
    p.add_argument("--data", required=True, help="dataset folder or s3:// prefix")
    p.add_argument("--out", required=True, help="folder for the runs")
    p.add_argument(
        "--profile",
        choices=["demo", "full"],
        default="demo",
        help="demo: minutes on a CPU; full: the GPU schedule",
    )
    p.add_argument("--only", nargs="+", help="a subset of the configurations (default: all seven)")
    add_overrides(p, "optim.epochs=2")
    add_tracking(p)
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model on a dataset's test splits (lines against the milestone gates, or pages)",
        description="A dataset of text lines: character accuracy (1 - CER over NFC code points), sequence "
        "accuracy, cluster CER, for each split and each difficulty level (1..5) within it, per-class errors "
        "and batch-1 latency on one thread; gates (on the whole primary split) from khmer_ocr/configs/gates; "
        "exits 1 if a gate fails. A dataset of pages (kind pages, from its card): per page kind, "
        "line-finding recall and precision (box IoU >= 0.5), page CER (lines joined by newlines in reading "
        "order) and ms per page on one thread; no gates. --page-data reads a page dataset beside a line "
        "dataset, in one report. Prints the report and writes it as JSON.",
    )
    p.add_argument("--model", help="model folder or models:/name@alias (default: the reference model)")
    p.add_argument("--data", required=True, help="dataset folder or s3:// prefix: lines or pages")
    p.add_argument("--page-data", help="also a page dataset, reported beside the lines (not gated)")
    p.add_argument("--splits", nargs="+", default=["test", "test_unseen_font"], help="the splits to read")
    p.add_argument("--gates", default="milestones", help="gate set name or YAML path (line datasets)")
    p.add_argument("--max-lines", type=int, help="at most this many lines (or pages) per split")
    p.add_argument("--report", default="evaluation.json", help="where to write the JSON report")
    add_no_lm(p)
    p = sub.add_parser(
        "predict",
        help="recognize text-line images, or whole pages with --page",
        description='Writes one JSON object per image: {"image", "text", "confidence"}; with --page, each '
        "image is a page (a document, scan, photo or screenshot) whose lines are found and read: "
        '{"image", "text", "lines": [{"box": [x0, y0, x1, y1], "text", "confidence"}, ...]}, text being '
        "the lines joined by newlines in reading order, boxes in the image's pixels (x1, y1 exclusive). "
        'An unreadable image gets {"image", "error"} and the rest still run. Exit status 1 when no image '
        "could be read, 2 when none was given.",
    )
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--page", action="store_true", help="each image is a whole page: find its lines first")
    p.add_argument("--model", help="model folder or models:/name@alias (default: the reference model)")
    p.add_argument("--manifest", help='JSON lines with an "image" field, relative to the manifest\'s folder')
    p.add_argument("--output", help="write JSON lines here instead of standard output")
    add_no_lm(p)
    p = sub.add_parser(
        "export",
        help="export a CTC model to TorchScript, checked against the eager model",
        description="Traces the model and checks it against eager PyTorch at several widths, then writes it.",
    )
    p.add_argument("--model", help="model folder (default: the reference model)")
    p.add_argument("--out", required=True, help="TorchScript file to write")
    p = sub.add_parser(
        "average",
        help="average the weights of models fine-tuned from one start (a model soup)",
        description="Writes a model folder whose weights are the mean of the given models' (same "
        "architecture and charset, e.g. two continuation runs from one model on different streams). "
        "Evaluate it against each model on a validation split before using it.",
    )
    p.add_argument(
        "models",
        nargs="+",
        help="model folders, s3://... or models:/name@alias (MLflow: $MLFLOW_TRACKING_URI)",
    )
    p.add_argument("--out", required=True, help="model folder to write")
    p = sub.add_parser(
        "lm",
        help="give a model folder a character language model for beam-search decoding",
        description="Counts a character n-gram language model (interpolated Kneser-Ney) on text lines "
        "drawn from the generator's text sources (the data profile's text config, a seed of its own: the "
        "texts training renders, no image; --set changes the profile, e.g. to leave a source out) and "
        "writes it into the model folder as lm.safetensors, with "
        "the beam-search settings in model.yaml's decoding: section. Recognizer.load, predict, evaluate "
        "and serving then decode CTC models by beam search with it (Recognizer.load(..., use_lm=False) or "
        "--no-lm: best path).",
    )
    p.add_argument("--model", required=True, help="model folder to add the language model to")
    p.add_argument("--profile", default="reference", help="data profile whose text config is sampled")
    p.add_argument("--lines", type=int, default=200_000, help="text lines counted")
    p.add_argument("--order", type=int, default=5, help="n-gram order in code points")
    p.add_argument("--seed", type=int, default=7919, help="seed of the sampled texts")
    add_overrides(p, '"text.sources={words: 0.5, numbers: 0.5}"')
    from khmer_ocr.models.ctc_beam import BeamConfig

    beam = BeamConfig()
    p.add_argument("--lm-weight", type=float, default=beam.lm_weight, help="weight of the LM log-probability")
    p.add_argument("--length-bonus", type=float, default=beam.length_bonus, help="score added per character")
    p.add_argument("--beam-width", type=int, default=beam.beam_width, help="prefixes kept per frame")
    return {
        "train": _train,
        "tune": _tune,
        "evaluate": _evaluate,
        "predict": _predict,
        "export": _export,
        "average": _average,
        "lm": _lm,
    }


def _lm(args: argparse.Namespace) -> int:
    from khmer_ocr.config import load_config, profile_path
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.model_folder import LANGUAGE_MODEL
    from khmer_ocr.models.ctc_beam import BeamConfig
    from khmer_ocr.training.language_model import build_language_model

    cfg = load_config(DataConfig, profile_path("data", args.profile), args.overrides)
    decoding = BeamConfig(
        lm_weight=args.lm_weight, length_bonus=args.length_bonus, beam_width=args.beam_width
    )
    lm = build_language_model(args.model, cfg, args.lines, args.order, args.seed, decoding)
    print(f"wrote {Path(args.model) / LANGUAGE_MODEL}: {lm.n_grams:,} n-grams of order <= {lm.order}")
    return 0


def add_no_lm(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-lm",
        action="store_true",
        help="decode by best path even when the model folder has a language model (lm.safetensors)",
    )


def _average(args: argparse.Namespace) -> int:
    from khmer_ocr.training.transfer import average_models

    out = average_models(args.models, args.out)
    print(f"wrote {out}: the mean of {len(args.models)} models' weights")
    return 0


def _export(args: argparse.Namespace) -> int:
    from khmer_ocr.export import export_torchscript
    from khmer_ocr.model_folder import REFERENCE_MODEL

    result = export_torchscript(args.model or REFERENCE_MODEL, args.out)
    print(f"exported {result.path} (max |logit diff| vs eager {result.max_abs_diff:.1e}, same decoding)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from khmer_ocr.mlflow_client import require_server
    from khmer_ocr.training.phases import train_config

    if not args.data and not args.stream:
        print("error: --data is required unless --stream is given", file=sys.stderr)
        return 2
    extra = []
    if args.stream:
        extra.append("data.stream.enabled=true")
    if args.data_profile:
        extra.append(f"data.stream.profile={args.data_profile}")
    if args.workers is not None:
        extra.append(f"data.stream.workers={args.workers}")
    if args.time_budget is not None:
        extra.append(f"time_budget_minutes={args.time_budget}")
    require_server(args.tracking_uri)  # a server that is down: one line now, not minutes of silent retries
    run = train_config(
        args.config,
        args.data,
        args.out,
        args.profile,
        [*extra, *args.overrides],
        args.init_from,
        tracking_uri=args.tracking_uri,
    )
    print(
        f"{run.name}: best epoch {run.result.best_epoch}, val char accuracy {run.val_char_accuracy:.2%}, "
        f"val sequence accuracy {run.val_sequence_accuracy:.2%}; model at {run.result.model_dir}"
    )
    if run.run_id:
        print(f"MLflow run: {run.run_id} (model: runs:/{run.run_id}/model)")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from khmer_ocr.mlflow_client import require_server
    from khmer_ocr.names import PHASE3_1
    from khmer_ocr.training.phases import comparison_table, run_phase3_1

    require_server(args.tracking_uri)
    configs = tuple(args.only or PHASE3_1)
    best, runs = run_phase3_1(
        args.data, args.out, args.profile, configs, args.overrides, tracking_uri=args.tracking_uri
    )
    print(comparison_table(runs))
    link = Path(args.out) / "best"
    if link.is_symlink() or not link.exists():
        link.unlink(missing_ok=True)
        link.symlink_to(Path(best.result.model_dir).parent.name)  # relative: the folder can move
    print(f"best: {best.name} ({link}/model)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from khmer_ocr.data.reader import Dataset
    from khmer_ocr.evaluation.evaluate import evaluate
    from khmer_ocr.evaluation.pages import evaluate_pages

    splits = tuple(args.splits)
    if Dataset(args.data).kind == "pages":
        from khmer_ocr.inference import Recognizer

        recognizer = Recognizer.load(args.model, use_lm=not args.no_lm)
        pages = evaluate_pages(args.model, args.data, splits, args.max_lines, recognizer=recognizer)
        print(pages.summary())
        print(f"report: {pages.write(args.report)}")
        return 0
    report = evaluate(
        args.model, args.data, splits, args.gates, args.max_lines, page_data=args.page_data,
        max_pages=args.max_lines, use_lm=not args.no_lm,
    )  # fmt: skip
    print(report.summary())
    print(f"report: {report.write(args.report)}")
    return 0 if report.passed else 1


def _predict(args: argparse.Namespace) -> int:
    from khmer_ocr.inference import Recognizer

    items: list[tuple[str, Path]] = [(im, Path(im)) for im in args.images]
    if args.manifest:
        root = Path(args.manifest).parent
        for line in Path(args.manifest).read_text(encoding="utf-8").splitlines():
            if line.strip():
                name = json.loads(line)["image"]
                items.append((name, root / name))
    if not items:
        print("khmer-ocr predict: error: no images: give image files or --manifest", file=sys.stderr)
        return 2
    recognizer = Recognizer.load(args.model, use_lm=not args.no_lm)
    rows: list[dict] = []
    readable = []
    for name, path in items:
        rows.append({"image": name})
        try:
            readable.append((len(rows) - 1, recognizer.read_image(path)))
        except (OSError, ValueError) as exc:
            rows[-1]["error"] = str(exc)
    if args.page:
        from khmer_ocr.pages import PageReader

        pages = PageReader(recognizer).read([im for _, im in readable]) if readable else []
        for (k, _), page in zip(readable, pages, strict=True):
            rows[k].update(page.to_dict())
    else:
        preds = recognizer.predict([im for _, im in readable]) if readable else []
        for (k, _), pred in zip(readable, preds, strict=True):
            rows[k].update(text=pred.text, confidence=round(pred.confidence, 4))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0 if readable else 1  # every image failed: say so in the exit status too
