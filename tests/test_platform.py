"""The local platform (`make run`): its state folder stays private (the Airflow admin password, what Airflow
writes), the CLI finds its MLflow, and up / status / up again /
down on free ports (slow: Airflow standalone)."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from khmer_ocr.platform import PASSWORDS_FILE, LocalPlatform


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_folder_is_private_and_secrets_are_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    platform = LocalPlatform(state)
    password = platform.admin_password()
    secret = state / "airflow" / PASSWORDS_FILE
    assert password and _mode(state) == 0o700 and _mode(state / "airflow") == 0o700
    assert _mode(secret) == 0o600

    # A state folder made before this fix (world-readable): private again on next use, same password.
    for path, mode in ((state, 0o755), (state / "airflow", 0o755), (secret, 0o644)):
        path.chmod(mode)
    (state / "airflow" / "airflow.cfg").write_text("[core]\nfernet_key = x\n")
    (state / "airflow" / "airflow.cfg").chmod(0o644)
    assert LocalPlatform(state).admin_password() == password
    assert (_mode(state), _mode(state / "airflow"), _mode(secret)) == (0o700, 0o700, 0o600)
    assert _mode(state / "airflow" / "airflow.cfg") == 0o600

    # The services it starts (Airflow writes airflow.cfg with its secret keys) create owner-only files.
    code = "open('written-by-a-service.txt', 'w').write('secret')"
    platform._spawn("probe", [sys.executable, "-c", code], dict(os.environ), cwd=state / "airflow")
    written = state / "airflow" / "written-by-a-service.txt"
    deadline = time.monotonic() + 30
    while platform._pid("probe") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert written.read_text() == "secret" and _mode(written) == 0o600


def _free_ports():
    from khmer_ocr.platform import PlatformPorts
    from khmer_ocr.processes import free_port
    from khmer_ocr.torchserve.server import Ports

    return PlatformPorts(free_port(), free_port(), Ports(*(free_port() for _ in range(5))))


def test_the_cli_finds_the_running_platforms_mlflow(tmp_path: Path, monkeypatch, capsys) -> None:
    """Run from the folder `make run` was run from, the registry commands use the platform's MLflow (its
    state folder records the URL), not a stray ./mlflow.db; once the platform is down, the default again."""
    import json

    from mlflow import MlflowClient

    from khmer_ocr.cli import main
    from khmer_ocr.mlflow_client import resolve_tracking_uri
    from khmer_ocr.model_folder import REFERENCE_MODEL
    from khmer_ocr.tracking import log_model_folder

    for key in ("MLFLOW_TRACKING_URI", "KHMER_OCR_STATE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    platform = LocalPlatform(tmp_path / ".khmer-ocr", _free_ports())
    try:
        platform.start_mlflow()
        url = platform.urls["mlflow"]
        run_id = log_model_folder(REFERENCE_MODEL, tracking_uri=url)
        client = MlflowClient(url, registry_uri=url)
        client.create_registered_model("khmer-ocr")
        source = client.get_run(run_id).data.tags["model_uri"]
        client.create_model_version(
            "khmer-ocr", source, run_id=run_id, model_id=source.removeprefix("models:/")
        )
        monkeypatch.chdir(tmp_path)
        capsys.readouterr()
        assert main(["models", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(v["version"], v["run_id"]) for v in listed] == [("1", run_id)]
        assert resolve_tracking_uri() == url
    finally:
        platform.down()
    assert not (tmp_path / "mlflow.db").exists()
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"  # nothing runs: the default


@pytest.mark.slow
def test_up_status_up_again_and_down_on_free_ports(tmp_path: Path, monkeypatch) -> None:
    """`platform up` starts MLflow, TorchServe (the reference model: no champion yet) and Airflow on the
    given ports, with the pools the DAGs name; a second `up` reuses the running services; `down` stops
    every process group and removes the PID files."""
    from khmer_ocr.http import request
    from khmer_ocr.processes import group_alive
    from khmer_ocr.torchserve.deploy import SMOKE_IMAGE, SMOKE_TEXT
    from khmer_ocr.torchserve.server import TorchServeProcess

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    platform = LocalPlatform(tmp_path / "state", _free_ports())
    torchserve = TorchServeProcess(platform.state / "torchserve")
    stopped: list[str] = []
    try:
        platform.up()
        assert platform.status() == {"mlflow": True, "torchserve": True, "airflow": True}
        pids = {"mlflow": platform._pid("mlflow"), "airflow": platform._pid("airflow")}
        pids["torchserve"] = torchserve.running_pid()
        assert all(pids.values()), pids
        pools = request("GET", f"{platform.urls['airflow']}/api/v2/pools", headers=platform._auth()).body
        assert {p["name"] for p in pools["pools"]} >= {"gpu", "datagen", "torchserve"}
        answer = platform.ocr(SMOKE_IMAGE.read_bytes())
        assert answer["text"] == SMOKE_TEXT.read_text(encoding="utf-8").strip()

        platform.up()  # what `make run` does a second time: the running services are reused
        again = {"mlflow": platform._pid("mlflow"), "airflow": platform._pid("airflow")}
        assert {**again, "torchserve": torchserve.running_pid()} == pids
        assert platform.status() == {"mlflow": True, "torchserve": True, "airflow": True}
    finally:
        stopped = platform.down()
    assert sorted(stopped) == ["airflow", "mlflow", "torchserve"]
    assert platform.status() == {"mlflow": False, "torchserve": False, "airflow": False}
    assert not any((platform.state / "pids").glob("*.pid"))
    assert not any(group_alive(pid) for pid in pids.values())
    assert platform.down() == []  # nothing left to stop
