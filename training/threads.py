"""How many threads training may use: the cores this process can actually run on.

``os.cpu_count()`` counts the machine's cores, not the ones a process may use: a CPU
affinity mask (``taskset``, a container's cpuset) or a cgroup CPU quota (a container's
``--cpus``) gives it fewer. LightGBM with more OpenMP threads than usable cores makes every
thread wait at each barrier for a descheduled sibling, so training slows by far more than the
share of CPU it lost. :func:`available_cores` is the smallest of the three limits.

Every usable core, whatever the training set's size: with OpenMP's threads waiting
passively (``training/__init__.py``) a second thread costs no extra CPU time even on a few
thousand rows, and on a busy machine it gets the process a second share of the cores
(``benchmarks/training.py``). The trees do not depend on the thread count (``deterministic``
and row-wise histograms), only the model text's parameter line does.

BLAS: scipy's L-BFGS-B calls OpenBLAS on four-parameter problems; with OpenBLAS's own
threads it spends most of a BTYD fit waking them (:func:`single_thread_blas`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from threadpoolctl import threadpool_limits

CGROUP_ROOT = Path("/sys/fs/cgroup")


def quota_cores(text: str) -> float | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` line ("max 100000" or "150000 100000")."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None


def _v1_cores(group: Path) -> float | None:
    """Cores of a cgroup v1 cpu group's CFS quota; None when unlimited (-1) or unreadable."""
    quota, period = _read(group / "cpu.cfs_quota_us"), _read(group / "cpu.cfs_period_us")
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cores(root: Path = CGROUP_ROOT, membership: str | None = None) -> float | None:
    """The CPU quota of this process's cgroup in cores, or None without a quota.

    cgroup v2: ``cpu.max`` of the process's group and every group above it (the smallest
    wins). cgroup v1: ``cpu/cpu.cfs_quota_us`` over ``cpu.cfs_period_us`` (-1: no quota).
    ``membership`` is the text of ``/proc/self/cgroup`` (read when None).
    """
    if membership is None:
        membership = _read(Path("/proc/self/cgroup")) or ""
    limits: list[float] = []
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, group = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2
            node = root / group.lstrip("/")
            while True:
                cores = quota_cores(_read(node / "cpu.max") or "")
                if cores is not None:
                    limits.append(cores)
                if node == root or root not in node.parents:
                    break
                node = node.parent
        elif "cpu" in controllers.split(","):  # cgroup v1
            for base in (root / "cpu" / group.lstrip("/"), root / "cpu"):
                cores = _v1_cores(base)
                if cores is not None:
                    limits.append(cores)
                    break
    return min(limits) if limits else None


def available_cores() -> int:
    """Cores this process may use: affinity mask, cgroup quota (rounded up), machine."""
    cores = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    quota = cgroup_cores()
    if quota is not None:
        cores = min(cores, max(math.ceil(quota), 1))
    return max(cores, 1)


def booster_threads(requested: int | None = None) -> int:
    """LightGBM threads for training: ``requested`` if given, else :func:`available_cores`."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested
    return available_cores()


@contextmanager
def single_thread_blas() -> Iterator[None]:
    """OpenBLAS (and any other BLAS) on one thread inside the block, restored after."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
