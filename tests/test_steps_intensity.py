"""The window, modality_lut and multi_window steps, on hand-made headers and real files.

References: the PS3.3 C.11 formulas evaluated by hand (comments), and pydicom's
apply_modality_lut / apply_voi_lut on real files. A Sample is built from a file the way
the reader does (float32 stored * slope + intercept, one DICOM JSON header per slice).
"""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import shared_data_path
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydicom.data import get_testdata_file
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

from medflow.errors import StepError
from medflow.sample import Sample
from medflow.steps.intensity import (
    PRESETS_FILE,
    ModalityLutParams,
    MultiWindowParams,
    WindowParams,
    load_window_presets,
    modality_lut,
    multi_window,
    resolve_preset,
    window,
)
from medflow.steps.registry import get_step

# ---------------------------------------------------------------- helpers


def sample_from_file(path: str | Path, ds: pydicom.Dataset | None = None) -> Sample:
    """A Sample as the reader makes it (``medflow.sources.series`` contract), built with pydicom.

    Pixels: float32 of the Modality LUT Sequence output (pydicom) when the header has one and no
    RescaleSlope, else stored * slope + intercept (top level, or the shared Pixel Value
    Transformation functional group). Headers: DICOM JSON without Pixel Data, one per frame,
    each with only its own per-frame functional group item.
    """
    ds = ds if ds is not None else pydicom.dcmread(path)
    stored = ds.pixel_array
    if int(ds.get("NumberOfFrames") or 1) == 1:
        stored = stored[None]
    if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
        pixels = apply_modality_lut(stored, ds).astype(np.float32)
    else:
        source = ds
        if "SharedFunctionalGroupsSequence" in ds:
            source = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        slope, intercept = float(source.get("RescaleSlope", 1)), float(source.get("RescaleIntercept", 0))
        pixels = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    del ds.PixelData
    base = ds.to_json_dict()
    per_frame = base.pop("52009230", None)
    headers = [{**base, "52009230": {"vr": "SQ", "Value": [item]}} for item in per_frame["Value"]] if per_frame \
        else [base]
    return Sample(
        item_id=Path(path).name,
        pixels=pixels,
        axes="zyx",
        headers=headers,
        meta={"modality": ds.Modality, "photometric_interpretation": ds.PhotometricInterpretation},
    )


def header(**values) -> dict:
    """A DICOM JSON header from keyword=(vr, [values]) pairs."""
    tags = {"center": "00281050", "width": "00281051", "function": "00281056", "photometric": "00280004"}
    return {tags[k]: {"vr": vr, "Value": v} for k, (vr, v) in values.items()}


def hu_sample(values, headers=None, photometric="MONOCHROME2") -> Sample:
    pixels = np.asarray(values, dtype=np.float32)
    return Sample("item", pixels, "zyx"[-pixels.ndim:], headers=headers or [],
                  meta={"photometric_interpretation": photometric})


def W(**kw) -> WindowParams:
    return WindowParams(step="window", **kw)


# ---------------------------------------------------------------- params validation


@pytest.mark.parametrize(
    "kw, message",
    [
        ({}, "exactly one of level\\+width, preset, or from_header"),
        ({"level": 40, "width": 80, "preset": "brain"}, "got level/width, preset"),
        ({"preset": "lung", "from_header": True}, "got preset, from_header"),
        ({"level": 40}, "level and width go together"),
        ({"preset": "lnug"}, "unknown window preset 'lnug' \\(did you mean 'lung'\\?\\)"),
        ({"preset": "lung", "preset_source": "nowhere"}, "has no source 'nowhere'"),
        ({"level": 0, "width": 0.5}, "width must be >= 1 for the LINEAR"),
        ({"level": 0, "width": 10, "header_index": 1}, "header_index and header_prefer need from_header"),
        ({"level": 0, "width": 10, "output_range": (1, 0)}, "output_range must be increasing"),
    ],
)
def test_window_params_refuse_ambiguous_or_invalid_sources(kw, message):
    with pytest.raises(ValidationError, match=message):
        W(**kw)


