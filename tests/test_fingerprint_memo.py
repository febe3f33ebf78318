"""The memo of file hashes and header facts: reused while a file is unchanged, redone when it changes."""

from __future__ import annotations

import hashlib
import json
import os

import blake3
import pytest

import medflow.sources.discovery as discovery
from medflow.recipe.model import SeriesFilter
from medflow.sources.fingerprint import FingerprintMemo
from tests.dicom_factory import write_ct_series
from tests.test_memo_store import saved_entries


def _blake3(path) -> str:
    """The reference: the blake3 library on the file's bytes (not medflow.hashing)."""
    return blake3.blake3(path.read_bytes()).hexdigest()


def test_unchanged_files_are_neither_hashed_nor_parsed_again(tmp_path, monkeypatch):
    write_ct_series(tmp_path / "data", 1, n_slices=3)
    memo_path = tmp_path / "memo.json"
    memo = FingerprintMemo(memo_path)
    first = discovery.discover_dicom(tmp_path / "data", SeriesFilter(), memo)
    memo.save()
    saved = memo_path.read_bytes()
    memo = FingerprintMemo(memo_path)  # as the next build loads it

    def no_parse(*_args, **_kwargs):
        raise AssertionError("header parsed again")

    monkeypatch.setattr(discovery, "read_image_header", no_parse)
    monkeypatch.setattr("medflow.sources.fingerprint.file_digest", no_parse)
    again = discovery.discover_dicom(tmp_path / "data", SeriesFilter(), memo)
    assert again.items == first.items
    assert memo._entries == {} and not memo._dirty  # the entries stay in the file, none held parsed
    memo.save()
    assert memo_path.read_bytes() == saved


def test_a_changed_file_is_hashed_and_parsed_again(tmp_path):
    files = write_ct_series(tmp_path / "data", 1, n_slices=2)
    memo_path = tmp_path / "memo.json"
    memo = FingerprintMemo(memo_path)
    before = discovery.discover_dicom(tmp_path / "data", SeriesFilter(), memo)
    memo.save()
    write_ct_series(tmp_path / "data", 1, n_slices=2, pixels=__import__("numpy").zeros((16, 16), "int16"))
    os.utime(files[0], ns=(1, 1))  # a different mtime even on a coarse clock
    memo = FingerprintMemo(memo_path)
    after = discovery.discover_dicom(tmp_path / "data", SeriesFilter(), memo)
    assert after.items[0].fingerprint != before.items[0].fingerprint
    assert memo.digest(files[0]) == _blake3(files[0])


def test_verify_ignores_the_memo(tmp_path):
    (path,) = write_ct_series(tmp_path / "data", 1, n_slices=1)
    memo = FingerprintMemo(tmp_path / "memo.json")
    memo.digest(path)
    memo.save()
    # same size and mtime, different bytes: only --verify can see it
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert FingerprintMemo(tmp_path / "memo.json").digest(path) != _blake3(path)
    assert FingerprintMemo(tmp_path / "memo.json", verify=True).digest(path) == _blake3(path)


@pytest.mark.parametrize("damage", ["{not json", '{"format": 1, "entries": {"x": [1, 2, "y"]}}'])
def test_a_damaged_or_old_memo_only_costs_a_rehash(tmp_path, damage):
    (path,) = write_ct_series(tmp_path / "data", 1, n_slices=1)
    (tmp_path / "memo.json").write_text(damage)
    assert FingerprintMemo(tmp_path / "memo.json").digest(path) == _blake3(path)


def test_a_memo_of_sha256_digests_is_never_read_as_blake3(tmp_path):
    """An older medflow's memo (format 2: sha256 per file, size and mtime still matching) is not reused."""
    (path,) = write_ct_series(tmp_path / "data", 1, n_slices=1)
    stat = path.stat()
    old = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (tmp_path / "memo.json").write_text(json.dumps({"format": 2, "entries": {os.path.realpath(path): old}}))
    memo = FingerprintMemo(tmp_path / "memo.json")
    assert memo.digest(path) == _blake3(path)
    memo.save()
    saved = saved_entries(tmp_path / "memo.json")
    assert saved[os.path.realpath(path)]["blake3"] == _blake3(path)
    assert "sha256" not in saved[os.path.realpath(path)]


