"""Resampling on the item's threads: same bytes with any thread count, values from SimpleITK itself."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from medflow.ops import spatial as ops
from medflow.sample import Geometry, Sample
from medflow.steps.spatial import ResampleParams, resample
from medflow.threads import item_threads, threads_for_item


@pytest.fixture(autouse=True)
def _floating_point_errors_raise():
    """As in the engine (medflow.engine.run.apply_step): NaN/inf/overflow raise instead of spreading."""
    with np.errstate(divide="raise", invalid="raise", over="raise", under="ignore"):
        yield


def ct_like(shape=(23, 61, 57), seed=7) -> np.ndarray:
    """Float32 HU-like values with structure and noise (every voxel differs)."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = np.where(x**2 + (y / 0.8) ** 2 < 0.8, 40.0, -1000.0) + 300 * np.sin(7 * z) * np.cos(5 * x)
    return (body + np.random.default_rng(seed).normal(0, 20, shape)).astype(np.float32)


ROW, COL = (0.6, 0.8, 0.0), (-0.8, 0.6, 0.0)  # rotated in-plane: a non-trivial direction matrix
DY, DX, STEP = 0.7, 0.9, 2.5
ORIGIN = np.array([-40.0, 12.5, 80.0])


def positions(n: int) -> list[tuple[float, float, float]]:
    normal = np.cross(ROW, COL)
    return [tuple(ORIGIN + STEP * k * normal) for k in range(n)]


@pytest.mark.parametrize("interpolator", ["linear", "bspline", "nearest"])
def test_same_bytes_with_1_2_and_4_threads(interpolator):
    volume = ct_like()
    outputs = [
        ops.resample_stack(volume, ROW, COL, (DY, DX), positions(volume.shape[0]), (1.0, 0.8, 0.6), interpolator,
                           fill_value=-1024.0, threads=threads).pixels
        for threads in (1, 2, 4)
    ]
    assert outputs[0].tobytes() == outputs[1].tobytes() == outputs[2].tobytes()


def test_same_bytes_with_1_and_2_threads_on_the_two_pass_path():
    volume = ct_like((9, 33, 31))
    uneven = positions(10)[:4] + positions(10)[5:]  # a missing slice: the uneven (two-pass) path
    outputs = [
        ops.resample_stack(volume[:9], ROW, COL, (DY, DX), uneven, (1.0, 1.0, 1.0), "linear", threads=threads).pixels
        for threads in (1, 2)
    ]
    assert outputs[0].tobytes() == outputs[1].tobytes()


def test_linear_resample_is_simpleitks_on_the_field_of_view_grid():
    """Golden values from a SimpleITK Resample written out by hand: output grid keeps the outer voxel edges."""
    volume = ct_like()
    nz, ny, nx = volume.shape
    spacing = (1.0, 0.8, 0.6)  # z, y, x
    ours = ops.resample_stack(volume, ROW, COL, (DY, DX), positions(nz), spacing, "linear", fill_value=-1024.0)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((DX, DY, STEP))
    image.SetOrigin(tuple(ORIGIN))
    direction = np.column_stack([ROW, COL, np.cross(ROW, COL)])
    image.SetDirection(tuple(direction.ravel()))
    sz, sy, sx = spacing
    size = [round(nx * DX / sx), round(ny * DY / sy), round(nz * STEP / sz)]
    # first output centre: half an input voxel back to the edge, half an output voxel in
    shift = np.array([(sx - DX) / 2, (sy - DY) / 2, (sz - STEP) / 2])
    origin = ORIGIN + direction @ shift
    expected = sitk.GetArrayFromImage(sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, tuple(origin), (sx, sy, sz), tuple(direction.ravel()),
        -1024.0, sitk.sitkFloat32,
    ))
    assert ours.pixels.shape == expected.shape
    np.testing.assert_array_equal(ours.pixels, expected)
    np.testing.assert_allclose(ours.origin, origin, atol=1e-9)


def test_array_of_image_is_no_copy_and_keeps_the_image_alive():
    image = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
    array = ops.array_of_image(image)
    del image
    gc.collect()
    [np.full(1000, 7.0) for _ in range(100)]  # reuse freed memory if the buffer had been freed
    np.testing.assert_array_equal(array, np.arange(60, dtype=np.float32).reshape(3, 4, 5))
    assert array.flags.c_contiguous and array.flags.writeable


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ("1", 1), ("0", 1), ("", None), ("auto", None)])
def test_item_threads_follow_joblibs_share_of_the_cores(monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert item_threads() == expected


def test_item_threads_default_to_simpleitks_when_not_in_a_worker(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert item_threads() is None


def test_the_engines_decision_for_the_item_wins_and_ends_with_the_item(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    with threads_for_item(1):
        assert item_threads() == 1
        with threads_for_item(2):
            assert item_threads() == 2
        assert item_threads() == 1
    assert item_threads() == 4


def test_run_item_runs_the_item_on_its_share_of_the_workers(monkeypatch):
    from medflow.engine import run as run_module
    from medflow.engine.task import ItemResult

    seen = []
    monkeypatch.setattr(run_module, "_run", lambda task: seen.append(item_threads()) or ItemResult("x", "ok"))
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    task = SimpleNamespace(item=SimpleNamespace(item_id="x"), threads=2)
    assert run_module.run_item(task).status == "ok"
    assert seen == [2] and item_threads() == 8


def test_resample_step_runs_on_the_item_threads(monkeypatch):
    seen = []
    original = ops.resample_stack

    def spy(*args, **kwargs):
        seen.append(kwargs.get("threads"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ops, "resample_stack", spy)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    volume = ct_like((6, 20, 20))
    geometry = Geometry(ROW, COL, (DY, DX), tuple(positions(6)), STEP)
    out = resample(Sample("ct-1", volume, "zyx", geometry=geometry), ResampleParams(step="resample", spacing=1.0))
    assert seen == [2] and out.pixels.dtype == np.float32
