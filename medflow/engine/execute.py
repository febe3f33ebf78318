"""Running item tasks: in this process, on loky worker processes, or on a Dask cluster.

One per-item function (:func:`medflow.engine.run.run_item`) serves every backend;
results stream back as small records, unordered when parallel.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from medflow.engine.run import run_item
from medflow.engine.task import ItemResult, ItemTask
from medflow.threads import STREAM_CORES, usable_cores, worth_waking_workers
from medflow.workspace import current_run_id, supervise_worker, supervised_call


def resolve_workers(workers: int | str) -> int:
    """``'auto'`` -> number of usable CPU cores; an int >= 1 as is."""
    if workers == "auto":
        return usable_cores()
    return max(1, int(workers))


def decode_workers(workers: int) -> int:
    """Worker processes decoding one item's compressed slices beside it: the cores left by the item's own.

    None on a 2-core machine: there a second process only competes with the item's threads (a
    1-worker build of a JPEG-LS series keeps 1.2 cores busy, its decoder one of them): 200 slices
    2.04 s with 1 worker, 2.55 s with a decoding worker; 600 slices 5.27 s either way (medians of
    3, whole processes).
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
    chunks = _chunks(tasks, workers)
    yield from _alongside_workers(chunks if chunks is not None else [[task] for task in tasks], workers, progress_dir)


#: Submissions (batches of units) queued per worker process beyond the one it runs.
WORKER_QUEUE = 2


def _alongside_workers(units: list[list[ItemTask]], workers: int, progress_dir: str | None) -> Iterator[ItemResult]:
    """Run ``units`` in this process and, when the build is long enough, on ``workers`` - 1 loky worker
    processes too; results as they finish.

    This process is one of the workers: it takes units from the end of the list, and a thread of
    it (:class:`_Feeder`) starts the worker processes once this process's own pace says the units
    left are worth them (:func:`medflow.threads.worth_waking_workers`), then feeds them from the front once
    they are ready. A worker process takes ~0.3 s of CPU to start (the interpreter, numpy,
    medflow): with this process waiting for them, 2 workers were slower than 1 on builds of under
    a few hundred small items (200 one-slice series: 1.20 s against 0.88 s; 20: 0.76 against
    0.31 s). An interrupt, a failure or the caller closing the results kills the worker processes
    before it propagates: the build's workspace then removes this run's temp files.
    """
    helpers = min(workers - 1, len(units) - 1)
    run_id, parent = current_run_id(), os.getpid()
    executor = None

    def submit(batch: list[list[ItemTask]] | None):
        nonlocal executor
        if executor is None:
            executor = worker_processes(helpers)
        if batch is None:  # the ready call: supervised too (the worker exits if this process dies)
            return executor.submit(supervised_call, _worker_ready, None, run_id, parent)
        batch_tasks = [task for unit in batch for task in unit]
        if len(batch_tasks) == 1:
            return executor.submit(_supervised_run_item, batch_tasks[0], run_id, parent, progress_dir)
        return executor.submit(_supervised_run_items, batch_tasks, run_id, parent, progress_dir)

    started, ran = time.perf_counter(), [0]

    def batch_size() -> int:
        """Units per submission: about BATCH_SECONDS of work at this process's pace (a submission costs
        ~1 ms of pickling and IPC, and the feeder waits for the GIL while this process computes)."""
        per_unit = (time.perf_counter() - started) / max(1, ran[0])
        return max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(per_unit, 1e-6))))

    def worth_starting(left: int) -> bool:
        """Are the ``left`` units worth waking the workers for, at this process's pace so far?"""
        return worth_waking_workers(time.perf_counter() - started, ran[0], left)

    feeder = _Feeder(units, submit, helpers, helpers * (1 + WORKER_QUEUE), worth_starting, batch_size)
    try:
        with _slab_progress(progress_dir), _fewer_collections():
            while (unit := feeder.take_last()) is not None:
                for task in unit:
                    yield run_item(task)
                ran[0] += 1
                yield from feeder.finished(block=False)
        yield from feeder.finished(block=True)
    except BaseException:
        feeder.stop()
        if executor is not None:
            executor.shutdown(wait=True, kill_workers=True)
        raise
    if executor is not None and not feeder.fed:
        executor.shutdown(wait=False, kill_workers=True)  # still starting when this process ran out of units


#: How often the feeder thread looks at the pace, and at the workers starting.
POLL_SECONDS = 0.02
#: A worker process gets units in batches of about this much work (at most MAX_BATCH units).
BATCH_SECONDS = 0.05
MAX_BATCH = 64


def _worker_ready(_: Any = None) -> int:
    """Run on a worker process once it has started and imported what items need (this module)."""
    return os.getpid()


