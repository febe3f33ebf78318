"""A progress line on stderr: items done/total, failures, rate, ETA.

On a terminal the line is redrawn in place; otherwise (CI logs, pipes) a line is
printed at most every few seconds and at the end, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, *, label: str = "building", stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.failed = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last_print = 0.0

    def update(self, ok: bool) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
        self._draw(final=self.done == self.total)

    def _draw(self, final: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and not self.tty and now - self._last_print < 5.0:
            return
        self._last_print = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "." * (width - filled)
        text = (
            f"{self.label} [{bar}] {self.done}/{self.total} items  {self.failed} failed  "
            f"{rate:.2f} items/s  ETA {eta:.0f}s"
        )
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
