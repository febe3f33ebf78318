"""Intensity steps: VOI window."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medflow.ops.intensity import WINDOW_FUNCTIONS
from medflow.sample import Sample
from medflow.steps.registry import StepParams, register


class WindowParams(StepParams):
    """Window level/width (VOI LUT function of DICOM PS3.3 C.11.2.1.2)."""

    step: Literal["window"]
    level: float = Field(description="Window center (level), in input units (HU for CT).", json_schema_extra={"unit": "HU"})
    width: float = Field(gt=0, description="Window width, in input units (HU for CT); LINEAR needs >= 1.", json_schema_extra={"unit": "HU"})
    function: Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"] = Field(
        "LINEAR", description="VOI LUT function (PS3.3 C.11.2.1.2): LINEAR, LINEAR_EXACT or SIGMOID."
    )
    output_range: tuple[float, float] = Field(
        (0.0, 1.0), description="Output values [y_min, y_max]; output dtype is float32."
    )

    @model_validator(mode="after")
    def _linear_width(self) -> WindowParams:
        if self.function == "LINEAR" and self.width < 1:
            raise ValueError(f"width must be >= 1 for the LINEAR function (got {self.width})")
        if self.output_range[0] >= self.output_range[1]:
            raise ValueError(f"output_range must be increasing (got {list(self.output_range)})")
        return self


@register("window", 1, WindowParams, pointwise=True)
def window(sample: Sample, params: WindowParams) -> Sample:
    """Map intensities through a VOI window (level/width) to float32 in output_range."""
    function = WINDOW_FUNCTIONS[params.function]
    y_min, y_max = params.output_range
    out = function(sample.pixels, params.level, params.width, y_min, y_max)
    meta = dict(sample.meta)
    meta["window"] = {"level": params.level, "width": params.width, "function": params.function}
    meta["units"] = "window output"
    return sample.replace(pixels=out, meta=meta)
