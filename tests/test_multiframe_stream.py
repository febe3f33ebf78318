"""A multi-frame (enhanced) image streams frame by frame: the bytes of the whole-volume path, a slab's memory.

The multi-frame files are made by highdicom's legacy conversion (a real Legacy Converted
Enhanced CT Image) from a single-frame series, with the frames in file order shuffled so
that z order is not file order; native and JPEG Lossless (dcmtk) copies.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import medflow.engine.stream as stream_module
from tests.dicom_factory import write_ct_series
from tests.test_fold import SEED_STEPS, _build_both_ways
from tests.test_pixel_path import _item_records
from tests.test_transfer_syntax_builds import _tool


def _enhanced_ct(folder: Path, n_slices: int = 9, size: int = 64, shuffle: bool = True) -> Path:
    import highdicom as hd

    rng = np.random.default_rng(11)
    datasets = []
    for path in write_ct_series(folder / "single", 1, n_slices=n_slices, size=size):
        ds = pydicom.dcmread(path)
        ds.PixelData = rng.integers(-1024, 3000, size=(size, size)).astype(np.int16).tobytes()
        ds.Manufacturer, ds.PatientSex, ds.PatientBirthDate, ds.KVP = "test", "O", "", 120
        ds.StudyTime, ds.StudyDate, ds.ContentDate, ds.ContentTime = "120000", "20200101", "20200101", "120000"
        ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber, ds.AcquisitionNumber = "", "1", "", 1
        datasets.append(ds)
    if shuffle:
        random.Random(5).shuffle(datasets)
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets, series_instance_uid=generate_uid(), series_number=7,
        sop_instance_uid=generate_uid(), instance_number=1)
    target = folder / "data" / "enhanced.dcm"
    target.parent.mkdir(parents=True)
    image.save_as(target)
    return target


@pytest.mark.parametrize("shuffle", [False, True], ids=["frames-in-z-order", "frames-shuffled"])
def test_a_multiframe_image_streams_to_the_bytes_of_the_whole_volume_path(tmp_path, monkeypatch, shuffle):
    _enhanced_ct(tmp_path, shuffle=shuffle)
    opened = []
    original = stream_module.run_streamed
    monkeypatch.setattr(stream_module, "run_streamed", lambda task: opened.append(task.item.kind) or original(task))
    out = _build_both_ways(tmp_path, "  dicom: data", SEED_STEPS, monkeypatch, expect_stream=True)
    assert opened and set(opened) == {"multiframe"}
    assert len(out) == 1  # one tensor, the same bytes three ways (_build_both_ways)


def test_a_compressed_multiframe_image_streams_too(tmp_path, monkeypatch):
    native = _enhanced_ct(tmp_path / "native")
    compressed = tmp_path / "data" / "enhanced.dcm"
    compressed.parent.mkdir(parents=True)
    subprocess.run([_tool("dcmcjpeg"), "--encode-lossless-sv1", str(native), str(compressed)], check=True,
                   capture_output=True)
    assert pydicom.dcmread(compressed, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    _build_both_ways(tmp_path, "  dicom: data", SEED_STEPS, monkeypatch, expect_stream=True)


def test_a_multiframe_image_with_fewer_frames_than_it_declares_fails_naming_the_file(tmp_path):
    from medflow.errors import InputError
    from medflow.recipe.model import SeriesFilter
    from medflow.sources.discovery import discover_dicom
    from medflow.sources.fingerprint import FingerprintMemo
    from medflow.sources.series import open_stored_slabs

    path = _enhanced_ct(tmp_path, shuffle=False)
    ds = pydicom.dcmread(path)
    frame_bytes = 64 * 64 * 2
    ds.PixelData = ds.PixelData[: -frame_bytes]  # one frame short; NumberOfFrames unchanged
    ds.save_as(path)
    (item,) = discover_dicom(tmp_path / "data", SeriesFilter(), FingerprintMemo(None)).items
    with pytest.raises(InputError) as raised:
        _, slabs = open_stored_slabs(item, "first", 4)
        list(slabs)
    assert str(path) in str(raised.value)


def test_frame_headers_are_the_file_header_with_only_that_frames_functional_groups(tmp_path):
    """Oracle: a copy of the data set whose Per-frame Functional Groups Sequence holds only frame f's item."""
    import copy
    import json

    from pydicom.sequence import Sequence as DicomSequence

    from medflow.sources.frame_headers import FrameHeaders
    from medflow.sources.pixels import LazyHeaders, header_json

    ds = pydicom.dcmread(_enhanced_ct(tmp_path, n_slices=5), stop_before_pixels=True)
    frames = [3, 0, 4, 1, 2]
    expected = []
    for f in frames:
        one = copy.deepcopy(ds)
        one.PerFrameFunctionalGroupsSequence = DicomSequence([copy.deepcopy(ds.PerFrameFunctionalGroupsSequence[f])])
        expected.append(header_json(one))
    headers = FrameHeaders(ds, frames)
    assert list(headers) == expected and headers == expected
    assert headers[1:4] == expected[1:4] and headers[-1] == expected[-1]
    entry = json.loads(json.dumps(headers[1:4].to_json()))  # as a cache entry keeps it
    restored = LazyHeaders.from_json(entry)
    assert restored == expected[1:4]
    assert len(json.dumps(entry)) < len(json.dumps(expected[1:4])) / 2  # the shared part once, not per frame
    # frames whose pixel descriptions are equal share a key; a frame window of its own changes it
    keys = {headers.pixel_description(i) for i in range(len(frames))}
    assert len(keys) == 1 and restored.pixel_description(0) in keys
    item = ds.PerFrameFunctionalGroupsSequence[2]
    voi = pydicom.Dataset()
    voi.WindowCenter, voi.WindowWidth = 40, 400
    item.FrameVOILUTSequence = DicomSequence([voi])
    windowed = FrameHeaders(ds, frames)
    assert len({windowed.pixel_description(i) for i in range(len(frames))}) == 2
    assert windowed.pixel_description(4) != windowed.pixel_description(0)  # frame 2 is at index 4


