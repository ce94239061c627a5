"""The library calls the DAG tasks make, shared: each takes plain values (XCom), gets MLflow's address from
the khmer_ocr_mlflow connection (MlflowRegistryHook) and hands it to the library as an argument, turns the
library's deterministic errors into AirflowFailException, and returns a plain dict for XCom. evaluate_task
is the evaluation step of the training DAGs and page_data_task the page dataset it also reads, as @task
factories.

Cheap to import (DAG parsing): khmer_ocr is imported inside the functions that call it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, task
from airflow.sdk.exceptions import AirflowFailException

from khmer_ocr.names import MODEL_NAME
from khmer_ocr_airflow.hooks import MlflowRegistryHook, TorchServeHook
from khmer_ocr_airflow.workers import child_processes


@contextmanager
def fail_fast() -> Iterator[None]:
    """Turn the library's deterministic errors (khmer_ocr.errors.KhmerOcrError that is not `retryable`: a
    bad config or dataset, a model that cannot load, a registry refusal such as PromotionRefused, a failed
    smoke test) into AirflowFailException: a clear message and no retry. Anything else (connection errors,
    timeouts, storage or TorchServe not answering) propagates and is retried by the task's settings."""
    from khmer_ocr.errors import KhmerOcrError

    try:
        yield
    except KhmerOcrError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def tracking_uri() -> str:
    """MLflow's tracking and registry URI, from the khmer_ocr_mlflow connection."""
    return MlflowRegistryHook().get_tracking_uri()


def by(dag_run: Any) -> str:
    """Who acts, for the registry's audit tags: the person who triggered the run, else the DAG."""
    user = getattr(dag_run, "triggering_user_name", None)
    dag_id = getattr(dag_run, "dag_id", "airflow")
    return f"{user} via {dag_id}" if user else f"airflow:{dag_id}"


def latest_event(inlet_events: Any, asset: Asset, what: str) -> dict[str, Any]:
    """The extra of the asset's latest event (an inlet of the task), or a clear failure."""
    events = inlet_events[asset]
    if not len(events):
        raise AirflowFailException(f"no {what} yet ({asset.uri}): produce one first, or give it as a param")
    return dict(events[-1].extra)


# ------------------------------------------------------------------------------------------------ data
def data_config(profile: str, overrides: list[str] | None = None, num_samples: int = 0, seed: int = -1):
    """A DataConfig from a packaged profile plus --set style overrides (num_samples / seed when given)."""
    from khmer_ocr.config import load_config, profile_path
    from khmer_ocr.data.config import DataConfig

    extra = list(overrides or [])
    if num_samples and num_samples > 0:
        extra.append(f"num_samples={int(num_samples)}")
    if seed is not None and seed >= 0:
        extra.append(f"seed={int(seed)}")
    with fail_fast():
        return load_config(DataConfig, profile_path("data", profile), extra)


def generate(cfg: Any, out: str | Path) -> str:
    """khmer_ocr.data.writer.generate_dataset (a process per core); returns the dataset's location."""
    from khmer_ocr.data.writer import generate_dataset

    with fail_fast(), child_processes():
        result = generate_dataset(cfg, out, progress=False)
    print(f"dataset {result.version}: {result.num_samples} lines at {out} ({result.generated} rendered)")
    return str(out)


def validate(uri: str, ti: Any = None) -> dict[str, Any]:
    """Great Expectations validation of a dataset; reports written beside it. A failing dataset raises
    AirflowFailException naming the failed checks and the report (also pushed as XCom validation_report)."""
    import logging

    # Great Expectations imported after Airflow logs every API it registers: keep its warnings only
    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
    from khmer_ocr import storage
    from khmer_ocr.data.validation import REPORT_HTML, validate_dataset

    with fail_fast(), child_processes():  # images are measured by a process per core
        report = validate_dataset(uri, report_dir=uri, progress=False)
    html = storage.join(uri, REPORT_HTML)
    print(report.summary())
    print(f"validation report: {html}")
    if ti is not None:
        ti.xcom_push(key="validation_report", value=html)
    if not report.success:
        failed = ", ".join(f"{c.name} ({c.details})" for c in report.failed)
        raise AirflowFailException(
            f"dataset {report.version} at {uri} failed validation: {failed}; report: {html}"
        )
    return {"uri": uri, "version": report.version, "report": html, "checks": len(report.checks)}


