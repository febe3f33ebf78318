"""Clean Pixel Data / Clean Recognizable Visual Features: what medflow can do automatically.

It fills rectangles given by a human (``mask_regions``) with 0 in every frame and sample of
*uncompressed* (native) pixel data, editing the stored bytes in place of a decoded copy so that
everything outside the rectangles stays byte-identical. Finding burned-in text or faces is not
automatic: without regions nothing is masked, and compressed pixel data is never re-encoded.
"""

from __future__ import annotations

import numpy as np
from pydicom.uid import UID

_DTYPES = {8: "u1", 16: "u2", 32: "u4"}


def mask_native_pixels(
    pixel_bytes: bytes,
    *,
    rows: int,
    columns: int,
    samples: int,
    planar: int,
    bits_allocated: int,
    frames: int,
    big_endian: bool,
    regions: tuple[tuple[int, int, int, int], ...],
) -> bytes:
    """Return native PixelData bytes with each region ``(x, y, w, h)`` set to 0.

    Args:
        pixel_bytes: the (7FE0,0010) value of a native transfer syntax (PS3.5 8.1.1).
        rows, columns: image size in pixels; regions are clipped to it.
        samples: SamplesPerPixel; planar: PlanarConfiguration (0 interleaved, 1 planes).
        bits_allocated: 8, 16 or 32.
        frames: NumberOfFrames (1 for single-frame).
        big_endian: Explicit VR Big Endian stores words most significant byte first.
        regions: rectangles in pixel units, x = column, y = row.

    Raises:
        ValueError: unsupported BitsAllocated (e.g. 1) or a value shorter than the image.
    """
    if bits_allocated not in _DTYPES:
        raise ValueError(f"masking needs BitsAllocated 8, 16 or 32, not {bits_allocated}")
    dtype = np.dtype(("<" if not big_endian else ">") + _DTYPES[bits_allocated])
    count = rows * columns * samples * frames
    arr = np.frombuffer(pixel_bytes, dtype=dtype, count=count).copy()
    if planar == 1 and samples > 1:
        view = arr.reshape(frames, samples, rows, columns)
        for x, y, w, h in regions:
            view[:, :, y : y + h, x : x + w] = 0
    else:
        view = arr.reshape(frames, rows, columns, samples)
        for x, y, w, h in regions:
            view[:, y : y + h, x : x + w, :] = 0
    out = arr.tobytes()
    return out + pixel_bytes[len(out) :]


def is_native(transfer_syntax: str | None) -> bool:
    """True for uncompressed transfer syntaxes (Implicit/Explicit VR Little/Big Endian)."""
    if not transfer_syntax:
        return False
    uid = UID(transfer_syntax)
    return bool(uid.is_transfer_syntax and not uid.is_compressed and not uid.is_deflated)
