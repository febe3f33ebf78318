"""N4 bias-field correction and denoising on synthetic volumes with known truth."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medflow.errors import StepError
from medflow.ops.correction import curvature_flow, n4_bias_correction, nl_means_8bit
from medflow.sample import Geometry, Sample
from medflow.steps.correction import DenoiseParams, N4Params, denoise
from medflow.steps.correction import n4_bias_correction as n4_step


@pytest.fixture(autouse=True)
def _floating_point_errors_raise():
    """As in the engine (medflow.engine.run.apply_step): NaN/inf/overflow raise instead of spreading."""
    with np.errstate(divide="raise", invalid="raise", over="raise", under="ignore"):
        yield


def phantom(shape=(24, 64, 64)):
    """Ellipsoid object (two tissues, 400 and 600) on a zero background; returns (truth, object mask)."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n in shape), indexing="ij")
    inside = (z / 0.85) ** 2 + (y / 0.8) ** 2 + (x / 0.8) ** 2 < 1
    truth = np.where(inside, np.where(x > 0.2, 600.0, 400.0), 0.0)
    return truth, inside, (z, y, x)


def cv(values):
    return float(values.std() / values.mean())


def tissue_cv(volume, truth, inside):
    """Mean coefficient of variation within each tissue (eroded away from its boundary)."""
    core = inside & (np.abs(truth - 400) < 1)
    other = inside & (np.abs(truth - 600) < 1)
    return (cv(volume[core]) + cv(volume[other])) / 2


def test_n4_removes_a_smooth_multiplicative_bias():
    truth, inside, (z, y, x) = phantom()
    bias = np.exp(0.35 * x + 0.2 * y - 0.15 * z**2)
    rng = np.random.default_rng(0)
    observed = (truth * bias + rng.normal(0, 4, truth.shape)).astype(np.float32)
    corrected, field = n4_bias_correction(observed, (3.0, 1.0, 1.0), shrink_factor=2, iterations=(50, 50, 30))
    assert corrected.dtype == np.float32 and corrected.shape == observed.shape
    before, after = tissue_cv(observed, truth, inside), tissue_cv(corrected, truth, inside)
    assert before > 0.08
    assert after < before / 3
    # The estimated field follows the true one up to a global scale (N4 cannot know the scale).
    ratio = field[inside] / bias[inside]
    assert cv(ratio) < 0.05
    np.testing.assert_allclose(corrected * field, observed, rtol=1e-4, atol=1e-3)


def test_n4_with_offset_handles_ct_like_negative_values():
    truth, inside, (_, _, x) = phantom((12, 48, 48))
    truth_hu = np.where(inside, truth / 10.0, -1000.0)  # tissues at 40 and 60 HU in air
    bias = np.exp(0.3 * x)
    hu = ((truth_hu + 1024.0) * bias - 1024.0).astype(np.float32)  # multiplicative on HU + 1024
    corrected, _ = n4_bias_correction(hu, (3.0, 1.0, 1.0), intensity_offset=1024.0, iterations=(40, 40))
    assert np.isfinite(corrected).all()
    before = tissue_cv(hu + 1024.0, truth, inside)
    assert before > 0.05 and tissue_cv(corrected + 1024.0, truth, inside) < before / 3


def test_n4_refuses_an_all_negative_volume():
    with pytest.raises(ValueError, match="mask is empty"):
        n4_bias_correction(np.full((8, 16, 16), -5.0, np.float32), (1, 1, 1), mask="positive")


def test_n4_is_deterministic_and_works_on_one_slice():
    truth, inside, (_, y, x) = phantom((1, 64, 64))
    observed = (truth * np.exp(0.3 * x + 0.1 * y)).astype(np.float32)
    first, _ = n4_bias_correction(observed, (1.0, 0.7, 0.7), iterations=(30, 30))
    second, _ = n4_bias_correction(observed, (1.0, 0.7, 0.7), iterations=(30, 30))
    assert first.tobytes() == second.tobytes()
    assert tissue_cv(first, truth, inside) < tissue_cv(observed, truth, inside) / 2


