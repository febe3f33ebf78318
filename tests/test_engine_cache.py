"""Cache behaviours of a build, named as specs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medflow.engine.build import build, prepare
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series

RECIPE = """\
medflow: 1
name: engine-test
source:
  dicom: data
steps:
  - step: window
    level: 40
    width: 400
  - step: layout
    layout: NCHW
    dtype: float32
outputs:
  dir: out
  writers:
    - kind: npy
engine:
  workers: 1
  cache_stored_values: true  # these tests are about checkpoints: every item's stored values are one
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for series in range(3):
        write_ct_series(tmp_path / "data", series, n_slices=3)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return tmp_path


def _build(project: Path, *overrides: str, workers=None):
    loaded = load_recipe(project / "recipe.yaml", overrides=list(overrides))
    return build(loaded, workers=workers, show_progress=False)


def _outputs(project: Path, out: str = "out") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((project / out / "tensors").glob("*.npy"))}


def _stable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "run"}


def test_first_build_writes_one_tensor_per_series_and_a_manifest(project):
    report = _build(project)
    assert report.exit_code == 0 and report.ok == 3 and report.computed == 3
    tensors = sorted((project / "out" / "tensors").glob("*.npy"))
    assert len(tensors) == 3
    array = np.load(tensors[0])
    assert array.shape == (3, 1, 16, 16) and array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0
    manifest = json.loads((project / "out" / "manifest.json").read_text())
    item = manifest["items"][0]
    assert [s["name"] for s in item["steps"]] == ["dicom_read", "window", "layout"]
    assert item["steps"][1]["params"]["width"] == 400
    assert item["status"] == "ok" and len(item["files"]) == 3
    assert manifest["environment"]["libraries"]["pydicom"]


def test_unchanged_recipe_recomputes_nothing(project):
    first = _build(project)
    before = _outputs(project)
    second = _build(project)
    assert second.computed == 0 and second.from_cache == 3
    assert _outputs(project) == before
    assert _stable(second.manifest) == _stable(first.manifest)


def test_param_change_recomputes_from_that_step(project):
    _build(project)
    report = _build(project, "steps[1].dtype=float16")
    computed = report.manifest["run"]["computed"]
    assert len(computed) == 3
    # the read is checkpointed: only the steps after it run again
    assert all(steps == ["window", "layout"] for steps in computed.values())
    array = np.load(next((project / "out" / "tensors").glob("*.npy")))
    assert array.dtype == np.float16


def test_plan_says_which_parameter_changed(project):
    _build(project)
    loaded = load_recipe(project / "recipe.yaml", overrides=["steps[0].width=350"])
    plans = prepare(loaded).plans
    assert all(not p.up_to_date and p.start == 1 for p in plans)
    assert "changed parameter of step 1 'window': width 400.0 -> 350.0" in plans[0].reasons[0]


def test_changed_input_recomputes_only_its_item(project):
    first = _build(project)
    write_ct_series(project / "data", 1, n_slices=3, pixels=np.full((16, 16), 1100, np.int16))
    report = _build(project)
    assert report.computed == 1 and report.from_cache == 2
    changed = [i for i in report.manifest["items"] if i["fingerprint"] not in
               {j["fingerprint"] for j in first.manifest["items"]}]
    assert list(report.manifest["run"]["computed"]) == [changed[0]["id"]]
    assert report.manifest["run"]["computed"][changed[0]["id"]][0] == "dicom_read"


def test_corrupt_cache_entry_is_recomputed(project):
    _build(project)
    before = _outputs(project)
    cache_objects = list((project / ".medflow" / "cache" / "objects").rglob("*.mfc"))
    assert len(cache_objects) >= 3  # every item's stored values
    for path in cache_objects:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    for path in (project / "out" / "tensors").glob("*.npy"):
        path.unlink()
    report = _build(project)
    assert report.exit_code == 0 and report.computed == 3
    assert all(steps[0] == "dicom_read" for steps in report.manifest["run"]["computed"].values())
    assert _outputs(project) == before


def test_missing_output_is_rewritten_from_the_cache(project):
    _build(project)
    before = _outputs(project)
    victim = sorted((project / "out" / "tensors").glob("*.npy"))[0]
    victim.unlink()
    loaded = load_recipe(project / "recipe.yaml")
    reasons = [p.reasons for p in prepare(loaded).plans if not p.up_to_date]
    assert len(reasons) == 1 and "missing or changed output" in reasons[0][0]
    report = _build(project)
    # only that item, and from cached values: the DICOM files are not decoded again
    (computed,) = report.manifest["run"]["computed"].items()
    assert computed[0] == victim.stem and "dicom_read" not in computed[1]
    assert _outputs(project) == before


