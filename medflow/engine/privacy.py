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


def recipe_secret(steps: list[Any]) -> bytes | None:
    """The de-identification key of a de-identifying recipe, loaded before any work; ``None`` otherwise.

    Raises:
        UsageError: the key is missing, unreadable or too short (exit 2: nothing read, cached or written).
    """
    from medflow.errors import MedflowError, UsageError

    for index, params in enumerate(steps):
        if not params.deidentifies():
            continue
        try:
            return params.load_secret()
        except MedflowError as exc:
            raise UsageError(f"steps[{index}] {params.step}: {exc}; nothing was read or written") from None
    return None


def keyed_item_id(item_id: str, key: bytes) -> str:
    """``<prefix>-<16 hex of HMAC-SHA256(key, item id)>``: an id nobody can link to the originals without the key.

    Unkeyed ids hash original UIDs or paths, which anyone holding the originals can recompute.
    """
    import hashlib
    import hmac

    prefix = item_id.split("-", 1)[0]
    digest = hmac.new(key, b"item-id\x00" + item_id.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return f"{prefix}-{digest.hexdigest()[:16]}"


def path_token(rel: str) -> str:
    """The manifest's stand-in for an input path: ``<file:16 hex of sha256(path)>`` (stable across builds)."""
    import hashlib

    return f"<file:{hashlib.sha256(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}>"


class PathRedactor:
    """Replaces input paths (and the source folder) by tokens in what a de-identifying build writes or prints.

    Hospital exports name folders and files after the patient or the MRN. Each path becomes
    :func:`path_token` and the source folder ``<source>``. Exact values map directly; free
    text (errors, notes, reasons) is searched for the paths the caller names as relevant
    (the item's own files), so the cost stays linear in the size of the manifest.
    """

    def __init__(self, source_root: Path):
        self.root = str(source_root)

    def text(self, value: str, paths: Any = ()) -> str:
        """``value`` with the source folder and each of ``paths`` (relative POSIX) replaced."""
        if self.root and self.root in value:
            value = value.replace(self.root, "<source>")
        for rel in sorted(paths, key=len, reverse=True):
            if rel and rel in value:
                value = value.replace(rel, path_token(rel))
        return value

    def tree(self, value: Any, paths: Any = ()) -> Any:
        """A copy of a JSON-like ``value`` with :meth:`text` applied to every string (keys included).

        Done on the value's JSON text (C-encoded once) with each needle as JSON writes it, escapes
        included: an escaped string can only match inside one JSON string, so this is the same as
        replacing in every string and key one by one, at a fraction of the cost on a large manifest.
        """
        import json

        encoded = json.dumps(value, ensure_ascii=False)
        text = encoded
        if self.root:
            text = text.replace(_json_escaped(self.root), "<source>")
        for rel in sorted(paths, key=len, reverse=True):
            if rel:
                text = text.replace(_json_escaped(rel), path_token(rel))
        if text == encoded and not isinstance(value, list | tuple | dict):
            return value
        try:
            return json.loads(text)
        except ValueError:  # a needle began inside an escape sequence (a name starting with "\\")
            return self._walk(value, paths)

    def _walk(self, value: Any, paths: Any) -> Any:
        if isinstance(value, str):
            return self.text(value, paths)
        if isinstance(value, list | tuple):
            return [self._walk(v, paths) for v in value]
        if isinstance(value, dict):
            return {self.text(k, paths): self._walk(v, paths) for k, v in value.items()}
        return value


def _json_escaped(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)[1:-1]


def redact_manifest(manifest: dict[str, Any], redactor: PathRedactor, item_files: dict[str, list[str]]) -> dict[str, Any]:
    """The manifest of a de-identifying build with every input path replaced by its token.

    ``item_files`` maps an item id to the relative paths it read (or failed to read):
    each item's entry is searched for those paths; the dataset-level lists for their own file.
    """
    out = dict(manifest)

    def redact(entry: dict[str, Any]) -> dict[str, Any]:
        return redactor.tree(entry, item_files.get(entry["id"], ()))

    items = manifest["items"]
    out["items"] = items.map(redact) if hasattr(items, "map") else [redact(entry) for entry in items]  # an EntrySpool: on disk
    for section in ("inputs_skipped", "inputs_unreadable"):
        out[section] = [
            {"file": path_token(row["file"]), "reason": redactor.text(row["reason"], [row["file"]])}
            for row in manifest.get(section, [])
        ]
    if "accounting" in out:
        accounting = dict(out["accounting"])
        accounting["withheld"] = [
            {**row, "file": path_token(row["file"]), "reason": redactor.text(row["reason"], [row["file"]])}
            for row in accounting.get("withheld", [])
        ]
        out["accounting"] = accounting
    every_path = [rel for paths in item_files.values() for rel in paths]
    for section in ("notes", "dataset_outputs", "dataset_stats", "quarantined", "run", "recipe"):
        if section in out:
            out[section] = redactor.tree(out[section], every_path if section == "notes" else ())
    out["inputs_redacted"] = "input paths replaced by <file:sha256[:16]> tokens (the recipe de-identifies)"
    return out

