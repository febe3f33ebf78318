"""Layout step: the one place that produces NCHW / NHWC / NCDHW tensors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medflow.ops.layout import convert_dtype, to_layout
from medflow.sample import Sample
from medflow.steps.registry import StepParams, register


class LayoutParams(StepParams):
    """Tensor axis order and dtype."""

    step: Literal["layout"]
    layout: Literal["NCHW", "NHWC", "NCDHW", "NDHWC", "CHW", "HWC"] = Field(
        "NCHW",
        description="Axis order. Slice stacks: NCHW/NHWC with N = slices. Volumes: NCDHW/NDHWC with N = 1, "
        "D = slices. Single images: CHW/HWC.",
    )
    dtype: Literal["float32", "float16", "uint8", "int16", "uint16"] = Field(
        "float32", description="Output dtype. Integer dtypes are rounded and clipped, never wrapped."
    )
    scale: float = Field(1.0, description="Multiply values by this before the dtype cast (e.g. 255 for [0,1] -> uint8).")
    offset: float = Field(0.0, description="Add this after scaling, before the dtype cast.")

    def pointwise(self) -> bool:
        # NHWC keeps medflow's z, y, x, c order: only the dtype conversion acts, value by
        # value, so the step can join a folded lookup table (e.g. windows -> uint8).
        return self.layout == "NHWC"

    def channels_first(self) -> bool:
        return self.layout.index("C") < self.layout.index("W")

    def slicewise(self) -> bool:
        # N is the slice axis for these layouts: slab k of the output is layout(slab k).
        return self.layout in ("NCHW", "NHWC")


@register("layout", 1, LayoutParams, reads_only_pixel_description=True)
def layout(sample: Sample, params: LayoutParams) -> Sample:
    """Reorder axes to a tensor layout (NCHW, NHWC, NCDHW...) and cast the dtype."""
    tensor = to_layout(sample.pixels, sample.axes, params.layout)
    tensor = convert_dtype(tensor, params.dtype, params.scale, params.offset)
    channels = sample.channels or (("gray",) if "c" not in sample.axes else ())
    return sample.replace(pixels=tensor, axes=params.layout.lower(), channels=channels)
