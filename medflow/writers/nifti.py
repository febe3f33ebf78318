"""NIfTI writer: one ``.nii.gz`` per item through SimpleITK, geometry preserved.

SimpleITK converts DICOM's LPS to NIfTI's RAS affine (qform and sform). A NIfTI
file holds one affine, i.e. a regular lattice of slices:

* an uneven stack has no affine at all: always refused (add a ``resample`` step);
* a gantry-tilted stack (slice step not along the normal) has a sheared affine.
  SimpleITK writes only orthonormal directions (it coerces a sheared matrix to an
  orthogonal one with a mere warning), so by default the writer refuses it and says
  to add a ``resample`` step. With ``irregular: sheared_sform`` it writes the exact
  sheared affine in the sform (read exactly by nibabel, FSL and other sform readers)
  and the nearest orthonormal grid in the qform (slices at their true distance along
  the normal, in-plane drift dropped), and says so in the header's ``descrip``.
  SimpleITK/ITK readers ignore a non-orthonormal sform and use that qform.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from medflow._lazy import lazy_import
from medflow.errors import FileSystemError, MedflowError
from medflow.ops.spatial import analyse_stack
from medflow.sample import Sample
from medflow.workspace import create_temp_dir, release_temp
from medflow.writers.atomic import atomic_write, make_folder
from medflow.writers.registry import WriterParams, WrittenFile, register_writer

sitk = lazy_import("SimpleITK")


class NiftiParams(WriterParams):
    """One ``.nii.gz`` per item (``<folder>/<item_id>.nii.gz``), geometry preserved; for 3-D models and radiomics."""

    kind: Literal["nifti"]
    folder: str = Field("nifti", description="Subfolder of the output folder for the .nii.gz files.")
    irregular: Literal["refuse", "sheared_sform"] = Field(
        "refuse",
        description="Gantry-tilted stacks: 'refuse' (add a resample step instead), or 'sheared_sform': exact "
        "sheared affine in the sform (nibabel/FSL read it), orthonormal approximation in the qform "
        "(what ITK/SimpleITK read). Uneven stacks are always refused.",
    )
    compression_level: int | None = Field(
        None,
        ge=0,
        le=9,
        description="gzip level of the .nii.gz: null (default) lets SimpleITK compress as it always has "
        "(same bytes as before); 0 (stored, fastest, largest) to 9 (smallest, slowest) makes medflow "
        "compress with the chosen compressor (gzip timestamp 0: same input, same bytes).",
    )
    compressor: Literal["zlib", "isal"] = Field(
        "zlib",
        description="With compression_level: 'zlib' (Python's gzip) or 'isal' (Intel ISA-L through the "
        "'isal' package, pip install isal: several times faster at a similar size; its levels are 0-3, "
        "higher levels are taken as 3). Any gzip reader reads either.",
    )


class NiftiRefused(MedflowError):
    """The item cannot be written as NIfTI without losing or inventing geometry."""

    def __init__(self, item_id: str, reason: str):
        self.item_id = item_id
        super().__init__(f"writer 'nifti' refused item {item_id}: {reason}")


SHEARED_NOTE = b"medflow: sheared sform = exact tilted stack; qform = orthonormal approximation"


def nifti_image(sample: Sample, irregular: str = "refuse") -> tuple[sitk.Image, np.ndarray | None]:
    """The SimpleITK image of a ``zyx`` (scalar) or ``zyxc`` (vector pixel) sample, in LPS.

    Origin = first slice's ImagePositionPatient, direction columns = ``[row_direction,
    column_direction, slice axis]`` (the slice axis is the normal, signed like the slice
    order, so the matrix is orthonormal), spacing = ``(column spacing, row spacing, slice
    step along the normal)``. float16 is widened to float32 and bool to uint8 (NIfTI-1
    has neither).

    Returns:
        ``(image, sheared)``: ``sheared`` is the exact 4x4 LPS affine of a tilted stack
        (columns ``dx r``, ``dy c``, mean slice step vector, origin) when ``irregular`` is
        ``"sheared_sform"`` and the stack is tilted, else ``None``.

    Raises:
        NiftiRefused: other axes, no geometry, an uneven stack, or a tilted stack with
            ``irregular="refuse"``.
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
    if stack.uneven or (stack.tilted and irregular == "refuse"):
        hint = "" if stack.uneven else " (or set irregular: sheared_sform to keep the tilt in the sform)"
        raise NiftiRefused(
            sample.item_id,
            f"the slice stack is {stack.describe()}; a NIfTI file holds one affine (a regular grid) and "
            "SimpleITK writes only orthonormal directions, so the slices' true positions would be lost. "
            "Add a 'resample' step (e.g. {step: resample, spacing: 1}) before writing NIfTI" + hint + ".",
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
    origin = np.asarray(geometry.slice_positions[0], float)
    row, col = np.asarray(geometry.row_direction, float), np.asarray(geometry.column_direction, float)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing((float(geometry.pixel_spacing[1]), float(geometry.pixel_spacing[0]), float(z_spacing)))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, stack.axis]).ravel()))
    sheared = None
    if stack.tilted:
        sheared = np.eye(4)
        sheared[:3, 0] = row * geometry.pixel_spacing[1]
        sheared[:3, 1] = col * geometry.pixel_spacing[0]
        sheared[:3, 2] = geometry.slice_step
        sheared[:3, 3] = origin
    return image, sheared


