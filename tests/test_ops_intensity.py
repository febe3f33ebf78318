"""VOI window functions, LUT lookup, MONOCHROME1 inversion and 2.5D stacking (medflow.ops.intensity).

Golden numbers are the formulas of DICOM PS3.3 evaluated by hand (shown in comments) or
pydicom's own windowing; never medflow's output.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.pixels.processing import apply_modality_lut, apply_windowing

from medflow.ops.intensity import (
    WINDOW_FUNCTIONS,
    apply_lut,
    invert_range,
    rescale,
    scale_lut_output,
    stack_context,
    window_linear,
    window_linear_exact,
    window_sigmoid,
)

# ---------------------------------------------------------------- golden values by hand


def test_linear_golden_brain_window():
    # PS3.3 C.11.2.1.2.1, c=40, w=80, y in [0, 1]:
    #   x <= c - 0.5 - (w-1)/2 = 0      -> 0
    #   x >  c - 0.5 + (w-1)/2 = 79     -> 1
    #   else ((x - 39.5) / 79 + 0.5)
    x = np.array([-1000, 0, 1, 40, 79, 80], dtype=np.float32)
    expected = [0.0, 0.0, -38.5 / 79 + 0.5, 0.5 / 79 + 0.5, 39.5 / 79 + 0.5, 1.0]
    # = [0, 0, 0.0126582..., 0.5063291..., 1.0, 1.0]
    np.testing.assert_allclose(window_linear(x, 40, 80), expected, rtol=0, atol=1e-7)


def test_linear_golden_with_output_range():
    # c=0, w=3, y in [-1, 1]: lower = -0.5 - 1 = -1.5, upper = -0.5 + 1 = 0.5
    # x=0: ((0 + 0.5) / 2 + 0.5) = 0.75 -> 0.75 * 2 - 1 = 0.5 ; x=-1: (-0.5/2 + 0.5) = 0.25 -> -0.5
    x = np.array([-2, -1.5, -1, 0, 0.5, 0.6])
    np.testing.assert_allclose(window_linear(x, 0, 3, -1, 1), [-1, -1, -0.5, 0.5, 1, 1], atol=1e-7)


def test_linear_width_one_is_a_step_at_center_minus_half():
    # w = 1: x <= c - 0.5 -> y_min, x > c - 0.5 -> y_max (the two threshold cases cover the line)
    x = np.array([9.0, 9.5, 9.5001, 10.0, 11.0])
    np.testing.assert_array_equal(window_linear(x, 10, 1, 0, 255), [0, 0, 255, 255, 255])


def test_linear_exact_golden():
    # PS3.3 C.11.2.1.3.2, c=40, w=80: x <= 0 -> 0; x > 80 -> 1; else (x - 40) / 80 + 0.5
    x = np.array([-5, 0, 40, 60, 80, 81])
    np.testing.assert_allclose(window_linear_exact(x, 40, 80), [0, 0, 0.5, 0.75, 1.0, 1.0], atol=1e-7)


def test_sigmoid_golden():
    # PS3.3 C.11.2.1.3.1: y = (y_max - y_min) / (1 + exp(-4 (x - c) / w)) + y_min, c=40, w=80
    #   x=40 -> 0.5; x=80 -> 1/(1+e^-2) = 0.8807970779778823; x=0 -> 1/(1+e^2) = 0.11920292202211755
    x = np.array([0, 40, 80])
    np.testing.assert_allclose(
        window_sigmoid(x, 40, 80), [0.11920292202211755, 0.5, 0.8807970779778823], rtol=1e-6
    )
    # y in [0, 255]: 255 * 0.8807970779778823 = 224.60325488436...
    np.testing.assert_allclose(window_sigmoid(np.array([80.0]), 40, 80, 0, 255), [224.6032548843600], rtol=1e-6)


@pytest.mark.parametrize(
    "function, width", [(window_linear, 0.5), (window_linear_exact, 0), (window_sigmoid, -1)]
)
def test_invalid_width_is_refused_naming_the_clause(function, width):
    with pytest.raises(ValueError, match=r"PS3\.3 C\.11\.2\.1"):
        function(np.zeros(3), 0, width)


def test_rescale_golden():
    # PS3.3 C.11.1.1.2: HU = stored * slope + intercept
    np.testing.assert_array_equal(rescale(np.array([0, 1000, 4095], np.uint16), 1, -1024), [-1024, -24, 3071])
    assert rescale(np.array([3], np.int16), 0.5, 0.25).dtype == np.float32


# ---------------------------------------------------------------- LUT


def test_apply_lut_golden_clamps_below_first_and_above_last():
    # PS3.3 C.11.2.1.1: v < first -> entry 0; v > first + n - 1 -> last entry; else entry v - first
    lut = np.array([10, 20, 30, 40])
    x = np.array([-5, -2, -1, 0, 1, 7])
    np.testing.assert_array_equal(apply_lut(x, lut, first_mapped=-2), [10, 10, 20, 30, 40, 40])


def test_apply_lut_rounds_non_integer_input():
    np.testing.assert_array_equal(apply_lut(np.array([0.4, 0.6, 1.49]), np.array([5, 6, 7]), 0), [5, 6, 6])


def test_scale_lut_output_golden():
    # 16-bit entries: 0 -> y_min, 65535 -> y_max, 32768 -> 32768/65535
    np.testing.assert_allclose(scale_lut_output(np.array([0, 32768, 65535]), 16), [0, 32768 / 65535, 1], rtol=1e-7)
    np.testing.assert_allclose(scale_lut_output(np.array([0, 255]), 8, -1, 1), [-1, 1])


def test_invert_range_golden():
    np.testing.assert_allclose(invert_range(np.array([0.0, 0.25, 1.0])), [1.0, 0.75, 0.0])
    np.testing.assert_allclose(invert_range(np.array([0.0, 55.0, 255.0]), 0, 255), [255, 200, 0])


# ---------------------------------------------------------------- 2.5D stacking


def test_stack_context_replicates_edges_and_orders_offset_major():
    z = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1)  # slice i holds value i
    x = np.concatenate([z, z + 10], axis=-1)  # two channels: i and i + 10
    out = stack_context(x, 1)
    assert out.shape == (4, 1, 1, 6)
    # slice 0: offsets -1 (edge -> 0), 0, +1 ; each offset gives (i, i + 10)
    np.testing.assert_array_equal(out[0, 0, 0], [0, 10, 0, 10, 1, 11])
    np.testing.assert_array_equal(out[2, 0, 0], [1, 11, 2, 12, 3, 13])
    np.testing.assert_array_equal(out[3, 0, 0], [2, 12, 3, 13, 3, 13])


def test_stack_context_zero_is_identity():
    x = np.random.default_rng(0).random((3, 2, 2, 2))
    np.testing.assert_array_equal(stack_context(x, 0), x)


# ---------------------------------------------------------------- pydicom as independent reference


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_matches_pydicom_apply_windowing_on_ct_small(function):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 400, function
    theirs = apply_windowing(hu, ds)
    # pydicom's output range: signed 16-bit stored range through the rescale
    y_min = -(2**15) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    y_max = (2**15 - 1) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    ours = WINDOW_FUNCTIONS[function](hu.astype(np.float32), 40, 400)
    np.testing.assert_allclose(ours, (theirs - y_min) / (y_max - y_min), rtol=0, atol=2e-7)
    assert 0 < ours.mean() < 1  # the image really spans the window


# ---------------------------------------------------------------- properties

finite = st.floats(-5000, 5000, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    function=st.sampled_from(sorted(WINDOW_FUNCTIONS)),
    center=finite,
    width=st.floats(1, 6000),
    y_min=st.floats(-1000, 1000),
    span=st.floats(1e-3, 1e4),
    xs=st.lists(st.floats(-1e5, 1e5, allow_nan=False), min_size=1, max_size=60),
)
def test_window_output_in_range_and_monotone(function, center, width, y_min, span, xs):
    y_max = y_min + span
    x = np.sort(np.asarray(xs))
    y = WINDOW_FUNCTIONS[function](x, center, width, y_min, y_max)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.all(y >= np.float32(y_min)) and np.all(y <= np.float32(y_max))
    assert np.all(np.diff(y) >= 0)


@settings(max_examples=50, deadline=None)
@given(center=finite, xs=st.lists(finite, min_size=1, max_size=40))
def test_linear_width_one_takes_only_the_two_extremes(center, xs):
    y = window_linear(np.asarray(xs), center, 1, 0, 1)
    expected = np.where(np.asarray(xs) <= center - 0.5, 0.0, 1.0)
    np.testing.assert_array_equal(y, expected)


def test_sigmoid_midpoint_is_half_range():
    # at x = c the logistic is exactly 1/2 whatever the width
    for width in (1, 10, 1e4):
        assert math.isclose(float(window_sigmoid(np.array([7.0]), 7, width, 0, 2)[0]), 1.0, rel_tol=1e-7)
