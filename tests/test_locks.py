"""medflow.locks: an exclusive flock, checked against filelock (the library it stands in for) and real processes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medflow import locks
from medflow.locks import FileLock

pytestmark = pytest.mark.skipif(locks.fcntl is None, reason="flock is POSIX (elsewhere medflow uses filelock)")

HOLD = """
import sys, time
from medflow.locks import FileLock
lock = FileLock(sys.argv[1])
assert lock.acquire(wait=False)
print("held", flush=True)
time.sleep(60)
"""


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_until_the_first_releases(tmp_path):
    path = tmp_path / ".medflow-lock"
    first, second = FileLock(path), FileLock(path)
    assert first.acquire(wait=False) and first.is_locked
    assert first.acquire(wait=False)  # held already: not an error
    assert second.acquire(wait=False) is False and not second.is_locked
    first.release()
    assert not first.is_locked
    assert second.acquire(wait=False)
    second.release()
    assert path.exists()  # left in place: every waiter locks the same inode
    first.release()  # releasing what is not held does nothing


def test_filelock_and_medflow_exclude_one_another(tmp_path):
    from filelock import FileLock as Library
    from filelock import Timeout

    path = tmp_path / "lock"
    ours, theirs = FileLock(path), Library(str(path), thread_local=False)
    assert ours.acquire(wait=False)
    with pytest.raises(Timeout):
        theirs.acquire(timeout=0)
    ours.release()
    theirs.acquire(timeout=0)
    assert ours.acquire(wait=False) is False
    theirs.release()
    assert ours.acquire(wait=False)
    ours.release()


def test_the_os_releases_the_lock_of_a_killed_process(tmp_path):
    path = tmp_path / "lock"
    proc = _holder(path)
    try:
        assert FileLock(path).acquire(wait=False) is False
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lock = FileLock(path)
    assert lock.acquire(wait=False)
    lock.release()


def test_waiting_blocks_until_the_holder_dies(tmp_path):
    path = tmp_path / "lock"
    proc = _holder(path)
    killer = subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(0.5); os.kill({proc.pid}, 9)"])
    start = time.monotonic()
    lock = FileLock(path)
    try:
        assert lock.acquire(wait=True)
        assert time.monotonic() - start >= 0.4
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        lock.release()
        proc.kill()
        killer.wait()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc to list a child's descriptors")
def test_the_lock_descriptor_is_not_inherited_by_child_processes(tmp_path):
    path = tmp_path / "lock"
    lock = FileLock(path)
    assert lock.acquire(wait=False)
    try:
        listing = "import os; print([os.path.realpath('/proc/self/fd/' + n) for n in os.listdir('/proc/self/fd')])"
        child = subprocess.run([sys.executable, "-c", listing], close_fds=False, capture_output=True, text=True,
                               check=True)
    finally:
        lock.release()
    assert "/proc/self/fd" in listing and str(path) not in child.stdout, child.stdout


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("user's file")
    link = tmp_path / ".medflow-lock"
    link.symlink_to(target)
    with pytest.raises(OSError) as caught:
        FileLock(link).acquire(wait=False)
    assert caught.value.errno == errno.ELOOP
    assert target.read_text() == "user's file"


@pytest.mark.filterwarnings("ignore:flock not supported")  # filelock says it falls back to its soft lock
def test_a_file_system_without_flock_falls_back_to_filelock(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    path = tmp_path / "lock"
    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    first, second = FileLock(path), FileLock(path)
    assert first.acquire(wait=False) and first.is_locked
    assert second.acquire(wait=False) is False
    first.release()
    assert not first.is_locked
    assert second.acquire(wait=False)
    second.release()


def test_another_error_is_raised_and_leaves_no_descriptor_open(tmp_path, monkeypatch):
    def broken(fd, operation):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(locks.fcntl, "flock", broken)
    before = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").exists() else None
    with pytest.raises(OSError) as caught:
        FileLock(tmp_path / "lock").acquire(wait=False)
    assert caught.value.errno == errno.EIO
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before
