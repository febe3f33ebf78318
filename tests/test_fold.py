"""Folding pointwise steps into per-slice lookup tables gives the same bytes as running them on every pixel."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import medflow.engine.fold as fold_module
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from tests.conftest import shared_data_path
from tests.dicom_factory import write_ct_series

SEED_STEPS = """\
steps:
  - step: window
    level: -600
    width: 1500
  - step: colormap
    map: blue_red
  - step: color_space
    to: ycbcr
  - step: layout
    layout: NCHW
    dtype: float32
"""


def _recipe(tmp_path: Path, source: str, steps: str, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"medflow: 1\nname: {name}\nsource:\n{source}\n{steps}outputs:\n  dir: out-{name}\n"
                    "engine:\n  workers: 1\n")
    return path


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.npy"))}


def _build_both_ways(tmp_path, source, steps, monkeypatch, expect_stream=None):
    """Build three ways (streamed + folded, folded whole volumes, plain) and compare the bytes."""
    import medflow.engine.stream as stream_module

    calls, streamed = [], []
    original_apply, original_stream = fold_module.Folder.apply, stream_module.run_streamed

    def counting(self, *args, **kwargs):
        result = original_apply(self, *args, **kwargs)
        calls.append(result is not None)
        return result

    def counting_stream(task):
        result = original_stream(task)
        streamed.append(result is not None)
        return result

    def run(name: str, *overrides: str):
        # a cache of its own: a build resuming another's cached outputs would compare nothing
        over = [*overrides, f"engine.cache_dir={tmp_path / ('cache-' + name)}"]
        return build(load_recipe(_recipe(tmp_path, source, steps, name), overrides=over), show_progress=False)

    monkeypatch.setattr(fold_module.Folder, "apply", counting)
    monkeypatch.setattr(stream_module, "run_streamed", counting_stream)
    folded = run("folded")
    assert folded.exit_code == 0 and any(calls), "the folded path was not taken"
    if expect_stream is not None:
        assert any(streamed) == expect_stream
    calls.clear()
    whole = run("whole", "engine.stream=false")
    assert whole.exit_code == 0 and any(calls), "the folded whole-volume path was not taken"
    calls.clear()
    plain = run("plain", "engine.fold_pointwise=false")
    assert plain.exit_code == 0 and not calls
    assert all(plain.manifest["run"]["computed"].values()), "the plain path computed nothing"
    a, b, c = (_outputs(tmp_path / f"out-{n}") for n in ("folded", "whole", "plain"))
    assert a and a == b == c
    assert folded.manifest["items"] == plain.manifest["items"] or _same_but_keys(folded, plain)
    return a


def _same_but_keys(one, other) -> bool:
    strip = [{k: v for k, v in item.items() if k not in ("steps", "output_key")} for item in one.manifest["items"]]
    strip2 = [{k: v for k, v in item.items() if k not in ("steps", "output_key")} for item in other.manifest["items"]]
    return strip == strip2


def test_seed_chain_is_bit_identical_on_signed_data(tmp_path, monkeypatch):
    for series in range(2):
        write_ct_series(tmp_path / "data", series, n_slices=3, size=32)
    _build_both_ways(tmp_path, "  dicom: data", SEED_STEPS, monkeypatch, expect_stream=True)


def test_streaming_over_several_slabs_is_bit_identical(tmp_path, monkeypatch):
    import medflow.engine.stream as stream_module

    monkeypatch.setattr(stream_module, "SLAB_SLICES", 4)  # 11 slices: slabs of 4, 4, 3
    write_ct_series(tmp_path / "data", 1, n_slices=11, size=16)
    _build_both_ways(tmp_path, "  dicom: data", SEED_STEPS.replace("NCHW", "NHWC"), monkeypatch,
                     expect_stream=True)


def test_per_slice_rescale_is_honoured(tmp_path, monkeypatch):
    for index, intercept in enumerate([-1024.0, -1000.0, -900.5]):
        from tests.dicom_factory import write_ct_slice

        write_ct_slice(tmp_path / "data" / f"{index}.dcm", series=7, index=index, z=2.0 * index, size=16,
                       intercept=intercept)
    outputs = _build_both_ways(tmp_path, "  dicom: data", SEED_STEPS, monkeypatch)
    (array,) = [np.load(__import__("io").BytesIO(b)) for b in outputs.values()]
    assert array.shape == (3, 3, 16, 16)


def test_real_ct_slices_are_bit_identical(tmp_path, monkeypatch):
    source = shared_data_path("ct_pancreas_tcia")
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(source.glob("*.dcm"))[:6]:
        (data / path.name).symlink_to(path)
    _build_both_ways(tmp_path, "  dicom: data", SEED_STEPS, monkeypatch)


def test_monochrome1_window_from_header_is_bit_identical(tmp_path, monkeypatch):
    source = shared_data_path("misc_singles", "gdcm-CR-MONO1-10-chest.dcm")
    (tmp_path / "data").mkdir()
    shutil.copy(source, tmp_path / "data" / "cr.dcm")
    steps = "steps:\n  - step: window\n    from_header: true\n  - step: layout\n    layout: NHWC\n" \
            "    dtype: uint8\n    scale: 255\n"
    _build_both_ways(tmp_path, "  dicom: data", steps, monkeypatch)


def test_enhanced_frames_keep_their_own_header_window(tmp_path, monkeypatch):
    """Philips enhanced MR, 8 frames whose Frame VOI LUT (0028,9132) sits in each frame's Per-frame
    Functional Groups (5200,9230), centers 325..403: a table per frame window, as the plain path."""
    import pydicom

    source = shared_data_path("dicom2nifti_cases", "philips_enhanced", "anatomical", "001", "IM-0001-0170-0001.dcm")
    groups = pydicom.dcmread(source, stop_before_pixels=True).PerFrameFunctionalGroupsSequence
    assert len({float(g.FrameVOILUTSequence[0].WindowCenter) for g in groups}) > 1
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mr.dcm").symlink_to(source)
    steps = "steps:\n  - step: window\n    from_header: true\n  - step: layout\n    layout: NCHW\n"
    _build_both_ways(tmp_path, "  dicom: data", steps, monkeypatch)


def test_sample_phantom_is_bit_identical(tmp_path, monkeypatch):
    steps = "steps:\n  - step: window\n    preset: lung\n  - step: colormap\n    map: jet\n" \
            "  - step: layout\n    layout: NCDHW\n"
    _build_both_ways(tmp_path, "  sample: ct-phantom", steps, monkeypatch, expect_stream=False)


def test_a_pointwise_param_change_reuses_the_stored_values(tmp_path):
    write_ct_series(tmp_path / "data", 1, n_slices=3)
    recipe = _recipe(tmp_path, "  dicom: data", SEED_STEPS, "r")
    build(load_recipe(recipe, overrides=["engine.stream=false"]), show_progress=False)
    report = build(load_recipe(recipe, overrides=["steps[0].width=1200", "engine.stream=false"]),
                   show_progress=False)
    (computed,) = report.manifest["run"]["computed"].values()
    assert computed == ["window", "colormap", "color_space", "layout"]  # no DICOM decoding


@pytest.mark.parametrize("lo,hi", [(-2048, 3071), (0, 4095)])
def test_fold_table_covers_exactly_the_occurring_values(lo, hi):
    from medflow.engine.task import apply_step
    from medflow.recipe.model import recipe_model
    from medflow.sample import Sample

    rng = np.random.default_rng(0)
    dtype = np.int16 if lo < 0 else np.uint16
    stored = rng.integers(lo, hi + 1, size=(2, 8, 8)).astype(dtype)
    stored[0, 0, 0], stored[1, 0, 0] = lo, hi
    sample = Sample("x", stored, "zyx", meta={"stored_rescale": [[1.0, -1024.0], [2.0, 0.0]]})
    recipe = recipe_model().model_validate({"medflow": 1, "name": "t", "source": {"sample": "ct-phantom"},
                                            "outputs": {"dir": "o"},
                                            "steps": [{"step": "window", "level": 40, "width": 400}]})
    out = fold_module.fold(sample, list(recipe.steps), apply_step)
    hu = np.stack([stored[0] * 1.0 - 1024.0, stored[1] * 2.0]).astype(np.float32)
    expected = apply_step(recipe.steps[0], Sample("x", hu, "zyx")).pixels
    assert out.pixels.dtype == np.float32
    assert np.array_equal(out.pixels, expected)
    assert "stored_rescale" not in out.meta


def test_large_lut_data_survives_into_the_sample_headers(tmp_path):
    """LUT Data over the bulk threshold (here 4096 entries x 2 bytes) stays in the headers steps read."""
    import pydicom
    from pydicom.data import get_testdata_file

    from medflow.recipe.model import SeriesFilter
    from medflow.sources.discovery import discover_dicom
    from medflow.sources.fingerprint import FingerprintMemo
    from medflow.sources.series import read_item

    (tmp_path / "d").mkdir()
    shutil.copy(get_testdata_file("mlut_18.dcm"), tmp_path / "d" / "m.dcm")
    (item,) = discover_dicom(tmp_path / "d", SeriesFilter(), FingerprintMemo(None)).items
    header = read_item(item).headers[0]
    lut_item = header["00283000"]["Value"][0]
    assert "00283006" in lut_item
    expected = pydicom.dcmread(get_testdata_file("mlut_18.dcm")).ModalityLUTSequence[0]
    decoded = pydicom.Dataset.from_json(lut_item)
    assert list(decoded.LUTData) == list(expected.LUTData)


def test_streaming_recovers_from_corrupt_cached_values(tmp_path):
    write_ct_series(tmp_path / "data", 1, n_slices=5)
    recipe = _recipe(tmp_path, "  dicom: data", SEED_STEPS, "r")
    recipe.write_text(recipe.read_text() + "  cache_stored_values: true\n")
    build(load_recipe(recipe), show_progress=False)
    before = _outputs(tmp_path / "out-r")
    (entry,) = list((tmp_path / ".medflow" / "cache" / "objects").rglob("*.mfc"))
    data = bytearray(entry.read_bytes())
    data[100] ^= 0x01  # a stored value, found only once every slab has been read
    entry.write_bytes(bytes(data))
    for path in (tmp_path / "out-r" / "tensors").glob("*.npy"):
        path.unlink()
    report = build(load_recipe(recipe), show_progress=False)
    assert report.exit_code == 0
    (computed,) = report.manifest["run"]["computed"].values()
    assert computed[0] == "dicom_read"
    assert _outputs(tmp_path / "out-r") == before


def test_anonymize_folds_with_the_pixel_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", "fold-test-key-0123456789abcdef0123")
    for series in range(2):
        write_ct_series(tmp_path / "data", series, n_slices=3, size=16)
    steps = SEED_STEPS.replace("steps:\n", "steps:\n  - step: anonymize\n    key_env: MEDFLOW_DEID_KEY\n")
    _build_both_ways(tmp_path, "  dicom: data", steps, monkeypatch, expect_stream=False)


@pytest.mark.parametrize("padded", [True, False], ids=["padded-gather", "whole-pixel-gather"])
def test_ich_multi_window_folds_and_streams_bit_identically(tmp_path, monkeypatch, padded):
    import medflow.engine.gather as gather_module

    monkeypatch.setattr(gather_module, "_padding_pays", lambda n_pixels: padded)
    for series in range(2):
        write_ct_series(tmp_path / "data", series, n_slices=3, size=16)
    steps = ("steps:\n  - step: multi_window\n    windows: [brain, subdural, {level: 40, width: 380, name: soft}]\n"
             "  - step: layout\n    layout: NHWC\n    dtype: uint8\n    scale: 255\n")
    _build_both_ways(tmp_path, "  dicom: data", steps, monkeypatch, expect_stream=True)


# Every kind of pointwise chain a user can write folds bit-identically: the three-way
# comparison (streamed + folded, folded whole volume, plain) on each.
_CHAINS = {
    "linear_exact_window": "steps:\n  - step: window\n    level: 40\n    width: 400\n    function: LINEAR_EXACT\n",
    "sigmoid_window_nhwc_uint8": ("steps:\n  - step: window\n    level: -600\n    width: 1500\n"
                                  "    function: SIGMOID\n  - step: layout\n    layout: NHWC\n"
                                  "    dtype: uint8\n    scale: 255\n"),
    "user_lut_file": ("steps:\n  - step: window\n    level: 40\n    width: 400\n  - step: colormap\n"
                      "    map: file\n    path: LUTPATH\n  - step: layout\n    layout: NCHW\n"),
    "uint8_colour_conversions": ("steps:\n  - step: window\n    level: 40\n    width: 400\n  - step: colormap\n"
                                 "    map: jet\n    output_dtype: uint8\n  - step: color_space\n    to: hsv\n"
                                 "  - step: color_space\n    to: rgb\n  - step: color_space\n    to: lab\n"
                                 "  - step: layout\n    layout: NHWC\n    dtype: uint8\n"),
    "ycrcb_gray_float": ("steps:\n  - step: window\n    level: 40\n    width: 400\n  - step: colormap\n"
                         "    map: turbo\n  - step: color_space\n    to: ycrcb\n  - step: layout\n    layout: NCHW\n"),
}


@pytest.mark.parametrize("padded", [True, False], ids=["padded-gather", "whole-pixel-gather"])
@pytest.mark.parametrize("name", sorted(_CHAINS))
def test_every_pointwise_chain_is_bit_identical(tmp_path, monkeypatch, name, padded):
    """Both interleaved gathers (3 channels padded to 4, or whole pixels: :mod:`medflow.engine.gather`)."""
    import medflow.engine.gather as gather_module
    import medflow.engine.stream as stream_module

    monkeypatch.setattr(gather_module, "_padding_pays", lambda n_pixels: padded)

    lut = tmp_path / "mine.csv"
    lut.write_text("".join(f"{i},{(i * 7) % 256},{255 - i}\n" for i in range(256)))
    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)  # several slabs, buffers reused
    for series in range(2):
        write_ct_series(tmp_path / "data", series, n_slices=5, size=16)
    _build_both_ways(tmp_path, "  dicom: data", _CHAINS[name].replace("LUTPATH", str(lut)), monkeypatch,
                     expect_stream=True)


def test_threads_inside_one_series_give_the_same_bytes(tmp_path, monkeypatch):
    """One series, two workers: its slabs are folded on two threads; the bytes do not change."""
    import medflow.engine.stream as stream_module
    import medflow.threads

    monkeypatch.setattr(medflow.threads, "usable_cores", lambda: 8)  # gather threads need cores to spare
    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    threads = []
    original = stream_module._threads
    monkeypatch.setattr(stream_module, "_threads", lambda task: threads.append(original(task)) or original(task))
    write_ct_series(tmp_path / "data", 0, n_slices=9, size=16)
    recipe = _recipe(tmp_path, "  dicom: data", SEED_STEPS, "one")
    one = build(load_recipe(recipe), show_progress=False)
    two = build(load_recipe(_recipe(tmp_path, "  dicom: data", SEED_STEPS, "two"), overrides=["engine.workers=2"]),
                show_progress=False)
    assert one.exit_code == two.exit_code == 0
    assert 2 in threads
    assert _outputs(tmp_path / "out-one") == _outputs(tmp_path / "out-two")


def test_unsigned_stored_values_fold_through_one_full_range_table(tmp_path, monkeypatch):
    """uint16 stored values (BitsStored 12, like many scanners) index a 65,536-entry table directly."""
    from tests.dicom_factory import write_ct_slice

    built = []
    original = fold_module.Folder._build
    monkeypatch.setattr(fold_module.Folder, "_build", lambda self, *a: built.append(a[1]) or original(self, *a))
    import pydicom

    rng = np.random.default_rng(1)
    for index in range(4):
        path = write_ct_slice(tmp_path / "data" / f"{index}.dcm", series=3, index=index, z=2.0 * index, size=16)
        ds = pydicom.dcmread(path)
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
        ds.PixelData = rng.integers(0, 4096, size=(16, 16)).astype("<u2").tobytes()
        ds.save_as(path)
    _build_both_ways(tmp_path, "  dicom: data", SEED_STEPS, monkeypatch, expect_stream=True)
    assert len(built) == 2  # one table per folded build (streamed, whole volume) for 4 slices of one rescale


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_bits_above_high_bit_are_ignored_the_same_on_every_path_of_a_non_square_series(tmp_path, monkeypatch, signed):
    """Stored values are bits HighBit..0 only (PS3.5 8.1.1): set bits above them (some scanners leave
    overlay or padding bits there) change nothing, on the streamed, folded and plain paths alike.
    Golden: the 12 bits masked and sign-extended by numpy, then PS3.3 C.11.2.1.2.1's LINEAR window."""
    import pydicom

    from tests.dicom_factory import write_ct_slice

    rows, columns, slope, intercept = 13, 7, 0.5, -1000.0
    rng = np.random.default_rng(7)
    stored = rng.integers(-2048 if signed else 0, 2048 if signed else 4096, size=(3, rows, columns))
    for index in range(3):
        path = write_ct_slice(tmp_path / "data" / f"{index}.dcm", series=5, index=index, z=2.0 * index, size=16)
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns = rows, columns
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = int(signed), 12, 11
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        junk = rng.integers(0, 16, size=(rows, columns)) << 12  # bits 12-15: not part of the value
        ds.PixelData = ((stored[index] & 0xFFF) | junk).astype("<u2").tobytes()
        ds.save_as(path)
    steps = ("steps:\n  - step: window\n    level: 40\n    width: 400\n    function: LINEAR\n"
             "  - step: layout\n    layout: NCHW\n    dtype: float32\n")
    outputs = _build_both_ways(tmp_path, "  dicom: data", steps, monkeypatch, expect_stream=True)
    (tensor,) = [np.load(tmp_path / "out-plain" / name) for name in outputs]
    hu = stored.astype(np.float64) * slope + intercept
    expected = np.clip((hu - (40 - 0.5)) / (400 - 1) + 0.5, 0.0, 1.0)
    assert tensor.shape == (3, 1, rows, columns)
    np.testing.assert_allclose(tensor[:, 0], expected, rtol=0, atol=1e-6)