def test_a_build_stats_each_file_once_and_a_file_it_writes_anew(tmp_path, monkeypatch):
    """Header facts, the item's digest and the plan's digest of one file cost one stat per build
    (the lstat that resolves its path, for a file that is no symbolic link); a file medflow writes
    during the build is recorded from a fresh stat (remember)."""
    files = write_ct_series(tmp_path / "data", 1, n_slices=3)
    memo = FingerprintMemo(tmp_path / "memo.json")
    discovery.discover_dicom(tmp_path / "data", SeriesFilter(), memo)
    memo.save()
    memo = FingerprintMemo(tmp_path / "memo.json")
    stats: list[str] = []

    def counting(real):
        def stat(path, *args, **kwargs):
            stats.append(os.fspath(path))
            return real(path, *args, **kwargs)
        return stat

    monkeypatch.setattr("medflow.sources.fingerprint.os.stat", counting(os.stat))
    monkeypatch.setattr("medflow.sources.fingerprint.os.lstat", counting(os.lstat))
    found = discovery.discover_dicom(tmp_path / "data", SeriesFilter(), memo)
    digests = [memo.digest(tmp_path / "data" / rel) for rel in found.items[0].files]  # as prepare asks
    assert digests == [_blake3(path) for path in sorted(files)]
    monkeypatch.undo()
    dicom_stats = sorted(os.path.realpath(p) for p in stats if p.endswith(".dcm"))  # patched for every caller
    assert dicom_stats == sorted(os.fspath(path.resolve()) for path in files)

    files[0].write_bytes(b"rewritten by this build")
    memo.remember(files[0], "0" * 64)
    assert memo.digest(files[0]) == "0" * 64
    memo.save()
    assert FingerprintMemo(tmp_path / "memo.json").digest(files[0]) == "0" * 64  # the fresh stat was kept


def test_the_memo_file_is_the_json_of_its_entries_one_a_line(tmp_path):
    """save() writes entry by entry (a memo of 20,000 files was the build's memory peak as one
    string): each line must still be the plain JSON of its key and entry, read back whole."""
    memo = FingerprintMemo(tmp_path / "memo.json")
    for i in range(1500):  # several write batches
        memo._entries[f"/data/é{i}\\\"x"] = {"size": i, "mtime_ns": i * 7, "blake3": f"{i:064x}", "facts": {"é": [1.5, None]}}
    memo._dirty = True
    memo.save()
    assert saved_entries(tmp_path / "memo.json") == memo._entries
    again = FingerprintMemo(tmp_path / "memo.json")
    assert {key: again._stored.get(key) for key in memo._entries} == memo._entries


@pytest.mark.parametrize("linked", [False, True], ids=["plain-folder", "linked-folder"])
def test_a_verify_build_hashes_every_input_once_even_through_a_linked_source_folder(tmp_path, monkeypatch, linked):
    """--verify rehashes what earlier builds hashed, but one build hashes a file only once.

    Discovery asks the memo with the source folder's realpath, the plan with the folder as
    the recipe names it: through a symbolic link those are two spellings of one file.
    """
    from medflow.engine.build import build
    from medflow.recipe.loader import load_recipe

    files = write_ct_series(tmp_path / "real", 1, n_slices=3)
    (tmp_path / "data").symlink_to(tmp_path / "real") if linked else (tmp_path / "real").rename(tmp_path / "data")
    (tmp_path / "recipe.yaml").write_text(
        "medflow: 1\nname: verify\nsource:\n  dicom: data\nsteps:\n  - step: window\n    level: 40\n"
        "    width: 400\noutputs:\n  dir: out\n  writers:\n    - kind: npy\nengine:\n  workers: 1\n"
    )
    import medflow.sources.fingerprint as fingerprint

    hashed: list[str] = []
    real_digest = fingerprint.file_digest

    def counting(path, *args):
        hashed.append(os.path.basename(path))
        return real_digest(path, *args)

    monkeypatch.setattr(fingerprint, "file_digest", counting)
    names = sorted(os.path.basename(f) for f in files)
    for _ in range(2):  # the second build finds the first build's memo and must ignore it
        hashed.clear()
        report = build(load_recipe(tmp_path / "recipe.yaml"), verify=True, show_progress=False)
        assert report.exit_code == 0 and report.ok == 1
        inputs = sorted(name for name in hashed if name in names)
        assert inputs == names  # each input exactly once, in each build


