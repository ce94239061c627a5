"""The data stores of the distributed platform as private local processes: a PostgreSQL cluster of its own
(Debian's `postgresql`: initdb, postgres, pg_ctl) and a Redis instance of its own (`redis-server`), plus the
secrets they and Airflow share, generated once and kept owner-only in the state folder."""

from __future__ import annotations

import base64
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from khmer_ocr.errors import KhmerOcrError

INIT_DATABASES = Path("infra") / "postgres" / "init-databases.sh"  # the compose stack's first-start script


class ServiceError(KhmerOcrError, RuntimeError):
    """A data store of the distributed platform cannot be set up (missing package, failed command)."""


@dataclass(frozen=True)
class Secrets:
    """Passwords and keys of one distributed platform (what .env holds for docker-compose.yml)."""

    postgres: str
    airflow_db: str
    mlflow_db: str
    redis: str
    s3_access_key: str
    s3_secret_key: str
    fernet_key: str
    jwt_secret: str
    api_secret_key: str

    @classmethod
    def load_or_create(cls, path: Path, write_secret) -> Secrets:
        """The secrets in path (JSON), else fresh random ones written there with write_secret (0600)."""
        if path.is_file():
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        fresh = cls(
            *(secrets.token_urlsafe(18) for _ in range(4)),
            secrets.token_hex(10),
            secrets.token_hex(20),
            base64.urlsafe_b64encode(os.urandom(32)).decode(),  # a Fernet key
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
        )
        write_secret(path, json.dumps(asdict(fresh)))
        return fresh


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
    if done.returncode != 0:
        raise ServiceError(f"{what} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


def postgres_bindir() -> Path:
    """The PostgreSQL server binaries: Debian keeps them in /usr/lib/postgresql/<major>/bin (newest wins)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise ServiceError("PostgreSQL is not installed: bash infra/setup/system-deps.sh (Debian: postgresql)")


class Postgres:
    """A private cluster in root/data on 127.0.0.1:port; password logins (scram-sha-256) only. PostgreSQL
    refuses to run as root: then it runs as the `postgres` system user, who owns root/."""

    def __init__(self, root: Path, port: int, superuser_password: str) -> None:
        self.root, self.port, self.password = root, port, superuser_password
        self.data = root / "data"
        self.bin = postgres_bindir()
        self.user = "postgres" if os.geteuid() == 0 else None

    def _owned_dir(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def init(self) -> None:
        """initdb a new cluster (superuser `postgres` with the password, UTF-8)."""
        self._owned_dir()
        if self.user and subprocess.run(["test", "-w", str(self.root)], user=self.user).returncode != 0:
            raise ServiceError(
                f"the {self.user} user cannot reach {self.root}: every folder above the state folder must be "
                "searchable by others (chmod o+x)"
            )
        pwfile = self.root / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            _run(
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                "initdb", user=self.user, cwd=self.root,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def command(self) -> list[str]:
        """The server in the foreground (its process group is the service), bound to 127.0.0.1 only."""
        return [
            str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
            "-c", "max_connections=200",
        ]  # fmt: skip

    def ready(self) -> bool:
        cmd = [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0

    def create_databases(self, checkout: Path, airflow_password: str, mlflow_password: str) -> None:
        """The compose stack's first-start script (infra/postgres/init-databases.sh): roles and databases
        airflow, mlflow (and mlflow_auth), run over TCP as the superuser."""
        env = {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGPASSWORD": self.password,
            "POSTGRES_USER": "postgres",
            "AIRFLOW_DB_PASSWORD": airflow_password,
            "MLFLOW_DB_PASSWORD": mlflow_password,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        _run(["bash", str(checkout / INIT_DATABASES)], "infra/postgres/init-databases.sh", env=env)

    def stop(self) -> None:
        """Fast shutdown (sessions ended, no waiting for clients), when the cluster runs."""
        if (self.data / "postmaster.pid").is_file():
            cmd = [str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30"]
            subprocess.run(cmd, capture_output=True, timeout=60, user=self.user)

    def url(self, database: str, user: str, password: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{user}:{password}@127.0.0.1:{self.port}/{database}"


class Redis:
    """A private Redis on 127.0.0.1:port: password, append-only file in root (as docker-compose.yml's
    redis), its config file owner-only (the password stays off the command line)."""

    def __init__(self, root: Path, port: int, password: str) -> None:
        self.root, self.port, self.password = root, port, password

    def command(self, write_secret) -> list[str]:
        server = shutil.which("redis-server")
        if not server:
            raise ServiceError(
                "Redis is not installed: bash infra/setup/system-deps.sh (Debian: redis-server)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "redis.conf"
        write_secret(
            conf,
            f"bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\ndir {self.root}\n"
            'appendonly yes\nprotected-mode yes\ndaemonize no\nlogfile ""\n',
        )
        return [server, str(conf)]

    def ready(self) -> bool:
        """AUTH and PING answer +OK and +PONG."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                answer = b""
                while answer.count(b"\r\n") < 2:
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    answer += chunk
            return answer.startswith(b"+OK") and b"+PONG" in answer
        except OSError:
            return False

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"
