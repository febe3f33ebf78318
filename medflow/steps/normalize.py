"""Normalize step: min-max, z-score, nnU-Net percentile clip, fixed mean/std (ImageNet).

Statistics come from the item itself (``scope: item``) or from the whole dataset
(``scope: dataset``). For the dataset scope the engine runs a first pass; the protocol,
generic so that the engine never names this step, is three methods of the params:

* ``params.needs_dataset_stats()`` -> bool
* ``params.new_accumulator()`` -> :class:`medflow.ops.normalize.StatsAccumulator`
  (``update(pixels)``, ``merge(other)``, ``to_json()``/``from_json()``, ``result()``)
* ``params.stats_key()`` -> str: the key under which the engine puts ``result()`` in
  ``sample.meta["dataset_stats"]`` for the second pass.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, model_validator

from medflow.errors import StepError
from medflow.ops.normalize import StatsAccumulator, compute_stats, normalize, otsu_threshold
from medflow.sample import Sample
from medflow.steps.registry import StepParams, register

_NONE = {"unit": "none"}


class NormalizeParams(StepParams):
    """Intensity normalization with per-item or dataset statistics."""

    step: Literal["normalize"]
    mode: Literal["minmax", "zscore", "percentile_zscore", "percentile_clip", "fixed"] = Field(
        description="minmax: to output_range; zscore: (x-mean)/std; percentile_zscore: nnU-Net CT "
        "(clip to percentiles, then (x-mean)/std of the unclipped voxels in the mask); percentile_clip: "
        "clip only; fixed: (x-mean[c])/std[c] with given numbers (e.g. ImageNet).",
        json_schema_extra=_NONE,
    )
    scope: Literal["item", "dataset"] = Field(
        "item", description="Statistics of each item, or of the whole dataset (computed by the engine "
        "in a first pass and written to the manifest).", json_schema_extra=_NONE)
    above: float | None = Field(
        None, description="Only voxels strictly above this value enter the statistics (e.g. -500 HU: "
        "body, not air); every voxel is normalized.", json_schema_extra={"unit": "input units (HU for CT)"})
    percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="Lower and upper clip percentiles for the percentile modes.",
        json_schema_extra={"unit": "%"})
    output_range: tuple[float, float] = Field(
        (0.0, 1.0), description="Output [y_min, y_max] of minmax.", json_schema_extra={"unit": "output value"})
    mean: list[float] | None = Field(
        None, description="fixed: mean per channel, in channel order (ImageNet RGB: 0.485, 0.456, 0.406).",
        json_schema_extra={"unit": "input units"})
    std: list[float] | None = Field(
        None, description="fixed: std per channel (ImageNet RGB: 0.229, 0.224, 0.225).",
        json_schema_extra={"unit": "input units"})
    hist_range: tuple[float, float] = Field(
        (-1024.0, 3072.0), description="scope dataset, percentile modes: range of the histogram the "
        "dataset percentiles are read from; widen it for non-CT data.",
        json_schema_extra={"unit": "input units (HU for CT)"})
    foreground: Literal["otsu"] | None = Field(
        None, description="scope item: statistics from the foreground only: voxels above the item's Otsu "
        "threshold (a threshold in the recipe: 'above'). Every voxel is normalized.", json_schema_extra=_NONE)
    background: Literal["keep", "zero"] = Field(
        "keep", description="zero: set voxels outside the foreground ('foreground' or 'above') to 0 after "
        "normalizing (nnU-Net's use_mask_for_norm).", json_schema_extra=_NONE)
    hist_bin_width: float = Field(
        1.0, gt=0, description="scope dataset, percentile modes: histogram bin width (the percentile "
        "accuracy).", json_schema_extra={"unit": "input units (HU for CT)"})

    @model_validator(mode="after")
    def _check(self) -> NormalizeParams:
        fixed = self.mode == "fixed"
        if fixed != (self.mean is not None and self.std is not None):
            raise ValueError("mean and std are given for mode fixed, and only for it")
        if fixed:
            if len(self.mean) != len(self.std) or not self.mean:
                raise ValueError(f"mean and std need the same, non-zero length (got {self.mean} / {self.std})")
            if any(s <= 0 for s in self.std):
                raise ValueError(f"std must be > 0 (got {self.std})")
            if self.scope == "dataset" or self.above is not None:
                raise ValueError("mode fixed uses given numbers: no scope dataset, no above")
        if self.foreground is not None and (self.scope == "dataset" or self.above is not None or fixed):
            raise ValueError("foreground: otsu is a per-item mask: scope item, no above, not mode fixed")
        if self.background == "zero" and self.foreground is None and self.above is None:
            raise ValueError("background: zero needs a foreground ('foreground: otsu' or 'above')")
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100 (got {[low, high]})")
        if self.output_range[0] >= self.output_range[1]:
            raise ValueError(f"output_range must be increasing (got {list(self.output_range)})")
        if self.hist_range[0] >= self.hist_range[1]:
            raise ValueError(f"hist_range must be increasing (got {list(self.hist_range)})")
        return self

    def canonical_params(self) -> dict[str, Any]:
        # the foreground options at their defaults leave the params (and cache keys) as before they existed
        params = super().canonical_params()
        for name, default in (("foreground", None), ("background", "keep")):
            if params.get(name) == default:
                params.pop(name, None)
        return params

    # -- dataset-statistics protocol used by the engine -------------------------------
    def needs_dataset_stats(self) -> bool:
        return self.scope == "dataset"

    def new_accumulator(self) -> StatsAccumulator:
        return StatsAccumulator(self.mode, above=self.above, percentiles=self.percentiles,
                                hist_range=self.hist_range, bin_width=self.hist_bin_width)

    def stats_key(self) -> str:
        """Deterministic key of the statistics this step needs (same params, same key)."""
        fields = {"mode": self.mode, "above": self.above, "percentiles": list(self.percentiles),
                  "hist_range": list(self.hist_range), "hist_bin_width": self.hist_bin_width}
        return "normalize:" + json.dumps(fields, sort_keys=True, separators=(",", ":"))


@register("normalize", 1, NormalizeParams)
def normalize_step(sample: Sample, params: NormalizeParams) -> Sample:
    """Normalize intensities (min-max, z-score, percentile clip, fixed mean/std) to float32."""
    meta = dict(sample.meta)
    channel_axis = sample.axes.index("c") if "c" in sample.axes else None
    try:
        if params.mode == "fixed":
            stats: dict[str, Any] = {"mean": list(params.mean), "std": list(params.std)}
            if channel_axis is None and len(params.mean) != 1:
                raise ValueError(f"{len(params.mean)} means for a sample without channels (axes {sample.axes!r})")
        elif params.scope == "item":
            above = otsu_threshold(sample.pixels) if params.foreground == "otsu" else params.above
            stats = compute_stats(sample.pixels, params.mode, above=above, percentiles=params.percentiles)
            if params.foreground == "otsu":
                stats = {**stats, "otsu_threshold": above}
        else:
            stats = (sample.meta.get("dataset_stats") or {}).get(params.stats_key())
            if stats is None:
                raise ValueError(
                    "scope: dataset needs dataset statistics, computed by the engine's first pass and "
                    f"passed in sample.meta['dataset_stats'][{params.stats_key()!r}]; none were supplied "
                    "(build with the engine, or use scope: item)"
                )
        out = normalize(sample.pixels, params.mode, stats, output_range=params.output_range,
                        channel_axis=channel_axis)
        if params.background == "zero":
            threshold = stats["otsu_threshold"] if params.foreground == "otsu" else params.above
            out[~(sample.pixels > threshold)] = 0
    except ValueError as exc:
        raise StepError("normalize", sample.item_id, f"{exc} ({sample.describe()})") from exc
    meta["normalize"] = {"mode": params.mode, "scope": params.scope, "stats": stats}
    if sample.channels and params.mode == "fixed":
        meta["normalize"]["channels"] = list(sample.channels)
    meta["units"] = "normalized"
    return sample.replace(pixels=out, meta=meta)