def test_fold_falls_back_to_the_held_values_when_the_full_range_overflows(monkeypatch):
    """A step that fails on a value the item never holds: tables over lo..hi, same result."""
    from medflow.errors import StepError
    from medflow.sample import Sample

    def apply_step(params, sample):
        if np.abs(sample.pixels).max() > 5000:
            raise StepError("probe", sample.item_id, "overflow")
        return sample.replace(pixels=(sample.pixels * 2).astype(np.float32))

    stored = np.arange(-100, 100, dtype=np.int16).reshape(2, 10, 10)
    sample = Sample("x", stored, "zyx", meta={"stored_rescale": [[1.0, 0.0], [1.0, 0.0]]})
    out = fold_module.fold(sample, [object()], apply_step)
    assert np.array_equal(out.pixels, (stored * 2).astype(np.float32))


@pytest.mark.parametrize("colour", [True, False])
def test_channels_last_gather_equals_the_planar_one_and_needs_no_copy(colour):
    """The interleaved gather (an NHWC tensor's order) holds the planar gather's values, C-contiguous."""
    from medflow.engine.task import apply_step
    from medflow.recipe.model import recipe_model
    from medflow.sample import Sample

    steps = [{"step": "window", "level": 40, "width": 400}]
    if colour:
        steps += [{"step": "colormap", "map": "turbo"}]
    steps += [{"step": "layout", "layout": "NHWC", "dtype": "uint8", "scale": 255}]
    recipe = recipe_model().model_validate({"medflow": 1, "name": "t", "source": {"sample": "ct-phantom"},
                                            "outputs": {"dir": "o"}, "steps": steps})
    rng = np.random.default_rng(1)
    stored = rng.integers(-2048, 3072, size=(3, 9, 7)).astype(np.int16)
    sample = Sample("x", stored, "zyx", meta={"stored_rescale": [[1.0, -1024.0]] * 3})
    planar = fold_module.Folder(list(recipe.steps), apply_step, planar=True).apply(sample)
    interleaved_folder = fold_module.Folder(list(recipe.steps), apply_step, planar=False)
    shape, dtype = interleaved_folder.output_spec(sample)
    buffer = np.empty(shape, dtype)
    interleaved = interleaved_folder.apply(sample, buffer)
    plain = sample.replace(pixels=(stored * 1.0 - 1024.0).astype(np.float32), meta={})
    for params in recipe.steps:
        plain = apply_step(params, plain)
    assert shape == ((3, 9, 7, 3) if colour else (3, 9, 7, 1))
    assert np.array_equal(interleaved.pixels, plain.pixels) and np.array_equal(planar.pixels, plain.pixels)
    assert interleaved.pixels.flags.c_contiguous and np.shares_memory(interleaved.pixels, buffer)