def test_window_v2_is_registered_pointwise():
    spec = get_step("window")
    assert spec.version == 2 and spec.pointwise  # v1 -> v2: MONOCHROME1 output changed
    for field in WindowParams.model_fields.values():
        if field.description and field.alias != "step":
            assert (field.json_schema_extra or {}).get("unit"), field


# ---------------------------------------------------------------- presets


def test_presets_file_parses_with_sources_and_positive_widths():
    presets = load_window_presets()
    required = {"brain", "subdural", "stroke", "bone", "lung", "mediastinum", "abdomen", "liver", "soft-tissue"}
    assert required <= set(presets)
    with open(PRESETS_FILE, encoding="utf-8") as handle:
        rows = list(csv.DictReader(line for line in handle if line.strip() and not line.startswith("#")))
    assert len(rows) == sum(len(v) for v in presets.values())
    for row in rows:
        assert float(row["width"]) > 0 and row["source"].strip(), row
    for name, options in presets.items():
        assert sum(p.default for p in options) == 1, name
        assert len({p.source for p in options}) == len(options), name


def test_preset_sources_disagree_and_are_selectable():
    assert (resolve_preset("lung").center, resolve_preset("lung").width) == (-600, 1500)
    assert resolve_preset("soft-tissue").source == "radiopaedia"
    ich = resolve_preset("soft-tissue", "rsna-ich")
    assert (ich.center, ich.width) == (40, 380)


def test_preset_numbers_join_the_cache_params():
    # the cache key is built from canonical_params: a preset edited in the CSV must change it
    assert W(preset="lung").canonical_params()["preset_resolved"] == {
        "center": -600.0, "width": 1500.0, "source": "radiopaedia"}
    mw = MultiWindowParams(step="multi_window", windows=["brain"]).canonical_params()
    assert mw["windows_resolved"][0]["center"] == 40 and mw["windows_resolved"][0]["width"] == 80


def test_malformed_presets_file_is_refused_naming_the_line(tmp_path):
    bad = tmp_path / "presets.csv"
    bad.write_text("# comment\nname,center,width,source,default,note\nlung,-600,0,x,yes,\n")
    with pytest.raises(ValueError, match=r"presets\.csv:3: preset needs a name, a source and a width > 0"):
        load_window_presets(bad)


def test_preset_window_records_the_numbers_applied():
    # lung -600/1500 LINEAR: x=-600 -> ((-600 + 600.5) / 1499 + 0.5) = 0.500333555...
    out = window(hu_sample([[[-2000.0, -600.0, 200.0]]]), W(preset="lung"))
    np.testing.assert_allclose(out.pixels[0, 0], [0.0, 0.5 / 1499 + 0.5, 1.0], atol=1e-7)
    assert out.meta["window"] == {
        "center": -600.0, "width": 1500.0, "function": "LINEAR", "source": "preset lung (radiopaedia)",
        "output_range": [0.0, 1.0], "inverted_monochrome1": False,
    }


# ---------------------------------------------------------------- from_header (hand-made headers)


def test_from_header_uses_the_indexed_value_and_the_header_function():
    # WindowCenter [40, 300], WindowWidth [80, 1000], VOILUTFunction LINEAR_EXACT, index 1:
    # x=300 -> (0/1000 + 0.5) = 0.5 ; x=550 -> (250/1000 + 0.5) = 0.75 (PS3.3 C.11.2.1.3.2)
    h = header(center=("DS", [40, 300]), width=("DS", [80, 1000]), function=("CS", ["LINEAR_EXACT"]))
    out = window(hu_sample([[[300.0, 550.0]]], [h]), W(from_header=True, header_index=1))
    np.testing.assert_allclose(out.pixels[0, 0], [0.5, 0.75], atol=1e-7)
    assert out.meta["window"]["center"] == 300 and out.meta["window"]["function"] == "LINEAR_EXACT"
    with pytest.raises(StepError, match=r"WindowCenter \(0028,1050\) has 2 .* header_index is 2"):
        window(hu_sample([[[0.0]]], [h]), W(from_header=True, header_index=2))


