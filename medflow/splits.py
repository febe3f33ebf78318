"""Who each item belongs to, a user's table joined to it, and reproducible patient-level splits.

Everything here is known before any pixel is read: the patient, study and series keys come
from one header per item (memoized while the file is unchanged), so splits are computed
from the plan, recorded in the manifest and the index, and join no item's cache key.

Keys as recorded (manifest, index): the original values, except in a de-identifying recipe,
where they are the keyed pseudonyms the ``anonymize`` step writes (PatientID ``MF-...``,
UIDs ``2.25.<HMAC>``; AccessionNumber, which the Basic Profile empties, a keyed ``AN-`` hash).
Originals are used in memory only, to join the user's table, whose key column is then
written mapped the same way.

Split rule (``splits:`` in the recipe): the groups (patients by default) of each stratum are
ordered by ``sha256(seed, group key)``; ``ratios`` cut that order by largest remainder,
``folds`` deal it round robin (continuing across strata). Same seed, same items -> same splits,
on any machine or worker count. A user's own split (``splits.column`` of the table) is kept and
checked: a patient in two splits is leakage (:func:`check_leakage`).
"""

from __future__ import annotations

import csv
import hashlib
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medflow.errors import InputError
from medflow.recipe.model import SplitsSpec, wants_dataset_facts  # the recipe's ``splits:`` section

JOIN_COLUMNS = ("PatientID", "AccessionNumber", "StudyInstanceUID")
_MEMO_NAME = "subject-keys-v1"
_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber", "EchoNumbers",
         "SeriesDescription", "Modality")


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Subject:
    """An item's keys: ``recorded`` may be written (pseudonyms when de-identifying); ``original`` never is."""

    recorded: dict[str, str]
    original: dict[str, str] = field(repr=False)


def _header_facts(path: Path) -> dict[str, str]:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS), force=True)
    facts = {}
    for tag in _TAGS:
        value = ds.get(tag)
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            value = "\\".join(str(v) for v in value)
        facts[tag] = str(value if value is not None else "").strip()
    return facts


def read_subjects(items: list[Any], memo: Any = None, secret: bytes | None = None) -> dict[str, Subject]:
    """Each item's patient, study, series and accession keys, from its first file's header.

    Args:
        items: :class:`~medflow.sources.base.ItemRef` list.
        memo: a :class:`~medflow.sources.fingerprint.FingerprintMemo` (it keeps no value when
            built with a secret).
        secret: the de-identification key of a de-identifying recipe: recorded keys become its pseudonyms.

    Returns:
        item id -> :class:`Subject` (recorded keys: ``patient``, ``study``, ``series``,
        ``accession``, ``echo``, ``description``; ``description`` is empty when de-identifying).
    """
    subjects = {}
    for item in items:
        facts: dict[str, str] = {}
        if item.files:
            path = Path(item.root) / item.files[0]
            facts = (memo.get_extra(path, _MEMO_NAME) if memo is not None else None) or {}
            if not facts:
                try:
                    facts = _header_facts(path)
                except Exception:  # noqa: BLE001 - the item itself reports an unreadable file
                    facts = {}
                if memo is not None and facts:
                    memo.set_extra(path, _MEMO_NAME, facts)
        original = {
            "patient": facts.get("PatientID", ""), "study": facts.get("StudyInstanceUID", ""),
            "series": facts.get("SeriesInstanceUID", ""), "accession": facts.get("AccessionNumber", ""),
        }
        recorded = dict(original) if secret is None else _pseudonyms(original, secret)
        recorded["echo"] = facts.get("EchoNumbers", "")
        recorded["description"] = facts.get("SeriesDescription", "") if secret is None else ""
        subjects[item.item_id] = Subject(recorded, original)
    return subjects


def _pseudonyms(original: dict[str, str], secret: bytes) -> dict[str, str]:
    from medflow.deid.pseudonyms import audit_hash, keyed_uid, patient_pseudonym

    return {
        "patient": patient_pseudonym(secret, original["patient"]) if original["patient"] else "",
        "study": keyed_uid(secret, original["study"]) if original["study"] else "",
        "series": keyed_uid(secret, original["series"]) if original["series"] else "",
        "accession": "AN-" + audit_hash(secret, b"accession\x00" + original["accession"].encode()) if original[
            "accession"] else "",
    }


