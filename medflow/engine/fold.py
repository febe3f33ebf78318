"""Folding the read's rescale and a run of pointwise steps into full-range lookup tables.

Every step from the stored integer to the final channels that declares itself
``pointwise`` maps each pixel's value independently of every other pixel. So for an
item of 8- or 16-bit stored values, instead of running the chain on every pixel, the
engine runs the *same step functions* once on the array of all 256 or 65,536 possible
stored values and gathers each slice's output through that table, indexed directly by
the stored integers (viewed as unsigned: every index is in the table). Because the steps are
elementwise, the result is bit-identical to running them on the volume; a test compares
both paths on every kind of pointwise chain.

One table serves every slice with the same rescale (slope, intercept) and the same
pixel-description attributes (group 0028: photometric interpretation, VOI window and
LUT, Modality LUT, palette, PS3.3 C.7.6.3, C.11): these are all a pointwise step's pixel
output may depend on besides the value. A series with one rescale folds into one table,
built once per item (:class:`Folder` keeps them across slabs), and once per process when every
step of the chain reads of a slice only its pixels and pixel description: the items of a
dataset then share their tables and slab descriptions (:class:`ProcessTables`). Everything but the pixels
(meta, de-identified headers, private tables, axes, channels) comes from running the
chain on the slab's own headers with one value per slice, so it is what the plain path
records; a streamed slab reuses an earlier slab's description when no step can read what
differs between them (:class:`Folder`). When a step cannot run on the full range (e.g. a floating-point overflow on a
value the item never holds), the slab falls back to per-slice tables over the values it
holds (``lo..hi``), as exact. A gather only copies table entries, so the tables' smallest
and largest entries bound its output (:meth:`Folder.value_bounds`, for ``outputs.expect``).

The stored values are also checkpointed (``stored_key``): half the bytes of the float32
read, and a parameter change of any pointwise step then recomputes from them without
decoding DICOM again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.array_utils import byte_bounds

from medflow.engine import keys
from medflow.engine.cache import Cache
from medflow.engine.checkpoint import load_sample, sample_from_header, sample_header, save_sample
from medflow.engine.gather import padded_table, take_interleaved
from medflow.errors import CacheError, StepError
from medflow.ops.intensity import rescale
from medflow.sample import Sample
from medflow.sources.base import ItemRef

# A range table bigger than this (rows x values) is not worth it: run the steps directly.
MAX_TABLE_ENTRIES = 8_000_000
# Full-range tables (and slab descriptions) kept per item; beyond this many the oldest are dropped.
MAX_TABLES = 64
# ... and beyond this many bytes of tables (a seed table is 65,536 x 3 float32, 0.75 MiB, and
# its per-channel copies as much): 64 of them held 100 MiB.
MAX_TABLE_BYTES = 24 << 20
# A rescale (slope, intercept) whose slices in the item hold fewer pixels than this many times
# a full-range table's entries (65,536 for 16-bit values) folds through tables over the values
# each slab holds instead: building a full-range table through the seed chain costs ~5 ms, as
# much as gathering ~4 slices of 512 x 512 through it. Tiny series (2 slices of 16 x 16) and
# series whose every slice has its own rescale (PET, some MR) then skip 65,536-entry tables: a
# 200-slice series with 200 rescales took 1.9 s instead of 0.9 s, at 128 x 128 longer than a
# plain numpy script.
FULL_RANGE_MIN_FRACTION = 16.0
# Stored dtype -> the unsigned view that indexes a full-range table directly.
_INDEX_VIEW = {
    np.dtype(np.uint8): np.dtype(np.uint8), np.dtype(np.int8): np.dtype(np.uint8),
    np.dtype(np.uint16): np.dtype(np.uint16), np.dtype(np.int16): np.dtype(np.uint16),
}
# DICOM JSON keys of the pixel-description group (0028,xxxx): the only header
# attributes a pointwise step's pixel output may depend on (top level, or in the items of an
# enhanced image's functional groups).
_PIXEL_GROUP = "0028"
_FUNCTIONAL_GROUPS = ("52009229", "52009230")  # Shared, Per-frame Functional Groups Sequence


def pointwise_prefix(steps: list[Any]) -> int:
    """Number of leading steps that are pointwise (0: nothing to fold)."""
    count = 0
    for params in steps:
        if not params.pointwise():
            break
        count += 1
    return count


# Version of the stored-values entry's layout (2: headers as raw bytes when known, 3: with
# their pixel-description keys, see medflow.sources.pixels.LazyHeaders.to_json; 4: a multi-frame
# item's shared header once, medflow.sources.frame_headers); joins its
# key, so older entries are not read.
STORED_FORMAT = 4


def stored_key(read_key: str) -> str:
    """Cache key of an item's stored-value checkpoint, derived from its read key."""
    return keys.hash_json({"stored_values_of": read_key, "format": STORED_FORMAT})