def test_only_a_channels_first_layout_after_the_fold_gets_a_planar_gather():
    from medflow.recipe.model import recipe_model

    def rest(*steps):
        recipe = recipe_model().model_validate({"medflow": 1, "name": "t", "source": {"sample": "ct-phantom"},
                                                "outputs": {"dir": "o"}, "steps": list(steps)})
        return list(recipe.steps)

    assert fold_module.channels_first_next(rest({"step": "layout", "layout": "NCHW"}))
    assert fold_module.channels_first_next(rest({"step": "layout", "layout": "CHW"}))
    assert not fold_module.channels_first_next(rest({"step": "layout", "layout": "NHWC"}))
    assert not fold_module.channels_first_next([])


@pytest.mark.parametrize("steps", [SEED_STEPS, _CHAINS["sigmoid_window_nhwc_uint8"]], ids=["seed", "sigmoid-nhwc"])
def test_a_small_item_folds_through_tables_of_the_values_it_holds(tmp_path, monkeypatch, steps):
    """Fewer pixels than a full-range table has entries: no 65,536-entry table, the same bytes."""
    monkeypatch.setattr(fold_module, "FULL_RANGE_MIN_FRACTION", 1.0)  # 768 pixels < 65,536 (tests/conftest.py: 0)
    built, ranged = [], []
    original_build, original_ranged = fold_module.Folder._build, fold_module.Folder._apply_ranged
    monkeypatch.setattr(fold_module.Folder, "_build", lambda self, *a: built.append(1) or original_build(self, *a))
    monkeypatch.setattr(fold_module.Folder, "_apply_ranged",
                        lambda self, *a: ranged.append(1) or original_ranged(self, *a))
    for series in range(2):
        write_ct_series(tmp_path / "data", series, n_slices=3, size=16)  # 768 pixels, values spread over ~4,000
    _build_both_ways(tmp_path, "  dicom: data", steps, monkeypatch, expect_stream=True)
    assert ranged and not built