_JOIN_FIELD = {"PatientID": "patient", "AccessionNumber": "accession", "StudyInstanceUID": "study"}


def read_table(path: Path, join_on: str | None, subjects: dict[str, Subject]) -> tuple[str, dict[str, dict[str, str]]]:
    """Join a user's CSV to the items: (key column, item id -> row with the key column as recorded).

    Raises:
        InputError: missing file, no key column, or one key on two rows (the message names the file).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except OSError as exc:
        raise InputError(str(path), f"cannot read the table: {exc.strerror or exc}") from None
    column = join_on or next((c for c in JOIN_COLUMNS if c in header), None)
    if column is None or column not in header:
        raise InputError(str(path), f"the table needs a key column, one of {', '.join(JOIN_COLUMNS)} "
                         f"(columns: {', '.join(header) or 'none'})")
    by_key: dict[str, dict[str, str]] = {}
    for number, row in enumerate(rows, start=2):
        key = (row.get(column) or "").strip()
        if key in by_key:
            raise InputError(str(path), f"line {number}: {column} appears on two rows")
        by_key[key] = row
    joined = {}
    name = _JOIN_FIELD[column]
    for item_id, subject in subjects.items():
        row = by_key.get(subject.original[name])
        if row is not None:
            joined[item_id] = {**{k: v for k, v in row.items() if k is not None}, column: subject.recorded[name]}
    return column, joined


# ----------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Leak:
    """A group found in more than one split: its items and the splits they are in."""

    group: str
    items: tuple[str, ...]
    splits: tuple[str, ...]


def check_leakage(assignments: Iterable[tuple[str, str, str]]) -> list[Leak]:
    """Groups that appear in two splits or more.

    Args:
        assignments: ``(item id, group key, split)`` triples (e.g. rows of an index table).

    Returns:
        One :class:`Leak` per leaking group, sorted by group.
    """
    splits: dict[str, set[str]] = defaultdict(set)
    items: dict[str, list[str]] = defaultdict(list)
    for item_id, group, split in assignments:
        splits[group].add(split)
        items[group].append(item_id)
    return [Leak(g, tuple(sorted(items[g])), tuple(sorted(splits[g]))) for g in sorted(splits) if len(splits[g]) > 1]


def _order_key(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}\x00{group}".encode("utf-8", "surrogateescape")).hexdigest()


def _cut(n: int, ratios: dict[str, float]) -> list[str]:
    """Split names for n ordered groups: largest-remainder counts, splits in the order given."""
    exact = {name: ratio * n for name, ratio in ratios.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    names = list(ratios)
    by_remainder = sorted(names, key=lambda name: (-(exact[name] - counts[name]), names.index(name)))
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    return [name for name in names for _ in range(counts[name])]


def assign_splits(
    groups: dict[str, str], strata: dict[str, str], spec: SplitsSpec
) -> dict[str, str]:
    """Split of every group: ``groups`` item id -> group key, ``strata`` group key -> stratum.

    Returns:
        group key -> split name (``fold<i>`` for folds).
    """
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for group in sorted(set(groups.values())):
        by_stratum[strata.get(group, "")].append(group)
    result: dict[str, str] = {}
    offset = 0
    for stratum in sorted(by_stratum):
        ordered = sorted(by_stratum[stratum], key=lambda g: _order_key(spec.seed, g))
        if spec.folds:
            for i, group in enumerate(ordered):
                result[group] = f"fold{(offset + i) % spec.folds}"
            offset += len(ordered)
        else:
            result.update(zip(ordered, _cut(len(ordered), dict(spec.ratios or {})), strict=True))
    return result


def compute_splits(
    spec: SplitsSpec, subjects: dict[str, Subject], table: dict[str, dict[str, str]], modality: dict[str, str]
) -> dict[str, Any]:
    """The manifest's ``splits`` record: method, per item split (and fold), counts, leakage.

    Items without the group key (no PatientID) are each their own group.
    """
    name = "patient" if spec.group_by == "patient" else "study"
    groups = {item_id: subjects[item_id].recorded[name] or f"item:{item_id}" for item_id in sorted(subjects)}
    leaks: list[Leak] = []
    if spec.column:
        splits = {item_id: (table.get(item_id, {}).get(spec.column) or "").strip() for item_id in groups}
        leaks = check_leakage((i, groups[i], s) for i, s in splits.items())
        method = f"user column {spec.column!r}"
    else:
        strata: dict[str, str] = {}
        if spec.stratify:
            values: dict[str, Counter] = defaultdict(Counter)
            for item_id, group in groups.items():
                value = modality.get(item_id, "") if spec.stratify == "modality" else table.get(item_id, {}).get(
                    spec.stratify, "")
                values[group][value or ""] += 1
            strata = {g: "|".join(sorted(c)) for g, c in values.items()}
        by_group = assign_splits(groups, strata, spec)
        splits = {item_id: by_group[group] for item_id, group in groups.items()}
        method = f"{spec.folds} folds" if spec.folds else "ratios"
    counts: dict[str, dict[str, int]] = {}
    for split in sorted(set(splits.values())):
        members = [i for i, s in splits.items() if s == split]
        counts[split] = {"items": len(members), "groups": len({groups[i] for i in members})}
    return {
        "spec": spec.model_dump(mode="json", exclude_none=True),
        "method": method,
        "group_by": spec.group_by,
        "items": splits,
        "counts": counts,
        # item ids only: a group key may be identifying
        "leakage": [{"items": list(leak.items), "splits": list(leak.splits)} for leak in leaks],
    }


def item_in_split(record: dict[str, Any], item_id: str, split: str, fold: int | None = None) -> bool:
    """Is ``item_id`` in ``split`` of a manifest's splits record? ``fold`` for k-fold train/val views."""
    value = record.get("items", {}).get(item_id)
    if fold is None:
        return value == split
    held_out = value == f"fold{fold}"
    if split in ("val", "valid", "validation", "test"):
        return held_out
    if split == "train":
        return value is not None and not held_out
    raise ValueError(f"with fold=, ask for 'train' or 'val' (got {split!r})")


