"""Colour-space kernels.

Golden values: the BT.601 / JFIF equations evaluated by hand (with JFIF's published
six-digit coefficients) for YCbCr; ``cv2.cvtColor`` called the BGR way (a path the
kernels never take) for YCrCb, HSV and gray; published CIE L*a*b* values of sRGB
primaries for Lab.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from medflow.ops.colorspace import (
    CONVERSIONS,
    SPACE_CHANNELS,
    convert,
    gray_to_rgb,
    rgb_to_gray,
    rgb_to_hsv,
    rgb_to_lab,
    rgb_to_ycbcr,
    rgb_to_ycrcb,
    space_of,
    ycbcr_to_rgb,
)

# (R, G, B) -> (Y, Cb, Cr), JFIF full range, by hand:
#   Y  = 0.299 R + 0.587 G + 0.114 B
#   Cb = -0.168736 R - 0.331264 G + 0.5 B + 128
#   Cr = 0.5 R - 0.418688 G - 0.081312 B + 128
# red:   Y = 76.245 -> 76,  Cb = 84.97 -> 85,  Cr = 255.5 -> clipped 255
# green: Y = 149.685 -> 150, Cb = 43.53 -> 44, Cr = 21.235 -> 21
# blue:  Y = 29.07 -> 29,   Cb = 255.5 -> 255, Cr = 107.27 -> 107
YCBCR_GOLDEN = {
    (255, 0, 0): (76, 85, 255),
    (0, 255, 0): (150, 44, 21),
    (0, 0, 255): (29, 255, 107),
    (255, 255, 255): (255, 128, 128),
    (0, 0, 0): (0, 128, 128),
    (128, 128, 128): (128, 128, 128),
}


def _jfif_forward(rgb: np.ndarray, offset: float) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + offset
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + offset
    return np.stack([y, cb, cr], axis=-1)


def _jfif_inverse(ycc: np.ndarray, offset: float) -> np.ndarray:
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    r = y + 1.402 * (cr - offset)
    g = y - 0.344136 * (cb - offset) - 0.714136 * (cr - offset)
    b = y + 1.772 * (cb - offset)
    return np.stack([r, g, b], axis=-1)


rgb_u8 = hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.just(3)))
rgb_f32 = hnp.arrays(
    np.float32, st.tuples(st.integers(1, 40), st.just(3)), elements=st.floats(0, 1, width=32)
)


@pytest.mark.parametrize("rgb, expected", list(YCBCR_GOLDEN.items()), ids=str)
def test_ycbcr_uint8_golden(rgb, expected):
    out = rgb_to_ycbcr(np.array([rgb], np.uint8))
    assert out.dtype == np.uint8 and out[0].tolist() == list(expected)


def test_ycbcr_float_matches_jfif_equations():
    colors = np.array(list(YCBCR_GOLDEN), np.float32) / 255
    out = rgb_to_ycbcr(colors)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _jfif_forward(colors.astype(np.float64), 0.5), atol=2e-6)
    np.testing.assert_allclose(out[0], [0.299, 0.331264, 1.0], atol=1e-6)  # pure red


@settings(max_examples=50, deadline=None)
@given(rgb_u8)
def test_ycbcr_uint8_matches_jfif_rounded(rgb):
    # The six-digit JFIF coefficients differ from the exact ones by < 5e-7, so a value can
    # only round differently when it sits within 1.3e-4 of a .5 boundary: allow 1 there.
    reference = _jfif_forward(rgb, 128.0)
    expected = np.clip(np.rint(reference), 0, 255)
    diff = np.abs(rgb_to_ycbcr(rgb).astype(int) - expected)
    near_tie = np.abs(np.abs(reference - np.floor(reference)) - 0.5) < 2e-4
    assert np.all(diff <= near_tie.astype(int))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.just(3))))
def test_ycbcr_inverse_matches_jfif_inverse(ycc):
    expected = np.clip(np.rint(_jfif_inverse(ycc, 128.0)), 0, 255)
    assert np.abs(ycbcr_to_rgb(ycc).astype(int) - expected).max() <= 1
    f = ycc.astype(np.float32) / 255
    np.testing.assert_allclose(ycbcr_to_rgb(f), _jfif_inverse(f, 0.5), atol=1e-5)


def test_ycrcb_matches_opencv_bgr_path_and_is_y_cr_cb():
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    bgr_image = np.ascontiguousarray(rgb[:, ::-1].reshape(50, 1, 3))
    expected = cv2.cvtColor(bgr_image, cv2.COLOR_BGR2YCrCb).reshape(50, 3)
    out = rgb_to_ycrcb(rgb)
    assert np.array_equal(out, expected)
    ycbcr = rgb_to_ycbcr(rgb).astype(int)
    # Same quantities, other order: YCrCb[1] is Cr = YCbCr[2] (OpenCV's 0.713/0.564 round differently by 1).
    assert np.abs(out[:, 0].astype(int) - ycbcr[:, 0]).max() <= 1
    assert np.abs(out[:, 1].astype(int) - ycbcr[:, 2]).max() <= 1
    assert np.abs(out[:, 2].astype(int) - ycbcr[:, 1]).max() <= 1
    f = rgb.astype(np.float32) / 255
    expected_f = cv2.cvtColor(np.ascontiguousarray(f[:, ::-1].reshape(50, 1, 3)), cv2.COLOR_BGR2YCrCb)
    np.testing.assert_allclose(
        rgb_to_ycrcb(f), expected_f.reshape(50, 3), atol=1e-6
    )  # SIMD paths differ by 1 ulp


def test_hsv_golden_and_opencv():
    primaries = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], np.uint8)
    # OpenCV 8-bit HSV: H = degrees / 2.
    assert rgb_to_hsv(primaries).tolist() == [
        [0, 255, 255],
        [60, 255, 255],
        [120, 255, 255],
        [0, 0, 255],
        [0, 0, 0],
    ]
    out = rgb_to_hsv(primaries.astype(np.float32) / 255)
    np.testing.assert_allclose(out[:3], [[0, 1, 1], [120, 1, 1], [240, 1, 1]], atol=1e-5)  # degrees
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[:, ::-1].reshape(40, 1, 3))
    assert np.array_equal(rgb_to_hsv(rgb), cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).reshape(40, 3))


def test_lab_golden_cie_values():
    # sRGB, D65: white (100, 0, 0); black (0, 0, 0); red (53.24, 80.09, 67.20);
    # green (87.73, -86.18, 83.18); blue (32.30, 79.19, -107.86).
    rgb = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    expected = [
        [100, 0, 0],
        [0, 0, 0],
        [53.24, 80.09, 67.20],
        [87.73, -86.18, 83.18],
        [32.30, 79.19, -107.86],
    ]
    np.testing.assert_allclose(rgb_to_lab(rgb), expected, atol=0.5)
    # 8-bit: L * 255 / 100, a + 128, b + 128.
    np.testing.assert_allclose(
        rgb_to_lab(np.array([[255, 0, 0]], np.uint8)).astype(float),
        [[53.24 * 2.55, 80.09 + 128, 67.20 + 128]],
        atol=1,
    )


def test_gray_is_bt601_luma_and_close_to_opencv():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (200, 3), dtype=np.uint8)
    gray = rgb_to_gray(rgb)
    assert gray.shape == (200, 1) and gray.dtype == np.uint8
    assert np.array_equal(gray[:, 0], rgb_to_ycbcr(rgb)[:, 0])
    opencv = cv2.cvtColor(np.ascontiguousarray(rgb[:, ::-1].reshape(200, 1, 3)), cv2.COLOR_BGR2GRAY).reshape(
        200
    )
    assert np.abs(gray[:, 0].astype(int) - opencv).max() <= 1
    assert gray_to_rgb(gray).tolist() == np.repeat(gray, 3, axis=1).tolist()


ROUND_TRIP_U8 = ["ycbcr", "ycrcb"]
ROUND_TRIP_F32 = {"ycbcr": 1e-6, "ycrcb": 1 / 255, "hsv": 1e-5, "lab": 1.5 / 255}


@pytest.mark.parametrize("space", ROUND_TRIP_U8)
@settings(max_examples=60, deadline=None)
@given(rgb=rgb_u8)
def test_round_trip_uint8_within_1_lsb(space, rgb):
    back = convert(convert(rgb, "rgb", space), space, "rgb")
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb).max() <= 1


@pytest.mark.parametrize("space", sorted(ROUND_TRIP_F32))
@settings(max_examples=60, deadline=None)
@given(rgb=rgb_f32)
def test_round_trip_float(space, rgb):
    back = convert(convert(rgb, "rgb", space), space, "rgb")
    assert back.dtype == np.float32
    assert np.abs(back - rgb).max() <= ROUND_TRIP_F32[space]


def _grid_u8(step: int) -> np.ndarray:
    g = np.arange(0, 256, step, dtype=np.uint8)
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)


def test_round_trip_uint8_ycbcr_on_a_grid():
    rgb = _grid_u8(5)  # 52^3 colours including black and white
    for space in ROUND_TRIP_U8:
        back = convert(convert(rgb, "rgb", space), space, "rgb")
        assert np.abs(back.astype(int) - rgb).max() <= 1, space


@pytest.mark.parametrize("space, bound", [("hsv", 6), ("lab", 27)])
def test_lossy_8bit_spaces_stay_within_documented_bound(space, bound):
    # 8-bit HSV (2-degree hue) and Lab are lossy: the docstrings state these bounds.
    rgb = _grid_u8(3)
    back = convert(convert(rgb, "rgb", space), space, "rgb")
    assert np.abs(back.astype(int) - rgb).max() <= bound


@pytest.mark.parametrize("pair", sorted(CONVERSIONS))
def test_any_leading_shape(pair):
    source, target = pair
    n = len(SPACE_CHANNELS[source])
    rng = np.random.default_rng(11)
    values = rng.integers(0, 256, (2, 3, 4, n), dtype=np.uint8)
    out = convert(values, source, target)
    assert out.shape == (2, 3, 4, len(SPACE_CHANNELS[target]))
    flat = convert(values.reshape(-1, n), source, target)
    assert np.array_equal(out.reshape(flat.shape), flat)
    assert convert(values[:0], source, target).shape == (0, 3, 4, len(SPACE_CHANNELS[target]))


@pytest.mark.parametrize("dtype", [np.float64, np.uint16, np.int32])
def test_refuses_other_dtypes(dtype):
    with pytest.raises(ValueError, match="float32 in \\[0, 1\\] or uint8"):
        rgb_to_ycbcr(np.zeros((2, 3), dtype))
    with pytest.raises(ValueError, match="float32 in \\[0, 1\\] or uint8"):
        rgb_to_hsv(np.zeros((2, 3), dtype))


def test_refuses_wrong_channel_count_and_pairs():
    with pytest.raises(ValueError, match=r"3 channels last, shape \(\.\.\., 3\); got \(2, 4\)"):
        rgb_to_ycbcr(np.zeros((2, 4), np.uint8))
    with pytest.raises(ValueError, match="no conversion from ycbcr to hsv"):
        convert(np.zeros((2, 3), np.uint8), "ycbcr", "hsv")


def test_space_of_channel_names():
    assert space_of(("y", "cb", "cr")) == "ycbcr"
    assert space_of(("y", "cr", "cb")) == "ycrcb"
    assert space_of(("l", "a", "b")) == "lab"
    assert space_of(("b", "g", "r")) is None


@pytest.mark.parametrize("to", ["ycrcb", "hsv", "lab"])
def test_opencv_conversions_do_not_depend_on_the_array_shape(to):
    """A pixel converts to the same bits in a 1-column table and in a 512-wide image (the fold relies on it)."""
    from medflow.ops import colorspace

    rng = np.random.default_rng(1)
    image = rng.random((3, 512, 3)).astype(np.float32)
    whole = colorspace.convert(image, "rgb", to)
    column = colorspace.convert(image.reshape(-1, 1, 3), "rgb", to).reshape(whole.shape)
    odd = colorspace.convert(image.reshape(-1, 3)[:1001], "rgb", to)
    assert np.array_equal(whole, column)
    assert np.array_equal(whole.reshape(-1, whole.shape[-1])[:1001], odd)
