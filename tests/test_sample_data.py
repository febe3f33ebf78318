"""The embedded "ct-phantom" sample: real DICOM, deterministic, idempotent, kill- and race-safe.

Values are checked with independent readers (pydicom's modality LUT, SimpleITK's
GDCM series reader) against the phantom's documented anatomy, not against our code.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.pixels import apply_modality_lut

from medflow.errors import InputError
from medflow.sources import sample_data
from medflow.sources.phantom import integer_noise, make_anatomy, phantom_slice
from medflow.sources.sample_data import MARKER_NAME, SAMPLE_NAMES, generator_key, materialize_sample

NAME = "ct-phantom"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return materialize_sample(NAME, tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def series(root) -> dict[str, list[pydicom.Dataset]]:
    """SeriesInstanceUID -> datasets sorted by InstanceNumber (with ``.filename``)."""
    out: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in sorted(root.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        out[ds.SeriesInstanceUID].append(ds)
    return {uid: sorted(items, key=lambda d: int(d.InstanceNumber)) for uid, items in out.items()}


def _by_description(series, description: str) -> list[pydicom.Dataset]:
    (found,) = [items for items in series.values() if items[0].SeriesDescription == description]
    return found


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _hu_roi(ds: pydicom.Dataset, x_mm: float, y_mm: float, half: int = 3) -> np.ndarray:
    """HU of a (2*half+1)^2 pixel patch centred on LPS (x, y), located from the file's own geometry."""
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    ipp = [float(v) for v in ds.ImagePositionPatient]
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    col = round((x_mm - ipp[0]) / col_mm)
    row = round((y_mm - ipp[1]) / row_mm)
    hu = apply_modality_lut(ds.pixel_array, ds)
    return hu[row - half : row + half + 1, col - half : col + half + 1]


# --- files and headers -------------------------------------------------------------------


def test_every_file_is_a_valid_ct_dicom_file_whose_pixels_decode(root):
    files = sorted(root.rglob("*.dcm"))
    assert len(files) >= 3 * 24
    for path in files:
        raw = path.read_bytes()
        assert raw[:128] == bytes(128) and raw[128:132] == b"DICM", path
        ds = pydicom.dcmread(path)
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == EXPLICIT_VR_LE
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID == CT_IMAGE_STORAGE
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.ImplementationClassUID
        assert ds.Modality == "CT" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.BitsAllocated == 16 and ds.HighBit == ds.BitsStored - 1
        assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (-1024.0, 1.0)
        assert ds.PatientPosition == "HFS"
        pixels = ds.pixel_array
        assert pixels.shape == (ds.Rows, ds.Columns)
        assert pixels.dtype == (np.int16 if ds.PixelRepresentation == 1 else np.uint16)
        assert 0 <= pixels.min() and pixels.max() < 2**ds.BitsStored


def test_dataset_has_two_patients_three_series_and_unique_valid_uids(series):
    datasets = [ds for items in series.values() for ds in items]
    assert len({ds.PatientID for ds in datasets}) >= 2
    assert len(series) >= 3
    sop_uids = [ds.SOPInstanceUID for ds in datasets]
    assert len(set(sop_uids)) == len(sop_uids)
    for ds in datasets:
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID):
            assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", uid) and len(uid) <= 64, uid
    for items in series.values():  # series-level attributes agree inside a series
        for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "Rows", "PixelSpacing"):
            assert len({str(getattr(ds, keyword)) for ds in items}) == 1, keyword


def test_identifying_headers_are_present_and_consistent(series):
    """De-identification must have something to remove: every PHI-ish attribute is filled."""
    keywords = (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "PatientAge",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyTime",
        "AcquisitionTime",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "OperatorsName",
        "StationName",
        "DeviceSerialNumber",
        "StudyDescription",
        "SeriesDescription",
        "StudyID",
        "Manufacturer",
        "ManufacturerModelName",
        "KVP",
        "WindowCenter",
        "WindowWidth",
        "SliceThickness",
        "SpacingBetweenSlices",
    )
    for items in series.values():
        for ds in items:
            for keyword in keywords:
                assert str(ds.get(keyword, "")).strip(), keyword
            birth = datetime.datetime.strptime(ds.PatientBirthDate, "%Y%m%d").date()
            study = datetime.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
            years = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
            assert ds.PatientAge == f"{years:03d}Y"
    names = {str(items[0].PatientName) for items in series.values()}
    assert {"DOE^JANE^M", "MUSTERMANN^MAX"} <= names


