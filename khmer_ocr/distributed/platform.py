"""`make run-distributed`: the platform of `make run` in docker-compose.yml's production topology, as local
processes on 127.0.0.1 (no Docker): PostgreSQL (Airflow's and MLflow's databases), Redis (Celery broker),
SeaweedFS as the S3 server (datasets, MLflow artifacts; MinIO in compose), MLflow on PostgreSQL with s3://
artifacts, Airflow on the CeleryExecutor (api-server, scheduler, dag-processor, triggerer and the two Celery
workers of infra/airflow/airflow.env: `default,deploy` and `gpu`) and TorchServe. Airflow's settings, queues
and pools come from infra/airflow/airflow.env, the file docker-compose.yml reads; only addresses, ports,
secrets and paths are this launcher's own.

State folder (default .khmer-ocr-distributed/): as the local platform's (pids/, logs/, platform.json,
airflow/, torchserve/, runs/), plus secrets.json (every password and key, 0600), postgres/ (the cluster;
owned by the `postgres` user when run as root, the state folder then 0711 so that user can reach it),
redis/ and s3/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from khmer_ocr.distributed.services import Postgres, Redis, Secrets
from khmer_ocr.distributed.settings import Topology, Worker
from khmer_ocr.platform import LocalPlatform, PlatformError, PlatformPorts, write_secret
from khmer_ocr.processes import group_alive, stop_group

MLFLOW_BUCKET = "khmer-ocr-mlflow"  # the buckets of docker-compose.yml's minio-init
DATA_BUCKET = "khmer-ocr-data"
AIRFLOW_COMPONENTS = {  # service name (as in docker-compose.yml) -> `airflow` subcommand
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
WORKER_HOSTNAME = "khmer_ocr_airflow.workers.hostname"  # reports KHMER_OCR_WORKER_NAME as the TI's hostname


@dataclass(frozen=True)
class DistributedPorts(PlatformPorts):
    """The local platform's ports plus the data stores' and the workers' log servers. PostgreSQL and Redis
    are off their usual ports, which a system service may hold."""

    postgres: int = 15432
    redis: int = 16379
    s3: int = 9000
    worker_logs: tuple[int, ...] = (8793, 8794)


class DistributedPlatform(LocalPlatform):
    """`DistributedPlatform(".khmer-ocr-distributed").up()`, `.run_demo()`, `.down()`; overrides: extra
    AIRFLOW__* settings for every Airflow component (the test shortens the heartbeat timeout)."""

    services = (
        "airflow-worker-gpu", "airflow-worker", *reversed(AIRFLOW_COMPONENTS), "mlflow", "s3", "redis",
        "postgres",
    )  # fmt: skip

    def __init__(
        self,
        state: str | Path = ".khmer-ocr-distributed",
        ports: DistributedPorts | None = None,
        checkout: str | Path | None = None,
        overrides: dict[str, str] | None = None,
    ) -> None:
        super().__init__(state, ports or DistributedPorts(), checkout)
        self.ports: DistributedPorts
        self.topology = Topology.load(self.checkout)
        self.pools = self.topology.pools
        self.overrides = dict(overrides or {})
        self.postgres_user = "postgres" if os.geteuid() == 0 else None

    # ---------------------------------------------------------------------------------- state, env
    def secure_state(self) -> None:
        super().secure_state()
        for sub in ("pids", "logs"):
            if (self.state / sub).is_dir():
                (self.state / sub).chmod(0o700)
        if self.postgres_user:  # PostgreSQL runs as `postgres`: it must reach postgres/, not list the rest
            self.state.chmod(0o711)

    @property
    def secrets(self) -> Secrets:
        self.secure_state()
        return Secrets.load_or_create(self.state / "secrets.json", write_secret)

    @property
    def postgres(self) -> Postgres:
        return Postgres(self.state / "postgres", self.ports.postgres, self.secrets.postgres)

    @property
    def redis(self) -> Redis:
        return Redis(self.state / "redis", self.ports.redis, self.secrets.redis)

    @property
    def urls(self) -> dict[str, str]:
        return {**super().urls, "s3": f"http://127.0.0.1:{self.ports.s3}"}

    def _env(self) -> dict[str, str]:
        """What every service and task gets: the local platform's, plus S3 (datasets: the data bucket)."""
        s = self.secrets
        return {
            **super()._env(),
            "AWS_ACCESS_KEY_ID": s.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "KHMER_OCR_S3_ENDPOINT_URL": self.urls["s3"],
            "MLFLOW_S3_ENDPOINT_URL": self.urls["s3"],
            "KHMER_OCR_DATASETS": f"s3://{DATA_BUCKET}/datasets",
        }

    def _store_env(self) -> dict[str, str]:
        """The data stores' environment: no secrets, the state folder as a marker."""
        return {**os.environ, "KHMER_OCR_STATE": str(self.state)}

    def airflow_env(self) -> dict[str, str]:
        """Every Airflow component's environment: infra/airflow/airflow.env, then this machine's addresses,
        database, broker, secrets and paths, then the overrides."""
        s, pg = self.secrets, self.postgres
        return {
            **self._env(),
            **self.topology.airflow,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.checkout / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.checkout / "plugins"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__FERNET_KEY": s.fernet_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": s.jwt_secret,
            "AIRFLOW__API__SECRET_KEY": s.api_secret_key,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.ports.airflow),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.urls["airflow"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.urls['airflow']}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url("airflow", "airflow", s.airflow_db),
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url(),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
            + pg.url("airflow", "airflow", s.airflow_db, "postgresql"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            **self.overrides,
        }

    # ---------------------------------------------------------------------------------- data stores
    def start_postgres(self) -> None:
        pg = self.postgres
        if self._pid("postgres") and pg.ready():
            return
        fresh = not pg.initialized()
        if fresh:
            pg.init()
        self._spawn("postgres", pg.command(), self._store_env(), cwd=pg.root, user=self.postgres_user)
        self._wait("postgres", pg.ready, 60)
        if fresh:
            s = self.secrets
            pg.create_databases(self.checkout, s.airflow_db, s.mlflow_db)

    def start_redis(self) -> None:
        redis = self.redis
        if self._pid("redis") and redis.ready():
            return
        self._spawn("redis", redis.command(write_secret), self._store_env(), cwd=redis.root)
        self._wait("redis", redis.ready, 30)

    def _s3_client(self):
        from khmer_ocr.s3_server import S3Server, s3_client

        s = self.secrets
        return s3_client(S3Server(self.urls["s3"], s.s3_access_key, s.s3_secret_key))

    def _s3_healthy(self) -> bool:
        try:
            self._s3_client().list_buckets()
            return True
        except Exception:
            return False

    def start_s3(self) -> None:
        """SeaweedFS's S3 API on ports.s3 (its other services on free ports), the buckets of compose's
        minio-init created if missing."""
        from khmer_ocr.s3_server import S3Server, weed_command, weed_ports

        if not (self._pid("s3") and self._s3_healthy()):
            root = self.state / "s3"
            root.mkdir(parents=True, exist_ok=True)
            ports = weed_ports(self.ports.s3)
            (root / "ports.json").write_text(json.dumps(ports))
            s = self.secrets
            cmd = weed_command(root, S3Server(self.urls["s3"], s.s3_access_key, s.s3_secret_key), ports)
            self._spawn("s3", cmd, self._store_env(), cwd=root)
            self._wait("s3", self._s3_healthy, 60)
        client = self._s3_client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in (MLFLOW_BUCKET, DATA_BUCKET):
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)

    # ----------------------------------------------------------------------------------- MLflow
    def start_mlflow(self) -> None:
        """MLflow with its metadata in PostgreSQL and artifacts proxied to s3://khmer-ocr-mlflow/artifacts."""
        self.secure_state()
        self._record_urls()
        if self._pid("mlflow") and self._mlflow_healthy():
            return
        s = self.secrets
        cmd = [
            str(self.bin / "mlflow"), "server", "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts",
            "--host", "127.0.0.1", "--port", str(self.ports.mlflow), "--workers", "1",
        ]  # fmt: skip
        env = {
            **self._env(),
            "MLFLOW_BACKEND_STORE_URI": self.postgres.url("mlflow", "mlflow", s.mlflow_db),  # not in `ps`
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        self._spawn("mlflow", cmd, env)
        self._wait("mlflow", self._mlflow_healthy, 180)

    # ----------------------------------------------------------------------------------- Airflow
    def _log_size(self, name: str) -> int:
        log = self.state / "logs" / f"{name}.log"
        return log.stat().st_size if log.is_file() else 0

    def start_worker(self, worker: Worker) -> None:
        """One Celery worker: its queues and concurrency from airflow.env, reporting its name as the task
        instances' hostname, its own log server port and PID file; returns once Celery says it is ready."""
        if self._pid(worker.name):
            return
        index = self.topology.workers.index(worker)
        env = {
            **self.airflow_env(),
            "KHMER_OCR_WORKER_NAME": worker.name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": WORKER_HOSTNAME,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports.worker_logs[index]),
        }
        cmd = [
            str(self.bin / "airflow"), "celery", "worker", "--queues", ",".join(worker.queues),
            "--concurrency", str(worker.concurrency), "--celery-hostname", f"{worker.name}@%h",
            "--pid", str(self.airflow_home / f"{worker.name}.pid"),
        ]  # fmt: skip
        (self.airflow_home / f"{worker.name}.pid").unlink(missing_ok=True)
        offset = self._log_size(worker.name)
        self._spawn(worker.name, cmd, env, cwd=self.airflow_home)
        log = self.state / "logs" / f"{worker.name}.log"

        def ready() -> bool:
            with open(log, "rb") as f:
                f.seek(offset)
                return b" ready." in f.read()

        self._wait(worker.name, ready, 180)

    def _run_logged(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        with open(self.state / "logs" / f"{name}.log", "ab") as log:
            done = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.airflow_home, umask=0o077, timeout=900,
            )  # fmt: skip
        if done.returncode != 0:
            raise PlatformError(f"{' '.join(cmd[1:])} failed: see {self.state / 'logs' / f'{name}.log'}")

    def start_airflow(self) -> None:
        if not ((self.checkout / "dags").is_dir() and (self.checkout / "plugins").is_dir()):
            raise PlatformError(f"{self.checkout} holds no dags/ and plugins/ for Airflow")
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.admin_password()
        env = self.airflow_env()
        airflow = str(self.bin / "airflow")
        if not self._pid("airflow-scheduler"):  # docker-compose.yml's airflow-init: the schema
            self._run_logged("airflow-init", [airflow, "db", "migrate"], env)
        for name, command in AIRFLOW_COMPONENTS.items():
            if not self._pid(name):
                self._spawn(name, [airflow, command], env, cwd=self.airflow_home)
        for worker in self.topology.workers:
            self.start_worker(worker)
        self._wait("airflow-apiserver", self._airflow_healthy, 300)
        self.secure_state()

    def up(self) -> None:
        """Start whatever is not running yet, in dependency order."""
        self.secure_state()
        self.start_postgres()
        self.start_redis()
        self.start_s3()
        self.start_mlflow()
        self.start_torchserve()
        self.start_airflow()
        self.ensure_pools()

    # ------------------------------------------------------------------------------ stop, status
    def kill(self, name: str) -> int:
        """SIGKILL a service's whole process group at once (a lost machine: no warm shutdown, no ack);
        returns its PID."""
        pid = self._pid(name)
        if pid is None:
            raise PlatformError(f"{name} is not running")
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        return pid

    def _stop(self, name: str, pid: int) -> None:
        if name == "postgres":  # a fast shutdown first (SIGTERM alone waits for every client)
            self.postgres.stop()
        stop_group(pid)

    def down(self) -> list[str]:
        """Stop every service (workers first, PostgreSQL last, then TorchServe): SIGTERM to each process
        group, SIGKILL after 30 s."""
        from khmer_ocr.s3_server import remove_sockets

        stopped = super().down()
        ports_file = self.state / "s3" / "ports.json"
        if ports_file.is_file():
            remove_sockets(json.loads(ports_file.read_text()))
        return stopped

    def status(self) -> dict[str, bool]:
        status = super().status()
        return {
            "postgres": self._pid("postgres") is not None and self.postgres.ready(),
            "redis": self._pid("redis") is not None and self.redis.ready(),
            "s3": self._pid("s3") is not None and self._s3_healthy(),
            **status,
            **{w.name: self._pid(w.name) is not None for w in self.topology.workers},
        }

    def task_line(self, ti: dict) -> str:
        return (
            f"  {ti['task_id']}: {ti['state']} (worker {ti.get('hostname') or '?'}, queue {ti.get('queue')})"
        )
