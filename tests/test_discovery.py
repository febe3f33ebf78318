"""Discovery of DICOM folders: grouping into items, skipped files and their reasons, filters.

Expected groupings are derived from the files themselves with pydicom (UIDs, echo
numbers, ImageType), never from medflow.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import blake3
import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from medflow.errors import InputError
from medflow.recipe.model import SeriesFilter
from medflow.sources.base import item_fingerprint, make_item_id
from medflow.sources.discovery import discover_dicom, read_headers_for
from medflow.sources.filters import compile_path_glob, description_selected, modality_selected, path_selected
from medflow.sources.fingerprint import FingerprintMemo
from tests.conftest import shared_data_path

_shared_data = shared_data_path  # skip when absent, fail when MEDFLOW_REQUIRE_SHARED_DATA=1


def _discover(root: Path, **filter_fields):
    return discover_dicom(root, SeriesFilter(**filter_fields), FingerprintMemo(None))


def _blake3(path: Path) -> str:
    """A file's content digest as medflow records it, from the reference blake3 library."""
    return blake3.blake3(path.read_bytes()).hexdigest()


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Real pydicom test files under shuffled, partly extensionless names in nested folders,
    plus a text file, a truncated DICOM, an SR, a DICOMDIR and a hidden file."""
    root = tmp_path / "src"
    (root / "x" / "y").mkdir(parents=True)
    (root / "z").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "x" / "y" / "q7f2")
    shutil.copy(get_testdata_file("MR_small.dcm"), root / "z" / "img.dcm")
    shutil.copy(get_testdata_file("emri_small.dcm"), root / "z" / "cine")
    shutil.copy(get_testdata_file("test-SR.dcm"), root / "report")
    shutil.copy(get_testdata_file("DICOMDIR"), root / "DICOMDIR")
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "z" / ".hidden.dcm")
    (root / "notes.txt").write_text("not an image\n")
    (root / "x" / "trunc").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes()[:300])
    return root


def test_groups_real_files_and_reports_skipped_with_reasons(mixed_folder: Path):
    found = _discover(mixed_folder)
    skipped = dict(found.skipped)
    assert skipped["notes.txt"] == "not a DICOM file"
    assert skipped["x/trunc"].startswith("truncated header")
    assert skipped["report"].startswith("no pixel data")
    assert skipped["DICOMDIR"].startswith("DICOM media directory")
    assert skipped["z/.hidden.dcm"] == "hidden file"
    assert len(found.skipped) == 5

    by_files = {item.files: item for item in found.items}
    assert set(by_files) == {("x/y/q7f2",), ("z/img.dcm",), ("z/cine",)}
    assert [i.item_id for i in found.items] == sorted(i.item_id for i in found.items)
    for files, item in by_files.items():
        ds = pydicom.dcmread(mixed_folder / files[0], stop_before_pixels=True)
        multiframe = int(ds.get("NumberOfFrames") or 1) > 1
        assert item.kind == ("multiframe" if multiframe else "series")
        uids = [ds.SeriesInstanceUID, ds.SOPInstanceUID] if multiframe else [ds.SeriesInstanceUID]
        assert item.item_id == make_item_id(ds.Modality, *uids)
        assert item.modality == ds.Modality
        assert item.root == os.fspath(mixed_folder.resolve())
        assert item.fingerprint == item_fingerprint([(files[0], _blake3(mixed_folder / files[0]))])


def test_fingerprint_changes_only_for_the_changed_item(mixed_folder: Path):
    before = {i.files: i.fingerprint for i in _discover(mixed_folder).items}
    path = mixed_folder / "z" / "img.dcm"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one pixel byte
    path.write_bytes(bytes(data))
    after = {i.files: i.fingerprint for i in _discover(mixed_folder).items}
    assert after[("z/img.dcm",)] != before[("z/img.dcm",)]
    assert after[("x/y/q7f2",)] == before[("x/y/q7f2",)]


def test_include_exclude_modality_and_description_filters(mixed_folder: Path):
    only_z = _discover(mixed_folder, include=["z/**"])
    assert sorted(i.files[0] for i in only_z.items) == ["z/cine", "z/img.dcm"]
    assert all(path.startswith("z/") for path, _ in only_z.skipped)  # unselected files are not read

    no_dcm = _discover(mixed_folder, exclude=["**/*.dcm"])
    assert sorted(i.files[0] for i in no_dcm.items) == ["x/y/q7f2", "z/cine"]

    ct = _discover(mixed_folder, modality=["ct"])
    assert [i.files for i in ct.items] == [("x/y/q7f2",)]
    assert dict(ct.skipped)["z/img.dcm"].startswith("modality MR not selected")

    for rel, text in (("z/img.dcm", "T1 Axial"), ("x/y/q7f2", "Abdomen"), ("z/cine", "Cine T1")):
        ds = pydicom.dcmread(mixed_folder / rel)
        ds.SeriesDescription = text
        ds.save_as(mixed_folder / rel)
    assert [i.files for i in _discover(mixed_folder, series_description=["t1*"]).items] == [("z/img.dcm",)]
    both = _discover(mixed_folder, series_description=["*T1*"], modality=["MR"])
    assert sorted(i.files for i in both.items) == [("z/cine",), ("z/img.dcm",)]
    assert dict(both.skipped)["x/y/q7f2"].startswith("modality CT not selected")


def _write_variant(src: Path, dst: Path, **changes) -> None:
    ds = pydicom.dcmread(src)
    arr = ds.pixel_array
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    if "half" in changes:
        arr = np.ascontiguousarray(arr[::2, ::2])
        ds.Rows, ds.Columns = arr.shape
        ds.PixelData = arr.tobytes()
    for key, value in changes.items():
        if key != "half":
            setattr(ds, key, value)
    ds.save_as(dst)


def test_series_split_by_orientation_and_size_on_request_but_not_by_jitter(tmp_path: Path):
    src = Path(get_testdata_file("MR_small.dcm"))
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    iop = [float(v) for v in ds.ImageOrientationPatient]
    root = tmp_path / "s"
    root.mkdir()
    shutil.copy(src, root / "a")
    _write_variant(src, root / "jitter", ImageOrientationPatient=[v + 2e-5 for v in iop])
    assert len(_discover(root).items) == 1  # jitter below 1e-3 is the same orientation

    _write_variant(src, root / "small", half=True)
    rotated = iop[3:] + iop[:3]  # swap row and column directions
    _write_variant(src, root / "rotated", ImageOrientationPatient=rotated)
    found = discover_dicom(root, SeriesFilter(), FingerprintMemo(None), mismatched_size="split")
    assert sorted(i.files for i in found.items) == [("a", "jitter"), ("rotated",), ("small",)]
    assert len({i.item_id for i in found.items}) == 3
    assert all(i.notes and "split" in i.notes[0] for i in found.items)


def test_a_slice_of_another_size_fails_its_series_naming_file_and_sizes(tmp_path: Path):
    src = Path(get_testdata_file("MR_small.dcm"))
    root = tmp_path / "s"
    root.mkdir()
    shutil.copy(src, root / "a")
    _write_variant(src, root / "b", ImagePositionPatient=[0.0, 0.0, 5.0])
    _write_variant(src, root / "small", half=True)
    [item] = _discover(root).items  # not silently two volumes
    assert item.files == ("a", "b")
    [(rel, reason)] = item.broken_files
    assert rel == "small"
    assert reason.startswith("Rows x Columns 32x32 differ from the 64x64 of the other 2 file(s) of its series")


def test_multi_echo_series_splits_into_one_item_per_echo():
    root = _shared_data("dcm_qa_me", "In")
    found = _discover(root)
    assert len(found.items) == 2
    for item in found.items:
        assert len(item.files) == 36
        echoes = {str(pydicom.dcmread(root / f, stop_before_pixels=True).EchoNumbers) for f in item.files}
        assert len(echoes) == 1
        assert f"EchoNumbers={echoes.pop()}" in item.notes[0]


def test_philips_folder_skips_dicomdir_files_and_localizer():
    root = _shared_data("dcm_qa_ct", "In", "Philips")
    found = _discover(root)
    localizers = [
        p.relative_to(root).as_posix()
        for p in root.rglob("I*")
        if "LOCALIZER" in pydicom.dcmread(p, stop_before_pixels=True).ImageType
    ]
    assert localizers == ["S21610/S1000/I10"]
    skipped = dict(found.skipped)
    assert skipped["S21610/S1000/I10"] == "localizer"
    for name in ("DICOMDIR", "S21610/DIRFILE", "S21610/S2010/DIRFILE", "S21610/S1000/DIRFILE"):
        assert skipped[name].startswith("DICOM media directory")
    assert [len(i.files) for i in found.items] == [54]

    with_scout = _discover(root, exclude_localizers=False)
    assert sorted(len(i.files) for i in with_scout.items) == [1, 54]


def test_shuffled_extensionless_copies_of_real_series_group_together(tmp_path: Path):
    src = _shared_data("dicom2nifti_cases", "generic", "anatomical", "001")
    root = tmp_path / "d"
    rng = random.Random(7)
    names = []
    for i, path in enumerate(sorted(src.glob("*.dcm"))):
        folder = root / f"n{i % 2}" / "deep"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{rng.getrandbits(40):x}"
        shutil.copy(path, folder / name)
        names.append(f"n{i % 2}/deep/{name}")
    (root / "trunc").write_bytes(sorted(src.glob("*.dcm"))[0].read_bytes()[:300])
    found = _discover(root)
    assert [i.files for i in found.items] == [tuple(sorted(names))]
    assert dict(found.skipped)["trunc"].startswith("truncated header")


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**", "a/b/c.dcm", True),
        ("**", "c", True),
        ("**/*.dcm", "c.dcm", True),
        ("**/*.dcm", "a/b/c.dcm", True),
        ("*.dcm", "a/c.dcm", False),
        ("a/*", "a/b/c", False),
        ("a/**", "a/b/c", True),
        ("a/**/c", "a/c", True),
        ("a/**/c", "a/x/y/c", True),
        ("I?0", "I10", True),
        ("I?0", "I/0", False),
        ("I[0-9]*", "I540", True),
        ("[!I]*", "DIRFILE", True),
        ("[!I]*", "I10", False),
    ],
)
def test_path_glob_table(pattern: str, path: str, expected: bool):
    assert bool(compile_path_glob(pattern).match(path)) is expected


_segment = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=6)
_paths = st.lists(_segment, min_size=1, max_size=4).map("/".join)


@given(_paths)
def test_double_star_includes_everything(path: str):
    assert path_selected(path, ["**"], [])
    assert not path_selected(path, ["**"], ["**"])


@given(_paths)
def test_single_star_never_crosses_folders(path: str):
    assert bool(compile_path_glob("*").match(path)) is ("/" not in path)


@given(_segment, st.text(alphabet="abcXYZ019._-*?", min_size=1, max_size=6))
def test_single_segment_glob_agrees_with_fnmatch(name: str, pattern: str):
    import fnmatch

    assert bool(compile_path_glob(pattern).match(name)) is fnmatch.fnmatchcase(name, pattern)


def test_modality_and_description_matching_is_case_insensitive():
    assert modality_selected("CT", ["ct"]) and not modality_selected("CT", ["MR", "CTX"])
    assert modality_selected("MR", None)
    assert description_selected("Head STD 5mm", ["head*"]) and not description_selected("Head", ["*body*"])


def test_header_without_pixel_data_is_reported_as_cut_before_pixels(tmp_path: Path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "stripped")
    found = _discover(tmp_path)
    assert found.items == []
    assert dict(found.skipped)["stripped"].startswith("truncated header: file ends at byte")
    assert "before the pixel data" in dict(found.skipped)["stripped"]


def test_read_headers_for_returns_headers_and_names_a_vanished_file(mixed_folder: Path):
    item = next(i for i in _discover(mixed_folder).items if i.files == ("z/img.dcm",))
    (headers,) = read_headers_for(item)
    expected = pydicom.dcmread(mixed_folder / "z" / "img.dcm", stop_before_pixels=True)
    assert headers.SOPInstanceUID == expected.SOPInstanceUID and "PixelData" not in headers
    (mixed_folder / "z" / "img.dcm").unlink()
    with pytest.raises(InputError) as caught:
        read_headers_for(item)
    assert caught.value.file == os.fspath(mixed_folder.resolve() / "z" / "img.dcm")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_beside_a_series_is_skipped_not_opened(tmp_path, kind):
    """Opening a FIFO blocks until a writer comes (forever, in a build); a device never ends."""
    import threading

    from tests.dicom_factory import write_ct_slice

    for i in range(2):
        write_ct_slice(tmp_path / f"{i}.dcm", series=1, index=i, z=float(i))
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe")
    else:
        os.symlink("/dev/zero", tmp_path / "pipe")
    found = []
    scan = threading.Thread(target=lambda: found.append(discover_dicom(tmp_path, SeriesFilter(), FingerprintMemo(None))),
                            daemon=True)
    scan.start()
    scan.join(60)
    assert not scan.is_alive(), "discovery blocked on a non-regular file"
    [discovery] = found
    assert [item.files for item in discovery.items] == [("0.dcm", "1.dcm")]
    assert ("pipe", "not a regular file") in discovery.skipped
