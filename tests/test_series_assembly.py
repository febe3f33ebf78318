"""Exact series assembly: order, positions, values and findings on real DICOM files.

Golden values come from the files themselves (pydicom) or from SimpleITK, never
from medflow.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from medflow.errors import InputError
from medflow.recipe.model import SeriesFilter
from medflow.sources.base import ItemRef
from medflow.sources.discovery import discover_dicom
from medflow.sources.fingerprint import FingerprintMemo
from medflow.sources.series import read_item
from medflow.sources.stack_geometry import spacing_findings, tilt_degrees
from tests.conftest import shared_data_path

_shared_data = shared_data_path  # skip when absent, fail when MEDFLOW_REQUIRE_SHARED_DATA=1


def _items(root: Path, **filter_fields) -> list[ItemRef]:
    return discover_dicom(root, SeriesFilter(**filter_fields), FingerprintMemo(None)).items


def _only_item(root: Path, **filter_fields) -> ItemRef:
    items = _items(root, **filter_fields)
    assert len(items) == 1, [i.files for i in items]
    return items[0]


def _header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def _by_sop(item: ItemRef) -> dict[str, pydicom.Dataset]:
    """SOPInstanceUID -> the item's file header, read by pydicom, with the path attached."""
    out = {}
    for rel in item.files:
        ds = _header(Path(item.root) / rel)
        ds.medflow_test_path = Path(item.root) / rel
        out[str(ds.SOPInstanceUID)] = ds
    return out


def _sop(header_json: dict) -> str:
    return header_json["00080018"]["Value"][0]


def _normal(ds: pydicom.Dataset) -> np.ndarray:
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    n = np.cross(iop[:3], iop[3:])
    return n / np.linalg.norm(n)


def _assert_each_slice_at_its_own_position(sample, item: ItemRef) -> list[pydicom.Dataset]:
    """Every slice i sits at its own file's ImagePositionPatient, in increasing order along the normal."""
    by_sop = _by_sop(item)
    files = [by_sop[_sop(h)] for h in sample.headers]
    assert len(files) == len(sample.geometry.slice_positions) == sample.pixels.shape[0]
    for position, ds in zip(sample.geometry.slice_positions, files, strict=True):
        assert position == tuple(float(v) for v in ds.ImagePositionPatient)
    normal = _normal(files[0])
    along = [float(np.dot(p, normal)) for p in sample.geometry.slice_positions]
    assert all(b > a for a, b in zip(along, along[1:], strict=False))
    return files


def _note(sample, pattern: str) -> re.Match:
    for note in sample.meta["notes"]:
        match = re.search(pattern, note)
        if match:
            return match
    raise AssertionError(f"no note matches {pattern!r}: {sample.meta['notes']}")


# ---------------------------------------------------------------------------
# The main CT series, shuffled, against pydicom and SimpleITK
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pancreas(tmp_path_factory):
    src = _shared_data("ct_pancreas_tcia")
    root = tmp_path_factory.mktemp("pancreas")
    rng = random.Random(1234)
    files = sorted(src.glob("*.dcm"))
    rng.shuffle(files)
    for i, path in enumerate(files):
        folder = root / f"part{i % 3}"
        folder.mkdir(exist_ok=True)
        os.symlink(path, folder / f"{rng.getrandbits(48):012x}")
    item = _only_item(root)
    return src, item, read_item(item)


def test_pancreas_every_slice_sits_at_its_own_position(pancreas):
    _, item, sample = pancreas
    assert len(item.files) == 134
    assert sample.axes == "zyx" and sample.pixels.dtype == np.float32
    assert sample.pixels.shape == (134, 512, 512)
    _assert_each_slice_at_its_own_position(sample, item)


def test_pancreas_matches_simpleitk_pixels_and_geometry(pancreas):
    src, _, sample = pancreas
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(os.fspath(src)))
    image = reader.Execute()
    expected = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(sample.pixels, expected.astype(np.float32))
    g = sample.geometry
    np.testing.assert_allclose(g.origin, image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose((g.pixel_spacing[1], g.pixel_spacing[0], g.slice_spacing), image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 0], g.row_direction)
    np.testing.assert_allclose(direction[:, 1], g.column_direction)
    np.testing.assert_allclose(direction[:, 2], g.normal)
    assert sample.meta["notes"] == [] and g.notes == ()


def test_pancreas_hounsfield_units_equal_pydicom_modality_lut_per_slice(pancreas):
    _, item, sample = pancreas
    by_sop = _by_sop(item)
    for z, header in enumerate(sample.headers):
        ds = pydicom.dcmread(by_sop[_sop(header)].medflow_test_path)
        np.testing.assert_array_equal(
            sample.pixels[z], apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        )
    assert sample.meta["units"] == "HU" and sample.meta["modality"] == "CT"


