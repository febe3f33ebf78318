"""Correction steps: N4 bias-field correction and denoising (see :mod:`medflow.ops.correction`)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from medflow.errors import StepError
from medflow.ops import correction as ops
from medflow.sample import Sample
from medflow.steps.registry import StepParams, register
from medflow.threads import item_threads


def _volume(sample: Sample, step: str) -> tuple[float, float, float]:
    """Check the axes are ``zyx`` and return the voxel spacing (z, y, x) in mm (1 mm when unknown)."""
    if sample.axes != "zyx":
        raise StepError(step, sample.item_id, f"needs a scalar volume with axes 'zyx', got {sample.describe()}")
    geometry = sample.geometry
    if geometry is None:
        return (1.0, 1.0, 1.0)
    z = geometry.slice_spacing
    if z is None:
        step_vector = geometry.slice_step
        z = float(abs(np.dot(step_vector, geometry.normal))) if step_vector is not None else 0.0
    dy, dx = geometry.pixel_spacing
    return (z if z > 0 else min(dy, dx), float(dy), float(dx))


class N4Params(StepParams):
    """N4 bias-field correction of smooth multiplicative intensity inhomogeneity (MR).

    Effort against accuracy, measured by ``benchmarks/bench_n4.py`` (full table in
    ``benchmarks/RESULTS-n4.md``): on a real 384 x 384 x 40 T2 MR, the defaults take ~4 s and
    land 5.6% (mean) from a high-effort fit; the field's shape is what the fields below trade.
    """

    step: Literal["n4_bias_correction"]
    shrink_factor: int = Field(
        4, ge=1, le=16, description="Shrink each axis by this factor (never below 4 voxels) to fit the field, "
        "which is then evaluated at full resolution. The main cost knob, ~1/shrink^3: on a 384 x 384 x 40 "
        "MR, 2 took ~5x the time of 4 for half the field error (2.7% vs 5.6% mean), 8 took 0.3x for 8.8% "
        "(benchmarks/bench_n4.py).", json_schema_extra={"unit": "voxel"}
    )
    iterations: tuple[int, ...] = Field(
        (50, 50, 50, 50),
        min_length=1,
        description="Maximum iterations per fitting level; one entry per level (each doubles the "
        "control-point resolution). Fewer levels or iterations are cheaper and coarser: 3 x 50 took "
        "0.6x the time of 4 x 50 for 8.5% field error, 4 x 20 0.4x for 8% (benchmarks/bench_n4.py).",
        json_schema_extra={"unit": "iteration"},
    )
    convergence_threshold: float = Field(
        0.001, gt=0, description="Stop a level when the change in coefficient of variation is below this. "
        "Lower costs time only where levels converged early (1e-4: 1.1x the time, same error on a real MR, 23x "
        "the time on a 256 x 256 x 4 noise series; benchmarks/bench_n4.py).",
        json_schema_extra={"unit": "ratio"},
    )
    control_points: int = Field(
        4, ge=4, description="B-spline control points per axis at the first level (>= 4). More is not more "
        "accurate: 8 took 1.8x the time of 4 for a rougher field (10% from the reference; "
        "benchmarks/bench_n4.py).",
        json_schema_extra={"unit": "point"},
    )
    mask: Literal["otsu", "positive"] = Field(
        "otsu", description="Voxels the field is fitted on: above Otsu's threshold (the object), or all "
        "positive voxels."
    )
    intensity_offset: float = Field(
        0.0, description="Added before correction and subtracted after, because N4 needs positive "
        "intensities (e.g. 1024 for CT in HU).", json_schema_extra={"unit": "input units"}
    )


@register("n4_bias_correction", 1, N4Params, checkpoint=True)
def n4_bias_correction(sample: Sample, params: N4Params) -> Sample:
    """Remove a smooth multiplicative bias field (SimpleITK N4); output float32."""
    spacing = _volume(sample, "n4_bias_correction")
    try:
        corrected, bias = ops.n4_bias_correction(
            sample.pixels,
            spacing,
            shrink_factor=params.shrink_factor,
            iterations=params.iterations,
            convergence_threshold=params.convergence_threshold,
            control_points=params.control_points,
            mask=params.mask,
            intensity_offset=params.intensity_offset,
            threads=item_threads(),
        )
    except (ValueError, RuntimeError) as exc:
        raise StepError("n4_bias_correction", sample.item_id, f"{exc} ({sample.describe()})") from exc
    meta = dict(sample.meta)
    meta["n4_bias_field_range"] = [float(bias.min()), float(bias.max())]
    return sample.replace(pixels=corrected, meta=meta)


class DenoiseParams(StepParams):
    """Edge-preserving denoising: SimpleITK curvature flow (float) or OpenCV non-local means (8-bit)."""

    step: Literal["denoise"]
    method: Literal["curvature_flow", "nl_means"] = Field(
        "curvature_flow",
        description="curvature_flow: SimpleITK CurvatureFlow on float data (preferred). nl_means: OpenCV "
        "fastNlMeansDenoising per slice on values quantized to 8 bits within value_range.",
    )
    time_step: float = Field(
        0.0625, gt=0, description="curvature_flow: time step, in units of the finest voxel axis; stable up "
        "to 0.0625 in 3-D (0.125 for one slice).", json_schema_extra={"unit": "voxel^2"}
    )
    iterations: int = Field(
        5, ge=1, description="curvature_flow: number of iterations.", json_schema_extra={"unit": "iteration"}
    )
    h: float = Field(
        10.0, gt=0, description="nl_means: filter strength in 8-bit levels.", json_schema_extra={"unit": "8-bit level"}
    )
    template_window: int = Field(
        7, ge=3, description="nl_means: odd patch size.", json_schema_extra={"unit": "pixel"}
    )
    search_window: int = Field(
        21, ge=3, description="nl_means: odd search window size.", json_schema_extra={"unit": "pixel"}
    )
    value_range: tuple[float, float] | None = Field(
        None, description="nl_means: [low, high] quantization range in input units (values outside are "
        "clipped); null uses the volume's min and max.", json_schema_extra={"unit": "input units"}
    )

    @model_validator(mode="after")
    def _check(self) -> DenoiseParams:
        if self.template_window % 2 == 0 or self.search_window % 2 == 0:
            raise ValueError("template_window and search_window must be odd")
        if self.value_range is not None and self.value_range[0] >= self.value_range[1]:
            raise ValueError(f"value_range must be increasing (got {list(self.value_range)})")
        return self


@register("denoise", 1, DenoiseParams, checkpoint=True)
def denoise(sample: Sample, params: DenoiseParams) -> Sample:
    """Reduce noise with curvature flow (SimpleITK) or non-local means (OpenCV, 8-bit); output float32."""
    spacing = _volume(sample, "denoise")
    if params.method == "curvature_flow":
        out = ops.curvature_flow(sample.pixels, spacing, time_step=params.time_step, iterations=params.iterations)
        applied = {"method": "curvature_flow", "time_step": params.time_step, "iterations": params.iterations}
    else:
        if params.value_range is not None:
            value_range = params.value_range
        else:
            value_range = (float(sample.pixels.min()), float(sample.pixels.max()))
        if value_range[0] >= value_range[1]:
            raise StepError("denoise", sample.item_id, f"constant volume, nothing to quantize ({sample.describe()})")
        out = ops.nl_means_8bit(
            sample.pixels, value_range, h=params.h,
            template_window=params.template_window, search_window=params.search_window,
        )
        applied = {"method": "nl_means", "h": params.h, "value_range": list(value_range)}
    meta = dict(sample.meta)
    meta["denoise"] = applied
    return sample.replace(pixels=out, meta=meta)
