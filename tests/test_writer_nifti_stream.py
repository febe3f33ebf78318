"""NIfTI written by medflow's streamed gzip: byte for byte SimpleITK's file inside, same bytes on any thread count."""

from __future__ import annotations

import gzip

import blake3
import numpy as np
import pytest
import SimpleITK as sitk
from pydantic import ValidationError

from medflow.sample import Geometry, Sample
from medflow.writers.nifti import NiftiParams, gzip_bytes, write_nifti
from tests.test_writer_nifti import oblique_sample

pytest.importorskip("isal")


def simpleitk_nii(sample: Sample, tmp_path) -> bytes:
    """What SimpleITK writes uncompressed for the sample's array and lattice, set here by hand."""
    g = sample.geometry
    pixels = sample.pixels.astype(np.uint8) if sample.pixels.dtype == np.bool_ else sample.pixels
    image = sitk.GetImageFromArray(pixels)
    image.SetOrigin(g.slice_positions[0])
    step = (np.asarray(g.slice_positions[1]) - np.asarray(g.slice_positions[0])) if len(g.slice_positions) > 1 else None
    z = float(np.linalg.norm(step)) if step is not None else (g.slice_spacing or 1.0)
    image.SetSpacing((g.pixel_spacing[1], g.pixel_spacing[0], z))
    normal = step / z if step is not None else np.cross(g.row_direction, g.column_direction)
    image.SetDirection(tuple(np.column_stack([g.row_direction, g.column_direction, normal]).ravel()))
    path = tmp_path / "reference.nii"
    sitk.WriteImage(image, str(path), useCompression=False)
    return path.read_bytes()


@pytest.mark.parametrize("compressor", ["isal", "zlib"])
@pytest.mark.parametrize(
    ("shape", "dtype", "reverse"),
    [((5, 6, 7), np.float32, False), ((5, 6, 7), np.int16, True), ((1, 9, 4), np.float32, False),
     ((4, 1, 3), np.uint8, False), ((3, 5, 5), np.float64, True), ((2, 3, 4), np.bool_, False)],
    ids=["float32", "int16-reversed", "one-slice", "one-row", "float64", "bool"],
)
def test_streamed_file_is_simpleitks_file(tmp_path, compressor, shape, dtype, reverse):
    pixels = (np.random.default_rng(5).random(shape) * 300 - 100).astype(dtype)
    sample = oblique_sample(pixels, reverse=reverse)
    [written] = write_nifti(sample, NiftiParams(kind="nifti", compression_level=1, compressor=compressor), tmp_path)
    data = (tmp_path / written.path).read_bytes()
    assert written.digest == blake3.blake3(data).hexdigest()
    assert gzip.decompress(data) == simpleitk_nii(sample, tmp_path)


def test_big_endian_pixels_are_written_little_endian(tmp_path):
    pixels = np.arange(2 * 3 * 4, dtype=">i2").reshape(2, 3, 4)
    sample = oblique_sample(pixels)
    [written] = write_nifti(sample, NiftiParams(kind="nifti", compression_level=1, compressor="isal"), tmp_path)
    image = sitk.ReadImage(str(tmp_path / written.path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), pixels)


def test_sheared_sform_on_the_streamed_path(tmp_path):
    tilt = np.deg2rad(12.0)
    col = (0.0, np.cos(tilt), -np.sin(tilt))
    positions = tuple((0.0, 0.0, 3.0 * k) for k in range(4))
    geometry = Geometry((1.0, 0.0, 0.0), col, (1.0, 1.0), positions, None)
    sample = Sample("ct-tilt", np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), "zyx", geometry=geometry)
    default = write_nifti(sample, NiftiParams(kind="nifti", folder="a", irregular="sheared_sform"), tmp_path)
    fast = write_nifti(sample, NiftiParams(kind="nifti", folder="b", irregular="sheared_sform",
                                           compression_level=2, compressor="isal"), tmp_path)
    one = gzip.decompress((tmp_path / default[0].path).read_bytes())
    two = gzip.decompress((tmp_path / fast[0].path).read_bytes())
    assert one == two


@pytest.mark.parametrize("level", [0, 1, 3])
def test_isal_bytes_do_not_depend_on_the_thread_count(tmp_path, monkeypatch, level):
    pixels = np.random.default_rng(1).normal(0, 50, (6, 300, 400)).astype(np.float32)  # 2.9 MB: several blocks
    sample = oblique_sample(pixels)
    hashes = set()
    for threads in ("1", "2", "4"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        [written] = write_nifti(sample, NiftiParams(kind="nifti", folder=f"t{threads}", compression_level=level,
                                                    compressor="isal"), tmp_path)
        hashes.add(written.digest)
    assert len(hashes) == 1
    assert gzip_bytes(b"medflow" * 1000, level, "isal", 1) == gzip_bytes(b"medflow" * 1000, level, "isal", 3)


def test_gzip_bytes_have_no_timestamp():
    for compressor in ("zlib", "isal"):
        data = gzip_bytes(b"x" * 5000, 1, compressor)
        assert data[4:8] == b"\0\0\0\0" and gzip.decompress(data) == b"x" * 5000


@pytest.mark.parametrize(
    "bad", [{"compression_level": 10}, {"compression_level": -1}, {"compressor": "lz4"}, {"compression": 1}],
    ids=["level-10", "level-negative", "unknown-compressor", "unknown-key"],
)
def test_options_are_validated(bad):
    with pytest.raises(ValidationError):
        NiftiParams(kind="nifti", **bad)
