"""Build orchestration: discover -> plan -> run items (sequential or joblib) -> shards -> manifest.

The parent process never holds pixels: workers return small :class:`ItemResult`
records (streamed, unordered) and write their outputs and cache entries themselves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medflow.engine import keys
from medflow.engine.cache import Cache
from medflow.engine.execute import execute, resolve_workers
from medflow.engine.manifest import (
    MANIFEST_VERSION,
    environment,
    previous_items,
    read_manifest,
    write_manifest,
)
from medflow.engine.plan import ItemPlan, item_links, needs_dataset_stats, plan_item, resume_index
from medflow.engine.privacy import (
    PathRedactor,
    keyed_item_id,
    path_token,
    recipe_secret,
    redact_manifest,
    write_private_tables,
)
from medflow.engine.progress import Progress
from medflow.engine.run import ItemResult, ItemTask
from medflow.errors import InputError
from medflow.recipe.loader import LoadedRecipe, resolve_path
from medflow.recipe.model import SampleSource
from medflow.sources.base import ItemRef
from medflow.sources.fingerprint import FingerprintMemo
from medflow.writers.registry import get_writer


@dataclass
class Prepared:
    """Everything known before any pixel is read."""

    loaded: LoadedRecipe
    out_dir: Path
    cache: Cache
    source_root: Path
    items: list[ItemRef]
    file_hashes: dict[str, dict[str, str]]  # item id -> {relative path: sha256}
    skipped: list[tuple[str, str]]
    unreadable: list[tuple[str, str]]
    plans: list[ItemPlan]
    reader_params: dict[str, Any]
    dataset_stats: dict[int, Any] = field(default_factory=dict)  # step index -> statistics
    deidentifies: bool = False  # the recipe de-identifies: ids keyed, paths redacted, nothing identifying cached


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
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason)
    private_files: list[str] = field(default_factory=list)
    filtered: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason): left out by the filter
    accounting: dict[str, Any] = field(default_factory=dict)  # see input_accounting

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.unreadable else 0


def output_dir(loaded: LoadedRecipe) -> Path:
    return Path(os.path.normpath(resolve_path(loaded, loaded.recipe.outputs.dir)))


def cache_dir(loaded: LoadedRecipe) -> Path:
    engine = loaded.recipe.engine
    if engine.cache_dir:
        return Path(os.path.normpath(resolve_path(loaded, engine.cache_dir)))
    # Next to the output folder, not inside it: the cache holds original headers (PHI),
    # and the output folder is what people copy and share.
    out = output_dir(loaded)
    return out.parent / ".medflow" / "cache"


def reads_no_pixels(recipe: Any) -> bool:
    """Do the recipe's steps and writers all work without pixels (e.g. de-identify -> DICOM)?

    Such a build takes every DICOM file as its own item, parses it once and never decodes
    pixel data (see :mod:`medflow.sources.instances`).
    """
    from medflow.steps.registry import get_step

    writers = list(recipe.outputs.writers)
    if not recipe.steps or not writers:
        return False
    if any(get_step(p.step).reads_pixels for p in recipe.steps):
        return False
    return all(not get_writer(w.kind).reads_pixels and get_writer(w.kind).per_item for w in writers)


def prepare(loaded: LoadedRecipe, *, verify: bool = False, record: bool = True) -> Prepared:
    """Check secrets, discover the items, fingerprint them and plan every item against the cache.

    ``record=False`` (``plan``, ``--dry-run``, ``preview``) keeps the fingerprints in memory:
    those commands write nothing of their own (the embedded sample is still materialized).

    Raises:
        UsageError: a de-identifying recipe's key is missing or too short (nothing is read).
        InputError: the source folder does not exist (a recipe-level error: no work starts).
    """
    from medflow.sources.discovery import discover_dicom

    recipe = loaded.recipe
    secret = recipe_secret(list(recipe.steps))
    out_dir = output_dir(loaded)
    cache = Cache(cache_dir(loaded))
    memo = FingerprintMemo(cache.root / "fingerprints.json", verify=verify, secret=secret)
    source = recipe.source
    if isinstance(source, SampleSource):
        from medflow.sources.sample_data import materialize_sample

        root = materialize_sample(source.sample, cache.root / "samples")
        reader_params: dict[str, Any] = {"duplicates": "first"}
    else:
        root = resolve_path(loaded, source.dicom)
        if not root.is_dir():
            raise InputError(str(root), "source folder does not exist")
        reader_params = {"duplicates": source.duplicates}
    if reads_no_pixels(recipe):
        from medflow.sources.instances import discover_instances

        discovery = discover_instances(root, source.filter, memo)
        reader_params = {"instances": True, "filter": _instance_filter(source.filter)}
    else:
        discovery = discover_dicom(root, source.filter, memo, getattr(source, "mismatched_size", "fail"))
    if isinstance(source, SampleSource):
        from medflow.sources.sample_data import MARKER_NAME

        discovery.skipped = [(rel, reason) for rel, reason in discovery.skipped if rel != MARKER_NAME]
    if secret is not None:
        discovery.items = sorted(
            (dataclasses.replace(item, item_id=keyed_item_id(item.item_id, secret)) for item in discovery.items),
            key=lambda item: item.item_id,
        )
    file_hashes = {
        item.item_id: {rel: memo.sha256(root / rel) for rel in item.files} for item in discovery.items
    }
    if record:
        memo.save()
    unreadable, skipped = _split_skipped(root, discovery.skipped)

    prepared = Prepared(
        loaded, out_dir, cache, root, discovery.items, file_hashes, skipped, unreadable, [], reader_params
    )
    prepared.deidentifies = secret is not None
    prepared.dataset_stats = _cached_dataset_stats(prepared)
    _plan_all(prepared, verify)
    return prepared


def _instance_filter(flt: Any) -> dict[str, Any]:
    """The series-level filter as the per-instance task applies it (joins the read's cache key)."""
    return {
        "modality": flt.modality,
        "series_description": flt.series_description,
        "exclude_localizers_explicit": bool(flt.exclude_localizers and "exclude_localizers" in flt.model_fields_set),
    }


def _plan_all(prepared: Prepared, verify: bool) -> None:
    recipe = prepared.loaded.recipe
    previous = previous_items(read_manifest(prepared.out_dir))
    prepared.plans = [
        plan_item(item, prepared.reader_params, list(recipe.steps), _per_item_writers(recipe), prepared.cache,
                  prepared.out_dir, previous.get(item.item_id), verify, prepared.dataset_stats,
                  prepared.file_hashes[item.item_id])
        for item in prepared.items
    ]


def _stats_inputs_key(prepared: Prepared, index: int, stats: dict[int, Any]) -> str:
    """Identifies a dataset statistic: the step's stats key and every item's key entering that step."""
    steps = list(prepared.loaded.recipe.steps)
    entering = sorted(
        item_links(item, prepared.reader_params, steps[:index], stats)[-1].key for item in prepared.items
    )
    return keys.hash_json({"stats_key": steps[index].stats_key(), "step_index": index, "inputs": entering})


def _cached_dataset_stats(prepared: Prepared) -> dict[int, Any]:
    """Dataset statistics already in the cache for exactly these items (a first pass is not needed)."""
    stats: dict[int, Any] = {}
    for index, params in enumerate(prepared.loaded.recipe.steps):
        if needs_dataset_stats(params):
            record = prepared.cache.get_record(_stats_inputs_key(prepared, index, stats))
            if record is None:
                break  # later statistics depend on this one
            stats[index] = record["stats"]
    return stats


def _compute_dataset_stats(prepared: Prepared, workers: int, backend: str, address: str | None) -> list[str]:
    """First pass: accumulate each dataset-statistics step over every item, in step order.

    Each item runs up to the step (reusing the cache) and returns a small accumulator
    record; the parent merges them. Returns notes (e.g. items left out of the statistics).
    """
    notes = []
    steps = list(prepared.loaded.recipe.steps)
    for index, params in enumerate(steps):
        if not needs_dataset_stats(params) or index in prepared.dataset_stats:
            continue
        tasks = []
        for item in prepared.items:
            links = item_links(item, prepared.reader_params, steps[:index], prepared.dataset_stats)
            base = _task(prepared, ItemPlan(item, links, "", 0, True))
            tasks.append(dataclasses.replace(base, steps=steps[:index], writers=[], expect=None,
                                             start=resume_index(prepared.cache, links), accumulate=params))
        total, left_out = None, 0
        for result in execute(tasks, workers, backend=backend, address=address):
            if result.status != "ok" or result.stats is None:
                left_out += 1
                continue
            accumulator = type(params.new_accumulator()).from_json(result.stats)
            if total is None:
                total = accumulator
            else:
                total.merge(accumulator)
        if total is None:
            notes.append(f"step {index + 1} '{params.step}': no item could be read for the dataset statistics")
            break
        stats = total.result()
        prepared.cache.put_record(_stats_inputs_key(prepared, index, prepared.dataset_stats), {"stats": stats})
        prepared.dataset_stats[index] = stats
        if left_out:
            notes.append(f"step {index + 1} '{params.step}': {left_out} item(s) failed and are not in the statistics")
    return notes


def build(loaded: LoadedRecipe, *, force: bool = False, wait: bool = True, **options: Any) -> BuildReport:
    """Build the dataset of ``loaded`` in its claimed output folder; returns the report (the manifest is written).

    The output folder must be new, empty or a medflow output (``force`` adopts another
    one); one build at a time holds it (``wait``: wait for a running one, else refuse);
    temp files of dead runs are removed first, this run's own when it ends (see
    :mod:`medflow.workspace`). ``options`` are :func:`_build_claimed`'s.

    Raises:
        WorkspaceError: the output or cache folder cannot be claimed (nothing was built).
    """
    from medflow.workspace import claim_output

    with claim_output(output_dir(loaded), cache_dir=cache_dir(loaded), force=force, wait=wait):
        return _build_claimed(loaded, **options)


def _build_claimed(
    loaded: LoadedRecipe,
    *,
    workers: int | str | None = None,
    keep_going: bool | None = None,
    verify: bool = False,
    show_progress: bool = True,
    backend: str | None = None,
    address: str | None = None,
) -> BuildReport:
    """Build the dataset of ``loaded`` (its workspace claimed); returns the report (the manifest is written)."""
    started_wall = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    prepared = prepare(loaded, verify=verify)
    recipe = loaded.recipe
    n_workers = resolve_workers(workers if workers is not None else recipe.engine.workers)
    keep_going = recipe.engine.keep_going if keep_going is None else keep_going
    backend = backend or recipe.engine.backend
    address = address or recipe.engine.address
    stats_notes: list[str] = []
    stats_were_cached = True
    if any(needs_dataset_stats(p) and i not in prepared.dataset_stats for i, p in enumerate(recipe.steps)):
        stats_were_cached = False
        stats_notes = _compute_dataset_stats(prepared, n_workers, backend, address)
        _plan_all(prepared, verify)

    tasks = [_task(prepared, plan) for plan in prepared.plans if not plan.up_to_date]
    results: dict[str, ItemResult] = {}
    progress = Progress(len(tasks), enabled=show_progress)
    for result in execute(tasks, n_workers, backend=backend, address=address):
        results[result.item_id] = result
        progress.update(result.status == "ok")
        if result.status != "ok" and not keep_going:
            break
    _resolve_shared_outputs(prepared, results)

    manifest_items = []
    failed: list[tuple[str, str]] = []
    quarantined: list[tuple[str, str]] = []
    filtered: list[tuple[str, str]] = []
    private_tables: list[dict[str, list[list[str]]]] = []
    ok = 0
    for plan in prepared.plans:
        item_id = plan.item.item_id
        if plan.up_to_date:
            status = plan.record.get("status", "ok")
            error = plan.record.get("error")
            entry = _manifest_item(prepared, plan, status, plan.record["outputs"], plan.record["meta"], error)
        elif item_id in results:
            result = results[item_id]
            status, error = result.status, result.error
            entry = _manifest_item(prepared, plan, status, result.outputs, result.meta, error)
        else:
            status, error = "not built", "stopped after an earlier failure"
            entry = _manifest_item(prepared, plan, status, [], {}, error)
        if status == "ok":
            ok += 1
            private_tables.append(plan.record.get("private_tables", {}) if plan.up_to_date else result.private_tables)
        elif status == "quarantined":
            quarantined.append((item_id, error or "quarantined"))
        elif status in ("filtered", "duplicate"):
            filtered.append((item_id, error or status))
        elif status == "not built":
            failed.append((item_id, "not built: stopped after an earlier failure"))
        else:
            failed.append((item_id, error or "failed"))
        manifest_items.append(entry)

    if not prepared.plans and not prepared.unreadable:
        looked = f"{len(prepared.skipped)} other file(s) looked at" if prepared.skipped else "it holds no file"
        failed.append(("source", f"no DICOM file found in {prepared.source_root} ({looked})"))
    shard_outputs = _write_dataset_writers(prepared, manifest_items)
    private_files, private_errors = write_private_tables(prepared.out_dir, private_tables)
    failed.extend(private_errors)
    finished_wall = dt.datetime.now(dt.UTC)
    seconds = time.perf_counter() - started
    accounting = input_accounting(prepared, manifest_items)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "environment": environment(),
        "recipe": {
            "name": recipe.name,
            "hash": keys.hash_json(loaded.resolved),
            "resolved": loaded.resolved,
        },
        "cache_format": keys.CACHE_FORMAT_VERSION,
        "items": manifest_items,
        "dataset_outputs": shard_outputs,
        "dataset_stats": [
            {"step_index": index + 1, "step": recipe.steps[index].step, "stats": stats}
            for index, stats in sorted(prepared.dataset_stats.items())
        ],
        "notes": stats_notes,
        "inputs_skipped": [{"file": f, "reason": r} for f, r in prepared.skipped],
        "inputs_unreadable": [{"file": f, "reason": r} for f, r in prepared.unreadable],
        "accounting": accounting,
        "summary": {
            "items": len(prepared.plans),
            "ok": ok,
            "failed": len(failed),
            "quarantined": len(quarantined),
            "filtered": len(filtered),
            "unreadable_files": len(prepared.unreadable),
            "input_files": accounting["inputs"],
            "input_files_written": accounting["written"],
            "input_files_withheld": len(accounting["withheld"]),
        },
        "quarantined": [{"id": item_id, "reason": reason} for item_id, reason in quarantined],
        "run": {
            "started": started_wall.isoformat(timespec="seconds"),
            "finished": finished_wall.isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "workers": n_workers,
            "computed": {item_id: results[item_id].computed for item_id in sorted(results)},
            "from_cache": sorted(p.item.item_id for p in prepared.plans if p.up_to_date),
            "dataset_stats_computed": not stats_were_cached,
        },
    }
    unreadable = [(str(prepared.source_root / f), r) for f, r in prepared.unreadable]
    skipped = prepared.skipped
    if prepared.deidentifies:
        redactor = PathRedactor(prepared.source_root)
        item_files = _item_paths(prepared)
        manifest = redact_manifest(manifest, redactor, item_files)
        failed = [(i, redactor.text(r, item_files.get(i, ()))) for i, r in failed]
        quarantined = [(i, redactor.text(r, item_files.get(i, ()))) for i, r in quarantined]
        filtered = [(i, redactor.text(r, item_files.get(i, ()))) for i, r in filtered]
        unreadable = [(path_token(f), redactor.text(r, [f])) for f, r in prepared.unreadable]
        skipped = [(path_token(f), redactor.text(r, [f])) for f, r in prepared.skipped]
    write_manifest(prepared.out_dir, manifest)
    return BuildReport(
        out_dir=prepared.out_dir,
        total=len(prepared.plans),
        ok=ok,
        failed=failed,
        unreadable=unreadable,
        quarantined=quarantined,
        filtered=filtered,
        private_files=private_files,
        computed=len(results),
        from_cache=sum(p.up_to_date for p in prepared.plans),
        skipped=skipped,
        seconds=seconds,
        manifest=manifest,
        accounting=accounting,
    )


