"""to_torch: items or slices (with 2.5-D context), id, metadata, label None without labels, split filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medflow.dataset as mds
from medflow.engine.build import build
from medflow.recipe.loader import load_recipe
from medflow.torch_dataset import take_slices

torch = pytest.importorskip("torch", reason="torch is not installed (optional)")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("torch")
    (tmp / "r.yaml").write_text(
        "medflow: 1\nname: t\nsource: {sample: ct-phantom}\n"
        "steps: [{step: window, level: -600, width: 1500}, {step: resize, size: [32, 32]}, "
        "{step: layout, layout: NCHW}]\nsplits: {ratios: {train: 0.5, test: 0.5}}\n"
        "outputs: {dir: out}\nengine: {workers: 1}\n")
    assert build(load_recipe(tmp / "r.yaml"), show_progress=False).exit_code == 0
    return tmp / "out"


def test_slice_unit_gives_one_entry_per_slice(built):
    ds = mds.open(built)
    tds = ds.to_torch(unit="slice")
    assert len(tds) == sum(item.array.shape[0] for item in ds)
    entry = tds[3]
    assert entry["image"].shape == (1, 32, 32) and entry["label"] is None
    assert entry["meta"]["slice"] == 3 and entry["id"] == ds[0].id and entry["meta"]["spacing"][1] > 0
    np.testing.assert_array_equal(entry["image"].numpy(), ds[0].array[3])


def test_context_stacks_neighbours_on_the_channel_axis_and_repeats_edges(built):
    ds = mds.open(built)
    tds = ds.to_torch(unit="slice", context=2)
    first = tds[0]["image"].numpy()
    array = np.asarray(ds[0].array)
    assert first.shape == (5, 32, 32)
    np.testing.assert_array_equal(first, np.concatenate([array[0], array[0], array[0], array[1], array[2]]))


def test_take_slices_without_channels_stacks_on_a_new_axis():
    volume = np.arange(4 * 2 * 2).reshape(4, 2, 2)
    out = take_slices(volume, "zyx", 3, context=1)
    assert out.shape == (3, 2, 2) and (out[2] == volume[3]).all() and (out[0] == volume[2]).all()


def test_split_filter_and_collate(built):
    from torch.utils.data import DataLoader

    from medflow.torch_dataset import collate

    ds = mds.open(built)
    train = ds.to_torch(unit="slice", split="train")
    assert {train[i]["meta"]["split"] for i in range(len(train))} == {"train"}
    assert len(train) + len(ds.to_torch(unit="slice", split="test")) == len(ds.to_torch(unit="slice"))
    batch = next(iter(DataLoader(train, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["label"] == [None] * 4 and len(batch["id"]) == 4


def test_bad_unit_or_context_is_refused(built):
    with pytest.raises(ValueError, match="unit"):
        mds.open(built).to_torch(unit="volume")
    with pytest.raises(ValueError, match="context"):
        mds.open(built).to_torch(context=1)
