"""The production topology's shared settings: infra/airflow/airflow.env, the one file that
docker-compose.yml's Airflow services and the local launcher both read (Airflow settings, each Celery
worker's queues and concurrency, the pools and their slots)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SETTINGS_FILE = Path("infra") / "airflow" / "airflow.env"  # relative to a checkout of the repository
POOL_DESCRIPTIONS = {
    "gpu": "training runs: one per GPU worker",
    "datagen": "data generation shards running at once",
    "torchserve": "TorchServe deployments, one at a time",
}


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (blank lines and # comments skipped), values as written."""
    values = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{number}: not KEY=VALUE: {raw!r}")
        values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class Worker:
    """One Celery worker: the name it reports as the task instances' hostname, its queues, its concurrency."""

    name: str
    queues: tuple[str, ...]
    concurrency: int


@dataclass(frozen=True)
class Topology:
    """What infra/airflow/airflow.env says: the AIRFLOW__* settings every component gets, the two workers of
    the central machine (docker-compose.yml's airflow-worker and airflow-worker-gpu) and the pools."""

    airflow: dict[str, str]
    workers: tuple[Worker, ...]
    pools: dict[str, tuple[int, str]]

    @property
    def executor(self) -> str:
        return self.airflow["AIRFLOW__CORE__EXECUTOR"]

    def worker(self, name: str) -> Worker:
        return next(w for w in self.workers if w.name == name)

    @classmethod
    def load(cls, checkout: Path) -> Topology:
        """Read checkout/infra/airflow/airflow.env."""
        env = read_env_file(checkout / SETTINGS_FILE)

        def queues(key: str) -> tuple[str, ...]:
            return tuple(q.strip() for q in env[key].split(",") if q.strip())

        workers = (
            Worker(
                "airflow-worker", queues("KHMER_OCR_WORKER_QUEUES"), int(env["KHMER_OCR_WORKER_CONCURRENCY"])
            ),
            Worker(
                "airflow-worker-gpu",
                queues("KHMER_OCR_GPU_WORKER_QUEUES"),
                int(env["KHMER_OCR_GPU_WORKER_CONCURRENCY"]),
            ),
        )
        pools = {
            name: (int(env[f"KHMER_OCR_POOL_{name.upper()}"]), description)
            for name, description in POOL_DESCRIPTIONS.items()
        }
        airflow = {k: v for k, v in env.items() if k.startswith("AIRFLOW__")}
        return cls(airflow, workers, pools)
