"""The background services khmer-ocr starts (TorchServe, the local platform): PID files, free ports,
stopping by process group; and the process pool of data generation and validation."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


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


def _pool_worker_signals(initializer: Callable[..., None] | None, *args: Any) -> None:
    """Pool initializer: Ctrl-C is the parent's to handle; SIGTERM kills (a forked worker inherits the
    parent's handler, e.g. an Airflow task's, which swallows the SIGTERM of Pool.terminate: it hung)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*args)


@contextlib.contextmanager
def worker_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> Iterator[multiprocessing.pool.Pool]:
    """A process pool (forked where the platform can, else spawned) that is closed and joined when the block
    ends normally and terminated when it raises."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(
        workers, initializer=_pool_worker_signals, initargs=(initializer, *initargs)
    )
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def forking() -> bool:
    """True when worker_pool forks (its workers inherit the parent's objects instead of pickling them)."""
    return "fork" in multiprocessing.get_all_start_methods()
