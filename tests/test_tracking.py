"""MLflow tracking and the registry against a real `mlflow server` (SQLite backend, local artifacts, no
mocks): a tiny training run is logged, its pyfunc model loads and predicts, and a registered alias loads
through Recognizer.load("models:/...")."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.reader import Dataset
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.errors import ModelLoadError
from khmer_ocr.inference import Recognizer
from khmer_ocr.training.phases import PhaseRun, train_config

_OVERRIDES = [
    "model.size=tiny",
    "optim.batch_size=8",
    "optim.epochs=2",
    "max_steps_per_epoch=3",
    "data.max_val_lines=8",
]


@pytest.fixture(scope="module")
def tracked(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[PhaseRun, str]:
    """production_fast trained for two tiny epochs on a tiny dataset, tracked on the server."""
    root = tmp_path_factory.mktemp("tracked")
    cfg = DataConfig(name="t", num_samples=120, shard_size=60, seed=3, difficulty={1: 1.0})
    generate_dataset(cfg, root / "ds", workers=1, progress=False)
    run = train_config(
        "production_fast",
        str(root / "ds"),
        root / "run",
        overrides=_OVERRIDES,
        progress=False,
        tracking_uri=mlflow_server,
    )
    return run, str(root / "ds")


def _val_png(dataset: str) -> bytes:
    ds = Dataset(dataset)
    return ds.image_bytes(ds.split("val")[0])


def test_run_records_params_metrics_tags_and_artifacts(tracked, mlflow_env: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    run, dataset = tracked
    assert run.run_id
    assert (run.result.out_dir / "mlflow_run.json").is_file()  # a resumed training reuses the run
    client = MlflowClient()  # MLflow resolves runs:/.../model through the global URI, whatever the client's
    data = client.get_run(run.run_id)
    assert data.info.status == "FINISHED" and data.info.run_name == "production_fast"
    params = data.data.params
    assert params["model.size"] == "tiny" and params["optim.epochs"] == "2"
    assert params["data.dataset"] == dataset and params["data.train_splits"] == '["train"]'
    assert params["max_steps_per_epoch"] == "3"
    card = Dataset(dataset).card
    tags = data.data.tags
    assert tags["dataset_version"] == card["version"] and tags["charset_version"] == card["charset_version"]
    assert tags["config"] == "production_fast" and tags["phase"] == "production"
    assert tags["dataset_uri"] == dataset and tags["khmer_ocr_version"]
    assert tags["model_uri"].startswith("models:/")
    history = client.get_metric_history(run.run_id, "val_char_accuracy")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
    for key in ("loss", "lr", "samples_per_s", "val_cer", "val_sequence_accuracy", "val_cluster_cer"):
        assert len(client.get_metric_history(run.run_id, key)) == 2, key
    metrics = data.data.metrics
    assert metrics["best_val_char_accuracy"] == pytest.approx(run.val_char_accuracy)
    assert metrics["best_val_sequence_accuracy"] == pytest.approx(run.val_sequence_accuracy)

    names = {a.path for a in client.list_artifacts(run.run_id)}
    expected = {"config.yaml", "charset.json", "history.json", "error_analysis.json"}
    assert expected | {"learning_curves.png", "val_predictions.png"} <= names
    model_files = {a.path for a in client.list_artifacts(run.run_id, "model")}
    assert "model/MLmodel" in model_files and not any(p.endswith(".pkl") for p in model_files)
    local = Path(client.download_artifacts(run.run_id, "", str(tmp_path)))
    for png in ("learning_curves.png", "val_predictions.png"):
        with Image.open(local / png) as im:
            assert im.width > 300 and im.height > 100
    analysis = json.loads((local / "error_analysis.json").read_text(encoding="utf-8"))
    assert analysis["n_lines"] == min(8, len(Dataset(dataset).split("val"))) > 0
    assert json.loads((local / "history.json").read_text(encoding="utf-8")) == run.result.history


def test_logged_model_loads_as_pyfunc_without_pickle(tracked, mlflow_env: str) -> None:
    import mlflow
    import pandas as pd
    import yaml

    run, dataset = tracked
    png = _val_png(dataset)
    model = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    flavor = yaml.safe_load(
        Path(mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/model/MLmodel")).read_text()
    )
    assert flavor["flavors"]["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    out = model.predict(pd.DataFrame({"image": [base64.b64encode(png).decode("ascii")]}))
    expected = Recognizer.load(run.result.model_dir).predict([Image.open(io.BytesIO(png))])[0]
    assert list(out.columns) == ["text", "confidence"] and len(out) == 1
    assert out["text"][0] == expected.text
    assert out["confidence"][0] == pytest.approx(expected.confidence, abs=1e-5)


def test_registered_alias_loads_through_recognizer(tracked, mlflow_env: str) -> None:
    import mlflow
    from mlflow import MlflowClient

    run, dataset = tracked
    client = MlflowClient()
    model_uri = client.get_run(run.run_id).data.tags["model_uri"]
    version = mlflow.register_model(model_uri, "khmer-ocr-test")
    client.set_registered_model_alias("khmer-ocr-test", "candidate", version.version)

    image = Image.open(io.BytesIO(_val_png(dataset)))
    expected = Recognizer.load(run.result.model_dir).predict([image])[0].text
    assert Recognizer.load("models:/khmer-ocr-test@candidate").predict([image])[0].text == expected
    by_version = f"models:/khmer-ocr-test/{version.version}"
    assert Recognizer.load(by_version).predict([image])[0].text == expected  # cached by version

    with pytest.raises(ModelLoadError, match="models:/khmer-ocr-test@missing"):
        Recognizer.load("models:/khmer-ocr-test@missing")
    with pytest.raises(ModelLoadError, match="models:/no-such-model@candidate"):
        Recognizer.load("models:/no-such-model@candidate")


def test_training_starts_from_a_tracked_runs_model(
    tracked, mlflow_server: str, tmp_path: Path, monkeypatch
) -> None:
    """init_from runs:/<run id>/model, the registry given as tracking_uri (no MLFLOW_TRACKING_URI): the run's
    model is fetched by khmer_ocr.model_store and its weights start the new training."""
    import torch

    from khmer_ocr.inference import load_model
    from khmer_ocr.models import build_model
    from khmer_ocr.training.config import load_train_config
    from khmer_ocr.training.trainer import train
    from khmer_ocr.training.transfer import transfer_weights

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    run, dataset = tracked
    ref = f"runs:/{run.run_id}/model"
    trained, cfg, _ = load_model(run.result.model_dir)
    fresh = build_model(cfg)
    n = len(fresh.state_dict())
    assert f"transferred {n} of {n} tensors" in transfer_weights(fresh, ref, tracking_uri=mlflow_server)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in trained.state_dict().items())
    tiny = [*_OVERRIDES, "optim.epochs=1", "max_steps_per_epoch=1", f"data.dataset={dataset}"]
    cfg = load_train_config("production_fast", None, tiny)
    cfg.init_from = ref
    tuned = train(cfg, tmp_path / "tuned", progress=False, tracking_uri=mlflow_server)
    assert tuned.epochs_run == 1 and cfg.model.num_classes == 203  # the caller's config is left as it was
