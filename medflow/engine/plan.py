"""The plan: per item, the chain of (step, version, params) -> cache keys, and what to recompute and why.

No pixel is read here. The plan decides staleness by keys alone: an item whose
output record is in the cache (and whose output files are present) is up to date;
otherwise it resumes after the last cached checkpoint of its chain. Reasons are
found by comparing with the previous build's manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medflow.engine import keys
from medflow.engine.cache import Cache
from medflow.engine.fold import stored_key
from medflow.engine.spool import SpooledText
from medflow.hashing import ALGORITHM, file_digest, recorded_digest
from medflow.sources.base import ItemRef
from medflow.sources.fingerprint import FingerprintMemo
from medflow.steps.registry import get_step
from medflow.text_spool import TextSpool
from medflow.writers.registry import get_writer

READER_NAME = "dicom_read"
READER_VERSION = 1


@dataclass(frozen=True, slots=True)  # every item holds its chain while the build runs
class Link:
    """One link of an item's chain: the read (index 0) or a step."""

    name: str
    version: int
    params: dict[str, Any]
    key: str
    checkpoint: bool


@dataclass(slots=True)
class ItemPlan:
    """What the build does for one item.

    Attributes:
        links: the chain; ``links[0]`` is the read.
        output_key: key of the item's output record (final Sample + writers).
        start: index of the first link to compute (``len(links)``: none).
        write_outputs: the item's output files must be (re)written.
        reasons: why the item is (re)computed, for ``medflow plan``; empty when up to date.
        record_text: the cached output record's canonical JSON when up to date, kept on disk
            (see :attr:`record`).
        entered: (status, error, private tables) once the item's manifest entry is made before
            the record stage (:meth:`let_go_of_chain`), else None.
    """

    item: ItemRef
    links: list[Link]
    output_key: str
    start: int
    write_outputs: bool
    reasons: list[str] = field(default_factory=list)
    record_text: SpooledText | None = None
    entered: tuple[str, str | None, dict[str, Any]] | None = None

    @property
    def up_to_date(self) -> bool:
        return not self.write_outputs and self.start == len(self.links)

    def let_go_of_chain(self) -> None:
        """Drop the chain (~0.7 KB an item), once the manifest entry and the task that read it are made.

        ``up_to_date`` keeps its value (an item to build writes its outputs, an up-to-date one does not).
        """
        self.links, self.start = [], 0

    @property
    def record(self) -> dict[str, Any] | None:
        """The cached output record when up to date, parsed anew on each call.

        A build plans every item of the dataset before it runs one: the records' text waits in
        a temp file (~0.9 KB each; parsed, ~7 KB of Python objects each), the plans hold where.
        """
        return None if self.record_text is None else json.loads(self.record_text.read())


def needs_dataset_stats(params: Any) -> bool:
    """Does this step need statistics over the whole dataset (a first pass)?"""
    return bool(getattr(params, "needs_dataset_stats", lambda: False)())


@dataclass(frozen=True)
class ChainTemplate:
    """What the chains of every item of one recipe share: each link's name, version, params,
    checkpoint flag, and its key's template (:class:`medflow.engine.keys.KeyTemplate`).

    Made once per build (:func:`chain_template`): canonicalizing and serializing the same
    params for every item cost ~0.25 ms per item, a third of planning 10,000 tiny series.
    """

    links: tuple[tuple[str, int, dict[str, Any], bool, keys.KeyTemplate], ...]


def keeps_stored_values(steps: list[Any], cache_stored_values: bool | str) -> bool:
    """Is the read (the stored values) checkpointed for the recipe's ``steps``: unless
    ``engine.cache_stored_values`` is false, or when a first step needing dataset statistics
    reads them twice anyway. With 'auto' the streamed reader still leaves out the stored values it
    reads straight from native files (:attr:`medflow.engine.task.ItemTask.keep_native_stored`)."""
    return cache_stored_values is not False or (bool(steps) and needs_dataset_stats(steps[0]))


def chain_template(
    reader_params: dict[str, Any], steps: list[Any], dataset_stats: dict[int, Any] | None = None,
    keep_stored: bool = True,
) -> ChainTemplate:
    """The chain of the recipe's ``steps`` (params models) after the read (see :func:`item_links`).

    ``keep_stored``: checkpoint the read (:func:`keeps_stored_values`).
    """
    dataset_stats = dataset_stats or {}
    # Nothing before a de-identifying step is cached: those Samples carry the original headers.
    first_private = next((i + 1 for i, p in enumerate(steps) if p.deidentifies()), 0)
    links = [(READER_NAME, READER_VERSION, reader_params, first_private == 0 and keep_stored,
              keys.read_key_template(READER_NAME, READER_VERSION, reader_params))]
    for index, params in enumerate(steps):
        spec = get_step(params.step)
        canonical = params.canonical_params()
        if index in dataset_stats:
            canonical = {**canonical, "dataset_stats": dataset_stats[index]}
        last = index == len(steps) - 1
        before_stats = index + 1 < len(steps) and needs_dataset_stats(steps[index + 1])
        checkpoint = (spec.checkpoint or last or before_stats) and index + 1 >= first_private
        links.append((spec.name, spec.version, canonical, checkpoint,
                      keys.step_key_template(spec.name, spec.version, canonical)))
    return ChainTemplate(tuple(links))


