"""How many threads the item being computed may use (SimpleITK filters, the NIfTI compressor).

The engine decides per item (:attr:`medflow.engine.task.ItemTask.threads`: 1 when there are at
least as many items as workers, ``workers // items`` otherwise) and runs the item inside
:func:`threads_for_item`; steps and writers ask :func:`item_threads`. Outside the engine (a
direct call of a step or op), ``OMP_NUM_THREADS`` limits it when set, else the library's own
default applies (SimpleITK: every core). Outputs never depend on the thread count.

The cores a process may use are its CPU affinity, capped by a cgroup CPU limit: a container
(Docker ``--cpus``, a Kubernetes CPU limit) or a systemd ``CPUQuota`` sees every core of the
host in its affinity but may only keep its quota of them busy, and a build that started one
worker per host core there would only slow itself down.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_ITEM_THREADS: ContextVar[int | None] = ContextVar("medflow_item_threads", default=None)

#: Cores a streamed item keeps busy on its own: its reader and its write thread (which also
#: hashes; measured: ~1.7 cores for a native series, ~1.3 for a JPEG Lossless one, one worker).
STREAM_CORES = 2


def usable_cores() -> int:
    """CPU cores this process may keep busy: :func:`affinity_cores`, capped by a cgroup CPU limit."""
    cores, limit = affinity_cores(), cgroup_cpu_limit()
    return min(cores, limit) if limit is not None else cores


def affinity_cores() -> int:
    """CPU cores this process may run on: its affinity where the OS tells it, else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@functools.cache
def cgroup_cpu_limit(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> int | None:
    """The CPU limit of this process's cgroup and its ancestors in whole cores (a quota of 1.5 cores is 2), or
    ``None`` when none is set or the system has no cgroups. Never raises.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"); v1: ``cpu.cfs_quota_us`` (-1: none) over
    ``cpu.cfs_period_us`` under the ``cpu`` controller's mount. ``membership`` (``/proc/self/cgroup``) names the
    process's cgroup; a container sees its own as ``/``. The tightest limit of the cgroup and its parents
    applies. Read once per process: a limit changed while a build runs is seen by the next one.
    """
    try:
        lines = Path(membership).read_text().splitlines()
    except OSError:
        lines = []
    limits = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2 (the unified hierarchy)
            limits += _limits_along(Path(root), path, _v2_limit)
        elif "cpu" in controllers.split(","):
            mount = next((Path(root) / name for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")
                          if (Path(root) / name / "cpu.cfs_quota_us").exists()), None)
            if mount is not None:
                limits += _limits_along(mount, path, _v1_limit)
    if not lines:  # no membership file: the container view of either version at the root
        limits += [limit for limit in (_v2_limit(Path(root)), _v1_limit(Path(root) / "cpu")) if limit]
    return min(limits) if limits else None


def _limits_along(mount: Path, path: str, read) -> list[int]:
    """The limits ``read`` finds in the cgroup folder ``mount/path`` and each parent folder up to ``mount``."""
    folder = mount / path.strip("/") if path.strip("/") else mount
    found = []
    while True:
        limit = read(folder)
        if limit is not None:
            found.append(limit)
        if folder == mount or mount not in folder.parents:
            return found
        folder = folder.parent


def _v2_limit(folder: Path) -> int | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else _cores_of(int(quota), int(period))
    except (OSError, ValueError):
        return None


def _v1_limit(folder: Path) -> int | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else _cores_of(quota, period)


def _cores_of(quota: int, period: int) -> int | None:
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


#: Worker processes are woken only when the work left, at this process's own pace, would take longer
#: than this: waking one costs ~0.3 s of CPU and 0.35-0.9 s of wall time on the 2-core benchmark VM
#: (the interpreter, numpy, medflow, a decoder), so a shorter build is done before one would help ...
WORKER_START_SECONDS = 1.0
#: ... the pace judged from at least this much work (a first unit pays one-time costs: tables, imports).
PACE_SECONDS = 0.1


def worth_waking_workers(seconds: float, done: int, left: int, start_seconds: float | None = None) -> bool:
    """Would ``left`` more units take longer than ``start_seconds`` (:data:`WORKER_START_SECONDS`) at the
    pace of ``done`` units in ``seconds``?

    Judged after :data:`PACE_SECONDS` of work (or ``start_seconds``, when shorter); with no unit
    done yet, the one running counts as taking at least ``seconds``. ``start_seconds`` <= 0: always.
    """
    limit = WORKER_START_SECONDS if start_seconds is None else start_seconds
    if limit <= 0:
        return True
    return seconds >= min(PACE_SECONDS, limit) and seconds / max(1, done) * left > limit


def gather_threads(threads: int) -> int:
    """Threads for a streamed item's slab gathers, given its ``threads``: only on cores its own threads leave.

    On 2 cores a gather pool only competed with the item's write and hash threads: one series with 2
    workers was 3-30% slower than with 1 (bench_variants.py before this rule; benchmarks/NOTES.md).
    """
    return max(1, min(int(threads), usable_cores() - STREAM_CORES + 1))


def item_threads() -> int | None:
    """Threads the current item may use; ``None``: not decided (use the library's default)."""
    threads = _ITEM_THREADS.get()
    if threads is not None:
        return threads
    value = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(value)) if value.strip().isdigit() else None


@contextmanager
def threads_for_item(threads: int) -> Iterator[None]:
    """Within the block, :func:`item_threads` is ``threads`` (at least 1)."""
    token = _ITEM_THREADS.set(max(1, int(threads)))
    try:
        yield
    finally:
        _ITEM_THREADS.reset(token)
