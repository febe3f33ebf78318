"""Run one command as a child process and measure it: wall time, CPU time, peak memory.

Peak memory, two ways:

* ``maxrss_mb``: ``ru_maxrss`` from ``os.wait4`` on that one child. It is exact and
  per run (``wait4`` returns the child's own usage, merged with the descendants it waited
  for, so no delta of ``RUSAGE_CHILDREN`` is needed), but it is the peak of the *largest
  single process*, not of the tree. Children are started with ``vfork``/``exec`` from this
  small parent, so they do not inherit its resident size.
* ``tree_peak_mb``: the sum of the resident sizes of the child and all its descendants
  (e.g. joblib/loky workers), sampled every 50 ms with psutil. Short spikes between two
  samples can be missed; without psutil it is ``None``.

``peak_mb`` is the larger of the two: exact for one process, a lower bound for a tree.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import psutil
except ImportError:  # the tree sum is optional; wait4's exact peak is always there
    psutil = None

SAMPLE_S = 0.05


@dataclass
class Run:
    command: list[str]
    wall_s: float
    cpu_s: float  # user + system, child and its waited-for descendants
    maxrss_mb: float
    tree_peak_mb: float | None
    returncode: int
    log: str

    @property
    def peak_mb(self) -> float:
        return max(self.maxrss_mb, self.tree_peak_mb or 0.0)

    def as_dict(self) -> dict:
        return {**asdict(self), "peak_mb": self.peak_mb}


class _TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            total = 0
            try:
                processes = [root] + root.children(recursive=True)
            except psutil.Error:
                return
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._done.wait(SAMPLE_S)

    def stop(self) -> None:
        self._done.set()
        self.join()


def run(command: list[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``command`` to completion (output to ``log``) and measure it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        sampler = _TreeSampler(process.pid) if psutil is not None else None
        if sampler is not None:
            sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if sampler is not None:
            sampler.stop()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    return Run(
        command=[str(c) for c in command],
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,  # Linux: kilobytes
        tree_peak_mb=sampler.peak / 2**20 if sampler is not None else None,
        returncode=process.returncode,
        log=str(log),
    )


def tail(path: str | Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