def _sample(pixels, spacing=(2.0, 0.8, 0.8), axes="zyx"):
    nz = pixels.shape[0]
    geometry = Geometry((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), spacing[1:], tuple((0.0, 0.0, spacing[0] * k) for k in range(nz)),
                        spacing[0])
    return Sample("mr-test", pixels, axes, geometry=geometry)


def test_n4_step_records_the_field_range_and_refuses_channels():
    truth, _, (_, _, x) = phantom((10, 40, 40))
    out = n4_step(_sample((truth * np.exp(0.3 * x)).astype(np.float32)), N4Params(step="n4_bias_correction", iterations=(20,)))
    low, high = out.meta["n4_bias_field_range"]
    assert 0 < low < high
    with pytest.raises(StepError, match="axes 'zyx'"):
        n4_step(_sample(np.ones((2, 4, 4, 3), np.float32), axes="zyxc"), N4Params(step="n4_bias_correction"))


def _noisy():
    truth, inside, (z, y, x) = phantom((12, 48, 48))
    rng = np.random.default_rng(1)
    # Flat region: well inside the 600 tissue, away from every edge (which smoothing may move).
    flat = (x > 0.35) & ((z / 0.85) ** 2 + (y / 0.8) ** 2 + (x / 0.8) ** 2 < 0.7)
    assert flat.sum() > 500
    return flat, inside, (truth + rng.normal(0, 25, truth.shape)).astype(np.float32)


def flat_region_std(volume, flat):
    return float(volume[flat].std())


def test_curvature_flow_reduces_noise_and_is_simpleitk_with_relative_spacing():
    flat, _, noisy = _noisy()
    out = curvature_flow(noisy, (2.0, 0.8, 0.8), time_step=0.0625, iterations=10)
    assert flat_region_std(out, flat) < 0.6 * flat_region_std(noisy, flat)
    assert abs(out[flat].mean() - 600) < 5  # no intensity drift
    image = sitk.GetImageFromArray(noisy)
    image.SetSpacing((1.0, 1.0, 2.5))  # (x, y, z) spacing / smallest spacing
    expected = sitk.GetArrayFromImage(sitk.CurvatureFlow(image, 0.0625, 10))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_nl_means_reduces_noise_with_8_bit_levels_in_range():
    flat, _, noisy = _noisy()
    out = nl_means_8bit(noisy, (-100.0, 800.0), h=15)
    assert flat_region_std(out, flat) < 0.5 * flat_region_std(noisy, flat)
    assert out.min() >= -100.0 and out.max() <= 800.0
    levels = np.round((out.astype(np.float64) + 100.0) / (900.0 / 255.0), 3)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # every value is one of 256 levels


def test_denoise_step_both_methods_and_params():
    flat, _, noisy = _noisy()
    for params in (DenoiseParams(step="denoise", iterations=8), DenoiseParams(step="denoise", method="nl_means", h=12)):
        out = denoise(_sample(noisy), params)
        assert out.pixels.dtype == np.float32
        assert flat_region_std(out.pixels, flat) < 0.7 * flat_region_std(noisy, flat)
        assert out.meta["denoise"]["method"] == params.method
    with pytest.raises(ValueError, match="odd"):
        DenoiseParams(step="denoise", method="nl_means", template_window=6)


@pytest.mark.shared_data
def test_n4_on_real_mr_flattens_the_brain_and_keeps_its_structure():
    import pydicom

    from tests.conftest import shared_data_path

    folder = shared_data_path("dcm_qa_me", "In", "2_me_FieldMap_GRE")
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm")) if "_e2" not in p.name]  # echo 1
    iop = np.asarray(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    volume = np.stack([ds.pixel_array for ds in datasets]).astype(np.float32)  # 36 x 64 x 64, 3 mm voxels
    corrected, field = n4_bias_correction(volume, (3.0, 3.0, 3.0), iterations=(50, 50, 50))
    bright = volume > np.percentile(volume, 60)
    assert cv(corrected[bright]) < 0.85 * cv(volume[bright])
    assert np.corrcoef(volume[bright], corrected[bright])[0, 1] > 0.8  # anatomy kept, only the field removed
    assert 0.2 < field.min() and field.max() < 5
