"""A streamed slab's description (meta, axes, channels) reused from an earlier slab, and the
expected value range read from the folded tables: same bytes, manifests and messages as without.

The memo is switched off by making every step look as if it read more than its pixel
description; the comparison is then with the chain run on every slab, as before the memo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

import medflow.engine.fold as fold_module
import medflow.engine.stream as stream_module
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_slice

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
KEY = "memo-test-key-0123456789abcdef0123"

SEED = ("  - step: window\n    level: -600\n    width: 1500\n  - step: colormap\n    map: blue_red\n"
        "  - step: color_space\n    to: ycbcr\n  - step: layout\n    layout: NCHW\n    dtype: float32\n")
CHAINS = {
    "seed": SEED,
    "modality_lut_seed": "  - step: modality_lut\n" + SEED,
    "window_from_header": "  - step: window\n    from_header: true\n  - step: layout\n    layout: NCHW\n",
    "ich_uint8_nhwc": ("  - step: multi_window\n    windows: [brain, subdural, {level: 40, width: 380, name: soft}]\n"
                       "  - step: layout\n    layout: NHWC\n    dtype: uint8\n    scale: 255\n"),
    "palette_free_jet_uint8": ("  - step: window\n    level: 40\n    width: 400\n  - step: colormap\n    map: jet\n"
                               "    output_dtype: uint8\n  - step: layout\n    layout: NHWC\n    dtype: uint8\n"),
}


def _recipe(tmp_path: Path, name: str, steps: str, expect: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"medflow: 1\nname: {name}\nsource:\n  dicom: data\nsteps:\n{steps}outputs:\n  dir: out-{name}\n"
                    f"{expect}engine:\n  workers: 1\n  cache_dir: cache-{name}\n")  # no build resumes another's
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _stable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("run", "recipe")}


def _without_memo(monkeypatch) -> None:
    monkeypatch.setattr(fold_module, "_reads_only_pixel_description", lambda params: False)


def _count_descriptions(monkeypatch, recipe: Path) -> list[int]:
    """The slices of every run of ``recipe``'s chain on a description probe (one value per slice)."""
    first = load_recipe(recipe).recipe.steps[0]
    probes: list[int] = []
    original = stream_module.apply_step

    def counting(params, sample):
        pixels = sample.pixels
        if params == first and pixels.ndim == 3 and pixels.shape[1:] == (1, 1):
            probes.append(pixels.shape[0])
        return original(params, sample)

    monkeypatch.setattr(stream_module, "apply_step", counting)
    return probes


def _series(tmp_path: Path, windows: bool = False) -> None:
    """8 slices of one series: two rescales (two tables), optionally a window per slice in the header."""
    for index in range(8):
        path = write_ct_slice(tmp_path / "data" / f"{index}.dcm", series=5, index=index, z=2.0 * index, size=16,
                              intercept=-1024.0 if index < 4 else -1000.0)
        if windows:
            ds = pydicom.dcmread(path)
            ds.WindowCenter, ds.WindowWidth = 40 + 10 * (index // 2), 400
            ds.save_as(path)


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_the_memo_gives_the_same_outputs_and_manifest(tmp_path, monkeypatch, name):
    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)  # 8 slices: 4 slabs
    _series(tmp_path, windows=name == "window_from_header")
    recipe = _recipe(tmp_path, "memo", CHAINS[name])
    probes = _count_descriptions(monkeypatch, recipe)
    with_memo = build(load_recipe(recipe), show_progress=False)
    described_with = len(probes)
    probes.clear()
    _without_memo(monkeypatch)
    without = build(load_recipe(_recipe(tmp_path, "plain", CHAINS[name])), show_progress=False)
    assert with_memo.exit_code == without.exit_code == 0
    # a header window per slab pair: the second slab's record differs from the first's and the item
    # goes to the whole-volume path (see test_pixel_path), after two descriptions with or without the memo
    varies = name == "window_from_header"
    assert len(probes) == (2 if varies else 4), "without the memo every slab is described"
    memo_files, plain_files = _files(tmp_path / "out-memo"), _files(tmp_path / "out-plain")
    assert memo_files and memo_files == plain_files
    assert _stable(with_memo.manifest) == _stable(without.manifest)
    # two rescales, two slabs each: described twice
    assert described_with == 2


def test_slabs_with_other_pixel_descriptions_are_described_again(tmp_path, monkeypatch):
    """The memo's key holds each slice's pixel description: a header window per slab, one description each."""
    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    _series(tmp_path, windows=True)  # WindowCenter 40, 50, 60, 70 by pairs of slices: one per slab
    recipe = _recipe(tmp_path, "d", "  - step: window\n    level: 40\n    width: 400\n  - step: layout\n    layout: NCHW\n")
    probes = _count_descriptions(monkeypatch, recipe)
    assert build(load_recipe(recipe), show_progress=False).exit_code == 0
    assert len(probes) == 4  # (0028,1050) differs from slab to slab: no slab matches an earlier one