def test_tables_over_the_held_values_take_the_distinct_values_when_fewer_than_the_range(monkeypatch):
    """A slab of a few pixels spread over a wide range: the chain runs on its distinct values only."""
    from medflow.sample import Sample

    monkeypatch.setattr(fold_module, "FULL_RANGE_MIN_FRACTION", 1.0)

    seen = []

    def apply_step(params, sample):
        seen.append(sample.pixels.size)
        return sample.replace(pixels=np.sqrt(np.abs(sample.pixels)).astype(np.float32))

    stored = np.array([[[-30000, 5], [5, 30000]], [[7, 7], [-30000, 12]]], dtype=np.int16)
    sample = Sample("x", stored, "zyx", meta={"stored_rescale": [[1.0, 0.0], [2.0, -1.0]]})
    folder = fold_module.Folder([object()], apply_step, item_rescales=[[1.0, 0.0], [2.0, -1.0]])
    out = folder.apply(sample)
    expected = np.stack([np.sqrt(np.abs(stored[0] * 1.0 + 0.0)), np.sqrt(np.abs(stored[1] * 2.0 - 1.0))]).astype(np.float32)
    assert np.array_equal(out.pixels, expected)
    assert max(seen) <= 2 * 5  # 2 slices x 5 distinct values, not 2 x 60,001 values of the range


