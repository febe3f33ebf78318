"""One per-item task, used by both the sequential loop and the parallel workers.

A task carries paths and small parameters, never arrays; it writes its outputs and
cache entries itself and returns a small :class:`ItemResult`. It never raises: any
failure is recorded against its item (set ``MEDFLOW_DEBUG=1`` to let the original
exception through, with its traceback).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from medflow.engine import stream
from medflow.engine.cache import Cache
from medflow.engine.checkpoint import load_sample, save_sample
from medflow.engine.task import ItemResult, ItemTask, apply_step, check_expectation
from medflow.errors import CacheError, FilteredItem, InputError, MedflowError, QuarantineItem
from medflow.geometry import output_record
from medflow.sample import Sample
from medflow.threads import threads_for_item
from medflow.writers.registry import get_writer


def run_item(task: ItemTask) -> ItemResult:
    """Compute the item from its nearest checkpoint, write its outputs, record them in the cache."""
    started = time.perf_counter()
    item_id = task.item.item_id
    try:
        with threads_for_item(task.threads):  # SimpleITK filters and compressors of this item
            result = _run(task)
    except QuarantineItem as exc:
        result = ItemResult(item_id, "quarantined", error=exc.reason)
    except FilteredItem as exc:
        result = ItemResult(item_id, "filtered", error=exc.reason)
    except MedflowError as exc:
        if os.environ.get("MEDFLOW_DEBUG"):
            raise
        result = ItemResult(item_id, "failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad item must never stop the dataset
        if os.environ.get("MEDFLOW_DEBUG"):
            raise
        result = ItemResult(item_id, "failed", error=f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - started
    return result


def _run(task: ItemTask) -> ItemResult:
    if task.item.kind == "instance":
        return _run_instance(task)
    cache = Cache(Path(task.cache_dir))
    # Streaming starts from the stored values (cached or decoded): the plan resumes at
    # link 1 when only they are cached, at 0 when nothing is.
    if task.start <= 1 and can_stream(task) and not cache.has(task.links[0].key):
        result = stream.run_streamed(task)
        if result is not None:
            cache.put_record(task.output_key, {
                "item_id": result.item_id, "outputs": result.outputs, "meta": result.meta,
                "private_tables": result.private_tables,
            })
            result.cache_skipped = result.cache_skipped or cache.skipped
            return result
    links = task.links
    sample, start = _resume(task, cache)
    computed: list[str] = []
    gather = None  # (folded pixels' buffer, bounds of its values) when the leading steps were folded
    if sample is None:
        sample, start, computed, gather = _read_or_fold(task, cache)
    for index in range(start, len(links)):
        link = links[index]
        params = task.steps[index - 1]
        if index - 1 in task.dataset_stats:
            sample.meta["dataset_stats"] = {params.stats_key(): task.dataset_stats[index - 1]}
        sample = apply_step(params, sample)
        computed.append(link.name)
        if link.checkpoint:
            save_sample(cache, link.key, sample, task.item)
    if task.accumulate is not None:
        accumulator = task.accumulate.new_accumulator()
        accumulator.update(sample.pixels)
        return ItemResult(task.item.item_id, "ok", computed=computed, stats=accumulator.to_json(),
                          cache_skipped=cache.skipped)
    if task.expect:
        check_expectation(sample, task.expect, _gathered_bounds(sample, gather))
    sample = sample.replace(meta={**sample.meta, **output_record(sample)})  # geometry with every output
    out_dir = Path(task.out_dir)
    outputs = []
    for params in task.writers:
        spec = get_writer(params.kind)
        for written in spec.function(sample, params, out_dir):
            outputs.append(written.record())
    record = {
        "item_id": task.item.item_id,
        "outputs": outputs,
        "meta": sample.meta,
        "private_tables": sample.private_tables,
    }
    cache.put_record(task.output_key, record)
    return ItemResult(task.item.item_id, "ok", outputs=outputs, meta=sample.meta, computed=computed,
                      private_tables=sample.private_tables, cache_skipped=cache.skipped)


def _run_instance(task: ItemTask) -> ItemResult:
    """One file through a chain that never reads pixels; nothing is cached (see :mod:`medflow.engine.instance`)."""
    from medflow.engine.instance import read_instance

    item = task.item
    sample = read_instance(Path(item.root) / item.files[0], item.item_id, task.reader_params.get("filter"))
    computed = [task.links[0].name]
    for params, link in zip(task.steps, task.links[1:], strict=True):
        sample = apply_step(params, sample)
        computed.append(link.name)
    out_dir = Path(task.out_dir)
    outputs = []
    for params in task.writers:
        for written in get_writer(params.kind).function(sample, params, out_dir):
            outputs.append(written.record())
    return ItemResult(item.item_id, "ok", outputs=outputs, meta=sample.meta, computed=computed,
                      private_tables=sample.private_tables)


def _resume(task: ItemTask, cache: Cache) -> tuple[Sample | None, int]:
    """The checkpoint the plan chose to resume from, or (None, 0) if it is gone or corrupt."""
    if task.start == 0:
        return None, 0
    try:
        sample = load_sample(cache, task.links[task.start - 1].key, task.item)
    except CacheError:
        sample = None  # the corrupt entry was deleted; start from the read
    return (sample, task.start) if sample is not None else (None, 0)


def _read_or_fold(task: ItemTask, cache: Cache) -> tuple[Sample, int, list[str], tuple | None]:
    """Read the item, or read its stored values and fold the leading pointwise steps.

    Returns the Sample after link ``start - 1``, ``start``, the names of the links computed,
    and when folded (output ``value_range`` expected), the gathered buffer with the bounds of its values.
    """
    from medflow.engine.fold import Folder, pointwise_prefix, read_stored
    from medflow.sources.series import read_item

    item, links = task.item, task.links
    if item.broken_files:
        rel, reason = item.broken_files[0]
        more = f" (and {len(item.broken_files) - 1} more broken file(s))" if len(item.broken_files) > 1 else ""
        raise InputError(str(Path(item.root) / rel), reason + more)
    n_fold = pointwise_prefix(task.steps) if task.fold else 0
    if n_fold:
        stored, stored_was_cached = read_stored(
            item, task.reader_params, cache, links[0].key, cache_it=links[0].checkpoint
        )
        folder = Folder(task.steps[:n_fold], apply_step)
        folded = folder.apply(stored) if stored is not None else None
        gather = None
        if folded is not None and task.expect and task.expect.get("value_range") is not None:
            gather = (_root(folded.pixels), folder.value_bounds(folder.tables(stored)))
        if folded is not None and stored.label is not None:  # labels ride along the folded pixels
            folded = folded.replace(label=stored.label, segments=stored.segments)
        if folded is not None:
            if links[n_fold].checkpoint:
                save_sample(cache, links[n_fold].key, folded, item)
            computed = ([] if stored_was_cached else [links[0].name]) + [link.name for link in links[1 : n_fold + 1]]
            return folded, n_fold + 1, computed, gather
    sample = read_item(item, **task.reader_params)
    if links[0].checkpoint:
        save_sample(cache, links[0].key, sample, item)
    return sample, 1, [links[0].name], None


def _root(array):
    """The array owning ``array``'s memory (the buffer a folded gather filled whole)."""
    while isinstance(array.base, type(array)):
        array = array.base
    return array


def _gathered_bounds(sample: Sample, gather: tuple | None):
    if gather is None:
        return None
    from medflow.engine.fold import gathered_bounds

    return gathered_bounds(sample.pixels, *gather)


def can_stream(task: ItemTask) -> bool:
    """Can this item go slab by slab from the reader to the writers?

    Needs: a series or multi-frame item; every step slicewise for its params, none checkpointed
    (there is no whole volume to store) and none needing dataset statistics; at least
    one pointwise step to fold; every writer able to stream; not a statistics pass.
    """
    from medflow.engine.fold import pointwise_prefix

    if not (task.stream and task.fold) or task.item.kind not in ("series", "multiframe") or task.accumulate is not None:
        return False
    if task.item.broken_files or task.item.labels:
        return False  # the whole-volume path fails the item naming the broken file / reads its labels
    if task.dataset_stats or not task.writers or pointwise_prefix(task.steps) == 0:
        return False
    if any(link.checkpoint for link in task.links[1:-1]):
        return False
    if not all(params.slicewise() for params in task.steps):
        return False
    return all(get_writer(params.kind).open_stream is not None for params in task.writers)


__all__ = ["can_stream", "run_item"]
