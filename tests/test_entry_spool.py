"""A build keeps its manifest entries on disk as it makes them, and writes the manifest from them.

The entries are the part of a build's record that grows with the dataset. These tests pin that
the spool reads back what was put (the last put of an id wins, plan order kept), that the
manifest written from it is byte for byte the manifest written from a list, that a build's
report reads the same entries as its ``manifest.json``, that nothing of the spool is left in
the output folder, and that a de-identifying build's report holds only redacted entries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medflow import text_spool
from medflow.engine.build import build, prepare
from medflow.engine.manifest import MANIFEST_NAME, encode_entry, manifest_text, write_manifest
from medflow.engine.spool import EntrySpool, SpooledText
from medflow.recipe.loader import load_recipe
from tests.dicom_factory import write_ct_series
from tests.test_previous_manifest import ENTRY, TEXT


@pytest.fixture(autouse=True, params=["in memory", "in a file"])
def where_spools_keep(request, monkeypatch) -> str:
    """Every test twice: texts held in memory (a small build), and moved to the spool's file."""
    if request.param == "in a file":
        monkeypatch.setattr(text_spool, "MEMORY_BYTES", 0)
    return request.param


def test_entries_read_back_in_the_given_order_and_the_last_put_wins(tmp_path):
    spool = EntrySpool(tmp_path, ["b", "a", "c"])
    for item_id in ("a", "b", "c"):
        spool.put({"id": item_id, "status": "ok", "meta": {"n": item_id}})
    spool.put({"id": "a", "status": "duplicate", "meta": {}})
    assert [e["id"] for e in spool] == ["b", "a", "c"]
    assert spool[1] == {"id": "a", "status": "duplicate", "meta": {}}
    assert spool[-1]["id"] == "c" and [e["id"] for e in spool[:2]] == ["b", "a"]
    assert len(spool) == 3 and spool.has("a") and not spool.has("d")
    assert spool == list(spool) and spool != [{"id": "b"}]
    assert list(spool.texts()) == [encode_entry(e) for e in spool]


def test_an_id_without_an_entry_cannot_be_read(tmp_path):
    spool = EntrySpool(tmp_path, ["a", "b"])
    spool.put({"id": "a"})
    with pytest.raises(KeyError):
        list(spool)


def test_the_spool_leaves_no_file_in_its_folder_and_is_gone_once_closed(tmp_path, where_spools_keep):
    entries = EntrySpool(tmp_path, ["a"])
    entries.put({"id": "a", "files": [["DOE^JOHN/slice1.dcm", "0" * 64]]})
    left = [p.name for p in tmp_path.iterdir()]
    # Linux: no name at all (O_TMPFILE); elsewhere a medflow temp name, owner-only
    assert all(name.startswith(".medflow-tmp-") for name in left), left
    for name in left:
        assert os.stat(tmp_path / name).st_mode & 0o077 == 0
    assert (entries._texts._file is not None) is (where_spools_keep == "in a file")
    entries.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        entries.text("a")


def test_a_spool_moves_its_texts_to_its_file_once_past_its_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(text_spool, "MEMORY_BYTES", 10)
    texts = text_spool.TextSpool(tmp_path, "test")
    spans = [texts.put(data) for data in (b"abcd", b"efgh", b"", b"ijklmnop", b"q")]
    assert texts._file is not None and texts._memory is None  # 4 + 4 + 0 held, then 8 more: moved
    assert [texts.get(span) for span in spans] == [b"abcd", b"efgh", b"", b"ijklmnop", b"q"]
    texts.close()
    with pytest.raises(ValueError):
        texts.get(spans[0])


@given(ids=st.lists(TEXT, unique=True, max_size=5), bodies=st.lists(ENTRY, min_size=5, max_size=5))
@settings(max_examples=100, deadline=None)
def test_a_manifest_written_from_the_spool_has_the_bytes_of_one_written_from_a_list(ids, bodies, tmp_path_factory):
    folder = tmp_path_factory.mktemp("m")
    entries = [{**body, "id": item_id} for item_id, body in zip(ids, bodies, strict=False)]
    spool = EntrySpool(folder, ids)
    for entry in reversed(entries):  # put in another order than the plan's
        spool.put(entry)
    head = {"manifest_version": 2, "run": {"workers": 1}, "notes": ["a"], "quarantined": []}
    assert manifest_text({**head, "items": spool}) == manifest_text({**head, "items": entries})
    write_manifest(folder, {**head, "items": spool})
    assert json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))["items"] == entries
    spool.close()


def test_map_makes_a_new_spool_and_leaves_the_first(tmp_path):
    spool = EntrySpool(tmp_path, ["a", "b"])
    spool.put({"id": "a", "error": "in /data/DOE"})
    spool.put({"id": "b", "error": None})
    redacted = spool.map(lambda e: {**e, "error": e["error"] and e["error"].replace("/data/DOE", "<source>")})
    assert [e["error"] for e in redacted] == ["in <source>", None]
    assert [e["error"] for e in spool] == ["in /data/DOE", None]


def _recipe(tmp_path: Path, source: Path, level: int, out: str = "out") -> Path:
    path = tmp_path / f"recipe-{out}.yaml"
    path.write_text(f"medflow: 1\nname: spool\nsource: {{dicom: '{source}'}}\n"
                    f"steps: [{{step: window, level: {level}, width: 400}}]\n"
                    f"outputs: {{dir: {out}, writers: [{{kind: npy}}]}}\nengine: {{workers: 1}}\n")
    return path


