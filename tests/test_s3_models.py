"""Models and MLflow artifacts on a real S3-compatible server (SeaweedFS): a model folder loaded from s3://,
and an MLflow server whose artifact store is S3, used for evaluation on an s3:// dataset, registration and
loading by alias."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from khmer_ocr import registry, storage
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.errors import ModelLoadError
from khmer_ocr.inference import Recognizer
from khmer_ocr.model_folder import REFERENCE_MODEL
from khmer_ocr.torchserve.deploy import SMOKE_IMAGE
from khmer_ocr.tracking import log_model_folder
from tests.conftest import S3Server, running_mlflow


def _smoke() -> Image.Image:
    return Image.open(io.BytesIO(SMOKE_IMAGE.read_bytes()))


def test_model_folder_on_s3(s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    uri = storage.join(s3_env, "models", "reference")
    for f in REFERENCE_MODEL.iterdir():
        storage.put_file(f, storage.join(uri, f.name))
    expected = Recognizer.load().predict([_smoke()])[0]
    from_s3 = Recognizer.load(uri)
    assert from_s3.lm is not None and from_s3.lm == Recognizer.load().lm  # the folder's LM too
    assert from_s3.predict([_smoke()])[0] == expected
    # the same resolver serves archives and transfer learning (khmer_ocr.model_store)
    from khmer_ocr.inference import load_model
    from khmer_ocr.models import build_model
    from khmer_ocr.storage import sha256_file
    from khmer_ocr.torchserve.archive import resolve_model
    from khmer_ocr.training.transfer import transfer_weights

    assert resolve_model(uri).version == "0." + sha256_file(REFERENCE_MODEL / "model.safetensors")[:10]
    fresh = build_model(load_model(REFERENCE_MODEL)[1])
    n = len(fresh.state_dict())
    assert f"transferred {n} of {n} tensors" in transfer_weights(fresh, uri)
    storage.s3_client().delete_object(Bucket=s3_env[5:], Key="models/reference/charset.json")
    with pytest.raises(ModelLoadError, match=r"missing charset\.json"):
        Recognizer.load(uri)
    with pytest.raises(ModelLoadError, match=r"missing model\.safetensors"):
        Recognizer.load(storage.join(s3_env, "nothing-here"))


def test_mlflow_with_s3_artifacts(
    s3_server: S3Server, s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    data = storage.join(s3_env, "datasets", "tiny")
    generate_dataset(
        DataConfig(name="s3", num_samples=120, shard_size=60, seed=8, difficulty={1: 1.0}),
        data,
        progress=False,
    )
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  - {name: reads, metric: char_accuracy, op: '>=', threshold: 0.5}\n")
    with running_mlflow(tmp_path, storage.join(s3_env, "mlflow"), s3) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
        run_id = log_model_folder(REFERENCE_MODEL, run_name="s3-artifacts")
        version = registry.register(run_id, data=data, gates=str(gates), name="khmer-ocr-s3")
        assert version.gates_passed and version.tags["eval_dataset"] == data
        served = Recognizer.load("models:/khmer-ocr-s3@candidate").predict([_smoke()])[0]
    assert served == Recognizer.load().predict([_smoke()])[0]
    stored = storage.list_files(storage.join(s3_env, "mlflow"))
    assert any(name.endswith("model.safetensors") for name in stored)
    assert any(name.endswith("evaluation.json") for name in stored)
