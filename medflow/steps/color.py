"""Colour steps: pseudo-colour (``colormap``) and colour-space conversion (``color_space``)."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from medflow.errors import InputError
from medflow.ops import colorspace
from medflow.ops.lut import (
    COLORMAP_NAMES,
    apply_lut,
    blue_red_lut,
    load_lut_file,
    opencv_colormap_lut,
    palette_indices,
    palette_lut_from_headers,
    quantize_to_uint8,
)
from medflow.sample import Sample
from medflow.steps.registry import StepParams, register

ColormapName = Literal[COLORMAP_NAMES + ("blue_red", "dicom_palette", "file")]  # type: ignore[valid-type]


class ColormapParams(StepParams):
    """Pseudo-colour: one channel -> RGB through a lookup table."""

    step: Literal["colormap"]
    map: ColormapName = Field(  # type: ignore[valid-type]
        description=(
            "Lookup table. An OpenCV colormap by name (cv2.COLORMAP_<NAME>, e.g. jet, viridis, turbo, bone, "
            "hot), reordered to RGB; 'blue_red': entry i = (R, G, B) = (i, 0, 255 - i), 0 pure blue, 255 pure "
            "red; 'dicom_palette': the item's Palette Color LUT (PS3.3 C.7.6.3.1.5), indexed by stored pixel "
            "value; 'file': a user table (see path)."
        )
    )
    input_range: tuple[float, float] = Field(
        (0.0, 1.0),
        description=(
            "Input values [lo, hi] mapped to LUT entries 0 and 255: index = clip(rint((x - lo) / (hi - lo) "
            "* 255), 0, 255), rint rounding half to even. In input units ([0, 1] after a window). "
            "Not used by dicom_palette."
        ),
        json_schema_extra={"unit": "input units"},
    )
    path: str | None = Field(
        None,
        description=(
            "LUT file for map 'file': .csv (256 lines 'r,g,b', integers 0..255) or .npy (integer array of "
            "shape (256, 3), values 0..255). Absolute, or relative to the recipe's folder when the recipe "
            "loader provides it, else to the current directory."
        ),
    )
    output_dtype: Literal["float32", "uint8"] = Field(
        "float32",
        description=(
            "uint8: the table's 8-bit entries; float32: entry / 255 in [0, 1] (a 16-bit DICOM palette gives "
            "entry / 65535, keeping its precision)."
        ),
    )

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        recipe_dir = (info.context or {}).get("recipe_dir") if info.context else None
        if value is not None and recipe_dir is not None and not Path(value).is_absolute():
            return str(Path(recipe_dir) / value)
        return value

    @model_validator(mode="after")
    def _check(self) -> ColormapParams:
        lo, hi = self.input_range
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"input_range must be finite and increasing (got {list(self.input_range)})")
        if self.map == "file":
            if self.path is None:
                raise ValueError("map 'file' needs path: a .csv or .npy LUT file")
            try:
                _lut_from_file(self.path)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        elif self.path is not None:
            raise ValueError(f"path is only used with map 'file' (map is {self.map!r})")
        if self.map == "dicom_palette" and "input_range" in self.model_fields_set:
            raise ValueError(
                "input_range does not apply to dicom_palette: it is indexed by stored pixel value"
            )
        return self

    def canonical_params(self) -> dict[str, Any]:
        """Params with, for a LUT file, the sha256 of its validated table instead of its path.

        Editing the file changes the key; moving the project to another folder or
        machine (which changes the resolved absolute path) does not.
        """
        params = super().canonical_params()
        if self.map == "file" and self.path is not None:
            params["path"] = Path(self.path).name
            params["lut_sha256"] = hashlib.sha256(_lut_from_file(self.path).tobytes()).hexdigest()
        return params


@register("colormap", 1, ColormapParams, pointwise=True, reads_only_pixel_description=True)
def colormap(sample: Sample, params: ColormapParams) -> Sample:
    """Pseudo-colour one channel into RGB through a 256-entry LUT (OpenCV, blue_red, DICOM palette, file)."""
    values, axes = _single_channel(sample)
    if params.map == "dicom_palette":
        rgb = _palette_rgb(sample, values, axes, params.output_dtype)
    else:
        lut = _table(params)
        lo, hi = params.input_range
        rgb = apply_lut(quantize_to_uint8(values, lo, hi), lut)
    meta = dict(sample.meta)
    meta["colormap"] = {"map": params.map}
    if params.map != "dicom_palette":
        meta["colormap"]["input_range"] = list(params.input_range)
    return sample.replace(pixels=rgb, axes=axes + "c", channels=("r", "g", "b"), meta=meta)


class ColorSpaceParams(StepParams):
    """Colour-space conversion; the source space is read from the Sample's channel names."""

    step: Literal["color_space"]
    to: Literal["rgb", "ycbcr", "ycrcb", "hsv", "lab", "gray"] = Field(
        description=(
            "Target space. From rgb: 'ycbcr' (ITU-R BT.601 full range, JPEG/DICOM YBR_FULL, channels y, cb, cr), "
            "'ycrcb' (OpenCV's order y, cr, cb), 'hsv' (OpenCV: float h in degrees 0..360, s, v in 0..1; "
            "uint8 h = degrees/2), 'lab' (OpenCV, sRGB D65: float L 0..100, a, b about -128..127; uint8 "
            "L*255/100, a+128, b+128), 'gray' (BT.601 luma, one channel). 'rgb' converts any of these back. "
            "float32 input in [0, 1] stays float32; uint8 stays uint8 (rounded, clipped)."
        )
    )