def test_recipe_function_overrides_the_header_function():
    h = header(center=("DS", [0]), width=("DS", [4]), function=("CS", ["SIGMOID"]))
    out = window(hu_sample([[[1.0]]], [h]), W(from_header=True, function="LINEAR_EXACT"))
    # LINEAR_EXACT c=0 w=4: (1/4 + 0.5) = 0.75 (the sigmoid would give 1/(1+e^-1) = 0.731)
    np.testing.assert_allclose(out.pixels.ravel(), [0.75], atol=1e-7)


def test_from_header_applies_each_slice_its_own_window():
    # slice 0: c=0 w=11 LINEAR -> x=0: (0.5/10 + 0.5) = 0.55 ; slice 1: c=100 w=11 -> x=0 <= 94 -> 0
    headers = [header(center=("DS", [0]), width=("DS", [11])), header(center=("DS", [100]), width=("DS", [11]))]
    out = window(hu_sample(np.zeros((2, 1, 1)), headers), W(from_header=True))
    np.testing.assert_allclose(out.pixels.ravel(), [0.55, 0.0], atol=1e-7)
    assert [r["center"] for r in out.meta["window"]["per_slice"]] == [0, 100]


def test_from_header_without_window_is_a_step_error_naming_the_tags():
    with pytest.raises(StepError, match=r"no WindowCenter/WindowWidth \(0028,1050\)/\(0028,1051\) or a VOI LUT"):
        window(hu_sample([[[0.0]]], [{}]), W(from_header=True))


def test_window_refuses_color_images():
    rgb = Sample("item", np.zeros((1, 2, 2, 3), np.float32), "zyxc", channels=("r", "g", "b"),
                 meta={"photometric_interpretation": "RGB"})
    with pytest.raises(StepError, match="applies to MONOCHROME1/MONOCHROME2 images, this one is RGB"):
        window(rgb, W(preset="lung"))


# ---------------------------------------------------------------- MONOCHROME1


def test_monochrome1_is_inverted_after_the_voi_transform():
    # c=550 w=1024 LINEAR: x=979 -> ((979 - 549.5)/1023 + 0.5) = 0.919843597... -> inverted 0.080156402...
    # (inverting first, 1023 - 979 = 44 -> window -> 0.00586510, would be wrong)
    s = hu_sample([[[0.0, 979.0]]], photometric="MONOCHROME1")
    out = window(s, W(level=550, width=1024))
    np.testing.assert_allclose(out.pixels.ravel(), [1.0, 1 - (429.5 / 1023 + 0.5)], atol=1e-7)
    assert out.meta["window"]["inverted_monochrome1"] is True
    assert out.meta["photometric_interpretation"] == "MONOCHROME2"
    kept = window(s, W(level=550, width=1024, invert_monochrome1=False))
    np.testing.assert_allclose(kept.pixels.ravel(), [0.0, 429.5 / 1023 + 0.5], atol=1e-7)


def test_monochrome1_cr_from_header_matches_pydicom_then_inverted():
    path = shared_data_path("misc_singles", "gdcm-CR-MONO1-10-chest.dcm")
    ds = pydicom.dcmread(path)
    theirs = apply_voi_lut(ds.pixel_array, ds)  # WC/WW 550/1024 LINEAR, range 0..2**10-1 (10 bits stored)
    out = window(sample_from_file(path), W(from_header=True))
    np.testing.assert_allclose(out.pixels[0], 1.0 - theirs / 1023.0, rtol=0, atol=1e-6)
    assert out.meta["window"]["center"] == 550 and out.meta["window"]["inverted_monochrome1"]


# ---------------------------------------------------------------- real files against pydicom


