"""Running a training bundle on the target machine (run.sh calls `python -m khmer_ocr.training.bundle_run`):
check the device and Pillow's RAQM layout, train on streamed lines for a time budget, evaluate on the
generated test splits, keep each model file within 16 MB, and write OUT/report.json. Built by
khmer_ocr.training.bundle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from khmer_ocr.training.bundle import BundleError

MAX_MODEL_FILE_BYTES = 16 * 10**6
DEFAULT_CONFIG = "production_fast"
EVAL_SPLITS = ("test", "test_unseen_font")


def device_info() -> dict:
    """The device training will use: CUDA (with bf16 autocast where supported) or the CPU."""
    import torch

    info: dict = {"torch": torch.__version__, "cpu_cores": _cores()}
    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        info.update(
            type="cuda",
            name=torch.cuda.get_device_name(0),
            count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            autocast="bfloat16" if bf16 else "float16",
        )
    else:
        info.update(type="cpu", name=_cpu_name(), autocast=None)
    return info


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def check_raqm() -> None:
    from PIL import features

    if not features.check("raqm"):
        import PIL

        raise BundleError(
            f"Pillow {PIL.__version__} at {Path(PIL.__file__).parent} cannot lay out Khmer (no RAQM), even "
            "with the bundled FriBiDi on LD_LIBRARY_PATH: this Pillow was built without RAQM. Install "
            "Pillow's wheel from PyPI (pip install pillow) on this machine, or libraqm, and run again."
        )


def _model_files(model_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(model_dir.iterdir()) if p.is_file()}


def _fit_model_files(model_dir: Path) -> tuple[dict[str, int], bool]:
    """Keep each model file within 16 MB: weights over it are stored as fp16 (loaded back as fp32)."""
    files = _model_files(model_dir)
    if max(files.values()) <= MAX_MODEL_FILE_BYTES:
        return files, False
    from khmer_ocr.inference import load_model, save_model

    model, cfg, charset = load_model(model_dir)
    save_model(model, cfg, charset, model_dir, half=True)
    files = _model_files(model_dir)
    too_big = {k: v for k, v in files.items() if v > MAX_MODEL_FILE_BYTES}
    if too_big:
        print(f"warning: model files over 16 MB even with fp16 weights: {too_big}", file=sys.stderr)
    return files, True


def probe_limits(run_dir: Path, workers: int, threads: int, seconds: float = 4.0) -> dict:
    """What bounds training speed: optimizer steps per second on batches already in memory (the model
    alone, on the training device, at the run's batch size) against lines per second the generator makes
    (one process, measured, times the workers)."""
    import torch

    from khmer_ocr.config import load_config
    from khmer_ocr.data.generate import SampleFactory
    from khmer_ocr.data.reader import Dataset
    from khmer_ocr.models import build_model
    from khmer_ocr.preprocess import prepare_line
    from khmer_ocr.training.config import TrainConfig
    from khmer_ocr.training.data import LineSamples, collate
    from khmer_ocr.training.losses import RecognitionLoss
    from khmer_ocr.training.stream import stream_data_config

    dataset = Dataset(str(run_dir / "eval-data"))
    charset = dataset.charset
    cfg = load_config(TrainConfig, run_dir / "config.yaml", [f"model.num_classes={len(charset)}"])
    h, w, n = cfg.model.input_height, cfg.data.max_width, cfg.model.max_length
    lines = LineSamples(dataset, [cfg.data.val_split], charset, h, w, n)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = collate([lines[i % len(lines)] for i in range(cfg.optim.batch_size)]).to(device)
    model = build_model(cfg.model).to(device).train()
    loss_fn = RecognitionLoss(cfg.loss, charset)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        steps, t0 = -3, 0.0  # three warm-up steps
        while steps < 3 or time.perf_counter() - t0 < seconds:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss, _ = loss_fn(model(batch.images, batch.widths, batch.targets[:, :-1]), batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize()
            steps += 1
            if steps == 0:
                t0 = time.perf_counter()
        model_rate = steps * cfg.optim.batch_size / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous_threads)
    factory = SampleFactory(stream_data_config(cfg))
    made, t0 = 0, time.perf_counter()
    while made < 5 or time.perf_counter() - t0 < seconds:
        prepare_line(factory.make(10**9 + made).image, h, w)
        made += 1
    per_worker = made / (time.perf_counter() - t0)
    data_rate = per_worker * max(1, workers)
    return {
        "model_only_samples_per_s": round(model_rate, 1),
        "generator_lines_per_s_per_worker": round(per_worker, 1),
        "generator_lines_per_s": round(data_rate, 1),
        "bound_by": "data" if data_rate < model_rate else "model",
    }


def run_bundle(
    minutes: float,
    out: str | Path,
    config: str = DEFAULT_CONFIG,
    workers: int | None = None,
    data_profile: str | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """Train CONFIG on streamed lines for `minutes`, evaluate on the generated test splits, write
    OUT/model/ and OUT/report.json; returns the report."""
    if minutes <= 0:
        raise BundleError("--minutes must be positive")
    out = Path(out)
    started = time.time()
    check_raqm()
    device = device_info()
    cores = device["cpu_cores"]
    if workers is None:  # generator processes; the rest of the cores run the training process
        workers = max(1, cores - 2) if device["type"] == "cuda" else max(1, cores // 2)
    threads = max(1, cores - workers)
    print(f"device: {json.dumps(device)}; {workers} generator worker(s), {threads} training thread(s)")
    cmd = [sys.executable, "-m", "khmer_ocr", "train", config, "--stream", "--time-budget", str(minutes)]
    cmd += ["--out", str(out), "--workers", str(workers)]
    cmd += ["--data-profile", data_profile] if data_profile else []
    for item in overrides or []:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("MLFLOW_TRACKING_URI", None)  # nothing to track to on an offline machine
    t0 = time.time()
    rc = subprocess.run(cmd, env=env, check=False).returncode
    train_wall = time.time() - t0
    if rc != 0:
        raise BundleError(f"training failed (exit {rc}): {' '.join(cmd)}")
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    last = history[-1]
    import yaml

    metric = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))["early_stopping_metric"]
    best = max(history, key=lambda r: r[f"val_{metric}"])  # the epoch whose weights are in OUT/model
    files, fp16 = _fit_model_files(out / "model")

    from khmer_ocr.evaluation.evaluate import evaluate

    t0 = time.time()
    evaluation = evaluate(out / "model", str(out / "eval-data"), EVAL_SPLITS, "milestones")
    evaluation.write(out / "evaluation.json")
    print(evaluation.summary(), flush=True)
    eval_s = time.time() - t0
    limits = probe_limits(out, workers, threads, seconds=min(4.0, max(0.5, minutes)))
    train_s = last["elapsed_min"] * 60
    report = {
        "config": config,
        "data_profile": data_profile or "reference",
        "overrides": list(overrides or []),
        "device": device,
        "python": sys.version.split()[0],
        "workers": workers,
        "training_threads": threads,
        "minutes": minutes,
        "train_minutes": round(train_s / 60, 3),
        "train_wall_minutes": round(train_wall / 60, 3),
        "eval_minutes": round(eval_s / 60, 3),
        "wall_minutes": round((time.time() - started) / 60, 3),
        "samples_seen": last["samples"],
        "samples_per_s": round(last["samples"] / max(train_s, 1e-9), 1),
        "limits": limits,
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "val": {k.removeprefix("val_"): v for k, v in best.items() if k.startswith("val_")},
        "test": {
            split: {
                "lines": m["n_lines"],
                "cer": m["cer"],
                "char_accuracy": m["char_accuracy"],
                "sequence_accuracy": m["sequence_accuracy"],
                "levels": {lv: lm["cer"] for lv, lm in evaluation.levels.get(split, {}).items()},
            }
            for split, m in evaluation.splits.items()
        },
        "latency_ms_p50": evaluation.latency.get("ms_p50"),
        "gates_passed": evaluation.passed,
        "model": {"dir": "model", "files": files, "fp16_weights": fp16},
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run.sh",
        description="Train the Khmer OCR recognizer on lines rendered on the fly for a time budget, "
        "evaluate it on a generated test set, and write OUT/model/ and OUT/report.json.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train, evaluate, report")
    p.add_argument("--minutes", type=float, required=True, help="training budget in minutes")
    p.add_argument("--out", required=True, help="run folder: model/, report.json, checkpoints/ (resumable)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"config name or YAML (default {DEFAULT_CONFIG})")
    p.add_argument("--workers", type=int, help="generator processes (default: cores - 2 on CUDA, cores / 2)")
    p.add_argument("--data-profile", help="data profile of the streamed lines (default: reference)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("check", help="print the device and check Pillow's RAQM layout")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            from khmer_ocr.data.config import FontConfig
            from khmer_ocr.data.fonts import select_fonts

            check_raqm()
            train, unseen = select_fonts(FontConfig())
            fonts = {"train": len(train), "unseen": [f.name for f in unseen]}
            print(json.dumps({"device": device_info(), "raqm": True, "fonts": fonts}))
            return 0
        report = run_bundle(
            args.minutes, args.out, args.config, args.workers, args.data_profile, args.overrides
        )
    except BundleError as exc:
        print(f"run.sh: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{report['samples_seen']} samples in {report['train_minutes']:.1f} min "
        f"({report['samples_per_s']} /s) on {report['device']['type']}; test CER "
        + ", ".join(f"{s} {m['cer']:.2%}" for s, m in report["test"].items())
        + f"; model: {Path(args.out) / 'model'}, report: {Path(args.out) / 'report.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