def test_same_bytes_and_manifest_for_one_and_two_workers(project):
    one = _build(project, workers=1)
    out_one = _outputs(project)
    import shutil

    shutil.rmtree(project / "out")
    shutil.rmtree(project / ".medflow")
    two = _build(project, workers=2)
    assert _outputs(project) == out_one
    assert _stable(two.manifest) == _stable(one.manifest)
    assert two.manifest["run"]["workers"] == 2


def test_corrupt_file_fails_its_own_item_and_the_rest_builds(project):
    bad = project / "data" / "s2" / "slice001.dcm"
    bad.write_bytes(bad.read_bytes()[:700])  # truncated inside the pixel data / header
    report = _build(project)
    assert report.exit_code == 1
    assert report.ok == 2
    assert len(report.failed) == 1
    assert "slice001.dcm" in report.failed[0][0] + report.failed[0][1]
    assert len(list((project / "out" / "tensors").glob("*.npy"))) == 2


def test_shards_group_items_and_are_deterministic(project):
    with_shards = RECIPE.replace("    - kind: npy\n", "    - kind: npy\n    - kind: npz_shards\n      items_per_shard: 2\n")
    (project / "recipe.yaml").write_text(with_shards)
    first = _build(project)
    shards = sorted((project / "out" / "shards").glob("*.npz"))
    assert [p.name for p in shards] == ["shard-00000.npz", "shard-00001.npz"]
    with np.load(shards[0]) as archive:
        assert len(archive.files) == 2
    bytes_before = [p.read_bytes() for p in shards]
    import shutil

    shutil.rmtree(project / "out")
    shutil.rmtree(project / ".medflow")
    _build(project)
    assert [p.read_bytes() for p in sorted((project / "out" / "shards").glob("*.npz"))] == bytes_before
    assert first.manifest["dataset_outputs"][0]["path"] == "shards/shard-00000.npz"


def test_outputs_expect_passes_matching_items(project):
    (project / "recipe.yaml").write_text(RECIPE.replace("  writers:", "  expect:\n    layout: NCHW\n    dtype: float32\n"
                                                        "    value_range: [0, 1]\n    channels: 1\n  writers:"))
    assert _build(project).exit_code == 0


def test_outputs_expect_fails_items_that_differ_and_names_how(project):
    (project / "recipe.yaml").write_text(RECIPE.replace("  writers:", "  expect:\n    layout: NHWC\n    dtype: uint8\n"
                                                        "    value_range: [0, 0.5]\n  writers:"))
    report = _build(project)
    assert report.exit_code == 1 and report.ok == 0
    reason = report.failed[0][1]
    assert "step 'outputs.expect' failed" in reason
    assert "layout is NCHW, expected NHWC" in reason and "dtype is float32, expected uint8" in reason
    assert "expected within [0, 0.5]" in reason
    assert not list((project / "out" / "tensors").glob("*.npy"))


def test_outputs_get_the_usual_file_mode_and_the_cache_stays_private(project):
    import os
    import stat

    _build(project)
    umask = os.umask(0)
    os.umask(umask)
    for path in list((project / "out").rglob("*.npy")) + [project / "out" / "manifest.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    cache = project / ".medflow" / "cache"
    private = [*cache.joinpath("objects").rglob("*.mfc"), *cache.joinpath("records").rglob("*.json"),
               cache / "fingerprints.json"]
    assert len(private) > 3
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path  # original headers, paths: owner only


def test_plan_holds_no_chain_of_an_up_to_date_item(project):
    """`plan`, `--dry-run` and `preview` only count up-to-date items: their plans let go of the
    chain and the files' digests as they are made; items to build keep theirs (their reasons)."""
    _build(project)
    prepared = prepare(load_recipe(project / "recipe.yaml"), record=False)
    assert len(prepared.plans) == 3 and all(p.up_to_date and p.links == [] for p in prepared.plans)
    assert prepared.file_hashes == {}
    changed = prepare(load_recipe(project / "recipe.yaml", overrides=["steps[0].width=350"]), record=False)
    assert all(not p.up_to_date and len(p.links) == 3 for p in changed.plans)
    assert set(changed.file_hashes) == {p.item.item_id for p in changed.plans}