def _resolve_shared_outputs(prepared: Prepared, results: dict[str, ItemResult]) -> None:
    """Instance items that wrote the same output path (one SOPInstanceUID in two files): keep one.

    The item with the smallest id keeps the path, whatever order the workers finished in;
    the others become ``duplicate`` (withheld, naming the kept item). When the file on disk
    is not the kept item's bytes (another wrote last), the kept item is written again.
    """
    owners: dict[str, list[str]] = {}
    outputs_of: dict[str, list[dict[str, Any]]] = {}
    for plan in prepared.plans:
        if plan.item.kind != "instance":
            continue
        item_id = plan.item.item_id
        if plan.up_to_date and plan.record.get("status", "ok") == "ok":
            outputs_of[item_id] = plan.record["outputs"]
        elif item_id in results and results[item_id].status == "ok":
            outputs_of[item_id] = results[item_id].outputs
        for out in outputs_of.get(item_id, []):
            owners.setdefault(out["path"], []).append(item_id)
    losers: dict[str, str] = {}
    for ids in owners.values():
        if len(ids) > 1:
            keep = min(ids)
            for other in ids:
                if other != keep:
                    losers[other] = keep
    if not losers:
        return
    plans = {plan.item.item_id: plan for plan in prepared.plans}
    for loser, keep in sorted(losers.items()):
        plan = plans[loser]
        results[loser] = ItemResult(loser, "duplicate", error=f"same SOPInstanceUID as item {keep}: not written twice")
        plan.write_outputs, plan.start = True, 0  # its record is not reused as "ok"
    from medflow.writers.atomic import sha256_file

    for keep in sorted(set(losers.values())):
        stale = [o for o in outputs_of[keep] if not (prepared.out_dir / o["path"]).is_file()
                 or sha256_file(prepared.out_dir / o["path"]) != o["sha256"]]
        if stale:
            from medflow.engine.run import run_item

            results[keep] = run_item(_task(prepared, plans[keep]))
            plans[keep].write_outputs, plans[keep].start = True, 0


