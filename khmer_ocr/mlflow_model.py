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
import io
from pathlib import Path

import mlflow
import pandas as pd
from PIL import Image

_MAX_PATH = 4096


def decode_image(value) -> Image.Image | str:
    """A PIL image (from base64 text or bytes) or a path (from an existing file's name)."""
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str):
        if len(value) < _MAX_PATH and "\n" not in value and Path(value).is_file():
            return value
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            data = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not base64 image data or an existing file: {value[:60]!r}") from exc
    else:
        raise ValueError(f"unsupported image value of type {type(value).__name__}")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except OSError as exc:
        raise ValueError(f"not a readable image ({len(data)} bytes)") from exc
    return image


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
