"""N4's effort settings: SimpleITK's own N4 result, same bytes on any thread count, options validated."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydantic import ValidationError

from medflow.ops import correction as ops
from medflow.sample import Geometry, Sample
from medflow.steps.correction import N4Params
from medflow.steps.correction import n4_bias_correction as n4_step

SPACING = (3.0, 1.2, 1.1)  # z, y, x mm


@pytest.fixture(autouse=True)
def _floating_point_errors_raise():
    """As in the engine (medflow.engine.run.apply_step): NaN/inf/overflow raise instead of spreading."""
    with np.errstate(divide="raise", invalid="raise", over="raise", under="ignore"):
        yield


def biased(shape=(12, 48, 40), seed=3) -> np.ndarray:
    """Two tissues in an ellipsoid, times a smooth field (x 0.7 .. 1.4), plus noise; background 0."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    inside = (z / 0.9) ** 2 + (y / 0.8) ** 2 + (x / 0.8) ** 2 < 1
    truth = np.where(inside, np.where(x > 0.1, 600.0, 400.0), 0.0)
    field = np.exp(0.35 * x + 0.15 * y - 0.1 * z)
    noise = np.random.default_rng(seed).normal(0, 5, shape)
    return np.clip(truth * field + np.where(inside, noise, 0), 0, None).astype(np.float32)


def test_corrected_volume_is_simpleitks_n4():
    """Golden values from SimpleITK's N4 called by hand: shrink, Otsu mask, fit, full-resolution field."""
    volume = biased()
    corrected, bias = ops.n4_bias_correction(volume, SPACING, shrink_factor=2, iterations=(20, 20), control_points=4)
    image = sitk.GetImageFromArray(volume.astype(np.float32))
    image.SetSpacing(SPACING[::-1])
    small = sitk.Shrink(image, [2, 2, 2])
    mask = sitk.And(sitk.OtsuThreshold(small, 0, 1, 200), sitk.Cast(small > 0, sitk.sitkUInt8))
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([20, 20])
    n4.SetConvergenceThreshold(0.001)
    n4.SetNumberOfControlPoints([4, 4, 4])
    n4.Execute(small, mask)
    log_field = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)).astype(np.float64)
    np.testing.assert_allclose(bias, np.exp(log_field), rtol=1e-6)
    np.testing.assert_allclose(corrected, volume / np.exp(log_field), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shrink", [1, 2])
def test_same_bytes_with_1_2_and_4_threads(shrink):
    volume = biased()
    outputs = [
        ops.n4_bias_correction(volume, SPACING, shrink_factor=shrink, iterations=(10, 10, 10), threads=threads)
        for threads in (1, 2, 4)
    ]
    for corrected, bias in outputs[1:]:
        assert corrected.tobytes() == outputs[0][0].tobytes()
        assert bias.tobytes() == outputs[0][1].tobytes()


def test_more_effort_fits_the_field_at_least_as_well():
    """Less shrinking and more levels: the corrected tissues are at least as flat (coefficient of variation)."""
    volume = biased()
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in volume.shape), indexing="ij")
    tissue = ((z / 0.9) ** 2 + (y / 0.8) ** 2 + (x / 0.8) ** 2 < 0.7) & (x < -0.2)

    def cv(array):
        return float(array[tissue].std() / array[tissue].mean())

    cheap, _ = ops.n4_bias_correction(volume, SPACING, shrink_factor=4, iterations=(10,))
    costly, _ = ops.n4_bias_correction(volume, SPACING, shrink_factor=1, iterations=(50, 50, 50))
    assert cv(costly) <= cv(cheap) < cv(volume)


def test_step_runs_n4_on_the_item_threads(monkeypatch):
    seen = []
    original = ops.n4_bias_correction

    def spy(*args, **kwargs):
        seen.append(kwargs.get("threads"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ops, "n4_bias_correction", spy)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    volume = biased((6, 24, 20))
    positions = tuple((0.0, 0.0, 3.0 * k) for k in range(6))
    geometry = Geometry((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.2, 1.1), positions, 3.0)
    out = n4_step(Sample("mr-1", volume, "zyx", geometry=geometry),
                  N4Params(step="n4_bias_correction", shrink_factor=2, iterations=(5,)))
    assert seen == [2] and out.pixels.dtype == np.float32


@pytest.mark.parametrize(
    "bad",
    [{"shrink_factor": 0}, {"shrink_factor": 17}, {"iterations": []}, {"convergence_threshold": 0},
     {"control_points": 3}, {"levels": 3}],
    ids=["shrink-0", "shrink-17", "no-level", "threshold-0", "3-control-points", "unknown-key"],
)
def test_options_are_validated(bad):
    with pytest.raises(ValidationError):
        N4Params(step="n4_bias_correction", **bad)


def test_descriptions_carry_the_measured_cost():
    fields = N4Params.model_fields
    for name in ("shrink_factor", "iterations", "convergence_threshold", "control_points"):
        assert "bench_n4" in fields[name].description or "x the time" in fields[name].description, name
