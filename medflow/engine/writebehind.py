"""Slab buffers reused from a pool, and writes done behind the computation on their own thread.

A streamed item computes slab k + 1 while slab k is hashed and written: BLAKE3 (``blake3``) and
file writes release the GIL for large buffers, so on two cores the write of a slab
overlaps the gather of the next one instead of following it. The buffers a slab lives in
go back to their :class:`~medflow.sources.pixels.BufferPool` once written, so a build touches the same few
megabytes from the first slab to the last (no fresh pages, a flat peak memory).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from medflow.sources.pixels import BufferPool  # noqa: F401 - the pool a slab's buffers come from


class WriteBehind:
    """Runs jobs in submission order on one thread; at most ``depth`` wait to run.

    Each job is ``(work, release)``: ``release`` runs after ``work`` whatever happens (it
    hands the slab's buffers back), also for the jobs skipped after a failure. The first
    failure is raised by the next :meth:`submit` or by :meth:`finish`.
    """

    def __init__(self, depth: int = 2):
        self._error: BaseException | None = None
        self._inline = depth <= 0
        if self._inline:  # no thread: each job runs in submit
            return
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="medflow-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            work, release = job
            try:
                if self._error is None:
                    work()
            except BaseException as exc:  # noqa: BLE001 - handed to the producing thread
                self._error = exc
            finally:
                if release is not None:
                    release()

    def submit(self, work: Callable[[], None], release: Callable[[], None] | None = None) -> None:
        if self._error is not None:
            raise self._error
        if self._inline:
            try:
                work()
            finally:
                if release is not None:
                    release()
            return
        self._queue.put((work, release))

    def finish(self) -> None:
        """Wait for every job; raise the first failure."""
        if self._inline:
            return
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Wait for the thread to end, skipping the jobs not yet started; never raises."""
        self._error = self._error or _Stopped()
        if self._inline:
            return
        self._queue.put(None)
        self._thread.join()


class _Stopped(Exception):
    """The producer gave up: remaining jobs only release their buffers."""
