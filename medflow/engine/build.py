"""A build, top-down: claim the output, prepare (plan), execute the items, record the manifest.

The parent process never holds pixels: workers return small :class:`ItemResult` records
(streamed, unordered) and write their outputs and cache entries themselves. Each stage
lives in its own module: :mod:`~medflow.engine.prepare` (secrets, discovery, plan),
:mod:`~medflow.engine.dataset_stats` (the first pass), :mod:`~medflow.engine.execute`
(backends), :mod:`~medflow.engine.outcomes` (shared outputs, output hashes) and
:mod:`~medflow.engine.record` (manifest entries, accounting, dataset writers).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medflow.engine.cache import cache_is_full
from medflow.engine.dataset_stats import compute_dataset_stats
from medflow.engine.execute import execute, resolve_workers
from medflow.engine.manifest import write_manifest
from medflow.engine.outcomes import remember_outputs, resolve_shared_outputs
from medflow.engine.prepare import (
    PlannedTasks,
    Prepared,
    cache_dir,
    dataset_stats_missing,
    output_dir,
    plan_all,
    prepare,
)
from medflow.engine.privacy import PathRedactor, path_token, redact_manifest, write_private_tables
from medflow.engine.progress import Progress
from medflow.engine.provenance import GitStateSoon, run_provenance_soon
from medflow.engine.record import (
    Outcome,
    assemble_manifest,
    collect,
    enter_result,
    enter_up_to_date,
    input_accounting,
    item_paths,
    run_dataset_writers,
)
from medflow.engine.spool import EntrySpool
from medflow.engine.task import ItemResult
from medflow.errors import FileSystemError
from medflow.recipe.loader import LoadedRecipe

__all__ = ["BuildReport", "build", "cache_dir", "output_dir", "prepare"]


@dataclass
class BuildReport:
    out_dir: Path
    total: int
    ok: int
    failed: list[tuple[str, str]]  # (item id, one-line reason naming the file)
    unreadable: list[tuple[str, str]]  # (file, reason): DICOM files that belong to no item
    computed: int
    from_cache: int
    skipped: list[tuple[str, str]]
    seconds: float
    # what manifest.json says; its "items" is an EntrySpool (a read-only Sequence of the entries, read
    # from an anonymous temp file that lives as long as the report), the rest plain JSON values
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason)
    private_files: list[str] = field(default_factory=list)
    filtered: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason): left out by the filter
    accounting: dict[str, Any] = field(default_factory=dict)  # see input_accounting
    warnings: list[str] = field(default_factory=list)  # what went wrong without failing an item (a full cache)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.unreadable else 0



def build(
    loaded: LoadedRecipe, *, force: bool = False, wait: bool = True,
    finish: Callable[[BuildReport], None] | None = None, **options: Any,
) -> BuildReport:
    """Build the dataset of ``loaded`` in its claimed output folder; returns the report (the manifest is written).

    The output folder must be new, empty or a medflow output (``force`` adopts another
    one); one build at a time holds it (``wait``: wait for a running one, else refuse);
    temp files of dead runs are removed first, this run's own when it ends (see
    :mod:`medflow.workspace`). ``finish`` is called with the report while the folder is still
    held: what it writes there (the command line's ``build.log``) is this build's, and a build
    waiting for the folder, which removes every other run's temp files once it holds it, cannot
    take it from under the write. ``options`` are :func:`_build_claimed`'s.

    Raises:
        WorkspaceError: the output or cache folder cannot be claimed (nothing was built).
    """
    from medflow.workspace import claim_output

    with claim_output(output_dir(loaded), cache_dir=cache_dir(loaded), force=force, wait=wait):
        report = _build_claimed(loaded, **options)
        if finish is not None:
            finish(report)
        return report


def _build_claimed(
    loaded: LoadedRecipe,
    *,
    workers: int | str | None = None,
    keep_going: bool | None = None,
    verify: bool = False,
    show_progress: bool = True,
    backend: str | None = None,
    address: str | None = None,
    progress: Progress | None = None,
    git_state: GitStateSoon | None = None,
) -> BuildReport:
    """Build the dataset of ``loaded`` (its workspace claimed); returns the report (the manifest is written).

    ``git_state``: the recipe folder's git state, asked for before the recipe loaded (else now).
    """
    started_wall, started = dt.datetime.now(dt.UTC), time.perf_counter()
    git = run_provenance_soon(loaded, git_state)  # the recipe folder's git state, taken while the build runs
    recipe = loaded.recipe
    n_workers = resolve_workers(workers if workers is not None else recipe.engine.workers)
    keep_going = recipe.engine.keep_going if keep_going is None else keep_going
    backend = backend or recipe.engine.backend
    address = address or recipe.engine.address

    prepared = prepare(loaded, verify=verify, workers=n_workers if backend == "local" else 1,
                       enter_up_to_date=enter_up_to_date)  # their entries made as they are planned
    stats_were_cached, notes = _dataset_stats_pass(prepared, verify, n_workers, backend, address)
    entries = prepared.entries  # on disk, not in memory
    results = _run_items(prepared, entries, n_workers, backend, address, keep_going,
                         progress or Progress(enabled=show_progress))
    for plan in resolve_shared_outputs(prepared, results):
        results[plan.item.item_id] = enter_result(prepared, plan, results[plan.item.item_id], entries)
    remember_outputs(prepared, results)

    outcome = collect(prepared, results, entries)
    dataset_outputs = run_dataset_writers(prepared, outcome.entries)
    private_files, private_errors = write_private_tables(prepared.out_dir, outcome.private_tables)
    outcome.failed.extend(private_errors)
    accounting = input_accounting(prepared, outcome.statuses)
    warnings = _cache_warnings(prepared, results)
    seconds = time.perf_counter() - started
    run = {
        "started": started_wall.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "workers": n_workers,
        "dataset_stats_computed": not stats_were_cached,
        **({"warnings": warnings} if warnings else {}),
        **git(),
    }
    manifest = assemble_manifest(prepared, outcome, results, dataset_outputs, accounting, notes, run)
    report = _report(prepared, outcome, manifest, accounting, private_files, len(results), seconds)
    report.warnings = warnings
    write_manifest(prepared.out_dir, report.manifest)
    try:
        prepared.memo.save()
    except FileSystemError as exc:
        if not cache_is_full(exc):
            raise
        report.warnings.append(f"the file digests were not kept for the next build, {exc}; it hashes every "
                               "input again")
    finally:
        prepared.memo.close()  # its file and journal: not left to the garbage collector
        if prepared.records is not None:
            prepared.records.close()
    return report


def _cache_warnings(prepared: Prepared, results: dict[str, ItemResult]) -> list[str]:
    """One line when the cache was too full to keep what this build computed (the items were built)."""
    items = sorted(item_id for item_id, result in results.items() if result.cache_skipped)
    reason = results[items[0]].cache_skipped if items else prepared.cache.skipped
    if reason is None:
        return []
    what = f"{len(items)} item(s) were built but not (all) cached" if items else "the dataset's records were not cached"
    return [f"the cache is full: {what}, {reason}; a rebuild computes them again (free space in "
            f"{prepared.cache.root} or set engine.cache_dir elsewhere)"]


def _dataset_stats_pass(
    prepared: Prepared, verify: bool, workers: int, backend: str, address: str | None
) -> tuple[bool, list[str]]:
    """Compute the dataset statistics the cache does not hold, then plan again: (were all cached, notes)."""
    if not dataset_stats_missing(prepared):
        return True, []
    notes = compute_dataset_stats(prepared, workers, backend, address)
    plan_all(prepared, verify)
    return False, notes


def _run_items(
    prepared: Prepared, entries: EntrySpool, workers: int, backend: str, address: str | None, keep_going: bool,
    progress: Progress,
) -> dict[str, ItemResult]:
    """Run every item that is not up to date; their small records by item id, each entered in ``entries`` as it came."""
    to_run = [plan for plan in prepared.plans if not plan.up_to_date]
    plan_of = {plan.item.item_id: plan for plan in to_run}
    tasks = PlannedTasks(prepared, to_run)  # each made as the executor takes it
    results: dict[str, ItemResult] = {}
    with progress.run(to_run) as channel:  # channel: where streamed items report their slabs
        for result in execute(tasks, workers, backend=backend, address=address, progress_dir=channel):
            results[result.item_id] = enter_result(prepared, plan_of[result.item_id], result, entries)
            progress.update(result.status == "ok", result.item_id)
            if result.status != "ok" and not keep_going:
                break
    return results


def _report(
    prepared: Prepared, outcome: Outcome, manifest: dict[str, Any], accounting: dict[str, Any],
    private_files: list[str], computed: int, seconds: float,
) -> BuildReport:
    """The report (and the manifest to write); a de-identifying build names input files by token only."""
    failed, quarantined, filtered = outcome.failed, outcome.quarantined, outcome.filtered
    unreadable = [(str(prepared.source_root / f), r) for f, r in prepared.unreadable]
    skipped = prepared.skipped
    if prepared.deidentifies:
        redactor = PathRedactor(prepared.source_root)
        files = item_paths(prepared)
        manifest = redact_manifest(manifest, redactor, files)
        outcome.entries.close()  # the entries as made name the input files; the report keeps the redacted ones
        failed = [(i, redactor.text(r, files.get(i, ()))) for i, r in failed]
        quarantined = [(i, redactor.text(r, files.get(i, ()))) for i, r in quarantined]
        filtered = [(i, redactor.text(r, files.get(i, ()))) for i, r in filtered]
        unreadable = [(path_token(f), redactor.text(r, [f])) for f, r in prepared.unreadable]
        skipped = [(path_token(f), redactor.text(r, [f])) for f, r in prepared.skipped]
    return BuildReport(
        out_dir=prepared.out_dir,
        total=len(prepared.plans),
        ok=outcome.ok,
        failed=failed,
        unreadable=unreadable,
        quarantined=quarantined,
        filtered=filtered,
        private_files=private_files,
        computed=computed,
        from_cache=sum(p.up_to_date for p in prepared.plans),
        skipped=skipped,
        seconds=seconds,
        manifest=manifest,
        accounting=accounting,
    )
