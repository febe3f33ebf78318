"""Tiny but real CT series written with pydicom, for fast engine tests.

Each series is a stack of small single-frame CT Image Storage files with proper
geometry, RescaleIntercept and deterministic UIDs, so tests control exactly which
file changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = "1.2.826.0.1.3680043.10.1234."


def uid(*parts: object) -> str:
    return generate_uid(prefix=ROOT, entropy_srcs=[str(p) for p in parts])


def write_ct_slice(path: Path, *, series: int, index: int, z: float, size: int = 16, patient: str = "TEST^ONE",
                   pixels: np.ndarray | None = None, intercept: float = -1024.0) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uid("sop", series, index)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study", series)
    ds.SeriesInstanceUID = uid("series", series)
    ds.FrameOfReferenceUID = uid("for", series)
    ds.PatientName = patient
    ds.PatientID = f"ID-{series}"
    ds.Modality = "CT"
    ds.SeriesDescription = f"series {series}"
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-8.0, -8.0, float(z)]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 2.0
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = 1
    if pixels is None:
        rng = np.random.default_rng(series * 1000 + index)
        pixels = rng.integers(0, 2000, size=(size, size)).astype(np.int16)
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_ct_series(folder: Path, series: int, n_slices: int = 4, size: int = 16, **kwargs) -> list[Path]:
    """Write series number ``series`` as ``n_slices`` files under ``folder/s<series>/``, 2 mm apart."""
    return [
        write_ct_slice(folder / f"s{series}" / f"slice{i:03d}.dcm", series=series, index=i, z=2.0 * i, size=size,
                       **kwargs)
        for i in range(n_slices)
    ]
