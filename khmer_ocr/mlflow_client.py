"""Where MLflow is and a client for it: the one place that turns a tracking URI (or none) into a client.

Every function of the library that talks to MLflow takes a `tracking_uri`; None means, in this order:
MLFLOW_TRACKING_URI, the MLflow server of the local platform running from the working directory (`make run`:
its state folder's platform.json), else `sqlite:///<cwd>/mlflow.db` (MLflow's own default, made absolute).
The registry URI is always the tracking URI. Credentials for a server with authentication are MLflow's own:
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the environment of the process (nothing here sets
them). MLflow is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

PLATFORM_FILE = "platform.json"  # in the local platform's state folder: the URLs of its services


def local_platform_mlflow() -> str | None:
    """The MLflow URL of a local platform (`make run`) that is running from here: its state folder
    ($KHMER_OCR_STATE, else ./.khmer-ocr) records the URL, and the server's PID is alive."""
    from khmer_ocr.processes import running_pid

    state = Path(os.environ.get("KHMER_OCR_STATE") or Path.cwd() / ".khmer-ocr")
    try:
        url = json.loads((state / PLATFORM_FILE).read_text(encoding="utf-8"))["mlflow"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if running_pid(state / "pids" / "mlflow.pid") is not None else None


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The argument, else MLFLOW_TRACKING_URI, else the MLflow of the local platform running from here
    (`make run`), else a SQLite store in the working directory."""
    return (
        tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or local_platform_mlflow()
        or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    )


def client(tracking_uri: str | None = None) -> MlflowClient:
    """An MlflowClient on the tracking URI (resolved as resolve_tracking_uri), which is its registry too."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    return MlflowClient(uri, registry_uri=uri)


def require_server(tracking_uri: str | None, timeout_s: float = 10.0) -> None:
    """Fail fast (RegistryError, one clear line) when tracking_uri is an http(s) tracking server that does
    not answer: MLflow's client would retry with backoff for minutes, printing nothing. Other URIs (a
    SQLite file, None) pass."""
    from khmer_ocr.errors import RegistryError
    from khmer_ocr.http import request

    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return
    url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        status = request("GET", url, timeout=timeout_s).status
    except OSError as exc:
        raise RegistryError(
            f"cannot reach the MLflow tracking server at {tracking_uri} ({exc}): start it, or give another "
            "--tracking-uri (none: the run is not tracked)"
        ) from exc
    if status >= 500 or status == 404:  # 401/403: it answers, and the client's credentials decide
        raise RegistryError(
            f"{tracking_uri} does not answer as an MLflow tracking server (HTTP {status} from {url})"
        )


@contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (mlflow.start_run, log_model, register_model, download_artifacts of
    models:/ URIs), which knows no client, at uri for one call, then restore exactly what was there
    (mlflow.set_tracking_uri also sets the MLFLOW_TRACKING_URI environment variable)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    old_uri, old_env = getattr(utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_uri)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