# ----------------------------------------------------------------------------- the plan's facts


@dataclass
class DatasetFacts:
    """What dataset-level writers and the manifest need beyond the items' records (no pixels read).

    Attributes:
        subjects: item id -> :class:`Subject`.
        tables: table path (as written in the recipe) -> (key column, item id -> joined row).
        splits: the manifest's ``splits`` record, or ``None`` without ``splits:``.
    """

    subjects: dict[str, Subject] = field(default_factory=dict)
    tables: dict[str, tuple[str, dict[str, dict[str, str]]]] = field(default_factory=dict)
    splits: dict[str, Any] | None = None


def plan_facts(loaded: Any, items: list[Any], memo: Any, secret: bytes | None) -> DatasetFacts | None:
    """Subjects, joined tables and splits of a recipe that has ``splits:`` or a writer with a ``table``/index.

    Returns ``None`` when the recipe needs none of them (nothing is read).

    Raises:
        InputError: a table cannot be read or joined.
        UsageError: a user-supplied split leaks a group across splits (``on_leakage: error``).
    """
    from medflow.errors import UsageError
    from medflow.recipe.loader import resolve_path

    recipe = loaded.recipe
    if not wants_dataset_facts(recipe):
        return None
    spec: SplitsSpec | None = getattr(recipe, "splits", None)
    wanted = [(spec.table, spec.join_on)] if spec is not None and spec.table else []
    index_writers = [w for w in recipe.outputs.writers if getattr(w, "kind", None) == "index"]
    wanted += [(w.table, w.join_on) for w in index_writers if getattr(w, "table", None)]
    facts = DatasetFacts(subjects=read_subjects(items, memo, secret))
    for table, join_on in wanted:
        if table not in facts.tables:
            facts.tables[table] = read_table(resolve_path(loaded, table), join_on, facts.subjects)
    if spec is not None:
        rows = facts.tables[spec.table][1] if spec.table else {}
        facts.splits = compute_splits(spec, facts.subjects, rows, {item.item_id: item.modality for item in items})
        if facts.splits["leakage"] and spec.on_leakage == "error":
            leaks = "; ".join(f"items {', '.join(leak['items'])} in splits {', '.join(leak['splits'])}"
                              for leak in facts.splits["leakage"])
            raise UsageError(f"splits.column {spec.column!r}: one {spec.group_by} in two splits (leakage): {leaks}; "
                             "fix the table or set splits.on_leakage: warn")
    return facts


__all__ = [
    "JOIN_COLUMNS", "DatasetFacts", "Leak", "SplitsSpec", "Subject", "assign_splits", "check_leakage", "compute_splits",
    "item_in_split", "plan_facts", "read_subjects", "read_table",
]