#: Reasons of discovery for files that are not DICOM objects (not inputs of the accounting).
_NOT_AN_INPUT = ("not a dicom file", "hidden", "cannot list folder", "not a regular file")


def input_accounting(prepared: Prepared, manifest_items: list[dict[str, Any]]) -> dict[str, Any]:
    """Every DICOM file found in the source: written (its item is built) or withheld with the reason.

    ``inputs`` = ``written`` + ``len(withheld)``. Files that are not DICOM (or hidden) are not
    inputs; they stay listed in ``inputs_skipped``.
    """
    written = 0
    withheld: list[dict[str, str]] = []
    by_id = {plan.item.item_id: plan.item for plan in prepared.plans}
    for entry in manifest_items:
        item = by_id[entry["id"]]
        files = list(item.files) + [rel for rel, _ in item.broken_files]
        if entry["status"] == "ok":
            written += len(item.files)
            withheld += [{"file": rel, "reason": f"unreadable: {why}"} for rel, why in item.broken_files]
            continue
        label = {"quarantined": "quarantined", "filtered": "filtered", "duplicate": "duplicate"}.get(
            entry["status"], "failed")
        reason = f"{label}: {entry.get('error') or entry['status']}"
        withheld += [{"file": rel, "reason": reason} for rel in files]
    for rel, reason in prepared.unreadable:
        withheld.append({"file": rel, "reason": f"unreadable: {reason}"})
    for rel, reason in prepared.skipped:
        if not reason.lower().startswith(_NOT_AN_INPUT):
            withheld.append({"file": rel, "reason": f"not built by this recipe: {reason}"})
    return {"inputs": written + len(withheld), "written": written, "withheld": withheld}


