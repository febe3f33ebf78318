"""PS3.15 Table E.1-1 as shipped data, compiled into a tag -> action lookup per set of options.

The table (``medflow/data/deid/table_e1_1.csv``) has the Basic Profile action and one column per
option. :func:`compile_actions` resolves it once per option set: where an option has a cell, it
replaces the basic action; when several options have cells for one attribute, ``K`` (retain)
wins over ``C`` (clean), because an option that retains was asked for explicitly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "deid"
TABLE_PATH = DATA_DIR / "table_e1_1.csv"
CID7050_PATH = DATA_DIR / "cid7050.csv"
SAFE_PRIVATE_PATH = DATA_DIR / "safe_private.csv"

#: Option names, in Table E.1-1 column order, then the two pixel options (not table columns).
TABLE_OPTIONS = (
    "retain-safe-private",
    "retain-uids",
    "retain-device-identity",
    "retain-institution-identity",
    "retain-patient-characteristics",
    "retain-longitudinal-full-dates",
    "retain-longitudinal-modified-dates",
    "clean-descriptors",
    "clean-structured-content",
    "clean-graphics",
)
PIXEL_OPTIONS = ("clean-pixel-data", "clean-recognizable-visual-features")
ALL_OPTIONS = frozenset(TABLE_OPTIONS + PIXEL_OPTIONS)
ACTIONS = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})


@dataclass(frozen=True)
class TableRow:
    """One row of Table E.1-1; ``tag`` is the text form, e.g. ``(0010,0010)`` or ``(60xx,3000)``."""

    tag: str
    keyword: str
    name: str
    basic: str
    options: dict[str, str]
    source: str


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


@cache
def edition() -> str:
    """The edition line of the shipped table (``# DICOM PS3.15 Table E.1-1, edition: ...``)."""
    with TABLE_PATH.open(encoding="utf-8") as fh:
        first = fh.readline()
    return first.partition("edition:")[2].strip()


@cache
def load_table() -> tuple[TableRow, ...]:
    """Every row of the shipped Table E.1-1, validated (unknown action letters are errors)."""
    rows = []
    for raw in _read_csv(TABLE_PATH):
        options = {o: raw[o] for o in TABLE_OPTIONS if raw[o]}
        for action in (raw["basic"], *options.values()):
            if action not in ACTIONS:
                raise ValueError(f"{TABLE_PATH}: {raw['tag']}: unknown action {action!r}")
        rows.append(TableRow(raw["tag"], raw["keyword"], raw["name"], raw["basic"], options, raw["source"]))
    return tuple(rows)


@cache
def load_cid7050() -> dict[str, tuple[str, str]]:
    """Option name (``basic`` for the profile) -> (CID 7050 code value, code meaning)."""
    return {r["option"]: (r["code"], r["meaning"]) for r in _read_csv(CID7050_PATH)}


@cache
def load_safe_private() -> frozenset[tuple[str, int, int]]:
    """Safe private attributes as (private creator, group, element low byte)."""
    return frozenset(
        (r["creator"], int(r["group"], 16), int(r["element"], 16)) for r in _read_csv(SAFE_PRIVATE_PATH)
    )


def _resolve(row: TableRow, options: frozenset[str]) -> str:
    cells = {row.options[o] for o in options if o in row.options}
    if "K" in cells:
        return "K"
    if "C" in cells:
        return "C"
    if cells:  # an option column holding another letter (none in this edition); take it as written
        return sorted(cells)[0]
    return row.basic


@dataclass(frozen=True)
class CompiledTable:
    """Actions of Table E.1-1 for one option set.

    ``by_tag`` maps int tags of single-tag rows to their action; ``curves``, ``overlay_data``,
    ``overlay_comments`` and ``private`` are the actions of the pattern rows.
    """

    by_tag: dict[int, str]
    curves: str
    overlay_data: str
    overlay_comments: str
    private: str


@cache
def compile_actions(options: frozenset[str]) -> CompiledTable:
    """Resolve every row for ``options`` (cached: built once per option set)."""
    by_tag: dict[int, str] = {}
    patterns: dict[str, str] = {}
    for row in load_table():
        action = _resolve(row, options)
        if "x" in row.tag or "g" in row.tag:
            patterns[row.tag] = action
        else:
            by_tag[int(row.tag[1:5] + row.tag[6:10], 16)] = action
    return CompiledTable(
        by_tag=by_tag,
        curves=patterns["(50xx,xxxx)"],
        overlay_data=patterns["(60xx,3000)"],
        overlay_comments=patterns["(60xx,4000)"],
        private=patterns["(gggg,eeee)"],
    )