def _series_with_rescales(folder: Path, intercepts: list[float], size: int = 64) -> None:
    from tests.dicom_factory import write_ct_slice

    for index, intercept in enumerate(intercepts):
        write_ct_slice(folder / "s0" / f"slice{index:03d}.dcm", series=0, index=index, z=2.0 * index, size=size,
                       intercept=intercept)


@pytest.mark.parametrize("steps", [SEED_STEPS, _CHAINS["sigmoid_window_nhwc_uint8"]], ids=["seed", "sigmoid-nhwc"])
def test_a_series_whose_every_slice_has_its_own_rescale_builds_no_full_range_table(tmp_path, monkeypatch, steps):
    """PET-like: each rescale serves one slice, too few pixels for a 65,536-entry table; same bytes."""
    monkeypatch.setattr(fold_module, "FULL_RANGE_MIN_FRACTION", 0.5)  # a rescale needs 32,768 pixels: 8 slices
    built, ranged = [], []
    original_build, original_ranged = fold_module.Folder._build, fold_module.Folder._apply_ranged
    monkeypatch.setattr(fold_module.Folder, "_build", lambda self, *a: built.append(1) or original_build(self, *a))
    monkeypatch.setattr(fold_module.Folder, "_apply_ranged",
                        lambda self, *a: ranged.append(1) or original_ranged(self, *a))
    _series_with_rescales(tmp_path / "data", [-1024.0 - index for index in range(12)])
    _build_both_ways(tmp_path, "  dicom: data", steps, monkeypatch, expect_stream=True)
    assert ranged and not built


