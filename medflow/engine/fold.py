"""Folding the read's rescale and a run of pointwise steps into per-slice lookup tables.

Every step from the stored integer to the final channels that declares itself
``pointwise`` maps each pixel's value independently of every other pixel. So for
an item of integer stored values, instead of running the chain on every pixel,
the engine runs the *same step functions* on the small array of every stored value
that occurs (``lo..hi``), one row per slice (so per-slice rescale and per-slice
headers are honoured), and gathers each slice's output through its row. Because
the steps are elementwise, the result is bit-identical to running them on the
volume; a test compares both paths.

The stored values are also checkpointed (``stored_key``): half the bytes of the
float32 read, and a parameter change of any pointwise step then recomputes from
them without decoding DICOM again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medflow.engine import keys
from medflow.engine.cache import Cache
from medflow.engine.checkpoint import load_sample, save_sample
from medflow.errors import CacheError
from medflow.ops.intensity import rescale
from medflow.sample import Sample
from medflow.sources.base import ItemRef

# A lookup table bigger than this (rows x values) is not worth it: run the steps directly.
MAX_TABLE_ENTRIES = 8_000_000


def pointwise_prefix(steps: list[Any]) -> int:
    """Number of leading steps that are pointwise (0: nothing to fold)."""
    count = 0
    for params in steps:
        if not params.pointwise():
            break
        count += 1
    return count


def stored_key(read_key: str) -> str:
    """Cache key of an item's stored-value checkpoint, derived from its read key."""
    return keys.hash_json({"stored_values_of": read_key})


def read_stored(
    item: ItemRef, reader_params: dict[str, Any], cache: Cache, read_key: str, *, cache_it: bool = True
) -> tuple[Sample | None, bool]:
    """The item's stored integer values and whether they came from the cache.

    Decoded and cached (unless ``cache_it`` is false: original headers before a
    de-identifying step) when not cached or corrupt; ``(None, False)`` when the item
    has no plain integer stored values (color, Modality LUT Sequence...).
    """
    from medflow.sources.series import NotStoredValues, read_item

    key = stored_key(read_key)
    try:
        cached = load_sample(cache, key, item)
    except CacheError:
        cached = None
    if cached is not None:
        return cached, True
    try:
        sample = read_item(item, values="stored", **reader_params)
    except NotStoredValues:
        return None, False
    if cache_it:
        save_sample(cache, key, sample, item)
    return sample, False


def fold(stored: Sample, steps: list[Any], apply_step) -> Sample | None:
    """Apply rescale + ``steps`` (all pointwise) to ``stored`` through per-slice tables.

    Returns the Sample the plain path would produce after the last of ``steps``, or
    None when a table would be too large (the caller then runs the plain path).
    """
    values = stored.pixels
    meta = dict(stored.meta)
    pairs = meta.pop("stored_rescale")
    lo, hi = int(values.min()), int(values.max())
    n_values = hi - lo + 1
    n_slices = values.shape[0]
    if n_slices * n_values > MAX_TABLE_ENTRIES:
        return None
    domain = np.arange(lo, hi + 1, dtype=np.int64)
    table_input = np.empty((n_slices, 1, n_values), dtype=np.float32)
    for z, (slope, intercept) in enumerate(pairs):
        table_input[z, 0] = rescale(domain, slope, intercept)
    table = stored.replace(pixels=table_input, meta=meta)
    for params in steps:
        table = apply_step(params, table)
    lut = table.pixels  # (Z, 1, n_values) or (Z, 1, n_values, C)
    if lut.ndim == 3:
        out = np.empty(values.shape, dtype=lut.dtype)
        for z in range(n_slices):
            np.take(lut[z, 0], _index(values[z], lo), out=out[z])
        return table.replace(pixels=out)
    # Channels are gathered plane by plane from contiguous 1-D tables (several times
    # faster than gathering C-vectors) into a channel-first buffer; the Sample gets the
    # zyxc view of it, so a following NCHW layout needs no copy.
    n_channels = lut.shape[3]
    planar = np.empty((n_slices, n_channels) + values.shape[1:], dtype=lut.dtype)
    for z in range(n_slices):
        index = _index(values[z], lo)
        for c in range(n_channels):
            np.take(np.ascontiguousarray(lut[z, 0, :, c]), index, out=planar[z, c])
    return table.replace(pixels=np.moveaxis(planar, 1, -1))


def _index(stored_slice: np.ndarray, lo: int) -> np.ndarray:
    """Row index into a table starting at stored value ``lo`` (intp: np.take would convert anything else)."""
    index = stored_slice.astype(np.intp)
    index -= lo
    return index