def stored_entry_header(sample: Sample, item: ItemRef) -> dict[str, Any]:
    """The JSON header of a stored-values entry: headers as raw bytes when the reader kept them."""
    headers = sample.headers
    entry = sample_header(sample.replace(headers=[]), item)
    entry.update(headers.to_json() if hasattr(headers, "to_json") else {"headers": list(headers)})
    return entry


def stored_from_entry(header: dict[str, Any], pixels: np.ndarray, item: ItemRef) -> Sample:
    """The Sample of a stored-values entry (:func:`stored_entry_header`), headers built when read."""
    from medflow.sources.pixels import LazyHeaders

    headers = LazyHeaders.from_json(header)
    return sample_from_header({**header, "headers": []}, pixels, item).replace(headers=headers)


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
        entry = cache.get(key)
    except CacheError:
        entry = None
    if entry is not None:
        if "segments" in entry[0]:  # a label map rides along (never streamed): its own entry, see checkpoint
            try:
                cached = load_sample(cache, key, item)
            except CacheError:
                cached = None
            if cached is not None:
                return cached, True
        else:  # the whole-volume path checkpoints Samples: headers as a plain list
            sample = stored_from_entry(entry[0], entry[1], item)
            return sample.replace(headers=list(sample.headers)), True
    try:
        sample = read_item(item, values="stored", **reader_params)
    except NotStoredValues:
        return None, False
    if cache_it:
        save_sample(cache, key, sample, item)  # read_item's headers: a plain list
    return sample, False


def fold(stored: Sample, steps: list[Any], apply_step, out: np.ndarray | None = None) -> Sample | None:
    """Apply rescale + ``steps`` (all pointwise) to ``stored`` through lookup tables.

    Returns the Sample the plain path would produce after the last of ``steps``, or
    None when a table would be too large (the caller then runs the plain path). See
    :class:`Folder` for ``out``; to fold an item slab by slab, keep one :class:`Folder`.
    """
    return Folder(steps, apply_step).apply(stored, out)


def chain_key(links: list[Any]) -> str:
    """The identity of the folded steps' chain apart from any item: their links' names, versions and
    canonical params (a file a step reads is there by its digest), as canonical JSON."""
    return keys.canonical_json([[link.name, link.version, link.params] for link in links]).decode()


def channels_first_next(rest: list[Any]) -> bool:
    """Whether the step after the folded chain puts channels before y, x (e.g. an NCHW layout).

    The gather then fills a planar buffer, which that step only views; otherwise it fills
    the channels interleaved (z, y, x, c), medflow's own order: an NHWC tensor, or any step
    that reads pixels as y, x, c, gets a C-contiguous array with no transposing copy.
    """
    return bool(rest) and rest[0].channels_first()


class _Table:
    """One folded full-range table, in the form the gather asks for: per channel (planar) or interleaved."""

    def __init__(self, lut: np.ndarray):
        # lut: (values,) or (values, channels); row i is the chain's output for stored value i
        self.lut = np.ascontiguousarray(lut.reshape(lut.shape[0], -1))
        self.n_channels = self.lut.shape[1]
        self.dtype = self.lut.dtype

    @functools.cached_property
    def channels(self) -> tuple[np.ndarray, ...]:
        return tuple(np.ascontiguousarray(self.lut[:, c]) for c in range(self.n_channels))

    @functools.cached_property
    def interleaved(self) -> np.ndarray:
        # one element of this void dtype is a whole output pixel: np.take copies all its channels at once
        return self.lut.view(np.dtype((np.void, self.n_channels * self.dtype.itemsize))).reshape(-1)

    @functools.cached_property
    def padded(self) -> np.ndarray | None:
        # 3 channels as 4: gathered in one move per pixel (see medflow.engine.gather)
        return padded_table(self.lut)

    @functools.cached_property
    def bounds(self) -> tuple[Any, Any] | None:
        """(smallest, largest) entry, ``None`` when an entry is NaN: every gathered value lies within."""
        if np.issubdtype(self.dtype, np.floating) and np.isnan(self.lut).any():
            return None
        return self.lut.min(), self.lut.max()


