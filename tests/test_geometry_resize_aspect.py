"""resize keep_aspect: pad: one scale factor for both axes, centered padding, geometry that follows."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.sample import Geometry, Sample
from medflow.steps.spatial import ResizeParams, resize


def _sample(ny: int, nx: int, spacing=(0.5, 0.5)) -> Sample:
    geometry = Geometry((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), spacing, ((10.0, 20.0, 30.0),))
    return Sample("it", np.ones((1, ny, nx), np.float32), "zyx", geometry=geometry)


def test_a_wide_image_is_scaled_to_fit_and_padded_top_and_bottom():
    out = resize(_sample(100, 200), ResizeParams(step="resize", size=(64, 64), keep_aspect="pad", pad_value=-1))
    assert out.pixels.shape == (1, 64, 64)
    rows = np.flatnonzero((out.pixels[0] == 1).all(axis=1))
    assert len(rows) == 32 and rows[0] == 16  # 100 x 200 -> 32 x 64, 16 rows of padding above and below
    assert (out.pixels[0, :16] == -1).all() and (out.pixels[0, 48:] == -1).all()
    dy, dx = out.geometry.pixel_spacing
    assert dy == pytest.approx(dx) == pytest.approx(0.5 * 200 / 64)  # square pixels: aspect kept
    # the first kept row's centre stays on the image: origin moved up by 16 padded rows
    assert out.geometry.origin[1] == pytest.approx(20.0 + (dx - 0.5) / 2 - 16 * dy)


def test_without_keep_aspect_the_params_and_cache_keys_are_unchanged():
    plain = ResizeParams(step="resize", size=(64, 64))
    assert plain.canonical_params() == {"size": [64, 64], "interpolation": "linear"}
    assert "keep_aspect" in ResizeParams(step="resize", size=(64, 64), keep_aspect="pad").canonical_params()
