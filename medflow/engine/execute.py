"""Running item tasks: in this process, on loky worker processes, or on a Dask cluster.

One per-item function (:func:`medflow.engine.run.run_item`) serves every backend;
results stream back as small records, unordered when parallel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from medflow.engine.run import ItemResult, ItemTask, run_item


def resolve_workers(workers: int | str) -> int:
    """``'auto'`` -> number of usable CPU cores; an int >= 1 as is."""
    if workers == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)
    return max(1, int(workers))


def execute(
    tasks: list[ItemTask], workers: int, *, backend: str = "local", address: str | None = None
) -> Iterator[ItemResult]:
    """Run ``tasks`` and yield results as they finish (unordered when parallel).

    Local backend: one worker runs in this process; more use joblib's loky
    processes, streaming results so the parent holds only small records. Dask
    backend: the same per-item function on a Dask distributed cluster.
    """
    if backend == "dask":
        from medflow.engine.dask_backend import execute_dask

        yield from execute_dask(tasks, address, workers)
        return
    if workers <= 1 or len(tasks) <= 1:
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
    yield from parallel(delayed(run_item)(task) for task in tasks)


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
