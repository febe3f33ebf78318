"""Streaming an item slab by slab: stored values -> folded tables -> remaining steps -> writers.

Used when every step is slicewise (output slice z depends only on input slice z) and
every writer can stream (see :func:`medflow.engine.run.can_stream`). The bytes written are
the same as the whole-volume path's (a test compares them).

The path, as measured fastest (issue 10): the reader places the slices from discovery's facts
and reads each file's stored values straight into a pooled slab buffer (one open, no second
header parse, headers built only when a step reads one: :class:`~medflow.sources.pixels.LazyHeaders`);
the folded tables gather into a pooled output buffer; a write thread
(:class:`~medflow.engine.writebehind.WriteAndHash`) writes and hashes the slab (output and
stored-values entry) while the next one is gathered, this thread taking over the hashes when
the writes fall behind (a small item is written and hashed inline: see
:data:`INLINE_BYTES`). Slabs are small (about ``SLAB_BYTES`` of stored
values, one 512 x 512 slice) so a slab stays in the CPU cache from gather to write, and memory is
a few slabs, whatever the item. With ``task.threads`` > 1 (items fewer than workers) the gathers
run on that many threads.
A rebuild after a pointwise parameter change streams from the stored-values entry without
opening the DICOM files.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medflow.engine import fold as folding
from medflow.engine.cache import Cache
from medflow.engine.task import ItemResult, ItemTask, apply_step, check_expectation
from medflow.engine.writebehind import BufferPool, WriteAndHash
from medflow.errors import CacheError
from medflow.geometry import SlabGeometry
from medflow.sample import Sample
from medflow.threads import gather_threads
from medflow.writers.registry import get_writer

#: At most this many slices per slab, and about SLAB_BYTES of stored values: a slab's output
#: (e.g. 3 float32 channels of one 512 x 512 slice: 3 MiB) then stays in the CPU cache from
#: the gather to the hash and the write, which measured faster than large slabs.
SLAB_SLICES = 16
SLAB_BYTES = 1 << 19
#: Slabs computed and waiting to be written and hashed (beyond the one being written).
WRITE_DEPTH = 2
#: An item that writes at most this many bytes (outputs and stored-values entry) is written and
#: hashed on the thread computing it. Starting and joining a write thread costs
#: ~0.4 ms on the 2-core VM of the benchmarks, about what writing and hashing 4 MiB on one
#: thread costs, and what a dataset of one small image per series pays on every item.
INLINE_BYTES = 4 << 20
#: ... and, when one slab writes at least this many bytes, hashed on the process's helper thread
#: while this one writes (:class:`~medflow.engine.writebehind.Beside`).
HASH_BESIDE_BYTES = 512 << 10


def write_depth(first_slab_bytes: int, first_slab_slices: int, item_slices: int) -> int:
    """Slabs an item may queue to be written and hashed, 0 for no write thread (inline).

    ``first_slab_bytes``: what the item's first slab writes (outputs and stored values), of
    ``first_slab_slices`` of its ``item_slices`` slices; the item writes about that per slice.
    """
    item_bytes = first_slab_bytes * item_slices / max(1, first_slab_slices)
    return WRITE_DEPTH if item_bytes > INLINE_BYTES else 0


def slab_slices(slice_shape: tuple[int, ...], itemsize: int) -> int:
    """Slices per slab for slices of ``slice_shape`` stored values of ``itemsize`` bytes."""
    per_slice = max(1, int(np.prod(slice_shape, dtype=np.int64)) * itemsize)
    return max(1, min(SLAB_SLICES, SLAB_BYTES // per_slice))
#: Called once per slab read with (item id, slices read, slices in the item, bytes of stored values
#: read so far); the executor sets it in each worker when a progress bar is shown.
progress_callback: Callable[[str, int, int, int], None] | None = None


def run_streamed(task: ItemTask) -> ItemResult | None:
    """Build one item slab by slab; ``None`` when its values are not plain stored integers.

    The stored values come from their cache entry when present (no DICOM decoding);
    otherwise they are decoded and written to that entry as they stream by. The writes
    (outputs and the stored-values entry, each hashed as it goes) run on a thread of their
    own, one slab behind the gathers (:mod:`medflow.engine.writebehind`).
    """
    cache = Cache(Path(task.cache_dir))
    key = folding.stored_key(task.links[0].key)
    cached = None
    try:
        cached = cache.get_slabs(key, lambda shape, dtype: slab_slices(shape[1:], dtype.itemsize))
    except CacheError:
        cached = None
    stored_writer = None
    threads = _threads(task)
    if cached is not None:
        header, cached_slabs = cached
        skeleton = folding.stored_from_entry(header, np.empty((header["meta"]["n_slices"], 0, 0), np.int16), task.item)
        slabs = ((array, None) for array in cached_slabs)
        computed = [link.name for link in task.links[1:]]
    else:
        from medflow.sources.series import NotStoredValues, open_stored_slabs

        try:
            # stored slabs in flight: being gathered (threads), waiting to be written, being read
            skeleton, slabs = open_stored_slabs(
                task.item, task.reader_params.get("duplicates", "first"), slab_slices, buffers=threads + WRITE_DEPTH + 2,
                read_facts=task.read_facts, decode_workers=_decode_workers(task),
            )
        except NotStoredValues:
            return None
        stored_writer = cache.open_writer(key) if _caches_stored(task) else None
        computed = [link.name for link in task.links]
    n_fold = folding.pointwise_prefix(task.steps)
    out_dir = Path(task.out_dir)
    streams = [get_writer(p.kind).open_stream(skeleton, p, out_dir) for p in task.writers]
    meta = None
    slab_geometry = SlabGeometry()
    private: dict[str, set[tuple[str, ...]]] = {}
    headers: dict[str, list[str]] = {}
    progress = _Progress()
    # A slab is written and hashed behind the gather of the next one (file writes and BLAKE3
    # release the GIL): on a thread of its own, with this thread taking over the hashes when
    # the writes fall behind (:class:`~medflow.engine.writebehind.WriteAndHash`). A small item
    # is written and hashed on this thread: decided once its first slab tells its size.
    writes = None
    try:
        for out, stored, release, bounds in _slab_outputs(task, skeleton, slabs, n_fold, progress, threads):
            if writes is None:
                slab_bytes = out.pixels.nbytes + (stored.nbytes if stored_writer is not None else 0)
                depth = write_depth(slab_bytes, len(stored), len(skeleton.pixels))
                writes = WriteAndHash(depth, hash_beside=depth <= 0 and slab_bytes >= HASH_BESIDE_BYTES)
            if task.expect:
                check_expectation(out, task.expect, bounds)
            slab_geometry.add(out)
            if meta is None:
                meta = out.meta
            elif not _same_record(out.meta, meta):
                # a step's record varies along the item (e.g. window from_header, slices with their own
                # windows): only the whole volume gives the item's record, as the plain path writes it
                raise _Fallback
            for path, rows in out.private_tables.items():
                if rows:
                    headers.setdefault(path, list(rows[0]))
                    private.setdefault(path, set()).update(tuple(r) for r in rows[1:])
            write, digest = _split_jobs(streams, out, stored_writer, stored)
            writes.submit(write, digest, release)
        if writes is not None:
            writes.finish()
        outputs = []
        for stream in streams:
            outputs.extend(f.record() for f in stream.close())
    except _Fallback:
        _stop(writes)
        _abort(streams, stored_writer)
        return None
    except CacheError:
        _stop(writes)
        _abort(streams, stored_writer)
        if cached is None:
            raise
        return run_streamed(task)  # the corrupt entry is gone: decode the DICOM files instead
    except BaseException:
        _stop(writes)
        _abort(streams, stored_writer)
        raise
    if stored_writer is not None:
        stored_writer.commit(folding.stored_entry_header(skeleton, task.item),
                             (progress.start,) + tuple(progress.shape or ()))
    tables = {path: [headers[path], *sorted(rows)] for path, rows in private.items()}
    meta = {**(meta or {}), **slab_geometry.record()}  # geometry with every output
    return ItemResult(task.item.item_id, "ok", outputs=outputs, meta=meta, computed=computed,
                      private_tables=tables, cache_skipped=cache.skipped)


def _same_record(one: dict, other: dict) -> bool:
    """Are two slabs' meta records equal (a value that cannot compare counts as different)?"""
    try:
        return bool(one == other)
    except Exception:  # noqa: BLE001 - e.g. an array in a plugin step's meta
        return False


