"""Write deterministic synthetic CT series as DICOM files, for the benchmarks.

Each series is a stack of single-frame CT Image Storage files, 512 x 512, 12 bits
stored in 16 (unsigned, RescaleIntercept -1024, like many scanners), uncompressed
Explicit VR Little Endian, axial, 1.5 mm apart. The pixels are a body ellipse with two
lungs, a spine and a table, plus seeded noise: the same arguments always write the same
bytes (UIDs are derived from the series number, no clock, no random UID).

Usage:
    python benchmarks/generate.py OUT_DIR --series 20 --slices 60 [--first 0]

A file ``.OUT_DIR_NAME.complete`` next to ``OUT_DIR`` (outside the dataset, so readers never
see it) records the arguments; a second call with the same arguments does nothing, other
arguments rewrite the folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

GENERATOR_VERSION = 1
SIZE = 512
SPACING_MM = 0.8
STEP_MM = 1.5
UID_ROOT = "1.2.826.0.1.3680043.10.1234.77."


def _uid(*parts: object) -> str:
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts])


def _anatomy(series: int) -> np.ndarray:
    """One slice of HU values (int16): air, body, lungs, spine, table; varies a little per series."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cy, cx = SIZE / 2 + (series % 5) * 3, SIZE / 2 - (series % 7) * 2
    hu = np.full((SIZE, SIZE), -1000, dtype=np.float32)
    body = ((x - cx) / 210) ** 2 + ((y - cy) / 160) ** 2 <= 1
    hu[body] = 40
    for side in (-1, 1):
        lung = ((x - cx - side * 95) / 70) ** 2 + ((y - cy + 10) / 105) ** 2 <= 1
        hu[lung] = -850
    spine = ((x - cx) / 28) ** 2 + ((y - cy - 105) / 28) ** 2 <= 1
    hu[spine] = 700
    hu[(y > cy + 175) & (y < cy + 185) & (np.abs(x - cx) < 230)] = 200  # table
    return hu.astype(np.int16)


def write_series(out: Path, series: int, slices: int) -> None:
    """Write series number ``series`` (``slices`` files) under ``out/series_<n>/``."""
    folder = out / f"series_{series:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    base = _anatomy(series).astype(np.int32)
    rng = np.random.default_rng(1000 + series)
    study, series_uid, frame = _uid("study", series // 2), _uid("series", series), _uid("for", series)
    for index in range(slices):
        noise = rng.integers(-25, 26, size=(SIZE, SIZE), dtype=np.int32)
        ripple = int(40 * np.sin(index / 9.0))  # anatomy changes slowly along z
        stored = np.clip(base + noise + ripple + 1024, 0, 4095).astype(np.uint16)
        _write_slice(folder / f"IM{index:05d}.dcm", stored, series, index, study, series_uid, frame)


def _write_slice(path: Path, stored: np.ndarray, series: int, index: int, study: str, series_uid: str,
                 frame: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = _uid("sop", series, index)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame
    ds.PatientName = f"BENCH^SYNTHETIC{series // 2:03d}"
    ds.PatientID = f"BENCH-{series // 2:03d}"
    ds.StudyDate = "20200101"
    ds.Modality = "CT"
    ds.SeriesDescription = f"synthetic chest {series}"
    ds.SeriesNumber = series + 1
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-SIZE * SPACING_MM / 2, -SIZE * SPACING_MM / 2, -STEP_MM * index]
    ds.SliceLocation = -STEP_MM * index
    ds.PixelSpacing = [SPACING_MM, SPACING_MM]
    ds.SliceThickness = STEP_MM
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = stored.tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def generate(out: Path, series: int, slices: int, first: int = 0) -> bool:
    """Write series ``first .. first + series - 1``; returns False when ``out`` already holds them."""
    spec = {"version": GENERATOR_VERSION, "series": series, "slices": slices, "first": first}
    marker = out.parent / f".{out.name}.complete"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return False
    marker.unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for number in range(first, first + series):
        write_series(out, number, slices)
    marker.write_text(json.dumps(spec))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--series", type=int, required=True)
    parser.add_argument("--slices", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="number of the first series (UIDs derive from it)")
    args = parser.parse_args(argv)
    wrote = generate(args.out, args.series, args.slices, args.first)
    print(f"{'wrote' if wrote else 'kept'} {args.series} x {args.slices} slices in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
