"""Rebuild ``medflow/data/deid/table_e1_1.csv`` (PS3.15 Table E.1-1) from a machine-readable copy.

Not used at run time. The source is the ``_public_dicom.py`` module of the PyPI package
``idiscore`` (1.6.0), which its authors generate by scraping the HTML of PS3.15 Annex E
("current" edition) and which holds one rule list per column of Table E.1-1. We read it as
*data* with :mod:`ast` (nothing of it is imported or executed), take the attribute names and
keywords from pydicom's data dictionary (the standard's own names) and fall back to the
source comment for attributes pydicom does not know yet.

Usage::

    pip download --no-deps --only-binary :all: --python-version 3.12 idiscore==1.6.0
    unzip idiscore-1.6.0-py2.py3-none-any.whl -d idiscore
    python -m medflow.deid.build_table idiscore/idiscore/_public_dicom.py \
        --edition "..." --out medflow/data/deid/table_e1_1.csv

``--check`` compares the basic-profile column with a second source, the
``dicomfields_*.py`` lists of the PyPI package ``dicom-anonymizer`` (also read with ast), and
prints every difference.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import sys
from pathlib import Path

from pydicom.datadict import dictionary_description, dictionary_keyword

# idiscore rule-set variable name -> medflow option name (column of Table E.1-1).
RULESET_COLUMNS: dict[str, str] = {
    "basic_profile": "basic",
    "retain_safe_private": "retain-safe-private",
    "retain_uid": "retain-uids",
    "retain_device_id": "retain-device-identity",
    "retain_institution_id": "retain-institution-identity",
    "retain_patient_characteristics": "retain-patient-characteristics",
    "retain_full_dates": "retain-longitudinal-full-dates",
    "retain_modified_dates": "retain-longitudinal-modified-dates",
    "clean_descriptors": "clean-descriptors",
    "clean_structured_content": "clean-structured-content",
    "clean_graphics": "clean-graphics",
}
COLUMNS = ["tag", "keyword", "name", *RULESET_COLUMNS.values(), "source"]

# idiscore ActionCodes attribute -> the action letters of Table E.1-1.
ACTION_LETTERS = {
    "DUMMY": "D",
    "EMPTY": "Z",
    "REMOVE": "X",
    "KEEP": "K",
    "CLEAN": "C",
    "UID": "U",
    "EMPTY_OR_DUMMY": "Z/D",
    "REPLACE_OR_DUMMY": "X/Z",
    "REMOVE_OR_EMPTY": "X/Z",
    "REMOVE_OR_DUMMY": "X/D",
    "REMOVE_OR_EMPTY_OR_DUMMY": "X/Z/D",
    "REMOVE_OR_EMPTY_OR_UID": "X/Z/U*",
}


def _tag_text(call: ast.Call) -> str:
    """``SingleTag("00100010")`` -> ``(0010,0010)``; repeating groups keep their ``xx``."""
    kind = call.func.id  # type: ignore[attr-defined]
    if kind == "PrivateTags":
        return "(gggg,eeee)"  # the table's "Private Attributes" row: odd group numbers
    raw = call.args[0].value  # type: ignore[attr-defined]
    raw = raw.upper().replace("X", "x")
    return f"({raw[:4]},{raw[4:]})"


def _name_for(tag: str, comment: str) -> tuple[str, str]:
    if "x" in tag or "g" in tag:
        names = {
            "(50xx,xxxx)": ("", "Curve Data"),
            "(60xx,3000)": ("OverlayData", "Overlay Data"),
            "(60xx,4000)": ("OverlayComments", "Overlay Comments"),
            "(gggg,eeee)": ("", "Private Attributes"),
        }
        return names[tag]
    value = int(tag[1:5] + tag[6:10], 16)
    try:
        return dictionary_keyword(value), dictionary_description(value)
    except KeyError:
        return "", comment.strip()


def parse_idiscore(path: Path) -> dict[str, dict[str, str]]:
    """Read every rule set of idiscore's ``_public_dicom.py``: tag -> {column: action}."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    rows: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        var = node.targets[0].id  # type: ignore[attr-defined]
        if var not in RULESET_COLUMNS:
            continue
        column = RULESET_COLUMNS[var]
        rules = next(k.value for k in node.value.keywords if k.arg == "rules")
        for rule in rules.elts:  # type: ignore[attr-defined]
            ident, action = rule.elts
            tag = _tag_text(ident)
            comment = lines[rule.end_lineno - 1].partition("#")[2]
            if tag not in rows:
                keyword, name = _name_for(tag, comment)
                rows[tag] = {"tag": tag, "keyword": keyword, "name": name}
            previous = rows[tag].get(column)
            letters = ACTION_LETTERS[action.attr]
            if previous and previous != letters:
                raise ValueError(f"{path}: {tag} has two actions in column {column}")
            rows[tag][column] = letters
    return rows


