"""PNG writer: one 8-bit (or 16-bit) PNG per slice, for eyes and 2D training.

Files: ``<folder>/<item_id>/<slice:04d>.png`` (slice index in array order, from 0).

Accepted arrays (the Sample before or after the layout step):

* slice stacks ``zyx`` / ``zyxc`` and single images ``yx`` / ``yxc``;
* after layout ``nchw`` / ``nhwc`` (N = slices), ``chw`` / ``hwc`` (one image),
  ``ncdhw`` / ``ndhwc`` (volumes: one PNG per (n, d), numbered n * D + d).

Channels: 1 -> grayscale PNG; 3 -> RGB PNG, channel 0 as red, 1 as green, 2 as blue
(whatever the channels are named: e.g. the three windows of an intracranial
hemorrhage recipe are stored as R, G, B, the usual practice). Other channel counts
are refused.

Values: ``uint8`` (bit_depth 8) or ``uint16`` (bit_depth 16) are written as they are;
floating-point values are quantized explicitly,
``q = clip(rint((x - lo) / (hi - lo) * M), 0, M)`` with ``[lo, hi] = input_range`` and
``M`` = 255 or 65535 (``rint`` rounds half to even). NaN is refused. Any other integer
dtype is refused: convert it with the layout step (``dtype``, ``scale``) or write floats.

Bytes are deterministic: OpenCV's encoder with a fixed compression level writes only
IHDR, IDAT and IEND chunks (no tIME timestamp, no text).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from medflow._lazy import lazy_import
from medflow.sample import Sample
from medflow.writers.atomic import atomic_write_bytes
from medflow.writers.registry import WriterParams, WrittenFile, register_writer

cv2 = lazy_import("cv2")


class PngParams(WriterParams):
    """One PNG per slice: ``<folder>/<item_id>/<slice:04d>.png``."""

    kind: Literal["png"]
    folder: str = Field("png", description="Subfolder of the output folder for the PNG files.")
    bit_depth: Literal[8, 16] = Field(
        8, description="Bits per sample: 8 (uint8 input, or float quantized to 0..255) or 16 (uint16, 0..65535)."
    )
    input_range: tuple[float, float] = Field(
        (0.0, 1.0),
        description="For float input: values [lo, hi] mapped to 0 and the maximum (255 or 65535), "
        "rint then clip. Ignored for uint8/uint16 input.",
        json_schema_extra={"unit": "input units"},
    )
    compression: int = Field(
        3, ge=0, le=9, description="zlib compression level (0..9); fixed, so equal arrays give equal bytes."
    )

    @model_validator(mode="after")
    def _check_range(self) -> PngParams:
        lo, hi = self.input_range
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"input_range must be finite and increasing (got {list(self.input_range)})")
        return self


def as_slices(pixels: np.ndarray, axes: str) -> np.ndarray:
    """View any supported array as a stack of 2D images ``(n, rows, columns, channels)``.

    Args:
        pixels: the array, axes named by ``axes``.
        axes: one of ``zyx``, ``zyxc``, ``yx``, ``yxc``, ``nchw``, ``nhwc``, ``chw``,
            ``hwc``, ``ncdhw``, ``ndhwc`` (the last two give ``n * d`` images).

    Returns:
        A 4D array (a view where possible), channels last; 1 channel when there is no
        channel axis.

    Raises:
        ValueError: unknown axes, or axes that do not match ``pixels.ndim``.
    """
    if pixels.ndim != len(axes):
        raise ValueError(f"array has {pixels.ndim} dimensions but axes is {axes!r}")
    if axes in ("zyx", "yx"):
        out = pixels[..., None]
    elif axes in ("zyxc", "yxc", "nhwc", "hwc"):
        out = pixels
    elif axes == "nchw":
        out = pixels.transpose(0, 2, 3, 1)
    elif axes == "chw":
        out = pixels.transpose(1, 2, 0)
    elif axes == "ncdhw":
        n, c, d, h, w = pixels.shape
        return pixels.transpose(0, 2, 3, 4, 1).reshape(n * d, h, w, c)
    elif axes == "ndhwc":
        n, d, h, w, c = pixels.shape
        return pixels.reshape(n * d, h, w, c)
    else:
        raise ValueError(
            f"cannot read slices from axes {axes!r}: expected zyx, zyxc, yx, yxc, nchw, nhwc, chw, hwc, "
            "ncdhw or ndhwc"
        )
    if out.ndim == 3:
        out = out[None]
    return out


def quantize(values: np.ndarray, lo: float, hi: float, bit_depth: int) -> np.ndarray:
    """Float values -> uint8/uint16: ``clip(rint((x - lo) / (hi - lo) * M), 0, M)``, M = 2**bit_depth - 1.

    Raises:
        ValueError: the values contain NaN.
    """
    maximum = (1 << bit_depth) - 1
    x = np.asarray(values, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("values contain NaN; a PNG cannot hold them")
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.rint((x - lo) / (hi - lo) * maximum), 0, maximum)
    return q.astype(np.uint8 if bit_depth == 8 else np.uint16)


def to_png_values(slices: np.ndarray, params: PngParams) -> np.ndarray:
    """The integer image values a PNG will hold, shape ``(n, rows, columns, channels)``, RGB order."""
    dtype = np.uint8 if params.bit_depth == 8 else np.uint16
    if slices.dtype == dtype:
        return slices
    if np.issubdtype(slices.dtype, np.floating):
        lo, hi = params.input_range
        return quantize(slices, lo, hi, params.bit_depth)
    raise ValueError(
        f"PNG bit_depth {params.bit_depth} takes {np.dtype(dtype).name} or float values, got {slices.dtype}; "
        "cast with the layout step (dtype, scale) or write floats with an input_range"
    )


def encode_png(image: np.ndarray, compression: int = 3) -> bytes:
    """PNG bytes of one image ``(rows, columns, 1 | 3)`` uint8/uint16, channels in RGB order.

    OpenCV's encoder takes BGR: the channels are reversed explicitly here.
    """
    channels = image.shape[-1]
    if channels == 1:
        data = image[..., 0]
    elif channels == 3:
        data = image[..., ::-1]
    else:
        raise ValueError(f"a PNG holds 1 (gray) or 3 (RGB) channels; the image has {channels}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(data), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError(f"OpenCV could not encode a PNG of shape {image.shape} dtype {image.dtype}")
    return encoded.tobytes()


@register_writer("png", 1, PngParams)
def write_png(sample: Sample, params: PngParams, out_dir: Path) -> list[WrittenFile]:
    """One 8- or 16-bit PNG per slice (gray or RGB), float input quantized from input_range."""
    slices = as_slices(sample.pixels, sample.axes)
    channels = slices.shape[-1]
    if channels not in (1, 3):
        raise ValueError(
            f"PNG writer: item {sample.item_id} has {channels} channels {sample.channels}; a PNG holds 1 (gray) "
            "or 3 (RGB)"
        )
    written = []
    for index in range(slices.shape[0]):
        image = to_png_values(slices[index], params)
        relative = Path(params.folder) / sample.item_id / f"{index:04d}.png"
        data = encode_png(image, params.compression)
        digest = atomic_write_bytes(out_dir / relative, data)
        written.append(WrittenFile(relative.as_posix(), digest, len(data)))
    return written