def test_patient_a_has_two_studies_and_two_reconstructions_share_a_frame_of_reference(series):
    thin = _by_description(series, "Thorax 2.5 B30f")[0]
    lung = _by_description(series, "Thorax 5.0 B70f Lung")[0]
    follow_up = _by_description(series, "Thorax 3.0 B31f")[0]
    assert thin.PatientID == lung.PatientID == follow_up.PatientID
    assert thin.StudyInstanceUID == lung.StudyInstanceUID != follow_up.StudyInstanceUID
    assert thin.FrameOfReferenceUID == lung.FrameOfReferenceUID != follow_up.FrameOfReferenceUID
    assert float(thin.SliceThickness) != float(lung.SliceThickness)
    assert (lung.PixelRepresentation, lung.BitsStored) == (0, 12)
    assert (thin.PixelRepresentation, thin.BitsStored) == (1, 16)


# --- pixels --------------------------------------------------------------------------------


def test_hounsfield_units_at_known_phantom_coordinates(series):
    """Air, lung, bone and soft tissue where the phantom's documented anatomy puts them."""
    for description, scale in (
        ("Thorax 2.5 B30f", 1.0),
        ("Thorax 5.0 B70f Lung", 1.0),
        ("Thorax-Abdomen 3.0 Br40", 0.82),
    ):
        items = _by_description(series, description)
        for ds in (items[0], items[len(items) // 2], items[-1]):
            air = _hu_roi(ds, -170 * scale, -160 * scale)
            assert abs(np.median(air) + 1000) <= 15, (description, np.median(air))
            assert np.median(_hu_roi(ds, 0, 63 * scale)) > 300  # vertebral body
            soft = np.median(_hu_roi(ds, -40 * scale, 85 * scale))  # paraspinal muscle
            assert -100 <= soft <= 100, (description, soft)
        cranial = max(items, key=lambda d: float(d.ImagePositionPatient[2]))  # widest lungs
        for x in (-75 * scale, 75 * scale):
            assert np.median(_hu_roi(cranial, x, 5 * scale, half=5)) < -700


def test_noise_is_present_and_of_ct_like_size(series):
    ds = _by_description(series, "Thorax 2.5 B30f")[0]
    std = _hu_roi(ds, -40, 85, half=6).std()  # uniform paraspinal muscle
    assert 5 <= std <= 25


def test_lungs_shrink_towards_the_abdomen(series):
    """Lung area (HU < -600 inside the body) grows from the diaphragm upwards in the chest series."""
    items = sorted(_by_description(series, "Thorax 2.5 B30f"), key=lambda d: float(d.ImagePositionPatient[2]))
    areas = []
    for ds in items[::6]:
        hu = apply_modality_lut(ds.pixel_array, ds)
        areas.append(int((hu[40:-40, 40:-40] < -600).sum()))
    assert areas[0] < areas[1] < areas[2] and 2 * areas[0] < max(areas)
    first, last = (apply_modality_lut(d.pixel_array, d) for d in (items[0], items[-1]))
    assert not np.array_equal(first, last)


# --- geometry ------------------------------------------------------------------------------


def test_slice_positions_are_monotonic_with_the_declared_spacing(series):
    for items in series.values():
        ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in items])
        steps = np.diff(ipp[:, 2])
        spacing = float(items[0].SpacingBetweenSlices)
        assert np.all(steps > 0) or np.all(steps < 0)
        np.testing.assert_allclose(np.abs(steps), spacing, atol=1e-6)
        assert float(items[0].SliceThickness) == spacing
        np.testing.assert_array_equal(ipp[:, :2], ipp[:1, :2].repeat(len(ipp), axis=0))
        np.testing.assert_allclose([float(ds.SliceLocation) for ds in items], ipp[:, 2])
        fov = float(items[0].PixelSpacing[1]) * items[0].Columns
        assert -fov / 2 - 20 < ipp[0, 0] < -fov / 2 + 20  # origin near -FOV/2
    directions = {
        np.sign(float(i[1].ImagePositionPatient[2]) - float(i[0].ImagePositionPatient[2]))
        for i in series.values()
    }
    assert directions == {-1.0, 1.0}  # one series runs cranio-caudal


