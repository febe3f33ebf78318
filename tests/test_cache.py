"""The content-addressed cache: round trip, atomicity, corruption detection."""

import hashlib
import json
import os
import struct

import blake3
import numpy as np
import pytest

from medflow.engine.cache import Cache
from medflow.errors import CacheError


def test_round_trip_keeps_dtype_shape_and_bytes(tmp_path):
    cache = Cache(tmp_path)
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    cache.put("ab" * 32, {"axes": "zyx"}, array)
    header, loaded = cache.get("ab" * 32)
    assert header == {"axes": "zyx"}
    assert loaded.dtype == np.int16 and loaded.shape == (2, 3, 4)
    assert np.array_equal(loaded, array)


def test_absent_key_is_none(tmp_path):
    assert Cache(tmp_path).get("cd" * 32) is None
    assert Cache(tmp_path).get_record("cd" * 32) is None


def test_corrupt_entry_raises_and_is_deleted(tmp_path):
    cache = Cache(tmp_path)
    key = "ef" * 32
    cache.put(key, {}, np.ones((8, 8), np.float32))
    path = tmp_path / "objects" / key[:2] / f"{key}.mfc"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip one pixel byte
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="corrupt cache entry"):
        cache.get(key)
    assert not path.exists()
    assert cache.get(key) is None


def test_truncated_entry_is_corrupt(tmp_path):
    cache = Cache(tmp_path)
    key = "01" * 32
    cache.put(key, {"a": 1}, np.ones(100, np.float64))
    path = tmp_path / "objects" / key[:2] / f"{key}.mfc"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CacheError):
        cache.get(key)


def test_writes_leave_no_temp_files(tmp_path):
    cache = Cache(tmp_path)
    cache.put("23" * 32, {}, np.zeros(3))
    cache.put_record("45" * 32, {"x": 1})
    leftovers = [name for _, _, files in os.walk(tmp_path) for name in files
                 if name.startswith(".medflow-tmp-") or name.endswith(".tmp")]
    assert leftovers == []


def test_corrupt_record_reads_as_absent(tmp_path):
    cache = Cache(tmp_path)
    cache.put_record("67" * 32, {"x": 1})
    path = tmp_path / "records" / "67" / f"{'67' * 32}.json"
    path.write_text("{not json")
    assert cache.get_record("67" * 32) is None
    assert not path.exists()


def test_flipped_array_byte_is_detected(tmp_path):
    cache = Cache(tmp_path)
    key = "89" * 32
    cache.put(key, {"a": 1}, np.arange(64, dtype=np.float32))
    path = tmp_path / "objects" / key[:2] / f"{key}.mfc"
    data = bytearray(path.read_bytes())
    data[20] ^= 0x01  # inside the array bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="blake3"):
        cache.get(key)


def test_slabs_round_trip_and_detect_corruption_at_the_end(tmp_path):
    cache = Cache(tmp_path)
    key = "ab" * 32
    array = np.arange(10 * 3 * 2, dtype=np.int16).reshape(10, 3, 2)
    writer = cache.open_writer(key)
    for start in range(0, 10, 4):
        writer.write(array[start : start + 4])
    writer.commit({"axes": "zyx"}, array.shape)
    header, slabs = cache.get_slabs(key, 3)
    assert header == {"axes": "zyx"}
    assert np.array_equal(np.concatenate(list(slabs)), array)
    assert np.array_equal(cache.get(key)[1], array)

    path = tmp_path / "objects" / key[:2] / f"{key}.mfc"
    data = bytearray(path.read_bytes())
    data[9] ^= 0x01
    path.write_bytes(bytes(data))
    _, slabs = cache.get_slabs(key, 3)
    with pytest.raises(CacheError, match="blake3"):
        list(slabs)
    assert not path.exists()


def test_aborted_writer_leaves_nothing(tmp_path):
    cache = Cache(tmp_path)
    writer = cache.open_writer("cd" * 32)
    writer.write(np.zeros(4))
    writer.abort()
    assert not cache.has("cd" * 32)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def _entry_parts(path):
    """(array bytes, header) of an entry, read with the layout alone: magic, array, JSON, trailer."""
    data = path.read_bytes()
    meta_len, magic = struct.unpack("<Q8s", data[-16:])
    stop = len(data) - 16 - meta_len
    return data[len(magic):stop], json.loads(data[stop:-16]), magic


def test_an_entry_records_the_blake3_of_its_array_bytes(tmp_path):
    cache = Cache(tmp_path)
    key = "cd" * 32
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)
    writer = cache.open_writer(key)
    for start in range(0, 10, 3):
        writer.write(array[start : start + 3])
    writer.commit({}, array.shape)
    body, header, magic = _entry_parts(tmp_path / "objects" / key[:2] / f"{key}.mfc")
    assert magic == b"MFCACHE3"
    assert body == array.tobytes()
    assert header["_array"]["blake3"] == blake3.blake3(array.tobytes()).hexdigest()  # the reference library
    assert "sha256" not in header["_array"]