@register("color_space", 2, ColorSpaceParams, pointwise=True, reads_only_pixel_description=True)
def color_space(sample: Sample, params: ColorSpaceParams) -> Sample:
    """Convert between RGB and YCbCr (Y, Cb, Cr), YCrCb (Y, Cr, Cb), HSV, Lab or gray."""
    source = colorspace.space_of(sample.channels)
    if not sample.axes.endswith("c") or not sample.channels:
        raise ValueError(
            f"color_space needs a last channel axis 'c' with named channels; got axes {sample.axes!r} "
            f"and channels {sample.channels}"
        )
    if params.to == "rgb" and source in (None, "rgb"):
        others = ", ".join(
            f"{names} ({space})" for space, names in colorspace.SPACE_CHANNELS.items() if space != "rgb"
        )
        raise ValueError(
            f"color_space to 'rgb' needs channels {others}; got channels {_named(sample.channels)}"
        )
    if params.to != "rgb" and source != "rgb":
        raise ValueError(
            f"color_space to {params.to!r} needs channels ('r', 'g', 'b') (rgb); got channels "
            f"{_named(sample.channels)}" + ("; convert to rgb first" if source else "")
        )
    assert source is not None
    pixels = colorspace.convert(sample.pixels, source, params.to)
    meta = dict(sample.meta)
    meta["color_space"] = {"from": source, "to": params.to}
    return sample.replace(pixels=pixels, channels=colorspace.SPACE_CHANNELS[params.to], meta=meta)


def _named(channels: tuple[str, ...]) -> str:
    space = colorspace.space_of(channels)
    return f"{channels}" + (f" ({space})" if space else "")


def _single_channel(sample: Sample) -> tuple[np.ndarray, str]:
    """The Sample's values without a channel axis, and its axes without ``c``."""
    if "c" not in sample.axes:
        return sample.pixels, sample.axes
    n_channels = sample.pixels.shape[sample.axes.index("c")]
    if not sample.axes.endswith("c") or n_channels != 1:
        raise ValueError(
            f"colormap needs one channel (axes without 'c', or a last 'c' of size 1); got axes "
            f"{sample.axes!r} with {n_channels} channel(s) {sample.channels}"
        )
    return sample.pixels[..., 0], sample.axes[:-1]


def _table(params: ColormapParams) -> np.ndarray:
    """The map's 256 x 3 table in ``output_dtype`` (uint8 entries, or entry / 255 as float32).

    Read-only and built once per map (per version of a LUT file): the engine describes
    every streamed slab with this step.
    """
    if params.map == "file":
        assert params.path is not None  # the params validator requires it
        return _output_table(("file", *_file_version(params.path)), params.output_dtype)
    return _output_table((params.map,), params.output_dtype)


@lru_cache(maxsize=32)
def _output_table(source: tuple, output_dtype: str) -> np.ndarray:
    name = source[0]
    if name == "file":
        lut = _cached_lut(*source[1:])
    elif name == "blue_red":
        lut = blue_red_lut()
    else:
        lut = opencv_colormap_lut(name)
    if output_dtype == "float32":
        lut = lut.astype(np.float32) / np.float32(255)
        lut.setflags(write=False)
    return lut


def _lut_from_file(path: str) -> np.ndarray:
    """The validated table of a LUT file (read-only), re-read when the file's size or mtime changes."""
    return _cached_lut(*_file_version(path))


def _file_version(path: str) -> tuple[str, int, int]:
    """(resolved path, mtime, size) of a LUT file; InputError naming it when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        load_lut_file(path)  # raises InputError naming the file
        raise
    return str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=16)
def _cached_lut(path: str, mtime_ns: int, size: int) -> np.ndarray:
    table = load_lut_file(path)
    table.setflags(write=False)
    return table


def _palette_rgb(sample: Sample, values: np.ndarray, axes: str, output_dtype: str) -> np.ndarray:
    """Apply each slice's palette: one header for all slices, or one header per ``z`` slice."""
    headers = sample.headers
    if not headers:
        raise ValueError("dicom_palette needs the item's DICOM headers, and this Sample has none")
    if len(headers) == 1:
        groups: list[tuple[Any, dict[str, Any]]] = [(Ellipsis, headers[0])]
    elif axes.startswith("z") and len(headers) == values.shape[0]:
        groups = list(enumerate(headers))
    else:
        raise ValueError(
            f"dicom_palette: {len(headers)} headers for axes {axes!r} and shape {values.shape}; "
            "need one header, or one per z slice"
        )
    out = np.empty(values.shape + (3,), dtype=np.float32 if output_dtype == "float32" else np.uint8)
    scaled: dict[tuple[int, int, bytes], np.ndarray] = {}  # the same palette is scaled once
    for where, header in groups:
        try:
            palette = palette_lut_from_headers(header)
        except ValueError as exc:
            raise ValueError(f"dicom_palette: {exc}") from None
        key = (palette.first_mapped, palette.bits, palette.table.tobytes())
        if key not in scaled:
            scaled[key] = _scaled_table(palette.table, palette.full_scale, output_dtype)
        out[where] = np.take(scaled[key], palette_indices(values[where], palette), axis=0)
    return out


def _scaled_table(table: np.ndarray, full_scale: int, output_dtype: str) -> np.ndarray:
    """Palette entries as float32 ``entry / full_scale``, or uint8 ``rint(entry * 255 / full_scale)``."""
    if output_dtype == "float32":
        return (table.astype(np.float64) / full_scale).astype(np.float32)
    return np.rint(table.astype(np.float64) * 255.0 / full_scale).astype(np.uint8)
