"""NIfTI writer: one ``.nii.gz`` per item through SimpleITK, geometry preserved.

SimpleITK converts DICOM's LPS to NIfTI's RAS affine (qform and sform). A NIfTI
file holds one affine, i.e. a regular lattice of slices, and SimpleITK writes only
orthonormal directions (it silently coerces a sheared matrix to an orthogonal one).
So a gantry-tilted stack (slice step not along the normal) or an uneven stack
cannot be written without moving slices: the writer refuses it and says to add a
``resample`` step, which puts the slices on a regular grid from their true positions.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk
from pydantic import Field

from medflow.errors import MedflowError
from medflow.ops.spatial import analyse_stack
from medflow.sample import Sample
from medflow.writers.atomic import atomic_write
from medflow.writers.registry import WriterParams, WrittenFile, register_writer


class NiftiParams(WriterParams):
    """One ``.nii.gz`` per item (``<folder>/<item_id>.nii.gz``), geometry preserved; for 3-D models and radiomics."""

    kind: Literal["nifti"]
    folder: str = Field("nifti", description="Subfolder of the output folder for the .nii.gz files.")


class NiftiRefused(MedflowError):
    """The item cannot be written as NIfTI without losing or inventing geometry."""

    def __init__(self, item_id: str, reason: str):
        self.item_id = item_id
        super().__init__(f"writer 'nifti' refused item {item_id}: {reason}")


def nifti_image(sample: Sample) -> sitk.Image:
    """The SimpleITK image of a ``zyx`` (scalar) or ``zyxc`` (vector pixel) sample, in LPS.

    Origin = first slice's ImagePositionPatient, direction columns = ``[row_direction,
    column_direction, slice axis]`` (the slice axis is the normal, signed like the slice
    order, so the matrix is orthonormal), spacing = ``(column spacing, row spacing, slice
    step)``. float16 is widened to float32 and bool to uint8 (NIfTI-1 has neither).

    Raises:
        NiftiRefused: other axes, no geometry, or a tilted or uneven stack.
    """
    if sample.axes not in ("zyx", "zyxc"):
        raise NiftiRefused(
            sample.item_id, f"only 'zyx' and 'zyxc' volumes are writable, got {sample.describe()} "
            "(write NIfTI before a layout step)"
        )
    geometry = sample.geometry
    if geometry is None:
        raise NiftiRefused(sample.item_id, "the sample has no geometry, so the NIfTI affine would be invented")
    if len(geometry.slice_positions) != sample.pixels.shape[0]:
        raise NiftiRefused(
            sample.item_id,
            f"geometry has {len(geometry.slice_positions)} slice positions for {sample.pixels.shape[0]} slices",
        )
    try:
        stack = analyse_stack(
            geometry.row_direction, geometry.column_direction, geometry.pixel_spacing, geometry.slice_positions
        )
    except ValueError as exc:
        raise NiftiRefused(sample.item_id, str(exc)) from exc
    if not stack.regular:
        raise NiftiRefused(
            sample.item_id,
            f"the slice stack is {stack.describe()}; a NIfTI file holds one affine (a regular grid) and "
            "SimpleITK writes only orthonormal directions, so the slices' true positions would be lost. "
            "Add a 'resample' step (e.g. {step: resample, spacing: 1}) before writing NIfTI.",
        )
    pixels = sample.pixels
    if pixels.dtype == np.float16:
        pixels = pixels.astype(np.float32)
    elif pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(pixels), isVector=sample.axes == "zyxc")
    if stack.step is not None:
        z_spacing = stack.step
    else:
        z_spacing = geometry.slice_spacing or 1.0  # one slice: the z column only scales the affine
    image.SetOrigin(tuple(float(v) for v in geometry.slice_positions[0]))
    image.SetSpacing((float(geometry.pixel_spacing[1]), float(geometry.pixel_spacing[0]), float(z_spacing)))
    directions = np.column_stack([geometry.row_direction, geometry.column_direction, stack.axis])
    image.SetDirection(tuple(float(v) for v in directions.ravel()))
    return image


@register_writer("nifti", 1, NiftiParams)
def write_nifti(sample: Sample, params: NiftiParams, out_dir: Path) -> list[WrittenFile]:
    """Write the item as one .nii.gz (SimpleITK); refuses tilted or uneven stacks (add a resample step)."""
    image = nifti_image(sample)
    relative = Path(params.folder) / f"{sample.item_id}.nii.gz"
    target = Path(out_dir) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    # SimpleITK writes only to a path: write into a private temp folder next to the target,
    # then copy the bytes through atomic_write (which hashes them and renames atomically).
    with tempfile.TemporaryDirectory(prefix=".nifti-", dir=target.parent) as tmp:
        tmp_file = Path(tmp) / "image.nii.gz"
        sitk.WriteImage(image, str(tmp_file), useCompression=True)
        with open(tmp_file, "rb") as source:
            sha = atomic_write(target, lambda f: shutil.copyfileobj(source, f))
    return [WrittenFile(relative.as_posix(), sha, target.stat().st_size)]
