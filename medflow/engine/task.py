"""What a worker is given and what it gives back, and how one step is applied.

:class:`ItemTask` (paths and small parameters, never arrays) and :class:`ItemResult` (small,
JSON-able records) cross process boundaries; :func:`apply_step` is the one way a step runs,
in the plain, folded and streamed paths alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medflow.engine.plan import Link
from medflow.errors import MedflowError, StepError
from medflow.sample import Sample
from medflow.sources.base import ItemRef
from medflow.steps.registry import get_step


@dataclass(frozen=True)
class ItemTask:
    """Everything a worker needs for one item (picklable, no arrays)."""

    item: ItemRef
    links: list[Link]
    steps: list[Any]  # step params models, aligned with links[1:]
    writers: list[Any]  # per-item writer params models
    output_key: str
    start: int
    reader_params: dict[str, Any]
    out_dir: str
    cache_dir: str
    fold: bool = True  # fold leading pointwise steps into lookup tables (same bytes, faster)
    stream: bool = True  # stream slab by slab when every step and writer allows it (same bytes, less memory)
    expect: dict[str, Any] | None = None  # outputs.expect of the recipe
    dataset_stats: dict[int, Any] = field(default_factory=dict)  # step index -> dataset statistics
    accumulate: Any = None  # first pass: params of the step whose statistics to accumulate (no outputs)
    threads: int = 1  # threads inside the item (streamed slabs), when items are fewer than workers
    decode_workers: int = 0  # worker processes decoding its compressed slices beside it (one item, more workers)
    split: str | None = None  # the item's split (recipe's splits:); joins no step key (see item_writers)
    read_facts: tuple | None = None  # per file, what discovery learnt for reading it, as JSON text (series._usable_facts)
    keep_native_stored: bool = True  # cache the stored values of native slices too (engine.cache_stored_values: true)


@dataclass(slots=True)  # the build keeps one per item run (without meta) to its end
class ItemResult:
    """What a worker returns: small, JSON-able, never the pixels."""

    item_id: str
    status: str  # "ok" | "failed" | "quarantined" | "filtered"
    outputs: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    computed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    private_tables: dict[str, list[list[str]]] = field(default_factory=dict)
    stats: dict[str, Any] | None = None  # first pass: the item's accumulator record
    cache_skipped: str | None = None  # why an entry of this item was not cached (a full cache), else None


def check_expectation(sample: Sample, expect: dict[str, Any], bounds: tuple[Any, Any] | None = None) -> None:
    """Raise a StepError naming every way the final array differs from ``outputs.expect``.

    ``bounds``: (low, high) known to bound every value of the pixels, none of them NaN (e.g. the
    folded tables a slab was gathered through); when they lie within ``value_range`` the pixels
    are not scanned. Otherwise they are, and the message gives their exact span.
    """
    problems = []
    pixels = sample.pixels
    layout = expect.get("layout")
    if layout and layout.lower() != sample.axes.lower():
        problems.append(f"layout is {sample.axes.upper()}, expected {layout.upper()}")
    dtype = expect.get("dtype")
    if dtype and pixels.dtype != np.dtype(dtype):
        problems.append(f"dtype is {pixels.dtype}, expected {dtype}")
    channels = expect.get("channels")
    if channels is not None:
        have = pixels.shape[sample.axes.lower().index("c")] if "c" in sample.axes.lower() else 1
        if have != channels:
            problems.append(f"{have} channel(s), expected {channels}")
    value_range = expect.get("value_range")
    if value_range is not None and pixels.size and not _inside(bounds, value_range):
        low, high = value_range
        if np.issubdtype(pixels.dtype, np.floating) and np.isnan(pixels).any():
            problems.append("contains NaN")
        else:
            lo, hi = pixels.min(), pixels.max()
            if lo < low or hi > high:
                problems.append(f"values span [{lo:.6g}, {hi:.6g}], expected within [{low:g}, {high:g}]")
    if problems:
        raise StepError("outputs.expect", sample.item_id, "; ".join(problems))


def _inside(bounds: tuple[Any, Any] | None, value_range) -> bool:
    """Do ``bounds`` (``None``: unknown) lie within ``value_range``, by the scan's own comparisons?"""
    return bounds is not None and not (bounds[0] < value_range[0] or bounds[1] > value_range[1])


def apply_step(params: Any, sample: Sample) -> Sample:
    """Run one registered step on ``sample``; failures become a StepError describing the input.

    Floating-point errors (divide by zero, invalid, overflow) raise instead of silently
    producing NaN or inf in a training set.
    """
    spec = get_step(params.step)
    try:
        with np.errstate(divide="raise", invalid="raise", over="raise", under="ignore"):
            out = spec.function(sample, params)
    except (MedflowError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if os.environ.get("MEDFLOW_DEBUG"):
            raise
        raise StepError(spec.name, sample.item_id, f"{type(exc).__name__}: {exc} (input {sample.describe()})") from exc
    if not isinstance(out, Sample):
        raise StepError(spec.name, sample.item_id, f"returned {type(out).__name__}, not a Sample")
    return out

