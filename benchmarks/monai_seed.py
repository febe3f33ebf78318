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
from monai.transforms import Compose, EnsureChannelFirst, Lambda, LoadImage, ScaleIntensityRange
from seed_torch import LOWER, UPPER, lut_and_color

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
