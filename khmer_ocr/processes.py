"""Stopping the background services khmer-ocr starts (TorchServe, the local platform) by process group."""

from __future__ import annotations

import contextlib
import os
import signal
import time


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
