"""A full cache never fails an item: the item is built, the entry that does not fit is skipped
(its temp file removed), the run says so in one warning line, and a rebuild computes it again."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medflow.engine.build import build
from medflow.errors import FileSystemError
from medflow.recipe.loader import load_recipe
from medflow.writers.atomic import TempFile
from tests.dicom_factory import write_ct_series
from tests.faults.helpers import QUICK, medflow, temp_files

# the fault suite's recipe on a DICOM folder, in this process (the injected faults reach no worker)
# keeping every item's stored values (the large entries that fill a disk)
RECIPE = QUICK.replace("{sample: ct-phantom}", "{dicom: data}").replace(
    "workers: 2", "workers: 1\n  cache_stored_values: true")
assert "{dicom: data}" in RECIPE and "cache_stored_values: true" in RECIPE


def _data(folder: Path) -> None:
    write_ct_series(folder / "data", 1, n_slices=3, size=16)  # stored values: 1.5 KB
    write_ct_series(folder / "data", 2, n_slices=40, size=128)  # stored values: 1.25 MiB


def _tensors(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "tensors").glob("*.npy"))}


@pytest.fixture
def roomy(tmp_path) -> dict[str, bytes]:
    """The tensors of the same build with a cache that has room."""
    folder = tmp_path / "roomy"
    _data(folder)
    (folder / "recipe.yaml").write_text(RECIPE)
    report = build(load_recipe(folder / "recipe.yaml", overrides=[f"engine.cache_dir={folder / 'cache'}"]),
                   show_progress=False)
    assert report.exit_code == 0 and not report.warnings
    return _tensors(folder / "out")


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("mount"),
                    reason="mounting a small tmpfs needs root on Linux (CI runs as root)")
def test_a_cache_on_a_full_file_system_still_builds_every_item(tmp_path, roomy):
    """A real 512 KiB tmpfs: the larger series' stored values do not fit, its record and outputs do."""
    _data(tmp_path)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        done = medflow(tmp_path, "run", "recipe.yaml", "--set", f"engine.cache_dir={mount / 'cache'}")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2/2 items ok, 0 failed" in done.stdout
        warnings = [line for line in done.stdout.splitlines() if line.startswith("WARNING: ")]
        assert len(warnings) == 1 and "the cache is full: 1 item(s)" in warnings[0]
        assert "no space left on device (ENOSPC)" in warnings[0] and str(mount / "cache") in warnings[0]
        assert _tensors(tmp_path / "out") == roomy
        assert temp_files(mount) == []
        entries = list((mount / "cache").rglob("*.mfc"))  # the small series' stored values, not half of the other's
        assert len(entries) == 1 and entries[0].stat().st_size < 64 * 1024

        again = medflow(tmp_path, "run", "recipe.yaml", "--set", f"engine.cache_dir={mount / 'cache'}")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 computed, 2 from cache" in again.stdout  # the records fitted: the outputs are known good
        assert _tensors(tmp_path / "out") == roomy
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _failing_cache_writes(monkeypatch, cache: Path, code: int) -> list[Path]:
    """Writes of array entries under ``cache`` fail with ``code`` (after a first write: mid-entry)."""
    original, failed = TempFile.write, []

    def write(self, data):
        if self.path.suffix == ".mfc" and cache in self.path.parents and self.tell() > 0:
            failed.append(self.path)
            self.abort()
            raise FileSystemError(str(self.path), OSError(code, os.strerror(code)))
        return original(self, data)

    monkeypatch.setattr(TempFile, "write", write)
    return failed


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole-volume"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_cache_entries_that_do_not_fit_are_skipped_and_the_items_built(tmp_path, monkeypatch, roomy, code, stream):
    _data(tmp_path)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    cache = tmp_path / "cache"
    failed = _failing_cache_writes(monkeypatch, cache, code)
    overrides = [f"engine.cache_dir={cache}", f"engine.stream={'true' if stream else 'false'}"]
    report = build(load_recipe(tmp_path / "recipe.yaml", overrides=overrides), show_progress=False)
    assert failed, "no cache entry was written"
    assert report.exit_code == 0 and report.ok == 2 and not report.failed
    assert _tensors(tmp_path / "out") == roomy
    (warning,) = report.warnings
    assert warning.startswith("the cache is full: 2 item(s) were built but not (all) cached, cannot write ")
    assert f"({errno.errorcode[code]})" in warning
    assert report.manifest["run"]["warnings"] == [warning]
    assert temp_files(cache) == [] and list(cache.rglob("*.mfc")) == []

    monkeypatch.undo()
    again = build(load_recipe(tmp_path / "recipe.yaml", overrides=overrides), show_progress=False)
    assert again.exit_code == 0 and not again.warnings and again.from_cache == 2  # records were kept
    assert _tensors(tmp_path / "out") == roomy


def test_other_cache_write_errors_still_fail_the_item(tmp_path, monkeypatch):
    """Only a full disk is forgiven: an I/O error in the cache is the item's failure, as before."""
    _data(tmp_path)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    cache = tmp_path / "cache"
    _failing_cache_writes(monkeypatch, cache, errno.EIO)
    report = build(load_recipe(tmp_path / "recipe.yaml", overrides=[f"engine.cache_dir={cache}"]), show_progress=False)
    assert report.exit_code == 1 and len(report.failed) == 2 and not report.warnings
    assert all("input/output error (EIO)" in reason for _, reason in report.failed)
    assert temp_files(cache) == []
