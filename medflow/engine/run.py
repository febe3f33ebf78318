"""One per-item task, used by both the sequential loop and the parallel workers.

A task carries paths and small parameters, never arrays; it writes its outputs and
cache entries itself and returns a small :class:`ItemResult`. It never raises: any
failure is recorded against its item (set ``MEDFLOW_DEBUG=1`` to let the original
exception through, with its traceback).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medflow.engine.cache import Cache
from medflow.engine.checkpoint import load_sample, save_sample
from medflow.engine.plan import Link
from medflow.errors import CacheError, InputError, MedflowError, QuarantineItem, StepError
from medflow.sample import Sample
from medflow.sources.base import ItemRef
from medflow.steps.registry import get_step
from medflow.writers.registry import get_writer


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


@dataclass
class ItemResult:
    """What a worker returns: small, JSON-able, never the pixels."""

    item_id: str
    status: str  # "ok" | "failed" | "quarantined"
    outputs: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    computed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    private_tables: dict[str, list[list[str]]] = field(default_factory=dict)


def run_item(task: ItemTask) -> ItemResult:
    """Compute the item from its nearest checkpoint, write its outputs, record them in the cache."""
    started = time.perf_counter()
    item_id = task.item.item_id
    try:
        result = _run(task)
    except QuarantineItem as exc:
        result = ItemResult(item_id, "quarantined", error=exc.reason)
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
    cache = Cache(Path(task.cache_dir))
    links = task.links
    sample: Sample | None = None
    start = task.start
    if start > 0:
        try:
            sample = load_sample(cache, links[start - 1].key)
        except CacheError:
            sample = None  # the corrupt entry was deleted; recompute from the read
        if sample is None:
            start = 0
    computed = []
    for index in range(start, len(links)):
        link = links[index]
        if index == 0:
            sample = _read(task.item, task.reader_params)
        else:
            sample = apply_step(task.steps[index - 1], sample)
        computed.append(link.name)
        if link.checkpoint:
            save_sample(cache, link.key, sample)
    assert sample is not None
    out_dir = Path(task.out_dir)
    outputs = []
    for params in task.writers:
        spec = get_writer(params.kind)
        for written in spec.function(sample, params, out_dir):
            outputs.append({"path": written.path, "sha256": written.sha256, "size": written.size})
    record = {
        "item_id": task.item.item_id,
        "outputs": outputs,
        "meta": sample.meta,
        "private_tables": sample.private_tables,
    }
    cache.put_record(task.output_key, record)
    return ItemResult(task.item.item_id, "ok", outputs=outputs, meta=sample.meta, computed=computed,
                      private_tables=sample.private_tables)


def _read(item: ItemRef, reader_params: dict[str, Any]) -> Sample:
    from medflow.sources.series import read_item

    if item.broken_files:
        rel, reason = item.broken_files[0]
        more = f" (and {len(item.broken_files) - 1} more broken file(s))" if len(item.broken_files) > 1 else ""
        raise InputError(str(Path(item.root) / rel), reason + more)
    return read_item(item, **reader_params)


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


__all__ = ["InputError", "ItemResult", "ItemTask", "apply_step", "run_item"]