def _item_paths(prepared: Prepared) -> dict[str, list[str]]:
    """Per item id, the relative paths it read or failed to read (what its errors can mention)."""
    return {
        item.item_id: list(item.files) + [rel for rel, _ in item.broken_files] for item in prepared.items
    }


def _per_item_writers(recipe: Any) -> list[Any]:
    return [w for w in recipe.outputs.writers if get_writer(w.kind).per_item]


def _task(prepared: Prepared, plan: ItemPlan) -> ItemTask:
    recipe = prepared.loaded.recipe
    return ItemTask(
        item=plan.item,
        links=plan.links,
        steps=list(recipe.steps),
        writers=_per_item_writers(recipe),
        output_key=plan.output_key,
        start=plan.start,
        reader_params=prepared.reader_params,
        out_dir=str(prepared.out_dir),
        cache_dir=str(prepared.cache.root),
        fold=recipe.engine.fold_pointwise,
        stream=recipe.engine.stream,
        expect=recipe.outputs.expect.model_dump(mode="json") if recipe.outputs.expect else None,
        dataset_stats=dict(prepared.dataset_stats),
    )


def _manifest_item(
    prepared: Prepared,
    plan: ItemPlan,
    status: str,
    outputs: list[dict[str, Any]],
    meta: dict[str, Any],
    error: str | None,
) -> dict[str, Any]:
    item = plan.item
    hashes = prepared.file_hashes[item.item_id]
    return {
        "id": item.item_id,
        "kind": item.kind,
        "modality": item.modality,
        "fingerprint": item.fingerprint,
        "files": [[rel, hashes[rel]] for rel in item.files],
        "steps": [
            {"name": link.name, "version": link.version, "params": link.params, "key": link.key}
            for link in plan.links
        ],
        "output_key": plan.output_key,
        "outputs": outputs,
        "status": status,
        "error": error,
        "meta": meta,
    }