def _with_sform(nifti_gz: bytes, affine_lps: np.ndarray) -> bytes:
    """Replace the sform rows (NIfTI-1 header srow_x/y/z, bytes 280-327) by ``affine_lps`` in RAS.

    Also writes :data:`SHEARED_NOTE` into ``descrip`` (bytes 148-227). The qform and the
    sform_code written by SimpleITK stay. Recompressed with a zero gzip timestamp so the
    same input gives the same bytes.
    """
    return gzip.compress(_with_sform_raw(gzip.decompress(nifti_gz), affine_lps), compresslevel=6, mtime=0)


def _with_sform_raw(nifti: bytes, affine_lps: np.ndarray) -> bytes:
    """:func:`_with_sform` on uncompressed NIfTI-1 bytes."""
    raw = bytearray(nifti)
    if struct.unpack_from("<i", raw, 0)[0] != 348:
        raise ValueError("not a little-endian NIfTI-1 header")
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    struct.pack_into("<12f", raw, 280, *ras[:3].ravel())
    raw[148:228] = SHEARED_NOTE.ljust(80, b"\0")[:80]
    return bytes(raw)


def gzip_bytes(data: bytes, level: int, compressor: str = "zlib") -> bytes:
    """``data`` as a gzip member (RFC 1952) with timestamp 0, at ``level`` with ``compressor``.

    Raises:
        MedflowError: ``compressor="isal"`` without the ``isal`` package installed.
    """
    if compressor == "isal":
        try:
            from isal import igzip
        except ImportError:
            raise MedflowError("writer 'nifti': compressor 'isal' needs the isal package: pip install isal") from None
        return igzip.compress(data, compresslevel=min(level, 3), mtime=0)
    return gzip.compress(data, compresslevel=level, mtime=0)


@register_writer("nifti", 1, NiftiParams)
def write_nifti(sample: Sample, params: NiftiParams, out_dir: Path) -> list[WrittenFile]:
    """Write the item as one .nii.gz (SimpleITK); refuses tilted or uneven stacks (add a resample step)."""
    image, sheared = nifti_image(sample, params.irregular)
    relative = Path(params.folder) / f"{sample.item_id}.nii.gz"
    target = Path(out_dir) / relative
    make_folder(target.parent)
    # SimpleITK writes only to a path: write into a private temp folder next to the target
    # (a medflow temp name, so a killed run's is removed by the next run), then copy the
    # bytes through atomic_write (which hashes them and renames atomically).
    try:
        tmp = create_temp_dir(target.parent, target.name)
    except OSError as exc:
        raise FileSystemError(str(target), exc) from None
    try:
        own_gzip = params.compression_level is not None
        tmp_file = tmp / ("image.nii" if own_gzip else "image.nii.gz")
        try:
            sitk.WriteImage(image, str(tmp_file), useCompression=not own_gzip)
        except RuntimeError as exc:  # ITK reports a failed write (disk full, permissions) this way
            raise FileSystemError(str(target), str(exc).strip().splitlines()[-1][:200]) from None
        if own_gzip:
            raw = tmp_file.read_bytes()
            if sheared is not None:
                raw = _with_sform_raw(raw, sheared)
            data = gzip_bytes(raw, params.compression_level, params.compressor)
            sha = atomic_write(target, lambda f: f.write(data))
        elif sheared is not None:
            data = _with_sform(tmp_file.read_bytes(), sheared)
            sha = atomic_write(target, lambda f: f.write(data))
        else:
            with open(tmp_file, "rb") as source:
                sha = atomic_write(target, lambda f: shutil.copyfileobj(source, f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release_temp(tmp)
    return [WrittenFile(relative.as_posix(), sha, target.stat().st_size)]
