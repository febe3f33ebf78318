"""PNG writer: file layout, explicit quantization, RGB channel order, determinism.

Golden values: the quantization formula written out here, and the PNG bytes read
back with a small chunk parser (IHDR fields per the PNG specification, section 11.2.2).
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medflow.sample import Sample
from medflow.writers.png import PngParams, as_slices, write_png


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk, checking the signature and each CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload)
        out.append((kind, payload))
        pos += 12 + length
    return out


def ihdr(data: bytes) -> dict:
    kind, payload = chunks(data)[0]
    assert kind == b"IHDR"
    width, height, depth, color_type = struct.unpack(">IIBB", payload[:10])
    return {"width": width, "height": height, "bit_depth": depth, "color_type": color_type}


def params(**kw) -> PngParams:
    return PngParams(kind="png", **kw)


def test_one_gray_png_per_slice_with_the_quantization_formula(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-0.2, 1.2, size=(3, 5, 7)).astype(np.float32)
    files = write_png(Sample("item-a", pixels, "zyx"), params(), tmp_path)
    assert [f.path for f in files] == [f"png/item-a/{i:04d}.png" for i in range(3)]
    for index, written in enumerate(files):
        data = (tmp_path / written.path).read_bytes()
        assert written.size == len(data)
        assert ihdr(data) == {"width": 7, "height": 5, "bit_depth": 8, "color_type": 0}
        read = cv2.imread(str(tmp_path / written.path), cv2.IMREAD_UNCHANGED)
        expected = np.clip(np.rint(pixels[index].astype(np.float64) * 255), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(read, expected)


def test_ties_round_half_to_even(tmp_path):
    pixels = np.array([[[0.5, 1.5, 2.5, 63.75, 254.5]]], dtype=np.float32)  # exact in binary
    files = write_png(Sample("t", pixels, "zyx"), params(input_range=(0, 255)), tmp_path)
    read = cv2.imread(str(tmp_path / files[0].path), cv2.IMREAD_UNCHANGED)
    assert read.tolist() == [[0, 2, 2, 64, 254]]


def test_input_range_maps_lo_to_0_and_hi_to_255(tmp_path):
    pixels = np.array([[[-1000.0, -600.0, 0.0, 1000.0, 2000.0]]], dtype=np.float32)
    files = write_png(Sample("x", pixels, "zyx"), params(input_range=(-1000, 1000)), tmp_path)
    read = cv2.imread(str(tmp_path / files[0].path), cv2.IMREAD_UNCHANGED)
    # (x + 1000) / 2000 * 255: 0, 51, 127.5 -> 128 (half to even), 255, clipped 255
    assert read.tolist() == [[0, 51, 128, 255, 255]]


def test_rgb_is_written_as_rgb_not_bgr(tmp_path):
    pixels = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    pixels[0, 0, 0] = (255, 0, 0)  # pure red
    pixels[0, 1, 1] = (0, 0, 255)  # pure blue
    files = write_png(Sample("rgb", pixels, "zyxc", channels=("r", "g", "b")), params(), tmp_path)
    data = (tmp_path / files[0].path).read_bytes()
    assert ihdr(data)["color_type"] == 2  # truecolour RGB
    # decode the raw scanlines ourselves (filter byte + R, G, B per pixel)
    raw = zlib.decompress(b"".join(p for k, p in chunks(data) if k == b"IDAT"))
    rows = [raw[i * 7 : (i + 1) * 7] for i in range(2)]
    assert all(row[0] == 0 for row in rows), "unfiltered scanlines expected for this tiny image"
    assert tuple(rows[0][1:4]) == (255, 0, 0)
    assert tuple(rows[1][4:7]) == (0, 0, 255)


@pytest.mark.parametrize(
    "axes, shape, n_files",
    [
        ("nchw", (4, 3, 5, 6), 4),
        ("nhwc", (4, 5, 6, 3), 4),
        ("nchw", (2, 1, 5, 6), 2),
        ("ncdhw", (1, 1, 3, 5, 6), 3),
        ("chw", (3, 5, 6), 1),
    ],
)
def test_layouts_after_the_layout_step_give_the_same_images(tmp_path, axes, shape, n_files):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    files = write_png(Sample("t", pixels, axes), params(), tmp_path)
    assert len(files) == n_files
    for index, written in enumerate(files):
        read = cv2.imread(str(tmp_path / written.path), cv2.IMREAD_UNCHANGED)
        if axes == "nchw":
            expected = pixels[index].transpose(1, 2, 0)
        elif axes == "nhwc":
            expected = pixels[index]
        elif axes == "ncdhw":
            expected = pixels[0, :, index].transpose(1, 2, 0)
        else:
            expected = pixels.transpose(1, 2, 0)
        if expected.shape[-1] == 3:
            expected = expected[..., ::-1]  # cv2.imread returns BGR
        np.testing.assert_array_equal(read.reshape(expected.shape), expected)


def test_16_bit(tmp_path):
    pixels = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    files = write_png(Sample("d", pixels, "zyx"), params(bit_depth=16), tmp_path)
    data = (tmp_path / files[0].path).read_bytes()
    assert ihdr(data)["bit_depth"] == 16
    read = cv2.imread(str(tmp_path / files[0].path), cv2.IMREAD_UNCHANGED)
    assert read.dtype == np.uint16 and read.tolist() == [[0, 32768, 65535]]  # rint(32767.5) = 32768


def test_bytes_are_deterministic_and_carry_no_timestamp(tmp_path):
    pixels = np.linspace(0, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    a = write_png(Sample("d", pixels, "zyx"), params(), tmp_path / "a")
    b = write_png(Sample("d", pixels, "zyx"), params(), tmp_path / "b")
    assert [f.digest for f in a] == [f.digest for f in b]
    kinds = {k for k, _ in chunks((tmp_path / "a" / a[0].path).read_bytes())}
    assert kinds == {b"IHDR", b"IDAT", b"IEND"}


@pytest.mark.parametrize(
    "pixels, axes, message",
    [
        (np.zeros((1, 2, 2), np.int16), "zyx", "int16"),
        (np.zeros((1, 2, 2, 2), np.uint8), "zyxc", "2 channels"),
        (np.full((1, 2, 2), np.nan, np.float32), "zyx", "NaN"),
    ],
)
def test_refusals_are_explicit(tmp_path, pixels, axes, message):
    with pytest.raises(ValueError, match=message):
        write_png(Sample("bad", pixels, axes), params(), tmp_path)


def test_params_refuse_an_empty_input_range():
    with pytest.raises(ValueError, match="increasing"):
        params(input_range=(1, 1))


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.sampled_from([1, 3]))))
def test_uint8_round_trip_is_exact(tmp_path_factory, pixels):
    out = tmp_path_factory.mktemp("rt")
    files = write_png(Sample("p", pixels, "zyxc"), params(), out)
    for index, written in enumerate(files):
        read = cv2.imread(str(out / written.path), cv2.IMREAD_UNCHANGED)
        expected = pixels[index][..., ::-1] if pixels.shape[-1] == 3 else pixels[index][..., 0]
        np.testing.assert_array_equal(read, expected)


def test_as_slices_refuses_unknown_axes():
    with pytest.raises(ValueError, match="axes"):
        as_slices(np.zeros((2, 2, 2)), "xyz")