@dataclass(frozen=True)
class SlabTables:
    """What a slab is gathered through: per slice, its table's key and (full range) its table.

    ``tables`` is ``None`` when the slab goes through per-slice tables over the values it holds
    (not full-range indexable, or the chain failed on the full range).
    """

    keys: tuple[tuple[float, float, str], ...]  # (slope, intercept, pixel description) per slice; () without tables
    tables: list[_Table] | None
    scope: tuple | None = None  # where the slab's tables and description are the process's (ProcessTables)


class Folder:
    """The folded tables of one item's pointwise chain, built on first need and kept across slabs.

    ``planar``: the gather's buffer holds channels before y, x (see :func:`channels_first_next`);
    else channels last. The pixels are the same values either way. Thread-safe for :meth:`apply`
    on different slabs (a table built twice by two threads is the same table).

    When every step reads of a slice only its pixels and pixel description
    (:meth:`~medflow.steps.registry.StepParams.reads_only_pixel_description`), the description of
    a slab (meta, axes, channels) is the same as that of an earlier slab with the same table keys
    and meta: it is reused, and only what belongs to the slab (headers, geometry, files) is its own.
    """

    def __init__(self, steps: list[Any], apply_step, planar: bool = True, item_slices: int | None = None,
                 item_rescales: list | None = None, chain_key: str | None = None):
        self.steps = list(steps)
        self.apply_step = apply_step
        self.planar = planar
        self._tables: dict[tuple, _Table] = {}
        self._full_range = True
        # slices in the item, when a slab is only part of it (else each slab is the whole item)
        self._item_slices = item_slices
        # slices of the item per (slope, intercept), when a slab is only part of it
        self._slices_per_rescale = (
            Counter((float(slope), float(intercept)) for slope, intercept in item_rescales)
            if item_rescales is not None else None
        )
        self._memo = bool(self.steps) and all(_reads_only_pixel_description(p) for p in self.steps)
        self._described: dict[tuple, tuple[dict[str, Any], Sample]] = {}
        self._lock = threading.Lock()  # the two memos above: inserts and evictions from gather threads
        # the chain's identity beyond this item: its tables and descriptions are the process's
        self._chain_key = chain_key if self._memo else None

    def tables(self, slab: Sample) -> SlabTables:
        """The slab's table keys and full-range tables (built on first need); pass it on to the other methods."""
        dtype = slab.pixels.dtype
        if not self._full_range or dtype not in _INDEX_VIEW:
            return SlabTables((), None)
        scope = self._scope(slab)
        if scope is not None and PROCESS_TABLES.failed(scope):
            self._full_range = False  # another item's chain failed on the full range: this one would too
            return SlabTables((), None)
        # rescales whose slices hold few pixels (a tiny item, a rescale per slice) run the chain
        # on fewer values: through tables over the values each slab holds, unless the process's
        # items served enough pixels through the same tables
        minimum = FULL_RANGE_MIN_FRACTION * (1 << (8 * dtype.itemsize))
        keys = _slice_keys(slab)
        if self._served_pixels(slab) < minimum and (
                scope is None or not PROCESS_TABLES.worth_building(scope, keys, slab.pixels[0].size, minimum)):
            return SlabTables((), None)
        return SlabTables(keys, self._slab_tables(slab, keys, scope), scope)

    def _scope(self, slab: Sample) -> tuple | None:
        """What a table and a slab description depend on besides the slices' keys, when they are the
        process's (:class:`ProcessTables`); ``None`` when they are this item's own."""
        if self._chain_key is None:
            return None
        meta = {k: v for k, v in slab.meta.items() if k != "stored_rescale"}
        try:
            meta_text = json.dumps(meta, sort_keys=True, allow_nan=True)
        except (TypeError, ValueError):  # e.g. an array in a plugin's meta: not comparable as text
            return None
        return (self._chain_key, self.apply_step, slab.pixels.dtype.str, meta_text, slab.axes, slab.channels)

    def _served_pixels(self, slab: Sample) -> int:
        """The fewest pixels of the item that one of the slab's rescales serves (its slices' pixels)."""
        values = slab.pixels
        slice_pixels = values[0].size if len(values) else 0
        counts = self._slices_per_rescale
        if counts is None:  # the slab is the whole item
            counts = Counter((float(slope), float(intercept)) for slope, intercept in slab.meta["stored_rescale"])
        pairs = {(float(slope), float(intercept)) for slope, intercept in slab.meta["stored_rescale"]}
        if not pairs:
            return 0
        # a slab's rescales unknown to the item's list (none in practice) count as one slice
        return min(counts.get(pair, 1) for pair in pairs) * slice_pixels

    def output_spec(self, slab: Sample, found: SlabTables | None = None) -> tuple[tuple[int, ...], np.dtype] | None:
        """Shape and dtype of the buffer ``apply(slab)`` gathers into: (z, c, y, x) when
        :attr:`planar`, else (z, y, x, c); ``None`` without full-range tables."""
        tables = (found or self.tables(slab)).tables
        if tables is None:
            return None
        first = tables[0]
        return self._buffer_shape(slab.pixels.shape, first.n_channels), first.dtype

    def value_bounds(self, found: SlabTables) -> tuple[Any, Any] | None:
        """Bounds of every value the slab's gather writes, with no NaN among them; ``None`` when unknown.

        The gather only copies table entries, so its output lies within its tables' entries.
        """
        if found.tables is None or len({table.dtype for table in found.tables}) != 1:
            return None
        bounds = [table.bounds for table in dict.fromkeys(found.tables)]
        if any(b is None for b in bounds):
            return None
        return min(b[0] for b in bounds), max(b[1] for b in bounds)

    def _buffer_shape(self, stored_shape: tuple[int, ...], n_channels: int) -> tuple[int, ...]:
        if self.planar:
            return (stored_shape[0], n_channels) + stored_shape[1:]
        return stored_shape + (n_channels,)

    def apply(self, slab: Sample, out: np.ndarray | None = None, found: SlabTables | None = None) -> Sample | None:
        """The chain's output on ``slab`` (stored values, ``meta["stored_rescale"]`` per slice).

        ``out``, when given, is a C-contiguous buffer of :meth:`output_spec`'s shape and
        dtype that receives the pixels (the Sample's pixels are a view of it): a streaming
        caller reuses it from slab to slab, so the gather touches no fresh memory. ``found``:
        :meth:`tables` of this slab, when the caller has it already.
        """
        values = slab.pixels
        meta = dict(slab.meta)
        pairs = meta.pop("stored_rescale")
        if found is None:  # one call for the item (whole volume): described first, as it always was
            described = self._describe(slab, meta, pairs, None)
            found = self.tables(slab)
        else:
            described = self._describe(slab, meta, pairs, found, found.scope)
        tables = found.tables
        if tables is None:
            return self._apply_ranged(slab, meta, pairs, described)
        n_channels = tables[0].n_channels
        shape, dtype = self._buffer_shape(values.shape, n_channels), tables[0].dtype
        if out is None:
            out = np.empty(shape, dtype=dtype)
        elif out.shape != shape or out.dtype != dtype:
            raise ValueError(f"output buffer {out.shape} {out.dtype} for {shape} {dtype}")
        index = values.view(_INDEX_VIEW[values.dtype])
        # every unsigned index is in a full-range table: mode="clip" clips nothing, and unlike the
        # default "raise" it gathers straight into ``out`` instead of through a temporary
        if self.planar:
            for z, table in enumerate(tables):
                # np.take converts its indices to intp on every call: once per slice for all channels
                rows = index[z].astype(np.intp) if n_channels > 1 else index[z]
                for c in range(n_channels):
                    np.take(table.channels[c], rows, out=out[z, c], mode="clip")
            return self._finish(described, out)
        for z, table in enumerate(tables):
            take_interleaved(table.interleaved, table.padded, index[z], out[z])
        return described.replace(pixels=out[..., 0] if described.pixels.ndim == 3 else out)

    # --- tables ---------------------------------------------------------------------------
    def _slab_tables(self, slab: Sample, keys, scope: tuple | None = None) -> list[_Table] | None:
        """Per slice, its full-range table (shared between equal slices, and with the process's other
        items when ``scope`` is given); ``None`` when the chain fails on one."""
        pairs = slab.meta["stored_rescale"]
        memo, lock = (PROCESS_TABLES.tables, PROCESS_TABLES.lock) if scope is not None else (self._tables, self._lock)
        rows = []
        for z, key in enumerate(keys):
            memo_key = (scope, key) if scope is not None else key
            table = memo.get(memo_key)
            if table is None:
                slope, intercept = pairs[z]
                table = self._build(slab, z, slope, intercept)
                if table is None:
                    if scope is not None:
                        PROCESS_TABLES.fail(scope)
                    return None
                _remember(memo, memo_key, table, lock)
            rows.append(table)
        return rows

    def _build(self, slab: Sample, z: int, slope: float, intercept: float) -> _Table | None:
        """The chain on every stored value of the dtype, with slice ``z``'s rescale and header."""
        dtype = slab.pixels.dtype
        domain = np.arange(1 << (8 * dtype.itemsize), dtype=_INDEX_VIEW[dtype]).view(dtype)
        meta = dict(slab.meta)
        meta.pop("stored_rescale")
        table = _one_row(slab, z).replace(pixels=rescale(domain, slope, intercept).reshape(1, 1, -1), meta=meta)
        try:
            for params in self.steps:
                table = self.apply_step(params, table)
        except StepError:
            # e.g. an overflow on a value this item never holds: tables over the values it holds
            self._full_range = False
            return None
        return _Table(table.pixels[0, 0])  # (values,) or (values, channels)

    # --- everything but the pixels --------------------------------------------------------
    def _describe(self, slab: Sample, meta: dict[str, Any], pairs, found: SlabTables | None,
                  scope: tuple | None = None) -> Sample:
        """The chain on one stored value per slice with the slab's headers: meta, headers, axes...

        Reused from an earlier slab (of this item, or of the process's items when ``scope`` is
        given) when the chain can read nothing that differs (see the class). Only with full-range
        tables: every value of every key then went through the chain without error, so the run it
        replaces could not have raised either.
        """
        memo_key = None
        memo, lock = (PROCESS_TABLES.described, PROCESS_TABLES.lock) if scope is not None else (self._described, self._lock)
        if self._memo and found is not None and found.tables is not None and len(slab.headers) in (0, len(pairs)):
            memo_key = (scope, slab.axes, slab.channels, found.keys)
            seen = memo.get(memo_key)
            if seen is not None and seen[0] == meta:
                template = seen[1]
                return dataclasses.replace(slab, pixels=template.pixels, axes=template.axes,
                                           channels=template.channels, meta=dict(template.meta))
        values = slab.pixels
        first = values.reshape(values.shape[0], -1)[:, :1] if values.size else np.zeros((values.shape[0], 1), np.int64)
        probe = np.empty((values.shape[0], 1, 1), dtype=np.float32)
        for z, (slope, intercept) in enumerate(pairs):
            probe[z, 0] = rescale(first[z], slope, intercept)
        described = slab.replace(pixels=probe, meta=meta)
        for params in self.steps:
            described = self.apply_step(params, described)
        if memo_key is not None and _kept_slab_fields(slab, described):
            _remember(memo, memo_key, (dict(meta), described), lock)
        return described

    @staticmethod
    def _finish(described: Sample, planar: np.ndarray) -> Sample:
        if described.pixels.ndim == 3:
            return described.replace(pixels=planar[:, 0])
        # channel-first buffer; the Sample gets its zyxc view, so an NCHW layout needs no copy
        return described.replace(pixels=np.moveaxis(planar, 1, -1))

    def _apply_ranged(self, slab: Sample, meta: dict[str, Any], pairs, described: Sample) -> Sample | None:
        """Per-slice tables over the values the slab holds (stored values of any integer dtype):
        ``lo..hi``, or the distinct values when they are fewer than that range (a small slab)."""
        values = slab.pixels
        lo, hi = int(values.min()), int(values.max())
        n_values = hi - lo + 1
        n_slices = values.shape[0]
        held = None
        if n_values > values.size:  # fewer pixels than values in the range: only the distinct ones
            domain, held = np.unique(values, return_inverse=True)
            domain, held, lo, n_values = domain.astype(np.int64), held.reshape(values.shape), 0, len(domain)
        if n_slices * n_values > MAX_TABLE_ENTRIES:
            return None
        if held is None:
            domain = np.arange(lo, hi + 1, dtype=np.int64)
        table_input = np.empty((n_slices, 1, n_values), dtype=np.float32)
        for z, (slope, intercept) in enumerate(pairs):
            table_input[z, 0] = rescale(domain, slope, intercept)
        table = slab.replace(pixels=table_input, meta=meta)
        for params in self.steps:
            table = self.apply_step(params, table)
        lut = table.pixels  # (Z, 1, n_values) or (Z, 1, n_values, C)
        channels = 1 if lut.ndim == 3 else lut.shape[3]
        planar = np.empty((n_slices, channels) + values.shape[1:], dtype=lut.dtype)
        for z in range(n_slices):
            index = (values if held is None else held)[z].astype(np.intp)
            index -= lo
            for c in range(channels):
                row = lut[z, 0] if lut.ndim == 3 else np.ascontiguousarray(lut[z, 0, :, c])
                np.take(row, index, out=planar[z, c])
        return self._finish(described, planar)


