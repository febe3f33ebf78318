"""Geometry with every output: the manifest and medflow.dataset carry each item's exact LPS geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

import medflow.dataset as mds
from medflow.engine.build import build
from medflow.errors import InputError
from medflow.geometry import from_record, geometry_record
from medflow.recipe.loader import load_recipe
from medflow.sample import Geometry


def _build(tmp_path: Path, steps: str, name: str = "out", engine: str = "{workers: 1}") -> mds.BuiltDataset:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(f"medflow: 1\nname: g\nsource: {{sample: ct-phantom}}\nsteps: {steps}\n"
                      f"outputs: {{dir: {name}}}\nengine: {engine}\n")
    assert build(load_recipe(recipe), show_progress=False).exit_code == 0
    return mds.open(tmp_path / name)


def _dicom_geometry(root: Path, files: list[str]) -> tuple[list[tuple[float, ...]], tuple[float, ...]]:
    """Independent of medflow: the item's files read with pydicom, sorted along the slice normal."""
    headers = [pydicom.dcmread(root / rel, stop_before_pixels=True) for rel in files]
    iop = np.asarray(headers[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    ordered = sorted(headers, key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))
    positions = [tuple(float(v) for v in d.ImagePositionPatient) for d in ordered]
    return positions, tuple(float(v) for v in ordered[0].PixelSpacing)


def test_every_item_geometry_matches_the_dicom_headers(tmp_path):
    ds = _build(tmp_path, "[{step: window, level: -600, width: 1500}, {step: layout, layout: NCHW}]")
    sample_root = next(Path(tmp_path / ".medflow" / "cache" / "samples").iterdir())
    files = {entry["id"]: [rel for rel, _ in entry["files"]] for entry in ds.manifest["items"]}
    for item in ds:
        positions, spacing = _dicom_geometry(sample_root, files[item.id])
        np.testing.assert_allclose(item.geometry.slice_positions, positions, atol=1e-9)
        assert item.geometry.pixel_spacing == pytest.approx(spacing)
        assert item.meta["geometry"]["origin"] == pytest.approx(positions[0])
        assert item.array_info["shape"] == list(item.array.shape) and item.array_info["axes"] == "nchw"


def test_streamed_and_whole_volume_builds_record_the_same_geometry(tmp_path):
    steps = "[{step: window, level: 40, width: 400}, {step: resize, size: [64, 80]}]"
    streamed = _build(tmp_path, steps, "a", "{workers: 1, stream: true}")
    whole = _build(tmp_path, steps, "b", "{workers: 1, stream: false, fold_pointwise: false}")
    for a, b in zip(streamed, whole, strict=True):
        assert a.meta["geometry"] == b.meta["geometry"] and a.meta["array"] == b.meta["array"]
        assert a.geometry.pixel_spacing[1] == pytest.approx(b.geometry.pixel_spacing[1])


def test_read_series_gives_the_build_geometry(tmp_path):
    ds = _build(tmp_path, "[]")
    sample_root = next(Path(tmp_path / ".medflow" / "cache" / "samples").iterdir())
    with pytest.raises(InputError, match="choose one with item="):
        mds.read_series(sample_root)
    for item in ds:
        sample = mds.read_series(sample_root, item=item.id)
        assert sample.axes == "zyx" and sample.pixels.shape == item.array.shape
        np.testing.assert_array_equal(sample.pixels, item.array)
        assert sample.geometry.slice_positions == item.geometry.slice_positions


def test_an_uneven_stack_keeps_every_position():
    geometry = Geometry((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.7, 0.7),
                        ((0.0, 0.0, 0.0), (0.0, 0.0, 2.0), (0.0, 0.0, 5.0)))
    record = geometry_record(geometry)
    assert record["regular"] is False and record["spacing"][0] is None and len(record["slice_positions"]) == 3
    assert from_record(record).slice_positions == geometry.slice_positions


def test_a_tilted_regular_stack_is_rebuilt_from_origin_and_step():
    positions = tuple((0.0, 0.5 * k, 2.0 * k) for k in range(5))  # sheared along y: gantry tilt
    geometry = Geometry((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.5, 0.5), positions, slice_spacing=2.0)
    record = geometry_record(geometry)
    assert record["regular"] is True and "slice_positions" not in record
    assert record["slice_step"] == [0.0, 0.5, 2.0] and record["direction"]["z"] == [0.0, 0.0, 1.0]
    np.testing.assert_allclose(from_record(record).slice_positions, positions)
