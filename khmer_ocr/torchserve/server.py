"""Running TorchServe as a local process: own state folder, own TMPDIR, stopped by PID.

State folder layout: config.properties (this instance's copy of serving/config.properties), model-store/,
logs/, tmp/ (TMPDIR and TEMP: TorchServe's PID file and its workers' Unix sockets, which would clash
between instances in /tmp) and torchserve.pid (the process group we started). Everything binds to
127.0.0.1, gRPC included.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from khmer_ocr.errors import ServingError
from khmer_ocr.processes import running_pid, stop_group
from khmer_ocr.torchserve.archive import serving_dir
from khmer_ocr.torchserve.client import TorchServeClient


@dataclass(frozen=True)
class Ports:
    """A TorchServe instance's ports (REST inference, management, metrics; gRPC)."""

    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070  # TorchServe always opens its gRPC APIs too: two instances need their own
    grpc_management: int = 7071


def instance_config(template: str, ports: Ports, model_store: Path) -> str:
    """serving/config.properties with this instance's addresses, model store and allowed URLs."""
    values = {
        "inference_address": f"http://127.0.0.1:{ports.inference}",
        "management_address": f"http://127.0.0.1:{ports.management}",
        "metrics_address": f"http://127.0.0.1:{ports.metrics}",
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_port": str(ports.grpc_management),
        "model_store": str(model_store),
        "allowed_urls": f"file://{re.escape(str(model_store))}/.*",
    }
    lines = [ln for ln in template.splitlines() if ln.split("=", 1)[0].strip() not in values]
    return "\n".join([*lines, *(f"{k}={v}" for k, v in values.items())]) + "\n"


def _torchserve() -> str:
    beside = Path(sys.executable).parent / "torchserve"
    found = str(beside) if beside.is_file() else shutil.which("torchserve")
    if not found:
        raise ServingError("torchserve is not installed: pip install 'khmer-ocr[serve]' (and Java 17)")
    if not shutil.which("java"):
        raise ServingError("TorchServe needs Java 17 on PATH (Debian: openjdk-17-jre-headless)")
    return found


class TorchServeProcess:
    """`with TorchServeProcess(state, ports) as ts: ts.start(["khmer-ocr-v1.mar"]) ...`"""

    def __init__(self, state_dir: str | Path, ports: Ports | None = None) -> None:
        self.state = Path(state_dir).resolve()
        self.ports = ports or Ports()
        self.model_store = self.state / "model-store"
        self.pid_file = self.state / "torchserve.pid"
        self.log_file = self.state / "logs" / "torchserve.out"
        self.proc: subprocess.Popen | None = None
        self.client = TorchServeClient(
            f"http://127.0.0.1:{self.ports.management}", f"http://127.0.0.1:{self.ports.inference}"
        )

    def start(self, archives: list[str] | None = None, timeout_s: float = 120.0) -> TorchServeProcess:
        """Start TorchServe with these archives of the model store loaded; return once it is healthy."""
        if self.running_pid() is not None:
            raise ServingError(f"TorchServe already running from {self.state} (pid {self.running_pid()})")
        for d in (self.model_store, self.state / "logs", self.state / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        config = self.state / "config.properties"
        template = (serving_dir() / "config.properties").read_text(encoding="utf-8")
        config.write_text(instance_config(template, self.ports, self.model_store), encoding="utf-8")
        cmd = [
            _torchserve(), "--start", "--foreground", "--ncs", "--ts-config", str(config),
            "--model-store", str(self.model_store), "--disable-token-auth", "--enable-model-api",
        ]  # fmt: skip
        if archives:
            cmd += ["--models", *archives]
        env = {
            **os.environ,
            "TMPDIR": str(self.state / "tmp"),  # TorchServe's PID file
            "TEMP": str(self.state / "tmp"),  # java.io.tmpdir: the workers' sockets (.ts.sock.9000, ...)
            "LOG_LOCATION": str(self.state / "logs"),
            "METRICS_LOCATION": str(self.state / "logs"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.state, start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(str(self.proc.pid), encoding="utf-8")
        deadline = time.monotonic() + timeout_s
        while not self.client.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-25:])
                self.stop()
                raise ServingError(f"TorchServe did not become healthy; log {self.log_file}:\n{tail}")
            time.sleep(0.3)
        for name in (a.split("=", 1)[0] for a in archives or [] if "=" in a):
            while not self.ready(name):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ServingError(f"model {name} has no ready worker; see {self.state / 'logs'}")
                time.sleep(0.3)
        return self

    def ready(self, model_name: str) -> bool:
        """True when a worker of the model's default version is READY."""
        try:
            versions = self.client.versions(model_name)
        except ServingError:
            return False
        return any(w.get("status") == "READY" for v in versions for w in v.get("workers", []))

    def running_pid(self) -> int | None:
        """The PID from the PID file when that process is alive."""
        return running_pid(self.pid_file)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the process group we started (SIGKILL after timeout_s); remove the PID file."""
        pid = self.proc.pid if self.proc is not None else self.running_pid()
        if pid is not None:
            stop_group(pid, timeout_s)
        if self.proc is not None:
            self.proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def wait(self) -> int:
        """Block until TorchServe exits (foreground serving); its exit code."""
        if self.proc is None:
            raise ServingError("TorchServe was not started by this process")
        return self.proc.wait()

    def __enter__(self) -> TorchServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