class ProcessTables:
    """The full-range tables and slab descriptions of one process, shared by the items it builds.

    A chain whose every step reads of a slice only its pixels and pixel description (the
    contract of :meth:`~medflow.steps.registry.StepParams.reads_only_pixel_description`) gives
    the same table for the same stored dtype, rescale, pixel description, meta, axes and
    channels in every item: a :class:`Folder` given the chain's identity (its links' names,
    versions and canonical params, which hold the digests of the files they read) looks its
    tables up here under that *scope*. So a dataset of many items with one rescale (2-D images,
    short series) builds its table once per process instead of once per item, and its items,
    each too small to pay for a 65,536-entry table alone, gather through the shared one once
    the process's items served as many pixels as one large item would.

    Bounded like a Folder's own memos (:data:`MAX_TABLES`, :data:`MAX_TABLE_BYTES`). Thread-safe.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tables: dict[tuple, _Table] = {}
        self.described: dict[tuple, tuple[dict[str, Any], Sample]] = {}
        self._served: dict[tuple, int] = {}  # pixels gathered through tables over held values, per (scope, key)
        self._failed: dict[tuple, None] = {}  # scopes whose chain failed on the full range

    def worth_building(self, scope: tuple, keys, slice_pixels: int, minimum: float) -> bool:
        """Gather this slab through full-range tables? Yes when each of its slices' tables exists, or
        the process's slabs served ``minimum`` pixels through it; otherwise its pixels are counted."""
        with self.lock:
            if all((scope, key) in self.tables for key in keys):
                return True
            counts = Counter(keys)
            if all(self._served.get((scope, key), 0) + n * slice_pixels >= minimum for key, n in counts.items()):
                return True
            for key, n in counts.items():
                self._served[(scope, key)] = self._served.get((scope, key), 0) + n * slice_pixels
            while len(self._served) > 16 * MAX_TABLES:  # counts of keys met once (a rescale per slice)
                self._served.pop(next(iter(self._served)))
            return False

    def fail(self, scope: tuple) -> None:
        with self.lock:
            self._failed[scope] = None
            while len(self._failed) > MAX_TABLES:
                self._failed.pop(next(iter(self._failed)))

    def failed(self, scope: tuple) -> bool:
        return scope in self._failed

    def clear(self) -> None:
        with self.lock:
            self.tables.clear()
            self.described.clear()
            self._served.clear()
            self._failed.clear()


