"""What tasks need from the Celery workers that run them.

hostname: the name a worker reports for the task instances it runs ([core] hostname_callable). Several workers
on one machine (the local production topology, `make run-distributed`) would all report the machine's name:
each is started with KHMER_OCR_WORKER_NAME (airflow-worker, airflow-worker-gpu) and reports that instead.

child_processes: Celery's prefork pool runs its children as daemonic processes, and Airflow 3 forks each task
from one of them: the task inherits the daemon flag, and Python then refuses it any child process
("daemonic processes are not allowed to have children": data generation's process pool, DataLoader workers).
The task process is a forked process of its own, not a pool child: it may have children.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager


def hostname() -> str:
    """$KHMER_OCR_WORKER_NAME, else the fully qualified domain name (Airflow's default)."""
    return os.environ.get("KHMER_OCR_WORKER_NAME") or socket.getfqdn()


@contextmanager
def child_processes() -> Iterator[None]:
    """Let the current task start child processes while inside (a no-op outside Celery's pool)."""
    config = multiprocessing.current_process()._config  # the flag Process.start() checks
    daemon = config.pop("daemon", None)
    try:
        yield
    finally:
        if daemon is not None:
            config["daemon"] = daemon