def page_data(num_pages: int) -> str | None:
    """A small page dataset for the evaluations to read pages of: num_pages synthetic pages (the pages
    profile, test texts only), generated once where new datasets go (paths.dataset_location: the state
    folder, or S3 for several machines; the same config gives the same bytes: a rerun finds it done) and
    validated; None when num_pages is 0 (page evaluation off)."""
    if not num_pages or num_pages <= 0:
        print("eval_pages is 0: no page evaluation")
        return None
    from khmer_ocr_airflow.paths import dataset_location

    cfg = data_config("pages", ["splits=[test]"], num_samples=num_pages)
    uri = generate(cfg, dataset_location(f"{cfg.name}-eval-{cfg.num_samples}"))
    return validate(uri)["uri"]


def page_data_task(**settings: Any):
    """The `page_data` task of a training DAG: page_data(params["eval_pages"])."""

    @task(task_id="page_data", **settings)
    def make_page_data(params=None) -> str | None:
        return page_data(params["eval_pages"])

    return make_page_data


# -------------------------------------------------------------------------------------------- training
def train(
    config: str, data: str, out: str | Path, params: dict, init_from: str | None = None
) -> dict[str, Any]:
    """khmer_ocr.training.phases.train_config with the DAG's profile and overrides params, tracked in
    MLflow; a plain dict for XCom, with the dataset it trained on as `data`."""
    from khmer_ocr.training.phases import train_config

    with fail_fast(), child_processes():
        run = train_config(
            config, data, out, params["profile"] or None, list(params["overrides"] or []), init_from or None,
            progress=False, tracking_uri=tracking_uri(),
        )  # fmt: skip
    r = run.result
    return {
        "name": run.name,
        "config": config,
        "run_id": run.run_id,
        "model_dir": str(r.model_dir),
        "out_dir": str(r.out_dir),
        "val_char_accuracy": run.val_char_accuracy,
        "val_sequence_accuracy": run.val_sequence_accuracy,
        "best_epoch": r.best_epoch,
        "best_metric": r.best_metric,
        "epochs_run": r.epochs_run,
        "stopped_early": r.stopped_early,
        "data": data,
    }


def evaluate(
    model: str,
    data: str,
    gates: str,
    run_id: str | None = None,
    report_path: str | Path | None = None,
    pages: str | None = None,
) -> dict[str, Any]:
    """khmer_ocr.evaluation.evaluate on the test splits + gates, and on the pages of the page dataset
    `pages` when given (page CER and line finding beside the line metrics, not gated); attached to the
    MLflow run when given."""
    from khmer_ocr.evaluation.evaluate import evaluate as run_evaluation

    uri = tracking_uri()
    with fail_fast():
        report = run_evaluation(model, data, gates=gates, tracking_uri=uri, page_data=pages or None)
    print(report.summary())
    if report_path:
        print(f"evaluation report: {report.write(report_path)}")
    if run_id:
        from khmer_ocr.registry import log_evaluation

        log_evaluation(run_id, report, uri)
    primary = report.splits[report.primary_split]
    page_metrics = report.page_report.metrics() if report.page_report is not None else {}
    return {
        "model": str(model),
        "run_id": run_id,
        "passed": report.passed,
        "split": report.primary_split,
        "char_accuracy": primary.get("char_accuracy"),
        "sequence_accuracy": primary.get("sequence_accuracy"),
        "dataset_version": report.dataset_version,
        "failed_gates": [g["name"] for g in report.gates if not g["passed"]],
        **{k: _defined(page_metrics.get(k)) for k in ("page_cer", "line_recall", "line_precision")},
    }


