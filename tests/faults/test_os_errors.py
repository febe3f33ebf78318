"""OS errors end in one line naming the path and the cause, and leave no temp file behind."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

import pytest

from medflow.errors import FileSystemError
from medflow.writers.atomic import TempFile, atomic_write_bytes
from tests.faults.helpers import QUICK, medflow, one_line, outputs_of, temp_files


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: run the suite as a normal user")
def test_read_only_output_folder_is_one_line_exit_2(project):
    out = project / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        done = medflow(project, "run", "recipe.yaml", "-q")
    finally:
        out.chmod(0o755)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line(done.stderr)
    assert str(out) in line and "permission denied (EACCES)" in line
    assert os.listdir(out) == []


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs: a folder nobody may create in")
def test_output_folder_the_system_refuses_is_one_line_exit_2(project):
    done = medflow(project, "run", "recipe.yaml", "-q", "--set", "outputs.dir=/sys/medflow-build")
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line(done.stderr)
    assert line.startswith("medflow: error: /sys/medflow-build: cannot create the folder: ")


def test_file_size_limit_fails_items_in_one_line_each_and_leaves_no_temp_file(project, reference):
    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = medflow(project, "run", "recipe.yaml", "-q", preexec_fn=small_files)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 4
    assert all(": cannot write /" in line and line.endswith("file too large (EFBIG)") for line in failed)
    assert temp_files(project / "out", project / "cache") == []
    empty = [p for p in project.rglob("*") if p.is_file() and p.stat().st_size == 0 and p.name != ".medflow-lock"]
    assert empty == []

    rerun = medflow(project, "run", "recipe.yaml", "-q")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert outputs_of(project / "out") == reference(QUICK)


class _FullDisk:
    """A file object on a full disk: writes are buffered, flushing and closing fail."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        return len(data)

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        self.real.close()
        raise OSError(errno.ENOSPC, "No space left on device")

    def fileno(self):
        return self.real.fileno()


def test_full_disk_on_commit_is_one_error_and_no_zero_byte_temp_file(tmp_path):
    temp = TempFile(tmp_path / "manifest.json")
    temp._file = _FullDisk(temp._file)
    temp.write(b"{}")
    with pytest.raises(FileSystemError) as caught:
        temp.commit()
    assert str(caught.value) == f"cannot write {tmp_path / 'manifest.json'}: no space left on device (ENOSPC)"
    assert os.listdir(tmp_path) == []


def test_abort_removes_the_temp_file_even_when_closing_fails(tmp_path):
    temp = TempFile(tmp_path / "a.npy")
    temp._file = _FullDisk(temp._file)
    temp.abort()
    assert os.listdir(tmp_path) == []


def test_unwritable_target_folder_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(FileSystemError) as caught:
        atomic_write_bytes(blocker / "sub" / "x.npy", b"data")
    assert str(blocker / "sub") in str(caught.value) and "(ENOTDIR)" in str(caught.value)
    assert QUICK  # the fault suite's recipe is importable here too