#: This process's shared tables (see :class:`ProcessTables`).
PROCESS_TABLES = ProcessTables()


def gathered_bounds(pixels: np.ndarray, region: np.ndarray | None, bounds: tuple[Any, Any] | None):
    """``bounds`` (of the values in ``region``) when every element of ``pixels`` is an element of ``region``.

    So the bounds of a gather (:meth:`Folder.value_bounds`) also bound what later steps made of
    it by viewing it (a layout's transpose): same dtype, inside the C-contiguous ``region``'s
    memory, on its element grid. ``None`` otherwise (e.g. a step computed new values). Steps
    never write into their input, so the viewed values are still the gathered ones.
    """
    if bounds is None or region is None or pixels.dtype != region.dtype or not region.flags.c_contiguous:
        return None
    if not pixels.size:
        return None
    low, high = byte_bounds(pixels)
    region_low, region_high = byte_bounds(region)
    itemsize = region.dtype.itemsize
    if not (region_low <= low and high <= region_high and (low - region_low) % itemsize == 0):
        return None
    return bounds if all(stride % itemsize == 0 for stride in pixels.strides) else None


def _remember(memo: dict, key, value, lock: threading.Lock) -> None:
    """``memo[key] = value``, dropping the oldest entries beyond MAX_TABLES or MAX_TABLE_BYTES of tables."""
    with lock:
        memo[key] = value
        while len(memo) > 1 and (len(memo) > MAX_TABLES or sum(_kept_bytes(v) for v in memo.values()) > MAX_TABLE_BYTES):
            memo.pop(next(iter(memo)))


