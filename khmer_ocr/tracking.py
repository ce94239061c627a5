"""MLflow experiment tracking for training runs: `train(cfg, out, tracker=MlflowTracker(...))`.

A run records:
  params    the flattened TrainConfig (dotted keys, values as text, cut to MLflow's length limits);
  tags      phase, config, dataset_uri, dataset_version, charset_version, khmer_ocr_version, and at the end
            best_epoch, stopped_early, model_uri (the logged model, "models:/m-...");
  metrics   per epoch (step = epoch): every numeric value of the trainer's history row (loss, lr,
            samples_per_s, val_cer, val_char_accuracy, val_sequence_accuracy, val_cluster_cer, ...); and
            best_val_char_accuracy, best_val_sequence_accuracy, best_epoch (from the best epoch's row);
  artifacts config.yaml, charset.json, learning_curves.png, val_predictions.png, error_analysis.json,
            history.json, and the model "model" (a pyfunc logged from code, see khmer_ocr/mlflow_model.py:
            nothing is pickled; the model folder travels as its `model_dir` artifact).

The tracking URI is the argument, else resolved as khmer_ocr.mlflow_client.resolve_tracking_uri says
(MLFLOW_TRACKING_URI, the local platform's MLflow, ./mlflow.db); the pictures come from khmer_ocr.plots.
"""

from __future__ import annotations

import base64
import json
import logging
import numbers
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from khmer_ocr.mlflow_client import client, fluent_tracking_uri, resolve_tracking_uri
from khmer_ocr.model_store import SHA256_TAG
from khmer_ocr.plots import learning_curves, line_png, predictions_grid
from khmer_ocr.storage import sha256_file
from khmer_ocr.version import __version__

