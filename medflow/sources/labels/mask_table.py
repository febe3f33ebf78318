"""Masks matched by a table (``labels: {from: mask, table: masks.csv, join_on: ..., path_column: mask}``).

The table is a CSV (UTF-8, a header line) with one row per mask file: column ``path_column``
holds the mask's path relative to the label folder, column ``join_on`` the key of the image
item it labels: SeriesInstanceUID, StudyInstanceUID, PatientID or AccessionNumber, compared
(after stripping blanks) with the item's first image header. Other columns are ignored.

Rules, one finding per row or per item:

* a row whose key matches no image item is not paired (listed as skipped, with its line);
* a row whose key matches several items (a PatientID with two series) pairs with none of them:
  each of those items gets the problem, naming the line (use a narrower key);
* an item matched by rows naming different files is ambiguous (the problem names the files);
* a row without a key or a path is skipped with its line;
* an item no row names has no labels (failed, or built without them under ``missing: keep``).

Where a row's path may lead is the pairing's rule (:func:`medflow.sources.pairing.mask_location`),
the same as for a pattern. Reading the mask and placing it on the image is
:mod:`medflow.sources.labels.masks`.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medflow.errors import InputError


@dataclass(frozen=True)
class MaskRow:
    """One row of a mask table: its line in the file (the header is line 1), key and mask path."""

    line: int
    key: str
    path: str


def read_mask_table(path: Path, join_on: str, path_column: str) -> tuple[list[MaskRow], list[tuple[int, str]]]:
    """``(rows, malformed)``: the table's usable rows, and ``(line, why)`` of rows without a key or path.

    Raises:
        InputError: the file cannot be read, or lacks the ``join_on`` or ``path_column`` column
            (the message names the file and its columns).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(str(path), f"cannot read the mask table: {getattr(exc, 'strerror', None) or exc}") from None
    missing = [c for c in (join_on, path_column) if c not in header]
    if missing:
        raise InputError(str(path), f"the mask table has no column {' or '.join(map(repr, missing))} "
                         f"(labels.join_on / labels.path_column; its columns: {', '.join(header) or 'none'})")
    rows, malformed = [], []
    for line, record in enumerate(records, start=2):
        key, mask = (record.get(join_on) or "").strip(), (record.get(path_column) or "").strip()
        if not key or not mask:
            malformed.append((line, f"no {join_on if not key else path_column} value"))
            continue
        rows.append(MaskRow(line, key, mask))
    return rows, malformed


def pair_by_table(
    keys: dict[str, str], rows: list[MaskRow], join_on: str, locate: Callable[[str], tuple[str | None, str | None]]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str], list[tuple[str, str]]]:
    """Pair table rows with image items.

    Args:
        keys: item id -> the item's ``join_on`` value (empty when its header has none).
        rows: the table's rows (:func:`read_mask_table`).
        join_on: the key column's name, for messages.
        locate: a row's path -> ``(path relative to the source folder, None)`` when it may be read,
            or ``(shown path, problem)`` when it may not (outside the label folder, missing).

    Returns:
        ``(found, problems, unpaired)``: item id -> its mask path (relative to the source folder);
        item id -> one-line problem; ``(path, reason)`` of rows paired with no item.
    """
    by_key: dict[str, list[str]] = defaultdict(list)
    for item_id, key in sorted(keys.items()):
        if key:
            by_key[key].append(item_id)
    claims: dict[str, list[tuple[MaskRow, str]]] = defaultdict(list)
    problems: dict[str, str] = {}
    unpaired: list[tuple[str, str]] = []
    for row in rows:
        where, problem = locate(row.path)
        targets = by_key.get(row.key, [])
        what = f"labels.table line {row.line} ({join_on} {row.key!r})"
        if not targets:
            unpaired.append((where or row.path, f"not a DICOM file: a label mask; {what} matches no image item: "
                                                "not paired"))
        elif len(targets) > 1:
            for item_id in targets:
                problems.setdefault(item_id, f"{what} matches {len(targets)} image items ({', '.join(targets[:5])}): "
                                             f"ambiguous, not paired (key masks by a narrower column)")
        elif problem:
            problems.setdefault(targets[0], f"mask {row.path!r} of {what}: {problem}")
        else:
            claims[targets[0]].append((row, where))
    found: dict[str, tuple[str, ...]] = {}
    for item_id, claimed in claims.items():
        paths = sorted({where for _, where in claimed})
        if len(paths) > 1:
            lines = ", ".join(str(row.line) for row, _ in claimed)
            problems[item_id] = (f"{len(paths)} masks of the labels table (lines {lines}) match this item: "
                                 + ", ".join(paths) + ": ambiguous")
        elif item_id not in problems:
            found[item_id] = (paths[0],)
    for item_id, key in keys.items():
        if item_id not in found and item_id not in problems:
            problems[item_id] = (f"no row of the labels table has this item's {join_on} {key!r}" if key
                                 else f"this item's header has no {join_on} to look up in the labels table")
    return found, problems, unpaired
