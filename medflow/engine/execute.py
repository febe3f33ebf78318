"""Running item tasks: in this process, on loky worker processes, or on a Dask cluster.

One per-item function (:func:`medflow.engine.run.run_item`) serves every backend;
results stream back as small records, unordered when parallel.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from medflow.engine.run import run_item
from medflow.engine.task import ItemResult, ItemTask
from medflow.threads import STREAM_CORES, usable_cores
from medflow.workspace import current_run_id, supervise_worker, supervised_call


def resolve_workers(workers: int | str) -> int:
    """``'auto'`` -> number of usable CPU cores; an int >= 1 as is."""
    if workers == "auto":
        return usable_cores()
    return max(1, int(workers))


def decode_workers(workers: int) -> int:
    """Worker processes decoding one item's compressed slices beside it: the cores left by the item's own.

    None on a 2-core machine: there a second process only competed with the item's threads
    (JPEG Lossless: no faster; RLE: 3.8 -> 4.9 s, the worker's start-up costing more than it
    decoded).
    """
    return max(0, min(workers - 1, usable_cores() - STREAM_CORES))


def execute(
    tasks: Sequence[ItemTask], workers: int, *, backend: str = "local", address: str | None = None,
    progress_dir: str | None = None,
) -> Iterator[ItemResult]:
    """Run ``tasks`` and yield results as they finish (unordered when parallel).

    Local backend: one worker runs in this process; more use joblib's loky
    processes, streaming results so the parent holds only small records. Dask
    backend: the same per-item function on a Dask distributed cluster.
    ``progress_dir``: streamed items report their slabs there (local backend; see
    :mod:`medflow.engine.progress`).
    """
    if backend == "dask":
        from medflow.engine.dask_backend import execute_dask

        yield from execute_dask(tasks, address, workers)
        return
    if 1 <= len(tasks) < workers:
        # fewer items than workers: the spare workers become threads inside each item
        from dataclasses import replace

        tasks = [replace(task, threads=workers // len(tasks)) for task in tasks]
    if workers > 1 and len(tasks) == 1 and decode_workers(workers) > 0:
        # one item: other workers also decode its compressed slices (decoders hold the GIL)
        from dataclasses import replace

        tasks = [replace(tasks[0], decode_workers=decode_workers(workers))]
    if workers <= 1 or len(tasks) <= 1:
        with _slab_progress(progress_dir), _fewer_collections():
            for task in tasks:
                yield run_item(task)
        return
    from joblib import Parallel, delayed

    _fresh_workers_if_environment_changed()
    parallel = Parallel(
        n_jobs=min(workers, len(tasks)),
        backend="loky",
        return_as="generator_unordered",
        pre_dispatch="2*n_jobs",
    )
    run_id, parent = current_run_id(), os.getpid()
    # An interrupt (or any exception) here makes joblib kill the workers before it
    # propagates: the build's workspace then removes this run's temp files.
    chunks = _chunks(tasks, workers)
    if chunks is None:
        yield from parallel(delayed(_supervised_run_item)(task, run_id, parent, progress_dir) for task in tasks)
        return
    for results in parallel(delayed(_supervised_run_items)(chunk, run_id, parent, progress_dir) for chunk in chunks):
        yield from results


def map_on_workers(function: Callable[[Any], Any], args: Iterable[Any], workers: int) -> Iterator[Any]:
    """``function(arg)`` for every one of ``args`` on loky's worker processes, results in any order.

    The same reusable workers (and supervision: they stop when this process dies) as the
    items' of a build with ``workers`` workers: discovery's prescan wakes them, the items then
    run on them warm. ``function`` must be importable by name in a worker.
    """
    from joblib import Parallel, delayed

    _fresh_workers_if_environment_changed()
    parallel = Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered", pre_dispatch="2*n_jobs")
    run_id, parent = current_run_id(), os.getpid()
    yield from parallel(delayed(supervised_call)(function, arg, run_id, parent) for arg in args)


class WorkerSubmit:
    """``submit(function, argument)``: a future of ``function(argument)`` on one of ``workers`` loky workers.

    The reusable workers (and supervision) of :func:`map_on_workers`, with futures the caller
    may cancel while no worker has started them (:mod:`medflow.sources.decode_ahead`).
    """

    def __init__(self, workers: int):
        from joblib.externals.loky import get_reusable_executor

        _fresh_workers_if_environment_changed()
        self.workers = workers
        self._executor = get_reusable_executor(max_workers=workers)
        self._run_id, self._parent = current_run_id(), os.getpid()

    def __call__(self, function: Callable[[Any], Any], argument: Any):
        return self._executor.submit(supervised_call, function, argument, self._run_id, self._parent)


#: Instance items (one file each, a few milliseconds) go to workers in chunks of at most this many.
MAX_CHUNK = 32


def _chunks(tasks: list[ItemTask], workers: int) -> list[list[ItemTask]] | None:
    """Tasks grouped for dispatch when they are many small instance items, else ``None`` (one by one).

    Dispatching a task costs about a millisecond of pickling and IPC, as much as de-identifying
    a small file: thousands of instance items go in chunks (several per worker, so the last
    chunks still balance).
    """
    if len(tasks) < 4 * workers or any(task.item.kind != "instance" for task in tasks):
        return None
    size = max(1, min(MAX_CHUNK, len(tasks) // (8 * workers)))
    # Neighbouring files (a series' folder, consecutive names) share a chunk: a worker's
    # de-identification memo then serves a series from one file to the next, instead of every
    # worker meeting every series (results come back unordered whatever the order).
    tasks = sorted(tasks, key=lambda task: (task.item.root, task.item.files[:1]))
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def _supervised_run_items(
    tasks: list[ItemTask], run_id: str, parent: int, progress_dir: str | None = None
) -> list[ItemResult]:
    supervise_worker(run_id, parent)
    with _slab_progress(progress_dir), _fewer_collections():
        return [run_item(task) for task in tasks]


def _supervised_run_item(task: ItemTask, run_id: str, parent: int, progress_dir: str | None = None) -> ItemResult:
    """:func:`run_item` in a worker: temp files named for the parent's run; the worker exits if the parent dies."""
    supervise_worker(run_id, parent)
    with _slab_progress(progress_dir):
        return run_item(task)


