"""A series' compressed slices decoded in order, here and on worker processes at the same time.

Decoders hold the GIL (GDCM, libjpeg, pylibjpeg-rle: two threads decode no faster than one),
so a build of one compressed series with several workers decodes on worker processes too.

The reader decodes every slice itself until its own pace says the slices left would take longer
than :data:`~medflow.threads.WORKER_START_SECONDS` to decode here (waking a worker costs ~0.3 s
of CPU and 0.5-0.9 s of wall time: a short series is done before one would help). It then wakes the
workers with a probe, the decoding of the series' last slices (so a worker's first call also
imports the decoder this series needs, and its result is used at the end). Until a probe
answered, the reader keeps decoding every slice itself and submits nothing more: loky marks
calls as running as soon as they are queued, before any worker is up, so a worker that came up
late would start on slices the reader had already passed, and the reader, finding them
"running", would decode them again (every slice decoded twice: what an earlier version of this
module measured on 2 cores). Once the workers are up, the slices ahead of the one taken
(``window``) go to them; the reader takes each slice in z order, its worker's result when done,
else decodes it itself when no worker started it, and while its slice is still decoding on a
worker it decodes the furthest slice no worker has started. So the reader never idles while
there is work and a slow or dead worker only costs its own slices.

A worker's failure is never the file's verdict: the slice is decoded here again, and this
decode's error (worded by the reader) is the one raised. Errors surface in slice order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medflow.threads import worth_waking_workers

if TYPE_CHECKING:  # importing concurrent.futures pulls in logging: start-up of every build
    from concurrent.futures import Future

#: ``submit(function, argument)`` -> a future of ``function(argument)`` on a worker process.
Submit = Callable[[Callable[[Any], np.ndarray], Any], "Future"]



@dataclass(frozen=True)
class DecodeWorkers:
    """Worker processes a reader may wake: ``count`` of them; ``start()`` wakes them and gives their submit."""

    count: int
    start: Callable[[], Submit | None]



class DecodeAhead:
    """Slices ``0 .. count - 1`` decoded, taken in increasing order with :meth:`take`.

    ``decode_here(index)``: the slice decoded in this process (raises the file's error).
    ``start_workers()``: wakes the worker processes and returns their ``submit`` (None: none);
    called once, when the reader's pace says they are worth it (``start_after``: seconds of
    decoding left that are, :data:`~medflow.threads.WORKER_START_SECONDS` by default; 0 wakes them
    at the first slice taken).
    ``remote``: a picklable function of ``argument(index)`` giving the same array on a worker.
    ``window``: slices submitted ahead of the one taken (their arrays are held until taken).
    """

    def __init__(self, count: int, decode_here: Callable[[int], np.ndarray],
                 start_workers: Callable[[], Submit | None], remote: Callable[[Any], np.ndarray],
                 argument: Callable[[int], Any], window: int, workers: int = 1, start_after: float | None = None):
        self._count = count
        self._decode_here_unmeasured = decode_here
        self._start_workers: Callable[[], Submit | None] | None = start_workers
        self._submit: Submit | None = None
        self._remote = remote
        self._argument = argument
        self._window = window
        self._workers = max(1, workers)
        self._start_after = start_after
        self._futures: dict[int, Future] = {}
        self._here: dict[int, tuple[np.ndarray | None, BaseException | None]] = {}
        self._probes: list[Future] = []
        self._next_submit = 0
        self._workers_up = False  # has a probe answered?
        self._decoded_here = 0  # slices, and seconds spent on them: the reader's pace
        self._seconds_here = 0.0

    @property
    def workers_used(self) -> bool:
        """Did a worker's decoding reach the reader (a probe answered)?"""
        return self._workers_up

    def take(self, index: int) -> np.ndarray:
        """Slice ``index``'s decoded array (call with increasing ``index``)."""
        self._wake_or_fill(index)
        if index in self._here:
            return self._result_here(index)
        future = self._futures.pop(index, None)
        if future is None or future.cancel():  # not submitted, or no worker started it
            return self._decode_here(index)
        if not future.done() and not self._workers_up:  # a probe still on its way: never wait for it
            return self._decode_here(index)
        while not future.done():
            ahead = self._furthest_pending(index)
            if ahead is None:
                break
            self._here[ahead] = self._attempt(ahead)
        try:
            return future.result()
        except Exception:  # noqa: BLE001 - a worker's failure or death: decode here, whose error counts
            if _broken(future):
                self._stop_submitting()
            return self._decode_here(index)

    def close(self) -> None:
        """Cancel what no worker started (the rest finishes on the workers and is dropped)."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        self._here.clear()

    def _wake_or_fill(self, index: int) -> None:
        """Wake the workers when they are worth it; once one answered, submit the slices up to ``index + window``."""
        if not self._workers_up:
            if self._start_workers is not None and worth_waking_workers(
                    self._seconds_here, self._decoded_here, self._count - index, self._start_after):
                self._wake(index)
            if not any(probe.done() for probe in self._probes):
                return
            self._workers_up = True
        self._next_submit = max(self._next_submit, index)
        while self._submit is not None and self._next_submit < min(self._count, index + self._window + 1):
            at = self._next_submit
            self._next_submit += 1
            if at not in self._futures and at not in self._here and not self._submit_one(at):
                return

    def _wake(self, index: int) -> None:
        """Start the workers with probes: the last slices, one per worker (not those about to be taken)."""
        start, self._start_workers = self._start_workers, None
        try:
            self._submit = start()
        except Exception:  # noqa: BLE001 - no workers to be had: decode here
            self._submit = None
        last = range(self._count - 1, max(index + self._window, self._count - 1 - self._workers), -1)
        for at in last:
            if not self._submit_one(at):
                return
            self._probes.append(self._futures[at])

    def _submit_one(self, at: int) -> bool:
        if self._submit is None:
            return False
        try:
            self._futures[at] = self._submit(self._remote, self._argument(at))
        except Exception:  # noqa: BLE001 - the pool is gone (shut down, broken): decode here
            self._stop_submitting()
            return False
        return True

    def _decode_here(self, index: int) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self._decode_here_unmeasured(index)
        finally:
            self._seconds_here += time.perf_counter() - started
            self._decoded_here += 1

    def _furthest_pending(self, index: int) -> int | None:
        """The furthest slice after ``index`` no worker started (its future cancelled), or None."""
        for ahead in sorted(self._futures, reverse=True):
            if ahead > index and ahead not in self._here and self._futures[ahead].cancel():
                del self._futures[ahead]
                return ahead
        return None

    def _attempt(self, index: int) -> tuple[np.ndarray | None, BaseException | None]:
        try:
            return self._decode_here(index), None
        except Exception as exc:  # noqa: BLE001 - raised when the slice is taken, in order
            return None, exc

    def _result_here(self, index: int) -> np.ndarray:
        array, error = self._here.pop(index)
        if error is not None:
            raise error
        assert array is not None
        return array

    def _stop_submitting(self) -> None:
        self._submit = None
        for ahead, future in list(self._futures.items()):
            if future.cancel():
                del self._futures[ahead]


def _broken(future: Future) -> bool:
    """Did the future fail because its pool broke (a worker died), not because of its file?"""
    from concurrent.futures.process import BrokenProcessPool

    error = future.exception()
    return isinstance(error, BrokenProcessPool) or type(error).__name__ in ("TerminatedWorkerError", "ShutdownExecutorError")
