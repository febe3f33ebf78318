"""Colour-space conversions between RGB and YCbCr, YCrCb, HSV, Lab and gray.

Arrays have the channel axis last, shape ``(..., 3)`` (``(..., 1)`` for gray), any
leading shape. Two dtypes, two conventions:

* **float32**, RGB in ``[0, 1]``: the output stays float32; ranges are given per
  function. Float outputs are not clipped.
* **uint8**, RGB in ``0..255``: the output is uint8, rounded and clipped to ``0..255``.

Channel order is always named: YCbCr is (Y, Cb, Cr) (ITU-R BT.601 full range, as
JPEG/JFIF and DICOM YBR_FULL); OpenCV's YCrCb is (Y, Cr, Cb). OpenCV is called
with its ``COLOR_RGB2*`` / ``COLOR_*2RGB`` codes, so RGB is never passed as BGR.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medflow._lazy import lazy_import

cv2 = lazy_import("cv2")

#: Channel names of each space, in array order.
SPACE_CHANNELS: dict[str, tuple[str, ...]] = {
    "rgb": ("r", "g", "b"),
    "ycbcr": ("y", "cb", "cr"),
    "ycrcb": ("y", "cr", "cb"),
    "hsv": ("h", "s", "v"),
    "lab": ("l", "a", "b"),
    "gray": ("gray",),
}

# ITU-R BT.601 luma coefficients; everything else of YCbCr derives from these two.
KR, KB = 0.299, 0.114
KG = 1.0 - KR - KB

_CHUNK = 1 << 20  # pixels per block: bounds the float64 temporaries


def space_of(channels: tuple[str, ...]) -> str | None:
    """The space whose channel names are exactly ``channels`` (in order), else ``None``."""
    for space, names in SPACE_CHANNELS.items():
        if tuple(channels) == names:
            return space
    return None


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB -> YCbCr, ITU-R BT.601 full range (JPEG/JFIF; DICOM YBR_FULL, PS3.3 C.7.6.3.1.2).

    ``Y = 0.299 R + 0.587 G + 0.114 B``,
    ``Cb = (B - Y) / 1.772 + o = -0.168736 R - 0.331264 G + 0.5 B + o``,
    ``Cr = (R - Y) / 1.402 + o = 0.5 R - 0.418688 G - 0.081312 B + o``,
    with the coefficients derived exactly from Kr = 0.299, Kb = 0.114 (the six-digit
    numbers are their rounding) and offset ``o`` = 128 for uint8, 0.5 for float32.
    Evaluated in float64, term by term in a fixed order (no BLAS), then cast.

    Args:
        rgb: ``(..., 3)`` float32 in [0, 1] or uint8.

    Returns:
        ``(..., 3)`` channels (Y, Cb, Cr), same dtype. float32: Y, Cb, Cr in [0, 1].
        uint8: rounded half to even and clipped (pure red's Cr, 255.5, becomes 255).
    """
    dtype = _check(rgb)
    offset = 128.0 if dtype == np.uint8 else 0.5
    cb_scale, cr_scale = 0.5 / (1.0 - KB), 0.5 / (1.0 - KR)
    rows = (
        (KR, KG, KB, 0.0),
        (-KR * cb_scale, -KG * cb_scale, 0.5, offset),
        (0.5, -KG * cr_scale, -KB * cr_scale, offset),
    )
    return _linear(rgb, rows, dtype)


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """YCbCr (Y, Cb, Cr; BT.601 full range) -> RGB: the exact inverse of :func:`rgb_to_ycbcr`.

    ``R = Y + 1.402 (Cr - o)``, ``G = Y - 0.344136 (Cb - o) - 0.714136 (Cr - o)``,
    ``B = Y + 1.772 (Cb - o)`` (JFIF's inverse, coefficients derived exactly from Kr, Kb).

    Args:
        ycbcr: ``(..., 3)`` float32 (offset 0.5) or uint8 (offset 128).

    Returns:
        ``(..., 3)`` RGB, same dtype; uint8 rounded half to even and clipped,
        float32 not clipped (out-of-gamut YCbCr gives values outside [0, 1]).
    """
    dtype = _check(ycbcr)
    o = 128.0 if dtype == np.uint8 else 0.5
    r_cr, b_cb = 2.0 * (1.0 - KR), 2.0 * (1.0 - KB)
    g_cb, g_cr = KB * b_cb / KG, KR * r_cr / KG
    rows = (
        (1.0, 0.0, r_cr, -r_cr * o),
        (1.0, -g_cb, -g_cr, (g_cb + g_cr) * o),
        (1.0, b_cb, 0.0, -b_cb * o),
    )
    return _linear(ycbcr, rows, dtype)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB -> gray as BT.601 luma ``0.299 R + 0.587 G + 0.114 B``: the Y of :func:`rgb_to_ycbcr`.

    Returns:
        ``(..., 1)``, same dtype (uint8 rounded half to even; float32 in [0, 1]).
        Agrees with ``cv2.COLOR_RGB2GRAY`` within 1 (OpenCV uses fixed-point weights).
    """
    dtype = _check(rgb)
    return _linear(rgb, ((KR, KG, KB, 0.0),), dtype)


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """Gray ``(..., 1)`` -> RGB ``(..., 3)`` by copying the value to r, g and b; dtype kept."""
    gray = np.asarray(gray)
    if gray.shape[-1:] != (1,):
        raise ValueError(f"gray input must have one channel last, shape (..., 1); got {gray.shape}")
    _check_dtype(gray)
    return np.repeat(gray, 3, axis=-1)


def rgb_to_ycrcb(rgb: np.ndarray) -> np.ndarray:
    """RGB -> YCrCb exactly as ``cv2.COLOR_RGB2YCrCb``: channels (Y, **Cr**, **Cb**).

    OpenCV: ``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cr = (R - Y) 0.713 + d``,
    ``Cb = (B - Y) 0.564 + d``, ``d`` = 128 (uint8) or 0.5 (float32); its rounded
    0.713 / 0.564 differ from BT.601's 1/1.402 and 1/1.772 by under 0.05 %.

    Returns:
        ``(..., 3)``, same dtype; float32 channels in about [0, 1].
    """
    return _opencv(rgb, cv2.COLOR_RGB2YCrCb, 3)


def ycrcb_to_rgb(ycrcb: np.ndarray) -> np.ndarray:
    """YCrCb (Y, Cr, Cb; OpenCV's order and coefficients) -> RGB, as ``cv2.COLOR_YCrCb2RGB``."""
    return _opencv(ycrcb, cv2.COLOR_YCrCb2RGB, 3)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB -> HSV as ``cv2.COLOR_RGB2HSV``.

    Returns:
        ``(..., 3)`` channels (H, S, V), same dtype. float32: H in degrees [0, 360),
        S and V in [0, 1]. uint8: H = degrees / 2 in 0..179, S and V in 0..255.
        8-bit HSV is lossy (2-degree hue steps): over all 2**24 colours an
        RGB -> HSV -> RGB round trip on uint8 is off by up to 6 levels (OpenCV's vectorized path, which medflow always uses).
    """
    return _opencv(rgb, cv2.COLOR_RGB2HSV, 3)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV (OpenCV ranges, see :func:`rgb_to_hsv`) -> RGB, as ``cv2.COLOR_HSV2RGB``."""
    return _opencv(hsv, cv2.COLOR_HSV2RGB, 3)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB -> CIE L*a*b* (D65 white) as ``cv2.COLOR_RGB2Lab`` (input is gamma-encoded sRGB).

    Returns:
        ``(..., 3)`` channels (L, a, b), same dtype. float32: L in [0, 100], a and b
        in about [-128, 127]. uint8: ``L * 255 / 100``, ``a + 128``, ``b + 128``.
        OpenCV's float Lab is approximate (round trips within about 1.4/255), and
        8-bit Lab is lossy: over all 2**24 colours, an RGB -> Lab -> RGB round trip
        is off by more than 1 level for 28 % of them and by up to 27 (where a
        channel is near 0 and the sRGB curve is steep, e.g. (0, 235, 254)).
    """
    return _opencv(rgb, cv2.COLOR_RGB2Lab, 3)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (OpenCV ranges, see :func:`rgb_to_lab`) -> sRGB, as ``cv2.COLOR_Lab2RGB``."""
    return _opencv(lab, cv2.COLOR_Lab2RGB, 3)


#: (source, target) -> conversion. Every conversion goes to or from RGB.
CONVERSIONS: dict[tuple[str, str], Callable[[np.ndarray], np.ndarray]] = {
    ("rgb", "ycbcr"): rgb_to_ycbcr,
    ("ycbcr", "rgb"): ycbcr_to_rgb,
    ("rgb", "ycrcb"): rgb_to_ycrcb,
    ("ycrcb", "rgb"): ycrcb_to_rgb,
    ("rgb", "hsv"): rgb_to_hsv,
    ("hsv", "rgb"): hsv_to_rgb,
    ("rgb", "lab"): rgb_to_lab,
    ("lab", "rgb"): lab_to_rgb,
    ("rgb", "gray"): rgb_to_gray,
    ("gray", "rgb"): gray_to_rgb,
}


def convert(pixels: np.ndarray, source: str, target: str) -> np.ndarray:
    """Convert ``pixels`` (channels last) from space ``source`` to ``target``.

    Raises:
        ValueError: a pair not in :data:`CONVERSIONS` (only to and from RGB), or a bad
            dtype or channel count.
    """
    try:
        function = CONVERSIONS[(source, target)]
    except KeyError:
        raise ValueError(
            f"no conversion from {source} to {target}: conversions go from rgb to "
            f"{', '.join(s for s in SPACE_CHANNELS if s != 'rgb')} and back"
        ) from None
    return function(pixels)


def _check_dtype(arr: np.ndarray) -> np.dtype:
    if arr.dtype not in (np.float32, np.uint8):
        raise ValueError(f"colour conversion needs float32 in [0, 1] or uint8, got dtype {arr.dtype}")
    return arr.dtype


def _check(arr: np.ndarray) -> np.dtype:
    arr = np.asarray(arr)
    if arr.shape[-1:] != (3,):
        raise ValueError(f"colour conversion needs 3 channels last, shape (..., 3); got {arr.shape}")
    return _check_dtype(arr)


def _linear(
    arr: np.ndarray, rows: tuple[tuple[float, float, float, float], ...], dtype: np.dtype
) -> np.ndarray:
    """``out[..., k] = a*c0 + b*c1 + c*c2 + d`` for each row (a, b, c, d), in float64, blockwise."""
    arr = np.asarray(arr)
    flat = arr.reshape(-1, 3)
    out = np.empty((len(flat), len(rows)), dtype=dtype)
    for start in range(0, len(flat), _CHUNK):
        block = flat[start : start + _CHUNK].astype(np.float64)
        c0, c1, c2 = block[:, 0], block[:, 1], block[:, 2]
        for k, (a, b, c, d) in enumerate(rows):
            value = a * c0 + b * c1 + c * c2 + d
            if dtype == np.uint8:
                value = np.clip(np.rint(value), 0, 255)
            out[start : start + _CHUNK, k] = value
    return out.reshape(arr.shape[:-1] + (len(rows),))


_ROW = 64


def _opencv(arr: np.ndarray, code: int, out_channels: int) -> np.ndarray:
    """Run ``cv2.cvtColor`` on ``(..., 3)``, pixel by pixel independent of the array's shape."""
    arr = np.asarray(arr)
    _check(arr)
    if arr.size == 0:
        return np.zeros(arr.shape[:-1] + (out_channels,), dtype=arr.dtype)
    # OpenCV's vectorized and scalar code paths round differently in the last bit, and
    # which one runs depends on the image width. Always converting rows of _ROW pixels (a
    # multiple of every SIMD width, so no scalar tail) makes the result of each pixel
    # independent of the array's shape: a lookup table and a whole image agree exactly.
    flat = arr.reshape(-1, 3)
    n_pixels = flat.shape[0]
    padding = (-n_pixels) % _ROW
    if padding:
        flat = np.concatenate([flat, np.zeros((padding, 3), dtype=flat.dtype)])
    image = np.ascontiguousarray(flat.reshape(-1, _ROW, 3))
    out = cv2.cvtColor(image, code).reshape(-1, out_channels)[:n_pixels]
    return out.reshape(arr.shape[:-1] + (out_channels,))
