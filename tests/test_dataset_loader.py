"""medflow.dataset.open: items by position and id, memory-mapped arrays, verification, torch adapter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medflow.dataset as mds
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The quickstart recipe built once (npy + png writers) into a module tmp folder."""
    root = tmp_path_factory.mktemp("built")
    loaded = load_recipe(
        PIPELINES / "quickstart.yaml",
        overrides=[
            f"outputs.dir={root / 'out'}",
            f"engine.cache_dir={root / 'cache'}",
            "engine.workers=1",
            'outputs.writers=[{"kind": "npy"}, {"kind": "png"}]',
        ],
    )
    report = build(loaded, show_progress=False)
    assert report.exit_code == 0 and report.ok >= 3
    return root / "out"


@pytest.fixture
def copy(built, tmp_path) -> Path:
    """A private copy of the build, safe to damage."""
    target = tmp_path / "ds"
    shutil.copytree(built, target)
    return target


def test_items_by_position_and_by_id_match_the_files(built):
    manifest = json.loads((built / "manifest.json").read_text())
    ids = [e["id"] for e in manifest["items"] if e["status"] == "ok"]
    ds = mds.open(built)
    assert len(ds) == len(ids) and ds.ids == ids
    assert [item.id for item in ds] == ids
    for index, item_id in enumerate(ids):
        item = ds[index]
        assert item is ds[item_id]
        entry = next(e for e in manifest["items"] if e["id"] == item_id)
        npy = next(o["path"] for o in entry["outputs"] if o["path"].endswith(".npy"))
        assert item.meta == entry["meta"] and item.outputs == entry["outputs"]
        assert isinstance(item.array, np.memmap) and not item.array.flags.writeable
        np.testing.assert_array_equal(item.array, np.load(built / npy))
        assert item.array.dtype == np.float32 and item.array.ndim == 4  # quickstart: NCHW float32
        assert any(o["path"].endswith(".png") for o in item.outputs)
    assert ds[-1].id == ids[-1]
    assert ds.recipe["name"] == "quickstart-ct-lung"


def test_unknown_id_and_bad_index_type(built):
    ds = mds.open(built)
    with pytest.raises(KeyError, match="no item 'nope'"):
        ds["nope"]
    with pytest.raises(TypeError):
        ds[1.5]


def test_verify_passes_on_an_intact_build(built):
    mds.open(built, verify=True)


def test_verify_names_a_changed_file(copy):
    ds = mds.open(copy)
    target = ds[0].npy_path
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    mds.open(copy)  # without verify the damage is not looked for
    with pytest.raises(mds.DatasetError, match="blake3") as info:
        mds.open(copy, verify=True)
    assert str(target) in str(info.value)


def test_missing_file_is_named(copy):
    ds = mds.open(copy)
    target = ds[1].npy_path
    target.unlink()
    with pytest.raises(mds.DatasetError, match="missing") as info:
        _ = ds[1].array
    assert str(target) in str(info.value)
    with pytest.raises(mds.DatasetError, match="missing"):
        mds.open(copy, verify=True)


def test_truncated_npy_is_named(copy):
    ds = mds.open(copy)
    target = ds[0].npy_path
    target.write_bytes(target.read_bytes()[:40])
    with pytest.raises(mds.DatasetError, match="npy") as info:
        _ = ds[0].array
    assert str(target) in str(info.value)


def test_no_manifest_and_bad_manifest(tmp_path):
    with pytest.raises(mds.DatasetError, match="no manifest") as info:
        mds.open(tmp_path)
    assert str(tmp_path / "manifest.json") in str(info.value)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(mds.DatasetError, match="not valid JSON"):
        mds.open(tmp_path)


def test_failed_items_are_listed_apart(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["items"][0]["status"] = "failed"
    manifest["items"][0]["error"] = "boom"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    ds = mds.open(copy)
    assert len(ds) == len(manifest["items"]) - 1
    assert ds.not_ok == [{"id": manifest["items"][0]["id"], "status": "failed", "error": "boom"}]


def test_item_without_npy_output_says_so(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    for entry in manifest["items"]:
        entry["outputs"] = [o for o in entry["outputs"] if not o["path"].endswith(".npy")]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(mds.DatasetError, match="no .npy output"):
        _ = mds.open(copy)[0].array


def test_importing_the_loader_does_not_import_torch():
    code = "import sys, medflow.dataset; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_to_torch_without_torch_says_how_to_install(built, monkeypatch):
    from medflow import torch_dataset

    torch_dataset.torch_dataset_class.cache_clear()
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    try:
        with pytest.raises(ImportError, match="pip install torch"):
            mds.open(built).to_torch()
    finally:
        torch_dataset.torch_dataset_class.cache_clear()


def test_to_torch_gives_tensors(built):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional)")
    ds = mds.open(built)
    tds = ds.to_torch()
    assert isinstance(tds, torch.utils.data.Dataset) and len(tds) == len(ds)
    entry = tds[0]
    assert set(entry) == {"image", "label", "meta", "id"} and entry["id"] == ds[0].id and entry["label"] is None
    assert isinstance(entry["image"], torch.Tensor)
    np.testing.assert_array_equal(entry["image"].numpy(), np.asarray(ds[0].array))
    summed = ds.to_torch(transform=lambda a: a.sum())[0]["image"]
    assert summed == pytest.approx(float(np.asarray(ds[0].array).sum()))
