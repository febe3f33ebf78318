"""Everything a build knows before any pixel is read: secrets, items, fingerprints, the plan.

``prepare`` is shared by ``medflow run``, ``plan``, ``--dry-run`` and ``preview``; it checks a
de-identifying recipe's key first, discovers the items (series, or one item per file for chains
that never read pixels), fingerprints them and plans each against the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medflow.engine import keys
from medflow.engine.cache import Cache
from medflow.engine.manifest import read_previous
from medflow.engine.plan import (
    ItemPlan,
    chain_template,
    item_links,
    keeps_stored_values,
    needs_dataset_stats,
    plan_item,
    writer_specs,
)
from medflow.engine.privacy import keyed_item_id, recipe_secret
from medflow.engine.spool import EntrySpool
from medflow.engine.task import ItemTask
from medflow.errors import InputError
from medflow.hashing import ALGORITHM, manifest_input_algorithm
from medflow.recipe.loader import LoadedRecipe, resolve_path
from medflow.recipe.model import SampleSource, wants_dataset_facts
from medflow.sources.base import ItemRef
from medflow.sources.discovery_snapshot import FOLDER as SNAPSHOT_FOLDER
from medflow.sources.fingerprint import FingerprintMemo
from medflow.sources.skips import skip_kind
from medflow.text_spool import TextSpool
from medflow.writers.registry import get_writer

if TYPE_CHECKING:  # imported when a recipe wants the dataset's facts (see prepare)
    from medflow.splits import DatasetFacts


@dataclass
class Prepared:
    """Everything known before any pixel is read."""

    loaded: LoadedRecipe
    out_dir: Path
    cache: Cache
    source_root: Path
    items: list[ItemRef]
    file_hashes: dict[str, dict[str, str]]  # item id -> {relative path: content digest}
    skipped: list[tuple[str, str]]
    unreadable: list[tuple[str, str]]
    plans: list[ItemPlan]
    reader_params: dict[str, Any]
    dataset_stats: dict[int, Any] = field(default_factory=dict)  # step index -> statistics
    deidentifies: bool = False  # the recipe de-identifies: ids keyed, paths redacted, nothing identifying cached
    memo: FingerprintMemo | None = None  # digests of inputs, and of outputs as they were written
    facts: DatasetFacts | None = None  # patients, joined tables, splits (medflow.splits); None if unused
    records: TextSpool | None = None  # the up-to-date plans' cached records, as text (plan_all)
    entries: EntrySpool | None = None  # the manifest's item entries, as they are made (a build)


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
    specs = [get_writer(w.kind) for w in writers]
    # dataset-level writers that read only the items' records (an index) do not need pixels either
    return any(spec.per_item for spec in specs) and not any(spec.reads_pixels for spec in specs)


def prepare(
    loaded: LoadedRecipe, *, verify: bool = False, record: bool = True, workers: int = 1,
    enter_up_to_date: Callable[[Prepared, ItemPlan], None] | None = None,
) -> Prepared:
    """Check secrets, discover the items, fingerprint them and plan every item against the cache.

    ``record=False`` (``plan``, ``--dry-run``, ``preview``) keeps the fingerprints in memory:
    those commands write nothing of their own (the embedded sample is still materialized).
    ``enter_up_to_date`` (a build): the manifest entries go to :attr:`Prepared.entries`, and an
    item found up to date is entered as it is planned (the plans need not hold what its entry
    is made of), unless dataset statistics are to be computed first (the items are planned again).
    ``workers`` > 1: many new files are read on that many worker processes
    (:mod:`medflow.sources.prescan`), the ones the build's items then run on.

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
    fetched = None  # a dicomweb source's fetch into the cache (medflow.sources.dicomweb)
    if isinstance(source, SampleSource):
        from medflow.sources.sample_data import materialize_sample

        root = materialize_sample(source.sample, cache.root / "samples")
        reader_params: dict[str, Any] = {"duplicates": "first"}
    elif hasattr(source, "dicomweb"):  # a PACS: fetched into the cache, then a folder like any other
        from medflow.sources.dicomweb import fetch

        fetched = fetch(source.dicomweb, cache.root / "dicomweb", verify=verify, dry_run=not record)
        root = fetched.root
        reader_params = {"duplicates": source.duplicates}
        if not record:  # plan / --dry-run / preview: say what a run would fetch
            print("\n".join(fetched.plan_lines()))
    else:
        root = resolve_path(loaded, source.dicom)
        if not root.is_dir():
            raise InputError(str(root), "source folder does not exist")
        reader_params = {"duplicates": source.duplicates}
    if reads_no_pixels(recipe):
        from medflow.sources.instances import discover_instances

        discovery = discover_instances(root, source.filter, memo, _chunk_map(workers))
        reader_params = {"instances": True, "filter": _instance_filter(source.filter)}
    else:
        # a keyed recipe's memo keeps nothing identifying, nor does it keep snapshots; --verify looks again
        snapshots = cache.root / SNAPSHOT_FOLDER if secret is None and not verify else None
        discovery = discover_dicom(
            root, source.filter, memo, getattr(source, "mismatched_size", "fail"), _chunk_map(workers),
            snapshots=snapshots, keep_snapshot=record,
        )
    if fetched is not None:
        discovery = fetched.apply(discovery)  # instances not fetched fail their items
    if isinstance(source, SampleSource):
        from medflow.sources.sample_data import MARKER_NAME

        discovery.skipped = [(rel, reason) for rel, reason in discovery.skipped if rel != MARKER_NAME]
    if getattr(source, "labels", None) is not None and "instances" not in reader_params:
        from medflow.sources.pairing import label_options, pair_labels  # labels: SEG, RTSTRUCT, masks

        discovery = pair_labels(discovery, root, source, memo, lambda value: resolve_path(loaded, value))
        reader_params["labels"] = label_options(source.labels)
    if secret is not None:
        discovery.items = sorted(
            (dataclasses.replace(item, item_id=keyed_item_id(item.item_id, secret)) for item in discovery.items),
            key=lambda item: item.item_id,
        )
    base = os.fspath(root)  # str paths, as discovery asked the memo (pathlib parsing cost ~10 us a file)
    known = getattr(discovery, "digests", None) or {}  # from a snapshot, else the memo's
    file_hashes = {
        item.item_id: {rel: known.get(rel) or memo.digest(os.path.join(base, rel)) for rel in item.files}
        for item in discovery.items
    }
    if record:
        memo.save()
    unreadable, skipped = _split_skipped(root, discovery.skipped)

    prepared = Prepared(
        loaded, out_dir, cache, root, discovery.items, file_hashes, skipped, unreadable, [], reader_params
    )
    prepared.deidentifies = secret is not None
    prepared.memo = memo
    prepared.dataset_stats = cached_dataset_stats(prepared)
    if wants_dataset_facts(loaded.recipe):  # splits from the plan, no pixel read
        from medflow.splits import plan_facts

        prepared.facts = plan_facts(loaded, prepared.items, memo, secret)
    if enter_up_to_date is not None:
        prepared.entries = EntrySpool(out_dir, [item.item_id for item in prepared.items])
    elif not record:  # plan, --dry-run, preview: an up-to-date item is only counted
        enter_up_to_date = let_go_of_planned
    plan_all(prepared, verify, None if dataset_stats_missing(prepared) else enter_up_to_date)
    return prepared


