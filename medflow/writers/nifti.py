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

Compression: by default SimpleITK gzips the file itself (one thread, zlib's default level:
most of the write time of a large float volume). With ``compression_level`` a scalar volume
is streamed instead: SimpleITK's own 352-byte header (see :func:`nifti_header`), then the
array's bytes, through zlib or ISA-L's igzip on the item's threads, into the hashing atomic
write: no copy of the volume, no temp file of its size, the same uncompressed bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from pydantic import Field

from medflow._lazy import lazy_import
from medflow.errors import FileSystemError, MedflowError
from medflow.ops.spatial import analyse_stack
from medflow.sample import Sample
from medflow.threads import item_threads, usable_cores
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
        "(same bytes as before; slow: ~10 s for a 486 MB float32 CT volume). A number makes medflow "
        "compress, streaming from the array, with `compressor` (timestamp 0: same input, same bytes): zlib 0 "
        "(stored, largest) to 9 (smallest, slowest). Measured on the 1 mm pancreas CT "
        "(benchmarks/bench_radiomics.py): isal 1 ~1.0 s for 72.6% of the raw size, zlib 1 ~8.5 s for 72.1%.",
    )
    compressor: Literal["zlib", "isal"] = Field(
        "zlib",
        description="With compression_level: 'zlib' (Python's zlib, one thread) or 'isal' (Intel ISA-L's "
        "igzip through the 'isal' package, pip install isal: several times faster at a similar size, and "
        "it compresses on the item's threads; its levels are 0-3, higher levels are taken as 3; its level 0 "
        "codes with a fixed table and grows float data, use 1). The bytes do not depend on the thread count. "
        "Any gzip reader reads either.",
    )


class NiftiRefused(MedflowError):
    """The item cannot be written as NIfTI without losing or inventing geometry."""

    def __init__(self, item_id: str, reason: str):
        self.item_id = item_id
        super().__init__(f"writer 'nifti' refused item {item_id}: {reason}")


SHEARED_NOTE = b"medflow: sheared sform = exact tilted stack; qform = orthonormal approximation"


def nifti_image(sample: Sample, irregular: str = "refuse") -> tuple[sitk.Image, np.ndarray | None]:
    """The SimpleITK image of a sample and the sheared affine of a tilted stack (see :func:`nifti_layout`)."""
    layout = nifti_layout(sample, irregular)
    image = sitk.GetImageFromArray(np.ascontiguousarray(layout.pixels), isVector=sample.axes == "zyxc")
    layout.apply(image)
    return image, layout.sheared