@contextlib.contextmanager
def _slab_progress(progress_dir: str | None) -> Iterator[None]:
    """Streamed items report their slabs to ``progress_dir`` while the block runs (nothing when ``None``)."""
    from medflow.engine import stream
    from medflow.engine.progress import SlabReporter

    previous = stream.progress_callback
    stream.progress_callback = SlabReporter(progress_dir) if progress_dir else None
    try:
        yield
    finally:
        stream.progress_callback = previous


#: Allocations between two runs of the cyclic garbage collector's youngest generation while items run.
GC_THRESHOLD = 10000


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """The cyclic garbage collector runs about ten times less often while the block runs.

    Items allocate many short-lived objects (parsed headers, de-identified datasets) that plain
    reference counting frees; with the default threshold (700) the collector ran 491 times
    during 2000 instance items and took 0.28 s of the run, 0.09 s with this one. Whatever it
    still collects it collects later, as usual; the previous thresholds come back afterwards.
    """
    previous = gc.get_threshold()
    gc.set_threshold(max(previous[0], GC_THRESHOLD), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


_WORKER_ENVIRONMENT: int | None = None


def _fresh_workers_if_environment_changed() -> None:
    """Restart loky's reusable workers when os.environ changed since they were started.

    Workers inherit the environment once, when spawned, and loky keeps them for the
    next build in the same process; a step reading a variable (e.g. the
    de-identification key) must see the value of now, not of the first build.
    """
    global _WORKER_ENVIRONMENT
    fingerprint = hash(frozenset(os.environ.items()))
    if _WORKER_ENVIRONMENT is not None and fingerprint != _WORKER_ENVIRONMENT:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    _WORKER_ENVIRONMENT = fingerprint
