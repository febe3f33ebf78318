"""Run one command as a child process and measure it: wall time, CPU time, peak memory.

Peak memory, two ways:

* ``maxrss_mb``: ``ru_maxrss`` from ``os.wait4`` on that one child. It is exact and
  per run (``wait4`` returns the child's own usage, merged with the descendants it waited
  for, so no delta of ``RUSAGE_CHILDREN`` is needed), but it is the peak of the *largest
  single process*, not of the tree.
* ``tree_peak_mb``: the sum of the resident sizes of the child and all its descendants
  (e.g. joblib/loky workers), sampled every 50 ms with psutil. Short spikes between two
  samples can be missed; without psutil it is ``None``.

``peak_mb`` is the larger of the two: exact for one process, a lower bound for a tree.

**The command is started by a small launcher, not by this process.** Linux keeps a process's
peak RSS across ``exec``: a child that ``subprocess`` starts (``vfork`` then ``exec``) reports at
least *this* process's peak, and a ``fork`` at least its current size. Until 2026-12-04 the child
was started from here, and ``bench_scale.py``, which writes its dataset in this process before
measuring, reported 74 MiB for every build, 1,000 files as 10,000 (74 MiB the writer's own
peak; a build of 1,000 files peaks at 54 MiB). The launcher (``python -I -S``, ~9 MiB) forks
the command and reports its ``wait4`` usage and the wall time from the fork to the end, so
neither its own start-up nor this process's size is counted (``python benchmarks/measure.py
--self-check`` shows both readings side by side).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import psutil
except ImportError:  # the tree sum is optional; wait4's exact peak is always there
    psutil = None

SAMPLE_S = 0.05

# Run by ``python -I -S -c`` with argv [result file, command...]: fork the command, wait for it,
# write "wall cpu maxrss_kb wait_status" to the result file.
_LAUNCHER = """
import os, sys, time
result, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(result, "w") as f:
    f.write(f"{wall!r} {usage.ru_utime + usage.ru_stime!r} {usage.ru_maxrss} {status}")
"""


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

    def __init__(self, pid: int, count_root: bool = True):
        super().__init__(daemon=True)
        self.pid = pid
        self.count_root = count_root  # False: the root is the launcher, only its descendants count
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
                processes = ([root] if self.count_root else []) + root.children(recursive=True)
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
    """Run ``command`` to completion (output to ``log``) and measure it (through the launcher, see above)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [str(c) for c in command]
    with tempfile.TemporaryDirectory(prefix="medflow-measure-") as folder, open(log, "wb") as out:
        result = Path(folder) / "usage"
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(result), *command]
        process = subprocess.Popen(launcher, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        sampler = _TreeSampler(process.pid, count_root=False) if psutil is not None else None
        if sampler is not None:
            sampler.start()
        launched = process.wait()
        if sampler is not None:
            sampler.stop()
        if launched != 0 or not result.is_file():
            raise RuntimeError(f"the measuring launcher failed (exit {launched}) on {command}")
        wall, cpu, maxrss_kb, status = result.read_text().split()
    return Run(
        command=command,
        wall_s=float(wall),
        cpu_s=float(cpu),
        maxrss_mb=int(maxrss_kb) / 1024,  # Linux: kilobytes
        tree_peak_mb=sampler.peak / 2**20 if sampler is not None else None,
        returncode=os.waitstatus_to_exitcode(int(status)),
        log=str(log),
    )


def _self_check() -> int:
    """This process grows to ~300 MiB, then measures ``python -c pass``: a launcher-less run reports
    the 300 MiB (Linux keeps the peak across ``exec``), :func:`run` must not."""
    grown = bytearray(300 << 20)
    grown[:: 4096] = b"x" * len(grown[:: 4096])
    del grown
    with tempfile.TemporaryDirectory() as folder:
        measured = run([sys.executable, "-c", "pass"], Path(folder) / "log")
        direct = subprocess.Popen([sys.executable, "-c", "pass"])
        _, _, usage = os.wait4(direct.pid, 0)
        direct.returncode = 0
    print(f"python -c pass: {measured.maxrss_mb:.0f} MiB through the launcher, {usage.ru_maxrss / 1024:.0f} MiB "
          f"started from this process; wall {measured.wall_s * 1000:.0f} ms, exit {measured.returncode}")
    return 0 if measured.maxrss_mb < 100 <= usage.ru_maxrss / 1024 and measured.returncode == 0 else 1


def tail(path: str | Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    if sys.argv[1:] != ["--self-check"]:
        raise SystemExit("usage: python benchmarks/measure.py --self-check")
    raise SystemExit(_self_check())
