"""Lookup-table kernels: 8-bit quantization, OpenCV / blue_red / file LUTs, DICOM palettes.

Golden values come from the definitions written out by hand, from ``cv2.applyColorMap``
on single pixels, and from ``pydicom.pixels.apply_color_lut`` on real palette files.
"""

from __future__ import annotations

import base64
import copy

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from medflow.errors import InputError
from medflow.ops.lut import (
    COLORMAP_NAMES,
    apply_lut,
    apply_palette,
    blue_red_lut,
    expand_segmented_lut,
    load_lut_file,
    opencv_colormap_lut,
    palette_lut_from_headers,
    quantize_to_uint8,
)

pydicom = pytest.importorskip("pydicom")


def _testdata(name: str):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available (pip install pydicom-data)")
    return path


def _json_header(ds) -> dict:
    ds = copy.deepcopy(ds)  # Dataset.copy() is shallow: deleting from it would touch ds
    if "PixelData" in ds:
        del ds.PixelData
    return ds.to_json_dict()


# --- quantize_to_uint8 ---------------------------------------------------------------------


def test_quantize_endpoints_and_clipping():
    x = np.array([-5.0, 0.0, 1.0, 7.0], dtype=np.float32)
    assert quantize_to_uint8(x, 0, 1).tolist() == [0, 0, 255, 255]


def test_quantize_every_k_over_255_maps_back_to_k():
    k = np.arange(256)
    x = (k / 255).astype(np.float32)  # what a uint8 / 255 stage produces
    assert np.array_equal(quantize_to_uint8(x, 0.0, 1.0), k)


def test_quantize_rounds_half_to_even():
    # With lo=0, hi=255 the index is rint(x): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4.
    x = np.array([0.5, 1.5, 2.5, 3.5, 2.4999, 2.5001])
    assert quantize_to_uint8(x, 0, 255).tolist() == [0, 2, 2, 4, 2, 3]


def test_quantize_hu_range_by_hand():
    # [-1000, 1000] HU: 0 HU -> rint(1000 / 2000 * 255) = rint(127.5) = 128 (even).
    x = np.array([-1000, 0, 1000, -1001], dtype=np.float32)
    assert quantize_to_uint8(x, -1000, 1000).tolist() == [0, 128, 255, 0]


@pytest.mark.parametrize("lo, hi", [(1, 1), (2, 1), (0, float("inf")), (float("nan"), 1)])
def test_quantize_refuses_bad_range(lo, hi):
    with pytest.raises(ValueError, match="finite and increasing"):
        quantize_to_uint8(np.zeros(3), lo, hi)


def test_quantize_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        quantize_to_uint8(np.array([0.1, np.nan]), 0, 1)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=6), elements=st.floats(-2, 2, width=32)))
def test_quantize_is_monotone_and_in_range(x):
    q = quantize_to_uint8(x, -1.0, 1.0)
    assert q.shape == x.shape and q.dtype == np.uint8
    order = np.argsort(x.ravel(), kind="stable")
    assert np.all(np.diff(q.ravel()[order].astype(int)) >= 0)


# --- apply_lut / built-in tables -------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)))
def test_apply_lut_shape_is_input_shape_plus_3(indices):
    lut = blue_red_lut()
    out = apply_lut(indices, lut)
    assert out.shape == indices.shape + (3,)
    assert np.array_equal(out[..., 0], indices)  # blue_red: R = i
    assert np.array_equal(out[..., 2], 255 - indices)  # B = 255 - i