def test_simpleitk_reads_each_series_with_the_header_geometry_and_values(series):
    for items in series.values():
        folder = str(Path(items[0].filename).parent)
        reader = sitk.ImageSeriesReader()
        names = reader.GetGDCMSeriesFileNames(folder)
        assert len(names) == len(items)
        reader.SetFileNames(names)
        image = reader.Execute()
        first = pydicom.dcmread(names[0])
        spacing = float(items[0].PixelSpacing[0])
        assert image.GetSize() == (first.Columns, first.Rows, len(items))
        np.testing.assert_allclose(image.GetSpacing(), (spacing, spacing, float(first.SpacingBetweenSlices)))
        np.testing.assert_allclose(image.GetOrigin(), [float(v) for v in first.ImagePositionPatient])
        np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-9)
        volume = sitk.GetArrayFromImage(image)  # zyx, rescaled by ITK
        last = pydicom.dcmread(names[-1])
        np.testing.assert_array_equal(volume[-1], apply_modality_lut(last.pixel_array, last))


# --- determinism, idempotence, safety -------------------------------------------------------


def test_two_materializations_in_separate_processes_are_byte_identical(root, tmp_path):
    code = "import sys; from pathlib import Path; from medflow.sources.sample_data import materialize_sample as m; m('ct-phantom', Path(sys.argv[1]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, cwd=REPO)
    other = _tree_bytes(tmp_path / NAME)
    mine = _tree_bytes(root)
    assert sorted(other) == sorted(mine)
    assert all(other[rel] == mine[rel] for rel in mine)


def test_dataset_bytes_are_pinned(root):
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.dcm")):
        digest.update(
            path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest()
        )
    assert digest.hexdigest() == PINNED_DATASET_SHA256, (
        "the sample's bytes changed: bump GENERATOR_VERSION in medflow/sources/sample_data.py and update "
        "PINNED_DATASET_SHA256 (or a numpy/pydicom upgrade changed the output)"
    )


PINNED_DATASET_SHA256 = "f04379e2d4574af3702fac158d2335483000e6a1790d17e528a9825b48304fdf"


def _copy_of(root: Path, dest: Path) -> Path:
    """A complete copy of the module's sample under ``dest`` (faster than generating it again)."""
    shutil.copytree(root, dest / NAME)
    return dest / NAME


