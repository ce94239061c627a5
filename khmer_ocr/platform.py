"""The local platform behind `make run`: MLflow, TorchServe and Airflow as background processes on
127.0.0.1, with logs and PID files in one state folder, and the end-to-end demo DAG run through Airflow's
REST API. No Docker: SQLite, local files, local processes. (Airflow runs as a process; this module never
imports it.) Airflow's DAG files and plugins are the dags/ and plugins/ folders of a checkout of the
repository: the `checkout` argument, else the working directory (`make run` runs from the repository root);
the library does not assume where it is installed. khmer_ocr/distributed/ runs the same platform in the
production topology (`make run-distributed`: PostgreSQL, Redis, S3, Celery workers).

State folder (default .khmer-ocr/, mode 0700: it holds the Airflow admin password and Airflow's secret keys;
secret files are 0600, and Airflow runs with umask 077):
  pids/<service>.pid, logs/<service>.log     one per service; `down` stops each process group by PID
  platform.json                               the services' URLs (the CLI run from here finds MLflow there)
  mlflow/                                     mlflow.db (SQLite) and artifacts/
  torchserve/                                 model-store/, config.properties, logs/, tmp/
  airflow/                                    AIRFLOW_HOME (SQLite, LocalExecutor), admin password
  datasets/, runs/                            what the DAGs write (KHMER_OCR_STATE)
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from khmer_ocr.errors import KhmerOcrError, ServingError
from khmer_ocr.http import Response, request, send_json
from khmer_ocr.names import MODEL_NAME
from khmer_ocr.processes import running_pid, stop_group
from khmer_ocr.torchserve.server import Ports

DEMO_DAG = "khmer_ocr_demo"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"  # Airflow's simple auth manager reads it
# The pools the DAGs name (a task in a missing pool is never scheduled), as infra/airflow/init.sh makes them.
POOLS = {
    "gpu": (1, "training runs: one at a time on this machine"),
    "datagen": (2, "data generation shards running at once"),
    "torchserve": (1, "TorchServe deployments, one at a time"),
}


def private_dir(path: Path) -> Path:
    """Create path (and parents) if needed and make it 0700: only its owner can list or enter it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_secret(path: Path, text: str) -> None:
    """Write a file that only its owner can read (0600 from the moment it exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


class PlatformError(KhmerOcrError, RuntimeError):
    """A service of the local platform did not start or answer; the message names its log."""


@dataclass(frozen=True)
class PlatformPorts:
    """The local platform's ports: MLflow, Airflow, and TorchServe's (as in docker-compose.yml: Airflow has
    8080, so TorchServe's REST inference is on 8090)."""

    mlflow: int = 5000
    airflow: int = 8080
    torchserve: Ports = field(default_factory=lambda: Ports(8090, 8091, 8092, 7090, 7091))


def _get(url: str, headers: dict | None = None) -> Response:
    """GET; an unreachable service answers status 0 (health checks poll services that are starting)."""
    try:
        return request("GET", url, headers=headers, timeout=5.0)
    except OSError:
        return Response(0, None)


class LocalPlatform:
    """`LocalPlatform(".khmer-ocr").up()`, `.run_demo()`, `.down()`; every step is safe to repeat."""

    services: tuple[str, ...] = ("airflow", "mlflow")  # what down() stops by PID file, in this order

    def __init__(
        self,
        state: str | Path = ".khmer-ocr",
        ports: PlatformPorts | None = None,
        checkout: str | Path | None = None,
    ) -> None:
        self.state = Path(state).resolve()
        self.checkout = Path(checkout or Path.cwd()).resolve()  # its dags/ and plugins/ go to Airflow
        self.ports = ports or PlatformPorts()
        self.bin = Path(sys.executable).parent
        self.airflow_home = self.state / "airflow"
        self.model_store = self.state / "torchserve" / "model-store"
        self.pools = POOLS

    # ------------------------------------------------------------------------------------------ urls
    @property
    def urls(self) -> dict[str, str]:
        p = self.ports
        return {
            "airflow": f"http://127.0.0.1:{p.airflow}",
            "mlflow": f"http://127.0.0.1:{p.mlflow}",
            "torchserve": f"http://127.0.0.1:{p.torchserve.inference}",
            "torchserve_management": f"http://127.0.0.1:{p.torchserve.management}",
            "metrics": f"http://127.0.0.1:{p.torchserve.metrics}/metrics",
        }

    @property
    def secret_files(self) -> list[Path]:
        """Files of the state folder that hold secrets: the admin password, Airflow's config (its secret
        keys) and database."""
        return [self.airflow_home / n for n in (PASSWORDS_FILE, "airflow.cfg", "airflow.db")]

    def secure_state(self) -> None:
        """The state folder and its airflow/ folder 0700, the secret files in it 0600 (older state folders
        were made world-readable)."""
        private_dir(self.state)
        private_dir(self.airflow_home)
        for path in self.secret_files:
            if path.is_file():
                path.chmod(0o600)

    def admin_password(self) -> str:
        """The Airflow admin password: generated once, kept in the state folder (not in the repo), readable
        by its owner only."""
        self.secure_state()
        path = self.airflow_home / PASSWORDS_FILE
        if path.is_file():
            return json.loads(path.read_text())["admin"]
        password = secrets.token_urlsafe(12)
        write_secret(path, json.dumps({"admin": password}))
        return password

    # ---------------------------------------------------------------------------------- processes
    def _pid(self, name: str) -> int | None:
        return running_pid(self.state / "pids" / f"{name}.pid")

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None, user: str | None = None
    ) -> None:
        """Start cmd in its own process group (as user, if given), logging to logs/NAME.log, its PID in
        pids/NAME.pid."""
        self.secure_state()
        (self.state / "pids").mkdir(parents=True, exist_ok=True)
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.state / "logs" / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=cwd or self.state, start_new_session=True, umask=0o077, user=user,
            )  # fmt: skip
        (self.state / "pids" / f"{name}.pid").write_text(str(proc.pid))

    def _wait(self, name: str, healthy, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not healthy():
            if self._pid(name) is None or time.monotonic() > deadline:
                log = self.state / "logs" / f"{name}.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.is_file() else ""
                raise PlatformError(f"{name} did not become healthy; log {log}:\n{tail}")
            time.sleep(1.0)

    def _env(self) -> dict[str, str]:
        """The environment every service and Airflow task gets."""
        p = self.ports
        torchserve = {
            "conn_type": "http", "host": "127.0.0.1", "port": p.torchserve.management,
            "extra": {"inference_url": self.urls["torchserve"], "model_store": str(self.model_store)},
        }  # fmt: skip
        return {
            # Tasks share the cores with Airflow's own processes and with each other: torch with as many
            # OpenMP threads as cores then spins on busy cores (a one-minute training took ten here).
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // 2)),
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "KHMER_OCR_STATE": str(self.state),
            "KHMER_OCR_MODEL_STORE": str(self.model_store),
            "MLFLOW_TRACKING_URI": self.urls["mlflow"],
            "AIRFLOW_CONN_KHMER_OCR_MLFLOW": json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": p.mlflow}
            ),
            "AIRFLOW_CONN_KHMER_OCR_TORCHSERVE": json.dumps(torchserve),
        }

    # ------------------------------------------------------------------------------------- services
    def _mlflow_healthy(self) -> bool:
        return _get(f"{self.urls['mlflow']}/api/2.0/mlflow/experiments/search?max_results=1").status == 200

    def _record_urls(self) -> None:
        """The services' URLs in STATE/platform.json: the CLI run from here finds this MLflow there
        (khmer_ocr.tracking.resolve_tracking_uri) instead of a stray ./mlflow.db."""
        from khmer_ocr.mlflow_client import PLATFORM_FILE

        (self.state / PLATFORM_FILE).write_text(json.dumps(self.urls, indent=1), encoding="utf-8")

    def start_mlflow(self) -> None:
        self.secure_state()
        self._record_urls()
        if self._pid("mlflow") and self._mlflow_healthy():
            return
        root = self.state / "mlflow"
        root.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.bin / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
            "--port", str(self.ports.mlflow), "--workers", "1",
        ]  # fmt: skip
        self._spawn("mlflow", cmd, {**self._env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        self._wait("mlflow", self._mlflow_healthy, 120)

    def start_torchserve(self) -> None:
        """TorchServe with the current champion when there is one, else the committed reference model."""
        from khmer_ocr.torchserve.archive import build_archive
        from khmer_ocr.torchserve.server import TorchServeProcess

        server = TorchServeProcess(self.state / "torchserve", self.ports.torchserve)
        if server.running_pid() is not None and server.ready(MODEL_NAME):
            return
        server.stop()  # a stale PID file or a half-started server
        model = None
        try:
            from khmer_ocr.registry import CHAMPION, get_version

            champion = get_version(CHAMPION, tracking_uri=self.urls["mlflow"])
            model = champion.uri if champion else None
        except Exception:  # no registry yet: the reference model serves from the first minute
            model = None
        try:
            archive = build_archive(model, server.model_store, tracking_uri=self.urls["mlflow"])
        except ServingError:
            archive = build_archive(None, server.model_store)
        server.start([f"{MODEL_NAME}={archive.name}"])

    def _airflow_healthy(self) -> bool:
        r = _get(f"{self.urls['airflow']}/api/v2/monitor/health")
        if r.status != 200 or not isinstance(r.body, dict):
            return False
        return all(r.body.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler"))

    def start_airflow(self) -> None:
        if self._pid("airflow") and self._airflow_healthy():
            return
        if not ((self.checkout / "dags").is_dir() and (self.checkout / "plugins").is_dir()):
            raise PlatformError(
                f"{self.checkout} holds no dags/ and plugins/ for Airflow: run from the repository's root "
                "(or give --checkout)"
            )
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.admin_password()
        env = {
            **self._env(),
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.checkout / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.checkout / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(os.cpu_count() or 2),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.ports.airflow),
            "AIRFLOW__API__BASE_URL": self.urls["airflow"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.urls['airflow']}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        }
        self._spawn("airflow", [str(self.bin / "airflow"), "standalone"], env, cwd=self.state)
        self._wait("airflow", self._airflow_healthy, 300)
        self.secure_state()  # airflow.cfg and airflow.db, written at its first start

    def ensure_pools(self) -> None:
        """Create the pools the DAGs use, keeping the slots of any that exist."""
        auth = self._auth()
        for name, (slots, description) in self.pools.items():
            pool = {"name": name, "slots": slots, "description": description}
            r = send_json("POST", f"{self.urls['airflow']}/api/v2/pools", pool, auth)
            if r.status not in (200, 201, 409):
                raise PlatformError(f"cannot create the Airflow pool {name} ({r.status}): {r.body}")

    def up(self) -> None:
        """Start whatever is not running yet: MLflow, TorchServe, Airflow."""
        self.secure_state()
        self.start_mlflow()
        self.start_torchserve()
        self.start_airflow()
        self.ensure_pools()

    def _stop(self, name: str, pid: int) -> None:
        """Stop one service's process group."""
        stop_group(pid)

    def down(self) -> list[str]:
        """Stop every service this state folder started (SIGTERM to its process group, SIGKILL after 30 s)."""
        from khmer_ocr.torchserve.server import TorchServeProcess

        stopped = []
        for name in self.services:
            pid = self._pid(name)
            if pid is not None:
                self._stop(name, pid)
                stopped.append(name)
            (self.state / "pids" / f"{name}.pid").unlink(missing_ok=True)
        server = TorchServeProcess(self.state / "torchserve")
        if server.running_pid() is not None:
            stopped.append("torchserve")
        server.stop()
        return stopped

    def status(self) -> dict[str, bool]:
        from khmer_ocr.torchserve.client import TorchServeClient

        ts = TorchServeClient(self.urls["torchserve_management"], self.urls["torchserve"])
        return {
            "mlflow": self._mlflow_healthy(),
            "torchserve": ts.healthy(),
            "airflow": self._airflow_healthy(),
        }

    # ------------------------------------------------------------------------------------------ demo
    def _auth(self) -> dict[str, str]:
        """An Authorization header for Airflow's REST API (the admin user's JWT)."""
        credentials = {"username": "admin", "password": self.admin_password()}
        r = send_json("POST", f"{self.urls['airflow']}/auth/token", credentials)
        if r.status not in (200, 201) or not isinstance(r.body, dict) or "access_token" not in r.body:
            raise PlatformError(f"Airflow login failed ({r.status}): {r.body}")
        return {"Authorization": f"Bearer {r.body['access_token']}"}

    def trigger_demo(self, conf: dict | None = None, auth: dict[str, str] | None = None) -> str:
        """Unpause and trigger the demo DAG; returns the run's id."""
        api = f"{self.urls['airflow']}/api/v2/dags/{DEMO_DAG}"
        auth = auth or self._auth()
        deadline = time.monotonic() + 120
        while (r := send_json("PATCH", api, {"is_paused": False}, auth)).status != 200:
            if time.monotonic() > deadline:  # the DAG processor may not have parsed the DAG yet
                raise PlatformError(f"cannot unpause {DEMO_DAG} ({r.status}): {r.body}")
            time.sleep(3)
        r = send_json("POST", f"{api}/dagRuns", {"logical_date": None, "conf": conf or {}}, auth)
        if r.status not in (200, 201):
            raise PlatformError(f"cannot trigger {DEMO_DAG} ({r.status}): {r.body}")
        return r.body["dag_run_id"]

    def task_instances(self, run_id: str, auth: dict[str, str]) -> list[dict]:
        """The demo run's task instances as Airflow's REST API gives them (state, hostname, queue, ...)."""
        tasks = _get(f"{self.urls['airflow']}/api/v2/dags/{DEMO_DAG}/dagRuns/{run_id}/taskInstances", auth)
        return tasks.body.get("task_instances", []) if isinstance(tasks.body, dict) else []

    def task_line(self, ti: dict) -> str:
        """One progress line for a finished task instance."""
        return f"  {ti['task_id']}: {ti['state']}"

    def follow_run(self, run_id: str, auth: dict[str, str], timeout_s: float = 1800, progress=print) -> dict:
        """Wait for a demo run, printing each task as it finishes; returns the run (state success)."""
        api = f"{self.urls['airflow']}/api/v2/dags/{DEMO_DAG}"
        seen: set = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for ti in self.task_instances(run_id, auth):
                key = (ti["task_id"], ti.get("map_index", -1), ti["state"])
                if ti["state"] in ("success", "failed", "skipped", "upstream_failed") and key not in seen:
                    seen.add(key)
                    progress(self.task_line(ti))
            run = _get(f"{api}/dagRuns/{run_id}", auth).body
            state = run.get("state") if isinstance(run, dict) else None
            if state == "success":
                return run
            if state == "failed":
                raise PlatformError(
                    f"{DEMO_DAG} run {run_id} failed: see {self.urls['airflow']}/dags/{DEMO_DAG} "
                    f"(logs under {self.airflow_home / 'logs'})"
                )
            time.sleep(5)
        raise PlatformError(f"{DEMO_DAG} run {run_id} did not finish within {timeout_s:.0f} s")

    def run_demo(self, conf: dict | None = None, timeout_s: float = 1800, progress=print) -> dict:
        """Unpause and trigger the demo DAG, wait for its run; returns the final dag run (state success)."""
        auth = self._auth()
        run_id = self.trigger_demo(conf, auth)
        progress(f"triggered {DEMO_DAG} run {run_id}")
        return self.follow_run(run_id, auth, timeout_s, progress)

    def ocr(self, image: bytes) -> dict:
        """Read one line image through the REST endpoint."""
        from khmer_ocr.torchserve.client import TorchServeClient

        r = TorchServeClient(self.urls["torchserve_management"], self.urls["torchserve"]).predict(
            MODEL_NAME, image, "image/png"
        )
        if r.status != 200:
            raise PlatformError(f"REST OCR failed ({r.status}): {r.body}")
        return r.body
