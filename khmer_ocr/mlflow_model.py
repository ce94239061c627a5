"""The MLflow pyfunc model, as "models from code": MLflow runs this file to build the model, so nothing is
pickled. khmer_ocr.tracking.MlflowTracker logs it with the trained model folder as the `model_dir` artifact.

Input: a DataFrame with an "image" column; each value is a base64-encoded image file (PNG, JPEG, ...),
optionally as a data URL, raw image bytes, or a path to an image file.
Output: a DataFrame with "text" and "confidence" (0..1) per row, from khmer_ocr.inference.Recognizer.

Only MLflow imports this file (importing it registers the model with mlflow.models.set_model).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from khmer_ocr.torchserve.requests import decode_image as decode_within_limits

_MAX_PATH = 4096


def decode_image(value) -> np.ndarray:
    """A grayscale image from base64 text (or a data URL), raw bytes, or an existing file's path, decoded
    within the REST endpoint's limits (bytes, pixels, sides, decompression bombs:
    khmer_ocr.torchserve.requests); ValueError for anything else."""
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str):
        if len(value) < _MAX_PATH and "\n" not in value and Path(value).is_file():
            data = Path(value).read_bytes()
        else:
            text = value.split(",", 1)[1] if value.startswith("data:") else value
            try:
                data = base64.b64decode(text, validate=False)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"not base64 image data or an existing file: {value[:60]!r}") from exc
    else:
        raise ValueError(f"unsupported image value of type {type(value).__name__}")
    return decode_within_limits(data, "the image")


class KhmerOcrModel(mlflow.pyfunc.PythonModel):
    """Khmer text-line recognition behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        from khmer_ocr.inference import Recognizer

        self.recognizer = Recognizer.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns:
            raise ValueError(f'the input needs an "image" column; got {list(frame.columns)}')
        images = [decode_image(v) for v in frame["image"]]
        preds = self.recognizer.predict(images) if images else []
        return pd.DataFrame(
            {"text": [p.text for p in preds], "confidence": [float(p.confidence) for p in preds]}
        )


mlflow.models.set_model(KhmerOcrModel())
