"""TorchServe model archives (.mar) of khmer-ocr models, built with torch-model-archiver.

An archive holds the handler (serving/handler.py), serving/model-config.yaml and the model folder's files
(model.safetensors, model.yaml, charset.json): no pickled weights.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from khmer_ocr import model_store, storage
from khmer_ocr.errors import ServingError
from khmer_ocr.model_folder import WEIGHTS, folder_files, missing_files
from khmer_ocr.names import MODEL_NAME


def serving_dir() -> Path:
    """The folder with handler.py, model-config.yaml and config.properties ($KHMER_OCR_SERVING_DIR, else
    serving/ of this checkout)."""
    path = Path(os.environ.get("KHMER_OCR_SERVING_DIR") or Path(__file__).resolve().parents[2] / "serving")
    if not (path / "handler.py").is_file():
        raise ServingError(f"no TorchServe handler at {path}/handler.py: set KHMER_OCR_SERVING_DIR")
    return path


@dataclass
class ResolvedModel:
    model_dir: Path
    version: str  # the registry version, else a short hash of the weights
    ref: str


def resolve_model(ref: str | Path | None, tracking_uri: str | None = None) -> ResolvedModel:
    """A model folder and a version label for a model reference (any that khmer_ocr.model_store resolves:
    a folder, s3://..., models:/..., runs:/..., None for the committed reference model)."""
    ref_s = str(ref) if ref is not None else ""
    model_dir = model_store.model_dir(ref, tracking_uri)
    if missing := missing_files(model_dir):
        raise ServingError(f"{ref_s or model_dir} is not a model folder: missing {', '.join(missing)}")
    version = model_store.registry_version(ref_s, tracking_uri) if ref_s else None
    if version is None:
        version = "0." + storage.sha256_file(model_dir / WEIGHTS)[:10]
    return ResolvedModel(model_dir, version, ref_s or "reference")


def archive_name(model_name: str, version: str) -> str:
    return f"{model_name}-v{re.sub(r'[^A-Za-z0-9_.-]', '_', version)}.mar"


def _archiver() -> str:
    beside = Path(sys.executable).parent / "torch-model-archiver"
    found = str(beside) if beside.is_file() else shutil.which("torch-model-archiver")
    if not found:
        raise ServingError("torch-model-archiver is not installed: pip install 'khmer-ocr[serve]'")
    return found


def build_archive(
    model: str | Path | ResolvedModel | None,
    out_dir: str | Path,
    *,
    model_name: str = MODEL_NAME,
    version: str | None = None,
    tracking_uri: str | None = None,
) -> Path:
    """Write <out_dir>/<model_name>-v<version>.mar for a model reference; returns its path."""
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model, tracking_uri)
    version = version or resolved.version
    serving = serving_dir()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / archive_name(model_name, version)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".mar-") as tmp:
        extra = ",".join(str(p) for p in folder_files(resolved.model_dir))
        cmd = [
            _archiver(),
            "--model-name", model_name,
            "--version", version,
            "--handler", str(serving / "handler.py"),
            "--extra-files", extra,
            "--config-file", str(serving / "model-config.yaml"),
            "--export-path", tmp,
            "--force",
        ]  # fmt: skip
        # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps concurrent builds apart.
        staging = Path(tmp) / "staging"
        staging.mkdir()
        env = {**os.environ, "TMPDIR": str(staging)}
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        built = Path(tmp) / f"{model_name}.mar"
        if done.returncode != 0 or not built.is_file():
            tail = done.stderr.strip()[-2000:]
            raise ServingError(f"torch-model-archiver failed ({done.returncode}): {tail}")
        os.replace(built, target)
    return target