def test_ct_header_window_matches_pydicom(shared_data):
    path = shared_data_path("ct_pancreas_tcia", "1-001.dcm")
    ds = pydicom.dcmread(path)
    theirs = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)  # WC/WW 60/400
    y_min, y_max = 0 * 1 - 1000.0, (2**12 - 1) * 1 - 1000.0  # pydicom: 12-bit unsigned through the rescale
    out = window(sample_from_file(path), W(from_header=True, output_range=(0, 255)))
    np.testing.assert_allclose(out.pixels[0], (theirs - y_min) / (y_max - y_min) * 255, rtol=0, atol=1e-4)
    assert out.meta["window"]["center"] == 60 and out.meta["window"]["width"] == 400


def test_two_valued_window_header_index(shared_data):
    path = shared_data_path("dcm_qa_ct", "In", "Philips", "S21610", "S2010", "I10")
    s = sample_from_file(path)  # WindowCenter [40, 40], WindowWidth [80, 80]
    assert window(s, W(from_header=True, header_index=1)).meta["window"]["width"] == 80
    with pytest.raises(StepError, match="header_index is 2"):
        window(s, W(from_header=True, header_index=2))


def test_voi_lut_sequence_matches_pydicom():
    path = get_testdata_file("vlut_04.dcm")  # VOI LUT Sequence: 256 entries, first 0, 16 bits
    ds = pydicom.dcmread(path)
    theirs = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    s = sample_from_file(path)
    full = window(s, W(from_header=True, output_range=(0, 65535)))
    np.testing.assert_array_equal(full.pixels[0], theirs)
    unit = window(s, W(from_header=True))
    np.testing.assert_allclose(unit.pixels[0], theirs / 65535, rtol=1e-6)
    assert unit.meta["window"]["source"] == "header VOI LUT Sequence (0028,3010) item 0"
    assert unit.meta["window"]["lut_entries"] == 256 and unit.meta["window"]["bits"] == 16
    with pytest.raises(StepError, match=r"no WindowCenter/WindowWidth \(0028,1050\)/\(0028,1051\)$"):
        window(s, W(from_header=True, header_prefer="window"))


def test_enhanced_ct_window_from_the_shared_functional_group():
    # eCT_Supplemental.dcm: 2 frames; WindowCenter/Width 49/102 only in the Shared Functional
    # Groups' Frame VOI LUT Sequence (0028,9132). pydicom reads the top level only, so the
    # reference copies the numbers there.
    path = get_testdata_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    group = ds.SharedFunctionalGroupsSequence[0]
    voi, pvt = group.FrameVOILUTSequence[0], group.PixelValueTransformationSequence[0]
    hu = ds.pixel_array * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    ref = pydicom.dcmread(path)
    ref.WindowCenter, ref.WindowWidth = voi.WindowCenter, voi.WindowWidth
    ref.RescaleSlope, ref.RescaleIntercept = pvt.RescaleSlope, pvt.RescaleIntercept
    theirs = apply_voi_lut(hu, ref)
    bits = int(ds.BitsStored)
    lo = (-(2 ** (bits - 1)) if ds.PixelRepresentation else 0) * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    hi = ((2 ** (bits - 1) - 1) if ds.PixelRepresentation else 2**bits - 1) * float(pvt.RescaleSlope) \
        + float(pvt.RescaleIntercept)
    out = window(sample_from_file(path), W(from_header=True))
    assert out.pixels.shape[0] == 2
    np.testing.assert_allclose(out.pixels, (theirs - lo) / (hi - lo), rtol=0, atol=1e-6)
    assert (out.meta["window"]["center"], out.meta["window"]["width"]) == (49, 102)


def voi_lut_header(data: dict | None) -> dict:
    item = {"00283002": {"vr": "US", "Value": [3, 10, 12]}}  # 3 entries, first value mapped 10, 12 bits
    if data is not None:
        item["00283006"] = data
    return {"00283010": {"vr": "SQ", "Value": [item]}}


