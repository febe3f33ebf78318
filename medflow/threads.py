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