def test_second_call_returns_the_copy_without_rewriting(tmp_path):
    first = materialize_sample(NAME, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    os.utime(first / MARKER_NAME, ns=(1_000_000_000, 1_000_000_000))  # any rewrite would reset it
    stamps[first / MARKER_NAME] = 1_000_000_000
    assert materialize_sample(NAME, tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == stamps


def test_unknown_name_raises_value_error_listing_available_names(tmp_path):
    with pytest.raises(ValueError, match="ct-phantom") as info:
        materialize_sample("mr-phantom", tmp_path)
    assert "mr-phantom" in str(info.value)
    assert SAMPLE_NAMES == ("ct-phantom",)
    assert not any(tmp_path.iterdir())


def test_leftover_temp_folder_of_a_killed_run_does_not_break_a_new_call(fast_writer, tmp_path):
    recent = tmp_path / f".{NAME}.tmp-99999-dead"
    old = tmp_path / f".{NAME}.tmp-99998-older"
    for leftover in (recent, old):
        (leftover / "P01").mkdir(parents=True)
        (leftover / "P01" / "half.dcm").write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    result = materialize_sample(NAME, tmp_path)
    assert sample_data.is_complete(result, generator_key(NAME))
    assert not old.exists()  # clearly stale: swept
    assert recent.exists()  # could belong to a live run: left alone
    assert not [p for p in tmp_path.iterdir() if p.name not in (NAME, recent.name)]


def test_a_run_killed_midway_never_leaves_a_copy_that_looks_complete(tmp_path):
    code = "import sys; from pathlib import Path; from medflow.sources.sample_data import materialize_sample as m; m('ct-phantom', Path(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f".{NAME}.tmp-*/P01/ST01/SE002/*.dcm")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    target = tmp_path / NAME
    assert not target.exists() or sample_data.is_complete(target, generator_key(NAME))
    assert materialize_sample(NAME, tmp_path) == target
    assert sample_data.is_complete(target, generator_key(NAME))


@pytest.fixture
def fast_writer(monkeypatch):
    """Replace the DICOM writer by a two-file stub: install/replace logic tests need no pixels."""

    def write(root: Path) -> list[str]:
        (root / "P01").mkdir()
        (root / "P01" / "a.dcm").write_bytes(b"a" * 100)
        (root / "P01" / "b.dcm").write_bytes(b"b" * 200)
        return ["P01/a.dcm", "P01/b.dcm"]

    monkeypatch.setattr(sample_data, "_write_ct_phantom", write)


def test_outdated_or_damaged_copy_is_replaced(fast_writer, tmp_path):
    target = materialize_sample(NAME, tmp_path)
    victim = target / "P01" / "a.dcm"
    victim.unlink()
    assert materialize_sample(NAME, tmp_path) == target and victim.is_file()

    marker = json.loads((target / MARKER_NAME).read_text())
    marker["key"] = "written-by-an-older-generator"
    (target / MARKER_NAME).write_text(json.dumps(marker))
    materialize_sample(NAME, tmp_path)
    assert json.loads((target / MARKER_NAME).read_text())["key"] == generator_key(NAME)
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


def test_foreign_folder_at_the_destination_is_never_deleted(tmp_path):
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "my_notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not a medflow sample"):
        materialize_sample(NAME, tmp_path)
    assert (tmp_path / NAME / "my_notes.txt").read_text() == "precious"


def test_losing_the_rename_race_keeps_the_winners_copy(root, tmp_path):
    winner = _copy_of(root, tmp_path)
    inode = winner.stat().st_ino
    loser = tmp_path / ".loser"
    loser.mkdir()
    (loser / "junk").write_text("x")
    sample_data._install(loser, winner, generator_key(NAME))
    assert winner.stat().st_ino == inode and not (winner / "junk").exists()


def test_concurrent_calls_from_two_processes_give_one_complete_copy(tmp_path):
    code = "import sys; from pathlib import Path; from medflow.sources.sample_data import materialize_sample as m; print(m('ct-phantom', Path(sys.argv[1])))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120)[0].decode().strip() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert outputs == [str(tmp_path / NAME)] * 2
    assert sample_data.is_complete(tmp_path / NAME, generator_key(NAME))
    assert [p.name for p in tmp_path.iterdir()] == [NAME]  # the loser's temp folder is gone


# --- the phantom functions ------------------------------------------------------------------


def test_phantom_slice_is_deterministic_for_a_seed_and_varies_with_it():
    anatomy = make_anatomy(1.0, 11)
    args = (anatomy, 20.0, (64, 64), (5.0, 5.0), (-157.5, -157.5))
    a = phantom_slice(*args, noise_hu=12, rng=np.random.default_rng(1))
    b = phantom_slice(*args, noise_hu=12, rng=np.random.default_rng(1))
    c = phantom_slice(*args, noise_hu=12, rng=np.random.default_rng(2))
    assert a.dtype == np.int16 and a.shape == (64, 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@settings(max_examples=25, deadline=None)
@given(sigma=st.floats(min_value=3.0, max_value=60.0), seed=st.integers(0, 2**32 - 1))
def test_integer_noise_has_the_requested_spread_and_zero_mean(sigma, seed):
    noise = integer_noise((200, 200), sigma, np.random.default_rng(seed))
    assert noise.dtype == np.int16
    assert abs(noise.std() - sigma) <= 0.12 * sigma + 0.3  # the integer half-width rounds sigma
    assert abs(noise.mean()) < 0.05 * sigma + 0.1
    assert np.abs(noise).max() <= 4 * (sigma + 1)
