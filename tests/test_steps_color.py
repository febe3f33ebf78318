"""The colormap and color_space steps: params, axes and channel names, refusals, real files.

Golden values: the blue_red definition (R = i, G = 0, B = 255 - i) and the JFIF
equations written out here, pydicom's apply_modality_lut / apply_color_lut on real files.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from medflow.sample import Sample
from medflow.steps.registry import get_step

pydicom = pytest.importorskip("pydicom")

COLORMAP = get_step("colormap")
COLOR_SPACE = get_step("color_space")


def _colormap(sample: Sample, **params) -> Sample:
    return COLORMAP.function(sample, COLORMAP.params_model.model_validate({"step": "colormap", **params}))


def _color_space(sample: Sample, to: str) -> Sample:
    return COLOR_SPACE.function(
        sample, COLOR_SPACE.params_model.model_validate({"step": "color_space", "to": to})
    )


def _testdata(name: str):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available (pip install pydicom-data)")
    return path


def _json_header(ds) -> dict:
    ds = copy.deepcopy(ds)  # Dataset.copy() is shallow: deleting from it would touch ds
    del ds.PixelData
    return ds.to_json_dict()


def test_registered_pointwise_with_versions():
    assert (COLORMAP.name, COLORMAP.version, COLORMAP.pointwise) == ("colormap", 1, True)
    assert (COLOR_SPACE.name, COLOR_SPACE.version, COLOR_SPACE.pointwise) == ("color_space", 2, True)
    for spec in (COLORMAP, COLOR_SPACE):
        for name, field in spec.params_model.model_fields.items():
            assert name == "step" or field.description, f"{spec.name}.{name} has no description"


# --- colormap --------------------------------------------------------------------------------


def test_blue_red_on_a_slice_by_hand():
    x = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 2.0]], np.float32)
    out = _colormap(Sample("s", x, "yx"), map="blue_red", output_dtype="uint8")
    assert out.axes == "yxc" and out.channels == ("r", "g", "b") and out.pixels.dtype == np.uint8
    # index = rint(x * 255): 0, 63.75 -> 64, 127.5 -> 128 (half to even), 191.25 -> 191, 255, clipped 255.
    index = np.array([[0, 64, 128], [191, 255, 255]])
    assert np.array_equal(out.pixels[..., 0], index)
    assert not out.pixels[..., 1].any()
    assert np.array_equal(out.pixels[..., 2], 255 - index)
    assert out.meta["colormap"] == {"map": "blue_red", "input_range": [0.0, 1.0]}


def test_float32_output_is_uint8_over_255_exactly():
    rng = np.random.default_rng(0)
    sample = Sample("s", rng.random((3, 8, 8), dtype=np.float32), "zyx")
    as_u8 = _colormap(sample, map="viridis", output_dtype="uint8").pixels
    as_f32 = _colormap(sample, map="viridis").pixels
    assert as_f32.dtype == np.float32
    assert np.array_equal(as_f32, as_u8.astype(np.float32) / np.float32(255))


def test_input_range_in_hu():
    x = np.array([-1000.0, 0.0, 1000.0], np.float32)
    out = _colormap(Sample("s", x, "x"), map="blue_red", input_range=[-1000, 1000], output_dtype="uint8")
    assert out.pixels[:, 0].tolist() == [0, 128, 255]  # 0 HU -> rint(127.5) = 128


def test_trailing_single_channel_is_accepted_and_replaced():
    x = np.zeros((4, 5, 1), np.float32)
    out = _colormap(Sample("s", x, "yxc", channels=("gray",)), map="jet")
    assert out.pixels.shape == (4, 5, 3) and out.axes == "yxc" and out.channels == ("r", "g", "b")


def test_several_channels_are_refused_with_their_names():
    rgb = Sample("s", np.zeros((2, 2, 3), np.float32), "yxc", channels=("r", "g", "b"))
    with pytest.raises(
        ValueError, match=r"needs one channel .* got axes 'yxc' with 3 channel\(s\) \('r', 'g', 'b'\)"
    ):
        _colormap(rgb, map="jet")


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=st.floats(-1, 2, width=32)
    ),
    st.sampled_from(["jet", "bone", "turbo", "blue_red"]),
)
def test_colormap_shape_is_input_plus_3_and_range_0_1(x, name):
    axes = "zyx"[-x.ndim :]
    out = _colormap(Sample("s", x, axes), map=name)
    assert out.pixels.shape == x.shape + (3,)
    assert out.pixels.dtype == np.float32
    assert out.pixels.min() >= 0 and out.pixels.max() <= 1


def test_params_refusals():
    model = COLORMAP.params_model
    cases = [
        ({"map": "file"}, "map 'file' needs path"),
        ({"map": "jet", "path": "x.csv"}, "path is only used with map 'file'"),
        ({"map": "dicom_palette", "input_range": [0, 1]}, "input_range does not apply to dicom_palette"),
        ({"map": "jet", "input_range": [1, 0]}, "input_range must be finite and increasing"),
        ({"map": "jett"}, "Input should be 'autumn'"),
        ({"map": "jet", "output_dtype": "uint16"}, "Input should be 'float32' or 'uint8'"),
        ({"map": "jet", "colour": 1}, "Extra inputs are not permitted"),
    ]
    for params, message in cases:
        with pytest.raises(ValidationError, match=message):
            model.model_validate({"step": "colormap", **params})


def _write_lut(path, table):
    path.write_text("\n".join(",".join(str(int(v)) for v in row) for row in table))
    return path


def test_file_lut(tmp_path):
    i = np.arange(256)
    table = np.stack([255 - i, i, np.full(256, 7)], axis=1)
    path = _write_lut(tmp_path / "mine.csv", table)
    x = np.array([0.0, 1.0, 100 / 255], np.float32)
    out = _colormap(Sample("s", x, "x"), map="file", path=str(path), output_dtype="uint8")
    assert out.pixels.tolist() == [[255, 0, 7], [0, 255, 7], [155, 100, 7]]


def test_bad_lut_file_is_a_validation_error_naming_the_file(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("0,0,0\n1,1,1\n")
    with pytest.raises(ValidationError) as info:
        COLORMAP.params_model.model_validate({"step": "colormap", "map": "file", "path": str(path)})
    assert str(path) in str(info.value) and "got 2 rows" in str(info.value)


def test_relative_path_resolves_against_recipe_dir(tmp_path):
    _write_lut(tmp_path / "luts.csv", blue_red_table())
    params = COLORMAP.params_model.model_validate(
        {"step": "colormap", "map": "file", "path": "luts.csv"}, context={"recipe_dir": str(tmp_path)}
    )
    assert params.path == str(tmp_path / "luts.csv")


def blue_red_table():
    i = np.arange(256)
    return np.stack([i, np.zeros(256, int), 255 - i], axis=1)


def test_lut_file_content_joins_the_cache_key(tmp_path):
    path = _write_lut(tmp_path / "lut.csv", blue_red_table())
    params = COLORMAP.params_model.model_validate({"step": "colormap", "map": "file", "path": str(path)})
    first = params.canonical_params()
    assert "lut_sha256" in first and first["path"] == "lut.csv"  # the name, not the machine-specific folder
    edited = blue_red_table()
    edited[3] = [1, 2, 3]
    _write_lut(path, edited)
    import os

    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    assert params.canonical_params()["lut_sha256"] != first["lut_sha256"]
    jet = COLORMAP.params_model.model_validate({"step": "colormap", "map": "jet"}).canonical_params()
    assert "lut_sha256" not in jet


# --- dicom_palette --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm"])
def test_dicom_palette_matches_pydicom(name):
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(_testdata(name))
    stored = ds.pixel_array
    expected = apply_color_lut(stored, ds).astype(np.float64)  # 16-bit entries
    sample = Sample("p", stored, "yx", headers=[_json_header(ds)])
    out = _colormap(sample, map="dicom_palette")
    assert out.axes == "yxc" and out.channels == ("r", "g", "b") and out.pixels.dtype == np.float32
    np.testing.assert_allclose(out.pixels, expected / 65535, rtol=0, atol=1e-7)
    out8 = _colormap(sample, map="dicom_palette", output_dtype="uint8")
    assert np.array_equal(out8.pixels, np.rint(expected * 255 / 65535).astype(np.uint8))
    assert out8.meta["colormap"] == {"map": "dicom_palette"}


def test_dicom_palette_per_slice_headers():
    from pydicom.pixels import apply_color_lut

    first = pydicom.dcmread(_testdata("OBXXXX1A.dcm"))
    second = pydicom.dcmread(_testdata("examples_palette.dcm"))
    h, w = 300, 400
    stack = np.stack([first.pixel_array[:h, :w], second.pixel_array[:h, :w]])
    sample = Sample("p", stack, "zyx", headers=[_json_header(first), _json_header(second)])
    out = _colormap(sample, map="dicom_palette", output_dtype="uint8")
    for z, ds in enumerate((first, second)):
        expected = np.rint(apply_color_lut(stack[z], ds).astype(np.float64) * 255 / 65535)
        assert np.array_equal(out.pixels[z], expected), z


def test_dicom_palette_without_headers_or_palette_is_refused():
    sample = Sample("p", np.zeros((2, 2), np.uint8), "yx")
    with pytest.raises(ValueError, match="needs the item's DICOM headers"):
        _colormap(sample, map="dicom_palette")
    sample = Sample(
        "p", np.zeros((2, 2), np.uint8), "yx", headers=[{"00280004": {"vr": "CS", "Value": ["MONOCHROME2"]}}]
    )
    with pytest.raises(ValueError, match=r"dicom_palette: no palette color LUT: \(0028,1101\)"):
        _colormap(sample, map="dicom_palette")


# --- color_space -----------------------------------------------------------------------------


def _rgb_sample(pixels: np.ndarray) -> Sample:
    return Sample("s", pixels, "zyx"[-(pixels.ndim - 1) :] + "c", channels=("r", "g", "b"))


def test_rgb_to_ycbcr_names_channels_and_round_trips():
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [128, 128, 128]]], np.uint8)
    sample = _rgb_sample(rgb)
    ycbcr = _color_space(sample, "ycbcr")
    assert ycbcr.channels == ("y", "cb", "cr") and ycbcr.axes == "yxc"
    assert ycbcr.pixels.tolist() == [[[76, 85, 255], [150, 44, 21]], [[29, 255, 107], [128, 128, 128]]]
    assert ycbcr.meta["color_space"] == {"from": "rgb", "to": "ycbcr"}
    ycrcb = _color_space(sample, "ycrcb")
    assert ycrcb.channels == ("y", "cr", "cb")
    assert ycrcb.pixels[0, 0].tolist() == [76, 255, 85]  # OpenCV's order for pure red
    back = _color_space(ycbcr, "rgb")
    assert back.channels == ("r", "g", "b")
    assert np.abs(back.pixels.astype(int) - rgb).max() <= 1


@pytest.mark.parametrize(
    "to, channels", [("hsv", ("h", "s", "v")), ("lab", ("l", "a", "b")), ("gray", ("gray",))]
)
def test_other_spaces_and_back(to, channels):
    rng = np.random.default_rng(1)
    rgb = rng.random((2, 4, 4, 3), dtype=np.float32)
    out = _color_space(_rgb_sample(rgb), to)
    assert out.channels == channels and out.pixels.shape == (2, 4, 4, len(channels)) and out.axes == "zyxc"
    back = _color_space(out, "rgb")
    assert back.channels == ("r", "g", "b") and back.pixels.shape == rgb.shape
    if to != "gray":
        assert np.abs(back.pixels - rgb).max() <= 1.5 / 255


def test_channel_mismatch_is_refused_with_names():
    ycbcr = Sample("s", np.zeros((2, 2, 3), np.uint8), "yxc", channels=("y", "cb", "cr"))
    with pytest.raises(
        ValueError,
        match=r"to 'hsv' needs channels \('r', 'g', 'b'\) \(rgb\); got channels \('y', 'cb', 'cr'\) \(ycbcr\); convert to rgb first",
    ):
        _color_space(ycbcr, "hsv")
    rgb = _rgb_sample(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(
        ValueError,
        match=r"to 'rgb' needs channels .*\('y', 'cb', 'cr'\) \(ycbcr\).*got channels \('r', 'g', 'b'\) \(rgb\)",
    ):
        _color_space(rgb, "rgb")
    bgr = Sample("s", np.zeros((2, 2, 3), np.uint8), "yxc", channels=("b", "g", "r"))
    with pytest.raises(ValueError, match=r"got channels \('b', 'g', 'r'\)$"):
        _color_space(bgr, "ycbcr")


def test_input_without_channels_is_refused():
    with pytest.raises(
        ValueError,
        match=r"needs a last channel axis 'c' with named channels; got axes 'zyx' and channels \(\)",
    ):
        _color_space(Sample("s", np.zeros((2, 2, 3)), "zyx"), "ycbcr")
    unnamed = Sample("s", np.zeros((2, 2, 3), np.uint8), "yxc")
    with pytest.raises(ValueError, match="named channels"):
        _color_space(unnamed, "ycbcr")


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 5), st.integers(1, 5), st.just(3))))
def test_step_round_trip_ycbcr_uint8(rgb):
    back = _color_space(_color_space(_rgb_sample(rgb), "ycbcr"), "rgb")
    assert np.abs(back.pixels.astype(int) - rgb).max() <= 1


# --- the seed chain on a real CT slice -------------------------------------------------------


def test_seed_chain_on_real_ct_matches_independent_computation(shared_data):
    """HU -> LINEAR window -> blue_red -> BT.601 YCbCr, against numpy + pydicom written out here."""
    from pydicom.pixels import apply_modality_lut

    path = shared_data / "ct_pancreas_tcia" / "1-050.dcm"
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    center, width = -600.0, 1500.0
    # PS3.3 C.11.2.1.2.1 LINEAR to [0, 1].
    y = ((hu - (center - 0.5)) / (width - 1) + 0.5).clip(0, 1)
    i = np.clip(np.rint(y * 255), 0, 255)
    r, g, b = i / 255, np.zeros_like(i), (255 - i) / 255
    expected = np.stack(
        [
            0.299 * r + 0.587 * g + 0.114 * b,
            -0.168736 * r - 0.331264 * g + 0.5 * b + 0.5,
            0.5 * r - 0.418688 * g - 0.081312 * b + 0.5,
        ],
        axis=-1,
    )

    window = get_step("window")
    sample = Sample("ct", hu.astype(np.float32), "yx")
    sample = window.function(
        sample, window.params_model.model_validate({"step": "window", "level": center, "width": width})
    )
    sample = _colormap(sample, map="blue_red")
    sample = _color_space(sample, "ycbcr")
    assert sample.channels == ("y", "cb", "cr") and sample.pixels.shape == hu.shape + (3,)
    assert np.abs(sample.pixels - expected).max() <= 1 / 255