def test_reading_facts_are_kept_as_text_a_fraction_of_their_objects_and_read_back_equal(tmp_path):
    """The memo holds every file's header facts for the whole build; their bulky reading part
    (positions, orientation, rescale, pixel key) as JSON text, parsed only for the items that run."""
    import tracemalloc

    from medflow.sources import discovery
    from medflow.sources.series import _READ_FACT_FIELDS, read_facts

    (path,) = write_ct_series(tmp_path / "data", 1, n_slices=1)
    facts = discovery.header_facts(path)
    assert isinstance(facts["read"], str)
    memo = FingerprintMemo(tmp_path / "memo.json")
    memo.set_extra(path, discovery._HEADER_MEMO, facts)
    memo.save()
    again = FingerprintMemo(tmp_path / "memo.json")
    found = discovery.read_facts_of(path, again)
    expected = read_facts(discovery.read_image_header(path))
    key = _READ_FACT_FIELDS.index("pixel_key")  # raw (the scanner's) or ds (pydicom's): aside
    assert found[:key] + found[key + 1:] == expected[:key] + expected[key + 1:]

    def held(make) -> float:
        """Bytes a memo holds per file for 300 files' facts made by ``make`` (fresh objects per file)."""
        names = [tmp_path / f"f{i}" for i in range(300)]
        for name in names:
            name.write_bytes(b"x")
        store = FingerprintMemo(None)
        for name in names:
            store.digest(name)  # the memo's own entry and lookup of the file, before measuring
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for name in names:
                store.set_extra(name, discovery._HEADER_MEMO, make())
            return (tracemalloc.get_traced_memory()[0] - before) / len(names)
        finally:
            tracemalloc.stop()

    text = json.dumps(facts)
    as_text = held(lambda: json.loads(text))
    as_objects = held(lambda: {**json.loads(text), "read": json.loads(facts["read"])})
    assert as_text < 0.8 * as_objects, (as_text, as_objects)  # measured 0.70 (the other fields stay objects)


