"""A series' compressed slices decoded in order, here and on worker processes at the same time.

Decoders hold the GIL (GDCM, libjpeg, pylibjpeg-rle: two threads decode no faster than one),
so a build of one compressed series with several workers decodes on worker processes. The
slices ahead of the one the reader needs are submitted to the workers; the reader takes
each slice in z order: its worker's result when a worker has it, else it decodes it itself,
and while its slice is still decoding on a worker it decodes the furthest slice no worker has
started. So the reader never idles while there is work, starts before the workers are up
(waking them takes ~0.6-0.9 s), and a slow or dead worker only costs its own slices.

A worker's failure is never the file's verdict: the slice is decoded here again, and this
decode's error (worded by the reader) is the one raised. Errors surface in slice order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # importing concurrent.futures pulls in logging: start-up of every build
    from concurrent.futures import Future

#: ``submit(function, argument)`` -> a future of ``function(argument)`` on a worker process.
Submit = Callable[[Callable[[Any], np.ndarray], Any], "Future"]


class DecodeAhead:
    """Slices ``0 .. count - 1`` decoded, taken in increasing order with :meth:`take`.

    ``decode_here(index)``: the slice decoded in this process (raises the file's error).
    ``remote``: a picklable function of ``argument(index)`` giving the same array on a worker.
    ``window``: slices submitted ahead of the one taken (their arrays are held until taken).
    """

    def __init__(self, count: int, decode_here: Callable[[int], np.ndarray], submit: Submit,
                 remote: Callable[[Any], np.ndarray], argument: Callable[[int], Any], window: int):
        self._count = count
        self._decode_here = decode_here
        self._submit: Submit | None = submit
        self._remote = remote
        self._argument = argument
        self._window = window
        self._futures: dict[int, Future] = {}
        self._here: dict[int, tuple[np.ndarray | None, BaseException | None]] = {}
        self._next_submit = 0
        self._workers_up = False  # has a worker answered yet?

    def take(self, index: int) -> np.ndarray:
        """Slice ``index``'s decoded array (call with increasing ``index``)."""
        self._fill(index)
        if index in self._here:
            return self._result_here(index)
        future = self._futures.pop(index, None)
        if future is None or future.cancel():  # not submitted, or no worker started it
            return self._decode_here(index)
        if not future.done() and not self._workers_up:
            # loky hands futures to its call queue at once, before its workers are up (waking
            # them takes ~0.6-0.9 s): until one has answered, decode here rather than wait
            return self._decode_here(index)
        while not future.done():
            ahead = self._furthest_pending(index)
            if ahead is None:
                break
            self._here[ahead] = self._attempt(ahead)
        try:
            array = future.result()
        except Exception:  # noqa: BLE001 - a worker's failure or death: decode here, whose error counts
            if _broken(future):
                self._stop_submitting()
            return self._decode_here(index)
        self._workers_up = True
        return array

    def close(self) -> None:
        """Cancel what no worker started (the rest finishes on the workers and is dropped)."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        self._here.clear()

    def _fill(self, index: int) -> None:
        """Submit the slices up to ``index + window``."""
        self._next_submit = max(self._next_submit, index)
        while self._submit is not None and self._next_submit < min(self._count, index + self._window + 1):
            at = self._next_submit
            try:
                self._futures[at] = self._submit(self._remote, self._argument(at))
            except Exception:  # noqa: BLE001 - the pool is gone (shut down, broken): decode here
                self._stop_submitting()
                return
            self._next_submit += 1

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