def test_an_entry_of_the_sha256_format_is_never_misread(tmp_path):
    """An older medflow's entry (magic MFCACHE2, a sha256 checksum) is corrupt to this one: deleted, recomputed."""
    cache = Cache(tmp_path)
    key = "ef" * 32
    array = np.arange(16, dtype=np.int16)
    meta = json.dumps({"axes": "z", "_array": {"dtype": array.dtype.str, "shape": [16],
                                               "sha256": hashlib.sha256(array.tobytes()).hexdigest()}}).encode()
    path = tmp_path / "objects" / key[:2] / f"{key}.mfc"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"MFCACHE2" + array.tobytes() + meta + struct.pack("<Q8s", len(meta), b"MFCACHE2"))
    with pytest.raises(CacheError, match="corrupt cache entry"):
        cache.get(key)
    assert not path.exists()
    # the same with the new magic but the old checksum field: still refused, never trusted
    path.write_bytes(b"MFCACHE3" + array.tobytes() + meta + struct.pack("<Q8s", len(meta), b"MFCACHE3"))
    with pytest.raises(CacheError, match="no blake3 checksum"):
        cache.get_slabs(key, 4)
    assert not path.exists()


def test_a_record_with_a_sha256_checksum_reads_as_absent(tmp_path):
    cache = Cache(tmp_path)
    key = "12" * 32
    record = {"outputs": []}
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    path = tmp_path / "records" / key[:2] / f"{key}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"record": record, "sha256": hashlib.sha256(body).hexdigest()}))
    assert cache.get_record(key) is None
    assert not path.exists()
    cache.put_record(key, record)
    assert json.loads(path.read_text())["blake3"] == blake3.blake3(body).hexdigest()
    assert cache.get_record(key) == record


def test_slabs_are_verified_beside_the_caller_and_an_early_close_ends_that_thread(tmp_path):
    import threading

    cache = Cache(tmp_path)
    key = "ef" * 32
    array = np.arange(12 * 4 * 4, dtype=np.uint16).reshape(12, 4, 4)
    cache.put(key, {}, array)
    before = set(threading.enumerate())
    _, slabs = cache.get_slabs(key, 2)
    next(slabs)
    verifiers = [t for t in threading.enumerate() if t not in before]
    assert [t.name for t in verifiers] == ["medflow-write"]  # the digest runs on a thread of its own
    slabs.close()  # e.g. the item fell back to another path after its first slab
    verifiers[0].join(timeout=5)
    assert not verifiers[0].is_alive()
    _, slabs = cache.get_slabs(key, 5)  # the entry is intact: read whole again, same bytes
    assert np.array_equal(np.concatenate(list(slabs)), array)


RECORD = {"meta": {"window": {"center": -600.0, "width": 1500.0}, "note": 'a "quoted" \\ é'}, "outputs": [{"size": 3}]}


def _canonical(record) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def test_a_record_reads_back_and_is_checked_on_the_bytes_it_was_written_as(tmp_path):
    cache = Cache(tmp_path)
    key = "34" * 32
    cache.put_record(key, RECORD)
    path = tmp_path / "records" / key[:2] / f"{key}.json"
    assert path.read_bytes() == b'{"blake3":"%s","record":%s}\n' % (
        blake3.blake3(_canonical(RECORD)).hexdigest().encode(), _canonical(RECORD))
    assert cache.get_record(key) == RECORD
    # a changed value, even one that keeps the text valid JSON of the same length, is damage
    path.write_bytes(path.read_bytes().replace(b"1500.0", b"1400.0"))
    assert cache.get_record(key) is None and not path.exists()


def test_a_record_in_an_older_layout_still_reads_and_is_checked(tmp_path):
    """Records an older medflow wrote as indented JSON: the canonical text is made again to check them."""
    cache = Cache(tmp_path)
    good, bad = "56" * 32, "78" * 32
    for key, digest in ((good, blake3.blake3(_canonical(RECORD)).hexdigest()), (bad, "0" * 64)):
        path = tmp_path / "records" / key[:2] / f"{key}.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"blake3": digest, "record": RECORD}, indent=1))
    assert cache.get_record(good) == RECORD
    assert cache.get_record(bad) is None
    assert not (tmp_path / "records" / bad[:2] / f"{bad}.json").exists()


@pytest.mark.parametrize("cut", [1, 2, 70, -3])
def test_a_cut_record_reads_as_absent(tmp_path, cut):
    cache = Cache(tmp_path)
    key = "9a" * 32
    cache.put_record(key, RECORD)
    path = tmp_path / "records" / key[:2] / f"{key}.json"
    text = path.read_bytes()
    path.write_bytes(text[:cut] if cut > 0 else text[:cut] + b"\n")
    assert cache.get_record(key) is None


def test_a_record_reads_back_with_its_canonical_text(tmp_path):
    """What a plan keeps of an up-to-date item: the text the digest was made of, which parses to the record."""
    cache = Cache(tmp_path)
    old = "bc" * 32
    cache.put_record("ab" * 32, RECORD)
    record, text = cache.get_record_and_text("ab" * 32)
    assert record == RECORD and text == _canonical(RECORD) and json.loads(text) == RECORD
    path = tmp_path / "records" / old[:2] / f"{old}.json"  # an older medflow's layout: the text made again
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"blake3": blake3.blake3(_canonical(RECORD)).hexdigest(), "record": RECORD}, indent=1))
    assert cache.get_record_and_text(old) == (RECORD, _canonical(RECORD))
    assert cache.get_record_and_text("cd" * 32) is None


def test_a_record_that_is_not_an_object_reads_as_absent(tmp_path):
    """Its digest holds, but no medflow writes such a record: damage, deleted like any other."""
    cache = Cache(tmp_path)
    key = "de" * 32
    cache.put_record(key, RECORD)
    path = tmp_path / "records" / key[:2] / f"{key}.json"
    body = b"[1,2]"
    path.write_bytes(b'{"blake3":"%s","record":%s}\n' % (blake3.blake3(body).hexdigest().encode(), body))
    assert cache.get_record(key) is None and not path.exists()
