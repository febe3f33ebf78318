"""The streamed pixel path (issue 10): headers built only when read, raw native reads, writes behind the gathers."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from medflow.engine.build import build
from medflow.engine.writebehind import BufferPool, WriteAndHash, WriteBehind
from medflow.recipe.loader import load_recipe
from medflow.sources.discovery import read_image_header
from medflow.sources.pixels import LazyHeaders, header_json, read_native
from tests.dicom_factory import write_ct_series

SEED = ("steps:\n  - step: window\n    level: -600\n    width: 1500\n  - step: colormap\n    map: blue_red\n"
        "  - step: color_space\n    to: ycbcr\n  - step: layout\n    layout: NCHW\n    dtype: float32\n")


#: engine settings that keep every item's stored values in the cache (native files too)
KEEP_STORED = "  cache_stored_values: true\n"


def _recipe(tmp_path: Path, name: str, steps: str = SEED, engine: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"medflow: 1\nname: {name}\nsource:\n  dicom: data\n{steps}outputs:\n  dir: out-{name}\n"
                    f"engine:\n  workers: 1\n{engine}")
    return path


@pytest.mark.parametrize("syntax", ["explicit", "implicit"])
def test_lazy_headers_equal_the_eager_ones_from_a_dataset_and_from_raw_bytes(tmp_path, syntax):
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    (path,) = write_ct_series(tmp_path, 1, n_slices=1, size=16)
    if syntax == "implicit":
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=True, little_endian=True)
    ds = read_image_header(path)
    eager = header_json(read_image_header(path))
    assert LazyHeaders([ds])[0] == eager
    out = np.empty((16, 16), dtype=np.int16)
    raw = read_native(path, ds, out)
    assert raw is not None and np.array_equal(out, pydicom.dcmread(path).pixel_array)
    assert LazyHeaders([raw])[0] == eager
    assert LazyHeaders.from_json(LazyHeaders([ds], [raw]).to_json())[0] == eager
    assert LazyHeaders([ds, raw])[1:] == [eager]


def test_a_compressed_files_header_bytes_end_at_the_pixel_data_offset_discovery_saw(tmp_path):
    from medflow.sources.discovery import PIXEL_DATA_OFFSET
    from medflow.sources.pixels import read_header_bytes

    (path,) = _rle_series(tmp_path, 1)
    ds = read_image_header(path)
    offset = getattr(ds, PIXEL_DATA_OFFSET)
    assert path.read_bytes()[offset : offset + 4] == b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
    raw = read_header_bytes(path, offset)
    assert LazyHeaders([raw])[0] == header_json(ds) and "7FE00010" not in LazyHeaders([raw])[0]
    assert read_header_bytes(path, offset - 2) is None  # no Pixel Data element there: the header gets parsed


def test_a_pixel_chain_builds_no_header_and_a_rebuild_from_the_cached_values_reads_them(tmp_path, monkeypatch):
    """The seed chain never reads a header (none is converted); the stored-values entry keeps the
    header bytes, so a chain that reads them (window from_header) still gets the same headers."""
    import medflow.sources.pixels as pixels

    write_ct_series(tmp_path / "data", 1, n_slices=6, size=16)
    built = []
    original = pixels.header_json
    monkeypatch.setattr(pixels, "header_json", lambda ds: built.append(1) or original(ds))
    first = build(load_recipe(_recipe(tmp_path, "r", engine=KEEP_STORED)), show_progress=False)
    assert first.exit_code == 0 and built == []
    from_header = ("steps:\n  - step: modality_lut\n  - step: window\n    level: 40\n    width: 400\n"
                   "  - step: layout\n    layout: NCHW\n")  # modality_lut reads every header
    again = build(load_recipe(_recipe(tmp_path, "r", engine=KEEP_STORED), overrides=["steps[0].width=1200"]), show_progress=False)
    (computed,) = again.manifest["run"]["computed"].values()
    assert computed[0] == "window"  # from the stored values: no DICOM read
    cached = build(load_recipe(_recipe(tmp_path, "h", from_header, KEEP_STORED)), show_progress=False)
    (computed,) = cached.manifest["run"]["computed"].values()
    # headers from the cached bytes, built when read: each slice once, plus the one its table is built with
    assert computed[0] == "modality_lut" and len(built) == 6 + 1
    plain = build(load_recipe(_recipe(tmp_path, "p", from_header, KEEP_STORED), overrides=["engine.fold_pointwise=false"]),
                  show_progress=False)
    assert cached.exit_code == plain.exit_code == 0
    one = {p.name: p.read_bytes() for p in (tmp_path / "out-h").rglob("*.npy")}
    two = {p.name: p.read_bytes() for p in (tmp_path / "out-p").rglob("*.npy")}
    assert one and one == two


@pytest.mark.parametrize("inline_bytes", [0, 1 << 30], ids=["write-threads", "inline"])
def test_a_failed_write_fails_the_item_and_leaves_no_output(tmp_path, monkeypatch, inline_bytes):
    import medflow.engine.stream as stream_module
    from medflow.writers.tensors import NpyStream

    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    monkeypatch.setattr(stream_module, "INLINE_BYTES", inline_bytes)
    write_ct_series(tmp_path / "data", 1, n_slices=9, size=16)
    calls = []
    original = NpyStream.write_parts  # what the write thread calls for each slab

    def failing(self, parts):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return original(self, parts)

    monkeypatch.setattr(NpyStream, "write_parts", failing)
    report = build(load_recipe(_recipe(tmp_path, "r")), show_progress=False)
    assert report.exit_code == 1 and "No space left" in report.failed[0][1]
    assert not list((tmp_path / "out-r").rglob("*.npy"))
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]
    assert not list((tmp_path / ".medflow" / "cache" / "objects").rglob("*.mfc"))  # no stored-values entry


def test_small_items_are_written_inline_and_large_ones_on_threads_with_the_same_bytes(tmp_path, monkeypatch):
    import medflow.engine.stream as stream_module

    assert stream_module.write_depth(stream_module.INLINE_BYTES, 1, 1) == 0
    assert stream_module.write_depth(stream_module.INLINE_BYTES // 4 + 1, 1, 4) == stream_module.WRITE_DEPTH
    assert stream_module.write_depth(1 << 30, 16, 16) == stream_module.WRITE_DEPTH

    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    write_ct_series(tmp_path / "data", 1, n_slices=7, size=16)
    started = []
    original_start = threading.Thread.start

    def start(self):
        started.append(self.name)
        return original_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    outputs = {}
    for inline_bytes in (1 << 30, 0):
        monkeypatch.setattr(stream_module, "INLINE_BYTES", inline_bytes)
        started.clear()
        name = f"i{inline_bytes}"
        report = build(load_recipe(_recipe(tmp_path, name)), show_progress=False)
        assert report.exit_code == 0 and report.computed == 1
        writes = started.count("medflow-write")
        assert writes == (0 if inline_bytes else 1)  # the write thread (it also hashes), or none
        (npy,) = (tmp_path / f"out-{name}").rglob("*.npy")
        (entry,) = report.manifest["items"]
        outputs[inline_bytes] = (npy.read_bytes(), [o["blake3"] for o in entry["outputs"]])
        shutil.rmtree(tmp_path / ".medflow")  # the next build decodes and writes the stored values again
    assert outputs[0] == outputs[1 << 30]


def test_a_build_and_its_rebuild_never_wait_for_the_disk(tmp_path, monkeypatch):
    """No fsync anywhere: on ext4 fsyncing the manifest waited for every output to reach the disk."""
    import os

    def forbidden(fd):
        raise AssertionError("fsync called")

    monkeypatch.setattr(os, "fsync", forbidden)
    monkeypatch.setattr(os, "fdatasync", forbidden)
    write_ct_series(tmp_path / "data", 1, n_slices=3, size=16)
    first = build(load_recipe(_recipe(tmp_path, "r")), show_progress=False)
    again = build(load_recipe(_recipe(tmp_path, "r"), overrides=["steps[0].level=-500"]), show_progress=False)
    assert first.exit_code == again.exit_code == 0
    assert (tmp_path / "out-r" / "manifest.json").is_file() and list((tmp_path / "out-r").rglob("*.npy"))


def test_write_behind_keeps_order_releases_every_buffer_and_reports_the_first_failure():
    done, released = [], []
    writer = WriteBehind(depth=1)
    for k in range(5):
        writer.submit(lambda k=k: (time.sleep(0.001), done.append(k)), lambda k=k: released.append(k))
    writer.finish()
    assert done == released == list(range(5))

    writer, released = WriteBehind(depth=1), []

    def boom():
        raise ValueError("disk")

    writer.submit(boom, lambda: released.append("a"))
    writer.submit(lambda: released.append("never"), lambda: released.append("b"))
    with pytest.raises(ValueError, match="disk"):
        for _ in range(3):
            writer.submit(lambda: None, lambda: released.append("c"))
        writer.finish()
    writer.stop()
    assert "never" not in released and released[:2] == ["a", "b"]


@pytest.mark.parametrize("lane", ["write-thread", "beside"])
@pytest.mark.parametrize("failing", ["write", "hash"])
def test_a_write_or_hash_failing_on_the_write_thread_fails_its_item_alone_and_leaves_no_temp_file(
        tmp_path, monkeypatch, failing, lane):
    import errno

    import medflow.engine.stream as stream_module
    from medflow.writers.tensors import NpyStream

    if lane == "write-thread":
        monkeypatch.setattr(stream_module, "INLINE_BYTES", 0)  # every item on the write thread
    else:  # every item written on its own thread, hashed on the process's helper thread meanwhile
        monkeypatch.setattr(stream_module, "INLINE_BYTES", 1 << 30)
        monkeypatch.setattr(stream_module, "HASH_BESIDE_BYTES", 0)
    monkeypatch.setattr(stream_module, "SLAB_SLICES", 1)
    for series in (1, 2, 3):
        write_ct_series(tmp_path / "data", series, n_slices=6, size=16)
    calls = {"n": 0}
    method = "write_parts" if failing == "write" else "hash_parts"
    original = getattr(NpyStream, method)

    def third_call_fails(self, parts):
        calls["n"] += 1
        if calls["n"] == 3:  # the third slab of the first item built
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, parts)

    monkeypatch.setattr(NpyStream, method, third_call_fails)
    report = build(load_recipe(_recipe(tmp_path, "f")), show_progress=False)
    statuses = sorted(item["status"] for item in report.manifest["items"])
    assert statuses == ["failed", "ok", "ok"]
    (failed,) = [item for item in report.manifest["items"] if item["status"] == "failed"]
    assert "No space left on device" in failed["error"]
    assert not list(tmp_path.rglob(".medflow-tmp-*"))
    assert len(list((tmp_path / "out-f").rglob("*.npy"))) == 2


def test_write_and_hash_keeps_each_kind_in_order_and_releases_a_slab_after_both():
    writes, hashes, released = [], [], []
    lanes = WriteAndHash(depth=1)
    for k in range(30):
        lanes.submit(lambda k=k: (time.sleep(0.0005), writes.append(k)),
                     lambda k=k: hashes.append((k, k in writes or None)),
                     lambda k=k: released.append((k, k in writes, k in [h for h, _ in hashes])))
    lanes.finish()
    assert writes == list(range(30)) and [k for k, _ in hashes] == list(range(30))
    assert sorted(released) == [(k, True, True) for k in range(30)]


def test_write_and_hash_lets_the_producer_hash_while_the_writes_are_behind():
    """A slow write: the producer, instead of waiting for room, runs the hashes (in order)."""
    hashed_on = []
    lanes = WriteAndHash(depth=1)
    for k in range(8):
        lanes.submit(lambda: time.sleep(0.02), lambda k=k: hashed_on.append((k, threading.current_thread().name)))
    lanes.finish()
    assert [k for k, _ in hashed_on] == list(range(8))
    assert sum(name == threading.main_thread().name for _, name in hashed_on) >= 6


def test_write_and_hash_reports_the_first_failure_and_releases_every_slab():
    released = []
    lanes = WriteAndHash(depth=1)

    def boom():
        raise ValueError("disk")

    lanes.submit(boom, lambda: None, lambda: released.append("a"))
    lanes.submit(lambda: released.append("never"), lambda: None, lambda: released.append("b"))
    with pytest.raises(ValueError, match="disk"):
        for _ in range(5):
            time.sleep(0.01)
            lanes.submit(lambda: None, lambda: None, lambda: released.append("c"))
        lanes.finish()
    lanes.stop()
    assert "never" not in released and released[:2] == ["a", "b"]
    assert lanes._unreleased == 0 and not lanes._thread.is_alive()


def test_write_and_hash_stop_skips_what_has_not_started():
    released, ran = [], []
    lanes = WriteAndHash(depth=4)
    gate = threading.Event()
    lanes.submit(lambda: (gate.wait(2), ran.append(0)), lambda: ran.append("h0"), lambda: released.append(0))
    for k in range(1, 4):
        lanes.submit(lambda k=k: ran.append(k), lambda: None, lambda k=k: released.append(k))
    stopper = threading.Thread(target=lanes.stop)
    stopper.start()
    time.sleep(0.05)
    gate.set()
    stopper.join(5)
    assert not stopper.is_alive() and sorted(released) == [0, 1, 2, 3]
    assert not any(k in ran for k in (1, 2, 3))


def test_write_and_hash_inline_runs_each_slab_in_submit():
    order = []
    lanes = WriteAndHash(depth=0)
    lanes.submit(lambda: order.append("w"), lambda: order.append("h"), lambda: order.append("r"))
    assert order == ["w", "h", "r"]
    lanes.finish()


def test_a_small_items_hash_runs_beside_its_write_with_the_same_bytes_and_digests(tmp_path, monkeypatch):
    import medflow.engine.stream as stream_module
    from medflow.writers.tensors import NpyStream

    monkeypatch.setattr(stream_module, "INLINE_BYTES", 1 << 30)  # no write thread of the item's own
    write_ct_series(tmp_path / "data", 1, n_slices=5, size=16)
    hashed_on = []
    original = NpyStream.hash_parts

    def hash_parts(self, parts):
        hashed_on.append(threading.current_thread().name)
        return original(self, parts)

    monkeypatch.setattr(NpyStream, "hash_parts", hash_parts)
    outputs = {}
    for beside_bytes in (1 << 30, 0):
        monkeypatch.setattr(stream_module, "HASH_BESIDE_BYTES", beside_bytes)
        hashed_on.clear()
        name = f"b{beside_bytes}"
        report = build(load_recipe(_recipe(tmp_path, name)), show_progress=False)
        assert report.exit_code == 0
        assert set(hashed_on) == ({"medflow-beside"} if beside_bytes == 0 else {threading.current_thread().name})
        (npy,) = (tmp_path / f"out-{name}").rglob("*.npy")
        (entry,) = report.manifest["items"]
        outputs[beside_bytes] = (npy.read_bytes(), [o["blake3"] for o in entry["outputs"]])
        shutil.rmtree(tmp_path / ".medflow")
    assert outputs[0] == outputs[1 << 30]


def test_beside_runs_the_job_on_its_thread_and_returns_only_when_both_are_done():
    from medflow.engine.writebehind import BESIDE

    ran = []
    BESIDE.run(lambda: (time.sleep(0.02), ran.append(("job", threading.current_thread().name))),
               lambda: ran.append(("other", threading.current_thread().name)))
    assert sorted(ran) == [("job", "medflow-beside"), ("other", threading.current_thread().name)]

    finished = []
    with pytest.raises(ValueError, match="other"):  # the calling thread's failure first...
        BESIDE.run(lambda: (time.sleep(0.05), finished.append(1)), lambda: (_ for _ in ()).throw(ValueError("other")))
    assert finished == [1]  # ...raised only once the job (which may read the same buffers) ended
    with pytest.raises(OSError, match="job"):
        BESIDE.run(lambda: (_ for _ in ()).throw(OSError("job")), lambda: None)
    BESIDE.run(lambda: finished.append(2), lambda: None)  # a failure does not end the thread
    assert finished == [1, 2]


def test_buffer_pool_makes_at_most_its_limit_and_waits_for_a_release():
    pool = BufferPool((2, 2), np.float32, 2)
    a, b = pool.get(), pool.get()
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.get()))
    waiter.start()
    time.sleep(0.05)
    assert not got  # both in use: waits
    pool.put(a)
    waiter.join(2)
    assert got and got[0] is a and b is not a


@pytest.mark.parametrize("cores", [8, 2])
def test_two_workers_on_one_series_thread_its_slabs_on_cores_its_threads_leave(tmp_path, monkeypatch, cores):
    """A single item with --workers 2 gathers its slabs on two threads when the machine has cores to
    spare beside its reader, write and hash threads; on 2 cores on one (a pool only competed there).
    Same bytes as one worker either way."""
    import medflow.engine.stream as stream_module
    import medflow.threads

    monkeypatch.setattr(medflow.threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    names = set()
    original = stream_module.folding.Folder.apply

    def recording(self, *args, **kwargs):
        names.add(threading.current_thread().name.split("_")[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(stream_module.folding.Folder, "apply", recording)
    write_ct_series(tmp_path / "data", 0, n_slices=12, size=16)
    shutil.copytree(tmp_path / "data", tmp_path / "data2")
    one = build(load_recipe(_recipe(tmp_path, "one")), show_progress=False)
    two = build(load_recipe(_recipe(tmp_path, "two"), overrides=["engine.workers=2"]), show_progress=False)
    assert one.exit_code == two.exit_code == 0
    assert ("medflow-slab" in names) == (cores > 2)
    one_bytes = {p.name: p.read_bytes() for p in (tmp_path / "out-one").rglob("*.npy")}
    assert one_bytes == {p.name: p.read_bytes() for p in (tmp_path / "out-two").rglob("*.npy")}


@pytest.mark.parametrize("raw_scanner", [True, False], ids=["raw-scanner", "pydicom-discovery"])
def test_a_cold_build_parses_each_header_once(tmp_path, monkeypatch, raw_scanner):
    """Discovery keeps what reading needs (positions, rescale, pixel layout, photometric, units): the reader
    parses no header at all, and no header becomes JSON unless a step reads it. Discovery reads these
    plain files' headers with the raw scanner (medflow.sources.rawheader), not pydicom; with the
    scanner declining, it parses each with pydicom, once."""
    import medflow.sources.discovery as discovery
    import medflow.sources.rawheader as rawheader
    import medflow.sources.series as series

    write_ct_series(tmp_path / "data", 1, n_slices=7, size=16)
    parsed, scanned = [], []
    original, scan = discovery.read_image_header, rawheader.scan_file
    monkeypatch.setattr(discovery, "read_image_header", lambda *a, **k: parsed.append(a[0]) or original(*a, **k))
    monkeypatch.setattr(series, "read_image_header", discovery.read_image_header)
    monkeypatch.setattr(rawheader, "scan_file", lambda p: scanned.append(p) or (scan(p) if raw_scanner else None))
    report = build(load_recipe(_recipe(tmp_path, "r")), show_progress=False)
    assert report.exit_code == 0
    assert len(scanned) == 7
    files = sorted((tmp_path / "data").rglob("*.dcm"))
    assert sorted(map(Path, parsed)) == ([] if raw_scanner else files)  # discovery's one parse per file, or none


def _rle_series(folder: Path, n_slices: int = 5) -> list[Path]:
    """A CT series in RLE Lossless (pydicom's own encoder), random values."""
    import pydicom
    from pydicom.uid import RLELossless

    rng = np.random.default_rng(8)
    paths = write_ct_series(folder, 1, n_slices=n_slices, size=16)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PixelData = rng.integers(-1024, 3000, size=(16, 16)).astype(np.int16).tobytes()
        ds.compress(RLELossless)
        ds.save_as(path, enforce_file_format=True)
    return paths


def test_a_cold_build_of_compressed_files_parses_each_header_once_and_gives_the_plain_bytes(tmp_path, monkeypatch):
    """Discovery keeps the transfer syntax with the other reading facts: the reader decodes each
    compressed file (pydicom reads it to decode) without parsing its header again first."""
    import pydicom

    import medflow.sources.discovery as discovery
    import medflow.sources.series as series

    paths = _rle_series(tmp_path / "data", 5)
    parsed = []
    original = discovery.read_image_header
    monkeypatch.setattr(discovery, "read_image_header", lambda *a, **k: parsed.append(a[0]) or original(*a, **k))
    monkeypatch.setattr(series, "read_image_header", discovery.read_image_header)
    streamed = build(load_recipe(_recipe(tmp_path, "s")), show_progress=False)
    assert streamed.exit_code == 0
    assert sorted(map(Path, parsed)) == sorted(paths)  # discovery's parse, none by the reader
    monkeypatch.undo()
    plain = build(load_recipe(_recipe(tmp_path, "p"), overrides=["engine.stream=false", "engine.fold_pointwise=false"]),
                  show_progress=False)
    assert plain.exit_code == 0
    (s_file,), (p_file,) = list((tmp_path / "out-s").rglob("*.npy")), list((tmp_path / "out-p").rglob("*.npy"))
    assert s_file.read_bytes() == p_file.read_bytes()
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == pydicom.uid.RLELossless


def test_stale_facts_of_a_compressed_file_fall_back_to_parsing_and_name_the_file(tmp_path):
    import pydicom

    from medflow.errors import InputError
    from medflow.recipe.model import SeriesFilter
    from medflow.sources.discovery import discover_dicom, header_facts
    from medflow.sources.fingerprint import FingerprintMemo
    from medflow.sources.series import _READ_FACT_FIELDS, open_stored_slabs

    paths = _rle_series(tmp_path / "data", 3)
    (item,) = discover_dicom(tmp_path / "data", SeriesFilter(), FingerprintMemo(None)).items
    facts = tuple(json.loads(header_facts(tmp_path / "data" / rel)["read"]) for rel in item.files)  # as prepare gives them
    syntax = _READ_FACT_FIELDS.index("syntax")
    assert all(f[syntax] == pydicom.uid.RLELossless for f in facts)  # the syntax rides with the facts
    _, slabs = open_stored_slabs(item, "first", 4, read_facts=facts)
    (array, release), = list(slabs)
    assert np.array_equal(array[2], pydicom.dcmread(paths[2]).pixel_array)
    ds = pydicom.dcmread(paths[2])  # rewritten after discovery: 8 x 8 now
    ds.decompress()
    ds.Rows = ds.Columns = 8
    ds.PixelData = np.zeros((8, 8), np.int16).tobytes()
    ds.compress(pydicom.uid.RLELossless)
    ds.save_as(paths[2])
    _, slabs = open_stored_slabs(item, "first", 4, read_facts=facts)
    with pytest.raises(InputError, match="slice002.dcm"):
        list(slabs)


def test_stale_reading_facts_fall_back_to_parsing_and_name_the_file(tmp_path):
    import pydicom

    from medflow.errors import InputError
    from medflow.recipe.model import SeriesFilter
    from medflow.sources.discovery import discover_dicom
    from medflow.sources.fingerprint import FingerprintMemo
    from medflow.sources.series import open_stored_slabs, read_facts

    paths = write_ct_series(tmp_path / "data", 1, n_slices=3, size=16)
    (item,) = discover_dicom(tmp_path / "data", SeriesFilter(), FingerprintMemo(None)).items
    facts = tuple(read_facts(read_image_header(tmp_path / "data" / rel)) for rel in item.files)  # as the memo keeps them
    _, slabs = open_stored_slabs(item, "first", 4, read_facts=facts)
    (array, release), = list(slabs)
    assert np.array_equal(array[1], pydicom.dcmread(paths[1]).pixel_array)
    ds = pydicom.dcmread(paths[2])  # rewritten after discovery: 8 x 8 now
    ds.Rows = ds.Columns = 8
    ds.PixelData = np.zeros((8, 8), np.int16).tobytes()
    ds.save_as(paths[2])
    _, slabs = open_stored_slabs(item, "first", 4, read_facts=facts)
    with pytest.raises(InputError, match="slice002.dcm"):
        list(slabs)


def test_a_slice_that_cannot_be_read_after_discovery_fails_with_one_line_naming_it(tmp_path):
    from medflow.errors import InputError
    from medflow.recipe.model import SeriesFilter
    from medflow.sources.discovery import discover_dicom
    from medflow.sources.fingerprint import FingerprintMemo
    from medflow.sources.series import open_stored_slabs, read_facts

    paths = write_ct_series(tmp_path / "data", 1, n_slices=3, size=16)
    (item,) = discover_dicom(tmp_path / "data", SeriesFilter(), FingerprintMemo(None)).items
    facts = tuple(read_facts(read_image_header(tmp_path / "data" / rel)) for rel in item.files)
    paths[1].unlink()  # gone between discovery and reading
    _, slabs = open_stored_slabs(item, "first", 4, read_facts=facts)
    with pytest.raises(InputError) as caught:
        list(slabs)
    message = str(caught.value)
    assert "slice001.dcm" in message and "\n" not in message
    assert "No such file" in message


@pytest.mark.parametrize("kept", ["true", "auto"])
def test_a_first_step_change_rebuilds_from_the_stored_values_without_parsing_a_header(tmp_path, monkeypatch, kept):
    """The stored-values entry keeps each slice's pixel-description key: a window change re-streams
    from it without opening a DICOM file or parsing a header, with the bytes of a cold build. With no
    entry (auto, native files) it streams the files' pixel data from discovery's facts, parsing no
    header either."""
    import medflow.sources.pixels as pixels

    write_ct_series(tmp_path / "data", 1, n_slices=6, size=16)
    engine = f"  cache_stored_values: {kept}\n"
    first = build(load_recipe(_recipe(tmp_path, "r", engine=engine)), show_progress=False)
    assert first.exit_code == 0

    def forbidden(*args, **kwargs):
        raise AssertionError("a header was parsed")

    monkeypatch.setattr(pixels, "raw_header_dataset", forbidden)
    monkeypatch.setattr(pixels, "_read_header", forbidden)
    changed = build(load_recipe(_recipe(tmp_path, "r", engine=engine), overrides=["steps[0].level=-550", "outputs.dir=out-changed"]),
                    show_progress=False)
    assert changed.exit_code == 0
    (computed,) = changed.manifest["run"]["computed"].values()
    # true: no read step, the stored values came from the cache; auto: read from the files' pixel data
    assert computed[0] == ("window" if kept == "true" else "dicom_read")
    monkeypatch.undo()
    cold = build(load_recipe(_recipe(tmp_path, "r"), overrides=["steps[0].level=-550", "outputs.dir=out-cold",
                                                                 f"engine.cache_dir={tmp_path / 'cold-cache'}"]),
                 show_progress=False)
    changed_bytes = {p.name: p.read_bytes() for p in (tmp_path / "out-changed").rglob("*.npy")}
    assert changed_bytes and changed_bytes == {p.name: p.read_bytes() for p in (tmp_path / "out-cold").rglob("*.npy")}
    assert cold.exit_code == 0


@pytest.mark.parametrize("variant", ["ct", "monochrome1", "no-rescale-tags", "mr"])
def test_an_item_placed_from_discovery_facts_has_the_meta_and_headers_of_one_placed_from_parsed_headers(
        tmp_path, variant):
    """The facts carry what the item's attributes need (photometric, whether a rescale is declared), so the
    reader parses no header; the skeleton (meta, geometry, headers) is the one the parsed headers give."""
    import pydicom

    from medflow.recipe.model import SeriesFilter
    from medflow.sources.discovery import discover_dicom
    from medflow.sources.fingerprint import FingerprintMemo
    from medflow.sources.series import open_stored_slabs, read_facts

    paths = write_ct_series(tmp_path / "data", 1, n_slices=4, size=16)
    for path in paths:
        ds = pydicom.dcmread(path)
        if variant == "monochrome1":
            ds.PhotometricInterpretation = "MONOCHROME1"
        elif variant == "no-rescale-tags":
            del ds.RescaleSlope, ds.RescaleIntercept
        elif variant == "mr":
            ds.Modality = "MR"
        ds.save_as(path)
    (item,) = discover_dicom(tmp_path / "data", SeriesFilter(), FingerprintMemo(None)).items
    facts = tuple(read_facts(read_image_header(tmp_path / "data" / rel)) for rel in item.files)
    placed, slabs = open_stored_slabs(item, "first", 4, read_facts=facts)
    (from_facts, release), = list(slabs)
    from_facts = from_facts.copy()
    release()
    parsed, slabs = open_stored_slabs(item, "first", 4)
    (from_headers, release), = list(slabs)
    assert np.array_equal(from_facts, from_headers)
    release()
    assert placed.meta == parsed.meta
    assert placed.meta["photometric_interpretation"] == pydicom.dcmread(paths[0]).PhotometricInterpretation
    expected_units = {"ct": "HU", "monochrome1": "HU", "no-rescale-tags": "stored*slope+intercept",
                      "mr": "stored*slope+intercept"}[variant]
    assert placed.meta["units"] == expected_units
    assert placed.geometry == parsed.geometry
    assert list(placed.headers) == list(parsed.headers)
    assert placed.pixels.dtype == parsed.pixels.dtype


FROM_HEADER = ("steps:\n  - step: window\n    from_header: true\n"
               "  - step: layout\n    layout: NCHW\n    dtype: float32\n")


def _item_records(report) -> list:
    items = report.manifest["items"]
    items = list(items.values()) if isinstance(items, dict) else list(items)  # a build's entries: an EntrySpool
    return [(item["meta"], item["outputs"]) for item in items]


def _streamed_equals_plain(tmp_path: Path, steps: str = FROM_HEADER) -> dict:
    """Build ``tmp_path/data`` streamed (out-s) and on the plain path (out-p); both succeed with the
    same item records. Returns the meta of the one item."""
    streamed = build(load_recipe(_recipe(tmp_path, "s", steps)), show_progress=False)
    plain = build(load_recipe(_recipe(tmp_path, "p", steps), overrides=["engine.stream=false"]),
                  show_progress=False)
    assert streamed.exit_code == plain.exit_code == 0
    assert _item_records(streamed) == _item_records(plain)
    (meta, _), = _item_records(streamed)
    return meta


def test_slices_with_their_own_windows_get_the_records_of_the_whole_volume_path(tmp_path, monkeypatch):
    """window from_header on slices whose headers differ: the manifest lists every slice's window, as
    the plain path does, not the first slab's window for the whole item (same tensor bytes either way)."""
    import pydicom

    import medflow.engine.stream as stream_module

    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    files = write_ct_series(tmp_path / "data", 1, n_slices=6, size=16)
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.WindowCenter, ds.WindowWidth = (40, 400) if index < 3 else (-600, 1500)
        ds.save_as(path)
    meta = _streamed_equals_plain(tmp_path)
    assert [(w["center"], w["width"]) for w in meta["window"]["per_slice"]] == [(40, 400)] * 3 + [(-600, 1500)] * 3


def test_real_series_with_per_slice_windows_stream_to_the_plain_path_records(tmp_path, shared_data):
    """dcm_qa_ct's series carry a window per slice: streamed and plain builds record the same meta."""
    source = shared_data / "dcm_qa_ct"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"medflow: 1\nname: r\nsource:\n  dicom: {source}\n{FROM_HEADER}outputs:\n  dir: out-r\n"
                      "engine:\n  workers: 1\n")
    streamed = build(load_recipe(recipe, overrides=["outputs.dir=out-s"]), show_progress=False)
    plain = build(load_recipe(recipe, overrides=["outputs.dir=out-p", "engine.stream=false"]), show_progress=False)
    assert streamed.exit_code == plain.exit_code == 0
    records = _item_records(streamed)
    assert records == _item_records(plain)
    assert any("per_slice" in meta["window"] for meta, _ in records)