def test_headers_are_dicom_json_without_pixels_and_meta_holds_no_identifiers(pancreas):
    _, _, sample = pancreas
    assert all("7FE00010" not in h for h in sample.headers)
    assert all(h["00080060"]["Value"] == ["CT"] for h in sample.headers)
    assert set(sample.meta) == {
        "modality",
        "units",
        "photometric_interpretation",
        "notes",
        "n_slices",
        "dropped_files",
    }
    assert sample.meta["n_slices"] == 134 and sample.meta["dropped_files"] == []
    text = repr(sample.meta)
    assert "1.2.840" not in text and "1.3.6" not in text and "Patient" not in text


# ---------------------------------------------------------------------------
# Gantry tilt and uneven spacing
# ---------------------------------------------------------------------------


def _measured_tilt(files: list[pydicom.Dataset]) -> float:
    first = np.array([float(v) for v in files[0].ImagePositionPatient])
    last = np.array([float(v) for v in files[-1].ImagePositionPatient])
    step = last - first
    cosine = abs(np.dot(step, _normal(files[0]))) / np.linalg.norm(step)
    return math.degrees(math.acos(min(1.0, cosine)))


def test_ge_tilted_uneven_ct_keeps_positions_and_reports_tilt_and_spacing():
    item = _only_item(_shared_data("dcm_qa_ct", "In", "GE"))
    sample = read_item(item)
    files = _assert_each_slice_at_its_own_position(sample, item)
    tag = float(files[0].GantryDetectorTilt)
    reported = float(_note(sample, r"makes ([0-9.]+)° with the slice normal").group(1))
    assert reported == pytest.approx(abs(tag), abs=0.05)
    assert reported == pytest.approx(_measured_tilt(files), abs=0.005)
    assert "GantryDetectorTilt +18.5°" in _note(sample, "gantry tilt").string
    steps = np.diff([np.dot([float(v) for v in ds.ImagePositionPatient], _normal(files[0])) for ds in files])
    uneven = _note(sample, "uneven slice spacing").string
    for value in {f"{s:.2f} mm" for s in steps}:
        assert value in uneven
    assert sample.geometry.slice_spacing is None
    assert sample.pixels.min() == -1500  # PixelPaddingValue kept as a value, not masked


def test_philips_tilted_ct_excludes_localizer_and_reports_tilt():
    root = _shared_data("dcm_qa_ct", "In", "Philips")
    item = _only_item(root)
    assert all(not f.startswith("S21610/S1000/") for f in item.files)
    sample = read_item(item)
    files = _assert_each_slice_at_its_own_position(sample, item)
    assert len(files) == 54
    reported = float(_note(sample, r"makes ([0-9.]+)° with the slice normal").group(1))
    assert reported == pytest.approx(abs(float(files[0].GantryDetectorTilt)), abs=0.05)
    along = [np.dot([float(v) for v in ds.ImagePositionPatient], _normal(files[0])) for ds in files]
    assert sample.geometry.slice_spacing == pytest.approx(np.mean(np.diff(along)), abs=1e-6)
    assert sample.geometry.slice_spacing == pytest.approx(2.371, abs=0.001)


def test_tilt_encoded_only_in_orientation_is_detected():
    item = _only_item(_shared_data("dicom2nifti_cases", "failing", "gantrytilting", "001"))
    sample = read_item(item)
    files = _assert_each_slice_at_its_own_position(sample, item)
    assert "GantryDetectorTilt" not in files[0]
    reported = float(_note(sample, r"makes ([0-9.]+)° with the slice normal").group(1))
    assert reported == pytest.approx(_measured_tilt(files), abs=0.005)
    assert reported > 10


# ---------------------------------------------------------------------------
# Missing and duplicate slices
# ---------------------------------------------------------------------------