if TYPE_CHECKING:
    from khmer_ocr.data.reader import Dataset
    from khmer_ocr.training.config import TrainConfig
    from khmer_ocr.training.trainer import TrainResult

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "khmer-ocr"
LOGGED_MODEL = "model"  # the logged model's name in a run (runs:/<run_id>/model)
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
# MLflow's limits (mlflow.utils.validation): key length, param and tag value length, items per log_batch.
MAX_KEY, MAX_PARAM, MAX_TAG, MAX_BATCH = 250, 6000, 8000, 100


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """{"optim": {"lr": 0.001}} -> {"optim.lr": "0.001"}; lists as JSON; values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value)
            out[name[:MAX_KEY]] = text[:MAX_PARAM]
    return out


class MlflowTracker:
    """The trainer's Tracker for MLflow (see the module docstring for what is logged).

    run_file: a JSON file (e.g. <run folder>/mlflow_run.json) remembering the run id, so that a resumed
    training continues the same MLflow run; without it every start() creates a new run.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        run_file: str | Path | None = None,
    ) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment, self.run_name = experiment, run_name
        self.run_file = Path(run_file) if run_file else None
        self.client = client(self.tracking_uri)
        self.run_id: str | None = None
        self.model_uri: str | None = None

    # ------------------------------------------------------------------------------------------ protocol
    def start(self, cfg: TrainConfig, dataset: Dataset) -> None:
        from khmer_ocr.config import save_config, to_dict

        resumed = self._open_run(cfg)
        card = dataset.card
        charset = dataset.charset
        tags = {
            "phase": cfg.phase,
            "config": cfg.name,
            "dataset_uri": dataset.uri,
            "dataset_version": card.get("version", ""),
            "charset_version": card.get("charset_version") or charset.version,
            "khmer_ocr_version": __version__,
        }
        self._log_batch(tags=tags)
        self._log_params(flatten(to_dict(cfg)), resumed)
        with tempfile.TemporaryDirectory() as tmp:
            save_config(cfg, Path(tmp) / "config.yaml")
            charset.save(Path(tmp) / "charset.json")
            self.client.log_artifacts(self._run, tmp)

    def log_epoch(self, row: dict) -> None:
        from mlflow.entities import Metric

        step, now = int(row.get("epoch", 0)), int(time.time() * 1000)
        metrics = [
            Metric(k[:MAX_KEY], float(v), now, step)
            for k, v in row.items()
            if k != "epoch" and isinstance(v, numbers.Real)
        ]
        self._log_batch(metrics=metrics)

    def finish(self, result: TrainResult, val_refs: list[str], val_hyps: list[str]) -> None:
        from mlflow.entities import Metric

        from khmer_ocr.evaluation.metrics import error_analysis

        best = next((r for r in result.history if r.get("epoch") == result.best_epoch), None)
        best = best or (result.history[-1] if result.history else {})
        now = int(time.time() * 1000)
        self._log_batch(
            metrics=[
                Metric(f"best_{k}", float(best[k]), now, 0)
                for k in ("val_char_accuracy", "val_sequence_accuracy")
                if isinstance(best.get(k), numbers.Real)
            ]
            + [Metric("best_epoch", float(result.best_epoch), now, 0)],
            tags={"best_epoch": str(result.best_epoch), "stopped_early": str(result.stopped_early).lower()},
        )
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "history.json").write_text(json.dumps(result.history, indent=1), encoding="utf-8")
            if result.history:
                learning_curves(result.history).savefig(d / "learning_curves.png", dpi=100)
            if val_refs:
                analysis = error_analysis(val_refs, val_hyps)
                (d / "error_analysis.json").write_text(
                    json.dumps(analysis, indent=1, ensure_ascii=False), encoding="utf-8"
                )
                predictions_grid(val_refs, val_hyps).save(d / "val_predictions.png")
            self.client.log_artifacts(self._run, tmp)
        if result.model_dir is not None and (Path(result.model_dir) / "model.safetensors").is_file():
            self.model_uri, sha256 = self._log_model(Path(result.model_dir), val_refs[:1])  # ends the run
            self._log_batch(tags={"model_uri": self.model_uri, SHA256_TAG: sha256})
        else:  # (ending it again would print MLflow's run and experiment links a second time)
            self.client.set_terminated(self._run, "FINISHED")

    # ------------------------------------------------------------------------------------------- helpers
    @property
    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("MlflowTracker.start() was not called")
        return self.run_id

    def _open_run(self, cfg: TrainConfig) -> bool:
        """Resume the run named in run_file (same tracking URI, run still there) or create one; True if
        resumed."""
        from mlflow.exceptions import MlflowException

        saved = {}
        if self.run_file and self.run_file.is_file():
            saved = json.loads(self.run_file.read_text(encoding="utf-8"))
        if saved.get("tracking_uri") == self.tracking_uri and saved.get("run_id"):
            try:
                run = self.client.get_run(saved["run_id"])
            except MlflowException:
                run = None
            if run is not None and run.info.lifecycle_stage == "active":
                self.run_id = run.info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                return True
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment)
        run = self.client.create_run(exp_id, run_name=self.run_name or cfg.name)
        self.run_id = run.info.run_id
        if self.run_file:
            self.run_file.parent.mkdir(parents=True, exist_ok=True)
            self.run_file.write_text(
                json.dumps({"tracking_uri": self.tracking_uri, "run_id": self.run_id}), encoding="utf-8"
            )
        return False

    def _log_params(self, params: dict[str, str], resumed: bool) -> None:
        if resumed:  # a param cannot change value: log only the new ones, warn about changed ones
            old = self.client.get_run(self._run).data.params
            for k in sorted(k for k in params if k in old and old[k] != params[k]):
                log.warning(
                    "run %s: param %s was %r, now %r (kept the first)", self._run, k, old[k], params[k]
                )
            params = {k: v for k, v in params.items() if k not in old}
        self._log_batch(params=params)

    def _log_batch(
        self, metrics: list | None = None, params: dict[str, str] | None = None, tags: dict | None = None
    ) -> None:
        from mlflow.entities import Param, RunTag

        metrics = list(metrics or [])
        items = [Param(k, v) for k, v in (params or {}).items()]
        tag_items = [RunTag(k, str(v)[:MAX_TAG]) for k, v in (tags or {}).items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self._run, metrics=metrics[i : i + 1000])
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self._run, params=items[i : i + MAX_BATCH])
        for i in range(0, len(tag_items), MAX_BATCH):
            self.client.log_batch(self._run, tags=tag_items[i : i + MAX_BATCH])

    def _log_model(self, model_dir: Path, example_texts: list[str]) -> tuple[str, str]:
        """Log the model folder as a pyfunc from code (khmer_ocr/mlflow_model.py); returns its URI and the
        weights' SHA-256, which is tagged on the logged model (downloads are checked against it). Ends the
        run (FINISHED; MLflow prints the run's link once)."""
        import mlflow
        import pandas as pd
        from mlflow.models.signature import ModelSignature
        from mlflow.types import ColSpec, Schema

        from khmer_ocr.model_folder import WEIGHTS

        signature = ModelSignature(
            inputs=Schema([ColSpec("string", "image")]),
            outputs=Schema([ColSpec("string", "text"), ColSpec("double", "confidence")]),
        )
        example = None
        if example_texts:
            example = pd.DataFrame({"image": [base64.b64encode(line_png(example_texts[0])).decode("ascii")]})
        with (
            fluent_tracking_uri(self.tracking_uri),
            mlflow.start_run(run_id=self._run, nested=mlflow.active_run() is not None),
            warnings.catch_warnings(),
        ):
            # MLflow 3.17's input-example code compares columns with a range, which pandas 3 warns about
            warnings.filterwarnings("ignore", message="Operation with range is deprecated")
            info = mlflow.pyfunc.log_model(
                name=LOGGED_MODEL,
                python_model=str(MODEL_CODE),
                artifacts={"model_dir": str(model_dir)},
                signature=signature,
                input_example=example,
                pip_requirements=[f"khmer-ocr=={__version__}"],  # as given: MLflow infers nothing
            )
        sha256 = sha256_file(model_dir / WEIGHTS)
        if info.model_id:
            self.client.set_logged_model_tags(info.model_id, {SHA256_TAG: sha256})
        return info.model_uri, sha256