def _stored_entries(cache: Path) -> int:
    return len(list(cache.rglob("*.mfc")))


@pytest.mark.parametrize("compressed", [False, True], ids=["native", "rle"])
def test_auto_keeps_the_stored_values_only_of_files_costly_to_read_again(tmp_path, compressed):
    """engine.cache_stored_values: auto (the default) keeps no copy of stored values the streamed
    reader takes straight from native files (a rebuild reads them as fast as the copy), keeps the
    copy of compressed files (a rebuild decodes nothing), and a first-step change gives the bytes
    of a build from nothing either way."""
    if compressed:
        _rle_series(tmp_path / "data", n_slices=6)
    else:
        write_ct_series(tmp_path / "data", 1, n_slices=6, size=16)
    builds = {}
    for mode in ("auto", "true", "false"):
        overrides = [f"engine.cache_stored_values={mode}", f"outputs.dir=out-{mode}",
                     f"engine.cache_dir={tmp_path / ('cache-' + mode)}"]
        builds[mode] = build(load_recipe(_recipe(tmp_path, "r"), overrides=overrides), show_progress=False)
        assert builds[mode].exit_code == 0
    kept, lean = _stored_entries(tmp_path / "cache-true"), _stored_entries(tmp_path / "cache-false")
    assert kept == lean + 1  # the one item's stored values
    assert _stored_entries(tmp_path / "cache-auto") == (kept if compressed else lean)
    assert load_recipe(_recipe(tmp_path, "r")).recipe.engine.cache_stored_values == "auto"  # the default

    tensors = {p.name: p.read_bytes() for p in (tmp_path / "out-true").rglob("*.npy")}
    assert tensors and tensors == {p.name: p.read_bytes() for p in (tmp_path / "out-auto").rglob("*.npy")}
    changed = build(load_recipe(_recipe(tmp_path, "r"), overrides=[
        "steps[0].level=-550", "outputs.dir=out-changed", f"engine.cache_dir={tmp_path / 'cache-auto'}"]),
        show_progress=False)
    (computed,) = changed.manifest["run"]["computed"].values()
    assert changed.exit_code == 0 and computed[0] == ("window" if compressed else "dicom_read")
    fresh = build(load_recipe(_recipe(tmp_path, "r"), overrides=[
        "steps[0].level=-550", "outputs.dir=out-fresh", f"engine.cache_dir={tmp_path / 'cache-fresh'}"]),
        show_progress=False)
    changed_bytes = {p.name: p.read_bytes() for p in (tmp_path / "out-changed").rglob("*.npy")}
    assert fresh.exit_code == 0 and changed_bytes != tensors
    assert changed_bytes and changed_bytes == {p.name: p.read_bytes() for p in (tmp_path / "out-fresh").rglob("*.npy")}


