"""The record of a build: one manifest entry per item, the input accounting, the dataset writers.

Turns the plan and the workers' small records into what the manifest says; nothing here
computes pixels or decides staleness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medflow.engine import keys
from medflow.engine.manifest import MANIFEST_VERSION, environment
from medflow.engine.plan import ItemPlan, _missing_outputs
from medflow.engine.prepare import Prepared, let_go_of_planned
from medflow.engine.provenance import recipe_provenance
from medflow.engine.spool import EntrySpool
from medflow.engine.task import ItemResult
from medflow.hashing import ALGORITHM
from medflow.sources.skips import skip_kind
from medflow.writers.records import DatasetRecords
from medflow.writers.registry import get_writer


def manifest_item(
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


def enter_result(prepared: Prepared, plan: ItemPlan, result: ItemResult, entries: EntrySpool) -> ItemResult:
    """Put the manifest entry of a worker's ``result`` into ``entries``; returns what the build keeps of it.

    The entry is made as the result comes, so the parent never holds every item's ``meta`` (the
    larger part of an entry); the result kept has none.
    """
    entries.put(manifest_item(prepared, plan, result.status, result.outputs, result.meta, result.error))
    let_go_of_planned(prepared, plan)
    return dataclasses.replace(result, meta={})


def enter_up_to_date(prepared: Prepared, plan: ItemPlan) -> None:
    """Put the manifest entry of an up-to-date ``plan`` into ``prepared.entries`` as it is planned.

    The plan then keeps the entry's status, error and private tables (what :func:`collect`
    reads), not its chain nor its files' digests. An instance item is left to the record stage:
    :func:`~medflow.engine.outcomes.resolve_shared_outputs` may still change its outcome.
    """
    if plan.item.kind == "instance":
        return
    record = plan.record
    status, error = record.get("status", "ok"), record.get("error")
    prepared.entries.put(manifest_item(prepared, plan, status, record["outputs"], record["meta"], error))
    plan.entered = (status, error, record.get("private_tables", {}))
    let_go_of_planned(prepared, plan)


def input_accounting(prepared: Prepared, statuses: Iterable[tuple[str, str, str | None]]) -> dict[str, Any]:
    """Every DICOM file found in the source: written (its item is built) or withheld with the reason.

    ``statuses``: (item id, status, error) of every item (:attr:`Outcome.statuses`).
    ``inputs`` = ``written`` + ``len(withheld)``. Files that are not DICOM (or hidden) are not
    inputs; they stay listed in ``inputs_skipped``.
    """
    written = 0
    withheld: list[dict[str, str]] = []
    by_id = {plan.item.item_id: plan.item for plan in prepared.plans}
    for item_id, status, error in statuses:
        item = by_id[item_id]
        files = item.all_files
        if status == "ok":
            written += len(item.files)
            withheld += [{"file": rel, "reason": f"unreadable: {why}"} for rel, why in item.broken_files]
            continue
        label = {"quarantined": "quarantined", "filtered": "filtered", "duplicate": "duplicate"}.get(status, "failed")
        reason = f"{label}: {error or status}"
        withheld += [{"file": rel, "reason": reason} for rel in files]
    for rel, reason in prepared.unreadable:
        withheld.append({"file": rel, "reason": f"unreadable: {reason}"})
    for rel, reason in prepared.skipped:
        if skip_kind(reason) != "not_input":
            withheld.append({"file": rel, "reason": f"not built by this recipe: {reason}"})
    return {"inputs": written + len(withheld), "written": written, "withheld": withheld}


def item_paths(prepared: Prepared) -> dict[str, list[str]]:
    """Per item id, the relative paths it read or failed to read (what its errors can mention)."""
    return {item.item_id: item.all_files for item in prepared.items}


def run_dataset_writers(prepared: Prepared, manifest_items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the writers that combine items (e.g. npz shards), skipped when their inputs are unchanged.

    A writer that reads records gets every entry in memory (:class:`DatasetRecords`); the others
    get the ``.npy`` files of the built items.
    """
    written = []
    npy_files = None  # a Path per built item: made only for a writer that reads the .npy files
    for params in prepared.loaded.recipe.outputs.writers:
        spec = get_writer(params.kind)
        if spec.per_item and spec.finalize is None:
            continue
        reads_records = spec.per_item or getattr(spec.params_model, "dataset_input", "npy") == "records"
        records = DatasetRecords.of(list(manifest_items), prepared.facts) if reads_records else None
        if not reads_records and npy_files is None:
            npy_files = _npy_files(prepared, manifest_items)
        key = keys.hash_json(
            {"kind": spec.kind, "version": spec.version, "params": params.model_dump(mode="json"),
             "inputs": records.to_json() if records else [[item_id, sha] for item_id, _, sha in npy_files]}
        )
        record = prepared.cache.get_record(key)
        # present *and* the recorded bytes: another build may have rewritten the file since (e.g. a seed and back)
        if record and not _missing_outputs(record, prepared.out_dir, prepared.memo):
            written.extend(record["outputs"])
            continue
        inputs = records if records else [(item_id, path) for item_id, path, _ in npy_files]
        files = (spec.finalize if spec.per_item else spec.function)(inputs, params, prepared.out_dir)
        outputs = [f.record() for f in files]
        prepared.cache.put_record(key, {"outputs": outputs})
        written.extend(outputs)
    return written


