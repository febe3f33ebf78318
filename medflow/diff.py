"""``medflow diff BUILD_A BUILD_B``: what differs between two builds, from their manifests only.

Reads ``manifest.json`` of each build (no step, engine or writer code, no pixel): the recipe
(every differing value of the resolved recipe by its dotted path, the ``extends`` chain's files,
and the git state of the recipe's repository, which the manifest keeps under ``run.git``), the environment (medflow and library versions), the splits, the dataset-level
outputs, and per item: added, removed, or changed with which input files, which steps (name,
version, each parameter) and which outputs differ.

Digests are compared as recorded. A build of an older medflow records sha256 where a newer one
records BLAKE3 (:mod:`medflow.hashing`): an output is then compared by hashing build B's file with
A's algorithm, and input files by name only (the report says so under ``digests``).

>>> report = diff_builds("build/a", "build/b")     # doctest: +SKIP
>>> print(format_report(report))                   # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medflow.errors import InputError
from medflow.hashing import file_digest, manifest_input_algorithm, recorded_digest

MANIFEST_NAME = "manifest.json"


def read_build(build_dir: str | Path) -> dict[str, Any]:
    """The manifest of a build folder (or a manifest file).

    Raises:
        InputError: no manifest, or not a readable one (the message names the file).
    """
    path = Path(build_dir)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(str(path), "no manifest: is this a medflow build folder?") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(str(path), f"not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("items"), list):
        raise InputError(str(path), "manifest has no 'items' list")
    return manifest


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"steps[0].width": 1500, ...}``: every leaf of a JSON value by its dotted path."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key in sorted(value, key=str):
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


def value_changes(a: Any, b: Any) -> list[dict[str, Any]]:
    """Every dotted path whose value differs: ``{"path", "a", "b"}`` (a side missing: ``None``), sorted."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    missing = object()
    changes = []
    for path in sorted(set(flat_a) | set(flat_b)):
        va, vb = flat_a.get(path, missing), flat_b.get(path, missing)
        if va != vb:
            changes.append({"path": path, "a": None if va is missing else va, "b": None if vb is missing else vb,
                            "only_in": "a" if vb is missing else "b" if va is missing else None})
    return changes