def _write_dataset_writers(prepared: Prepared, manifest_items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the writers that combine items (e.g. npz shards), skipped when their inputs are unchanged."""
    written = []
    npy_files = [
        (entry["id"], prepared.out_dir / out["path"], out["sha256"])
        for entry in manifest_items
        if entry["status"] == "ok"
        for out in entry["outputs"]
        if out["path"].endswith(".npy")
    ]
    for params in prepared.loaded.recipe.outputs.writers:
        spec = get_writer(params.kind)
        if spec.per_item:
            continue
        key = keys.hash_json(
            {"kind": spec.kind, "version": spec.version, "params": params.model_dump(mode="json"),
             "inputs": [[item_id, sha] for item_id, _, sha in npy_files]}
        )
        record = prepared.cache.get_record(key)
        if record and all((prepared.out_dir / o["path"]).is_file() for o in record["outputs"]):
            written.extend(record["outputs"])
            continue
        files = spec.function([(item_id, path) for item_id, path, _ in npy_files], params, prepared.out_dir)
        outputs = [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in files]
        prepared.cache.put_record(key, {"outputs": outputs})
        written.extend(outputs)
    return written


def _split_skipped(root: Path, skipped: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Separate files that look like DICOM but cannot be read (failures) from files that are not ours to read."""
    unreadable, other = [], []
    for rel, reason in skipped:
        if reason.startswith("cannot read") or (_looks_like_dicom(root / rel) and not _is_benign(reason)):
            unreadable.append((rel, reason))
        else:
            other.append((rel, reason))
    return unreadable, other


def _is_benign(reason: str) -> bool:
    """Reasons that say "not an image for us" rather than "a broken file"."""
    reason = reason.lower()
    return any(word in reason for word in ("localizer", "no pixel", "dicomdir", "media directory", "excluded", "filter"))


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"