def _caches_stored(task: ItemTask) -> bool:
    """Does streaming ``task`` from its files keep a copy of its stored values in the cache?

    Not before a de-identifying step (they carry the original headers: the read link is then not
    a checkpoint); nor, unless ``engine.cache_stored_values`` is true, when every slice is read
    straight from a native file's pixel data: a rebuild reads those as fast as it would read the
    copy, which would cost every cold build a second write of the inputs' pixel data and the
    cache as much disk as the dataset.
    """
    from medflow.sources.series import reads_native_files

    if not task.links[0].checkpoint:
        return False
    return task.keep_native_stored or not reads_native_files(task.item, task.read_facts)


def _split_jobs(streams, out: Sample, stored_writer, stored: np.ndarray):
    """(write, hash) of one slab for two threads; a stream without ``parts`` hashes as it writes."""
    jobs = [(stream, stream.parts(out)) for stream in streams if hasattr(stream, "parts")]
    whole = [stream for stream in streams if not hasattr(stream, "parts")]
    if stored_writer is not None:
        jobs.append((stored_writer, stored_writer.parts(stored)))

    def write() -> None:
        for target, parts in jobs:
            target.write_parts(parts)
        for stream in whole:
            stream.write(out)

    def digest() -> None:
        for target, parts in jobs:
            target.hash_parts(parts)

    return write, digest


def _stop(*writers) -> None:
    for writer in writers:
        if writer is not None:
            writer.stop()


