"""Inputs reported, never silently changed: links, empty sources, odd-sized slices (real command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.dicom_factory import write_ct_series, write_ct_slice
from tests.faults.helpers import REPO

RECIPE = """\
medflow: 1
name: inputs
source: {dicom: src}
steps: [{step: window, level: 40, width: 400}]
outputs: {dir: out, writers: [{kind: npy}]}
engine: {workers: 1}
"""


def _run(folder: Path) -> subprocess.CompletedProcess:
    (folder / "recipe.yaml").write_text(RECIPE)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "medflow", "run", "recipe.yaml", "-q"], cwd=folder,
                          capture_output=True, text=True, env=env, timeout=120)


def test_dangling_and_looping_links_are_unreadable_files_not_a_crash(tmp_path):
    write_ct_series(tmp_path / "src", 1, n_slices=3)
    os.symlink(tmp_path / "src" / "gone.dcm", tmp_path / "src" / "s1" / "dangling.dcm")
    os.symlink(tmp_path / "src" / "s1" / "loop_b.dcm", tmp_path / "src" / "s1" / "loop_a.dcm")
    os.symlink(tmp_path / "src" / "s1" / "loop_a.dcm", tmp_path / "src" / "s1" / "loop_b.dcm")
    done = _run(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    unreadable = sorted(line for line in done.stdout.splitlines() if line.startswith("UNREADABLE"))
    assert len(unreadable) == 3
    assert all("dangling or looping symbolic link" in line for line in unreadable)
    assert any("s1/dangling.dcm" in line for line in unreadable)
    assert len(list((tmp_path / "out").rglob("*.npy"))) == 1  # the series itself is built


def test_an_empty_source_says_where_it_looked(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("no images here\n")
    done = _run(tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert f"no DICOM file found in {tmp_path / 'src'} (1 other file(s) looked at)" in line


def test_a_slice_of_another_size_fails_its_series_naming_file_and_sizes(tmp_path):
    write_ct_series(tmp_path / "src", 1, n_slices=4, size=16)
    write_ct_slice(tmp_path / "src" / "s1" / "slice002.dcm", series=1, index=2, z=4.0, size=8,
                   pixels=np.zeros((8, 8), np.int16))
    done = _run(tmp_path)
    assert done.returncode == 1
    [line] = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert "s1/slice002.dcm" in line and "Rows x Columns 8x8 differ from the 16x16" in line
    assert not list((tmp_path / "out").rglob("*.npy"))  # never a silently shorter or split volume


def _with_vr(path: Path, tag_bytes: bytes, old_vr: bytes, new_vr: bytes) -> None:
    """Rewrite one explicit-VR element's VR in place (a damaged file pydicom parses but cannot convert)."""
    data = path.read_bytes()
    at = data.index(tag_bytes + old_vr)
    path.write_bytes(data[:at + 4] + new_vr + data[at + 6:])


def test_a_value_of_unknown_vr_fails_its_own_series_naming_the_file_and_the_rest_is_built(tmp_path):
    """pydicom raises NotImplementedError converting a value of unknown VR: one such file must not
    abort discovery (it did: a traceback, nothing built), but fail its series, named; another series builds."""
    for series in (1, 2):
        write_ct_series(tmp_path / "src", series, n_slices=3, size=16)
    damaged = sorted((tmp_path / "src" / "s1").glob("*.dcm"))[1]
    _with_vr(damaged, b"\x08\x00\x60\x00", b"CS", b"ZZ")  # Modality (0008,0060)
    done = _run(tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and str(damaged) in failed[0] and "Unknown Value Representation 'ZZ'" in failed[0], out
    assert "1/2 items ok, 1 failed" in out
    assert len(list((tmp_path / "out").rglob("*.npy"))) == 1


def test_an_unconvertible_pixel_description_value_the_recipe_never_reads_does_not_fail_the_series(tmp_path):
    """HighBit (0028,0102) with a damaged VR: the pixel description keys it by its raw bytes, and the
    series builds with the very values of an undamaged copy (it failed, naming no file)."""
    for name in ("damaged", "clean"):
        write_ct_series(tmp_path / name / "src", 1, n_slices=3, size=16)
    _with_vr(sorted((tmp_path / "damaged" / "src" / "s1").glob("*.dcm"))[1], b"\x28\x00\x02\x01", b"US", b"ZZ")
    arrays = {}
    for name in ("damaged", "clean"):
        done = _run(tmp_path / name)
        assert done.returncode == 0, done.stdout + done.stderr
        [npy] = (tmp_path / name / "out").rglob("*.npy")
        arrays[name] = np.load(npy)
    assert arrays["damaged"].shape == (3, 16, 16)
    assert np.array_equal(arrays["damaged"], arrays["clean"])