class _Feeder:
    """A thread that feeds worker processes with units from the front of a queue once they are ready.

    It first asks each worker for :func:`_worker_ready`; until one answers, every unit is left to
    this process (:meth:`take_last`, from the back), so a build shorter than a worker's start
    never waits for it. Then it keeps ``in_flight`` submissions of ``batch_size()`` units each
    in flight. What the workers return comes out of :meth:`finished`, in the order it finished.
    """

    _DONE = object()

    def __init__(self, units: list, submit: Callable[[Any], Any], workers: int, in_flight: int,
                 worth_starting: Callable[[int], bool], batch_size: Callable[[], int]):
        self._worth_starting = worth_starting  # asked with the units left every POLL_SECONDS until it says yes
        self._batch_size = batch_size  # units per submission
        self.fed = False  # did a worker get a unit?
        self._units = deque(units)
        self._submit = submit
        self._workers = workers
        self._limit = in_flight
        self._lock = threading.Lock()
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._futures: set = set()
        self._stopped = False
        self._done = False
        self._thread = threading.Thread(target=self._run, name="medflow-feeder", daemon=True)
        self._thread.start()

    def take_last(self):
        with self._lock:
            return self._units.pop() if self._units else None

    def finished(self, block: bool) -> Iterator[ItemResult]:
        """Results of the units the workers finished; with ``block``, of every unit, waiting for them."""
        while not self._done:
            try:
                future = self._results.get(block=block)
            except queue.Empty:
                return
            if future is self._DONE:
                self._done = True
                return
            result = future.result()  # a worker's crash is raised here
            yield from (result if isinstance(result, list) else [result])

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._units.clear()
            for future in self._futures:
                future.cancel()

    def _run(self) -> None:
        from concurrent.futures import Future  # the worker path only: not on a 1-worker build's start-up

        try:
            if self._wait_until_ready():
                self._feed()
        except BaseException as exc:  # noqa: BLE001 - e.g. a broken executor: raised by finished()
            failed: Future = Future()
            failed.set_exception(exc)
            self._results.put(failed)
        self._results.put(self._DONE)

    def _wait_until_ready(self) -> bool:
        """Until the workers are worth starting and one answered (True), or no unit is left for them (False)."""
        from concurrent.futures import FIRST_COMPLETED, wait

        while True:
            with self._lock:
                if self._stopped or not self._units:
                    return False
                left = len(self._units)
            if self._worth_starting(left):
                break
            time.sleep(POLL_SECONDS)
        ready = {self._submit(None) for _ in range(self._workers)}
        while True:
            done, ready = wait(ready, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # a worker that could not start is raised here
            if done:
                return True
            with self._lock:
                if self._stopped or not self._units:
                    return False

    def _feed(self) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait

        while True:
            with self._lock:
                if self._stopped:
                    return
                while self._units and len(self._futures) < self._limit:
                    batch = [self._units.popleft() for _ in range(min(self._batch_size(), len(self._units)))]
                    self._futures.add(self._submit(batch))
                    self.fed = True
                if not self._futures:
                    return
                futures = set(self._futures)
            done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
            with self._lock:
                self._futures -= done
            for future in done:
                self._results.put(future)


def worker_processes(max_workers: int):
    """loky's reusable executor of ``max_workers`` worker processes, as every part of a build asks for it.

    The same initializer everywhere (discovery's prescan, the items, a series' decoders), so the
    workers one part woke serve the next (loky resizes its pool for another ``max_workers``, and
    starts new workers only when the initializer differs). Each worker watches this process from
    its start and exits when it dies.
    """
    from joblib.externals.loky import get_reusable_executor

    from medflow.workspace import watch_parent

    _fresh_workers_if_environment_changed()
    return get_reusable_executor(max_workers=max_workers, initializer=watch_parent, initargs=(os.getpid(),))


def map_on_workers(function: Callable[[Any], Any], args: Iterable[Any], workers: int) -> Iterator[Any]:
    """``function(arg)`` for every one of ``args`` on loky's worker processes, results in any order.

    The same reusable workers (and supervision: they stop when this process dies) as the
    items' of a build with ``workers`` workers: discovery's prescan wakes them, the items then
    run on them warm. ``function`` must be importable by name in a worker. A failure (a worker
    dying) kills the workers before it propagates.
    """
    from concurrent.futures import FIRST_COMPLETED, wait

    executor = worker_processes(workers)
    run_id, parent = current_run_id(), os.getpid()
    pending: set = set()
    try:
        for arg in args:
            pending.add(executor.submit(supervised_call, function, arg, run_id, parent))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
    except BaseException:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, kill_workers=True)
        raise


class WorkerSubmit:
    """``submit(function, argument)``: a future of ``function(argument)`` on one of ``workers`` loky workers.

    The reusable workers (and supervision) of :func:`map_on_workers`, with futures the caller
    may cancel while no worker has started them (:mod:`medflow.sources.decode_ahead`).
    """

    def __init__(self, workers: int):
        self._executor = worker_processes(workers)
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
