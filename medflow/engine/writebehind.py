"""Slab buffers reused from a pool, and writes done behind the computation on their own thread.

A streamed item computes slab k + 1 while slab k is hashed and written: BLAKE3 (``blake3``) and
file writes release the GIL for large buffers, so on two cores the write of a slab
overlaps the gather of the next one instead of following it. The buffers a slab lives in
go back to their :class:`~medflow.sources.pixels.BufferPool` once written, so a build touches the same few
megabytes from the first slab to the last (no fresh pages, a flat peak memory).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
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


class WriteAndHash:
    """The write and the hash of each slab, behind the computation, on one thread and the producer.

    Each slab gives two jobs, its write and its hash; each kind runs one job at a time in
    submission order (a file's bytes and a hasher's state are sequential). One thread runs the
    writes, and the hashes while no write waits. The producer, when it is ``depth`` slabs
    ahead (the writes are behind: slow page-cache allocation, a slow disk), runs the next hash
    itself instead of waiting. So one item keeps two threads busy on two cores, not three: with
    a hash thread of its own the seed build of gen200 took 0.458 s in-build against 0.417 s, the
    ICH build 0.247 s against 0.230 s (interquartile means of 21 interleaved whole processes on
    the 2-core benchmark VM): the third thread took CPU and the GIL from the producer.

    A slab's ``release`` runs once both its jobs are done or skipped. The first failure is
    raised by the next :meth:`submit` or by :meth:`finish`; the jobs after it only release.
    ``depth`` <= 0: no thread of its own, each slab written, hashed and released in
    :meth:`submit`; with ``hash_beside`` its hash runs on the process's :data:`BESIDE` thread
    while this one writes (a small item's slab: starting a thread per item costs more).
    """

    _WRITE, _HASH = 0, 1

    def __init__(self, depth: int = 2, hash_beside: bool = False):
        self._depth = depth
        self._error: BaseException | None = None
        self._inline = depth <= 0
        self._hash_beside = hash_beside
        if self._inline:
            return
        self._changed = threading.Condition()
        self._lanes: tuple[deque, deque] = (deque(), deque())  # waiting (work, slab) per kind
        self._busy = [False, False]
        self._unreleased = 0  # slabs submitted whose release has not run
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="medflow-write", daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[], None], digest: Callable[[], None],
               release: Callable[[], None] | None = None) -> None:
        """Queue a slab's ``write`` and ``digest``; returns once at most ``depth`` + 1 slabs are unreleased."""
        if self._inline:
            self._run_inline(write, digest, release)
            return
        slab = _Slab(release)
        with self._changed:
            if self._error is not None:
                raise self._error
            self._lanes[self._WRITE].append((write, slab))
            self._lanes[self._HASH].append((digest, slab))
            self._unreleased += 1
            self._changed.notify_all()
        self._wait(lambda: self._unreleased <= self._depth + 1)

    def finish(self) -> None:
        """Wait for every job (the caller hashes meanwhile); raise the first failure."""
        if self._inline:
            if self._error is not None:
                raise self._error
            return
        self._close()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Skip the jobs not yet started (their slabs are released) and wait for the thread; never raises."""
        if self._inline:
            return
        with self._changed:
            self._error = self._error or _Stopped()
        self._close()  # waits without raising the jobs' failure

    def _close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._wait(lambda: self._unreleased == 0, raise_error=False)
        self._thread.join()

    def _wait(self, done: Callable[[], bool], raise_error: bool = True) -> None:
        """Until ``done()``: run the next hash when none is running, else wait for a change."""
        while True:
            with self._changed:
                if raise_error and self._error is not None and not isinstance(self._error, _Stopped):
                    raise self._error
                if done():
                    return
                job = self._take(self._HASH)
                if job is None:
                    self._changed.wait()
                    continue
            self._do(self._HASH, job)

    def _run(self) -> None:
        while True:
            with self._changed:
                job, kind = None, None
                while job is None:
                    for kind in (self._WRITE, self._HASH):
                        job = self._take(kind)
                        if job is not None:
                            break
                    else:
                        if self._closing and not any(self._lanes):
                            return
                        self._changed.wait()
            self._do(kind, job)

    def _take(self, kind: int):
        """The next job of ``kind`` when none of its kind runs (caller holds the lock), marked running."""
        lane = self._lanes[kind]
        if self._busy[kind] or not lane:
            return None
        self._busy[kind] = True
        return lane.popleft()

    def _do(self, kind: int, job) -> None:
        work, slab = job
        try:
            if self._error is None:
                work()
        except BaseException as exc:  # noqa: BLE001 - raised to the producer by submit or finish
            with self._changed:
                self._error = self._error or exc
        finally:
            last = slab.done()
            if last:
                slab.release_buffers()
            with self._changed:
                self._busy[kind] = False
                if last:
                    self._unreleased -= 1
                self._changed.notify_all()

    def _run_inline(self, write, digest, release) -> None:
        if self._error is not None:
            raise self._error
        try:
            if self._hash_beside:
                BESIDE.run(digest, write)
            else:
                write()
                digest()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            if release is not None:
                release()


class Beside:
    """One thread of the process that runs a job while the calling thread runs another.

    For the items too small to pay for a write thread of their own (:class:`WriteAndHash` with
    ``depth`` 0), which are the whole of a dataset of 2-D images: started once, it hashes a slab
    while the item's thread writes it (BLAKE3 and file writes release the GIL). A slab of 3 MiB
    (512 x 512 x 3 float32) written and hashed 1.09 -> 0.63 ms on the 2-core benchmark VM; below
    ~256 KiB the hand-over costs what it saves. Callers may be several threads: their jobs run
    one after the other. A process forked from this one starts its own thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue | None = None
        self._pid: int | None = None

    def run(self, job: Callable[[], None], other: Callable[[], None]) -> None:
        """Run ``job`` on the helper thread and ``other`` on this one; return when both are done.

        Raises ``other``'s failure, else ``job``'s. Never returns while ``job`` may still run
        (both may read the same buffers, which the caller releases next).
        """
        done = threading.Event()
        failure: list[BaseException] = []

        def wrapped() -> None:
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - raised on the calling thread
                failure.append(exc)
            finally:
                done.set()

        self._queue().put(wrapped)
        try:
            other()
        finally:
            done.wait()
        if failure:
            raise failure[0]

    def _queue(self) -> queue.SimpleQueue:
        with self._lock:
            if self._jobs is None or self._pid != os.getpid():
                self._jobs, self._pid = queue.SimpleQueue(), os.getpid()
                threading.Thread(target=_serve, args=(self._jobs,), name="medflow-beside", daemon=True).start()
            return self._jobs


def _serve(jobs: queue.SimpleQueue) -> None:
    while True:
        jobs.get()()


#: The process's :class:`Beside` thread (started on first use).
BESIDE = Beside()


class _Slab:
    """A slab's two jobs: the second to finish releases its buffers."""

    __slots__ = ("_release", "_pending", "_lock")

    def __init__(self, release: Callable[[], None] | None):
        self._release, self._pending, self._lock = release, 2, threading.Lock()

    def done(self) -> bool:
        with self._lock:
            self._pending -= 1
            return self._pending == 0

    def release_buffers(self) -> None:
        if self._release is not None:
            self._release()
