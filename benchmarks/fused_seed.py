"""The seed pipeline as a fused-table script: the ceiling medflow is measured against (issue 10).

Everything from the stored 16-bit value to the three output channels is a per-pixel
function, so the script evaluates it once on all 65,536 stored values (one table per
channel and per distinct rescale slope/intercept), then streams the series slice by slice:
pydicom reads each file, the stored values are the Pixel Data bytes themselves (native
little-endian files only: the script checks the transfer syntax and the bit layout instead of
going through ``pixel_array``'s decoder machinery), ``np.take`` gathers the table with them
(viewed as uint16) as indices straight into a reused slice buffer, and the slice goes to the
.npy file.
Same math as ``handwritten_seed.py --color bt601`` (HU, LINEAR window, 8-bit index, blue->red,
BT.601 full-range YCbCr in float64 rounded once to float32), so its output is bit-identical to
medflow's ``seed.yaml``. No hashing, no cache, no manifest: only the work itself.

    python benchmarks/fused_seed.py DICOM_DIR OUT_DIR
"""

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom

LEVEL, WIDTH = -600.0, 1500.0
NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # Implicit / Explicit VR Little Endian


def table(slope, intercept, signed):
    """(3, 65536) float32: Y, Cb, Cr of every stored value (indexed by its uint16 bit pattern)."""
    stored = np.arange(65536, dtype=np.uint16).view(np.int16 if signed else np.uint16)
    hu = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    win = np.clip((hu - (LEVEL - 0.5)) / (WIDTH - 1) + 0.5, 0.0, 1.0)
    index = np.rint(win * 255).astype(np.uint8)
    ramp = np.arange(256)
    lut = np.stack([ramp, np.zeros(256), 255 - ramp], axis=1).astype(np.float32) / 255
    rgb = lut[index].astype(np.float64)
    kr, kb = 0.299, 0.114
    kg = 1 - kr - kb
    matrix = np.array([[kr, kg, kb], [-kr / (2 - 2 * kb), -kg / (2 - 2 * kb), 0.5],
                       [0.5, -kg / (2 - 2 * kr), -kb / (2 - 2 * kr)]])
    return np.ascontiguousarray((rgb @ matrix.T + [0.0, 0.5, 0.5]).astype(np.float32).T)


def main():
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
        out = np.empty((3, rows, cols), dtype=np.float32)
        with open(os.path.join(args.out_dir, f"{uid}.npy"), "wb") as f:
            header = {"descr": "<f4", "fortran_order": False, "shape": (len(slices), 3, rows, cols)}
            np.lib.format.write_array_header_1_0(f, header)
            for _z, path, slope, intercept, signed in slices:
                lut = tables.get((slope, intercept, signed))
                if lut is None:
                    lut = tables[(slope, intercept, signed)] = table(slope, intercept, signed)
                ds = pydicom.dcmread(path)
                if (ds.file_meta.TransferSyntaxUID not in NATIVE_LE or ds.BitsAllocated != 16
                        or (ds.BitsStored != 16 and ds.PixelRepresentation == 1)):
                    raise SystemExit(f"{path}: not a native 16-bit file this script reads directly")
                index = np.frombuffer(ds.PixelData, np.uint16, rows * cols).reshape(rows, cols)
                if ds.BitsStored != 16 and index.max() >> ds.BitsStored:  # bits above BitsStored: as pydicom
                    index = index & np.uint16((1 << ds.BitsStored) - 1)
                for c in range(3):
                    np.take(lut[c], index, out=out[c])
                f.write(memoryview(out).cast("B"))


if __name__ == "__main__":
    main()