def log_model_folder(
    model_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str = "imported-model",
    tags: dict[str, str] | None = None,
) -> str:
    """Track an existing model folder (e.g. the committed reference model) as a finished run with its
    logged model, so that it can be registered like a trained one; returns the run id."""
    from khmer_ocr.model_folder import WEIGHTS

    model_dir = Path(model_dir)
    if not (model_dir / WEIGHTS).is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no {WEIGHTS})")
    tracker = MlflowTracker(tracking_uri, experiment, run_name)
    exp = tracker.client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else tracker.client.create_experiment(experiment)
    tracker.run_id = tracker.client.create_run(exp_id, run_name=run_name).info.run_id
    card = model_dir / "card.md"
    if card.is_file():
        tracker.client.log_artifact(tracker.run_id, str(card))
    model_uri, sha256 = tracker._log_model(model_dir, ["ភាសាខ្មែរ"])
    base = {"phase": "imported", "config": run_name, "khmer_ocr_version": __version__}
    base["source"] = str(model_dir)
    tracker._log_batch(tags={**base, **(tags or {}), "model_uri": model_uri, SHA256_TAG: sha256})
    return tracker.run_id  # (ended FINISHED by _log_model)


def tag_comparison(tracking_uri: str | None, runs: list[tuple[str, str]], best: str, table: str) -> None:
    """Phase 3.1: mark each (config name, run id) with the winner and attach the comparison table."""
    runs_client = client(tracking_uri)
    for name, run_id in runs:
        runs_client.set_tag(run_id, "phase3_1_best", best)
        runs_client.set_tag(run_id, "phase3_1_is_best", str(name == best).lower())
        runs_client.log_text(run_id, table + "\n", "comparison.md")
