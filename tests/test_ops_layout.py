"""Layout op: axis orders checked element by element, inverse is identity, dtype casts never wrap."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medflow.ops.layout import LAYOUTS, convert_dtype, from_layout, to_layout


def test_nchw_of_zyx_puts_slices_first_and_a_unit_channel():
    z, y, x = 3, 4, 5
    vol = np.arange(z * y * x, dtype=np.float32).reshape(z, y, x)
    out = to_layout(vol, "zyx", "NCHW")
    assert out.shape == (3, 1, 4, 5)
    assert out[2, 0, 1, 3] == vol[2, 1, 3]


def test_nhwc_and_ncdhw_of_zyxc():
    vol = np.random.default_rng(0).random((3, 4, 5, 2)).astype(np.float32)
    nhwc = to_layout(vol, "zyxc", "NHWC")
    assert nhwc.shape == (3, 4, 5, 2) and nhwc[1, 2, 3, 1] == vol[1, 2, 3, 1]
    ncdhw = to_layout(vol, "zyxc", "NCDHW")
    assert ncdhw.shape == (1, 2, 3, 4, 5) and ncdhw[0, 1, 2, 3, 4] == vol[2, 3, 4, 1]
    assert ncdhw.flags["C_CONTIGUOUS"]


def test_chw_refuses_a_stack():
    with pytest.raises(ValueError, match="one image"):
        to_layout(np.zeros((2, 3, 3)), "zyx", "CHW")


@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3))),
       st.sampled_from(["NCHW", "NHWC", "NCDHW", "NDHWC"]))
def test_layout_then_inverse_is_identity(vol, layout):
    back, axes = from_layout(to_layout(vol, "zyxc", layout), layout)
    assert axes == "zyxc"
    assert np.array_equal(back, vol, equal_nan=True)


def test_all_layouts_are_known():
    assert set(LAYOUTS) == {"NCHW", "NHWC", "NCDHW", "NDHWC", "CHW", "HWC"}


def test_uint8_conversion_rounds_and_clips_never_wraps():
    values = np.array([-0.2, 0.0, 0.5, 0.9999, 1.0, 1.7], np.float32)
    out = convert_dtype(values, "uint8", scale=255)
    # 0.5*255 = 127.5 rounds half to even -> 128; 0.9999*255 = 254.97 -> 255
    assert out.tolist() == [0, 0, 128, 255, 255, 255]
    assert out.dtype == np.uint8


def test_float16_is_a_plain_cast():
    values = np.array([0.1, 0.5], np.float32)
    assert np.array_equal(convert_dtype(values, "float16"), values.astype(np.float16))