def item_links(
    item: ItemRef,
    reader_params: dict[str, Any],
    steps: list[Any],
    dataset_stats: dict[int, Any] | None = None,
    template: ChainTemplate | None = None,
) -> list[Link]:
    """The chain of links of ``item`` for the recipe's ``steps`` (params models).

    ``dataset_stats`` maps a step's index to the dataset statistics it uses; they
    join that step's key (new items change the statistics, hence every output).
    The link before a dataset-statistics step is checkpointed: both passes need it.
    Links before a de-identifying step are never checkpointed (their headers are original).
    ``template``: :func:`chain_template` of the same arguments, made once for many items
    (the links' params dicts are then shared: read them, never change them).
    """
    template = template or chain_template(reader_params, steps, dataset_stats)
    links, key = [], item.fingerprint
    for name, version, params, checkpoint, key_template in template.links:
        key = key_template.key(key)
        links.append(Link(name, version, params, key, checkpoint))
    return links


def writer_specs(writers: list[Any]) -> list[dict[str, Any]]:
    """Canonical (kind, version, params) of the per-item writers."""
    out = []
    for params in writers:
        spec = get_writer(params.kind)
        if spec.per_item:
            out.append({"kind": spec.kind, "version": spec.version, "params": params.model_dump(mode="json")})
    return out


def plan_item(
    item: ItemRef,
    reader_params: dict[str, Any],
    steps: list[Any],
    writers: list[Any],
    cache: Cache,
    out_dir: Path,
    previous_entries: Mapping[str, dict[str, Any]],
    verify: bool = False,
    dataset_stats: dict[int, Any] | None = None,
    file_hashes: dict[str, str] | None = None,
    outputs_memo: FingerprintMemo | None = None,
    previous_algorithm: str = ALGORITHM,
    template: ChainTemplate | None = None,
    output_template: keys.KeyTemplate | None = None,
    *,
    records: TextSpool,
) -> ItemPlan:
    """Plan one item against the cache and, for the reasons, its previous manifest entry.

    ``previous_entries``: the previous manifest's entries by item id; the item's is read only
    when the item is built again (its reasons) or is an instance item (its record).

    ``file_hashes`` (relative path -> content digest of the item's files) lets the reasons name
    exactly which input files changed, appeared or disappeared; ``previous_algorithm`` is the
    algorithm of the previous manifest's input digests (sha256 in a build of an older medflow:
    not comparable). ``outputs_memo`` knows the digests of the outputs as they were written (see
    :func:`_missing_outputs`); ``verify`` is the memo's. ``template``: the recipe's
    :func:`chain_template`, made once for every item; ``output_template``: the
    :func:`medflow.engine.keys.output_key_template` of ``writers``, likewise. ``records``: where an
    up-to-date plan keeps its record's text.
    """
    links = item_links(item, reader_params, steps, dataset_stats, template)
    if output_template is not None:
        out_key = output_template.key(links[-1].key)
    else:
        out_key = keys.output_key(links[-1].key, writer_specs(writers))
    if item.kind == "instance":
        record = _manifest_record(previous_entries.get(item.item_id), out_key)
        found = None if record is None else (record, json.dumps(record, sort_keys=True, separators=(",", ":")).encode())
    else:
        found = cache.get_record_and_text(out_key)
    missing = _missing_outputs(found[0], out_dir, outputs_memo) if found else None
    if found is not None and not missing:
        return ItemPlan(item, links, out_key, len(links), False, [], SpooledText.keep(records, found[1]))

    start = resume_index(cache, links)
    previous = previous_entries.get(item.item_id)
    reasons = _reasons(item, links, previous, missing, file_hashes or {}, previous_algorithm)
    return ItemPlan(item, links, out_key, start, True, reasons, None)


