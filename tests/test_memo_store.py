"""The memo file is one entry a line; a build locates the entries and parses each when asked.

A no-op rebuild asks the memo about every input and holds none of the entries parsed
(test_fingerprint_memo.py). These tests pin that what it answers is what was saved (any key,
any value), that damage stays with its line, that an older memo (one JSON object) is still
read, that another build replacing the file does not change what this one reads, and that the
entries a cold build makes past the held ones go to a journal and are saved with the rest.
"""

from __future__ import annotations

import json
import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medflow.sources import memo_store
from medflow.sources.fingerprint import MEMO_FORMAT, FingerprintMemo
from tests.dicom_factory import write_ct_series

KEY = st.text(alphabet=st.sampled_from(list(string.ascii_letters + '/._-^ "\\\n\t{}:,É李') + ["\x00"]), min_size=1,
              max_size=16)
VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | KEY,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEY, children, max_size=3),
    max_leaves=10,
)


def saved_entries(path) -> dict:
    """The entries of a memo file, read with plain ``json`` line by line (the reference reader)."""
    lines = path.read_bytes().split(b"\n")
    assert json.loads(lines[0]) == {"format": MEMO_FORMAT} and lines[-1] == b""
    entries = {}
    for line in lines[1:-1]:
        key, entry = line.split(b"\t")
        entries[json.loads(key)] = json.loads(entry)
    return entries


@given(entries=st.dictionaries(KEY, st.dictionaries(KEY, VALUE, max_size=3), max_size=8))
@settings(max_examples=150, deadline=None)
def test_what_is_saved_reads_back_entry_by_entry(entries, tmp_path_factory):
    path = tmp_path_factory.mktemp("memo") / "memo.json"
    memo = FingerprintMemo(path)
    memo._entries.update(entries)
    memo._dirty = True
    memo.save()
    assert saved_entries(path) == entries
    for blob_bytes in (memo_store.BLOB_BYTES, -1):  # held in memory (a small file), read entry by entry
        default, memo_store.BLOB_BYTES = memo_store.BLOB_BYTES, blob_bytes
        try:
            stored = memo_store.StoredEntries(path)
        finally:
            memo_store.BLOB_BYTES = default
        assert (stored._blob is None) == (blob_bytes < 0)
        assert {key: stored.get(key) for key in entries} == entries
        assert stored.get("not a key") is None
        stored.close()


def test_a_changed_entry_replaces_its_line_and_the_others_are_kept_as_they_were(tmp_path):
    files = write_ct_series(tmp_path / "data", 1, n_slices=3)
    memo_path = tmp_path / "memo.json"
    memo = FingerprintMemo(memo_path)
    for path in files:
        memo.digest(path)
    memo.save()
    before = saved_entries(memo_path)
    files[0].write_bytes(b"changed")
    memo = FingerprintMemo(memo_path)
    assert memo.digest(files[0]) == __import__("blake3").blake3(b"changed").hexdigest()
    memo.save()
    after = saved_entries(memo_path)
    changed = os.path.realpath(files[0])
    assert {k: v for k, v in after.items() if k != changed} == {k: v for k, v in before.items() if k != changed}
    assert after[changed]["size"] == len(b"changed")


@pytest.fixture(params=["held", "read-by-entry"])
def reading(request, monkeypatch):
    """A memo file held in memory (a small one, the default) or read entry by entry (a large one)."""
    if request.param == "read-by-entry":
        monkeypatch.setattr(memo_store, "BLOB_BYTES", -1)
    return request.param


def test_a_damaged_line_is_absent_and_not_written_back(tmp_path, reading):
    path = tmp_path / "memo.json"
    good = {"size": 1, "mtime_ns": 2, "blake3": "0" * 64}
    path.write_bytes(b'{"format":%d}\n' % MEMO_FORMAT
                     + b'"/a"\t' + json.dumps(good).encode() + b"\n"
                     + b'"/b"\t{"size": 1, "mtime\n'  # cut inside its entry
                     + b'"/c"\t{"size": 1}} junk\n'  # located, but not JSON
                     + b'"/d"\t' + json.dumps(good).encode())  # no newline: the file was cut
    memo = FingerprintMemo(path)
    assert memo._stored.get("/a") == good
    assert [memo._stored.get(key) for key in ("/b", "/c", "/d")] == [None, None, None]
    memo._entries["/e"] = good
    memo._dirty = True
    memo.save()
    assert saved_entries(path) == {"/a": good, "/e": good}


def test_a_memo_of_format_5_is_read_and_saved_as_lines(tmp_path):
    (path,) = write_ct_series(tmp_path / "data", 1, n_slices=1)
    stat = path.stat()
    digest = "a" * 64
    entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "blake3": digest}
    memo_path = tmp_path / "memo.json"
    memo_path.write_text(json.dumps({"format": 5, "entries": {os.path.realpath(path): entry}}))
    memo = FingerprintMemo(memo_path)
    assert memo.digest(path) == digest  # trusted as before: same size and mtime
    memo.save()
    assert saved_entries(memo_path) == {os.path.realpath(path): entry}


