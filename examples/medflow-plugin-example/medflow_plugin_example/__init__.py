"""An example medflow plugin: the ``invert`` step (``high + low - value``), registered on import."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from medflow.sample import Sample
from medflow.steps.registry import StepParams, register


class InvertParams(StepParams):
    """Mirror intensities inside [low, high]: value -> high + low - value."""

    step: Literal["invert"]
    low: float = Field(0.0, description="Lower end of the range (output units of the previous step).")
    high: float = Field(1.0, description="Upper end of the range (output units of the previous step).")


# reads_only_pixel_description: the step reads no header and keeps headers, geometry and files as
# they are, so a streamed series reuses one slab's description for the next (medflow.engine.fold)
@register("invert", 1, InvertParams, pointwise=True, reads_only_pixel_description=True)
def invert(sample: Sample, params: InvertParams) -> Sample:
    """Mirror intensities inside [low, high] (e.g. after a window: dark becomes bright)."""
    pixels = np.asarray(sample.pixels, dtype=np.float32)
    return sample.replace(pixels=(np.float32(params.high + params.low) - pixels).astype(np.float32))
