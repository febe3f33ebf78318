"""A rebuild reads the previous manifest's entries one by one, only those it asks for.

The entries are located by their line in the file (:func:`medflow.engine.manifest.write_manifest`
writes one item a line) and parsed when asked for; these tests pin that what comes back is what
plain ``json`` reads of the same file, for any ids and values, and that damage stays with its
entry or, in the manifest's other lines, makes the whole manifest unreadable (as before).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medflow.engine import manifest as manifest_module
from medflow.engine.build import build, prepare
from medflow.engine.manifest import MANIFEST_NAME, read_previous, write_manifest
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series

TEXT = st.text(alphabet=st.sampled_from(list(string.ascii_letters + '/._-^ "\\\n\t{}[]:,Éé李') + ["\x00"]), max_size=12)
VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=12,
)
# An entry as manifest_item makes it (its keys), with arbitrary values; "id" is the item's own.
ENTRY = st.fixed_dictionaries({
    "error": st.none() | TEXT, "files": st.lists(st.lists(TEXT, min_size=2, max_size=2), max_size=3),
    "fingerprint": TEXT, "kind": st.sampled_from(["series", "instance"]), "meta": VALUE, "outputs": VALUE,
    "status": TEXT, "steps": VALUE,
})


def _manifest(entries: list[dict], **head) -> dict:
    return {"manifest_version": 2, "items": entries, "run": {"workers": 1}, "accounting": {"withheld": []}, **head}


@given(ids=st.lists(TEXT, unique=True, max_size=6), bodies=st.lists(ENTRY, min_size=6, max_size=6))
@settings(max_examples=200, deadline=None)
def test_every_entry_reads_back_as_json_reads_it(ids, bodies, tmp_path_factory):
    folder = tmp_path_factory.mktemp("m")
    entries = [{**body, "id": item_id} for item_id, body in zip(ids, bodies, strict=False)]
    write_manifest(folder, _manifest(entries))
    whole = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    with read_previous(folder) as previous:
        assert isinstance(previous.entries, manifest_module.PreviousEntries)  # located, not parsed whole
        assert sorted(previous.entries) == sorted(ids)
        assert {item_id: previous.entries[item_id] for item_id in ids} == {e["id"]: e for e in whole["items"]}
        assert previous.head == {**whole, "items": []}
        assert previous.entries.get("no such id") is None


def test_a_damaged_entry_is_absent_and_the_others_are_read(tmp_path):
    entries = [{"id": f"item-{i}", "status": "ok", "meta": {"n": i}} for i in range(3)]
    write_manifest(tmp_path, _manifest(entries))
    path = tmp_path / MANIFEST_NAME
    path.write_text(path.read_text().replace('"n": 1}', '"n": 1'))  # the line of item-1 no longer parses
    with read_previous(tmp_path) as previous:
        assert previous.entries.get("item-1") is None
        assert previous.entries["item-0"]["meta"] == {"n": 0}
        assert previous.entries["item-2"]["meta"] == {"n": 2}


@pytest.mark.parametrize("damage", ["truncated in the items", "truncated in the head", "not a manifest version"])
def test_a_damaged_manifest_is_no_previous_build(tmp_path, damage):
    write_manifest(tmp_path, _manifest([{"id": f"item-{i}", "status": "ok"} for i in range(3)]))
    path = tmp_path / MANIFEST_NAME
    text = path.read_text()
    if damage == "truncated in the items":
        text = text[: text.index('"item-1"')]
    elif damage == "truncated in the head":
        text = text[: text.index('"run"')]
    else:
        text = text.replace('"manifest_version": 2', '"manifest_version": 99')
    path.write_text(text)
    assert read_previous(tmp_path) is None


@pytest.mark.parametrize("indent", [None, 1, 4])
def test_a_manifest_in_another_layout_is_parsed_whole(tmp_path, indent):
    """An older medflow's manifest (or one reformatted by hand) is still a previous build."""
    entries = [{"id": f"item-{i}", "status": "ok", "meta": {"n": i}} for i in range(3)]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(_manifest(entries), indent=indent))
    with read_previous(tmp_path) as previous:
        assert {item_id: previous.entries[item_id] for item_id in previous.entries} == {e["id"]: e for e in entries}
        assert previous.head["run"] == {"workers": 1} and previous.head["items"] == []


def test_no_manifest_is_no_previous_build(tmp_path):
    assert read_previous(tmp_path) is None


def _recipe(tmp_path: Path, source: Path, level: int) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"medflow: 1\nname: previous\nsource: {{dicom: '{source}'}}\n"
                    f"steps: [{{step: window, level: {level}, width: 400}}]\n"
                    "outputs: {dir: out, writers: [{kind: npy}]}\nengine: {workers: 1}\n")
    return path


def test_a_rebuild_reads_the_entries_of_the_items_it_builds_again_only(tmp_path, monkeypatch):
    source = tmp_path / "src"
    for series in range(3):
        write_ct_series(source, series, n_slices=2)
    build(load_recipe(_recipe(tmp_path, source, 40)), show_progress=False)
    asked: list[str] = []
    read = manifest_module.PreviousEntries.__getitem__
    monkeypatch.setattr(manifest_module.PreviousEntries, "__getitem__",
                        lambda self, item_id: asked.append(item_id) or read(self, item_id))

    unchanged = prepare(load_recipe(_recipe(tmp_path, source, 40)), record=False)
    assert [p.reasons for p in unchanged.plans] == [[], [], []] and asked == []

    changed = prepare(load_recipe(_recipe(tmp_path, source, 50)), record=False)
    assert sorted(asked) == sorted(p.item.item_id for p in changed.plans)
    assert all(p.reasons == ["changed parameter of step 1 'window': level 40.0 -> 50.0"] for p in changed.plans), \
        [p.reasons for p in changed.plans]