def test_a_rescale_shared_by_enough_slices_gets_its_full_range_table(tmp_path, monkeypatch):
    monkeypatch.setattr(fold_module, "FULL_RANGE_MIN_FRACTION", 0.5)  # 8 slices of 64 x 64
    built = []
    original_build = fold_module.Folder._build
    monkeypatch.setattr(fold_module.Folder, "_build", lambda self, *a: built.append(1) or original_build(self, *a))
    _series_with_rescales(tmp_path / "data", [-1024.0] * 12)
    _build_both_ways(tmp_path, "  dicom: data", SEED_STEPS, monkeypatch, expect_stream=True)
    assert built


def test_kept_tables_stay_under_their_byte_budget():
    import threading

    memo: dict = {}
    lock = threading.Lock()
    for key in range(40):  # 40 seed-sized tables (0.75 MiB each, and their per-channel copies)
        fold_module._remember(memo, key, fold_module._Table(np.zeros((65_536, 3), np.float32)), lock)
    kept = sum(2 * table.lut.nbytes for table in memo.values())
    assert kept <= fold_module.MAX_TABLE_BYTES and list(memo) == list(range(40 - len(memo), 40))
    fold_module._remember(memo, "huge", fold_module._Table(np.zeros((1 << 23, 1), np.float32)), lock)
    assert list(memo) == ["huge"]  # one table over the budget is still kept: the slab needs it


