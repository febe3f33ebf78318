"""Reproducible patient-level splits: computed from the plan, recorded, never joining a cache key."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import medflow.dataset as mds
from medflow.engine.build import build
from medflow.engine.prepare import prepare
from medflow.errors import UsageError
from medflow.recipe.loader import load_recipe
from medflow.splits import SplitsSpec, Subject, assign_splits, check_leakage, compute_splits


def _subjects(groups: dict[str, str]) -> dict[str, Subject]:
    return {i: Subject({"patient": g, "study": "", "series": "", "accession": ""}, {"patient": g}) for i, g in
            groups.items()}


def _items(n_patients: int, per_patient: int = 3) -> dict[str, str]:
    return {f"it-{p:03d}-{k}": f"P{p:03d}" for p in range(n_patients) for k in range(per_patient)}


def test_no_patient_is_in_two_splits_and_ratios_are_kept():
    items = _items(50)
    record = compute_splits(SplitsSpec(ratios={"train": 0.7, "val": 0.1, "test": 0.2}), _subjects(items), {}, {})
    assert check_leakage((i, items[i], s) for i, s in record["items"].items()) == []
    assert {s: c["groups"] for s, c in record["counts"].items()} == {"train": 35, "val": 5, "test": 10}
    assert sum(c["items"] for c in record["counts"].values()) == 150


def test_same_seed_same_splits_other_seed_other_splits():
    items = _items(40)
    spec = SplitsSpec(ratios={"train": 0.5, "test": 0.5}, seed=7)
    first = compute_splits(spec, _subjects(items), {}, {})["items"]
    again = compute_splits(spec, _subjects(dict(reversed(list(items.items())))), {}, {})["items"]
    other = compute_splits(spec.model_copy(update={"seed": 8}), _subjects(items), {}, {})["items"]
    assert first == again and first != other


def test_k_folds_are_balanced_and_grouped():
    items = _items(23, per_patient=2)
    record = compute_splits(SplitsSpec(folds=5), _subjects(items), {}, {})
    groups = Counter(record["counts"][f"fold{k}"]["groups"] for k in range(5))
    assert set(groups) <= {4, 5} and check_leakage((i, items[i], s) for i, s in record["items"].items()) == []


def test_stratified_splits_balance_the_column():
    items = _items(40, per_patient=1)
    table = {i: {"label": "sick" if int(items[i][1:]) % 4 == 0 else "well"} for i in items}  # 10 sick, 30 well
    spec = SplitsSpec(ratios={"train": 0.5, "test": 0.5}, stratify="label", table="t.csv")
    record = compute_splits(spec, _subjects(items), table, {})
    sick = Counter(record["items"][i] for i in items if table[i]["label"] == "sick")
    assert sick == {"train": 5, "test": 5}


def test_assign_splits_is_a_pure_function_of_groups_and_seed():
    spec = SplitsSpec(ratios={"a": 0.5, "b": 0.5})
    groups = {"x1": "G1", "x2": "G1", "x3": "G2"}
    assert assign_splits(groups, {}, spec)["G1"] == assign_splits({"y": "G1", "z": "G2"}, {}, spec)["G1"]


def test_leakage_check_names_the_items():
    leaks = check_leakage([("a", "P1", "train"), ("b", "P1", "test"), ("c", "P2", "train")])
    assert [(leak.items, leak.splits) for leak in leaks] == [(("a", "b"), ("test", "train"))]


@pytest.mark.parametrize("bad", [{}, {"ratios": {"a": 0.5}}, {"ratios": {"a": 0.5, "b": 0.5}, "folds": 3},
                                 {"column": "split"}, {"ratios": {"a": 1.0}, "stratify": "label"}])
def test_invalid_splits_sections_are_refused(bad):
    with pytest.raises(ValueError):
        SplitsSpec(**bad)


def _recipe(tmp_path: Path, splits: str, writers: str = "[{kind: npy}]") -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "medflow: 1\nname: s\nsource: {sample: ct-phantom}\n"
        "steps: [{step: window, level: -600, width: 1500}]\n"
        f"{splits}\noutputs: {{dir: out, writers: {writers}}}\nengine: {{workers: 1}}\n"
    )
    return recipe


def test_build_records_splits_and_ds_split_filters(tmp_path):
    loaded = load_recipe(_recipe(tmp_path, "splits: {ratios: {train: 0.5, test: 0.5}}"))
    report = build(loaded, show_progress=False)
    assert report.exit_code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    splits = manifest["splits"]
    assert sorted(splits["items"]) == sorted(i["id"] for i in manifest["items"])
    assert {c["groups"] for c in splits["counts"].values()} == {1}  # the phantom's 2 patients, one per split
    ds = mds.open(tmp_path / "out")
    train, test = ds.split("train"), ds.split("test")
    assert len(train) + len(test) == len(ds) and not set(train.ids) & set(test.ids)
    assert all(item.split == "train" for item in train)
    with pytest.raises(mds.DatasetError, match="no split 'nope'"):
        ds.split("nope")


def test_splits_join_no_cache_key(tmp_path):
    with_splits = prepare(load_recipe(_recipe(tmp_path, "splits: {folds: 2}")), record=False)
    without = prepare(load_recipe(_recipe(tmp_path, "")), record=False)
    assert [p.output_key for p in with_splits.plans] == [p.output_key for p in without.plans]


def test_a_user_split_that_leaks_stops_before_any_pixel(tmp_path):
    # patient MRN00012345 of the phantom has several series; split them by study
    (tmp_path / "t.csv").write_text(
        "AccessionNumber,split\nACC240312001,train\nACC240917007,test\nACC240506113,test\n")
    loaded = load_recipe(_recipe(tmp_path, "splits: {table: t.csv, column: split}"))
    with pytest.raises(UsageError, match="leakage"):
        build(loaded, show_progress=False)
    assert not (tmp_path / "out" / "tensors").exists()


def test_a_user_split_without_leakage_is_kept(tmp_path):
    (tmp_path / "t.csv").write_text("PatientID,split\nMRN00012345,train\nPID-0098765,test\n")
    loaded = load_recipe(_recipe(tmp_path, "splits: {table: t.csv, column: split}"))
    assert build(loaded, show_progress=False).exit_code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["splits"]["leakage"] == [] and Counter(manifest["splits"]["items"].values()) == {"train": 3,
                                                                                                      "test": 1}
