"""The intracranial-hemorrhage 3-window pipeline as a skilled user writes it: pydicom + numpy.

Read every file, group by series, sort along the slice normal, stack, rescale to HU,
brain 40/80, subdural 80/200 and soft tissue 40/380 windows (DICOM LINEAR) as channels,
scale to 0..255 (rounded), NHWC uint8, one .npy per series.

    python benchmarks/handwritten_ich.py DICOM_DIR OUT_DIR
"""

import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom

WINDOWS = [(40.0, 80.0), (80.0, 200.0), (40.0, 380.0)]  # (level, width) in HU: brain, subdural, soft


def read_series(folder):
    series = defaultdict(list)
    for path in sorted(Path(folder).rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        series[ds.SeriesInstanceUID].append(ds)
    for slices in series.values():
        iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        slices.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float))))
    return series


def ich_pipeline(slices):
    volume = np.stack([ds.pixel_array for ds in slices])
    hu = volume.astype(np.float32) * float(slices[0].RescaleSlope) + float(slices[0].RescaleIntercept)
    channels = []
    for level, width in WINDOWS:  # DICOM PS3.3 C.11.2.1.2.1 LINEAR
        win = np.clip((hu - (level - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
        channels.append(np.rint(win * 255).astype(np.uint8))
    return np.stack(channels, axis=-1)  # N, H, W, C


def main():
    dicom_dir, out_dir = sys.argv[1:3]
    os.makedirs(out_dir, exist_ok=True)
    for uid, slices in read_series(dicom_dir).items():
        np.save(os.path.join(out_dir, f"{uid}.npy"), ich_pipeline(slices))


if __name__ == "__main__":
    main()