def parse_dicom_anonymizer(path: Path) -> dict[str, tuple[str, str]]:
    """Read dicom-anonymizer's ``dicomfields_*.py``: tag -> (basic-profile action, name comment)."""
    lists = {
        "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
        "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
    }
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    out: dict[str, tuple[str, str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in lists:
            action = lists[node.targets[0].id]  # type: ignore[attr-defined]
            for elt in node.value.elts:  # type: ignore[attr-defined]
                if not isinstance(elt, ast.Tuple) or len(elt.elts) != 2:
                    continue  # repeating groups are written differently there
                group, element = (e.value for e in elt.elts)  # type: ignore[attr-defined]
                comment = lines[elt.end_lineno - 1].partition("#")[2].strip()
                out[f"({group:04X},{element:04X})"] = (action, comment)
    return out


def render_csv(rows: dict[str, dict[str, str]], edition: str, source: str) -> str:
    buf = io.StringIO()
    buf.write(f"# DICOM PS3.15 Table E.1-1, edition: {edition}\n")
    buf.write(f"# built by medflow/deid/build_table.py from: {source}\n")
    buf.write("# empty option cell = the option does not change the basic-profile action\n")
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for tag in sorted(rows):
        writer.writerow({c: rows[tag].get(c, "") for c in COLUMNS})
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("idiscore_public_dicom", type=Path)
    parser.add_argument("--edition", required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--check", type=Path, help="a dicom-anonymizer dicomfields_*.py to compare with")
    parser.add_argument(
        "--supplement", type=Path,
        help="a newer dicom-anonymizer dicomfields_*.py: rows missing from the main source are added "
        "with their basic-profile action only (source column names it); also fills unknown names",
    )
    parser.add_argument("--supplement-edition", default="")
    args = parser.parse_args(argv)
    rows = parse_idiscore(args.idiscore_public_dicom)
    for row in rows.values():
        row["source"] = args.edition
    if args.supplement:
        newer = parse_dicom_anonymizer(args.supplement)
        for tag, (action, comment) in newer.items():
            if tag in rows:
                if rows[tag]["name"] in ("", "Unknown"):
                    rows[tag]["name"] = comment
                continue
            keyword, name = _name_for(tag, comment)
            rows[tag] = {"tag": tag, "keyword": keyword, "name": name or comment, "basic": action,
                         "source": f"{args.supplement_edition} (basic column only)"}
    if args.out:
        args.out.write_text(
            render_csv(rows, args.edition, "idiscore 1.6.0 idiscore/_public_dicom.py"), encoding="utf-8"
        )
    if args.check:
        other = parse_dicom_anonymizer(args.check)
        for tag in sorted(set(rows) | set(other)):
            ours = rows.get(tag, {}).get("basic", "")
            theirs = other.get(tag, ("", ""))[0]
            if "x" not in tag and "g" not in tag and ours != theirs:
                print(f"{tag} {rows.get(tag, {}).get('name', '')!r}: idiscore={ours or '-'} "
                      f"{args.check.name}={theirs or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
