"""Intensity transforms: modality rescale and the VOI LUT window functions.

Every function here is pointwise: it works on an array of any shape and the
value of each output element depends only on the same input element.
"""

from __future__ import annotations

import numpy as np


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
    x = np.asarray(x, dtype=np.float64)
    lower = center - 0.5 - (width - 1) / 2
    upper = center - 0.5 + (width - 1) / 2
    if width == 1:
        # (w - 1) = 0: the standard's two threshold cases cover the whole line.
        y = np.where(x <= lower, y_min, y_max)
    else:
        y = ((x - (center - 0.5)) / (width - 1) + 0.5) * (y_max - y_min) + y_min
        y = np.where(x <= lower, y_min, np.where(x > upper, y_max, y))
    return y.astype(np.float32)


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
    x = np.asarray(x, dtype=np.float64)
    y = ((x - center) / width + 0.5) * (y_max - y_min) + y_min
    y = np.where(x <= center - width / 2, y_min, np.where(x > center + width / 2, y_max, y))
    return y.astype(np.float32)


def window_sigmoid(
    x: np.ndarray, center: float, width: float, y_min: float = 0.0, y_max: float = 1.0
) -> np.ndarray:
    """VOI LUT function SIGMOID, DICOM PS3.3 C.11.2.1.3.1.

    ``y = (y_max - y_min) / (1 + exp(-4 (x - c) / w)) + y_min``. Requires ``w > 0``.
    Returns float32 of ``x``'s shape.
    """
    if width <= 0:
        raise ValueError(f"SIGMOID window width must be > 0 (PS3.3 C.11.2.1.3.1), got {width}")
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        y = (y_max - y_min) / (1.0 + np.exp(-4.0 * (x - center) / width)) + y_min
    return y.astype(np.float32)


WINDOW_FUNCTIONS = {
    "LINEAR": window_linear,
    "LINEAR_EXACT": window_linear_exact,
    "SIGMOID": window_sigmoid,
}
