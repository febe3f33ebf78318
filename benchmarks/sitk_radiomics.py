"""The radiomics recipe as a straightforward SimpleITK script: the baseline of ``bench_radiomics.py``.

    python benchmarks/sitk_radiomics.py DICOM_DIR OUT.nii.gz

Reads the series with ``sitk.ImageSeriesReader`` and GDCM's file order (the reader applies
RescaleSlope/Intercept: HU), resamples to 1 mm isotropic voxels with linear interpolation
(``sitk.Resample``, origin and direction kept, float32 output, -1024 HU outside), and writes
``.nii.gz`` with ``sitk.WriteImage`` and its default compression. SimpleITK's filters use every
core by default. What a user writes from the SimpleITK notebooks, nothing tuned.
"""

from __future__ import annotations

import sys

import SimpleITK as sitk


def main(source: str, target: str) -> None:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(source))
    image = reader.Execute()
    spacing = (1.0, 1.0, 1.0)
    size = [round(n * s / t) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing, strict=True)]
    resampled = sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing, image.GetDirection(),
        -1024.0, sitk.sitkFloat32,
    )
    sitk.WriteImage(resampled, target)  # .nii.gz: gzip at the NIfTI library's default level


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