def test_a_chain_that_rewrites_headers_is_never_served_from_the_memo(monkeypatch):
    """anonymize reads and rewrites every header: each slab gets its own de-identified headers."""
    from medflow.engine.task import apply_step
    from medflow.recipe.model import recipe_model
    from medflow.sample import Sample

    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    recipe = recipe_model().model_validate({
        "medflow": 1, "name": "t", "source": {"sample": "ct-phantom"}, "outputs": {"dir": "o"},
        "steps": [{"step": "anonymize", "key_env": "MEDFLOW_DEID_KEY"}, {"step": "window", "level": 40, "width": 400}]})
    folder = fold_module.Folder(list(recipe.steps), apply_step)

    def slab(patient: str, sop: str) -> Sample:
        header = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": patient}]},
                  "00080018": {"vr": "UI", "Value": [sop]}, "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]}}
        return Sample("x", np.zeros((1, 4, 4), np.int16), "zyx", headers=[header],
                      meta={"stored_rescale": [[1.0, -1024.0]]})

    one, two = slab("DOE^JANE", "1.2.3.4"), slab("ROE^RICHARD", "1.2.3.5")
    found_one, found_two = folder.tables(one), folder.tables(two)
    assert found_one.keys == found_two.keys  # same rescale and pixel description
    out_one, out_two = folder.apply(one, found=found_one), folder.apply(two, found=found_two)
    names = [o.headers[0].get("00100010") for o in (out_one, out_two)]
    uids = [o.headers[0]["00080018"]["Value"][0] for o in (out_one, out_two)]
    assert "ROE^RICHARD" not in str(names) and "DOE^JANE" not in str(names)
    assert uids[0] != uids[1] and not {"1.2.3.4", "1.2.3.5"} & set(uids)  # each slab's own pseudonyms


def test_a_window_from_the_header_records_each_slabs_own_window():
    """window from_header declares it reads more than group 0028: each slab's meta is its own header's."""
    from medflow.engine.task import apply_step
    from medflow.recipe.model import recipe_model
    from medflow.sample import Sample

    recipe = recipe_model().model_validate({
        "medflow": 1, "name": "t", "source": {"sample": "ct-phantom"}, "outputs": {"dir": "o"},
        "steps": [{"step": "window", "from_header": True}]})
    folder = fold_module.Folder(list(recipe.steps), apply_step)
    centers = []
    for center in (40.0, 300.0):
        header = {"00281050": {"vr": "DS", "Value": [center]}, "00281051": {"vr": "DS", "Value": [400.0]}}
        sample = Sample("x", np.zeros((1, 4, 4), np.int16), "zyx", headers=[header],
                        meta={"stored_rescale": [[1.0, 0.0]]})
        centers.append(folder.apply(sample, found=folder.tables(sample)).meta["window"]["center"])
    assert centers == [40.0, 300.0]


def test_a_slab_of_another_photometric_interpretation_gets_its_own_description():
    """The same rescale, but MONOCHROME1 in the second slab's header: its window is inverted, and says so."""
    from medflow.engine.task import apply_step
    from medflow.recipe.model import recipe_model
    from medflow.sample import Sample

    recipe = recipe_model().model_validate({
        "medflow": 1, "name": "t", "source": {"sample": "ct-phantom"}, "outputs": {"dir": "o"},
        "steps": [{"step": "window", "level": 0, "width": 100}, {"step": "layout", "layout": "NHWC"}]})
    folder = fold_module.Folder(list(recipe.steps), apply_step)
    stored = np.full((1, 2, 2), -50, np.int16)  # the bottom of the window: 0, or 1 once inverted
    records, values = [], []
    for photometric in ("MONOCHROME2", "MONOCHROME2", "MONOCHROME1"):
        sample = Sample("x", stored, "zyx", headers=[{"00280004": {"vr": "CS", "Value": [photometric]}}],
                        meta={"stored_rescale": [[1.0, 0.0]]})
        out = folder.apply(sample, found=folder.tables(sample))
        records.append(out.meta["window"]["inverted_monochrome1"])
        values.append(float(out.pixels.max()))
    assert records == [False, False, True] and values == [0.0, 0.0, 1.0]


def _sample_pipelines() -> list[Path]:
    """The recipes of pipelines/ that read the embedded sample (directly or through their base)."""
    return [p for p in sorted(PIPELINES.glob("*.yaml")) if getattr(load_recipe(p).recipe.source, "sample", None)]


@pytest.mark.parametrize("recipe", _sample_pipelines(), ids=lambda p: p.name)
def test_pipelines_on_the_sample_build_the_same_without_the_memo(tmp_path, monkeypatch, recipe):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    monkeypatch.setattr(stream_module, "SLAB_SLICES", 3)  # several slabs per series

    def run(name: str):
        over = [f"outputs.dir={tmp_path / name}", f"engine.cache_dir={tmp_path / ('cache-' + name)}",
                "engine.workers=1"]
        return build(load_recipe(recipe, overrides=over), show_progress=False)

    with_memo = run("memo")
    _without_memo(monkeypatch)
    without = run("plain")
    assert with_memo.exit_code == without.exit_code == 0
    assert _files(tmp_path / "memo") == _files(tmp_path / "plain")
    assert _stable(with_memo.manifest) == _stable(without.manifest)


