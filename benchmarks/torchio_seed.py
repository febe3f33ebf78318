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
import torchio as tio
from seed_torch import LOWER, UPPER, lut_and_color

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
