"""The seed pipeline written with MONAI transforms (CPU torch), for the benchmark.

LoadImage (PydicomReader: reads a series folder, applies RescaleSlope/Intercept) ->
EnsureChannelFirst -> ScaleIntensityRange (the LINEAR lung window -600/1500, clipped to
[0, 1]) -> a Lambda for the 8-bit quantization, blue->red LUT and BT.601 YCbCr ->
NCHW float32, one .npy per series folder.

    python benchmarks/monai_seed.py SERIES_DIR [SERIES_DIR ...] OUT_DIR

MONAI's arrays are (x, y, z) with slices in file-position order as its reader sorts them;
this script turns them into (z, c, y, x) = NCHW. See RESULTS.md for how the output compares
with medflow's.
"""

import os
import sys

import numpy as np
import torch
from monai.transforms import Compose, EnsureChannelFirst, Lambda, LoadImage, ScaleIntensityRange

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


PIPELINE = Compose(
    [
        LoadImage(reader="PydicomReader", image_only=True),
        EnsureChannelFirst(),
        ScaleIntensityRange(a_min=LOWER, a_max=UPPER, b_min=0.0, b_max=1.0, clip=True),
        Lambda(lut_and_color),
    ]
)


def main():
    *series_dirs, out_dir = sys.argv[1:]
    os.makedirs(out_dir, exist_ok=True)
    for folder in series_dirs:
        chw = PIPELINE(folder)  # c, x, y, z
        nchw = chw.as_tensor().permute(3, 0, 2, 1).contiguous().numpy()  # z, c, y, x
        np.save(os.path.join(out_dir, os.path.basename(os.path.normpath(folder)) + ".npy"), nchw)


if __name__ == "__main__":
    main()
