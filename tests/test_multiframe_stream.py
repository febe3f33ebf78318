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