def test_digest_many_hashes_on_several_threads_what_digest_would_give(tmp_path, monkeypatch):
    import threading

    import medflow.sources.fingerprint as fingerprint

    paths = []
    for i in range(6):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(3000 + i))
        paths.append(os.fspath(path))
    missing = os.fspath(tmp_path / "gone.bin")
    threads_seen = set()
    real = fingerprint.file_digest

    def recording(path, *args):
        threads_seen.add(threading.current_thread().name)
        return real(path, *args)

    monkeypatch.setattr(fingerprint, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(fingerprint, "PARALLEL_MIN_FILE_BYTES", 0)
    monkeypatch.setattr(fingerprint, "file_digest", recording)
    memo = FingerprintMemo(None)
    memo.digest_many([*paths, missing], threads=3)
    assert threads_seen == {"medflow-digest"}  # nothing hashed on the calling thread
    monkeypatch.setattr(fingerprint, "file_digest", lambda *_: pytest.fail("hashed again"))
    assert [memo.digest(p) for p in paths] == [_blake3(tmp_path / f"f{i}.bin") for i in range(6)]
    with pytest.raises(OSError):
        memo.digest(missing)  # what cannot be read is left to digest(), which raises as before


def test_digest_many_leaves_a_few_small_files_to_the_calling_thread(tmp_path, monkeypatch):
    import medflow.sources.fingerprint as fingerprint

    path = tmp_path / "small.bin"
    path.write_bytes(b"x" * 100)
    calls = []
    monkeypatch.setattr(fingerprint, "file_digest", lambda p, *a: calls.append(p) or "0" * 64)
    memo = FingerprintMemo(None)
    memo.digest_many([os.fspath(path)] * 2, threads=4)  # far below PARALLEL_MIN_BYTES: no thread started
    assert calls == []
    assert memo.digest(os.fspath(path)) == "0" * 64 and len(calls) == 1

    many = []
    for i in range(40):  # many tiny files: enough bytes in all, too few in each
        many.append(tmp_path / f"t{i}.bin")
        many[-1].write_bytes(b"y" * 1000)
    monkeypatch.setattr(fingerprint, "PARALLEL_MIN_BYTES", 1000)
    FingerprintMemo(None).digest_many([os.fspath(p) for p in many], threads=4)
    assert len(calls) == 1


def test_discovery_hashing_on_threads_gives_the_same_items(tmp_path, monkeypatch):
    import medflow.sources.fingerprint as fingerprint

    for series in (1, 2, 3):
        write_ct_series(tmp_path / "data", series, n_slices=4)
    monkeypatch.setattr(fingerprint, "PARALLEL_MIN_BYTES", 1 << 62)
    serial = discovery.discover_dicom(tmp_path / "data", SeriesFilter(), FingerprintMemo(None))
    monkeypatch.setattr(fingerprint, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(fingerprint, "PARALLEL_MIN_FILE_BYTES", 0)
    monkeypatch.setattr(discovery, "usable_cores", lambda: 2)
    threaded = discovery.discover_dicom(tmp_path / "data", SeriesFilter(), FingerprintMemo(None))
    assert threaded.items == serial.items
    assert len(serial.items) == 3


def test_a_rebuild_lets_go_of_what_it_looked_up_for_items_that_are_up_to_date(tmp_path, monkeypatch):
    from medflow.engine.build import build, prepare
    from medflow.recipe.loader import load_recipe

    files = write_ct_series(tmp_path / "data", 1, n_slices=3)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"medflow: 1\nname: forget\nsource: {{dicom: '{tmp_path / 'data'}'}}\n"
                      "steps: [{step: window, level: 40, width: 400}]\noutputs: {dir: out, writers: [{kind: npy}]}\n")
    build(load_recipe(recipe), show_progress=False)
    prepared = prepare(load_recipe(recipe), record=False)
    assert [plan.up_to_date for plan in prepared.plans] == [True]
    memo = prepared.memo
    assert memo._looked == {} and memo._digests == {}  # inputs and outputs: nothing held to the build's end
    monkeypatch.setattr("medflow.sources.fingerprint.file_digest", lambda *_: pytest.fail("hashed again"))
    assert [memo.digest(path) for path in files] == [_blake3(path) for path in files]  # asked again: looked up again


def test_discovery_keeps_one_object_for_the_values_files_of_a_series_repeat():
    def facts(sop: str, orientation: list[float]) -> dict:
        return {"modality": "CT", "series_uid": "1.2." + "3" * 40, "sop_uid": sop, "description": "chest",
                "image_type": ["ORIGINAL", "PRIMARY"], "n_frames": 1, "orientation": orientation, "size": [16, 16],
                "echo": "", "has_position": True, "sop_class": "1.2.840.10008.5.1.4.1.1.2"}

    axial = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    signed = [1.0, -0.0, 0.0, 0.0, 1.0, 0.0]  # equal to axial as floats, not as the file says it
    infos = [discovery._memoized_file_info(f"f{i}", f"/no/f{i}", None, json.loads(json.dumps(facts(str(i), o))))
             for i, o in enumerate([axial, axial, signed])]
    discovery.forget_shared_values()
    first, second, third = infos
    for name in ("series_uid", "modality", "description", "image_type", "size", "sop_class", "orientation"):
        assert getattr(first, name) is getattr(second, name), name
    assert first.orientation == tuple(axial) and third.orientation is not first.orientation
    assert [str(v) for v in third.orientation] == [str(v) for v in signed]  # -0.0 kept
    assert first.sop_uid == "0" and second.sop_uid == "1"
