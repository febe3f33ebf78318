"""Pixel Data is checked against the declared image before anything is allocated (issue 9).

Expected byte counts come from PS3.5 8.1.1 (Rows x Columns x NumberOfFrames x
SamplesPerPixel x BitsAllocated / 8), computed here, not by medflow. Files are written
with pydicom.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from medflow.errors import InputError
from medflow.recipe.model import SeriesFilter
from medflow.sources.discovery import HeaderProblem, discover_dicom, read_image_header
from medflow.sources.fingerprint import FingerprintMemo
from medflow.sources.series import read_item

REPO_ROOT = Path(__file__).resolve().parents[1]


def _ct(path: Path, rows: int, cols: int, pixel_bytes: bytes, *, frames: int | None = None,
        syntax=ExplicitVRLittleEndian) -> Path:
    """A CT image whose header declares ``rows`` x ``cols`` (x ``frames``) over ``pixel_bytes``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, cols
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixel_bytes
    ds["PixelData"].VR = "OW" if syntax != RLELossless else "OB"
    if syntax == RLELossless:
        ds["PixelData"].is_undefined_length = True
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _read_only_item(folder: Path):
    [item] = discover_dicom(folder, SeriesFilter(), FingerprintMemo(None)).items
    return read_item(item)


def _expected_bytes(rows: int, cols: int, frames: int = 1, samples: int = 1, bits: int = 16) -> int:
    return rows * cols * frames * samples * bits // 8  # PS3.5 8.1.1, BitsAllocated a multiple of 8


def test_declared_size_larger_than_the_pixel_data_fails_in_one_line_naming_rows_columns_and_bytes(tmp_path):
    path = _ct(tmp_path / "src" / "huge.dcm", 65535, 65535, bytes(512 * 512 * 2))
    with pytest.raises(InputError) as caught:
        _read_only_item(tmp_path / "src")
    assert caught.value.file == os.fspath(path.resolve())
    assert str(caught.value) == (
        f"{path.resolve()}: pixel data too short for the declared image: Rows 65535 x Columns 65535 x "
        f"NumberOfFrames 1 x SamplesPerPixel 1 at BitsAllocated 16 needs {_expected_bytes(65535, 65535)} "
        f"bytes, Pixel Data (7FE0,0010) holds {512 * 512 * 2} (PS3.5 8.1.1)"
    )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc and RLIMIT_AS")