# --- outputs.expect.value_range from the folded tables --------------------------------------------


def _range_series(tmp_path: Path) -> None:
    """4 slices: 0-1 soft tissue only (window 40/400 output <= 0.6), 2-3 also bone (output 1)."""
    rng = np.random.default_rng(7)
    for index in range(4):
        hu = rng.integers(-100, 100, size=(16, 16)) if index < 2 else rng.integers(0, 600, size=(16, 16))
        write_ct_slice(tmp_path / "data" / f"{index}.dcm", series=9, index=index, z=2.0 * index, size=16,
                       pixels=(hu + 1024).astype(np.int16))


def _expect(value_range: str) -> str:
    return f"  expect:\n    value_range: {value_range}\n"


def test_a_range_violated_by_one_slab_fails_naming_that_slabs_span(tmp_path, monkeypatch):
    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    _range_series(tmp_path)
    steps = "  - step: window\n    level: 40\n    width: 400\n  - step: layout\n    layout: NCHW\n"
    # the oracle: the plain path's output (no folding, no expectation), slices 2-3 (the second slab)
    plain = build(load_recipe(_recipe(tmp_path, "values", steps), overrides=["engine.fold_pointwise=false"]),
                  show_progress=False)
    (tensor,) = (tmp_path / "out-values").rglob("*.npy")
    values = np.load(tensor)
    second = values[2:4]
    assert plain.exit_code == 0 and float(values[:2].max()) <= 0.9 < float(second.max())
    wanted = f"values span [{second.min():.6g}, {second.max():.6g}], expected within [0, 0.9]"

    report = build(load_recipe(_recipe(tmp_path, "fails", steps, _expect("[0, 0.9]"))), show_progress=False)
    assert report.exit_code == 1
    (reason,) = [r for _, r in report.failed]
    assert wanted in reason
    monkeypatch.setattr(fold_module, "gathered_bounds", lambda *args: None)  # the scan of every slab, as before
    before = build(load_recipe(_recipe(tmp_path, "scans", steps, _expect("[0, 0.9]"))), show_progress=False)
    assert [r for _, r in before.failed] == [reason]


@pytest.mark.parametrize("stream", [True, False])
def test_a_range_the_tables_respect_skips_the_scan_and_passes(tmp_path, monkeypatch, stream):
    import medflow.engine.run as run_module
    import medflow.engine.task as task_module

    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    _range_series(tmp_path)
    seen = []
    original = task_module.check_expectation

    def recording(sample, expect, bounds=None):
        seen.append(bounds)
        return original(sample, expect, bounds)

    monkeypatch.setattr(stream_module, "check_expectation", recording)
    monkeypatch.setattr(run_module, "check_expectation", recording)
    over = [f"engine.stream={str(stream).lower()}"]
    report = build(load_recipe(_recipe(tmp_path, "ok", SEED, _expect("[0, 1]")), overrides=over), show_progress=False)
    assert report.exit_code == 0 and len(seen) == (2 if stream else 1)
    assert all(b is not None and 0 <= b[0] and b[1] <= 1 for b in seen)  # the NCHW output is the gather, viewed
    # a range narrower than the tables but wide enough for these values: scanned, and passes as before
    tight = build(load_recipe(_recipe(tmp_path, "tight", SEED, _expect("[0.05, 1]")), overrides=over),
                  show_progress=False)
    assert tight.exit_code == 0


@pytest.mark.parametrize("stream", ["true", "false"])
def test_the_folded_range_check_fails_exactly_as_the_plain_path(tmp_path, monkeypatch, stream):
    """Whole volume (stream false) and streamed in one slab: the message of the unfolded path."""
    _range_series(tmp_path)
    steps = "  - step: window\n    level: 40\n    width: 400\n  - step: layout\n    layout: NCHW\n"
    reasons = []
    for name, over in (("folded", [f"engine.stream={stream}"]), ("plain", ["engine.fold_pointwise=false"])):
        report = build(load_recipe(_recipe(tmp_path, name, steps, _expect("[0, 0.9]")), overrides=over),
                       show_progress=False)
        assert report.exit_code == 1
        reasons.append([r for _, r in report.failed])
    assert reasons[0] == reasons[1] and "values span [" in reasons[0][0]


def test_gathered_bounds_hold_only_for_views_of_the_gather():
    region = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    bounds = (np.float32(0), np.float32(119))
    assert fold_module.gathered_bounds(np.moveaxis(region, 1, -1), region, bounds) == bounds
    assert fold_module.gathered_bounds(region[1, :, ::2], region, bounds) == bounds
    assert fold_module.gathered_bounds(region.copy(), region, bounds) is None  # new values may be anything
    assert fold_module.gathered_bounds(region.view(np.int32), region, bounds) is None
    assert fold_module.gathered_bounds(region.view(np.uint8)[..., 1:5].view(np.float32), region, bounds) is None
    assert fold_module.gathered_bounds(region, region[1], bounds) is None  # reaches outside the region
    assert fold_module.gathered_bounds(region, region, None) is None
