"""Keeping patient identity out of what a build writes into the dataset folder.

Private tables (e.g. a de-identification crosswalk) go to files outside the output
folder with mode 0600; a de-identifying recipe's manifest names input files by hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_private_tables(
    out_dir: Path, tables: list[dict[str, list[list[str]]]]
) -> tuple[list[str], list[tuple[str, str]]]:
    """Merge every item's private rows per file and write each file (CSV, mode 0600).

    Such files (e.g. a crosswalk from original IDs to pseudonyms) must never land in
    the dataset: a path inside the output folder is refused and reported as a failure.
    """
    import csv
    import io

    from medflow.writers.atomic import atomic_write_bytes

    merged: dict[str, tuple[list[str], set[tuple[str, ...]]]] = {}
    for table in tables:
        for path, rows in table.items():
            if not rows:
                continue
            header, body = merged.setdefault(path, (list(rows[0]), set()))
            body.update(tuple(row) for row in rows[1:])
    written, errors = [], []
    out_resolved = out_dir.resolve()
    for path, (header, body) in sorted(merged.items()):
        target = Path(path).resolve()
        if target == out_resolved or out_resolved in target.parents:
            errors.append((path, "refused: this private file (e.g. a crosswalk) must be outside the output folder"))
            continue
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(sorted(body))
        atomic_write_bytes(target, buffer.getvalue().encode("utf-8"), mode=0o600)
        written.append(str(target))
    return written, errors


def redact_input_paths(manifest: dict[str, Any], source_root: Path, paths: set[str]) -> dict[str, Any]:
    """The manifest with every input path (and the source folder) replaced by a hash token.

    For recipes that de-identify: hospital exports often name folders and files after
    the patient or the MRN, and the manifest travels with the dataset. Each path
    becomes ``<file:16 hex of sha256(path)>`` (stable, so builds still compare), the
    source folder ``<source>``, wherever they occur (file lists, notes, errors).
    """
    import hashlib
    import json

    text = json.dumps(manifest, ensure_ascii=False)
    root = str(source_root)
    text = text.replace(json.dumps(root, ensure_ascii=False)[1:-1], "<source>")
    for rel in sorted(paths, key=len, reverse=True):
        token = f"<file:{hashlib.sha256(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}>"
        text = text.replace(json.dumps(rel, ensure_ascii=False)[1:-1], token)
    redacted = json.loads(text)
    redacted["inputs_redacted"] = "input paths replaced by <file:sha256[:16]> tokens (the recipe de-identifies)"
    return redacted
