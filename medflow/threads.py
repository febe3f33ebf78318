"""How many threads the item being computed may use (SimpleITK filters, the NIfTI compressor).

The engine decides per item (:attr:`medflow.engine.task.ItemTask.threads`: 1 when there are at
least as many items as workers, ``workers // items`` otherwise) and runs the item inside
:func:`threads_for_item`; steps and writers ask :func:`item_threads`. Outside the engine (a
direct call of a step or op), ``OMP_NUM_THREADS`` limits it when set, else the library's own
default applies (SimpleITK: every core). Outputs never depend on the thread count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ITEM_THREADS: ContextVar[int | None] = ContextVar("medflow_item_threads", default=None)

#: Cores a streamed item keeps busy on its own: its reader and its write and hash threads
#: (measured: ~1.7 cores for a native series, ~1.3 for a JPEG Lossless one, one worker).
STREAM_CORES = 2


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def gather_threads(threads: int) -> int:
    """Threads for a streamed item's slab gathers, given its ``threads``: only on cores its own threads leave.

    On 2 cores a gather pool only competed with the write and hash threads: one series with 2
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