def test_declared_size_is_checked_before_allocation_under_a_2_gib_address_space_limit(tmp_path):
    """Without the check, read_item allocates 65535 x 65535 float32 (16 GiB) and dies in MemoryError."""
    path = _ct(tmp_path / "src" / "huge.dcm", 65535, 65535, bytes(512 * 512 * 2))
    script = textwrap.dedent(
        f"""
        import json, resource
        limit = 2 << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        from pathlib import Path
        from medflow.errors import InputError
        from medflow.recipe.model import SeriesFilter
        from medflow.sources.discovery import discover_dicom
        from medflow.sources.fingerprint import FingerprintMemo
        from medflow.sources.series import read_item
        [item] = discover_dicom(Path({os.fspath(path.parent)!r}), SeriesFilter(), FingerprintMemo(None)).items
        try:
            read_item(item)
            outcome = "read"
        except InputError as exc:
            outcome = str(exc)
        except MemoryError as exc:
            outcome = "MemoryError: " + str(exc)
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest)
        status = Path("/proc/self/status").read_text()
        peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        print(json.dumps({{"outcome": outcome, "peak_kib": peak_kib}}))
        """
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"].startswith(f"{path.resolve()}: pixel data too short for the declared image: Rows 65535")
    assert "\n" not in result["outcome"]
    assert result["peak_kib"] < 1 << 20  # well under 1 GiB resident


def test_missing_frames_of_native_data_are_reported_before_decoding(tmp_path):
    path = _ct(tmp_path / "src" / "frames.dcm", 8, 8, bytes(_expected_bytes(8, 8, frames=2)), frames=3)
    with pytest.raises(HeaderProblem) as caught:
        read_image_header(path, check_pixel_data=True)
    assert caught.value.reason == (
        "pixel data too short for the declared image: Rows 8 x Columns 8 x NumberOfFrames 3 x "
        f"SamplesPerPixel 1 at BitsAllocated 16 needs {_expected_bytes(8, 8, frames=3)} bytes, "
        f"Pixel Data (7FE0,0010) holds {_expected_bytes(8, 8, frames=2)} (PS3.5 8.1.1)"
    )
    read_image_header(path)  # discovery's header read does not look at the pixel data


def test_pixel_data_longer_than_declared_is_read(tmp_path):
    """A trailing pad byte or excess data is no reason to refuse a file (pydicom ignores it)."""
    values = np.arange(64, dtype="<u2").reshape(8, 8)
    _ct(tmp_path / "src" / "long.dcm", 8, 8, values.tobytes() + bytes(6))
    sample = _read_only_item(tmp_path / "src")
    np.testing.assert_array_equal(sample.pixels[0], values.astype(np.float32))


def test_deflated_pixel_data_is_checked_after_inflating(tmp_path):
    path = _ct(tmp_path / "src" / "dfl.dcm", 64, 64, bytes(32 * 32 * 2), syntax=DeflatedExplicitVRLittleEndian)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    with pytest.raises(HeaderProblem, match=r"Rows 64 x Columns 64 .* needs 8192 bytes, Pixel Data \(7FE0,0010\) holds 2048"):
        read_image_header(path, check_pixel_data=True)


def _rle_frames(count: int, rows: int = 8, cols: int = 8) -> list[bytes]:
    """``count`` RLE Lossless frames encoded by pydicom (PS3.5 G)."""
    from pydicom.pixels.encoders.base import RLELosslessEncoder

    frames = []
    for index in range(count):
        values = np.full((rows, cols), index, dtype="<u2")
        frames.append(
            RLELosslessEncoder.encode(
                values, rows=rows, columns=cols, samples_per_pixel=1, bits_allocated=16, bits_stored=16,
                pixel_representation=0, photometric_interpretation="MONOCHROME2", number_of_frames=1,
            )
        )
    return frames


def test_encapsulated_data_with_fewer_fragments_than_frames_is_reported(tmp_path):
    path = _ct(tmp_path / "e.dcm", 8, 8, encapsulate(_rle_frames(2)), frames=3, syntax=RLELossless)
    with pytest.raises(HeaderProblem) as caught:
        read_image_header(path, check_pixel_data=True)
    assert caught.value.reason == (
        "encapsulated pixel data holds 2 fragment(s) for NumberOfFrames 3: frames are missing "
        "(PS3.5 A.4: a fragment holds data of one frame at most)"
    )


def test_encapsulated_basic_offset_table_must_list_the_declared_frames(tmp_path):
    # 2 frames of 2 fragments each: 4 fragments, enough for 3 frames, but the table lists 2.
    pixel_data = encapsulate(_rle_frames(2), fragments_per_frame=2, has_bot=True)
    path = _ct(tmp_path / "bot.dcm", 8, 8, pixel_data, frames=3, syntax=RLELossless)
    with pytest.raises(HeaderProblem, match=r"^Basic Offset Table lists 2 frame\(s\), NumberOfFrames says 3"):
        read_image_header(path, check_pixel_data=True)


def test_encapsulated_data_with_its_declared_frames_is_read(tmp_path):
    _ct(tmp_path / "src" / "ok.dcm", 8, 8, encapsulate(_rle_frames(3), has_bot=True), frames=3, syntax=RLELossless)
    sample = _read_only_item(tmp_path / "src")
    assert sorted(float(v) for v in sample.pixels[:, 0, 0]) == [0.0, 1.0, 2.0]


def test_implicit_vr_data_set_under_an_explicit_vr_transfer_syntax_is_checked_by_its_own_encoding():
    """SC_rgb_jpeg.dcm says Explicit VR (JPEG Baseline) but is written in implicit VR: its
    Pixel Data length is 4 bytes after the tag, not a 2-byte length after a VR."""
    path = Path(get_testdata_file("SC_rgb_jpeg.dcm"))
    ds = read_image_header(path, check_pixel_data=True)
    assert (ds.Rows, ds.Columns) == (256, 256)
