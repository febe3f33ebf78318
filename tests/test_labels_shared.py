"""Labels on real data (../shared/data), against independent computations.

SEG: highdicom's own pixel arrays (``get_pixels_by_source_instance``, indexed by the CT/PET
slices in medflow's z order). RTSTRUCT: an independent centre-inside ray cast written here
(projection and point-in-polygon), plus matplotlib's ``Path.contains_points`` for the Dice.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medflow.recipe.model import DicomSource
from medflow.sources.discovery import discover_dicom
from medflow.sources.fingerprint import FingerprintMemo
from medflow.sources.pairing import label_options, pair_labels
from medflow.sources.series import read_item
from tests.conftest import shared_data_path

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def _read(root: Path, labels: dict, label_folder: Path | None = None, read: bool = True):
    memo = FingerprintMemo(None)
    source = DicomSource.model_validate({"dicom": str(root), "labels": labels})
    found = discover_dicom(root, source.filter, memo)
    found = pair_labels(found, root.resolve(), source, memo,
                        lambda value: Path(value) if Path(value).is_absolute() else label_folder)
    [item] = found.items
    ok = read and not item.broken_files
    return item, found, (read_item(item, labels=label_options(source.labels)) if ok else None)


def _sop_uids(sample) -> list[str]:
    return [h["00080018"]["Value"][0] for h in sample.headers]


def test_pet_seg_equals_highdicom_voxel_for_voxel_and_reports_offset():
    import highdicom as hd

    root = shared_data_path("labels_seg_qin_headneck_pet")
    item, _, sample = _read(root, {"from": "seg"})
    seg = hd.seg.segread(str(root / "SEG" / "mask.dcm"))
    uids = _sop_uids(sample)
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    rows = [i for i, uid in enumerate(uids) if uid in referenced]
    expected = seg.get_pixels_by_source_instance([uids[i] for i in rows], combine_segments=True,
                                                ignore_spatial_locations=True)  # the SEG omits the flag
    assert sample.label.shape == sample.pixels.shape == (71, 168, 168)
    np.testing.assert_array_equal(sample.label[rows], expected)
    others = np.setdiff1d(np.arange(71), rows)
    assert len(others) == 5 and not sample.label[others].any()  # the 5 slices without a frame
    assert [s.value for s in sample.segments] == list(range(1, 12))
    assert sum(s.name == "Neoplasm, Secondary" for s in sample.segments) == 10  # keyed on number, not label
    offset = sample.meta["labels"]["max_plane_offset_mm"]
    assert 0.03 < offset < 0.05  # the frames sit ~0.04 mm off their PET slices: matched and reported


def test_overlapping_ct_seg_refuses_without_rule_and_keeps_every_segment_otherwise():
    import highdicom as hd

    root = shared_data_path("labels_seg_dcmqi_ct_overlap")
    item, _, _ = _read(root, {"from": "seg"})
    assert "ambiguous" in item.broken_files[0][1]  # two SEGs reference the series
    labels = {"from": "seg", "pattern": "SEG/partial_overlaps.dcm"}
    item, _, _ = _read(root, labels, read=False)
    from medflow.errors import InputError

    with pytest.raises(InputError, match="overlap in .* voxel"):
        read_item(item, labels=label_options(DicomSource.model_validate({"dicom": ".", "labels": labels}).labels))
    item, _, sample = _read(root, {**labels, "overlap": "last"})
    seg = hd.seg.segread(str(root / "SEG" / "partial_overlaps.dcm"))
    stacked = seg.get_pixels_by_source_instance(_sop_uids(sample), skip_overlap_checks=True,
                                               ignore_spatial_locations=True)  # (z, y, x, segment)
    expected = np.zeros(sample.label.shape, np.uint8)
    for index, number in enumerate(seg.segment_numbers):
        expected[stacked[..., index] > 0] = number  # higher number painted last
    np.testing.assert_array_equal(sample.label, expected)
    assert any("overlapped" in note for note in sample.meta["labels"]["notes"])


def test_fractional_seg_without_references_pairs_by_frame_of_reference():
    root = shared_data_path("labels_seg_breast_dce_fractional")
    item, _, sample = _read(root, {"from": "seg"})
    ds = pydicom.dcmread(root / "SEG" / "1-1.dcm")
    frames = ds.pixel_array >= ds.MaximumFractionalValue / 2
    heights = sample.geometry.normal @ np.asarray(sample.geometry.slice_positions, float).T
    expected = np.zeros_like(sample.label, dtype=bool)
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
        z = int(np.argmin(np.abs(heights - sample.geometry.normal @ position)))
        expected[z] |= frames[index]
    np.testing.assert_array_equal(sample.label == 1, expected)
    assert sample.label.sum() > 0 and [s.name for s in sample.segments] == ["Breast"]


def _independent_rtstruct(path: Path, sample) -> dict[str, np.ndarray]:
    """Every ROI rasterised here: own projection, own plane assignment, PNPOLY per pixel centre (vectorised)."""
    geometry = sample.geometry
    r, c = np.asarray(geometry.row_direction), np.asarray(geometry.column_direction)
    n = np.cross(r, c)
    positions = np.asarray(geometry.slice_positions)
    dy, dx = geometry.pixel_spacing
    nz, ny, nx = sample.label.shape
    ds = pydicom.dcmread(path)
    names = {int(roi.ROINumber): str(roi.ROIName) for roi in ds.StructureSetROISequence}
    out = {}
    cols, rows = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
    for roi in ds.ROIContourSequence:
        mask = np.zeros((nz, ny, nx), bool)
        for contour in roi.ContourSequence:
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            z = int(np.argmin(np.abs((points.mean(0) - positions) @ n)))
            rel = points - positions[z]
            px = np.round(rel @ r / dx * 1024) / 1024
            py = np.round(rel @ c / dy * 1024) / 1024
            # pixels outside the contour's bounding box are outside: test only the box
            r0, r1 = max(0, int(np.floor(py.min()))), min(ny, int(np.ceil(py.max())) + 1)
            c0, c1 = max(0, int(np.floor(px.min()))), min(nx, int(np.ceil(px.max())) + 1)
            box_rows, box_cols = rows[r0:r1, c0:c1], cols[r0:r1, c0:c1]
            toggle = np.zeros(box_rows.shape, bool)
            for i in range(len(px)):
                xi, yi, xj, yj = px[i], py[i], px[i - 1], py[i - 1]
                if yi == yj:
                    continue
                toggle ^= ((yi > box_rows) != (yj > box_rows)) & (
                    box_cols < (xj - xi) * (box_rows - yi) / (yj - yi) + xi)
            mask[z, r0:r1, c0:c1] ^= toggle  # even-odd across the contours of one slice
        out[names[int(roi.ReferencedROINumber)]] = mask
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


@pytest.mark.parametrize("case", ["pancreas", "mr"])
def test_rtstruct_equals_independent_ray_cast(case):
    if case == "pancreas":
        root = shared_data_path("ct_pancreas_tcia")
        folder = shared_data_path("labels_rtstruct_pancreas_ct")
    else:
        root = shared_data_path("labels_rtstruct_sts_mr_t2")
        folder = root
    labels = {"from": "rtstruct", "overlap": "last", "folder": str(folder)}
    item, _, sample = _read(root, labels, folder)
    rtstruct = next(folder.rglob("1-1.dcm"))
    independent = _independent_rtstruct(rtstruct, sample)
    assert [s.name for s in sample.segments] == list(independent)
    painted = np.zeros(sample.label.shape, np.uint8)
    for segment in sample.segments:
        painted[independent[segment.name]] = segment.value
    np.testing.assert_array_equal(sample.label, painted)  # voxel for voxel, overlap rule included
    if importlib.util.find_spec("matplotlib") is None:
        return
    from matplotlib.path import Path as MplPath

    # matplotlib's point-in-path (its own boundary rule) agrees up to boundary pixels
    first = sample.segments[0]
    geometry = sample.geometry
    z = int(np.argmax(independent[first.name].sum(axis=(1, 2))))
    ds = pydicom.dcmread(rtstruct)
    r, c = np.asarray(geometry.row_direction), np.asarray(geometry.column_direction)
    origin = np.asarray(geometry.slice_positions[z])
    dy, dx = geometry.pixel_spacing
    ny, nx = sample.label.shape[1:]
    centres = np.column_stack([g.ravel() for g in np.meshgrid(np.arange(nx), np.arange(ny))]).astype(float)
    mpl = np.zeros(ny * nx, bool)
    for roi in ds.ROIContourSequence:
        if int(roi.ReferencedROINumber) != int(ds.StructureSetROISequence[0].ROINumber):
            continue
        for contour in roi.ContourSequence:
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            if abs((points.mean(0) - origin) @ np.cross(r, c)) > 0.5:
                continue
            rel = points - origin
            mpl ^= MplPath(np.column_stack([rel @ r / dx, rel @ c / dy])).contains_points(centres)
    dice = _dice(mpl.reshape(ny, nx), independent[first.name][z])
    assert dice > 0.97, dice
