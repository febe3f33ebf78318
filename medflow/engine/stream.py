"""Streaming an item slab by slab: stored values -> folded tables -> remaining steps -> writers.

Used when every step is slicewise (output slice z depends only on input slice z) and
every writer can stream (see :func:`medflow.engine.run.can_stream`). Memory is
bounded by a slab (``SLAB_SLICES`` slices), not the item; the bytes written are the
same as the whole-volume path's (a test compares them). No whole-item checkpoint
exists on this path; a rebuild with changed parameters decodes the DICOM again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from medflow.engine import fold as folding
from medflow.engine.cache import Cache
from medflow.engine.checkpoint import sample_from_header, sample_header
from medflow.engine.task import ItemResult, ItemTask, apply_step, check_expectation
from medflow.errors import CacheError
from medflow.sample import Sample
from medflow.writers.registry import get_writer

SLAB_SLICES = 16


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
                task.item, task.reader_params.get("duplicates", "first"), SLAB_SLICES
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
    private: dict[str, set[tuple[str, ...]]] = {}
    headers: dict[str, list[str]] = {}
    shape = None
    try:
        start = 0
        for stored in slabs:
            if stored_writer is not None:
                stored_writer.write(stored)
            shape = stored.shape[1:]
            slab = _slab(skeleton, stored, start)
            start += len(stored)
            out = folding.fold(slab, task.steps[:n_fold], apply_step)
            if out is None:
                raise _Fallback
            for params in task.steps[n_fold:]:
                out = apply_step(params, out)
            if task.expect:
                check_expectation(out, task.expect)
            for stream in streams:
                stream.write(out)
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
        stored_writer.commit(sample_header(skeleton, task.item), (start,) + tuple(shape or ()))
    tables = {path: [headers[path], *sorted(rows)] for path, rows in private.items()}
    return ItemResult(task.item.item_id, "ok", outputs=outputs, meta=meta or {}, computed=computed,
                      private_tables=tables)


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
