"""Gathering one slice through a full-range table into an interleaved (y, x, c) buffer.

``np.take`` copies an element of 1, 2, 4, 8 or 16 bytes in one move and any other size with a
``memmove`` per element. A pixel of 3 channels (3, 6 or 12 bytes: uint8, uint16 or float32
RGB/YCbCr, an NHWC tensor, the three windows of the ICH recipe) therefore gathers faster padded
to 4 channels (4, 8 or 16 bytes) into a scratch slice, from which OpenCV drops the pad: a
channel shuffle that moves bytes and computes nothing, so the result is bit-identical (NaN
payloads included; a test checks). Measured per 512 x 512 slice on the 2-core bench machine
(benchmarks/PROFILE.md): uint8 1.14 -> 0.62 ms, uint16 1.14 -> 0.76 ms, float32 0.98 -> 0.87 ms;
ICH build 0.59 -> 0.48 s in-build on gen200 (medians of 5, same run).

OpenCV is imported only when a process has gathered enough interleaved pixels to win its
import (~20 ms) back, or has imported it already: a 2-slice run pays nothing.
"""

from __future__ import annotations

import threading

import numpy as np

from medflow._lazy import is_loaded

#: Interleaved pixels gathered the plain way before the padded way imports OpenCV
#: (~0.5 ms saved per 512 x 512 slice against ~20 ms for the import).
PADDED_AFTER_PIXELS = 40 * 512 * 512
# bytes per channel -> the dtype OpenCV shuffles them as (4 bytes: float32, moved, never computed)
_CV_VIEW = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.float32)}
# bytes per channel -> one padded 4-channel pixel as a single element np.take copies in one move
_PADDED = {1: np.dtype(np.uint32), 2: np.dtype(np.uint64), 4: np.dtype((np.void, 16))}

_plain_pixels = 0  # interleaved pixels gathered the plain way in this process (races only delay the switch)
_scratch = threading.local()  # per gather thread: the padded slice


def padded_table(lut: np.ndarray) -> np.ndarray | None:
    """``lut`` (values, 3) as (values,) elements of 4 channels, the 4th zero; ``None`` when not 3 channels of 1, 2 or 4 bytes."""
    if lut.ndim != 2 or lut.shape[1] != 3 or lut.dtype.itemsize not in _PADDED:
        return None
    padded = np.zeros((lut.shape[0], 4), lut.dtype)
    padded[:, :3] = lut
    return padded.view(_PADDED[lut.dtype.itemsize]).reshape(-1)


def take_interleaved(interleaved: np.ndarray, padded: np.ndarray | None, index: np.ndarray, out: np.ndarray) -> None:
    """``out[y, x, :] = table row index[y, x]``: ``out`` a C-contiguous (y, x, c) slice.

    ``interleaved``: the table as (values,) elements of one whole pixel each; ``padded``: the
    same rows as :func:`padded_table` gives them, or ``None``. Indices are in the table (full
    range), so ``mode="clip"`` clips nothing and gathers straight into the destination.
    """
    if padded is None or not _padding_pays(index.size):
        np.take(interleaved, index, out=out.view(interleaved.dtype)[..., 0], mode="clip")
        return
    import cv2

    scratch = _scratch_slice(index.shape, padded.dtype)
    np.take(padded, index, out=scratch, mode="clip")
    view = _CV_VIEW[out.dtype.itemsize]
    target = out.view(view)
    result = cv2.cvtColor(scratch.view(view).reshape(index.shape + (4,)), cv2.COLOR_RGBA2RGB, dst=target)
    if result.ctypes.data != target.ctypes.data:  # OpenCV allocated instead of filling ``out``
        target[...] = result


def _padding_pays(n_pixels: int) -> bool:
    global _plain_pixels
    if _plain_pixels >= PADDED_AFTER_PIXELS or is_loaded("cv2"):
        return True
    _plain_pixels += n_pixels
    return False


def _scratch_slice(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    held = getattr(_scratch, "array", None)
    if held is None or held.shape != shape or held.dtype != dtype:
        held = _scratch.array = np.empty(shape, dtype)
    return held
