"""What the fused-table scripts share (``fused_seed.py``, ``fused_ich.py``): find the series, then stream each.

Each script gives the per-rescale table of its pipeline and the per-slice gather; this module
groups the native 16-bit files by series, sorts them along the slice normal, reads each file's
stored values straight from its Pixel Data bytes and writes the .npy slice by slice. Imports only
numpy and pydicom, as the scripts did on their own.
"""

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom

NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # Implicit / Explicit VR Little Endian


def main(table, gather, descr: str, slice_shape) -> None:
    """``SCRIPT DICOM_DIR OUT_DIR``: one ``<SeriesInstanceUID>.npy`` per series.

    ``table(slope, intercept, signed)``: the lookup table of one rescale (made once per distinct
    rescale); ``gather(table, index, out)``: fills ``out`` (a reused buffer of
    ``slice_shape(rows, cols)`` and dtype ``descr``) from the slice's stored values ``index``
    (uint16, the bit pattern of the stored values).
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("dicom_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    series = defaultdict(list)
    for path in sorted(Path(args.dicom_dir).rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        z = float(np.dot(np.cross(iop[:3], iop[3:]), np.array(ds.ImagePositionPatient, dtype=float)))
        series[ds.SeriesInstanceUID].append((z, path, float(ds.get("RescaleSlope", 1)),
                                             float(ds.get("RescaleIntercept", 0)), int(ds.PixelRepresentation)))
    for uid, slices in series.items():
        slices.sort(key=lambda s: s[0])
        first = pydicom.dcmread(slices[0][1], stop_before_pixels=True)
        rows, cols = int(first.Rows), int(first.Columns)
        tables = {}
        out = np.empty(slice_shape(rows, cols), dtype=np.dtype(descr))
        with open(os.path.join(args.out_dir, f"{uid}.npy"), "wb") as f:
            header = {"descr": descr, "fortran_order": False, "shape": (len(slices), *out.shape)}
            np.lib.format.write_array_header_1_0(f, header)
            for _z, path, slope, intercept, signed in slices:
                lut = tables.get((slope, intercept, signed))
                if lut is None:
                    lut = tables[(slope, intercept, signed)] = table(slope, intercept, signed)
                gather(lut, _stored_index(path, rows, cols), out)
                f.write(memoryview(out).cast("B"))


def _stored_index(path: Path, rows: int, cols: int) -> np.ndarray:
    """The file's stored values as uint16 (their bit pattern), from its Pixel Data bytes."""
    ds = pydicom.dcmread(path)
    if (ds.file_meta.TransferSyntaxUID not in NATIVE_LE or ds.BitsAllocated != 16
            or (ds.BitsStored != 16 and ds.PixelRepresentation == 1)):
        raise SystemExit(f"{path}: not a native 16-bit file this script reads directly")
    index = np.frombuffer(ds.PixelData, np.uint16, rows * cols).reshape(rows, cols)
    if ds.BitsStored != 16 and index.max() >> ds.BitsStored:  # bits above BitsStored: as pydicom
        index = index & np.uint16((1 << ds.BitsStored) - 1)
    return index
