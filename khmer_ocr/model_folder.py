"""What a model folder holds and where the committed one lies (kept free of heavy imports: the registry and
the Airflow triggerer use it)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS, MODEL_YAML, CHARSET = "model.safetensors", "model.yaml", "charset.json"
FILES = (WEIGHTS, MODEL_YAML, CHARSET)
LANGUAGE_MODEL = "lm.safetensors"  # optional: a character LM the recognizer decodes with (khmer-ocr lm)
REFERENCE_MODEL = Path(__file__).parent / "assets" / "reference-model"  # the committed reference model


def missing_files(names: set[str] | Path) -> list[str]:
    """The model-folder files absent from a folder (or from a set of file names)."""
    present = {p.name for p in names.iterdir() if p.is_file()} if isinstance(names, Path) else names
    if isinstance(names, Path) and not names.is_dir():
        present = set()
    return [n for n in FILES if n not in present]


def folder_files(folder: Path) -> list[Path]:
    """The model files of a folder: the required ones and the optional language model when present."""
    return [folder / n for n in FILES] + [p for p in [folder / LANGUAGE_MODEL] if p.is_file()]