def let_go_of_planned(prepared: Prepared, plan: ItemPlan) -> None:
    """Let go of what only ``plan``'s manifest entry and task read (its chain, its files' digests:
    ~1 KB an item), once they are made or not needed. Not for an instance item, which
    :func:`~medflow.engine.outcomes.resolve_shared_outputs` may run again."""
    if plan.item.kind != "instance":
        prepared.file_hashes.pop(plan.item.item_id, None)
        plan.let_go_of_chain()


def dataset_stats_missing(prepared: Prepared) -> bool:
    """Does a step need dataset statistics the cache does not hold (a first pass, then a second plan)?"""
    steps = prepared.loaded.recipe.steps
    return any(needs_dataset_stats(p) and i not in prepared.dataset_stats for i, p in enumerate(steps))


def _chunk_map(workers: int):
    """Discovery's worker processes (:func:`medflow.engine.execute.map_on_workers`), or None for one worker."""
    if workers <= 1:
        return None
    from medflow.engine.execute import map_on_workers

    return lambda function, chunks: map_on_workers(function, chunks, workers)


def _instance_filter(flt: Any) -> dict[str, Any]:
    """The series-level filter as the per-instance task applies it (joins the read's cache key)."""
    return {
        "modality": flt.modality,
        "series_description": flt.series_description,
        "exclude_localizers_explicit": bool(flt.exclude_localizers and "exclude_localizers" in flt.model_fields_set),
    }