def _one_slice_series(folder: Path, count: int, size: int = 64, intercept: float = -1024.0) -> None:
    """``count`` series of one slice each (each its own item, as 2-D images are), one rescale."""
    from tests.dicom_factory import write_ct_slice

    for series in range(count):
        write_ct_slice(folder / f"s{series:02d}" / "slice000.dcm", series=series, index=0, z=0.0, size=size,
                       intercept=intercept)


def _count_builds(monkeypatch) -> tuple[list, list]:
    built, ranged = [], []
    original_build, original_ranged = fold_module.Folder._build, fold_module.Folder._apply_ranged
    monkeypatch.setattr(fold_module.Folder, "_build", lambda self, *a: built.append(1) or original_build(self, *a))
    monkeypatch.setattr(fold_module.Folder, "_apply_ranged",
                        lambda self, *a: ranged.append(1) or original_ranged(self, *a))
    return built, ranged


@pytest.mark.parametrize("steps", [SEED_STEPS, _CHAINS["sigmoid_window_nhwc_uint8"]], ids=["seed", "sigmoid-nhwc"])
def test_items_too_small_for_a_table_of_their_own_share_one_once_they_served_enough_pixels(tmp_path, monkeypatch,
                                                                                         steps):
    """12 one-slice items of 64 x 64 with one rescale: the first go through tables of the values they
    hold; once the process's items served 8 slices' pixels, one full-range table serves the rest."""
    monkeypatch.setattr(fold_module, "FULL_RANGE_MIN_FRACTION", 0.5)  # 32,768 pixels: 8 slices of 64 x 64
    built, ranged = _count_builds(monkeypatch)
    _one_slice_series(tmp_path / "data", 12)
    _build_both_ways(tmp_path, "  dicom: data", steps, monkeypatch, expect_stream=True)
    assert built == [1]  # one table for the 12 items (the whole-volume and plain builds fold per item)
    assert len(ranged) >= 7