def _defined(value: Any) -> Any:
    """A metric as XCom (strict JSON) can hold it: None where it is undefined (NaN: e.g. the line precision of
    a model that read no line, so none was kept)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def evaluate_task(*, with_run: bool = False, **settings: Any):
    """The `evaluate` task of a training DAG: the trained run's model (a train() dict) on the run's dataset
    against the `gates` param, and on the pages of `pages` (page_data_task's dataset, None: lines only),
    attached to its MLflow run, the report beside the run's folder. Returns the evaluation, or (with_run)
    the run with its evaluation under "eval"."""

    @task(task_id="evaluate", **settings)
    def evaluate_run(run: dict, pages: str | None = None, params=None) -> dict:
        report = Path(run["out_dir"]) / "evaluation.json"
        result = evaluate(run["model_dir"], run["data"], params["gates"], run["run_id"], report, pages)
        return {**run, "eval": result} if with_run else result

    return evaluate_run


# -------------------------------------------------------------------------------------------- registry
def version_dict(info: Any) -> dict[str, Any]:
    """A registry VersionInfo as XCom: version, uri, run_id, aliases, gates_passed, approval, metrics."""
    return {
        "version": info.version,
        "uri": info.uri,
        "run_id": info.run_id,
        "aliases": list(info.aliases),
        "gates_passed": info.gates_passed,
        "approval": info.approval,
        "char_accuracy": info.metric("char_accuracy"),
        "config": info.tags.get("config", ""),
    }


def registry(action: str, *args: Any, **kwargs: Any) -> Any:
    """khmer_ocr.registry.<action>(*args, **kwargs) on the connection's registry, deterministic errors
    failing the task (get_version, register, approve, reject, promote, rollback, approval_status)."""
    from khmer_ocr import registry as library

    with fail_fast():
        return getattr(library, action)(*args, tracking_uri=tracking_uri(), **kwargs)


def register(run_id: str, dag_run: Any, name: str = MODEL_NAME) -> dict[str, Any]:
    """A new version of the registered model from a tracked run (alias candidate if it passes its gates)."""
    info = registry("register", run_id, by=by(dag_run), name=name)
    print(f"registered {info.name} v{info.version} {info.aliases} (gates passed: {info.gates_passed})")
    return version_dict(info)


def promote(version: str, dag_run: Any, reason: str, name: str, *, skip_if_refused: bool = False) -> dict:
    """Move `champion` to version (khmer_ocr.registry.promote). A refusal (not approved, failing gates, worse
    than the champion) fails the task, or with skip_if_refused skips it: the champion stays."""
    from airflow.sdk.exceptions import AirflowSkipException

    from khmer_ocr.errors import PromotionRefused

    try:
        info = registry("promote", version, by(dag_run), reason, name=name)
    except AirflowFailException as exc:
        if skip_if_refused and isinstance(exc.__cause__, PromotionRefused):
            raise AirflowSkipException(f"not promoted: {exc.__cause__.reason}") from exc.__cause__
        raise
    print(f"{info.name} v{info.version} is the champion ({reason})")
    return version_dict(info)


def approve_automatically(version: str, name: str, reason: str) -> None:
    """The demo's approval, recorded in MLflow as approved_by=auto_approve."""
    registry("approve", version, "auto_approve", reason, name=name)
    print(f"{name} v{version} approved automatically (demo)")


def deploy_model(model_ref: str, model_name: str = MODEL_NAME) -> dict[str, Any]:
    """khmer_ocr.torchserve.deploy.deploy on the TorchServe of the khmer_ocr_torchserve connection: archive
    into its model store, register beside the serving version, warm, smoke-test, switch, unregister the old.
    A failed smoke test (DeployError) is an AirflowFailException; the old version keeps serving."""
    from khmer_ocr.torchserve.deploy import deploy

    torchserve = TorchServeHook()
    client = torchserve.get_conn()
    if not client.healthy():  # infrastructure, retried (deploy() would call it a DeployError: not retried)
        raise ConnectionError(f"TorchServe at {client.inference_url} is not healthy (or not running)")
    with fail_fast():
        result = deploy(
            model_ref, client, torchserve.model_store, model_name=model_name, tracking_uri=tracking_uri()
        )
    print(
        f"deployed {model_ref} as {result.model_name} version {result.version} (was "
        f"{result.previous or 'nothing'}); smoke test read {result.smoke.get('text')!r}"
    )
    return {
        "model_ref": model_ref,
        "model_name": result.model_name,
        "version": result.version,
        "previous": result.previous,
        "archive": str(result.archive),
        "smoke": result.smoke,
    }
