"""Intensity transforms: modality rescale and the VOI LUT window functions.

Every function here except :func:`stack_context` is pointwise: it works on an array
of any shape and the value of each output element depends only on the same input element.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1 << 20  # elements per block: each float64 temporary stays about 8 MB


def blockwise(x: np.ndarray, formula) -> np.ndarray:
    """Evaluate a pointwise float64 ``formula`` block by block; float32 result of ``x``'s shape.

    Keeps peak memory at the float32 output plus a few block-sized temporaries, whatever
    the volume size; the values are exactly those of the formula on the whole array.
    """
    x = np.asarray(x)
    flat = x.reshape(-1)
    out = np.empty(flat.shape, dtype=np.float32)
    for start in range(0, flat.size, BLOCK):
        out[start : start + BLOCK] = formula(flat[start : start + BLOCK].astype(np.float64))
    return out.reshape(x.shape)


def rescale(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Modality LUT by RescaleSlope/Intercept (PS3.3 C.11.1.1.2): ``slope * stored + intercept``.

    Args:
        stored: stored pixel values, any integer or float dtype, any shape.
        slope: RescaleSlope (0028,1053).
        intercept: RescaleIntercept (0028,1052), in output units (HU for CT).

    Returns:
        float32 array of the same shape, in output units. Computed in float64 and
        rounded once to float32, so the result does not depend on the input dtype.
    """
    out = stored.astype(np.float64) * float(slope) + float(intercept)
    return out.astype(np.float32)


def window_linear(
    x: np.ndarray, center: float, width: float, y_min: float = 0.0, y_max: float = 1.0
) -> np.ndarray:
    """VOI LUT function LINEAR, DICOM PS3.3 C.11.2.1.2.1.

    ``x <= c - 0.5 - (w-1)/2  -> y_min``;
    ``x >  c - 0.5 + (w-1)/2  -> y_max``;
    otherwise ``((x - (c - 0.5)) / (w - 1) + 0.5) * (y_max - y_min) + y_min``.

    Args:
        x: input values (e.g. HU), any shape.
        center: window center ``c`` (input units).
        width: window width ``w`` (input units), must be >= 1 (the standard's rule).
        y_min, y_max: output range.

    Returns:
        float32 array of ``x``'s shape with values in ``[y_min, y_max]``.

    Raises:
        ValueError: ``width < 1``.
    """
    if width < 1:
        raise ValueError(f"LINEAR window width must be >= 1 (PS3.3 C.11.2.1.2.1), got {width}")
    lower = center - 0.5 - (width - 1) / 2
    upper = center - 0.5 + (width - 1) / 2

    def formula(v: np.ndarray) -> np.ndarray:
        if width == 1:
            # (w - 1) = 0: the standard's two threshold cases cover the whole line.
            return np.where(v <= lower, y_min, y_max)
        y = ((v - (center - 0.5)) / (width - 1) + 0.5) * (y_max - y_min) + y_min
        return np.where(v <= lower, y_min, np.where(v > upper, y_max, y))

    return blockwise(x, formula)


def window_linear_exact(
    x: np.ndarray, center: float, width: float, y_min: float = 0.0, y_max: float = 1.0
) -> np.ndarray:
    """VOI LUT function LINEAR_EXACT, DICOM PS3.3 C.11.2.1.3.2.

    ``x <= c - w/2 -> y_min``; ``x > c + w/2 -> y_max``;
    otherwise ``((x - c) / w + 0.5) * (y_max - y_min) + y_min``. Requires ``w > 0``.
    Returns float32 of ``x``'s shape.
    """
    if width <= 0:
        raise ValueError(f"LINEAR_EXACT window width must be > 0 (PS3.3 C.11.2.1.3.2), got {width}")

    def formula(v: np.ndarray) -> np.ndarray:
        y = ((v - center) / width + 0.5) * (y_max - y_min) + y_min
        return np.where(v <= center - width / 2, y_min, np.where(v > center + width / 2, y_max, y))

    return blockwise(x, formula)