def test_apply_lut_refuses_out_of_range_and_float_indices():
    with pytest.raises(ValueError, match="out of range"):
        apply_lut(np.array([0, 4]), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="integers"):
        apply_lut(np.array([0.0]), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        apply_lut(np.array([0]), np.zeros((4, 4)))


def test_blue_red_endpoints_and_midpoint():
    lut = blue_red_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[0].tolist() == [0, 0, 255]  # pure blue
    assert lut[255].tolist() == [255, 0, 0]  # pure red
    assert lut[127].tolist() == [127, 0, 128]
    assert lut[128].tolist() == [128, 0, 127]
    assert not lut[:, 1].any()  # green is 0 everywhere
    assert np.all(lut[:, 0].astype(int) + lut[:, 2] == 255)  # exact linear ramp, no rounding


def test_builtin_tables_are_built_once_and_read_only():
    """Every call (every streamed slab) gets the same table; no caller can change it for the others."""
    assert blue_red_lut() is blue_red_lut()
    assert opencv_colormap_lut("jet") is opencv_colormap_lut("jet")
    for lut in (blue_red_lut(), opencv_colormap_lut("jet")):
        with pytest.raises(ValueError, match="read-only"):
            lut[0, 0] = 1


def test_colormap_names_are_every_opencv_colormap():
    installed = {name[len("COLORMAP_") :].lower() for name in dir(cv2) if name.startswith("COLORMAP_")}
    assert installed <= set(COLORMAP_NAMES)
    assert set(COLORMAP_NAMES) <= installed, "a listed colormap is missing from this OpenCV"


@pytest.mark.parametrize("name", COLORMAP_NAMES)
def test_opencv_colormap_matches_apply_color_map_on_single_pixels(name):
    lut = opencv_colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    code = getattr(cv2, f"COLORMAP_{name.upper()}")
    for value in (0, 1, 63, 127, 128, 200, 254, 255):
        bgr = cv2.applyColorMap(np.full((1, 1), value, np.uint8), code)[0, 0]
        assert lut[value].tolist() == [int(bgr[2]), int(bgr[1]), int(bgr[0])], (name, value)


def test_opencv_jet_is_rgb_not_bgr():
    # Jet starts dark blue and ends dark red: in RGB order, blue dominates entry 0.
    lut = opencv_colormap_lut("jet")
    assert lut[0, 2] > 100 and lut[0, 0] == 0
    assert lut[255, 0] > 100 and lut[255, 2] == 0


def test_unknown_colormap_is_refused():
    with pytest.raises(ValueError, match="unknown OpenCV colormap 'jett'"):
        opencv_colormap_lut("jett")


# --- load_lut_file ---------------------------------------------------------------------------


def _table() -> np.ndarray:
    i = np.arange(256)
    return np.stack([i, (i * 7) % 256, 255 - i], axis=1)


def test_load_csv_and_npy(tmp_path):
    table = _table()
    csv = tmp_path / "lut.csv"
    csv.write_text("\n".join(f"{r}, {g},{b}" for r, g, b in table) + "\n\n")
    npy = tmp_path / "lut.npy"
    np.save(npy, table.astype(np.int64))
    for path in (csv, npy):
        out = load_lut_file(path)
        assert out.dtype == np.uint8 and np.array_equal(out, table)


def _write_csv(path, rows):
    path.write_text("\n".join(",".join(str(v) for v in row) for row in rows))
    return path


@pytest.mark.parametrize(
    "rows, message",
    [
        (_table()[:255].tolist(), "256 rows of 3 values"),
        (_table().tolist()[:10] + [[1, 2]] + _table().tolist()[11:], "line 11: expected 3 comma-separated"),
        (
            _table().tolist()[:5] + [[1, 256, 3]] + _table().tolist()[6:],
            "value 256 at row 6, column 2 is outside 0..255",
        ),
        (_table().tolist()[:5] + [[1, -1, 3]] + _table().tolist()[6:], "value -1 at row 6"),
        (
            _table().tolist()[:3] + [[1, "1.5", 3]] + _table().tolist()[4:],
            "line 4, column 2: '1.5' is not an integer",
        ),
        (_table().tolist()[:3] + [["red", 0, 3]] + _table().tolist()[4:], "'red' is not an integer"),
    ],
    ids=["255-rows", "two-values", "above-255", "negative", "fraction", "text"],
)
def test_csv_errors_name_the_file(tmp_path, rows, message):
    path = _write_csv(tmp_path / "bad_lut.csv", rows)
    with pytest.raises(InputError) as info:
        load_lut_file(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((256, 4), np.uint8), "got shape (256, 4)"),
        (np.zeros((3, 256), np.uint8), "got shape (3, 256)"),
        (np.full((256, 3), 0.5), "must be integers 0..255 (e.g. uint8), got dtype float64"),
        (np.full((256, 3), 300, np.int16), "value 300 at row 1, column 1"),
    ],
    ids=["4-columns", "transposed", "float", "above-255"],
)
def test_npy_errors_name_the_file(tmp_path, array, message):
    path = tmp_path / "bad_lut.npy"
    np.save(path, array)
    with pytest.raises(InputError) as info:
        load_lut_file(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(InputError, match="LUT file not found"):
        load_lut_file(tmp_path / "absent.csv")
    other = tmp_path / "lut.txt"
    other.write_text("0,0,0\n")
    with pytest.raises(InputError, match=r"unknown LUT file type '\.txt'"):
        load_lut_file(other)


# --- DICOM palettes -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["examples_palette.dcm", "OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm"])
def test_palette_matches_pydicom_apply_color_lut(name):
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(_testdata(name))
    stored = ds.pixel_array
    expected = apply_color_lut(stored, ds)
    palette = palette_lut_from_headers(_json_header(ds))
    out = apply_palette(stored, palette)
    assert out.shape == stored.shape + (3,)
    assert np.array_equal(out, expected)


def test_segmented_palette_is_expanded():
    # gdcm-US-ALOKA-16 stores a segmented 65536-entry palette (PS3.3 C.7.9.2).
    ds = pydicom.dcmread(_testdata("gdcm-US-ALOKA-16.dcm"))
    assert "SegmentedRedPaletteColorLookupTableData" in ds
    palette = palette_lut_from_headers(_json_header(ds))
    assert palette.table.shape == (65536, 3) and palette.bits == 16


@pytest.mark.parametrize(
    "file, uid",
    [
        ("hotiron.dcm", "1.2.840.10008.1.5.1"),
        ("pet.dcm", "1.2.840.10008.1.5.2"),
        ("spring.dcm", "1.2.840.10008.1.5.5"),
    ],
)
def test_well_known_8bit_palette_matches_pydicom(file, uid):
    # DICOM's well-known palettes (PS3.6 B) have 8-bit entries packed one per byte.
    from pydicom.data import get_palette_files
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(get_palette_files(file)[0])
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    palette = palette_lut_from_headers(_json_header(ds))
    assert palette.bits == 8 and palette.full_scale == 255
    assert np.array_equal(apply_palette(stored, palette), apply_color_lut(stored, palette=uid))


def _us(values):
    return {"vr": "US", "Value": list(values)}


def _ow(values):
    return {"vr": "OW", "InlineBinary": base64.b64encode(np.asarray(values, "<u2").tobytes()).decode()}


def _header(first, red, green, blue, bits=16, pixel_representation=None):
    header = {
        "00281101": _us([len(red), first, bits]),
        "00281102": _us([len(green), first, bits]),
        "00281103": _us([len(blue), first, bits]),
        "00281201": _ow(red),
        "00281202": _ow(green),
        "00281203": _ow(blue),
    }
    if pixel_representation is not None:
        header["00280103"] = _us([pixel_representation])
    return header


def test_palette_clips_below_first_and_above_last():
    # PS3.3 C.7.6.3.1.5: value first+k -> entry k; below first -> entry 0; beyond -> last entry.
    header = _header(10, [100, 200, 300, 400], [1, 2, 3, 4], [9, 8, 7, 6])
    out = apply_palette(np.array([0, 9, 10, 11, 13, 14, 60000]), palette_lut_from_headers(header))
    assert out[:, 0].tolist() == [100, 100, 100, 200, 400, 400, 400]
    assert out[:, 2].tolist() == [9, 9, 9, 8, 6, 6, 6]


def test_signed_first_value_mapped():
    # PixelRepresentation 1: descriptor value 65534 on the wire means -2.
    header = _header(65534, [10, 20, 30], [0, 0, 0], [0, 0, 0], pixel_representation=1)
    palette = palette_lut_from_headers(header)
    assert palette.first_mapped == -2
    assert apply_palette(np.array([-5, -2, -1, 0, 5], np.int16), palette)[:, 0].tolist() == [
        10,
        10,
        20,
        30,
        30,
    ]


def test_palette_refuses_fractional_values():
    palette = palette_lut_from_headers(_header(0, [1, 2], [1, 2], [1, 2]))
    assert apply_palette(np.array([0.0, 1.0]), palette)[:, 0].tolist() == [1, 2]
    with pytest.raises(ValueError, match="stored pixel values"):
        apply_palette(np.array([0.5]), palette)


def test_palette_errors_name_the_tag():
    with pytest.raises(
        ValueError, match=r"\(0028,1101\) Red Palette Color Lookup Table Descriptor is absent"
    ):
        palette_lut_from_headers({"00280004": {"vr": "CS", "Value": ["MONOCHROME2"]}})
    header = _header(0, [1, 2], [1, 2], [1, 2])
    header["00281202"] = {"vr": "OW", "BulkDataURI": "http://example/bulk"}
    with pytest.raises(ValueError, match=r"\(0028,1202\) Green .* is bulk data"):
        palette_lut_from_headers(header)
    header = _header(0, [1, 2], [1, 2], [1, 2])
    header["00281101"] = _us([4, 0, 16])
    with pytest.raises(ValueError, match="descriptors disagree"):
        palette_lut_from_headers(header)
    header = _header(0, [1, 2], [1, 2], [1, 2], bits=12)
    with pytest.raises(ValueError, match="must be 8 or 16, got 12"):
        palette_lut_from_headers(header)


def test_segmented_discrete_and_linear_by_hand():
    # discrete 10, 20, 30; then linear over 4 entries from 30 to 70: 40, 50, 60, 70.
    words = np.array([0, 3, 10, 20, 30, 1, 4, 70], dtype=np.uint16)
    assert expand_segmented_lut(words).tolist() == [10, 20, 30, 40, 50, 60, 70]
    # linear 0 -> 3 over 2 entries: 1.5 -> 2 (half to even), 3.
    assert expand_segmented_lut(np.array([0, 1, 0, 1, 2, 3], np.uint16)).tolist() == [0, 2, 3]


def test_segmented_refusals():
    with pytest.raises(ValueError, match="linear segment with no previous entry"):
        expand_segmented_lut(np.array([1, 4, 70], np.uint16))
    with pytest.raises(ValueError, match="indirect segment"):
        expand_segmented_lut(np.array([0, 1, 5, 2, 1, 0, 0], np.uint16))
    with pytest.raises(ValueError, match="unknown segment opcode 7"):
        expand_segmented_lut(np.array([7, 1, 5], np.uint16))
    with pytest.raises(ValueError, match="runs past the end"):
        expand_segmented_lut(np.array([0, 9, 5], np.uint16))
