"""Spatial steps on Samples: geometry bookkeeping checked by hand, against SimpleITK, and on real CT.

The real-data tests read the DICOM files with pydicom in this file (tiny helper
below) so they do not depend on medflow's reader; geometry goldens come from each
slice's own ImagePositionPatient / ImageOrientationPatient (PS3.3 C.7.6.2.1.1) or
from SimpleITK's series reader on the plain (untilted, even) series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medflow.errors import StepError
from medflow.sample import Geometry, Sample
from medflow.steps.spatial import (
    CropPadParams,
    OrientParams,
    ResampleParams,
    ResizeParams,
    crop_pad,
    orient,
    resample,
    resize,
)
from tests.conftest import shared_data_path

TILT = np.deg2rad(18.5)
TILTED_COL = (0.0, float(np.cos(TILT)), float(-np.sin(TILT)))


@pytest.fixture(autouse=True)
def _floating_point_errors_raise():
    """As in the engine (medflow.engine.run.apply_step): NaN/inf/overflow raise instead of spreading."""
    with np.errstate(divide="raise", invalid="raise", over="raise", under="ignore"):
        yield


def make_sample(shape, positions, *, row=(1.0, 0.0, 0.0), col=(0.0, 1.0, 0.0), spacing=(0.5, 0.25),
                pixels=None, slice_spacing=None, axes="zyx"):
    if pixels is None:
        pixels = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    geometry = Geometry(tuple(row), tuple(col), tuple(spacing), tuple(tuple(map(float, p)) for p in positions),
                        slice_spacing)
    headers = [{"slice": k} for k in range(shape[0])]
    return Sample("ct-test", pixels, axes, geometry=geometry, headers=headers)


def centres(geometry: Geometry, shape) -> np.ndarray:
    """(nz, ny, nx, 3) voxel centres from the geometry, by the DICOM formula."""
    dy, dx = geometry.pixel_spacing
    i, j = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    plane = (j * dx)[..., None] * np.asarray(geometry.row_direction) + (i * dy)[..., None] * np.asarray(
        geometry.column_direction
    )
    return np.asarray(geometry.slice_positions)[:, None, None, :] + plane[None]


def assert_voxels_keep_their_positions(before: Sample, after: Sample):
    """Pixels hold unique values: each value must sit at the same physical point before and after."""
    old = centres(before.geometry, before.pixels.shape)
    new = centres(after.geometry, after.pixels.shape)
    where_old = {float(v): old[idx] for idx, v in np.ndenumerate(before.pixels)}
    checked = 0
    for idx, v in np.ndenumerate(after.pixels):
        if float(v) in where_old:
            np.testing.assert_allclose(new[idx], where_old[float(v)], atol=1e-9)
            checked += 1
    assert checked > 0


# ---------------------------------------------------------------------------- resample


def test_resample_makes_a_tilted_stack_regular_and_records_it():
    positions = [(-5.0, -6.0, 2.0 * k) for k in range(6)]
    sample = make_sample((6, 8, 10), positions, col=TILTED_COL)
    out = resample(sample, ResampleParams(step="resample", spacing=1.0))
    g = out.geometry
    normal = np.cross(g.row_direction, g.column_direction)
    steps = np.diff(np.asarray(g.slice_positions), axis=0)
    np.testing.assert_allclose(steps, np.tile(normal, (len(steps), 1)), atol=1e-12)  # 1 mm along the normal
    assert g.slice_spacing == 1.0 and g.pixel_spacing == (1.0, 1.0)
    assert "resampled from" in g.notes[-1] and "tilted" in g.notes[-1]
    assert out.pixels.dtype == np.float32 and len(out.headers) == out.pixels.shape[0]
    assert out.meta["spacing_mm"] == [1.0, 1.0, 1.0]


def test_resample_headers_follow_the_nearest_input_slice():
    positions = [(0.0, 0.0, 4.0 * k) for k in range(4)]
    out = resample(make_sample((4, 3, 3), positions), ResampleParams(step="resample", spacing=(2.0, 0.5, 0.25)))
    z = np.asarray(out.geometry.slice_positions)[:, 2]
    expected = np.clip(np.floor(z / 4.0 + 0.5), 0, 3).astype(int)
    assert [h["slice"] for h in out.headers] == expected.tolist()


def test_resample_channels_equal_per_channel_scalar_runs():
    rng = np.random.default_rng(3)
    positions = [(0.0, 0.0, 3.0 * k) for k in range(5)]
    rgb = rng.random((5, 6, 7, 3)).astype(np.float32)
    params = ResampleParams(step="resample", spacing=(1.0, 0.4, 0.4), interpolator="bspline", fill_value=0)
    vector = resample(make_sample((5, 6, 7, 3), positions, pixels=rgb, axes="zyxc"), params)
    for ch in range(3):
        scalar = resample(make_sample((5, 6, 7), positions, pixels=np.ascontiguousarray(rgb[..., ch])), params)
        np.testing.assert_array_equal(vector.pixels[..., ch], scalar.pixels)


def test_resample_fill_value_min_uses_the_volume_minimum():
    positions = [(0.0, 0.0, 2.0 * k) for k in range(4)]
    pixels = np.full((4, 5, 5), 100.0, np.float32)
    pixels[0, 0, 0] = -1024.0
    sample = make_sample((4, 5, 5), positions, col=TILTED_COL, pixels=pixels, spacing=(1.0, 1.0))
    out = resample(sample, ResampleParams(step="resample", spacing=1.0, interpolator="nearest"))
    assert out.pixels.min() == -1024.0 and (out.pixels == -1024.0).sum() > 1  # the tilted corners are filled


def test_resample_one_slice_is_in_plane_only():
    sample = make_sample((1, 4, 6), [(10.0, 20.0, 30.0)], spacing=(1.0, 0.5), slice_spacing=None)
    out = resample(sample, ResampleParams(step="resample", spacing=(5.0, 0.5, 1.0)))
    # rows 4 x 1 mm -> 8 x 0.5 mm (first centre -0.25 mm); columns 6 x 0.5 mm -> 3 x 1 mm (first centre +0.25 mm).
    assert out.pixels.shape == (1, 8, 3)
    np.testing.assert_allclose(out.geometry.slice_positions, [(10.25, 19.75, 30.0)])
    assert out.geometry.slice_spacing is None and out.meta["spacing_mm"] == [None, 0.5, 1.0]


def test_resample_params_refuse_non_positive_spacing():
    with pytest.raises(ValueError, match="spacing must be > 0"):
        ResampleParams(step="resample", spacing=(1.0, 0.0, 1.0))


# ---------------------------------------------------------------------------- orient


def test_orient_lps_ras_lps_is_the_identity():
    positions = [(3.0, -2.0, 7.0 + 1.5 * k) for k in range(4)]
    sample = make_sample((4, 5, 6), positions, slice_spacing=1.5)
    ras = orient(sample, OrientParams(step="orient", code="RAS"))
    back = orient(ras, OrientParams(step="orient", code="LPS"))
    np.testing.assert_array_equal(back.pixels, sample.pixels)
    np.testing.assert_allclose(back.geometry.slice_positions, sample.geometry.slice_positions, atol=1e-12)
    assert back.geometry.row_direction == sample.geometry.row_direction
    assert back.geometry.pixel_spacing == sample.geometry.pixel_spacing
    assert_voxels_keep_their_positions(sample, ras)


def test_orient_geometry_matches_simpleitk_dicomorient():
    # Sagittal stack: rows along -P (anterior), columns along -S, slices along +L.
    row, col = (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)
    positions = [(-20.0 + 2.0 * k, 30.0, 40.0) for k in range(4)]
    sample = make_sample((4, 5, 6), positions, row=row, col=col, spacing=(0.5, 0.75), slice_spacing=2.0)
    image = sitk.GetImageFromArray(sample.pixels)
    image.SetOrigin(positions[0])
    image.SetSpacing((0.75, 0.5, 2.0))
    image.SetDirection(tuple(np.column_stack([row, col, np.cross(row, col)]).ravel()))
    for code in ("RAS", "LPS", "PIL"):
        expected = sitk.DICOMOrient(image, code)
        out = orient(sample, OrientParams(step="orient", code=code))
        np.testing.assert_array_equal(out.pixels, sitk.GetArrayFromImage(expected))
        g = out.geometry
        np.testing.assert_allclose(g.origin, expected.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose((g.pixel_spacing[1], g.pixel_spacing[0], g.slice_spacing), expected.GetSpacing())
        dirs = np.asarray(expected.GetDirection()).reshape(3, 3)
        np.testing.assert_allclose(g.row_direction, dirs[:, 0], atol=1e-12)
        np.testing.assert_allclose(g.column_direction, dirs[:, 1], atol=1e-12)
        assert_voxels_keep_their_positions(sample, out)


def test_orient_keeps_a_tilted_uneven_stack_exact_when_slices_stay_slices():
    positions = [(-5.0, -6.0, z) for z in (0.0, 2.0, 4.0, 7.0, 9.0)]
    sample = make_sample((5, 4, 6), positions, col=TILTED_COL)
    out = orient(sample, OrientParams(step="orient", code="RAI"))
    assert_voxels_keep_their_positions(sample, out)
    assert [h["slice"] for h in out.headers] == [4, 3, 2, 1, 0]  # z flipped: slices reversed


def test_orient_one_slice_without_slice_spacing():
    sample = make_sample((1, 3, 4), [(1.0, 2.0, 3.0)])
    out = orient(sample, OrientParams(step="orient", code="RAI"))  # flips x, y and the (single) slice axis
    assert_voxels_keep_their_positions(sample, out)
    with pytest.raises(StepError, match="unknown slice spacing"):
        orient(sample, OrientParams(step="orient", code="SPL"))


def test_orient_refuses_to_turn_an_irregular_stack_sideways():
    positions = [(0.0, 0.0, z) for z in (0.0, 2.0, 5.0)]
    with pytest.raises(StepError, match="add a resample step"):
        orient(make_sample((3, 4, 4), positions), OrientParams(step="orient", code="SPL"))


def test_orient_max_obliquity_refuses_oblique_images():
    angle = np.deg2rad(10.0)
    row, col = (float(np.cos(angle)), float(np.sin(angle)), 0.0), (float(-np.sin(angle)), float(np.cos(angle)), 0.0)
    sample = make_sample((2, 3, 3), [(0.0, 0.0, 0.0), (0.0, 0.0, 1.0)], row=row, col=col, slice_spacing=1.0)
    with pytest.raises(StepError, match="10 degrees off LPS"):
        orient(sample, OrientParams(step="orient", code="LPS", max_obliquity_deg=5))
    assert "10 deg" in orient(sample, OrientParams(step="orient", code="LPS")).geometry.notes[-1]


def test_orient_params_reject_bad_codes():
    with pytest.raises(ValueError, match="one body axis twice"):
        OrientParams(step="orient", code="LRS")


# ---------------------------------------------------------------------------- crop_pad, resize


def test_crop_pad_origin_by_hand():
    positions = [(-3.0, -4.0, 10.0 + 2.0 * k) for k in range(5)]
    sample = make_sample((5, 4, 8), positions, spacing=(0.5, 0.25), slice_spacing=2.0)
    out = crop_pad(sample, CropPadParams(step="crop_pad", size=(3, 6, 10), pad_value=-1024))
    # z: 5 -> 3 drops 1 slice at the start; y: 4 -> 6 pads 1 row (0.5 mm) before; x: 8 -> 10 pads 1 column (0.25 mm).
    assert out.pixels.shape == (3, 6, 10)
    np.testing.assert_allclose(out.geometry.slice_positions, [(-3.25, -4.5, z) for z in (12.0, 14.0, 16.0)])
    assert [h["slice"] for h in out.headers] == [1, 2, 3]
    assert (out.pixels[:, 0, :] == -1024).all()
    assert_voxels_keep_their_positions(sample, out)


def test_crop_pad_pads_slices_on_the_slice_step():
    positions = [(0.0, 0.0, 10.0 + 2.0 * k) for k in range(3)]
    out = crop_pad(make_sample((3, 2, 2), positions, slice_spacing=2.0), CropPadParams(step="crop_pad", size=(6, None, None)))
    # 3 -> 6 pads 1 slice before and 2 after: z = 8, 10, 12, 14, 16, 18.
    np.testing.assert_allclose(np.asarray(out.geometry.slice_positions)[:, 2], [8, 10, 12, 14, 16, 18])
    assert [h["slice"] for h in out.headers] == [0, 0, 1, 2, 2, 2]


def test_crop_pad_on_a_tilted_stack_keeps_each_voxel_in_place():
    positions = [(-5.0, -6.0, 2.0 * k) for k in range(6)]
    sample = make_sample((6, 5, 7), positions, col=TILTED_COL)
    assert_voxels_keep_their_positions(sample, crop_pad(sample, CropPadParams(step="crop_pad", size=(4, 8, 3), pad_value=-1)))


def test_resize_spacing_and_origin_by_hand():
    positions = [(10.0, 20.0, 30.0)]
    sample = make_sample((1, 4, 8), positions, spacing=(1.0, 0.5))
    out = resize(sample, ResizeParams(step="resize", size=(2, 2), interpolation="area"))
    # rows: 4 x 1 mm -> 2 x 2 mm, first centre +0.5 mm; columns: 8 x 0.5 mm -> 2 x 2 mm, first centre +0.75 mm.
    assert out.geometry.pixel_spacing == (2.0, 2.0)
    np.testing.assert_allclose(out.geometry.slice_positions, [(10.75, 20.5, 30.0)])
    # Area averaging: each output pixel is the mean of the input pixels in its box.
    np.testing.assert_allclose(out.pixels[0], sample.pixels[0].reshape(2, 2, 2, 4).mean(axis=(1, 3)))


def test_resize_linear_reproduces_a_physical_ramp():
    positions = [(0.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
    sample = make_sample((2, 6, 9), positions, col=TILTED_COL, spacing=(0.6, 0.9))
    ramp = (0.5 * centres(sample.geometry, (2, 6, 9))[..., 0]).astype(np.float32)  # linear in L
    out = resize(sample.replace(pixels=ramp), ResizeParams(step="resize", size=(12, 6)))
    x = centres(out.geometry, out.pixels.shape)[..., 0]
    inner = (x >= 0.0) & (x <= 8 * 0.9)  # within the first and last input column centres
    np.testing.assert_allclose(out.pixels[inner], 0.5 * x[inner], atol=1e-4)


# ---------------------------------------------------------------------------- real CT


def read_series(folder: Path, pattern: str) -> Sample:
    """A Sample from a DICOM folder, read with pydicom only (sorted along the slice normal)."""
    datasets = [pydicom.dcmread(path) for path in sorted(folder.glob(pattern))]
    iop = np.asarray(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    pixels = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets]
    ).astype(np.float32)
    positions = tuple(tuple(float(v) for v in ds.ImagePositionPatient) for ds in datasets)
    gaps = np.diff([np.dot(normal, p) for p in positions])
    uniform = float(gaps.mean()) if np.ptp(gaps) < 1e-3 else None
    geometry = Geometry(tuple(iop[:3]), tuple(iop[3:]), tuple(float(v) for v in datasets[0].PixelSpacing),
                        positions, uniform)
    return Sample(f"real-{folder.name}", pixels, "zyx", geometry=geometry)


@pytest.mark.shared_data
def test_real_ct_resample_matches_simpleitk_series_reader():
    folder = shared_data_path("ct_pancreas_tcia")
    sample = read_series(folder, "*.dcm")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    out = resample(sample, ResampleParams(step="resample", spacing=(4.0, 2.5, 2.5)))
    g = out.geometry
    reference = sitk.Image(out.pixels.shape[2], out.pixels.shape[1], out.pixels.shape[0], sitk.sitkFloat32)
    reference.SetOrigin(g.origin)
    reference.SetSpacing((g.pixel_spacing[1], g.pixel_spacing[0], g.slice_spacing))
    reference.SetDirection(tuple(np.column_stack([g.row_direction, g.column_direction, g.normal]).ravel()))
    expected = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1000.0))
    np.testing.assert_allclose(out.pixels, expected, atol=1e-2)
    # Field of view kept: 134 slices x 3 mm = 402 mm -> round(402 / 4) = 100 slices.
    assert out.pixels.shape[0] == 100


@pytest.mark.shared_data
def test_real_tilted_uneven_ct_nearest_resample_picks_the_true_voxel():
    folder = shared_data_path("dcm_qa_ct", "In", "GE")
    sample = read_series(folder, "*.dcm")
    out = resample(sample, ResampleParams(step="resample", spacing=2.0, interpolator="nearest"))
    assert out.pixels.dtype == np.float32 and out.geometry.slice_spacing == 2.0
    assert "tilted" in out.geometry.notes[-1] and "uneven" in out.geometry.notes[-1]
    # Golden by the DICOM formula: the nearest slice plane along the normal, then the nearest pixel in it.
    g, s = out.geometry, sample.geometry
    points = centres(g, out.pixels.shape).reshape(-1, 3)
    values = out.pixels.reshape(-1)
    r, c = np.asarray(s.row_direction), np.asarray(s.column_direction)
    normal = np.cross(r, c)
    positions = np.asarray(s.slice_positions)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(points), 3000, replace=False)
    distance = (points[chosen] @ normal)[:, None] - (positions @ normal)[None, :]
    k = np.abs(distance).argmin(axis=1)
    rel = points[chosen] - positions[k]
    j = rel @ r / s.pixel_spacing[1]
    i = rel @ c / s.pixel_spacing[0]
    ok = (np.abs(j - np.round(j)) < 0.499) & (np.abs(i - np.round(i)) < 0.499)
    inside = ok & (np.round(j) >= 0) & (np.round(j) < 512) & (np.round(i) >= 0) & (np.round(i) < 512)
    assert inside.sum() > 500
    ii, jj = np.round(i[inside]).astype(int), np.round(j[inside]).astype(int)
    np.testing.assert_array_equal(values[chosen][inside], sample.pixels[k[inside], ii, jj])


@pytest.mark.shared_data
def test_medflow_reader_output_resamples_like_the_pydicom_stack():
    """Integration: the series reader's Geometry (tilted, uneven GE head CT) drives resample like pydicom's tags."""
    from medflow.recipe.model import SeriesFilter
    from medflow.sources.discovery import discover_dicom
    from medflow.sources.fingerprint import FingerprintMemo
    from medflow.sources.series import read_item

    folder = shared_data_path("dcm_qa_ct", "In", "GE")
    [item] = discover_dicom(folder, SeriesFilter(), FingerprintMemo(None)).items
    ours = read_item(item)
    independent = read_series(folder, "*.dcm")
    params = ResampleParams(step="resample", spacing=(2.0, 1.5, 1.5))
    a, b = resample(ours, params), resample(independent, params)
    np.testing.assert_allclose(a.geometry.slice_positions, b.geometry.slice_positions, atol=1e-6)
    np.testing.assert_allclose(a.pixels, b.pixels, atol=1e-3)