def _kept_bytes(value) -> int:
    """Bytes a memo entry holds: a table's entries and its per-channel copies (descriptions: none counted)."""
    return 2 * value.lut.nbytes if isinstance(value, _Table) else 0


def _reads_only_pixel_description(params: Any) -> bool:
    declared = getattr(params, "reads_only_pixel_description", None)
    return bool(declared()) if callable(declared) else False


def _kept_slab_fields(slab: Sample, described: Sample) -> bool:
    """Did the chain keep everything of the slab but pixels, meta, axes and channels, as it declared?"""
    return (described.item_id == slab.item_id and described.headers is slab.headers
            and described.geometry is slab.geometry and described.source_files is slab.source_files
            and described.private_tables is slab.private_tables and described.originals is slab.originals
            and described.label is slab.label and described.segments is slab.segments)


def _slice_keys(slab: Sample) -> tuple[tuple[float, float, str], ...]:
    """Per slice, the key of its table: rescale and pixel description (see the module docstring)."""
    pairs = slab.meta["stored_rescale"]
    headers = slab.headers
    described = len(headers) == len(pairs)
    quick = getattr(headers, "pixel_description", None)  # LazyHeaders: no header built for the key
    keys = []
    for z, (slope, intercept) in enumerate(pairs):
        description = (quick(z) if quick is not None else None) if described else ""
        if description is None:
            description = _pixel_description(headers[z])
        keys.append((float(slope), float(intercept), description))
    return tuple(keys)


