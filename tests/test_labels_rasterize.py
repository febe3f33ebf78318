"""The RTSTRUCT rasteriser's rule (centre inside, even-odd, half-open edges) against an independent ray cast."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medflow.sources.labels.rasterize import rasterize_even_odd, snap


def pnpoly(polygons: list[np.ndarray], x: float, y: float) -> bool:
    """W. R. Franklin's PNPOLY over several polygons (even-odd), one point, plain Python."""
    inside = False
    for polygon in polygons:
        n = len(polygon)
        j = n - 1
        for i in range(n):
            xi, yi = polygon[i]
            xj, yj = polygon[j]
            if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
                inside = not inside
            j = i
    return inside


def reference(polygons, shape):
    return np.array([[pnpoly(polygons, c, r) for c in range(shape[1])] for r in range(shape[0])])


def test_rectangle_on_pixel_centres_covers_its_area_half_open():
    square = np.array([[2.0, 1.0], [6.0, 1.0], [6.0, 4.0], [2.0, 4.0]])  # (column, row)
    mask = rasterize_even_odd([square], (8, 10))
    assert mask.sum() == 4 * 3  # columns 2..5, rows 1..3: low sides in, high sides out
    assert mask[1, 2] and not mask[4, 2] and not mask[1, 6]


def test_inner_contour_is_a_hole_and_two_islands_fill():
    outer = np.array([[1.0, 1.0], [9.0, 1.0], [9.0, 9.0], [1.0, 9.0]])
    inner = np.array([[3.0, 3.0], [7.0, 3.0], [7.0, 7.0], [3.0, 7.0]])
    island = np.array([[11.0, 2.0], [13.0, 2.0], [13.0, 4.0]])
    mask = rasterize_even_odd([outer, inner, island], (12, 15))
    assert not mask[5, 5] and mask[2, 2]
    assert mask.sum() == 64 - 16 + reference([island], (12, 15)).sum()
    np.testing.assert_array_equal(mask, reference([outer, inner, island], (12, 15)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-3, 23), st.floats(-3, 18)), min_size=3, max_size=12),
       st.booleans())
def test_random_polygons_match_pnpoly(points, quarter):
    polygon = snap(np.asarray(points, float))
    if quarter:  # vertices on a quarter-pixel lattice, as MIM writes them: boundary cases on purpose
        polygon = np.round(polygon * 4) / 4
    np.testing.assert_array_equal(rasterize_even_odd([polygon], (16, 21)), reference([polygon], (16, 21)))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_degenerate_contours_draw_nothing(n):
    assert not rasterize_even_odd([np.zeros((n, 2))], (4, 4)).any()
