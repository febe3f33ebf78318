"""Tensor layout: named axes to NCHW / NHWC / NCDHW, and dtype conversion.

Input axes are medflow's internal names (``"zyx"``, ``"zyxc"``, ``"yx"``, ``"yxc"``);
output axes are the layout string in lower case (``"nchw"``...). A missing channel
axis becomes a channel axis of size 1.
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("NCHW", "NHWC", "NCDHW", "NDHWC", "CHW", "HWC")


def to_layout(pixels: np.ndarray, axes: str, layout: str) -> np.ndarray:
    """Reorder ``pixels`` (axes ``axes``) into ``layout``.

    For slice stacks N is the number of slices (``z``); for volumes (NCDHW/NDHWC)
    N is 1 and D is ``z``. Returns a C-contiguous array (a copy only when the axis
    order changes).

    Raises:
        ValueError: unknown layout or axes that the layout cannot take.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if "c" not in axes:
        pixels = pixels[..., np.newaxis]
        axes = axes + "c"
    if axes not in ("zyxc", "yxc"):
        raise ValueError(f"layout {layout} needs axes zyx[c] or yx[c], got {axes!r}")
    if axes == "yxc":
        pixels = pixels[np.newaxis]
    # pixels is now z, y, x, c
    order = {
        "NCHW": (0, 3, 1, 2),
        "NHWC": (0, 1, 2, 3),
        "CHW": (3, 1, 2),
        "HWC": (1, 2, 3),
        "NCDHW": (3, 0, 1, 2),
        "NDHWC": (0, 1, 2, 3),
    }[layout]
    if layout in ("CHW", "HWC"):
        if pixels.shape[0] != 1:
            raise ValueError(f"layout {layout} is for one image; this item has {pixels.shape[0]} slices")
        pixels = pixels[0]
        order = tuple(i - 1 for i in order)
    out = np.ascontiguousarray(np.transpose(pixels, order))
    if layout in ("NCDHW", "NDHWC"):
        out = out[np.newaxis]
    return out


def from_layout(tensor: np.ndarray, layout: str, had_channel_axis: bool = True) -> tuple[np.ndarray, str]:
    """Inverse of :func:`to_layout`: returns ``(pixels, axes)`` in medflow's ``zyxc`` naming."""
    if layout == "NCHW":
        pixels, axes = np.transpose(tensor, (0, 2, 3, 1)), "zyxc"
    elif layout == "NHWC":
        pixels, axes = tensor, "zyxc"
    elif layout == "NCDHW":
        pixels, axes = np.transpose(tensor[0], (1, 2, 3, 0)), "zyxc"
    elif layout == "NDHWC":
        pixels, axes = tensor[0], "zyxc"
    elif layout == "CHW":
        pixels, axes = np.transpose(tensor, (1, 2, 0)), "yxc"
    elif layout == "HWC":
        pixels, axes = tensor, "yxc"
    else:
        raise ValueError(f"unknown layout {layout!r}")
    if not had_channel_axis:
        pixels, axes = pixels[..., 0], axes[:-1]
    return np.ascontiguousarray(pixels), axes


def convert_dtype(values: np.ndarray, dtype: str, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """``values * scale + offset`` cast to ``dtype``.

    Integer targets are rounded half-to-even and clipped to the dtype's range, so the
    conversion never wraps around. Float targets are a plain cast after scaling.
    """
    target = np.dtype(dtype)
    if scale == 1.0 and offset == 0.0 and values.dtype == target:
        return values
    scaled = values.astype(np.float64) * scale + offset if (scale != 1.0 or offset != 0.0) else values
    if np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        scaled = np.clip(np.rint(scaled), info.min, info.max)
    return np.ascontiguousarray(scaled.astype(target))
