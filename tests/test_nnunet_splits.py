"""nnU-Net writer with splits: test cases in imagesTs, the split joining only the item's output key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medflow.engine.build import build
from medflow.engine.prepare import prepare
from medflow.recipe.loader import load_recipe

pytestmark = pytest.mark.slow

SOURCE = ("source:\n  sample: ct-phantom\n  labels: {from: seg, segments: [liver, kidney, lung, heart, aorta, vertebra],"
          " overlap: error}\n")


def _recipe(tmp_path: Path, seed: int | None, test_split: str = "test") -> Path:
    recipe = tmp_path / "r.yaml"
    splits = (f"splits: {{ratios: {{train: 0.5, {test_split}: 0.5}}, group_by: study, seed: {seed}}}\n"
              if seed is not None else "")
    recipe.write_text(
        f"medflow: 1\nname: n\n{SOURCE}steps: [{{step: modality_lut}}]\n{splits}"
        "outputs: {dir: out, writers: [{kind: nnunet, folder: ., dtype: int16, channel_names: [CT]}]}\n"
        "engine: {workers: 1}\n")
    return recipe


def _splits_for(tmp_path: Path, seed: int) -> dict[str, str]:
    prepared = prepare(load_recipe(_recipe(tmp_path, seed)), record=False)
    return prepared.facts.splits["items"]


def _layout(out: Path) -> dict[str, set[str]]:
    return {folder: {p.name for p in (out / folder).iterdir()} if (out / folder).is_dir() else set()
            for folder in ("imagesTr", "labelsTr", "imagesTs")}


def _check(out: Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    split_of = manifest["splits"]["items"]
    train = {i for i, s in split_of.items() if s != "test"}
    test = {i for i, s in split_of.items() if s == "test"}
    assert train and test
    assert _layout(out) == {"imagesTr": {f"{i}_0000.nii.gz" for i in train},
                            "labelsTr": {f"{i}.nii.gz" for i in train},
                            "imagesTs": {f"{i}_0000.nii.gz" for i in test}}
    spec = json.loads((out / "dataset.json").read_text())
    assert spec["numTraining"] == len(train)
    assert spec["labels"]["vertebra"] == 6
    for entry in manifest["items"]:
        folder = "imagesTs" if entry["id"] in test else "imagesTr"
        assert {o["path"].split("/")[0] for o in entry["outputs"]} <= {folder, "labelsTr"}
    return split_of


def test_test_split_goes_to_images_ts_and_a_new_seed_rewrites_exactly_the_moved_items(tmp_path):
    seeds = iter(range(20))
    first_seed = next(seeds)
    first = _splits_for(tmp_path, first_seed)
    second_seed = next(s for s in seeds if _splits_for(tmp_path, s) != first)

    assert build(load_recipe(_recipe(tmp_path, first_seed)), show_progress=False).exit_code == 0
    assert _check(tmp_path / "out") == first

    # the new seed moves some items: the plan rebuilds exactly those, the others are up to date
    prepared = prepare(load_recipe(_recipe(tmp_path, second_seed)), record=False)
    second = prepared.facts.splits["items"]
    moved = {i for i in first if (first[i] == "test") != (second[i] == "test")}
    assert moved
    assert {p.item.item_id for p in prepared.plans if not p.up_to_date} == moved
    # the step chain is untouched: the moved items resume from their last checkpoint (nothing recomputed)
    assert all(p.start == len(p.links) for p in prepared.plans)

    stat_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.nii.gz")}
    assert build(load_recipe(_recipe(tmp_path, second_seed)), show_progress=False).exit_code == 0
    assert _check(tmp_path / "out") == second
    stat_after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.nii.gz")}
    rewritten = {name.split("_0000")[0].removesuffix(".nii.gz") for name in stat_after
                 if stat_before.get(name) != stat_after[name]}
    assert rewritten == moved

    # and back: up to date again only after a rebuild, which restores the first layout
    assert build(load_recipe(_recipe(tmp_path, first_seed)), show_progress=False).exit_code == 0
    assert _check(tmp_path / "out") == first


def test_split_joins_the_output_key_of_test_cases_only(tmp_path):
    without = prepare(load_recipe(_recipe(tmp_path, None)), record=False)
    with_splits = prepare(load_recipe(_recipe(tmp_path, 3)), record=False)
    split_of = with_splits.facts.splits["items"]
    for a, b in zip(without.plans, with_splits.plans, strict=True):
        assert [link.key for link in a.links] == [link.key for link in b.links]  # no step key changes
        assert (a.output_key != b.output_key) == (split_of[a.item.item_id] == "test")
    # plan_all takes the output key from one template per split: each is the key made item by item
    from medflow.engine.keys import output_key
    from medflow.engine.plan import writer_specs
    from medflow.engine.prepare import item_writers

    for prepared in (without, with_splits):
        for plan in prepared.plans:
            specs = writer_specs(item_writers(prepared, plan.item.item_id))
            assert plan.output_key == output_key(plan.links[-1].key, specs)


def test_test_split_param_names_the_split(tmp_path):
    recipe = _recipe(tmp_path, 3, test_split="holdout")
    recipe.write_text(recipe.read_text().replace("channel_names: [CT]", "channel_names: [CT], test_split: holdout"))
    assert build(load_recipe(recipe), show_progress=False).exit_code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    held = {i for i, s in manifest["splits"]["items"].items() if s == "holdout"}
    assert held and _layout(tmp_path / "out")["imagesTs"] == {f"{i}_0000.nii.gz" for i in held}
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["numTraining"] == 4 - len(held)