def _step_changes(steps_a: list[dict[str, Any]], steps_b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step index (0 = the read): name, version or parameters that differ."""
    changes = []
    for index in range(max(len(steps_a), len(steps_b))):
        a = steps_a[index] if index < len(steps_a) else None
        b = steps_b[index] if index < len(steps_b) else None
        if a is None or b is None:
            present = a or b
            changes.append({"index": index, "step": present["name"], "change": "added" if a is None else "removed"})
            continue
        entry: dict[str, Any] = {"index": index, "step": b["name"]}
        if a["name"] != b["name"]:
            entry.update(change="replaced", a=a["name"], b=b["name"])
        elif a.get("version") != b.get("version"):
            entry.update(change="version", a=a.get("version"), b=b.get("version"))
        params = value_changes(a.get("params", {}), b.get("params", {})) if a["name"] == b["name"] else []
        if params:
            entry.setdefault("change", "params")
            entry["params"] = params
        if "change" in entry:
            changes.append(entry)
    return changes


#: ``rehash(path, algorithm)``: the digest of build B's output ``path`` with ``algorithm`` (None: no such file).
Rehash = Callable[[str, str], str | None]


def _file_changes(files_a: list[list[str]], files_b: list[list[str]], comparable: bool = True) -> dict[str, list[str]]:
    """Input files added, removed and changed (``comparable=False``: digests of two algorithms, names only)."""
    a, b = dict(map(tuple, files_a)), dict(map(tuple, files_b))
    return {
        "added": sorted(set(b) - set(a)),
        "removed": sorted(set(a) - set(b)),
        "changed": sorted(p for p in set(a) & set(b) if a[p] != b[p]) if comparable else [],
    }


def _output_changes(outs_a: list[dict[str, Any]], outs_b: list[dict[str, Any]],
                    rehash: Rehash | None = None) -> dict[str, list[str]]:
    a = {o["path"]: recorded_digest(o) for o in outs_a}
    b = {o["path"]: recorded_digest(o) for o in outs_b}
    return {
        "added": sorted(set(b) - set(a)),
        "removed": sorted(set(a) - set(b)),
        "changed": sorted(p for p in set(a) & set(b) if not _same_bytes(p, a[p], b[p], rehash)),
    }


def _same_bytes(path: str, a: tuple[str, str] | None, b: tuple[str, str] | None, rehash: Rehash | None) -> bool:
    """Do two recorded digests of ``path`` name the same bytes? Across algorithms, B's file decides."""
    if a is None or b is None or a[0] == b[0]:
        return a == b
    return rehash is not None and rehash(path, a[0]) == a[1]


def _rehash_in(build_dir: str | Path) -> Rehash:
    folder = Path(build_dir)
    folder = folder if folder.is_dir() else folder.parent

    def rehash(path: str, algorithm: str) -> str | None:
        try:
            return file_digest(folder / path, algorithm)
        except OSError:
            return None

    return rehash


def _nonempty(changes: dict[str, list[str]]) -> bool:
    return any(changes.values())


def item_changes(a: dict[str, Any], b: dict[str, Any], *, inputs_comparable: bool = True,
                 rehash: Rehash | None = None) -> dict[str, Any] | None:
    """How one item differs between two manifests (``None``: identical inputs, steps, outputs and status).

    ``inputs_comparable=False``: the input digests are of two algorithms (compared by name only);
    ``rehash`` hashes build B's outputs for outputs recorded with two algorithms (see :func:`diff_manifests`).
    """
    change: dict[str, Any] = {"id": b["id"]}
    files = _file_changes(a.get("files", []), b.get("files", []), inputs_comparable)
    if _nonempty(files):
        change["inputs"] = files
    steps = _step_changes(a.get("steps", []), b.get("steps", []))
    if steps:
        change["steps"] = steps
    outputs = _output_changes(a.get("outputs", []), b.get("outputs", []), rehash)
    if _nonempty(outputs):
        change["outputs"] = outputs
    if a.get("status") != b.get("status"):
        change["status"] = {"a": a.get("status"), "b": b.get("status"), "error": b.get("error")}
    meta_a, meta_b = a.get("meta", {}), b.get("meta", {})
    if any(meta_a.get(key) != meta_b.get(key) for key in ("geometry", "pixel_spacing")):  # 2-D: pixel_spacing
        change["geometry"] = True
    return change if len(change) > 1 else None


def _git(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe repository's git state: ``run.git`` (manifests before it moved: ``recipe.git``)."""
    run = manifest.get("run") or {}
    return run["git"] if "git" in run else (manifest.get("recipe") or {}).get("git")


def diff_manifests(a: dict[str, Any], b: dict[str, Any], rehash: Rehash | None = None) -> dict[str, Any]:
    """The differences between two manifests (JSON-able; see the module docstring).

    ``rehash(path, algorithm)`` gives the digest of build B's file ``path`` with ``algorithm``: an
    output recorded with two algorithms is the same when B's file hashes to A's digest. Without it,
    such an output counts as changed.
    """
    items_a = {item["id"]: item for item in a.get("items", [])}
    items_b = {item["id"]: item for item in b.get("items", [])}
    common = sorted(set(items_a) & set(items_b))
    digests = [manifest_input_algorithm(a), manifest_input_algorithm(b)]
    comparable = digests[0] == digests[1]
    changed = [c for c in (item_changes(items_a[i], items_b[i], inputs_comparable=comparable, rehash=rehash)
                           for i in common) if c is not None]
    recipe_a, recipe_b = a.get("recipe", {}), b.get("recipe", {})
    files_a = {f["path"]: f["sha256"] for f in recipe_a.get("files", [])}
    files_b = {f["path"]: f["sha256"] for f in recipe_b.get("files", [])}
    splits_a = (a.get("splits") or {}).get("items", {})
    splits_b = (b.get("splits") or {}).get("items", {})
    moved = [{"id": i, "a": splits_a.get(i), "b": splits_b.get(i)} for i in sorted(set(splits_a) | set(splits_b))
             if i in items_a and i in items_b and splits_a.get(i) != splits_b.get(i)]
    return {
        "recipe": {
            "name": [recipe_a.get("name"), recipe_b.get("name")],
            "same_hash": recipe_a.get("hash") == recipe_b.get("hash"),
            "values": value_changes(recipe_a.get("resolved", {}), recipe_b.get("resolved", {})),
            "files": {
                "added": sorted(set(files_b) - set(files_a)),
                "removed": sorted(set(files_a) - set(files_b)),
                "changed": sorted(p for p in set(files_a) & set(files_b) if files_a[p] != files_b[p]),
            },
            "git": [_git(a), _git(b)] if _git(a) != _git(b) else None,
        },
        "environment": value_changes(a.get("environment", {}), b.get("environment", {})),
        "cache_format": [a.get("cache_format"), b.get("cache_format")]
        if a.get("cache_format") != b.get("cache_format") else None,
        "digests": None if comparable else digests,
        "items": {
            "added": sorted(set(items_b) - set(items_a)),
            "removed": sorted(set(items_a) - set(items_b)),
            "changed": changed,
            "unchanged": len(common) - len(changed),
        },
        "splits": {"moved": moved, "spec": value_changes((a.get("splits") or {}).get("spec", {}),
                                                         (b.get("splits") or {}).get("spec", {}))},
        "dataset_outputs": _output_changes(a.get("dataset_outputs", []), b.get("dataset_outputs", []), rehash),
    }


def diff_builds(build_a: str | Path, build_b: str | Path) -> dict[str, Any]:
    """:func:`diff_manifests` of two build folders (or manifest files); B's files settle digests of two algorithms."""
    return diff_manifests(read_build(build_a), read_build(build_b), _rehash_in(build_b))


def is_identical(report: dict[str, Any]) -> bool:
    """No difference in recipe values or files, items, splits or dataset outputs (environment aside)."""
    items, recipe = report["items"], report["recipe"]
    return not (recipe["values"] or _nonempty(recipe["files"]) or items["added"] or items["removed"]
                or items["changed"] or report["splits"]["moved"] or report["splits"]["spec"]
                or _nonempty(report["dataset_outputs"]))


def _value(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, sort_keys=True)


def _files_text(label: str, changes: dict[str, list[str]]) -> list[str]:
    parts = [f"{kind} {', '.join(paths)}" for kind, paths in changes.items() if paths]
    return [f"{label}: {'; '.join(parts)}"] if parts else []


def format_report(report: dict[str, Any]) -> str:
    """The report as lines of text, one fact per line."""
    lines = []
    recipe = report["recipe"]
    for change in recipe["values"]:
        lines.append(f"recipe: {change['path']}: {_value(change['a'])} -> {_value(change['b'])}")
    lines += _files_text("recipe files", recipe["files"])
    if recipe["git"]:
        lines.append(f"recipe git: {_value(recipe['git'][0])} -> {_value(recipe['git'][1])}")
    for change in report["environment"]:
        lines.append(f"environment: {change['path']}: {_value(change['a'])} -> {_value(change['b'])}")
    if report["cache_format"]:
        lines.append(f"cache format: {report['cache_format'][0]} -> {report['cache_format'][1]}")
    if report.get("digests"):
        lines.append(f"digests: {report['digests'][0]} -> {report['digests'][1]} (input files compared by name "
                     "only; outputs by B's files)")
    items = report["items"]
    lines.append(f"items: {len(items['added'])} added, {len(items['removed'])} removed, "
                 f"{len(items['changed'])} changed, {items['unchanged']} unchanged")
    lines += [f"+ {item_id}" for item_id in items["added"]]
    lines += [f"- {item_id}" for item_id in items["removed"]]
    for change in items["changed"]:
        lines.append(f"~ {change['id']}")
        lines += ["    " + text for text in _files_text("inputs", change.get("inputs", {}))]
        for step in change.get("steps", []):
            where = f"step {step['index']} {step['step']}"
            if step["change"] in ("added", "removed"):
                lines.append(f"    {where}: {step['change']}")
                continue
            if step["change"] in ("replaced", "version"):
                lines.append(f"    {where}: {step['change']} {step['a']} -> {step['b']}")
            for param in step.get("params", []):
                lines.append(f"    {where}: {param['path']}: {_value(param['a'])} -> {_value(param['b'])}")
        lines += ["    " + text for text in _files_text("outputs", change.get("outputs", {}))]
        if "status" in change:
            lines.append(f"    status: {change['status']['a']} -> {change['status']['b']}")
        if change.get("geometry"):
            lines.append("    geometry changed")
    for move in report["splits"]["moved"]:
        lines.append(f"split: {move['id']}: {move['a']} -> {move['b']}")
    for change in report["splits"]["spec"]:
        lines.append(f"splits: {change['path']}: {_value(change['a'])} -> {_value(change['b'])}")
    lines += _files_text("dataset outputs", report["dataset_outputs"])
    return "\n".join(lines)


__all__ = ["diff_builds", "diff_manifests", "format_report", "is_identical", "item_changes", "read_build",
           "value_changes"]