def test_frames_with_their_own_windows_stream_to_the_records_and_bytes_of_the_plain_path(tmp_path, monkeypatch):
    """window from_header on an enhanced image whose frames carry their own Frame VOI LUT (PS3.3 C.7.6.16.2.10)."""
    from pydicom.sequence import Sequence as DicomSequence

    from medflow.engine.build import build
    from medflow.recipe.loader import load_recipe
    from tests.test_pixel_path import FROM_HEADER, _recipe, _streamed_equals_plain

    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    path = _enhanced_ct(tmp_path, n_slices=6, shuffle=False)
    ds = pydicom.dcmread(path)
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        voi = pydicom.Dataset()
        voi.WindowCenter, voi.WindowWidth = (40, 400) if index < 3 else (-600, 1500)
        item.FrameVOILUTSequence = DicomSequence([voi])
    ds.save_as(path)
    meta = _streamed_equals_plain(tmp_path)
    windows = [(w["center"], w["width"]) for w in meta["window"]["per_slice"]]
    assert sorted(windows) == sorted([(40, 400)] * 3 + [(-600, 1500)] * 3)
    assert windows[:3] in ([(40, 400)] * 3, [(-600, 1500)] * 3)  # in z order: neighbours share a window
    s_files, p_files = sorted((tmp_path / "out-s").rglob("*.npy")), sorted((tmp_path / "out-p").rglob("*.npy"))
    first_bytes = s_files[0].read_bytes()
    assert len(s_files) == len(p_files) == 1 and first_bytes == p_files[0].read_bytes()
    # a first-step change rebuilds from the stored values' entry
    changed = FROM_HEADER.replace("from_header: true", "from_header: true\n    output_range: [0, 2]")
    rebuilt = build(load_recipe(_recipe(tmp_path, "s", changed)), show_progress=False)
    cold = build(load_recipe(_recipe(tmp_path, "c", changed)), show_progress=False)
    assert rebuilt.exit_code == cold.exit_code == 0
    assert rebuilt.manifest["run"]["computed"] and _item_records(rebuilt) == _item_records(cold)
    r_files, c_files = sorted((tmp_path / "out-s").rglob("*.npy")), sorted((tmp_path / "out-c").rglob("*.npy"))
    assert r_files[0].read_bytes() == c_files[0].read_bytes() != first_bytes


def test_a_first_step_change_restreams_a_multiframe_image_from_its_stored_values_and_frame_headers(tmp_path,
                                                                                                   monkeypatch):
    from medflow.engine.build import build
    from medflow.recipe.loader import load_recipe
    from medflow.sources.frame_headers import FrameHeaders
    from tests.test_pixel_path import SEED, _recipe

    monkeypatch.setattr(stream_module, "SLAB_SLICES", 2)
    _enhanced_ct(tmp_path, n_slices=7)
    assert build(load_recipe(_recipe(tmp_path, "s")), show_progress=False).exit_code == 0
    restored, parsed = [], []
    original = FrameHeaders.from_json.__func__
    monkeypatch.setattr(FrameHeaders, "from_json", classmethod(lambda cls, e: restored.append(1) or original(cls, e)))
    import medflow.sources.series as series

    monkeypatch.setattr(series, "_header", lambda path: parsed.append(path))
    changed = SEED.replace("level: -600", "level: -500")
    rebuilt = build(load_recipe(_recipe(tmp_path, "s", changed)), show_progress=False)
    assert rebuilt.exit_code == 0 and restored and not parsed  # from the cache entry, the file not opened
    monkeypatch.undo()
    cold = build(load_recipe(_recipe(tmp_path, "c", changed)), show_progress=False)
    assert cold.exit_code == 0 and _item_records(rebuilt) == _item_records(cold)
    (r,), (c,) = sorted((tmp_path / "out-s").rglob("*.npy")), sorted((tmp_path / "out-c").rglob("*.npy"))
    assert r.read_bytes() == c.read_bytes()


def test_frame_headers_read_from_many_threads_at_once_are_the_headers_read_in_turn(tmp_path):
    """Gather threads ask for slabs' headers and keys at once (on machines with cores to spare)."""
    from concurrent.futures import ThreadPoolExecutor

    from medflow.sources.discovery import read_image_header
    from medflow.sources.frame_headers import FrameHeaders

    path = _enhanced_ct(tmp_path, n_slices=12)
    frames = list(range(12))
    expected = list(FrameHeaders(read_image_header(path), frames))
    keys = {FrameHeaders(read_image_header(path), frames).pixel_description(i) for i in frames}
    for _ in range(5):
        shared = FrameHeaders(read_image_header(path), frames)  # a fresh data set: raw elements unconverted
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda i, s=shared: (s[i], s.pixel_description(i)), frames * 4))
        assert [h for h, _ in got] == expected * 4
        assert {k for _, k in got} == keys