class _Progress:
    """Slices streamed so far and the slice shape (for the stored-values entry)."""

    start = 0
    shape: tuple[int, ...] | None = None


def _decode_workers(task: ItemTask):
    """The worker processes that may decode this item's compressed slices beside it (None: none)."""
    from medflow.sources.decode_ahead import DecodeWorkers

    workers = int(getattr(task, "decode_workers", 0) or 0)
    if workers < 1:
        return None

    def start():
        from medflow.engine.execute import WorkerSubmit

        return WorkerSubmit(workers)

    return DecodeWorkers(workers, start)


def _threads(task: ItemTask) -> int:
    """Threads gathering the item's slabs (:func:`medflow.threads.gather_threads` of its ``threads``)."""
    return gather_threads(max(1, int(getattr(task, "threads", 1) or 1)))


def _slab_outputs(task: ItemTask, skeleton: Sample, slabs, n_fold: int, progress: _Progress, threads: int):
    """``(final Sample, stored values, release, bounds)`` of every slab, in z order.

    The reading stays on this thread; with ``threads`` > 1 the gathers, which release the
    GIL, run ahead on a pool, at most ``threads`` slabs in flight. Each slab's output goes
    into a pooled buffer; ``release`` hands it (and the stored slab's) back once written.
    ``bounds`` bound the final pixels when they are the gathered values, viewed (see
    :func:`medflow.engine.fold.gathered_bounds`), else ``None``.
    """
    rest = task.steps[n_fold:]
    folder = folding.Folder(task.steps[:n_fold], apply_step, planar=folding.channels_first_next(rest),
                            item_slices=len(skeleton.pixels), item_rescales=skeleton.meta.get("stored_rescale"),
                            chain_key=folding.chain_key(task.links[1 : n_fold + 1]))
    pools: dict[tuple, BufferPool] = {}
    pools_lock = threading.Lock()

    check_range = bool(task.expect and task.expect.get("value_range") is not None)

    def compute(slab: Sample, release_stored) -> tuple[Sample, np.ndarray, object, tuple | None]:
        found = folder.tables(slab)
        spec = folder.output_spec(slab, found)
        buffer, pool = None, None
        if spec is not None:
            shape, dtype = spec
            with pools_lock:
                pool = pools.get((shape[1:], dtype))
                if pool is None:  # in flight: gathering, waiting to be written, being written
                    pool = pools[(shape[1:], dtype)] = BufferPool(
                        (max(shape[0], slab_slices(slab.pixels.shape[1:], slab.pixels.dtype.itemsize)),) + shape[1:],
                        dtype, threads + WRITE_DEPTH + 1)
            buffer = pool.get()
        gathered = None if buffer is None else buffer[: len(slab.pixels)]
        try:
            out = folder.apply(slab, gathered, found)
            if out is None:
                raise _Fallback
            for params in rest:
                out = apply_step(params, out)
        except BaseException:
            if buffer is not None:
                pool.put(buffer)
            raise

        def release() -> None:
            if buffer is not None:
                pool.put(buffer)
            if release_stored is not None:
                release_stored()

        bounds = folding.gathered_bounds(out.pixels, gathered, folder.value_bounds(found)) if check_range else None
        return out, slab.pixels, release, bounds

    def slab_samples():
        for stored, release_stored in slabs:
            progress.shape = stored.shape[1:]
            slab = _slab(skeleton, stored, progress.start)
            progress.start += len(stored)
            if progress_callback is not None:  # progress inside the item (medflow.engine.progress)
                progress_callback(task.item.item_id, progress.start, len(skeleton.pixels), progress.start * stored[0].nbytes)
            yield slab, release_stored

    if threads == 1:
        for slab, release_stored in slab_samples():
            yield compute(slab, release_stored)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pending: deque = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="medflow-slab") as pool:
        try:
            for slab, release_stored in slab_samples():
                pending.append(pool.submit(compute, slab, release_stored))
                while len(pending) > threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _abort(streams, stored_writer) -> None:
    for stream in streams:
        stream.abort()
    if stored_writer is not None:
        stored_writer.abort()


class _Fallback(Exception):
    """A slab's table would be too large, or the slabs' records differ: build the item on the whole-volume path."""


def _slab(skeleton: Sample, stored, start: int) -> Sample:
    stop = start + len(stored)
    meta = dict(skeleton.meta)
    meta["stored_rescale"] = skeleton.meta["stored_rescale"][start:stop]
    geometry = skeleton.geometry
    if geometry is not None:
        geometry = dataclasses.replace(geometry, slice_positions=geometry.slice_positions[start:stop])
    return dataclasses.replace(
        skeleton,
        pixels=stored,
        headers=skeleton.headers[start:stop],
        meta=meta,
        geometry=geometry,
        # a multi-frame item's one file is every slab's
        source_files=skeleton.source_files[start:stop] if len(skeleton.source_files) > 1 else skeleton.source_files,
        private_tables={},
    )
