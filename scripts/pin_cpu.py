"""pytest plugin: pin each pytest-xdist worker to its own CPU core.

With ``-n 2`` on a 2-core machine, two notebooks run at once. A JAX process spread over
both cores runs slower than one pinned to a single core (XLA's thread pool and the other
kernel fight over the cores), so each worker is pinned before it starts a kernel, and the
kernel, a child process, inherits the affinity. Nothing happens outside xdist, on systems
without ``os.sched_setaffinity``, or when there are more workers than cores.

Load with ``-p pin_cpu`` and ``scripts/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... only in workers
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > len(cores):
        return
    os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw")) % len(cores)]})