def _manifest_record(previous: dict[str, Any] | None, out_key: str) -> dict[str, Any] | None:
    """An instance item's record: its previous manifest entry, when built with the same output key.

    Instance items (chains that never read pixels) are not cached: their originals carry
    identity and there is no intermediate worth keeping. Withheld outcomes (quarantined,
    filtered) are records too: the same file and recipe give the same decision.
    """
    if previous is None or previous.get("output_key") != out_key:
        return None
    if previous.get("status") not in ("ok", "quarantined", "filtered"):
        return None
    return {key: previous.get(key) for key in ("outputs", "meta", "status", "error")} | {
        "outputs": previous.get("outputs") or [], "meta": previous.get("meta") or {}
    }


def resume_index(cache: Cache, links: list[Link]) -> int:
    """Index of the first link to compute: after the last checkpoint of the chain in the cache.

    1 when only the read's stored values are cached (no DICOM decoding needed), 0 when nothing is.
    """
    for index in range(len(links) - 1, -1, -1):
        if links[index].checkpoint and cache.has(links[index].key):
            return index + 1
    return 1 if cache.has(stored_key(links[0].key)) else 0


def _missing_outputs(record: dict[str, Any], out_dir: Path, memo: FingerprintMemo | None) -> list[str]:
    """Outputs of ``record`` that are gone or whose bytes do not hash to the recorded digest.

    The digest of an output comes from ``memo``: the hash of the bytes as they were written
    while the file keeps its size and mtime, a fresh hash of the file otherwise (and always
    with ``--verify``). An entry of an older medflow (``"sha256"``) is checked with sha256, one
    with no digest is missing. A record is never believed on its own word: a damaged record,
    or an output changed in place, makes the item be built again.
    """
    missing = []
    for written in record.get("outputs", []):
        path = out_dir / written["path"]
        try:
            stat = path.stat()
        except OSError:
            missing.append(written["path"])
            continue
        if stat.st_size != written.get("size"):
            missing.append(written["path"])
            continue
        recorded = recorded_digest(written)
        algorithm = recorded[0] if recorded else ALGORITHM
        try:
            digest = memo.digest(path) if memo is not None and algorithm == ALGORITHM else file_digest(path, algorithm)
        except OSError:
            digest = None
        if memo is not None:
            memo.forget([path])  # asked once: kept, it would be held to the build's end
        if recorded is None or digest != recorded[1]:
            missing.append(written["path"])
    return missing


def _reasons(
    item: ItemRef, links: list[Link], previous: dict[str, Any] | None, missing: list[str] | None,
    file_hashes: dict[str, str], previous_algorithm: str = ALGORITHM,
) -> list[str]:
    if missing:
        return [f"missing or changed output: {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "")]
    if previous is None:
        return ["new input (not in the previous build)"]
    if previous_algorithm != ALGORITHM:  # its fingerprints and cache keys were made of other digests
        return [f"the previous build recorded {previous_algorithm} digests (an older medflow); "
                f"this one records {ALGORITHM}"]
    if previous.get("fingerprint") != item.fingerprint:
        return [changed_inputs(item, dict(previous.get("files", [])), file_hashes)]
    old_steps = previous.get("steps", [])
    for index, link in enumerate(links):
        if index >= len(old_steps):
            return [f"step {index} '{link.name}' added"]
        old = old_steps[index]
        if old["name"] != link.name:
            return [f"step {index} changed from '{old['name']}' to '{link.name}'"]
        if old["version"] != link.version:
            return [f"changed version of step {index} '{link.name}' ({old['version']} -> {link.version})"]
        if old["params"] != link.params:
            diffs = _param_diffs(old["params"], link.params)
            return [f"changed parameter of step {index} '{link.name}': {diffs}"]
    if len(old_steps) > len(links):
        return [f"steps removed after step {len(links) - 1}"]
    return ["outputs changed or not in the cache"]


def changed_inputs(item: ItemRef, old: dict[str, str], new: dict[str, str]) -> str:
    """``changed input: 1 changed, 1 added, 0 removed (B/B_003.dcm, B/B_009.dcm)``: exact counts, first names.

    ``old`` is the previous manifest's ``{path: digest}`` (paths as ``<file:...>`` tokens when
    that build de-identified: compared by token then, and named by token).
    """
    from medflow.engine.privacy import path_token

    tokens = bool(old) and all(name.startswith("<file:") for name in old)
    current = {(path_token(rel) if tokens else rel): new.get(rel) for rel in item.files}
    changed = sorted(name for name, sha in current.items() if name in old and old[name] != sha)
    added = sorted(name for name in current if name not in old)
    removed = sorted(name for name in old if name not in current)
    named = (changed + added + removed)[:3]
    more = " ..." if len(changed) + len(added) + len(removed) > 3 else ""
    return (f"changed input: {len(changed)} changed, {len(added)} added, {len(removed)} removed "
            f"({', '.join(named)}{more})")


def _param_diffs(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            parts.append(f"{name} {old.get(name)!r} -> {new.get(name)!r}")
    return ", ".join(parts)
