"""Concurrent builds, killed builds and interrupted builds, as real processes.

After each fault a rerun must give the manifest items and bytes of an undisturbed build,
and no medflow temp file may remain in the output folder or the cache.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.faults.helpers import QUICK, SLOW, medflow, one_line, outputs_of, start_medflow, temp_files


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _is_loky_worker(pid: int) -> bool:
    """Not loky's resource trackers, also children of the build."""
    try:
        return b"popen_loky_posix" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_mid_build(proc, project: Path, timeout: float = 30) -> None:
    """Until an item's write is in flight (a worker's temp file) or an item's output is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if temp_files(project / "out" / "tensors", project / "cache" / "objects") or list(
            (project / "out").glob("tensors/*.npy")
        ):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    pytest.fail("the build never started writing")


def _wait_until_locked(proc, out: Path, timeout: float = 30) -> None:
    """Until the build holds the output folder's lock."""
    from filelock import FileLock, Timeout

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / ".medflow-lock").exists():
            probe = FileLock(str(out / ".medflow-lock"))
            try:
                probe.acquire(timeout=0)
            except Timeout:
                return
            probe.release()
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    pytest.fail("the build never took the lock")


def _slow_project(project: Path) -> Path:
    (project / "recipe.yaml").write_text(SLOW)
    return project


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find workers")
pytestmark = pytest.mark.slow


def test_two_concurrent_builds_on_one_output_both_end_well(project, reference):
    first = start_medflow(project, "run", "recipe.yaml", "-q")
    second = start_medflow(project, "run", "recipe.yaml", "-q")
    results = [proc.communicate(timeout=120) for proc in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), results
    stderr = results[0][1] + results[1][1]
    assert "Traceback" not in stderr
    assert outputs_of(project / "out") == reference(QUICK)
    assert temp_files(project / "out", project / "cache") == []


def test_second_build_with_no_wait_is_refused_and_the_first_is_undisturbed(project, reference):
    _slow_project(project)
    first = start_medflow(project, "run", "recipe.yaml", "-q")
    _wait_until_locked(first, project / "out")
    second = medflow(project, "run", "recipe.yaml", "-q", "--no-wait")
    assert first.poll() is None, "the first build must still be running"
    assert second.returncode == 2, second.stdout + second.stderr
    assert "another medflow build is writing to this folder" in one_line(second.stderr)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert outputs_of(project / "out") == reference(SLOW)


@needs_proc
def test_killed_parent_takes_its_workers_and_a_rerun_matches(project, reference):
    _slow_project(project)
    proc = start_medflow(project, "run", "recipe.yaml", "-q")
    _wait_mid_build(proc, project)
    # the build starts its worker process once its own pace says the items left are worth it
    deadline = time.monotonic() + 30
    while not (workers := [pid for pid in _children(proc.pid) if _is_loky_worker(pid)]) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    assert workers, "a 2-worker build has worker processes"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_running(pid) for pid in workers):
        time.sleep(0.05)
    assert not any(_running(pid) for pid in workers), "workers outlived their killed parent"
    assert not (project / "out" / "manifest.json").exists(), "the kill must land mid-build"

    rerun = medflow(project, "run", "recipe.yaml", "-q")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert outputs_of(project / "out") == reference(SLOW)
    assert temp_files(project / "out", project / "cache") == []


def test_killed_process_tree_leftovers_are_removed_by_the_next_run(project, reference):
    _slow_project(project)
    proc = start_medflow(project, "run", "recipe.yaml", "-q", start_new_session=True)
    _wait_mid_build(proc, project)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (project / "out" / "tensors").mkdir(parents=True, exist_ok=True)
    user_file = project / "out" / "tensors" / ".keep.tmp"  # not medflow's name: never removed
    user_file.write_text("mine")

    rerun = medflow(project, "run", "recipe.yaml", "-q")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert outputs_of(project / "out") == reference(SLOW)
    assert temp_files(project / "out", project / "cache") == []
    assert user_file.read_text() == "mine"


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("whole_group", [False, True], ids=["parent", "group"])
def test_interrupt_ends_in_one_line_and_leaves_no_temp_file(project, signum, code, whole_group):
    _slow_project(project)
    proc = start_medflow(project, "run", "recipe.yaml", "-q", start_new_session=True)
    _wait_mid_build(proc, project)
    if whole_group:  # like Ctrl-C in a terminal, or a service manager stopping the build
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert one_line(err) == (f"medflow: interrupted by {signal.Signals(signum).name}: finished items are kept; "
                             "run again to resume")
    assert temp_files(project / "out", project / "cache") == []
    assert not (project / "out" / "manifest.json").exists()


def test_the_build_log_is_written_while_the_build_holds_its_output_folder(project, monkeypatch):
    """A build waiting for the folder removes every other run's temp files once it holds it: the
    log written after the first let go lost its temp file (exit 1, ENOENT) or replaced the log
    of the build after it."""
    from medflow import cli
    from medflow.locks import FileLock

    held = []

    def probing(args, loaded, report, summary, real=cli._write_logs):
        probe = FileLock(report.out_dir / ".medflow-lock")
        free = probe.acquire(wait=False)
        if free:
            probe.release()
        held.append(not free)
        real(args, loaded, report, summary)

    monkeypatch.setattr(cli, "_write_logs", probing)
    assert cli.main(["run", str(project / "recipe.yaml"), "-q"]) == 0
    assert held == [True]
    assert "\n4/4 items ok, 0 failed" in (project / "out" / "build.log").read_text()