def test_duplicate_position_keeps_lowest_instance_then_uid_and_reports_gaps():
    root = _shared_data("ct_missing_duplicate_slices")
    item = _only_item(root)
    assert len(item.files) == 11
    sample = read_item(item)
    dupes = [_header(root / n) for n in ("CT26.dcm", "CT28.dcm")]
    assert dupes[0].ImagePositionPatient == dupes[1].ImagePositionPatient

    def rule(ds):
        return (int(ds.InstanceNumber), tuple(int(p) for p in str(ds.SOPInstanceUID).split(".")))

    keep, drop = sorted(zip(dupes, ("CT26.dcm", "CT28.dcm"), strict=True), key=lambda pair: rule(pair[0]))
    assert sample.meta["dropped_files"] == [drop[1]]
    assert f"kept {keep[1]}, dropped {drop[1]}" in _note(sample, "duplicate position").string
    assert keep[0].SOPInstanceUID in {_sop(h) for h in sample.headers}
    assert drop[0].SOPInstanceUID not in {_sop(h) for h in sample.headers}

    files = _assert_each_slice_at_its_own_position(sample, item)
    assert len(files) == 10
    thickness = float(files[0].SliceThickness)
    steps = np.diff([float(ds.ImagePositionPatient[2]) for ds in files])
    gaps = [n for n in sample.meta["notes"] if n.startswith("gap of")]
    assert len(gaps) == int(np.sum(steps > 1.5 * thickness))
    for i, step in enumerate(steps):
        missing = round(step / thickness) - 1
        assert any(f"between z-index {i} and {i + 1} (≈{missing} missing" in g for g in gaps)
    kept_index = [_sop(h) for h in sample.headers].index(keep[0].SOPInstanceUID)
    ds = pydicom.dcmread(root / keep[1])
    np.testing.assert_array_equal(sample.pixels[kept_index], apply_modality_lut(ds.pixel_array, ds))


def test_duplicates_error_mode_names_both_files():
    root = _shared_data("ct_missing_duplicate_slices")
    with pytest.raises(InputError) as caught:
        read_item(_only_item(root), duplicates="error")
    assert "CT26.dcm" in str(caught.value) and "CT28.dcm" in str(caught.value)


@pytest.mark.parametrize("case", ["001", "002"])
def test_missing_slice_is_reported_and_later_slices_keep_true_positions(case):
    item = _only_item(_shared_data("dicom2nifti_cases", "failing", "sliceincrement", case))
    sample = read_item(item)
    files = _assert_each_slice_at_its_own_position(sample, item)
    along = np.array([np.dot([float(v) for v in ds.ImagePositionPatient], _normal(files[0])) for ds in files])
    steps = np.diff(along)
    big = int(np.argmax(steps))
    assert steps[big] == pytest.approx(2 * np.min(steps), rel=0.01)
    assert f"between z-index {big} and {big + 1} (≈1 missing slice" in _note(sample, "^gap of").string
    assert sample.geometry.slice_spacing is None


# ---------------------------------------------------------------------------
# Transfer syntaxes, multi-frame, multi-echo, color
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anatomical():
    item = _only_item(_shared_data("dicom2nifti_cases", "generic", "anatomical", "001"))
    return read_item(item)


