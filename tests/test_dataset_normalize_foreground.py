"""normalize with a foreground mask: z-score statistics from the voxels above the item's Otsu threshold."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.ops.normalize import otsu_threshold
from medflow.sample import Sample
from medflow.steps.normalize import NormalizeParams, normalize_step


def _two_classes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    background = rng.normal(0.0, 5.0, 6000)
    foreground = rng.normal(300.0, 20.0, 2000)
    return np.concatenate([background, foreground]).astype(np.float32).reshape(2, 40, 100)


def test_otsu_separates_two_classes():
    pixels = _two_classes()
    threshold = otsu_threshold(pixels)
    assert 0 < threshold < 240
    assert float((pixels > threshold).mean()) == pytest.approx(0.25, abs=0.005)  # 2000 of 8000 voxels


def test_otsu_agrees_with_an_exhaustive_between_class_variance_search():
    x = _two_classes(1).ravel().astype(np.float64)
    counts, edges = np.histogram(x, bins=256)
    best, best_k = -1.0, 0
    for k in range(255):  # independent of the cumulative formula: direct class statistics per cut
        low, high = x[x < edges[k + 1]], x[x >= edges[k + 1]]
        if low.size and high.size:
            value = low.size * high.size * (low.mean() - high.mean()) ** 2
            if value > best:
                best, best_k = value, k
    assert otsu_threshold(x) == pytest.approx(edges[best_k + 1])


def test_zscore_with_otsu_foreground_uses_foreground_statistics_only():
    pixels = _two_classes()
    sample = Sample("it", pixels, "zyx")
    out = normalize_step(sample, NormalizeParams(step="normalize", mode="zscore", foreground="otsu",
                                                 background="zero"))
    fg = pixels > out.meta["normalize"]["stats"]["otsu_threshold"]
    assert abs(float(out.pixels[fg].mean())) < 1e-3 and float(out.pixels[fg].std()) == pytest.approx(1, abs=1e-3)
    assert (out.pixels[~fg] == 0).all()


def test_foreground_options_are_checked_and_keep_old_cache_keys():
    with pytest.raises(ValueError, match="per-item"):
        NormalizeParams(step="normalize", mode="zscore", foreground="otsu", scope="dataset")
    with pytest.raises(ValueError, match="needs a foreground"):
        NormalizeParams(step="normalize", mode="zscore", background="zero")
    params = NormalizeParams(step="normalize", mode="zscore")
    assert "foreground" not in params.canonical_params() and "background" not in params.canonical_params()