def test_another_build_replacing_the_file_does_not_change_what_this_one_reads(tmp_path, reading):
    files = write_ct_series(tmp_path / "data", 1, n_slices=2)
    memo_path = tmp_path / "memo.json"
    memo = FingerprintMemo(memo_path)
    digests = [memo.digest(path) for path in files]
    memo.save()
    loaded = FingerprintMemo(memo_path)
    other = FingerprintMemo(memo_path)
    other._entries = {"/elsewhere": {"size": 1, "mtime_ns": 1}}
    other._dirty = True
    other.save()  # a concurrent build of another recipe on the same cache
    assert [loaded.known_digest(path) for path in files] == digests
    loaded.save()  # nothing changed here: the other build's file stays
    assert list(saved_entries(memo_path)) == [os.path.realpath(p) for p in files] + ["/elsewhere"]


def test_entries_past_the_held_ones_go_to_the_journal_and_are_saved_with_the_rest(tmp_path, monkeypatch):
    """A cold build makes an entry per file: the memo holds a few, the journal the others, and what
    it answers and saves is what it would hold all of them."""
    monkeypatch.setattr("medflow.sources.fingerprint.HELD_ENTRIES", 3)
    files = write_ct_series(tmp_path / "data", 1, n_slices=10)
    memo_path = tmp_path / "memo.json"
    memo = FingerprintMemo(memo_path)
    for path in files[:4]:  # stored by an earlier build
        memo.digest(path)
    memo.save()
    memo = FingerprintMemo(memo_path)
    digests = [memo.digest(path) for path in files]
    for index, path in enumerate(files):
        memo.set_extra(path, "facts", {"index": index})
        assert len(memo._entries) <= 3
    memo.set_extra(files[0], "facts", {"index": "latest"})  # a journaled entry changed again
    assert [memo.known_digest(path) for path in files] == digests
    assert memo.get_extra(files[0], "facts") == {"index": "latest"}
    assert [memo.get_extra(path, "facts") for path in files[1:]] == [{"index": i} for i in range(1, 10)]
    memo.save()
    saved = saved_entries(memo_path)
    assert sorted(saved) == sorted(os.path.realpath(p) for p in files)
    assert {key: (entry["blake3"], entry["facts"]) for key, entry in saved.items()} == {
        os.path.realpath(p): (d, {"index": "latest" if i == 0 else i}) for i, (p, d) in enumerate(zip(files, digests, strict=True))}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".medflow-tmp-")]  # the journal has no name


def test_a_journal_that_cannot_be_written_leaves_the_entries_held(tmp_path, monkeypatch):
    """No room or no write access beside the memo: the build goes on holding its entries, as before."""
    monkeypatch.setattr("medflow.sources.fingerprint.HELD_ENTRIES", 2)

    def no_room(self, entries):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(memo_store.Journal, "append", no_room)
    files = write_ct_series(tmp_path / "data", 1, n_slices=5)
    memo = FingerprintMemo(tmp_path / "memo.json")
    digests = [memo.digest(path) for path in files]
    assert len(memo._entries) == 5
    memo.save()
    assert {key: entry["blake3"] for key, entry in saved_entries(tmp_path / "memo.json").items()} == {
        os.path.realpath(p): d for p, d in zip(files, digests, strict=True)}


def test_a_build_lets_go_of_the_memo_file_and_its_journal(tmp_path, monkeypatch):
    from medflow.engine.build import build
    from medflow.recipe.loader import load_recipe

    opened: list[FingerprintMemo] = []
    real_init = FingerprintMemo.__init__

    def recording(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(FingerprintMemo, "__init__", recording)
    closed: list[str] = []
    for layer in (memo_store.Journal, memo_store.StoredEntries):
        monkeypatch.setattr(layer, "close", lambda self, real=layer.close: closed.append(type(self).__name__) or real(self))
    monkeypatch.setattr("medflow.sources.fingerprint.HELD_ENTRIES", 1)  # a journal from the second file on
    write_ct_series(tmp_path / "src", 1, n_slices=3)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"medflow: 1\nname: memo\nsource: {{dicom: '{tmp_path / 'src'}'}}\n"
                      "steps: [{step: window, level: 40, width: 400}]\n"
                      "outputs: {dir: out, writers: [{kind: npy}]}\nengine: {workers: 1}\n")
    for _ in range(2):  # cold (journal), then a rebuild reading the saved memo by line
        assert build(load_recipe(recipe), show_progress=False).ok == 1
    assert len(opened) == 2 and all(m._stored is None and m._journal is None for m in opened)
    assert closed == ["Journal", "StoredEntries"]  # the cold build's journal, the rebuild's loaded memo
