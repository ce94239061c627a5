"""The background services khmer-ocr starts (TorchServe, the local platform): PID files, free ports,
stopping by process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def group_alive(pid: int) -> bool:
    """True while any process of the group led by pid is alive (its leader is reaped if it is our child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(pid_file: Path) -> int | None:
    """The PID in pid_file while its process group is alive, else None."""
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return pid if group_alive(pid) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM the process group led by pid; SIGKILL what is left after timeout_s."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
