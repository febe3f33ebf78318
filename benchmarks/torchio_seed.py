"""The seed pipeline written with TorchIO transforms (CPU torch), for the benchmark.

ScalarImage (a DICOM series folder, read by SimpleITK's series reader: HU after
RescaleSlope/Intercept) -> Clamp + RescaleIntensity (the LINEAR lung window -600/1500 to
[0, 1]; TorchIO's RescaleIntensity does not clip to its input range, hence the Clamp first) ->
a Lambda for the 8-bit quantization, blue->red LUT and BT.601 YCbCr -> NCHW float32, one .npy
per series folder. What a TorchIO user would write; the LUT and colour math are the MONAI
script's, so the two differ only in reading and windowing.

    python benchmarks/torchio_seed.py SERIES_DIR [SERIES_DIR ...] OUT_DIR

TorchIO's arrays are (channel, column, row, slice) with slices in the order SimpleITK sorts
the files; this script turns them into (slice, channel, row, column) = NCHW. See RESULTS.md
for how the output compares with medflow's.
"""

import os
import sys

import numpy as np
import torch
import torchio as tio

LEVEL, WIDTH = -600.0, 1500.0
LOWER, UPPER = LEVEL - 0.5 - (WIDTH - 1) / 2, LEVEL - 0.5 + (WIDTH - 1) / 2  # LINEAR: (x - LOWER) / (w - 1)

RAMP = torch.arange(256, dtype=torch.float32)
LUT = torch.stack([RAMP, torch.zeros(256), 255 - RAMP], dim=1) / 255  # blue -> red, RGB
KR, KB = 0.299, 0.114
KG = 1 - KR - KB
YCBCR = torch.tensor(
    [
        [KR, KG, KB],
        [-KR / (2 * (1 - KB)), -KG / (2 * (1 - KB)), 0.5],
        [0.5, -KG / (2 * (1 - KR)), -KB / (2 * (1 - KR))],
    ],
    dtype=torch.float32,
)
OFFSET = torch.tensor([0.0, 0.5, 0.5])


def lut_and_color(image):
    """(1, x, y, z) in [0, 1] -> (3, x, y, z) channels Y, Cb, Cr (BT.601 full range)."""
    index = torch.round(image[0] * 255).long()  # round half to even
    rgb = LUT[index]  # x, y, z, 3
    ycbcr = rgb @ YCBCR.T + OFFSET
    return ycbcr.permute(3, 0, 1, 2)


PIPELINE = tio.Compose(
    [
        tio.Clamp(out_min=LOWER, out_max=UPPER),
        tio.RescaleIntensity(out_min_max=(0.0, 1.0), in_min_max=(LOWER, UPPER)),
        tio.Lambda(lut_and_color),
    ]
)


def main():
    *series_dirs, out_dir = sys.argv[1:]
    os.makedirs(out_dir, exist_ok=True)
    for folder in series_dirs:
        subject = PIPELINE(tio.Subject(ct=tio.ScalarImage(folder)))
        nchw = subject["ct"].data.permute(3, 0, 2, 1).contiguous().numpy()  # z, c, y, x
        np.save(os.path.join(out_dir, os.path.basename(os.path.normpath(folder)) + ".npy"), nchw)


if __name__ == "__main__":
    main()
