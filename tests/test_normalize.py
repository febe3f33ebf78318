"""Normalization: ops with statistics as input, mergeable dataset accumulators, and the step.

Goldens are hand-computed or numpy's own statistics functions on the same values.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from medflow.errors import StepError
from medflow.ops.normalize import (
    HistogramAccumulator,
    MomentsAccumulator,
    StatsAccumulator,
    compute_stats,
    normalize,
)
from medflow.sample import Sample
from medflow.steps.normalize import NormalizeParams, normalize_step
from medflow.steps.registry import get_step

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def P(**kw) -> NormalizeParams:
    return NormalizeParams(step="normalize", **kw)


def ct_like(seed: int = 0, n: int = 20000) -> np.ndarray:
    """Air around a body: 40 % near -1000 HU, the rest soft tissue around 40 HU, integers."""
    rng = np.random.default_rng(seed)
    air = rng.normal(-1000, 20, int(n * 0.4))
    body = rng.normal(40, 150, n - air.size)
    return np.rint(np.concatenate([air, body])).clip(-1024, 3071).astype(np.float32)


# ---------------------------------------------------------------- ops goldens


def test_minmax_golden():
    # (x - min) / (max - min) * (y_max - y_min) + y_min with min -100, max 300, range [-1, 1]
    x = np.array([-100.0, 0.0, 300.0])
    stats = compute_stats(x, "minmax")
    assert stats == {"min": -100.0, "max": 300.0}
    np.testing.assert_allclose(normalize(x, "minmax", stats, output_range=(-1, 1)), [-1, -0.5, 1])
    np.testing.assert_array_equal(normalize(np.full(3, 7.0), "minmax", {"min": 7, "max": 7}), [0, 0, 0])


def test_zscore_within_threshold_mask_golden():
    # values above -500: [0, 100, 200] -> mean 100, population std sqrt(20000/3) = 81.6496580927726
    x = np.array([-1000.0, -1000.0, 0.0, 100.0, 200.0])
    stats = compute_stats(x, "zscore", above=-500)
    assert stats["count"] == 3 and stats["mean"] == pytest.approx(100.0)
    assert stats["std"] == pytest.approx(81.6496580927726)
    # every voxel is normalized: -1000 -> (-1000 - 100) / 81.6497 = -13.4721...
    np.testing.assert_allclose(normalize(x, "zscore", stats)[:3], [-1100 / 81.6496580927726] * 2 + [-100 / 81.6496580927726],
                               rtol=1e-6)


def test_percentile_zscore_is_nnunet_clip_then_standardize():
    # nnU-Net CT normalization: clip to [p0.5, p99.5], then (x - mean) / std with mean/std of the
    # unclipped masked voxels. Numbers from numpy on the same values.
    x = ct_like()
    body = x[x > -500].astype(np.float64)
    lower, upper = np.percentile(body, [0.5, 99.5])
    expected = (np.clip(x.astype(np.float64), lower, upper) - body.mean()) / body.std()
    stats = compute_stats(x, "percentile_zscore", above=-500)
    assert (stats["lower"], stats["upper"]) == pytest.approx((lower, upper))
    np.testing.assert_allclose(normalize(x, "percentile_zscore", stats), expected, rtol=1e-5, atol=1e-6)


def test_fixed_imagenet_per_channel_golden():
    # (0.5 - 0.485) / 0.229 = 0.06550218..., (0.5 - 0.456) / 0.224 = 0.19642857..., (0.5 - 0.406) / 0.225 = 0.41777...
    rgb = np.full((2, 2, 3), 0.5)
    out = normalize(rgb, "fixed", IMAGENET, channel_axis=-1)
    np.testing.assert_allclose(out[0, 0], [0.015 / 0.229, 0.044 / 0.224, 0.094 / 0.225], rtol=1e-6)
    with pytest.raises(ValueError, match="3 means/stds given for 4 channels"):
        normalize(np.zeros((2, 4)), "fixed", IMAGENET, channel_axis=-1)


def test_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="no voxel above 5000"):
        compute_stats(np.zeros(10), "zscore", above=5000)


# ---------------------------------------------------------------- properties


values = arrays(np.float64, st.integers(2, 200), elements=st.floats(-3000, 3000))


@settings(max_examples=100, deadline=None)
@given(x=values)
def test_zscore_has_mean_zero_and_std_one(x):
    if np.ptp(x) < 1e-3:  # a (nearly) constant array has no spread to standardize
        return
    y = normalize(x, "zscore", compute_stats(x, "zscore")).astype(np.float64)
    assert abs(y.mean()) < 1e-4 and abs(y.std() - 1) < 1e-4


@settings(max_examples=100, deadline=None)
@given(x=values, low=st.floats(0, 49), high=st.floats(51, 100))
def test_percentile_clip_bounds(x, low, high):
    stats = compute_stats(x, "percentile_clip", percentiles=(low, high))
    y = normalize(x, "percentile_clip", stats)
    lower, upper = np.percentile(x, [low, high])
    assert y.min() >= np.float32(lower) and y.max() <= np.float32(upper)
    assert np.mean(x < lower) <= low / 100 + 1 / x.size


@settings(max_examples=50, deadline=None)
@given(x=values)
def test_minmax_lands_in_output_range(x):
    y = normalize(x, "minmax", compute_stats(x, "minmax"), output_range=(-1, 1))
    assert y.min() >= -1 and y.max() <= 1


# ---------------------------------------------------------------- dataset accumulators


def test_moments_merge_equals_the_whole():
    parts = [ct_like(seed) for seed in range(3)]
    whole = np.concatenate(parts).astype(np.float64)
    merged = MomentsAccumulator()
    for part in parts:
        acc = MomentsAccumulator()
        acc.update(part)
        merged.merge(acc)
    assert merged.count == whole.size
    assert merged.mean == pytest.approx(whole.mean(), rel=1e-12)
    assert merged.std == pytest.approx(whole.std(), rel=1e-12)


def test_histogram_percentiles_within_one_bin_of_numpy():
    x = ct_like(1).astype(np.float64)
    hist = HistogramAccumulator(-1024, 3072, 1.0)
    for chunk in np.array_split(x, 7):
        hist.update(chunk)
    for q in (0.5, 5, 50, 99.5):
        assert abs(hist.percentile(q) - np.percentile(x, q)) <= 1.0, q


def test_histogram_refuses_a_percentile_outside_its_range():
    hist = HistogramAccumulator(-1024, 3072, 1.0)
    hist.update(np.array([-3024.0] * 10 + [0.0] * 90))  # outside-FOV fill below the range
    with pytest.raises(ValueError, match="below the histogram range start -1024.*widen"):
        hist.percentile(5)
    assert hist.percentile(50) == pytest.approx(0.5, abs=0.5)


def test_stats_accumulator_matches_per_item_stats_and_survives_json():
    items = [ct_like(seed, 5000) for seed in range(4)]
    workers = [StatsAccumulator("percentile_zscore", above=-500) for _ in range(2)]
    for i, item in enumerate(items):
        workers[i % 2].update(item)
    # workers return small JSON records; the engine merges them
    records = [json.loads(json.dumps(w.to_json())) for w in workers]
    total = StatsAccumulator.from_json(records[0])
    total.merge(StatsAccumulator.from_json(records[1]))
    stats = total.result()
    exact = compute_stats(np.concatenate(items), "percentile_zscore", above=-500)
    assert stats["count"] == exact["count"]
    assert stats["mean"] == pytest.approx(exact["mean"], rel=1e-9)
    assert stats["std"] == pytest.approx(exact["std"], rel=1e-9)
    assert abs(stats["lower"] - exact["lower"]) <= 1 and abs(stats["upper"] - exact["upper"]) <= 1


# ---------------------------------------------------------------- the step


def sample(x, axes="zyx", channels=(), meta=None) -> Sample:
    return Sample("item", np.asarray(x, dtype=np.float32), axes, channels=channels, meta=meta or {})


def test_step_params_validation():
    with pytest.raises(ValidationError, match="mean and std are given for mode fixed"):
        P(mode="zscore", mean=[0], std=[1])
    with pytest.raises(ValidationError, match="mean and std are given for mode fixed"):
        P(mode="fixed")
    with pytest.raises(ValidationError, match="percentiles must satisfy"):
        P(mode="percentile_zscore", percentiles=(99, 1))
    with pytest.raises(ValidationError, match="no scope dataset"):
        P(mode="fixed", scope="dataset", **IMAGENET)
    assert get_step("normalize").version == 1


def test_step_item_zscore_records_stats():
    out = normalize_step(sample(np.array([0.0, 100.0, 200.0]).reshape(1, 1, 3)), P(mode="zscore"))
    # mean 100, std sqrt(20000/3) = 81.6496580927726 -> [-1.2247449, 0, 1.2247449]
    np.testing.assert_allclose(out.pixels.ravel(), [-1.224744871391589, 0, 1.224744871391589], rtol=1e-6)
    assert out.meta["normalize"]["stats"]["mean"] == pytest.approx(100)


def test_step_dataset_scope_needs_engine_stats():
    params = P(mode="zscore", scope="dataset", above=-500)
    with pytest.raises(StepError, match=r"scope: dataset needs dataset statistics.*dataset_stats"):
        normalize_step(sample(np.zeros((1, 1, 2))), params)
    stats = {params.stats_key(): {"mean": 10.0, "std": 5.0, "count": 99}}
    out = normalize_step(sample(np.array([[[20.0, 0.0]]]), meta={"dataset_stats": stats}), params)
    np.testing.assert_allclose(out.pixels.ravel(), [2.0, -2.0])  # (20 - 10) / 5, (0 - 10) / 5
    assert params.needs_dataset_stats() and not P(mode="zscore").needs_dataset_stats()
    assert params.stats_key() == P(mode="zscore", scope="dataset", above=-500.0).stats_key()
    assert params.stats_key() != P(mode="zscore", scope="dataset").stats_key()
    assert params.new_accumulator().mode == "zscore"


def test_step_fixed_uses_the_channel_axis():
    rgb = sample(np.full((1, 2, 2, 3), 0.5), axes="zyxc", channels=("r", "g", "b"))
    out = normalize_step(rgb, P(mode="fixed", **IMAGENET))
    np.testing.assert_allclose(out.pixels[0, 0, 0], [0.015 / 0.229, 0.044 / 0.224, 0.094 / 0.225], rtol=1e-6)
    assert out.meta["normalize"]["channels"] == ["r", "g", "b"]
    with pytest.raises(StepError, match="3 means for a sample without channels"):
        normalize_step(sample(np.zeros((1, 2, 2))), P(mode="fixed", **IMAGENET))