def test_voi_lut_from_inline_binary_ow():
    # OW LUT Data, little endian (PS3.18 F.2.7): entries [0, 2048, 4095]; 12 bits -> / 4095
    # x=9 -> entry 0 (below first) ; x=11 -> entry 1 ; x=50 -> entry 2 (above last)
    raw = base64.b64encode(np.array([0, 2048, 4095], "<u2").tobytes()).decode()
    out = window(hu_sample([[[9.0, 11.0, 50.0]]], [voi_lut_header({"vr": "OW", "InlineBinary": raw})]),
                 W(from_header=True))
    np.testing.assert_allclose(out.pixels.ravel(), [0, 2048 / 4095, 1], rtol=1e-6)


def test_voi_lut_data_left_out_of_the_header_is_named():
    with pytest.raises(StepError, match=r"LUT Data \(0028,3006\) is missing from the header"):
        window(hu_sample([[[0.0]]], [voi_lut_header(None)]), W(from_header=True))


# ---------------------------------------------------------------- modality_lut


def test_modality_lut_applied_by_the_reader_is_not_applied_twice():
    path = get_testdata_file("mlut_18.dcm")  # Modality LUT Sequence, no RescaleSlope
    s = sample_from_file(path)
    out = modality_lut(s, ModalityLutParams(step="modality_lut"))
    np.testing.assert_array_equal(out.pixels, s.pixels)
    assert out.meta["modality_lut"]["slices_lut_applied_by_reader"] == 1
    assert out.meta["modality_lut"]["slices_lut_applied_here"] == 0


def test_modality_lut_with_a_forbidden_rescale_too_matches_pydicom():
    # LUT and RescaleSlope/Intercept in one header (PS3.3 C.11.1 forbids it): the reader applies
    # the rescale; pydicom's apply_modality_lut uses the LUT; so does the step after it.
    path = get_testdata_file("mlut_18.dcm")  # 4096 entries, first value mapped -2048 (signed)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    theirs = apply_modality_lut(ds.pixel_array, ds)
    s = sample_from_file(path, ds)
    assert not np.array_equal(s.pixels[0], theirs)  # the reader's rescale is not the LUT
    out = modality_lut(s, ModalityLutParams(step="modality_lut"))
    assert out.pixels.dtype == np.float32
    np.testing.assert_array_equal(out.pixels[0], theirs.astype(np.float64))
    assert out.meta["modality_lut"]["slices_lut_applied_here"] == 1
    assert out.meta["units"] == "unspecified"  # ModalityLUTType US


def test_modality_lut_undoes_a_rescale_applied_by_the_reader():
    # stored [-2, 0, 3] with slope 2 / intercept 10 -> reader pixels [6, 10, 16];
    # LUT [100, 200, 300, 400], first -1: -2 -> 100 (below first), 0 -> 200, 3 -> 400 (above last)
    item = {"00283002": {"vr": "SS", "Value": [4, -1, 16]}, "00283006": {"vr": "US", "Value": [100, 200, 300, 400]},
            "00283004": {"vr": "LO", "Value": ["HU"]}}
    h = {"00283000": {"vr": "SQ", "Value": [item]}, "00281053": {"vr": "DS", "Value": [2]},
         "00281052": {"vr": "DS", "Value": [10]}}
    out = modality_lut(hu_sample([[[6.0, 10.0, 16.0]]], [h]), ModalityLutParams(step="modality_lut"))
    np.testing.assert_array_equal(out.pixels.ravel(), [100, 200, 400])
    assert out.meta["units"] == "HU"
    with pytest.raises(StepError, match="must come right after the reader"):
        modality_lut(hu_sample([[[6.5]]], [h]), ModalityLutParams(step="modality_lut"))