def test_items_with_one_rescale_build_their_full_range_table_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(fold_module, "FULL_RANGE_MIN_FRACTION", 0.0)  # every item would build its own table
    built, ranged = _count_builds(monkeypatch)
    _one_slice_series(tmp_path / "data", 6)
    _build_both_ways(tmp_path, "  dicom: data", SEED_STEPS, monkeypatch, expect_stream=True)
    streamed_builds = len(built) - 6  # the whole-volume build's items build a table each
    assert streamed_builds == 1 and not ranged
    assert len(fold_module.PROCESS_TABLES.tables) == 1


def test_a_chain_reading_more_of_a_header_than_its_pixel_description_keeps_its_tables_per_item(tmp_path, monkeypatch):
    """window from_header reads an enhanced image's functional groups too: no sharing between items."""
    monkeypatch.setattr(fold_module, "FULL_RANGE_MIN_FRACTION", 0.0)
    built, _ = _count_builds(monkeypatch)
    from tests.dicom_factory import write_ct_slice

    for series in range(4):
        path = write_ct_slice(tmp_path / "data" / f"s{series}" / "slice000.dcm", series=series, index=0, z=0.0, size=32)
        import pydicom

        ds = pydicom.dcmread(path)
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.save_as(path)
    steps = "steps:\n  - step: window\n    from_header: true\n  - step: layout\n    layout: NCHW\n"
    _build_both_ways(tmp_path, "  dicom: data", steps, monkeypatch, expect_stream=True)
    assert len(built) == 2 * 4  # streamed and whole-volume builds: a table per item each
    assert not fold_module.PROCESS_TABLES.tables


def test_an_edited_lut_file_is_not_served_from_an_earlier_builds_tables(tmp_path, monkeypatch):
    """Two builds in one process, the user's LUT file edited between them: the second follows the file."""
    monkeypatch.setattr(fold_module, "FULL_RANGE_MIN_FRACTION", 0.0)
    lut = tmp_path / "mine.csv"
    _one_slice_series(tmp_path / "data", 3, size=16)
    steps = _CHAINS["user_lut_file"].replace("LUTPATH", str(lut))

    def run(name: str) -> dict[str, bytes]:
        recipe = _recipe(tmp_path, "  dicom: data", steps, name)
        result = build(load_recipe(recipe, overrides=[f"engine.cache_dir={tmp_path / ('cache-' + name)}"]),
                       show_progress=False)
        assert result.exit_code == 0
        return _outputs(tmp_path / f"out-{name}")

    lut.write_text("".join(f"{i},{i},{i}\n" for i in range(256)))
    first = run("first")
    lut.write_text("".join(f"{255 - i},{i},{(i * 7) % 256}\n" for i in range(256)))
    second = run("second")
    fold_module.PROCESS_TABLES.clear()
    fresh = run("fresh")  # the edited file, nothing shared before it
    assert second == fresh and second != first


def test_a_chain_that_fails_on_the_full_range_is_not_built_again_for_the_next_item():
    """One item's chain overflowed on a value it never holds: the process's next item, same chain,
    goes straight to tables over its held values (same result) instead of failing a build again."""
    from medflow.errors import StepError
    from medflow.sample import Sample

    attempts = []

    def apply_step(params, sample):
        if np.abs(sample.pixels).max() > 5000:
            attempts.append(sample.pixels.size)
            raise StepError("probe", sample.item_id, "overflow")
        return sample.replace(pixels=(sample.pixels * 2).astype(np.float32))

    class Step:
        def reads_only_pixel_description(self):
            return True

    stored = np.arange(-100, 100, dtype=np.int16).reshape(2, 10, 10)
    meta = {"stored_rescale": [[1.0, 0.0], [1.0, 0.0]]}
    for item in ("a", "b"):
        folder = fold_module.Folder([Step()], apply_step, chain_key="probe-chain")
        slab = Sample(item, stored, "zyx", meta=meta)
        found = folder.tables(slab)
        out = folder.apply(slab, None, found)
        assert np.array_equal(out.pixels, (stored * 2).astype(np.float32))
    assert attempts == [65_536]  # item a tried the full range once; item b did not