def _npy_files(prepared: Prepared, manifest_items: Sequence[dict[str, Any]]) -> list[tuple[str, Path, str | None]]:
    """``(item id, path, digest)`` of every ``.npy`` output of the built items (the digest None for an older medflow's)."""
    return [
        (entry["id"], prepared.out_dir / out["path"], out.get(ALGORITHM))
        for entry in manifest_items
        if entry["status"] == "ok"
        for out in entry["outputs"]
        if out["path"].endswith(".npy")
    ]


@dataclass
class Outcome:
    """What became of every item: its manifest entry (in plan order) and the lists the summary shows."""

    entries: EntrySpool
    statuses: list[tuple[str, str, str | None]] = field(default_factory=list)  # (item id, status, error), plan order
    ok: int = 0
    filtered_files: int = 0  # input files of the items the recipe's filter left out
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item id, one-line reason)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    filtered: list[tuple[str, str]] = field(default_factory=list)  # filtered or duplicate: withheld, not failed
    private_tables: list[dict[str, list[list[str]]]] = field(default_factory=list)


def collect(prepared: Prepared, results: dict[str, ItemResult], entries: EntrySpool) -> Outcome:
    """Each item's status, and its manifest entry in ``entries``: made here from its record when up to
    date or for an item never run; a run item's was put by :func:`enter_result` when its result came."""
    outcome = Outcome(entries)
    for plan in prepared.plans:
        item_id = plan.item.item_id
        if plan.entered is not None:  # up to date, entered as it was planned
            status, error, private = plan.entered
        elif plan.up_to_date:
            record = plan.record
            status, error, private = record.get("status", "ok"), record.get("error"), record.get("private_tables", {})
            entries.put(manifest_item(prepared, plan, status, record["outputs"], record["meta"], error))
        elif item_id in results:
            result = results[item_id]
            status, error, private = result.status, result.error, result.private_tables
        else:
            status, error, private = "not built", "stopped after an earlier failure", {}
            entries.put(manifest_item(prepared, plan, status, [], {}, error))
        outcome.statuses.append((item_id, status, error))
        if status == "filtered":
            outcome.filtered_files += len(plan.item.files)
        if status == "ok":
            outcome.ok += 1
            outcome.private_tables.append(private)
        elif status == "quarantined":
            outcome.quarantined.append((item_id, error or "quarantined"))
        elif status in ("filtered", "duplicate"):
            outcome.filtered.append((item_id, error or status))
        elif status == "not built":
            outcome.failed.append((item_id, "not built: stopped after an earlier failure"))
        else:
            outcome.failed.append((item_id, error or "failed"))
    if not prepared.plans and not prepared.unreadable:
        looked = f"{len(prepared.skipped)} other file(s) looked at" if prepared.skipped else "it holds no file"
        outcome.failed.append(("source", f"no DICOM file found in {prepared.source_root} ({looked})"))
    return outcome


def assemble_manifest(
    prepared: Prepared, outcome: Outcome, results: dict[str, ItemResult], dataset_outputs: list[dict[str, Any]],
    accounting: dict[str, Any], notes: list[str], run: dict[str, Any],
) -> dict[str, Any]:
    """The build's manifest (a de-identifying build's input paths are not yet redacted here); ``run`` holds
    what varies per run, :func:`~medflow.engine.provenance.run_provenance` (the git state) included."""
    recipe = prepared.loaded.recipe
    return {
        "manifest_version": MANIFEST_VERSION,
        "environment": environment(prepared.cache.root),
        "recipe": {
            "name": recipe.name,
            "hash": keys.hash_json(prepared.loaded.resolved),
            "resolved": prepared.loaded.resolved,
            **recipe_provenance(prepared.loaded),  # extends chain with hashes (git state: under run)
        },
        **({"splits": prepared.facts.splits} if prepared.facts and prepared.facts.splits else {}),
        "cache_format": keys.CACHE_FORMAT_VERSION,
        "items": outcome.entries,
        "dataset_outputs": dataset_outputs,
        "dataset_stats": [
            {"step_index": index + 1, "step": recipe.steps[index].step, "stats": stats}
            for index, stats in sorted(prepared.dataset_stats.items())
        ],
        "notes": notes,
        "inputs_skipped": [{"file": f, "reason": r} for f, r in prepared.skipped],
        "inputs_unreadable": [{"file": f, "reason": r} for f, r in prepared.unreadable],
        "accounting": accounting,
        "summary": {
            "items": len(prepared.plans),
            "ok": outcome.ok,
            "failed": len(outcome.failed),
            "quarantined": len(outcome.quarantined),
            "filtered": len(outcome.filtered),
            "unreadable_files": len(prepared.unreadable),
            # four words: filtered (the recipe's filter left it out), skipped (not DICOM, hidden, no
            # pixels), unreadable (cannot be read), withheld (a DICOM input not written, with its reason)
            "filtered_files": sum(skip_kind(reason) == "filtered" for _, reason in prepared.skipped)
            + outcome.filtered_files,
            "skipped_files": sum(skip_kind(reason) != "filtered" for _, reason in prepared.skipped),
            "input_files": accounting["inputs"],
            "input_files_written": accounting["written"],
            "input_files_withheld": len(accounting["withheld"]),
        },
        "quarantined": [{"id": item_id, "reason": reason} for item_id, reason in outcome.quarantined],
        "run": {
            **run,  # with run_provenance: git commit and dirty state, per checkout, not per recipe
            "computed": {item_id: results[item_id].computed for item_id in sorted(results)},
            "from_cache": sorted(p.item.item_id for p in prepared.plans if p.up_to_date),
        },
    }