@pytest.mark.parametrize("stream", ["true", "false"], ids=["streamed", "whole-volume"])
def test_stored_values_can_be_left_out_of_the_cache(tmp_path, stream):
    """engine.cache_stored_values: false keeps no copy of the stored values (the cache holds only the
    small records), gives the same bytes, and a first-step change reads the DICOM files again."""
    write_ct_series(tmp_path / "data", 1, n_slices=6, size=16)
    kept = build(load_recipe(_recipe(tmp_path, "r"), overrides=[f"engine.stream={stream}", "outputs.dir=out-kept",
                                                                 "engine.cache_stored_values=true",
                                                                 f"engine.cache_dir={tmp_path / 'kept-cache'}"]),
                 show_progress=False)
    lean = [f"engine.stream={stream}", "engine.cache_stored_values=false", f"engine.cache_dir={tmp_path / 'lean'}"]
    first = build(load_recipe(_recipe(tmp_path, "r"), overrides=[*lean, "outputs.dir=out-lean"]), show_progress=False)
    assert kept.exit_code == first.exit_code == 0
    entries = {name: len(list((tmp_path / name).rglob("*.mfc"))) for name in ("kept-cache", "lean")}
    assert entries["lean"] == entries["kept-cache"] - 1  # the one item's stored values (whole volumes: the output stays)
    tensors = {p.name: p.read_bytes() for p in (tmp_path / "out-kept").rglob("*.npy")}
    assert tensors and tensors == {p.name: p.read_bytes() for p in (tmp_path / "out-lean").rglob("*.npy")}

    again = build(load_recipe(_recipe(tmp_path, "r"), overrides=[*lean, "outputs.dir=out-lean"]), show_progress=False)
    assert again.from_cache == 1 and again.computed == 0  # the records alone make a no-op rebuild
    changed = build(load_recipe(_recipe(tmp_path, "r"), overrides=[*lean, "steps[0].level=-550", "outputs.dir=out-2"]),
                    show_progress=False)
    (computed,) = changed.manifest["run"]["computed"].values()
    assert changed.exit_code == 0 and computed[0] == "dicom_read"  # read again: nothing was kept to start from
