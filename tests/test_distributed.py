"""The production topology for real (`make run-distributed`, khmer_ocr/distributed/): PostgreSQL, Redis,
SeaweedFS S3, MLflow on PostgreSQL and S3, Airflow on the CeleryExecutor with a `default,deploy` worker and a
`gpu` worker, TorchServe, as local processes. Fast checks of the shared settings, and (slow) the demo DAG
through the whole topology while the `gpu` worker is lost mid-training."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from khmer_ocr.distributed.platform import DistributedPlatform, DistributedPorts
from khmer_ocr.distributed.settings import SETTINGS_FILE, Topology, read_env_file
from khmer_ocr.processes import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_launcher_reads_the_settings_compose_reads() -> None:
    """infra/airflow/airflow.env gives the executor, the two workers' queues and concurrency and the pools;
    the queues and pools are those plugins/khmer_ocr_airflow/settings.py names."""
    settings = (ROOT / "plugins" / "khmer_ocr_airflow" / "settings.py").read_text()
    topology = Topology.load(ROOT)
    assert topology.executor == "CeleryExecutor"
    assert topology.worker("airflow-worker").queues == ("default", "deploy")
    assert topology.worker("airflow-worker-gpu").queues == ("gpu",)
    assert topology.worker("airflow-worker-gpu").concurrency == 1
    for name in (
        'GPU_QUEUE = "gpu"',
        'DEPLOY_QUEUE = "deploy"',
        'GPU_POOL = "gpu"',
        'DATAGEN_POOL = "datagen"',
    ):
        assert name in settings, name
    assert set(topology.pools) == {"gpu", "datagen", "torchserve"}
    assert topology.pools["gpu"][0] == 1
    assert all(k.startswith(("AIRFLOW__", "KHMER_OCR_")) for k in read_env_file(ROOT / SETTINGS_FILE))


def test_env_file_lines_must_be_key_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text("# comment\n\nA=1\nnot a setting\n")
    with pytest.raises(ValueError, match=r"bad.env:4: not KEY=VALUE"):
        read_env_file(bad)


def _ports() -> DistributedPorts:
    from khmer_ocr.torchserve.server import Ports

    torchserve = Ports(*(free_port() for _ in range(5)))
    return DistributedPorts(
        free_port(),
        free_port(),
        torchserve,
        free_port(),
        free_port(),
        free_port(),
        (free_port(), free_port()),
    )


def _processes_of(state: Path) -> list[psutil.Process]:
    """Processes started for this state folder: its path in their command line or KHMER_OCR_STATE."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == psutil.Process().pid:
            continue
        try:
            if str(state) in " ".join(proc.info["cmdline"] or []) or (
                proc.environ().get("KHMER_OCR_STATE") == str(state)
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _wait_for(what: str, check, timeout_s: float, every_s: float = 2.0):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)
    return result


@pytest.mark.slow
def test_demo_on_celery_workers_survives_losing_the_gpu_worker(tmp_path: Path, monkeypatch) -> None:
    """Up on free ports; the demo DAG runs its data tasks on airflow-worker (queues default, deploy) and its
    training on airflow-worker-gpu (queue gpu). The gpu worker's whole process group is SIGKILLed once
    training has written its first checkpoint: Airflow notices the missing heartbeats, puts the task up for
    retry, the retry waits in the gpu queue until the worker is restarted, then resumes and succeeds; the run
    ends with the new model served over REST. down() leaves no process behind."""
    from khmer_ocr.http import request
    from khmer_ocr.torchserve.deploy import SMOKE_IMAGE, SMOKE_TEXT

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    state = tmp_path / "state"
    if os.geteuid() == 0:  # PostgreSQL then runs as `postgres`: pytest's 0700 folders must let it through
        for folder in (tmp_path, *tmp_path.parents):
            if folder.stat().st_uid == 0 and not folder.stat().st_mode & 0o001:
                folder.chmod(folder.stat().st_mode | 0o011)
    # A lost worker is noticed after task_instance_heartbeat_timeout (300 s by default) and a retry waits its
    # retry_delay (2 minutes for training): both shortened here to keep the test short.
    overrides = {
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "5",
    }
    platform = DistributedPlatform(state, _ports(), checkout=ROOT, overrides=overrides)
    gpu = platform.topology.worker("airflow-worker-gpu")
    lines: list[str] = []
    try:
        platform.up()
        assert all(platform.status().values()), platform.status()
        auth = platform._auth()
        run_id = platform.trigger_demo({}, auth)

        def train() -> dict:
            return next((t for t in platform.task_instances(run_id, auth) if t["task_id"] == "train"), {})

        _wait_for("train to run", lambda: train().get("state") == "running", 600)
        assert (train()["hostname"], train()["queue"], train()["try_number"]) == (gpu.name, "gpu", 1)
        checkpoints = state / "runs" / "demo"
        _wait_for("the first checkpoint", lambda: any(checkpoints.glob("*/checkpoints/last.pt")), 300, 0.5)
        platform.kill(gpu.name)  # the machine is lost: no warm shutdown, no acknowledgement

        retried = _wait_for("the retry", lambda: (t := train()).get("try_number", 1) >= 2 and t, 240)
        assert retried["state"] in ("scheduled", "queued", "up_for_retry"), retried
        time.sleep(10)  # no gpu worker: the retry stays queued
        assert train()["state"] in ("scheduled", "queued", "up_for_retry"), train()
        platform.start_worker(gpu)
        platform.follow_run(run_id, auth, timeout_s=900, progress=lines.append)

        tasks = {t["task_id"]: t for t in platform.task_instances(run_id, auth)}
        assert all(t["state"] == "success" for t in tasks.values()), lines
        assert (tasks["train"]["hostname"], tasks["train"]["queue"]) == (gpu.name, "gpu")
        assert tasks["train"]["try_number"] == 2
        for name, t in tasks.items():
            if name != "train":
                assert t["hostname"] == "airflow-worker", (name, t["hostname"])
        assert tasks["deploy"]["queue"] == "deploy" and tasks["data"]["queue"] == "default"
        tries = request(
            "GET",
            f"{platform.urls['airflow']}/api/v2/dags/khmer_ocr_demo/dagRuns/{run_id}/taskInstances/train/tries",
            headers=auth,
        ).body["task_instances"]
        first = next(t for t in tries if t["try_number"] == 1)
        assert first["state"] in ("failed", "up_for_retry") and first["hostname"] == gpu.name, first
        assert "  train: success (worker airflow-worker-gpu, queue gpu)" in lines

        answer = platform.ocr(SMOKE_IMAGE.read_bytes())
        assert answer["text"] == SMOKE_TEXT.read_text(encoding="utf-8").strip()
    finally:
        stopped = platform.down()
    assert set(stopped) >= {"postgres", "redis", "s3", "mlflow", "torchserve", gpu.name, "airflow-scheduler"}
    assert not any((state / "pids").glob("*.pid"))
    time.sleep(1)
    assert not _processes_of(state), [p.info["cmdline"] for p in _processes_of(state)]