def plan_all(prepared: Prepared, verify: bool, enter_up_to_date: Callable[[Prepared, ItemPlan], None] | None = None
             ) -> None:
    """Plan every item (``prepared.plans``, in the items' order); each up-to-date plan is passed to
    ``enter_up_to_date`` as soon as it is made."""
    recipe = prepared.loaded.recipe
    steps = list(recipe.steps)
    template = chain_template(prepared.reader_params, steps, prepared.dataset_stats,
                              keep_stored=keeps_stored_values(steps, recipe.engine.cache_stored_values))
    previous = read_previous(prepared.out_dir)
    algorithm = manifest_input_algorithm(previous.head) if previous else ALGORITHM
    output_templates: dict[str | None, keys.KeyTemplate] = {}  # an item's writers depend on its split only

    def writers_of(item_id: str) -> tuple[list[Any], keys.KeyTemplate]:
        writers, split = item_writers(prepared, item_id), item_split(prepared, item_id)
        if split not in output_templates:  # item_writers gives the same writers for the same split
            output_templates[split] = keys.output_key_template(writer_specs(writers))
        return writers, output_templates[split]

    # In the cache's folder (the records came from there), else the system's (a read-only cache: `plan`)
    cache_root = prepared.cache.root
    prepared.records = TextSpool(cache_root if os.access(cache_root, os.W_OK) else None, "records")
    base = os.fspath(prepared.source_root)
    with previous or contextlib.nullcontext():
        prepared.plans = []
        for item in prepared.items:
            writers, output_template = writers_of(item.item_id)
            plan = plan_item(
                item, prepared.reader_params, steps, writers, prepared.cache, prepared.out_dir,
                previous.entries if previous else {}, verify, prepared.dataset_stats,
                prepared.file_hashes[item.item_id], prepared.memo, algorithm, template, output_template,
                records=prepared.records)
            if plan.up_to_date and prepared.memo is not None:  # no task will read its files
                prepared.memo.forget(os.path.join(base, rel) for rel in item.files)
            if plan.up_to_date and enter_up_to_date is not None:
                enter_up_to_date(prepared, plan)
            prepared.plans.append(plan)


def stats_inputs_key(prepared: Prepared, index: int, stats: dict[int, Any]) -> str:
    """Identifies a dataset statistic: the step's stats key and every item's key entering that step."""
    steps = list(prepared.loaded.recipe.steps)
    template = chain_template(prepared.reader_params, steps[:index], stats)
    entering = sorted(
        item_links(item, prepared.reader_params, steps[:index], stats, template)[-1].key for item in prepared.items
    )
    return keys.hash_json({"stats_key": steps[index].stats_key(), "step_index": index, "inputs": entering})


def cached_dataset_stats(prepared: Prepared) -> dict[int, Any]:
    """Dataset statistics already in the cache for exactly these items (a first pass is not needed)."""
    stats: dict[int, Any] = {}
    for index, params in enumerate(prepared.loaded.recipe.steps):
        if needs_dataset_stats(params):
            record = prepared.cache.get_record(stats_inputs_key(prepared, index, stats))
            if record is None:
                break  # later statistics depend on this one
            stats[index] = record["stats"]
    return stats


