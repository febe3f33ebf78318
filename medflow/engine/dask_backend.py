"""Run a build's item tasks on a Dask distributed cluster, through joblib's dask backend.

The tasks are the same :class:`~medflow.engine.run.ItemTask` records the local backend
runs: file paths and small parameters, never arrays. Each Dask worker reads the item's
DICOM files, runs the steps and writes the outputs and cache entries itself, so the
source folder, the output folder and the cache folder must be on storage every worker
sees at the same absolute paths (NFS, a cluster file system, or one machine). The
parent only receives the small :class:`~medflow.engine.run.ItemResult` records, as
they finish, and writes the manifest.

Before dispatching, the parent checks that every worker runs the same medflow version
and sees the cache folder (a token file written by the parent) and the source folders;
a mismatch is a :class:`~medflow.errors.UsageError` naming the workers, not a dataset
silently written to a worker's local disk.

``dask[distributed]`` is an optional dependency: ``pip install 'medflow[dask]'``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from medflow.engine.run import run_item
from medflow.engine.task import ItemResult, ItemTask
from medflow.errors import UsageError

CONNECT_TIMEOUT_S = 30  # connecting to the scheduler
WAIT_FOR_WORKERS_S = 60  # a cluster with no worker yet (e.g. adaptive) may take this long to get one
_PROBE_NAME = ".dask-probe"


def execute_dask(tasks: Sequence[ItemTask], address: str | None, n_workers_hint: int | None = None) -> Iterator[ItemResult]:
    """Run ``tasks`` on the Dask cluster at ``address``; yield each result as it finishes (unordered).

    Args:
        tasks: picklable per-item tasks (paths, not pixels).
        address: the scheduler, e.g. ``tcp://scheduler:8786``. Required: medflow does not
            start a cluster of its own (for one machine the local backend is faster).
        n_workers_hint: the local worker count the build resolved. Not used to size the
            run: on a cluster the number of concurrent items is the cluster's total number
            of worker threads (``sum(client.ncores())``), which is what joblib's dask
            backend uses; the argument is kept so both backends share one signature.

    Yields:
        one :class:`ItemResult` per task, in completion order.

    Raises:
        UsageError: no address, ``distributed`` not installed, the scheduler unreachable,
            workers on another medflow version, or workers that cannot see the shared folders.
    """
    del n_workers_hint  # documented above: the cluster decides the parallelism
    if not tasks:
        return
    if not address:
        raise UsageError("the dask backend needs a scheduler address: engine.address or --dask-address")
    distributed = _import_distributed()
    from joblib import Parallel, delayed, parallel_config

    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot connect to the Dask scheduler at {address}: {exc}") from None
    try:
        _wait_for_workers(client, address)
        check_workers(client, tasks)
        with parallel_config(backend="dask", client=client, wait_for_workers_timeout=WAIT_FOR_WORKERS_S):
            # joblib's auto-batching sends quick items (tiny series, instances) several to a Dask task
            # and slow ones one by one: 2,000 two-slice series on a LocalCluster of 2 took 13.9-17.0 s
            # instead of 28.2-35.6 s one item per task (the scheduler's round trip per task)
            parallel = Parallel(n_jobs=-1, return_as="generator_unordered", batch_size="auto")
            yield from parallel(delayed(run_item)(task) for task in tasks)
    finally:
        client.close()


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise UsageError(
            "the dask backend needs Dask distributed, which is not installed: pip install 'medflow[dask]' "
            "(or pip install 'dask[distributed]')"
        ) from None
    return distributed


def _wait_for_workers(client, address: str) -> None:
    try:
        client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
    except TimeoutError:
        raise UsageError(f"the Dask cluster at {address} has no worker after {WAIT_FOR_WORKERS_S} s") from None


def check_workers(client, tasks: Sequence[ItemTask]) -> None:
    """Refuse to dispatch when a worker runs another medflow or cannot see the shared folders.

    Writes a random token to ``<cache>/.dask-probe-<token>`` and asks every worker to read it
    back at the same absolute path, and to confirm that each item's source folder exists.

    Raises:
        UsageError: naming each failing worker and what it lacks.
    """
    from medflow import __version__

    cache_dirs = sorted({task.cache_dir for task in tasks})
    roots = sorted({str(task.item.root) for task in tasks})
    token = secrets.token_hex(16)
    probes = []
    for cache_dir in cache_dirs:
        probe = Path(cache_dir) / f"{_PROBE_NAME}-{token[:12]}"  # unique: builds may share a cache
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
        probes.append(str(probe))
    try:
        answers = client.run(_worker_report, probes, token, roots)
    finally:
        for probe in probes:
            try:
                os.unlink(probe)
            except OSError:
                pass
    problems = []
    for worker, (version, unseen, missing) in sorted(answers.items()):
        if version != __version__:
            problems.append(f"{worker} runs medflow {version or '(not installed)'}, this build runs {__version__}")
        for probe in unseen:
            problems.append(
                f"{worker} does not see the cache folder {Path(probe).parent} as this machine does "
                "(put the cache and outputs on storage shared at the same path)"
            )
        for root in missing:
            problems.append(f"{worker} cannot see the source folder {root}")
    if problems:
        raise UsageError("the Dask workers cannot run this build:\n  " + "\n  ".join(problems))


def _worker_report(probes: list[str], token: str, roots: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Runs on each worker: (medflow version, probe files not holding ``token``, missing source folders)."""
    try:
        from medflow import __version__ as version
    except ImportError:
        version = None
    unseen = []
    for probe in probes:
        try:
            seen = Path(probe).read_text()
        except OSError:
            seen = None
        if seen != token:
            unseen.append(probe)
    missing = [root for root in roots if not os.path.isdir(root)]
    return version, unseen, missing
