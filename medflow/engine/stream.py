"""Streaming an item slab by slab: stored values -> folded tables -> remaining steps -> writers.

Used when every step is slicewise (output slice z depends only on input slice z) and
every writer can stream (see :func:`medflow.engine.run.can_stream`). Memory is
bounded by a slab (``SLAB_SLICES`` slices), not the item; the bytes written are the
same as the whole-volume path's (a test compares them). No whole-item checkpoint
exists on this path; a rebuild with changed parameters decodes the DICOM again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medflow.engine import fold as folding
from medflow.engine.cache import Cache
from medflow.engine.checkpoint import sample_from_header, sample_header
from medflow.engine.task import ItemResult, ItemTask, apply_step, check_expectation
from medflow.errors import CacheError
from medflow.geometry import SlabGeometry
from medflow.sample import Sample
from medflow.writers.registry import get_writer

SLAB_SLICES = 16
#: Called once per slab read with (item id, slices read, slices in the item, bytes of stored values
#: read so far); the executor sets it in each worker when a progress bar is shown.
progress_callback: Callable[[str, int, int, int], None] | None = None


def run_streamed(task: ItemTask) -> ItemResult | None:
    """Build one item slab by slab; ``None`` when its values are not plain stored integers.

    The stored values come from their cache entry when present (no DICOM decoding);
    otherwise they are decoded and written to that entry as they stream by.
    """
    cache = Cache(Path(task.cache_dir))
    key = folding.stored_key(task.links[0].key)
    cached = None
    try:
        cached = cache.get_slabs(key, SLAB_SLICES)
    except CacheError:
        cached = None
    stored_writer = None
    if cached is not None:
        header, slabs = cached
        skeleton = sample_from_header(header, np.empty((header["meta"]["n_slices"], 0, 0), np.int16), task.item)
        computed = [link.name for link in task.links[1:]]
    else:
        from medflow.sources.series import NotStoredValues, open_stored_slabs

        try:
            skeleton, slabs = open_stored_slabs(
                task.item, task.reader_params.get("duplicates", "first"), SLAB_SLICES, ring=_threads(task) + 2
            )
        except NotStoredValues:
            return None
        # stored values carry the original headers: not cached before a de-identifying step
        stored_writer = cache.open_writer(key) if task.links[0].checkpoint else None
        computed = [link.name for link in task.links]
    n_fold = folding.pointwise_prefix(task.steps)
    out_dir = Path(task.out_dir)
    streams = [get_writer(p.kind).open_stream(skeleton, p, out_dir) for p in task.writers]
    meta = None
    slab_geometry = SlabGeometry()
    private: dict[str, set[tuple[str, ...]]] = {}
    headers: dict[str, list[str]] = {}
    progress = _Progress()
    try:
        for out in _slab_outputs(task, skeleton, slabs, stored_writer, n_fold, progress):
            if task.expect:
                check_expectation(out, task.expect)
            for stream in streams:
                stream.write(out)
            slab_geometry.add(out)
            meta = meta if meta is not None else out.meta
            for path, rows in out.private_tables.items():
                if rows:
                    headers.setdefault(path, list(rows[0]))
                    private.setdefault(path, set()).update(tuple(r) for r in rows[1:])
        outputs = []
        for stream in streams:
            outputs.extend({"path": f.path, "sha256": f.sha256, "size": f.size} for f in stream.close())
    except _Fallback:
        _abort(streams, stored_writer)
        return None
    except CacheError:
        _abort(streams, stored_writer)
        if cached is None:
            raise
        return run_streamed(task)  # the corrupt entry is gone: decode the DICOM files instead
    except BaseException:
        _abort(streams, stored_writer)
        raise
    if stored_writer is not None:
        stored_writer.commit(sample_header(skeleton, task.item), (progress.start,) + tuple(progress.shape or ()))
    tables = {path: [headers[path], *sorted(rows)] for path, rows in private.items()}
    meta = {**(meta or {}), **slab_geometry.record()}  # geometry with every output
    return ItemResult(task.item.item_id, "ok", outputs=outputs, meta=meta, computed=computed,
                      private_tables=tables)


class _Progress:
    """Slices streamed so far and the slice shape (for the stored-values entry)."""

    start = 0
    shape: tuple[int, ...] | None = None


def _threads(task: ItemTask) -> int:
    return max(1, int(getattr(task, "threads", 1) or 1))


def _slab_outputs(task: ItemTask, skeleton: Sample, slabs, stored_writer, n_fold: int, progress: _Progress):
    """The final Sample of every slab, in z order; slabs folded on ``task.threads`` threads.

    The reading (and the stored-values entry) stays on this thread; the gathers, which
    release the GIL, run ahead on the pool, at most ``threads`` slabs in flight. Each
    slab's output goes into a buffer reused once the caller has written it.
    """
    folder = folding.Folder(task.steps[:n_fold], apply_step)
    rest = task.steps[n_fold:]
    free: list[np.ndarray] = []

    def compute(slab: Sample) -> tuple[Sample, np.ndarray | None]:
        spec = folder.output_spec(slab)
        buffer = None
        if spec is not None:
            shape, dtype = spec
            buffer = free.pop() if free else None  # list.pop is atomic under the GIL
            if buffer is None or buffer.shape[1:] != shape[1:] or buffer.dtype != dtype or len(buffer) < shape[0]:
                buffer = np.empty((max(shape[0], SLAB_SLICES),) + shape[1:], dtype=dtype)
        out = folder.apply(slab, None if buffer is None else buffer[: len(slab.pixels)])
        if out is None:
            raise _Fallback
        for params in rest:
            out = apply_step(params, out)
        return out, buffer

    def slab_samples():
        for stored in slabs:
            if stored_writer is not None:
                stored_writer.write(stored)
            progress.shape = stored.shape[1:]
            slab = _slab(skeleton, stored, progress.start)
            progress.start += len(stored)
            if progress_callback is not None:  # progress inside the item (medflow.engine.progress)
                progress_callback(task.item.item_id, progress.start, len(skeleton.pixels), progress.start * stored[0].nbytes)
            yield slab

    threads = _threads(task)
    if threads == 1:
        for slab in slab_samples():
            out, buffer = compute(slab)
            yield out
            if buffer is not None:
                free.append(buffer)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pending: deque = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="medflow-slab") as pool:
        try:
            for slab in slab_samples():
                pending.append(pool.submit(compute, slab))
                while len(pending) > threads:
                    out, buffer = pending.popleft().result()
                    yield out
                    if buffer is not None:
                        free.append(buffer)
            while pending:
                out, buffer = pending.popleft().result()
                yield out
                if buffer is not None:
                    free.append(buffer)
        finally:
            for future in pending:
                future.cancel()


def _abort(streams, stored_writer) -> None:
    for stream in streams:
        stream.abort()
    if stored_writer is not None:
        stored_writer.abort()


class _Fallback(Exception):
    """A slab's table would be too large: build the item on the whole-volume path."""


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
        source_files=skeleton.source_files[start:stop],
        private_tables={},
    )