def _simpleitk_series(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(os.fspath(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


@pytest.mark.parametrize(
    "variant", ["anatomical", "compressed_j2k", "compressed_jpeg", "compressed_jpegls", "compressed_rle"]
)
def test_compressed_series_decode_like_gdcm_with_the_uncompressed_geometry(anatomical, variant):
    # The compressed copies carry other synthetic noise than generic/anatomical (checked with
    # pydicom: same positions, other UIDs and pixels), so their pixels are checked against
    # SimpleITK/GDCM's decoders and their geometry against the uncompressed series.
    root = _shared_data("dicom2nifti_cases", "generic", variant, "001")
    syntax = _header(next(root.glob("*.dcm"))).file_meta.TransferSyntaxUID
    assert syntax.is_compressed == (variant != "anatomical")
    sample = read_item(_only_item(root))
    np.testing.assert_array_equal(sample.pixels, _simpleitk_series(root).astype(np.float32))
    assert sample.geometry == anatomical.geometry


def test_enhanced_multiframe_uses_per_frame_positions_and_values():
    root = _shared_data("dicom2nifti_cases", "philips_enhanced", "anatomical", "001")
    item = _only_item(root)
    assert item.kind == "multiframe" and len(item.files) == 1
    sample = read_item(item)
    ds = pydicom.dcmread(root / item.files[0])
    frames = ds.PerFrameFunctionalGroupsSequence
    assert sample.pixels.shape == (int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)) == (8, 256, 256)
    normal = _normal(frames[0].PlaneOrientationSequence[0])
    along = [
        np.dot([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient], normal) for f in frames
    ]
    order = np.argsort(along)
    stored = ds.pixel_array
    for z, index in enumerate(order):
        frame = frames[index]
        expected_position = tuple(float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient)
        assert sample.geometry.slice_positions[z] == expected_position
        transform = frame.PixelValueTransformationSequence[0]
        expected = stored[index] * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
        np.testing.assert_allclose(sample.pixels[z], expected, rtol=1e-6)
        assert sample.headers[z]["52009230"]["Value"][0]["00209113"] == frame.to_json_dict()["00209113"]
    assert sample.geometry.pixel_spacing == tuple(
        float(v) for v in frames[0].PixelMeasuresSequence[0].PixelSpacing
    )


def test_multi_echo_items_hold_one_echo_each():
    root = _shared_data("dcm_qa_me", "In")
    items = _items(root)
    assert len(items) == 2
    for item in items:
        sample = read_item(item)
        files = _assert_each_slice_at_its_own_position(sample, item)
        assert len(files) == 36
        assert len({str(ds.EchoNumbers) for ds in files}) == 1
        assert sample.geometry.slice_spacing is not None


def test_color_images_become_rgb_channels(tmp_path: Path):
    rgb = pydicom.dcmread(get_testdata_file("SC_rgb.dcm")).pixel_array.astype(np.float32)
    for name in ("SC_rgb_jpeg_gdcm.dcm", "SC_ybr_full_uncompressed.dcm"):
        root = tmp_path / name
        root.mkdir()
        shutil.copy(get_testdata_file(name), root / "img")
        sample = read_item(_only_item(root))
        assert sample.axes == "zyxc" and sample.channels == ("r", "g", "b")
        # Lossless RGB is exact. The YBR_FULL copy went through 8-bit YCbCr (PS3.3 C.7.6.3.1.2),
        # which costs a few levels; unconverted YCbCr would be off by up to ~170 (red: Y=76, Cr=255).
        np.testing.assert_allclose(sample.pixels[0], rgb, atol=0 if "jpeg" in name else 8)


# ---------------------------------------------------------------------------
# Errors name the file
# ---------------------------------------------------------------------------


def _copy_anatomical(tmp_path: Path) -> tuple[Path, list[Path]]:
    src = _shared_data("dicom2nifti_cases", "generic", "compressed_jpeg", "001")
    root = tmp_path / "series"
    root.mkdir()
    paths = []
    for path in sorted(src.glob("*.dcm")):
        shutil.copy(path, root / path.name)
        paths.append(root / path.name)
    return root, paths


@pytest.mark.parametrize("cut", [2000, 20])
def test_truncated_pixel_data_inside_a_series_raises_input_error_naming_it(tmp_path: Path, cut: int):
    root, paths = _copy_anatomical(tmp_path)
    item = _only_item(root)
    victim = paths[2]
    victim.write_bytes(victim.read_bytes()[:-cut])
    with pytest.raises(InputError) as caught:
        read_item(item)
    assert caught.value.file == os.fspath(victim.resolve())
    assert "truncated pixel data" in caught.value.reason


def test_file_replaced_by_garbage_raises_input_error(tmp_path: Path):
    root, paths = _copy_anatomical(tmp_path)
    item = _only_item(root)
    paths[1].write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
    with pytest.raises(InputError) as caught:
        read_item(item)
    assert caught.value.file == os.fspath(paths[1].resolve())


def test_inconsistent_rows_columns_in_one_item_raises(tmp_path: Path):
    src = Path(get_testdata_file("MR_small.dcm"))
    shutil.copy(src, tmp_path / "a")
    ds = pydicom.dcmread(src)
    small = np.ascontiguousarray(ds.pixel_array[::2, ::2])
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.ImagePositionPatient = [float(v) + 5 for v in ds.ImagePositionPatient]
    ds.save_as(tmp_path / "b")
    item = ItemRef(
        item_id="mr-test", root=os.fspath(tmp_path), files=("a", "b"), kind="series", modality="MR"
    )
    with pytest.raises(InputError) as caught:
        read_item(item)
    assert caught.value.file == os.fspath(tmp_path / "b") and "Rows/Columns" in caught.value.reason


# ---------------------------------------------------------------------------
# The geometry rules as properties
# ---------------------------------------------------------------------------


@settings(max_examples=60)
@given(
    step=st.floats(0.3, 10.0),
    n=st.integers(2, 40),
    gap_at=st.integers(0, 39),
    k=st.integers(2, 6),
)
def test_gap_of_k_steps_reports_k_minus_one_missing_slices(step: float, n: int, gap_at: int, k: int):
    steps = np.full(n, step)
    spacing, notes = spacing_findings(steps)
    assert spacing == pytest.approx(step) and notes == []
    if n >= 3:
        gap_at %= n
        steps[gap_at] = k * step
        spacing, notes = spacing_findings(steps)
        assert spacing is None
        assert len(notes) == 1
        assert f"between z-index {gap_at} and {gap_at + 1} (≈{k - 1} missing" in notes[0]


@given(angle=st.floats(0.0, 60.0), step=st.floats(0.5, 10.0), n=st.integers(2, 30))
def test_tilt_angle_of_a_sheared_stack(angle: float, step: float, n: int):
    # normal along z; slices advance by `step` along z and shift by step*tan(angle) along y
    normal = np.array([0.0, 0.0, 1.0])
    shift = step * math.tan(math.radians(angle))
    positions = np.array([[0.0, i * shift, i * step] for i in range(n)])
    assert tilt_degrees(positions, normal) == pytest.approx(angle, abs=1e-6)