def _one_row(slab: Sample, z: int) -> Sample:
    """``slab`` cut down to slice ``z``'s header, file and position (pixels replaced by the caller)."""
    geometry = slab.geometry
    if geometry is not None and len(geometry.slice_positions) > z:
        geometry = dataclasses.replace(geometry, slice_positions=geometry.slice_positions[z : z + 1])
    return dataclasses.replace(
        slab,
        headers=slab.headers[z : z + 1],
        geometry=geometry,
        source_files=slab.source_files[z : z + 1],
        private_tables={},
    )


def _pixel_description(header: dict[str, Any] | None) -> str:
    """The header's group-0028 attributes as canonical JSON ('' without a header).

    With those in the items of its functional groups (an enhanced image's frame header: the
    Frame VOI LUT (0028,9132) and Pixel Value Transformation (0028,9145) of its Per-frame
    (5200,9230) or Shared (5200,9229) Functional Groups, PS3.3 C.7.6.16), where a window from
    the header finds a frame's own window.
    """
    if not header:
        return ""
    description = {k: v for k, v in header.items() if k.startswith(_PIXEL_GROUP)}
    for tag in _FUNCTIONAL_GROUPS:
        items = (header.get(tag) or {}).get("Value") or []
        groups = [{k: v for k, v in item.items() if k.startswith(_PIXEL_GROUP)} for item in items]
        if any(groups):
            description[tag] = groups
    return json.dumps(description, sort_keys=True)
