"""Progress of a build on stderr: MB read, items done, slices inside the running items, rate, ETA.

Drawn with tqdm (one small pure-Python package that does rate, ETA, unit scaling and
in-place redraw; rich would bring a whole rendering stack for one bar), on a terminal
only: in a pipe or a CI log it stays quiet and the summary says what happened.

Work is counted in bytes of input files (an item weighs what its files weigh), so one
large series moves the bar slice by slice: streamed items report each slab through
:data:`medflow.engine.stream.progress_callback`. Workers run in other processes; the
hook writes one small file per item into a private folder (:class:`SlabReporter`) that
the parent reads a few times a second. Items built as whole volumes advance when done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

#: How often the parent redraws, and how often a worker reports one item (seconds).
POLL_SECONDS = 0.25
REPORT_SECONDS = 0.2
_SUFFIX = ".progress"


class SlabReporter:
    """Worker side: ``(item id, slices done, slices total, bytes read)`` -> a small file in ``folder``.

    At most one write per item every :data:`REPORT_SECONDS`, and always the last slab.
    A report that cannot be written is dropped: progress never fails a build.
    """

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self._last: dict[str, float] = {}

    def __call__(self, item_id: str, slices_done: int, slices_total: int, bytes_read: int) -> None:
        now = time.monotonic()
        if slices_done < slices_total and now - self._last.get(item_id, 0.0) < REPORT_SECONDS:
            return
        self._last[item_id] = now
        name = hashlib.sha256(item_id.encode()).hexdigest()[:20] + _SUFFIX
        tmp = self.folder / f".{os.getpid()}-{name}"
        record = {"item": item_id, "done": slices_done, "total": slices_total, "bytes": bytes_read}
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.folder / name)
        except OSError:
            pass


class Progress:
    """The bar of one build's items; quiet unless ``stream`` is a terminal (and ``enabled``).

    Use ``with progress.run(plans) as channel:`` (the items' plans or tasks: anything with its
    ``item``), pass ``channel`` to the executor (the folder
    workers report slabs to, ``None`` when quiet), and call :meth:`update` per finished item.
    """

    def __init__(self, total: int = 0, *, label: str = "building", stream: TextIO | None = None,
                 enabled: bool = True):
        self.total = total
        self.done = 0
        self.failed = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled and self.tty
        self.bytes_done = 0  # bytes of the input files of finished items
        self.started = time.monotonic()
        self._weights: dict[str, int] = {}
        self._partial: dict[str, tuple[int, int, int]] = {}  # item -> (done, total, bytes) of its slices
        self._finished: set[str] = set()  # a late slab report of a finished item is ignored
        self._channel: Path | None = None
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @contextlib.contextmanager
    def run(self, tasks: Sequence[Any]) -> Iterator[str | None]:
        """Show the bar while the block runs; yields the folder workers report slabs to (or ``None``)."""
        self.total = len(tasks)
        if not (self.enabled and tasks):
            yield None
            return
        self._weights = {task.item.item_id: _weight(task.item) for task in tasks}
        self._channel = Path(tempfile.mkdtemp(prefix="medflow-progress-"))
        self._bar = _tqdm_bar(sum(self._weights.values()), self.label, self.stream)
        poller = threading.Thread(target=self._poll, name="medflow-progress", daemon=True)
        poller.start()
        try:
            yield os.fspath(self._channel)
        finally:
            self._stop.set()
            poller.join()
            self._redraw(final=True)
            with contextlib.suppress(OSError, ValueError):
                self._bar.close()
            shutil.rmtree(self._channel, ignore_errors=True)

    def update(self, ok: bool, item_id: str | None = None) -> None:
        """One item finished (``ok`` or not)."""
        with self._lock:
            self.done += 1
            self.failed += not ok
            if item_id is not None:
                self.bytes_done += self._weights.get(item_id, 0)
                self._partial.pop(item_id, None)
                self._finished.add(item_id)
        self._redraw()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._read_channel()
            self._redraw()

    def _read_channel(self) -> None:
        try:
            entries = [e for e in os.scandir(self._channel) if e.name.endswith(_SUFFIX)]
        except OSError:
            return
        for entry in entries:
            try:
                record = json.loads(Path(entry.path).read_text())
            except (OSError, ValueError):
                continue
            with self._lock:
                if record["item"] in self._weights and record["item"] not in self._finished:
                    self._partial[record["item"]] = (record["done"], record["total"], record["bytes"])

    def _redraw(self, final: bool = False) -> None:
        if self._bar is None:
            return
        with self._lock:
            partial = sum(
                self._weights.get(item, 0) * done // max(total, 1) for item, (done, total, _) in self._partial.items()
            )
            position = min(self.bytes_done + partial, self._bar.total)
            running = [f"{done}/{total} slices" for done, total, _ in self._partial.values() if done < total]
            postfix = f"{self.done}/{self.total} items" + (f", {self.failed} failed" if self.failed else "")
            if running and not final:
                postfix += ", " + ", ".join(running[:3]) + (", ..." if len(running) > 3 else "")
            try:
                self._bar.set_postfix_str(postfix, refresh=False)
                self._bar.update(max(0, position - self._bar.n))
            except (OSError, ValueError):  # stderr closed (a pipe whose reader left): stay quiet
                self._bar.disable = True


def _weight(item: Any) -> int:
    """Bytes of an item's input files (at least 1, so every item moves the bar)."""
    total = 0
    for rel in item.files:
        with contextlib.suppress(OSError):
            total += os.stat(Path(item.root) / rel).st_size
    return max(total, 1)


def _tqdm_bar(total: int, label: str, stream: TextIO):
    from tqdm import tqdm

    columns, rows = shutil.get_terminal_size((100, 20))  # a terminal that reports 0 x 0 gets 100 x 20
    return tqdm(
        total=total, desc=label, file=stream, unit="B", unit_scale=True, unit_divisor=1000, ncols=columns, nrows=rows,
        smoothing=0.1, mininterval=0.2, leave=True,
        bar_format="{desc} {percentage:3.0f}%|{bar:16}| {n_fmt}B/{total_fmt}B read, {rate_fmt}, ETA {remaining}"
                   "{postfix}",  # tqdm puts ', ' before the postfix
    )


__all__ = ["Progress", "SlabReporter"]