def window_sigmoid(
    x: np.ndarray, center: float, width: float, y_min: float = 0.0, y_max: float = 1.0
) -> np.ndarray:
    """VOI LUT function SIGMOID, DICOM PS3.3 C.11.2.1.3.1.

    ``y = (y_max - y_min) / (1 + exp(-4 (x - c) / w)) + y_min``. Requires ``w > 0``.
    Returns float32 of ``x``'s shape.
    """
    if width <= 0:
        raise ValueError(f"SIGMOID window width must be > 0 (PS3.3 C.11.2.1.3.1), got {width}")

    def formula(v: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # exp overflow -> inf -> y_min, the correct limit
            return (y_max - y_min) / (1.0 + np.exp(-4.0 * (v - center) / width)) + y_min

    return blockwise(x, formula)


WINDOW_FUNCTIONS = {
    "LINEAR": window_linear,
    "LINEAR_EXACT": window_linear_exact,
    "SIGMOID": window_sigmoid,
}


def apply_lut(x: np.ndarray, lut: np.ndarray, first_mapped: int) -> np.ndarray:
    """Look ``x`` up in a DICOM LUT: Modality LUT (PS3.3 C.11.1.1.1) or VOI LUT (C.11.2.1.1).

    The LUT Descriptor (0028,3002) gives the number of entries ``n``, the first input value
    mapped ``first_mapped`` and the bits per entry. Per the standard, an input below
    ``first_mapped`` maps to the first entry and an input above ``first_mapped + n - 1`` maps
    to the last entry; input ``v`` in between maps to entry ``v - first_mapped``.

    Args:
        x: input values, any shape. LUT inputs are integers in DICOM; non-integral values
            (e.g. after a non-integer RescaleSlope) are rounded to the nearest integer first.
        lut: 1-D array of the ``n`` LUT entries (LUT Data (0028,3006)).
        first_mapped: second value of the LUT Descriptor, already sign-corrected.

    Returns:
        float32 array of ``x``'s shape holding the LUT entries (exact for entries < 2**24).

    Raises:
        ValueError: an empty or non 1-D LUT.
    """
    lut = np.asarray(lut)
    if lut.ndim != 1 or lut.size == 0:
        raise ValueError(f"a LUT must be a non-empty 1-D array, got shape {lut.shape}")
    table = lut.astype(np.float32)
    return blockwise(
        x, lambda v: table[np.clip(np.rint(v) - float(first_mapped), 0, lut.size - 1).astype(np.intp)]
    )


def scale_lut_output(y: np.ndarray, bits: int, y_min: float = 0.0, y_max: float = 1.0) -> np.ndarray:
    """Map VOI LUT output ``0 .. 2**bits - 1`` linearly onto ``[y_min, y_max]``.

    The VOI LUT entries span ``0 .. 2**bits - 1`` where ``bits`` is the third value of the
    LUT Descriptor (PS3.3 C.11.2.1.1, C.8.11.3.1.5). Returns float32 of ``y``'s shape.
    """
    if bits < 1:
        raise ValueError(f"bits per LUT entry must be >= 1, got {bits}")
    top = float(2**bits - 1)
    return blockwise(y, lambda v: v / top * (y_max - y_min) + y_min)


def invert_range(y: np.ndarray, y_min: float = 0.0, y_max: float = 1.0) -> np.ndarray:
    """``y_max + y_min - y``: display inversion of a MONOCHROME1 image (PS3.3 C.7.6.3.1.2).

    MONOCHROME1 means the minimum value is displayed white. It must be applied to the
    output of the VOI transform, never to its input (PS3.3 C.11.2: the VOI LUT is defined
    on modality values whatever the photometric interpretation). Returns float32.
    """
    return blockwise(y, lambda v: float(y_max) + float(y_min) - v)


def stack_context(x: np.ndarray, k: int) -> np.ndarray:
    """2.5D stacking: for each slice ``z`` concatenate slices ``z-k .. z+k`` on the channel axis.

    Args:
        x: array with axes ``zyxc`` (any dtype).
        k: number of neighbours on each side, ``>= 0``. Slices beyond the first or last are
            replaced by the edge slice (edge replication), so the output has as many slices
            as the input. Neighbours are array neighbours: gaps in the physical slice
            positions are not taken into account.

    Returns:
        array ``zyxc'`` with ``c' = (2k+1) * c``, same dtype; channel order is offset-major:
        all channels of slice ``z-k``, then of ``z-k+1``, ..., then of ``z+k``.
    """
    if x.ndim != 4:
        raise ValueError(f"stack_context needs a zyxc array, got {x.ndim} dims")
    if k < 0:
        raise ValueError(f"context slices must be >= 0, got {k}")
    if k == 0:
        return x
    z = x.shape[0]
    index = np.clip(np.arange(z)[:, None] + np.arange(-k, k + 1)[None, :], 0, z - 1)
    stacked = x[index]  # (z, 2k+1, y, x, c)
    stacked = np.moveaxis(stacked, 1, 3)  # (z, y, x, 2k+1, c)
    return np.ascontiguousarray(stacked.reshape(x.shape[:3] + ((2 * k + 1) * x.shape[3],)))