@pytest.mark.parametrize("rebuild", ["cold", "no-op", "changed"])
def test_the_report_reads_the_entries_of_the_written_manifest(tmp_path, rebuild):
    source = tmp_path / "src"
    for series in range(3):
        write_ct_series(source, series, n_slices=2)
    first = build(load_recipe(_recipe(tmp_path, source, 40)), show_progress=False)
    report = first if rebuild == "cold" else build(
        load_recipe(_recipe(tmp_path, source, 40 if rebuild == "no-op" else 60)), show_progress=False)
    written = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert len(written["items"]) == 3 and all(e["status"] == "ok" and e["meta"]["geometry"] for e in written["items"])
    assert report.manifest["items"] == written["items"]
    assert report.from_cache == (3 if rebuild == "no-op" else 0)
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".medflow-tmp-")]


def test_up_to_date_plans_hold_their_records_as_text(tmp_path):
    source = tmp_path / "src"
    write_ct_series(source, 0, n_slices=2)
    build(load_recipe(_recipe(tmp_path, source, 40)), show_progress=False)
    prepared = prepare(load_recipe(_recipe(tmp_path, source, 40)), record=False)
    (plan,) = prepared.plans
    assert plan.up_to_date and isinstance(plan.record_text, SpooledText)
    assert plan.record == prepared.cache.get_record(plan.output_key)
    assert plan.record is not plan.record  # parsed on each use, not kept
    assert prepared.records is plan.record_text.spool  # one temp file for the plans of a build


def test_the_records_spool_makes_a_file_only_for_a_record_kept_and_is_closed_with_the_build(
        tmp_path, monkeypatch, where_spools_keep):
    source = tmp_path / "src"
    write_ct_series(source, 0, n_slices=2)
    opened, closed = [], []
    monkeypatch.setattr(text_spool.TextSpool, "_to_file", lambda self, real=text_spool.TextSpool._to_file: opened.append(
        self._purpose) or real(self))
    monkeypatch.setattr(text_spool.TextSpool, "close", lambda self, real=text_spool.TextSpool.close: closed.append(
        self._purpose) or real(self))
    build(load_recipe(_recipe(tmp_path, source, 40)), show_progress=False)
    in_files = where_spools_keep == "in a file"
    assert opened == (["manifest-entries"] if in_files else []) and closed.count("records") == 1  # cold: none kept
    opened.clear(), closed.clear()
    build(load_recipe(_recipe(tmp_path, source, 40)), show_progress=False)
    assert sorted(opened) == (["manifest-entries", "records"] if in_files else []) and "records" in closed


def test_a_deidentifying_report_holds_only_redacted_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", "0123456789abcdef0123456789abcdef")
    source = tmp_path / "export"
    write_ct_series(source / "DOE^JOHN_12345678", 1, n_slices=2, patient="DOE^JOHN")
    recipe = tmp_path / "deid.yaml"
    recipe.write_text(f"medflow: 1\nname: publish\nsource: {{dicom: '{source}'}}\nsteps: [{{step: anonymize}}]\n"
                      "outputs: {dir: out, writers: [{kind: dicom}]}\nengine: {workers: 1}\n")
    report = build(load_recipe(recipe), show_progress=False)
    assert report.ok == 2
    text = "".join(json.dumps(e) for e in report.manifest["items"])
    assert "12345678" not in text and "DOE" not in text and "<file:" in text
    written = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert report.manifest["items"] == written["items"]


def test_an_up_to_date_item_is_entered_as_it_is_planned_with_the_entry_of_the_build_that_made_it(tmp_path):
    from medflow.engine.record import enter_up_to_date

    source = tmp_path / "src"
    slices = {series: write_ct_series(source, series, n_slices=2) for series in range(3)}
    build(load_recipe(_recipe(tmp_path, source, 40)), show_progress=False)
    cold_entries = {entry["id"]: entry for entry in json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["items"]}
    slices[1][0].write_bytes(slices[1][0].read_bytes()[:-2] + b"\x01\x02")  # one pixel of series 1 changed

    prepared = prepare(load_recipe(_recipe(tmp_path, source, 40)), record=False, enter_up_to_date=enter_up_to_date)
    entered = [plan for plan in prepared.plans if plan.entered is not None]
    assert len(entered) == 2 and all(plan.up_to_date for plan in entered)
    for plan in entered:
        assert plan.entered == ("ok", None, {}) and plan.links == []  # the chain let go of, once entered
        assert plan.item.item_id not in prepared.file_hashes
        assert prepared.entries.has(plan.item.item_id)
        assert json.loads(prepared.entries.text(plan.item.item_id)) == cold_entries[plan.item.item_id]
    (changed,) = [plan for plan in prepared.plans if plan.entered is None]
    assert not changed.up_to_date and changed.links and not prepared.entries.has(changed.item.item_id)

    rebuild = build(load_recipe(_recipe(tmp_path, source, 40)), show_progress=False)
    written = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["items"]
    assert rebuild.from_cache == 2 and rebuild.manifest["items"] == written
    assert [e == cold_entries[e["id"]] for e in written] == [plan.entered is not None for plan in prepared.plans]
