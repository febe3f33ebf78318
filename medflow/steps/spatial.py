"""Spatial steps: resample, orient, crop_pad, resize.

Thin wrappers over :mod:`medflow.ops.spatial` that keep the ``Geometry`` exact:
every step recomputes each slice's position from the voxel it now holds.
Per-slice ``headers`` follow the slices: an output slice carries the header of the
input slice it comes from (or the nearest one; when ``orient`` turns the slice axis
in-plane, every new slice carries the first header); tags that describe position
(ImagePositionPatient, SliceLocation) are then stale, the geometry is authoritative.
A label map (``Sample.label``) moves with the pixels by nearest neighbour (``nearest``
interpolator / ``INTER_NEAREST_EXACT``), whatever the step's interpolation; padding is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from medflow.errors import StepError
from medflow.ops import spatial as ops
from medflow.sample import Geometry, Sample
from medflow.steps.registry import StepParams, register
from medflow.threads import item_threads

_MM = {"unit": "mm"}


def _volume_axes(sample: Sample, step: str) -> bool:
    """True when the sample has a trailing channel axis; refuses anything but zyx / zyxc."""
    if sample.axes not in ("zyx", "zyxc"):
        raise StepError(step, sample.item_id, f"needs axes 'zyx' or 'zyxc', got {sample.describe()}")
    return sample.axes == "zyxc"


def _geometry(sample: Sample, step: str) -> Geometry:
    if sample.geometry is None:
        raise StepError(step, sample.item_id, "the sample has no geometry (pixel spacing, slice positions)")
    if len(sample.geometry.slice_positions) != sample.pixels.shape[0]:
        raise StepError(
            step,
            sample.item_id,
            f"geometry has {len(sample.geometry.slice_positions)} slice positions for "
            f"{sample.pixels.shape[0]} slices",
        )
    return sample.geometry


def _per_channel(pixels: np.ndarray, has_channels: bool, function: Callable[[np.ndarray], np.ndarray]):
    if not has_channels:
        return function(pixels)
    return np.stack([function(pixels[..., ch]) for ch in range(pixels.shape[-1])], axis=-1)


def _follow_headers(sample: Sample, source_slices) -> list:
    """Headers of the input slices each output slice comes from (empty stays empty)."""
    if len(sample.headers) != sample.pixels.shape[0]:
        return list(sample.headers)
    return [sample.headers[int(k)] for k in source_slices]


def _lattice_geometry(
    old: Geometry, origin, directions, spacing_zyx, n_slices: int, note: str, *, keep_slice_spacing: bool = False
) -> Geometry:
    """Geometry of a regular grid: origin, direction columns (x, y, z), spacing (z, y, x).

    ``keep_slice_spacing`` keeps the old ``slice_spacing`` (a single input slice has no z spacing to set).
    """
    directions = np.asarray(directions, float)
    sz, sy, sx = (float(v) for v in spacing_zyx)
    positions = np.asarray(origin, float)[None, :] + np.arange(n_slices)[:, None] * sz * directions[:, 2]
    return Geometry(
        row_direction=_vec(directions[:, 0]),
        column_direction=_vec(directions[:, 1]),
        pixel_spacing=(sy, sx),
        slice_positions=tuple(_vec(p) for p in positions),
        slice_spacing=old.slice_spacing if keep_slice_spacing else sz,
        notes=old.notes + (note,),
    )


def _label_moved(sample: Sample, move: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    """The label map moved like the pixels by ``move`` (nearest neighbour: values stay labels), or ``None``."""
    return None if sample.label is None else move(sample.label)


def _vec(values) -> tuple[float, float, float]:
    return tuple(float(v) for v in values)


def _spacing_text(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ") mm"


# ---------------------------------------------------------------------------- resample


class ResampleParams(StepParams):
    """Resample the volume onto a regular grid with the given voxel spacing."""

    step: Literal["resample"]
    spacing: float | tuple[float, float, float] = Field(
        description="Target voxel spacing [z, y, x] in mm, or one number for isotropic voxels. With a "
        "single slice the z spacing is ignored.",
        json_schema_extra=_MM,
    )
    interpolator: Literal["linear", "bspline", "nearest"] = Field(
        "linear",
        description="SimpleITK interpolator: linear, bspline (cubic B-spline) or nearest (for label maps).",
    )
    anisotropic: bool = Field(
        False,
        description="Resample in-plane with `interpolator` first, then along z separately with "
        "`z_interpolator` (as nnU-Net does for thick-slice data).",
    )
    z_interpolator: Literal["nearest", "linear"] = Field(
        "nearest", description="Interpolation along z when `anisotropic` is true."
    )
    fill_value: float | Literal["min"] = Field(
        "min",
        description="Value of output voxels outside the input (e.g. -1024 for CT in HU); 'min' uses the "
        "volume's minimum.",
        json_schema_extra={"unit": "input units"},
    )

    @field_validator("spacing")
    @classmethod
    def _positive(cls, value):
        values = (value,) * 3 if isinstance(value, int | float) else value
        if any(v <= 0 for v in values):
            raise ValueError(f"spacing must be > 0 mm (got {value})")
        return value

    def spacing_zyx(self) -> tuple[float, float, float]:
        if isinstance(self.spacing, int | float):
            return (float(self.spacing),) * 3
        return tuple(float(v) for v in self.spacing)


@register("resample", 1, ResampleParams, checkpoint=True)
def resample(sample: Sample, params: ResampleParams) -> Sample:
    """Resample to a voxel spacing in mm (SimpleITK); tilted and uneven stacks become regular."""
    has_channels = _volume_axes(sample, "resample")
    geometry = _geometry(sample, "resample")
    if sample.pixels.size == 0:
        raise StepError("resample", sample.item_id, f"empty volume: {sample.describe()}")
    fill = float(np.min(sample.pixels)) if params.fill_value == "min" else params.fill_value
    try:
        stack = ops.analyse_stack(
            geometry.row_direction, geometry.column_direction, geometry.pixel_spacing, geometry.slice_positions
        )
    except ValueError as exc:
        raise StepError("resample", sample.item_id, str(exc)) from exc
    results = []
    threads = item_threads()

    def run(volume: np.ndarray) -> np.ndarray:
        result = ops.resample_stack(
            volume,
            geometry.row_direction,
            geometry.column_direction,
            geometry.pixel_spacing,
            geometry.slice_positions,
            params.spacing_zyx(),
            params.interpolator,
            anisotropic=params.anisotropic,
            z_interpolator=params.z_interpolator,
            fill_value=fill,
            threads=threads,
        )
        results.append(result)
        return result.pixels

    try:
        pixels = _per_channel(sample.pixels, has_channels, run)
    except ValueError as exc:
        raise StepError("resample", sample.item_id, f"{exc} ({sample.describe()})") from exc
    result = results[0]
    old_spacing = (stack.step if stack.step is not None else geometry.slice_spacing or 0.0,) + tuple(
        geometry.pixel_spacing
    )
    irregular = f", {stack.describe()}" if not stack.regular else ""
    note = (
        f"resampled from spacing (z, y, x) {_spacing_text(old_spacing)}{irregular} to "
        f"{_spacing_text(result.spacing)}: {result.method}"
    )
    new_geometry = _lattice_geometry(
        geometry, result.origin, result.directions, result.spacing, pixels.shape[0], note,
        keep_slice_spacing=sample.pixels.shape[0] == 1,
    )
    meta = dict(sample.meta)
    meta["spacing_mm"] = [new_geometry.slice_spacing, *new_geometry.pixel_spacing]
    label = _label_moved(sample, lambda lab: ops.resample_stack(
        lab, geometry.row_direction, geometry.column_direction, geometry.pixel_spacing, geometry.slice_positions,
        params.spacing_zyx(), "nearest", anisotropic=params.anisotropic, z_interpolator="nearest", fill_value=0,
        threads=threads,
    ).pixels)
    return sample.replace(
        pixels=pixels, geometry=new_geometry, headers=_follow_headers(sample, result.source_slice), meta=meta,
        label=label,
    )


# ---------------------------------------------------------------------------- orient


class OrientParams(StepParams):
    """Permute and flip the array axes to an orientation code (exact, no interpolation)."""

    step: Literal["orient"]
    code: str = Field(
        "LPS",
        description="Where increasing x (column), y (row) and z (slice) index point, e.g. LPS (DICOM) or RAS "
        "(NIfTI/nibabel); the convention of SimpleITK's DICOMOrientImageFilter.",
    )
    max_obliquity_deg: float | None = Field(
        None,
        ge=0,
        description="Refuse images whose axes are further than this from the code's directions; null "
        "orients oblique images to the closest code (as ITK and nibabel do).",
        json_schema_extra={"unit": "degree"},
    )

    @field_validator("code")
    @classmethod
    def _valid_code(cls, value: str) -> str:
        ops.orientation_vectors(value)
        return value.upper()


@register("orient", 1, OrientParams)
def orient(sample: Sample, params: OrientParams) -> Sample:
    """Reorder and flip the axes to follow an orientation code such as LPS or RAS."""
    _volume_axes(sample, "orient")
    geometry = _geometry(sample, "orient")
    try:
        stack = ops.analyse_stack(
            geometry.row_direction, geometry.column_direction, geometry.pixel_spacing, geometry.slice_positions
        )
    except ValueError as exc:
        raise StepError("orient", sample.item_id, str(exc)) from exc
    directions = np.column_stack([geometry.row_direction, geometry.column_direction, stack.axis])
    source, flip, obliquity = ops.orientation_transform(directions, params.code)
    if params.max_obliquity_deg is not None and obliquity > params.max_obliquity_deg:
        raise StepError(
            "orient",
            sample.item_id,
            f"the image axes are {obliquity:.3g} degrees off {params.code} (max_obliquity_deg is "
            f"{params.max_obliquity_deg}); resample it or raise the limit",
        )
    nz, ny, nx = sample.pixels.shape[:3]
    z_spacing = stack.step if stack.step is not None else geometry.slice_spacing
    spacing_xyz = (geometry.pixel_spacing[1], geometry.pixel_spacing[0], z_spacing)
    sizes_xyz = (nx, ny, nz)
    if source[2] != 2 and not stack.regular:
        raise StepError(
            "orient",
            sample.item_id,
            f"orienting to {params.code} moves the slice axis in-plane, but the stack is {stack.describe()}; "
            "add a resample step before orient",
        )
    if source[2] != 2 and z_spacing is None:
        raise StepError("orient", sample.item_id, "one slice with unknown slice spacing cannot become a row axis")
    pixels = ops.apply_orientation(sample.pixels, source, flip)
    new_dirs = np.column_stack([directions[:, source[a]] * (-1.0 if flip[a] else 1.0) for a in range(3)])

    def flip_shift(axes) -> np.ndarray:
        """Shift of voxel (0, 0, 0) caused by reversing the new ``axes`` (LPS mm)."""
        shift = np.zeros(3)
        for a in axes:
            if flip[a]:
                shift += (sizes_xyz[source[a]] - 1) * spacing_xyz[source[a]] * directions[:, source[a]]
        return shift

    names = "xyz"
    note = (
        f"oriented to {params.code}: new x, y, z = "
        + ", ".join(("-" if flip[a] else "") + "old " + names[source[a]] for a in range(3))
        + f" (largest angle to the code's axes {obliquity:.3g} deg)"
    )
    if source[2] == 2:
        # Slices stay slices: each keeps its own exact position (tilt and gaps preserved).
        order = np.arange(nz)[::-1] if flip[2] else np.arange(nz)
        positions = np.asarray(geometry.slice_positions, float)[order] + flip_shift((0, 1))
        new_geometry = Geometry(
            row_direction=_vec(new_dirs[:, 0]),
            column_direction=_vec(new_dirs[:, 1]),
            pixel_spacing=(spacing_xyz[source[1]], spacing_xyz[source[0]]),
            slice_positions=tuple(_vec(p) for p in positions),
            slice_spacing=geometry.slice_spacing,
            notes=geometry.notes + (note,),
        )
        headers = _follow_headers(sample, order)
    else:
        origin = np.asarray(geometry.slice_positions[0], float) + flip_shift((0, 1, 2))
        spacing_zyx = (spacing_xyz[source[2]], spacing_xyz[source[1]], spacing_xyz[source[0]])
        new_geometry = _lattice_geometry(geometry, origin, new_dirs, spacing_zyx, pixels.shape[0], note)
        headers = [sample.headers[0]] * pixels.shape[0] if sample.headers else []
    label = _label_moved(sample, lambda lab: ops.apply_orientation(lab, source, flip))
    return sample.replace(pixels=pixels, geometry=new_geometry, headers=headers, label=label)


# ---------------------------------------------------------------------------- crop_pad


class CropPadParams(StepParams):
    """Center-crop or pad the volume to a size in voxels."""

    step: Literal["crop_pad"]
    size: tuple[int | None, int | None, int | None] = Field(
        description="Output size [z, y, x] in voxels; null keeps an axis. Crops and pads are centered; an odd "
        "extra voxel is taken from / added at the end.",
        json_schema_extra={"unit": "voxel"},
    )
    pad_value: float = Field(
        0.0,
        description="Value of padded voxels, in the sample's units (e.g. -1024 for CT in HU).",
        json_schema_extra={"unit": "input units"},
    )

    @field_validator("size")
    @classmethod
    def _positive(cls, value):
        if any(v is not None and v < 1 for v in value):
            raise ValueError(f"sizes must be >= 1 (got {list(value)})")
        return value


@register("crop_pad", 1, CropPadParams)
def crop_pad(sample: Sample, params: CropPadParams) -> Sample:
    """Center-crop or pad to a size [z, y, x] in voxels; the origin follows the first kept voxel."""
    _volume_axes(sample, "crop_pad")
    try:
        pixels = ops.crop_pad(sample.pixels, params.size, params.pad_value)
    except ValueError as exc:
        raise StepError("crop_pad", sample.item_id, f"{exc} ({sample.describe()})") from exc
    plan = ops.crop_pad_plan(sample.pixels.shape[:3], params.size)
    offsets = [start - before for start, before, _ in plan]  # new index i is old index i + offset
    nz_new = pixels.shape[0]
    old_index = np.arange(nz_new) + offsets[0]
    headers = _follow_headers(sample, np.clip(old_index, 0, sample.pixels.shape[0] - 1))
    label = _label_moved(sample, lambda lab: ops.crop_pad(lab, params.size, 0))  # padding is background
    if sample.geometry is None:
        return sample.replace(pixels=pixels, headers=headers, label=label)
    geometry = _geometry(sample, "crop_pad")
    positions = np.asarray(geometry.slice_positions, float)
    nz = len(positions)
    r, c = np.asarray(geometry.row_direction, float), np.asarray(geometry.column_direction, float)
    dy, dx = geometry.pixel_spacing
    shift = offsets[2] * dx * r + offsets[1] * dy * c
    notes = geometry.notes
    if old_index.min() < 0 or old_index.max() >= nz:
        step = geometry.slice_step
        if step is None:
            if geometry.slice_spacing is None:
                raise StepError("crop_pad", sample.item_id, "cannot pad z: one slice and no slice spacing")
            step = geometry.slice_spacing * geometry.normal
        if geometry.slice_spacing is None:
            notes += ("crop_pad: slices padded on an uneven stack are placed at the mean slice step",)
        below = positions[0] + np.minimum(old_index, 0)[:, None] * step
        above = positions[-1] + np.maximum(old_index - (nz - 1), 0)[:, None] * step
        new_positions = np.where(
            (old_index < 0)[:, None], below, np.where((old_index >= nz)[:, None], above, 0.0)
        )
        inside = (old_index >= 0) & (old_index < nz)
        new_positions[inside] = positions[old_index[inside]]
    else:
        new_positions = positions[old_index]
    new_positions = new_positions + shift
    note = f"crop_pad to [z, y, x] = {list(pixels.shape[:3])}: voxel offset {offsets} from the input"
    new_geometry = Geometry(
        row_direction=geometry.row_direction,
        column_direction=geometry.column_direction,
        pixel_spacing=geometry.pixel_spacing,
        slice_positions=tuple(_vec(p) for p in new_positions),
        slice_spacing=geometry.slice_spacing,
        notes=notes + (note,),
    )
    return sample.replace(pixels=pixels, geometry=new_geometry, headers=headers, label=label)


# ---------------------------------------------------------------------------- resize


class ResizeParams(StepParams):
    """Resize every slice to a size in pixels (OpenCV); the pixel spacing scales accordingly."""

    step: Literal["resize"]
    size: tuple[int, int] = Field(
        description="Output slice size [y, x] = [rows, columns] in pixels.", json_schema_extra={"unit": "pixel"}
    )
    interpolation: Literal["nearest", "linear", "cubic", "area", "lanczos4"] = Field(
        "linear",
        description="OpenCV interpolation: nearest (INTER_NEAREST_EXACT), linear, cubic, area (best to shrink), "
        "lanczos4. cubic and lanczos4 can overshoot the input range.",
    )
    keep_aspect: Literal["pad"] | None = Field(
        None, description="'pad': scale both axes by one factor so the slice fits in size, then pad (centered) "
        "with pad_value: the aspect ratio is kept. Default: each axis scaled to size (may squash).")
    pad_value: float = Field(0.0, description="Value of padded pixels with keep_aspect: pad.",
                             json_schema_extra={"unit": "input units"})

    @field_validator("size")
    @classmethod
    def _positive(cls, value):
        if any(v < 1 for v in value):
            raise ValueError(f"sizes must be >= 1 (got {list(value)})")
        return value

    def canonical_params(self) -> dict:
        # without keep_aspect the params (and cache keys) are those of the squashing resize
        params = super().canonical_params()
        return params if self.keep_aspect else {k: v for k, v in params.items() if k not in ("keep_aspect", "pad_value")}


@register("resize", 1, ResizeParams)
def resize(sample: Sample, params: ResizeParams) -> Sample:
    """Resize slices to [rows, columns] with OpenCV; spacing = old * old_size / new_size, same field of view."""
    _volume_axes(sample, "resize")
    if params.keep_aspect == "pad":  # fit by one scale factor, then pad to size (same pixel spacing on y and x)
        ny, nx = sample.pixels.shape[1:3]
        scale = min(params.size[0] / ny, params.size[1] / nx)
        inner = (min(params.size[0], max(1, round(ny * scale))), min(params.size[1], max(1, round(nx * scale))))
        fitted = resize(sample, params.model_copy(update={"size": inner, "keep_aspect": None}))
        pad = CropPadParams(step="crop_pad", size=(None, *params.size), pad_value=params.pad_value)
        return crop_pad(fitted, pad)
    try:
        pixels = ops.resize_slices(sample.pixels, params.size, params.interpolation)
    except Exception as exc:  # OpenCV raises cv2.error for unsupported dtypes
        raise StepError("resize", sample.item_id, f"{exc} ({sample.describe()})") from exc
    label = _label_moved(sample, lambda lab: ops.resize_slices(lab, params.size, "nearest"))
    if sample.geometry is None:
        return sample.replace(pixels=pixels, label=label)
    geometry = _geometry(sample, "resize")
    ny, nx = sample.pixels.shape[1:3]
    dy_new, shift_y = ops.resized_spacing_and_shift(ny, params.size[0], geometry.pixel_spacing[0])
    dx_new, shift_x = ops.resized_spacing_and_shift(nx, params.size[1], geometry.pixel_spacing[1])
    shift = shift_x * np.asarray(geometry.row_direction, float) + shift_y * np.asarray(
        geometry.column_direction, float
    )
    positions = np.asarray(geometry.slice_positions, float) + shift
    note = (
        f"resized slices from [y, x] = [{ny}, {nx}] to {list(params.size)} ({params.interpolation}); "
        f"pixel spacing {_spacing_text(geometry.pixel_spacing)} -> {_spacing_text((dy_new, dx_new))}"
    )
    new_geometry = Geometry(
        row_direction=geometry.row_direction,
        column_direction=geometry.column_direction,
        pixel_spacing=(dy_new, dx_new),
        slice_positions=tuple(_vec(p) for p in positions),
        slice_spacing=geometry.slice_spacing,
        notes=geometry.notes + (note,),
    )
    return sample.replace(pixels=pixels, geometry=new_geometry, label=label)