def test_modality_lut_is_a_noop_when_the_reader_rescale_is_all():
    s = sample_from_file(get_testdata_file("CT_small.dcm"))
    out = modality_lut(s, ModalityLutParams(step="modality_lut"))
    np.testing.assert_array_equal(out.pixels, s.pixels)
    assert out.meta["modality_lut"]["slices_lut_applied_here"] == 0
    assert "no Modality LUT Sequence (0028,3000)" in out.meta["modality_lut"]["note"]


# ---------------------------------------------------------------- multi_window


ICH = ["brain", "subdural", {"preset": "soft-tissue", "preset_source": "rsna-ich"}]


def test_ich_three_windows_golden():
    # x = 60 HU, LINEAR (PS3.3 C.11.2.1.2.1):
    #   brain 40/80:        ((60 - 39.5) / 79 + 0.5)  = 0.759493670886...
    #   subdural 80/200:    ((60 - 79.5) / 199 + 0.5) = 0.402010050251...
    #   soft tissue 40/380: ((60 - 39.5) / 379 + 0.5) = 0.554089709762...
    out = multi_window(hu_sample(np.full((2, 1, 1), 60.0)), MultiWindowParams(step="multi_window", windows=ICH))
    assert out.axes == "zyxc" and out.channels == ("brain", "subdural", "soft-tissue")
    assert out.pixels.shape == (2, 1, 1, 3) and out.pixels.dtype == np.float32
    np.testing.assert_allclose(out.pixels[0, 0, 0], [20.5 / 79 + 0.5, -19.5 / 199 + 0.5, 20.5 / 379 + 0.5], atol=1e-7)
    assert [w["width"] for w in out.meta["windows"]] == [80, 200, 380]


def test_explicit_window_needs_a_name_and_names_are_unique():
    with pytest.raises(ValidationError, match="needs level, width and name"):
        MultiWindowParams(step="multi_window", windows=[{"level": 40, "width": 80}])
    with pytest.raises(ValidationError, match="window names must be unique"):
        MultiWindowParams(step="multi_window", windows=["brain", {"level": 1, "width": 5, "name": "brain"}])


def test_context_slices_stack_neighbours_with_edge_replication():
    # slices hold -1000, 0, 1000 HU; one window 0/11 LINEAR: -1000 -> 0, 0 -> 0.55, 1000 -> 1
    s = hu_sample(np.array([-1000.0, 0.0, 1000.0]).reshape(3, 1, 1))
    params = MultiWindowParams(step="multi_window", windows=[{"level": 0, "width": 11, "name": "w"}], context_slices=1)
    out = multi_window(s, params)
    assert out.channels == ("w@z-1", "w@z+0", "w@z+1")
    np.testing.assert_allclose(out.pixels[:, 0, 0, :], [[0, 0, 0.55], [0, 0.55, 1], [0.55, 1, 1]], atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(n_windows=st.integers(1, 4), k=st.integers(0, 3), z=st.integers(1, 5))
def test_multi_window_channel_count(n_windows, k, z):
    windows = [{"level": 10 * i, "width": 50, "name": f"w{i}"} for i in range(n_windows)]
    out = multi_window(hu_sample(np.zeros((z, 2, 3))),
                       MultiWindowParams(step="multi_window", windows=windows, context_slices=k))
    assert out.pixels.shape == (z, 2, 3, n_windows * (2 * k + 1))
    assert len(out.channels) == len(set(out.channels)) == n_windows * (2 * k + 1)


def test_multi_window_inverts_each_channel_of_monochrome1():
    out = multi_window(hu_sample(np.zeros((1, 1, 1)), photometric="MONOCHROME1"),
                       MultiWindowParams(step="multi_window", windows=[{"level": 0, "width": 11, "name": "a"},
                                                                       {"level": -100, "width": 11, "name": "b"}]))
    # a: 0.55 -> 0.45 ; b: x=0 > -100 - 0.5 + 5 -> 1 -> 0
    np.testing.assert_allclose(out.pixels.ravel(), [0.45, 0.0], atol=1e-7)