def nifti_layout(sample: Sample, irregular: str = "refuse") -> _Layout:
    """The lattice and pixels of the NIfTI image of a ``zyx`` (scalar) or ``zyxc`` (vector pixel) sample, in LPS.

    Origin = first slice's ImagePositionPatient, direction columns = ``[row_direction,
    column_direction, slice axis]`` (the slice axis is the normal, signed like the slice
    order, so the matrix is orthonormal), spacing = ``(column spacing, row spacing, slice
    step along the normal)``. float16 is widened to float32 and bool to uint8 (NIfTI-1
    has neither); big-endian pixels become native.

    Returns:
        the layout; its ``sheared`` is the exact 4x4 LPS affine of a tilted stack
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
    return _layout(sample, stack)


class _Layout:
    """What the NIfTI file holds: pixels (widened when NIfTI-1 lacks the dtype) and the LPS lattice."""

    def __init__(self, pixels, origin, spacing_xyz, direction, sheared):
        self.pixels, self.origin, self.spacing_xyz, self.direction, self.sheared = (
            pixels, origin, spacing_xyz, direction, sheared)

    def apply(self, image) -> None:
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing_xyz)
        image.SetDirection(self.direction)


def _layout(sample: Sample, stack) -> _Layout:
    geometry = sample.geometry
    pixels = sample.pixels
    if pixels.dtype == np.float16:
        pixels = pixels.astype(np.float32)
    elif pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8)
    elif not pixels.dtype.isnative:  # NIfTI files here are little-endian, like SimpleITK's arrays
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    if stack.step is not None:
        z_spacing = stack.step
    else:
        z_spacing = geometry.slice_spacing or 1.0  # one slice: the z column only scales the affine
    origin = np.asarray(geometry.slice_positions[0], float)
    row, col = np.asarray(geometry.row_direction, float), np.asarray(geometry.column_direction, float)
    sheared = None
    if stack.tilted:
        sheared = np.eye(4)
        sheared[:3, 0] = row * geometry.pixel_spacing[1]
        sheared[:3, 1] = col * geometry.pixel_spacing[0]
        sheared[:3, 2] = geometry.slice_step
        sheared[:3, 3] = origin
    return _Layout(
        pixels,
        tuple(float(v) for v in origin),
        (float(geometry.pixel_spacing[1]), float(geometry.pixel_spacing[0]), float(z_spacing)),
        tuple(float(v) for v in np.column_stack([row, col, stack.axis]).ravel()),
        sheared,
    )


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


def gzip_bytes(data: bytes, level: int, compressor: str = "zlib", threads: int = 1) -> bytes:
    """``data`` as gzip (RFC 1952, timestamp 0) at ``level`` with ``compressor``, as :func:`write_nifti` streams it."""
    out = io.BytesIO()
    with gzip_stream(out, level, compressor, threads) as stream:
        _write_chunks(stream, memoryview(data))
    return out.getvalue()


#: Bytes handed to the compressor at a time; ISA-L compresses blocks of this size on its threads.
GZIP_BLOCK = 1 << 20


@contextlib.contextmanager
def gzip_stream(fileobj: BinaryIO, level: int, compressor: str = "zlib", threads: int = 1) -> Iterator[BinaryIO]:
    """A gzip writer (timestamp 0, no file name) into ``fileobj``; closing it writes the trailer.

    ``zlib``: Python's :class:`gzip.GzipFile` at ``level`` (0-9). ``isal``: ISA-L's igzip
    (``isal.igzip_threaded``, levels 0-3; higher levels are taken as 3) compressing
    :data:`GZIP_BLOCK`-byte blocks, each with the previous 32 KiB as dictionary, on
    ``threads`` threads while the caller keeps writing: the bytes depend on the level and on
    how the data is split into writes, not on ``threads``.

    Raises:
        MedflowError: ``compressor="isal"`` without the ``isal`` package installed.
    """
    if compressor == "isal":
        try:
            from isal import igzip_threaded
        except ImportError:
            raise MedflowError("writer 'nifti': compressor 'isal' needs the isal package: pip install isal") from None
        stream = igzip_threaded.open(fileobj, "wb", compresslevel=min(level, 3), threads=max(1, threads),
                                     block_size=GZIP_BLOCK)
    else:
        stream = gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=fileobj, mtime=0)
    with stream:
        yield stream


def _write_chunks(stream: BinaryIO, data: memoryview) -> None:
    for start in range(0, data.nbytes, GZIP_BLOCK):
        stream.write(data[start : start + GZIP_BLOCK])


#: NIfTI-1 with its 4-byte extension flag: the pixels start at byte 352 (vox_offset).
NIFTI1_HEADER = 352


def nifti_header(layout: _Layout, tmp: Path) -> bytes | None:
    """SimpleITK's NIfTI-1 header (352 bytes) for a scalar image with ``layout``, or ``None``.

    SimpleITK writes the same header for any image of a given pixel type, lattice and size
    (no statistics of the pixels), followed by the raw pixels in x-fastest order, which are
    the bytes of a C-ordered ``zyx`` array. So the header is taken from SimpleITK writing a
    2 x 2 x 2 image (1 on the axes of size 1) with the same lattice, with its ``dim`` fields
    set to the real size: the file is then byte for byte what SimpleITK writes, without a
    copy of the volume or a temp file of its size (``tests/test_writer_nifti_stream.py`` checks).
    ``None`` when that shortcut does not hold (a vector image, a size NIfTI-1 cannot hold,
    another header layout): write through SimpleITK then.
    """
    pixels = layout.pixels
    if pixels.ndim != 3 or max(pixels.shape) > 32767:
        return None
    tiny = sitk.GetImageFromArray(np.zeros(tuple(1 if n == 1 else 2 for n in pixels.shape), pixels.dtype))
    layout.apply(tiny)
    path = tmp / "header.nii"
    sitk.WriteImage(tiny, str(path), useCompression=False)
    data = path.read_bytes()
    header = bytearray(data[:NIFTI1_HEADER])
    if (len(data) != NIFTI1_HEADER + tiny.GetNumberOfPixels() * pixels.itemsize
            or struct.unpack_from("<i", header, 0)[0] != 348
            or struct.unpack_from("<f", header, 108)[0] != NIFTI1_HEADER):
        return None
    struct.pack_into("<3h", header, 42, *pixels.shape[::-1])  # dim[1..3] = x, y, z sizes
    return bytes(header)


@register_writer("nifti", 2, NiftiParams)
def write_nifti(sample: Sample, params: NiftiParams, out_dir: Path) -> list[WrittenFile]:
    """Write the item as one .nii.gz (SimpleITK); refuses tilted or uneven stacks (add a resample step)."""
    layout = nifti_layout(sample, params.irregular)
    relative = Path(params.folder) / f"{sample.item_id}.nii.gz"
    target = Path(out_dir) / relative
    make_folder(target.parent)
    # SimpleITK writes only to a path: it writes into a private temp folder next to the target
    # (a medflow temp name, so a killed run's is removed by the next run), then the bytes go
    # through atomic_write (which hashes them and renames atomically).
    try:
        tmp = create_temp_dir(target.parent, target.name)
    except OSError as exc:
        raise FileSystemError(str(target), exc) from None
    try:
        digest = _write(layout, sample.axes == "zyxc", params, target, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release_temp(tmp)
    return [WrittenFile(relative.as_posix(), digest, target.stat().st_size)]


def _write(layout: _Layout, vector: bool, params: NiftiParams, target: Path, tmp: Path) -> str:
    level = params.compression_level
    header = None
    try:
        if level is not None and not vector:
            header = nifti_header(layout, tmp)
        if header is not None:  # medflow's gzip, streamed from the array: no copy, no temp file
            if layout.sheared is not None:
                header = _with_sform_raw(header, layout.sheared)
            pixels = memoryview(np.ascontiguousarray(layout.pixels)).cast("B")
            threads = item_threads() or usable_cores()

            def write(f: BinaryIO) -> None:
                with gzip_stream(f, level, params.compressor, threads) as stream:
                    stream.write(header)
                    _write_chunks(stream, pixels)

            return atomic_write(target, write)
        image = sitk.GetImageFromArray(np.ascontiguousarray(layout.pixels), isVector=vector)
        layout.apply(image)
        tmp_file = tmp / ("image.nii" if level is not None else "image.nii.gz")
        sitk.WriteImage(image, str(tmp_file), useCompression=level is None)
    except RuntimeError as exc:  # ITK reports a failed write (disk full, permissions) this way
        raise FileSystemError(str(target), str(exc).strip().splitlines()[-1][:200]) from None
    if level is not None:
        raw = tmp_file.read_bytes()
        if layout.sheared is not None:
            raw = _with_sform_raw(raw, layout.sheared)
        data = memoryview(raw)
        return atomic_write(
            target, lambda f: _gzip_into(f, data, level, params.compressor, item_threads() or usable_cores())
        )
    if layout.sheared is not None:
        data = _with_sform(tmp_file.read_bytes(), layout.sheared)
        return atomic_write(target, lambda f: f.write(data))
    with open(tmp_file, "rb") as source:
        return atomic_write(target, lambda f: shutil.copyfileobj(source, f, GZIP_BLOCK))


def _gzip_into(f: BinaryIO, data: memoryview, level: int, compressor: str, threads: int) -> None:
    with gzip_stream(f, level, compressor, threads) as stream:
        _write_chunks(stream, data)
