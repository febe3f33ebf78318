"""The seed pipeline as a skilled user writes it without medflow: pydicom + numpy + OpenCV.

Read every file, group by series, sort by position along the slice normal, stack,
rescale to HU, lung window (-600/1500, DICOM LINEAR), quantize to 8 bits, blue->red
LUT, cv2.cvtColor to YCbCr, transpose to NCHW, save one float32 .npy per series.
Deliberately the straightforward whole-volume version: this is the baseline of issue 5.

    python benchmarks/handwritten_seed.py DICOM_DIR OUT_DIR [--color ycbcr|ycrcb|bt601]

``--color ycbcr`` (default, the timed baseline) gives channels (Y, Cb, Cr) by swapping
OpenCV's (Y, Cr, Cb); ``--color ycrcb`` keeps OpenCV's order. Either way the coefficients
are OpenCV's (Cr = (R - Y) * 0.713 + 0.5, Cb = (B - Y) * 0.564 + 0.5), not BT.601's exact
1/1.402 and 1/1.772. ``--color bt601`` (used only for the bit-identity check) replaces
cvtColor by the BT.601 matrix in float64, to show where the differences come from.
"""

import argparse
import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pydicom

LEVEL, WIDTH = -600.0, 1500.0


def read_series(folder):
    """{SeriesInstanceUID: [datasets sorted along the slice normal]}."""
    series = defaultdict(list)
    for path in sorted(Path(folder).rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        series[ds.SeriesInstanceUID].append(ds)
    for slices in series.values():
        iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        slices.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float))))
    return series


def seed_pipeline(slices, color="ycbcr"):
    volume = np.stack([ds.pixel_array for ds in slices])  # z, y, x stored values
    slope = float(getattr(slices[0], "RescaleSlope", 1))
    intercept = float(getattr(slices[0], "RescaleIntercept", 0))
    hu = volume.astype(np.float32) * slope + intercept
    # DICOM PS3.3 C.11.2.1.2.1 LINEAR window to [0, 1]
    win = np.clip((hu - (LEVEL - 0.5)) / (WIDTH - 1) + 0.5, 0.0, 1.0)
    index = np.rint(win * 255).astype(np.uint8)
    ramp = np.arange(256)
    lut = np.stack([ramp, np.zeros(256), 255 - ramp], axis=1).astype(np.float32) / 255  # blue -> red, RGB
    rgb = lut[index]  # z, y, x, 3
    out = np.empty((len(slices), 3) + volume.shape[1:], dtype=np.float32)  # N, C, H, W
    if color == "bt601":
        kr, kb = 0.299, 0.114
        kg = 1 - kr - kb
        matrix = np.array([[kr, kg, kb], [-kr / (2 - 2 * kb), -kg / (2 - 2 * kb), 0.5],
                           [0.5, -kg / (2 - 2 * kr), -kb / (2 - 2 * kr)]])
        for z, rgb_slice in enumerate(rgb):
            out[z] = (rgb_slice.astype(np.float64) @ matrix.T + [0.0, 0.5, 0.5]).transpose(2, 0, 1)
        return out
    order = [0, 2, 1] if color == "ycbcr" else [0, 1, 2]  # OpenCV gives Y, Cr, Cb
    for z, rgb_slice in enumerate(rgb):
        out[z] = cv2.cvtColor(rgb_slice, cv2.COLOR_RGB2YCrCb).transpose(2, 0, 1)[order]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dicom_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--color", choices=["ycbcr", "ycrcb", "bt601"], default="ycbcr")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for uid, slices in read_series(args.dicom_dir).items():
        np.save(os.path.join(args.out_dir, f"{uid}.npy"), seed_pipeline(slices, args.color))


if __name__ == "__main__":
    main()