def per_item_writers(recipe: Any) -> list[Any]:
    return [w for w in recipe.outputs.writers if get_writer(w.kind).per_item]


def item_split(prepared: Prepared, item_id: str) -> str | None:
    """The item's split (recipe's ``splits:``), ``None`` without splits."""
    splits = prepared.facts.splits if prepared.facts is not None else None
    return (splits or {}).get("items", {}).get(item_id)


def item_writers(prepared: Prepared, item_id: str) -> list[Any]:
    """The per-item writers for one item: a writer whose outputs depend on the item's split (params with
    ``for_split``, e.g. nnunet's imagesTs) gets a copy for that split. Only the writers' params (hence
    the item's output key) can see it: the split joins no step's cache key."""
    writers = per_item_writers(prepared.loaded.recipe)
    split = item_split(prepared, item_id)
    if split is None:
        return writers
    return [w.for_split(split) if hasattr(w, "for_split") else w for w in writers]


class PlannedTasks(Sequence[ItemTask]):
    """The tasks of ``plans``, each made when asked for: a build of many items never holds them all.

    A task carries its files' reading facts (~0.5 KB a file) and its own lists of steps and
    writers; the executors take their tasks one after another (joblib dispatches a few ahead).
    """

    def __init__(self, prepared: Prepared, plans: Sequence[ItemPlan]):
        self._prepared, self._plans = prepared, plans

    def __len__(self) -> int:
        return len(self._plans)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [make_task(self._prepared, plan) for plan in self._plans[index]]
        return make_task(self._prepared, self._plans[index])


def make_task(prepared: Prepared, plan: ItemPlan) -> ItemTask:
    recipe = prepared.loaded.recipe
    return ItemTask(
        item=plan.item,
        links=plan.links,
        steps=list(recipe.steps),
        writers=item_writers(prepared, plan.item.item_id),
        output_key=plan.output_key,
        start=plan.start,
        reader_params=prepared.reader_params,
        out_dir=str(prepared.out_dir),
        cache_dir=str(prepared.cache.root),
        fold=recipe.engine.fold_pointwise,
        stream=recipe.engine.stream,
        expect=recipe.outputs.expect.model_dump(mode="json") if recipe.outputs.expect else None,
        dataset_stats=dict(prepared.dataset_stats),
        split=item_split(prepared, plan.item.item_id),
        read_facts=_read_facts(prepared, plan.item),
        keep_native_stored=recipe.engine.cache_stored_values is True,
    )


def _read_facts(prepared: Prepared, item: ItemRef) -> tuple[str, ...] | None:
    """Discovery's reading facts of the item's files (the reader then parses no header), or None.

    As the memo's JSON texts, parsed when the item runs (parsed, ~1.5 KB a file). The memo then
    lets go of what it looked up of the files: the build asks no more about them.
    """
    if item.kind != "series" or prepared.memo is None or "instances" in prepared.reader_params:
        return None
    from medflow.sources.discovery import read_facts_text_of

    paths = [os.path.join(item.root, rel) for rel in item.files]
    try:
        facts = tuple(read_facts_text_of(path, prepared.memo) for path in paths)
    finally:
        prepared.memo.forget(paths)
    return None if None in facts else facts


def _split_skipped(root: Path, skipped: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Separate files that look like DICOM but cannot be read (failures) from files that are not ours to read.

    A file that cannot even be opened is unreadable; a "problem" reason (see
    :func:`~medflow.sources.skips.skip_kind`) or "not a DICOM file" is unreadable when the file
    carries the DICM marker (a DICOM file that does not parse), a skip otherwise.
    """
    unreadable, other = [], []
    for rel, reason in skipped:
        kind = skip_kind(reason)
        suspect = kind == "problem" or reason.lower().startswith("not a dicom file")
        if reason.startswith("cannot read") or (suspect and _looks_like_dicom(root / rel)):
            unreadable.append((rel, reason))
        else:
            other.append((rel, reason))
    return unreadable, other


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"

