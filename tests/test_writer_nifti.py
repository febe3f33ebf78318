"""NIfTI writer: read back by SimpleITK (and nibabel when installed) with the same array and geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import blake3
import numpy as np
import pytest
import SimpleITK as sitk

from medflow.sample import Geometry, Sample
from medflow.steps.spatial import ResampleParams, resample
from medflow.writers.nifti import NiftiParams, NiftiRefused, write_nifti
from tests.conftest import shared_data_path
from tests.test_steps_spatial import read_series

PARAMS = NiftiParams(kind="nifti")


@pytest.fixture(autouse=True)
def _floating_point_errors_raise():
    """As in the engine (medflow.engine.run.apply_step): NaN/inf/overflow raise instead of spreading."""
    with np.errstate(divide="raise", invalid="raise", over="raise", under="ignore"):
        yield


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_sample(pixels, *, reverse=False, axes="zyx", item_id="mr-oblique"):
    """A regular oblique stack: directions rotated, slices 2.5 mm apart along (or against) the normal."""
    dirs = rotation(0.2, -0.1, 0.35)
    row, col = dirs[:, 0], dirs[:, 1]
    normal = np.cross(row, col) * (-1 if reverse else 1)
    origin = np.array([-80.5, 12.25, 33.0])
    positions = tuple(tuple(origin + 2.5 * k * normal) for k in range(pixels.shape[0]))
    geometry = Geometry(tuple(row), tuple(col), (0.9, 0.7), positions, 2.5)
    return Sample(item_id, pixels, axes, geometry=geometry)


def check_geometry(image: sitk.Image, sample: Sample):
    g = sample.geometry
    np.testing.assert_allclose(image.GetOrigin(), g.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), (g.pixel_spacing[1], g.pixel_spacing[0], 2.5), atol=1e-5)
    dirs = np.asarray(image.GetDirection()).reshape(3, 3)
    step = np.asarray(g.slice_positions[1]) - np.asarray(g.slice_positions[0])
    np.testing.assert_allclose(dirs, np.column_stack([g.row_direction, g.column_direction, step / 2.5]), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
@pytest.mark.parametrize("reverse", [False, True], ids=["along-normal", "against-normal"])
def test_round_trip_through_simpleitk(tmp_path, dtype, reverse):
    pixels = (np.random.default_rng(2).random((5, 6, 7)) * 200).astype(dtype)
    sample = oblique_sample(pixels, reverse=reverse)
    [written] = write_nifti(sample, PARAMS, tmp_path)
    path = tmp_path / written.path
    assert written.path == "nifti/mr-oblique.nii.gz"
    assert written.digest == blake3.blake3(path.read_bytes()).hexdigest() and written.size == path.stat().st_size
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), pixels)
    assert sitk.GetArrayFromImage(image).dtype == dtype
    check_geometry(image, sample)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left behind


def test_nibabel_reads_the_ras_affine(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    pixels = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    sample = oblique_sample(pixels)
    [written] = write_nifti(sample, PARAMS, tmp_path)
    image = nibabel.load(tmp_path / written.path)
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), pixels)  # nibabel is (x, y, z)
    g = sample.geometry
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(g.row_direction) * g.pixel_spacing[1]
    lps[:3, 1] = np.asarray(g.column_direction) * g.pixel_spacing[0]
    lps[:3, 2] = np.asarray(g.slice_positions[1]) - np.asarray(g.slice_positions[0])
    lps[:3, 3] = g.origin
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # NIfTI world space is RAS
    np.testing.assert_allclose(image.affine, expected, atol=1e-4)


def test_vector_pixels_round_trip(tmp_path):
    pixels = np.random.default_rng(3).random((4, 5, 6, 3)).astype(np.float32)
    sample = oblique_sample(pixels, axes="zyxc")
    [written] = write_nifti(sample, PARAMS, tmp_path)
    image = sitk.ReadImage(str(tmp_path / written.path))
    assert image.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), pixels)
    check_geometry(image, sample)


def test_same_sample_gives_the_same_bytes(tmp_path):
    sample = oblique_sample(np.ones((3, 4, 4), np.float32))
    first = write_nifti(sample, PARAMS, tmp_path / "a")
    second = write_nifti(sample, PARAMS, tmp_path / "b")
    assert first == second


def _stack(positions, col=(0.0, 1.0, 0.0)):
    geometry = Geometry((1.0, 0.0, 0.0), col, (1.0, 1.0), tuple(positions), None)
    return Sample("ct-irregular", np.zeros((len(positions), 4, 4), np.float32), "zyx", geometry=geometry)


def test_refuses_a_tilted_stack_and_says_to_resample(tmp_path):
    tilt = np.deg2rad(18.5)
    sample = _stack([(0.0, 0.0, 3.0 * k) for k in range(4)], col=(0.0, np.cos(tilt), -np.sin(tilt)))
    with pytest.raises(NiftiRefused, match=r"tilted .*Add a 'resample' step"):
        write_nifti(sample, PARAMS, tmp_path)
    assert not any(tmp_path.rglob("*.nii.gz"))


def test_refuses_an_uneven_stack_even_with_sheared_sform(tmp_path):
    uneven = _stack([(0.0, 0.0, z) for z in (0.0, 3.0, 6.0, 12.0)])
    for params in (PARAMS, SHEARED):
        with pytest.raises(NiftiRefused, match="uneven"):
            write_nifti(uneven, params, tmp_path)


SHEARED = NiftiParams(kind="nifti", irregular="sheared_sform")


def test_sheared_sform_keeps_a_tilted_stack_exact_for_nibabel(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    tilt = np.deg2rad(18.5)
    col = (0.0, np.cos(tilt), -np.sin(tilt))
    positions = [(-10.0, -20.0, 3.0 * k) for k in range(4)]  # table moves along z: sheared grid
    sample = _stack(positions, col=col).replace(pixels=np.arange(64, dtype=np.float32).reshape(4, 4, 4))
    [written] = write_nifti(sample, SHEARED, tmp_path)
    path = tmp_path / written.path
    image = nibabel.load(path)
    # Golden from the DICOM formula: voxel (i, j, k) -> P_k + j dx r + i dy c, in RAS.
    for k, p in enumerate(positions):
        for i, j in ((0, 0), (3, 1), (2, 3)):
            lps = np.asarray(p) + j * np.array([1.0, 0, 0]) + i * np.asarray(col)
            ras = image.affine @ (j, i, k, 1)
            np.testing.assert_allclose(ras[:3], lps * (-1, -1, 1), atol=1e-4)
    assert b"sheared sform" in image.header["descrip"].tobytes()
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), sample.pixels)
    # SimpleITK ignores the non-orthonormal sform and reads the qform: slices at their true normal distance.
    itk = sitk.ReadImage(str(path))
    np.testing.assert_allclose(itk.GetOrigin(), positions[0], atol=1e-4)
    np.testing.assert_allclose(itk.GetSpacing()[2], 3.0 * np.cos(tilt), atol=1e-5)
    assert write_nifti(sample, SHEARED, tmp_path / "again") == [written]  # same bytes


def test_refuses_tensor_layouts_and_missing_geometry(tmp_path):
    with pytest.raises(NiftiRefused, match="only 'zyx' and 'zyxc'"):
        write_nifti(Sample("x", np.zeros((1, 1, 4, 4), np.float32), "nchw"), PARAMS, tmp_path)
    with pytest.raises(NiftiRefused, match="no geometry"):
        write_nifti(Sample("x", np.zeros((2, 4, 4), np.float32), "zyx"), PARAMS, tmp_path)


# ---------------------------------------------------------------------------- real CT


@pytest.mark.shared_data
def test_real_ct_geometry_matches_simpleitk_series_reader(tmp_path):
    folder = shared_data_path("ct_pancreas_tcia")
    sample = read_series(folder, "1-00*.dcm")  # 9 slices keep the test fast
    ordered = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))  # sorted along the normal by GDCM
    files = [f for f in ordered if Path(f).name.startswith("1-00")]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reference = reader.Execute()
    [written] = write_nifti(sample, PARAMS, tmp_path)
    image = sitk.ReadImage(str(tmp_path / written.path))
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference).astype(np.float32))


@pytest.mark.shared_data
def test_real_tilted_ct_is_refused_then_written_after_resample(tmp_path):
    sample = read_series(shared_data_path("dcm_qa_ct", "In", "GE"), "*.dcm")
    with pytest.raises(NiftiRefused, match="tilted .* and uneven"):
        write_nifti(sample, SHEARED, tmp_path)
    regular = resample(sample, ResampleParams(step="resample", spacing=3.0))
    [written] = write_nifti(regular, PARAMS, tmp_path)
    image = sitk.ReadImage(str(tmp_path / written.path))
    g = regular.geometry
    np.testing.assert_allclose(image.GetOrigin(), g.origin, atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), (3.0, 3.0, 3.0), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), regular.pixels)


@pytest.mark.shared_data
def test_real_tilted_philips_ct_sheared_sform_matches_every_image_position(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    sample = read_series(shared_data_path("dcm_qa_ct", "In", "Philips", "S21610", "S2010"), "I*")
    # Keep the first 8x8 pixels of each slice (same first pixel, same geometry): compressing 54 full slices is slow.
    sample = sample.replace(pixels=np.ascontiguousarray(sample.pixels[:, :8, :8]))
    with pytest.raises(NiftiRefused, match="tilted"):
        write_nifti(sample, PARAMS, tmp_path)
    [written] = write_nifti(sample, SHEARED, tmp_path)
    affine = nibabel.load(tmp_path / written.path).affine
    for k, position in enumerate(sample.geometry.slice_positions):  # each slice's own ImagePositionPatient
        np.testing.assert_allclose(affine @ (0, 0, k, 1), (-position[0], -position[1], position[2], 1), atol=1e-3)


@pytest.mark.parametrize("compressor", ["zlib", "isal"])
def test_compression_level_and_compressor_keep_the_image(tmp_path, compressor):
    """Own gzip (any level, zlib or ISA-L) writes the same image as SimpleITK's compression."""
    if compressor == "isal":
        pytest.importorskip("isal")
    sample = oblique_sample(np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8))
    default = write_nifti(sample, NiftiParams(kind="nifti", folder="a"), tmp_path)
    fast = write_nifti(sample, NiftiParams(kind="nifti", folder="b", compression_level=1, compressor=compressor),
                       tmp_path)
    again = write_nifti(sample, NiftiParams(kind="nifti", folder="c", compression_level=1, compressor=compressor),
                        tmp_path)
    assert fast[0].digest == again[0].digest  # timestamp 0: same input, same bytes
    one = gzip.decompress((tmp_path / default[0].path).read_bytes())
    two = gzip.decompress((tmp_path / fast[0].path).read_bytes())
    assert one == two
