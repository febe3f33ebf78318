"""The build manifest (``manifest.json`` in the output folder): the lock of a build.

Everything that defines the dataset is in it: medflow, Python and library versions,
the recipe hash and resolved recipe, per item its input files and their content digests, the
applied steps with versions and params, the outputs with their digests, status and error.
Content digests are BLAKE3 (:mod:`medflow.hashing`): an output is ``{"path", "blake3", "size"}``.
Version 1 manifests (an older medflow) hold sha256 digests (outputs ``{"path", "sha256", "size"}``);
they are still read, and checked with sha256.
Same recipe + same inputs -> identical manifest, except the ``run`` field, which
holds everything about this particular run (timestamps, workers, what came from the cache).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import medflow
from medflow.errors import FileSystemError
from medflow.writers.atomic import atomic_write, atomic_write_bytes

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2  # 2: content digests are BLAKE3 (1: sha256)
READABLE_VERSIONS = (1, 2)  # a previous build of any of these still tells what it wrote
LIBRARY_VERSIONS_NAME = "library-versions.json"  # in the cache folder (library_versions)
_LIBRARIES = ("numpy", "pydicom", "SimpleITK", "opencv-python-headless", "pydantic", "PyYAML", "joblib")


def library_versions(memo_path: Path | None = None) -> dict[str, str]:
    """Installed versions of the libraries whose behaviour shapes the output.

    ``memo_path``: a file (in the build's cache) that keeps them while no folder of ``sys.path``
    changed: installing, upgrading or removing a package adds or removes a ``*.dist-info``
    folder, which changes its folder's mtime. Looking them up costs 2-7 ms per command, a
    quarter of a no-op rebuild of 200 files; the check costs a stat per ``sys.path`` entry.
    """
    state = _search_path_state()
    if memo_path is not None:
        try:
            saved = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            saved = None
        if (
            isinstance(saved, dict) and saved.get("search_path") == state
            and isinstance(saved.get("libraries"), dict) and set(saved["libraries"]) == set(_LIBRARIES)
        ):
            return {name: str(saved["libraries"][name]) for name in _LIBRARIES}
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = _version(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    if memo_path is not None:
        try:
            atomic_write_bytes(memo_path, json.dumps({"search_path": state, "libraries": versions}).encode())
        except (OSError, FileSystemError):
            pass  # a cache that cannot be written only costs the look-up next time
    return versions


def _search_path_state() -> list[list]:
    """``[entry, mtime_ns or None]`` of every ``sys.path`` entry, in order."""
    state = []
    for entry in sys.path:
        try:
            state.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            state.append([entry, None])
    return state


def _version(dist: metadata.Distribution) -> str:
    """``dist.version``, read from the ``Version:`` line of its metadata file without the email parser
    ``Distribution.metadata`` runs over the whole file (a few ms per library at every start)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    match = _VERSION_LINE.search(text.split("\n\n", 1)[0])
    return match.group(1) if match else dist.version


_VERSION_LINE = re.compile(r"^Version:[ \t]*(\S+)[ \t]*$", re.MULTILINE)


def environment(cache_root: Path | None = None) -> dict[str, Any]:
    """Versions of medflow, Python, the libraries, and the plugin steps and writers loaded.

    ``cache_root``: the build's cache, where the library versions are kept (:func:`library_versions`).

    Plugins load when a recipe names a step or writer medflow does not ship (then every
    installed one is listed); a recipe of built-in steps and writers loads and lists none.
    """
    from medflow.plugins import PROVENANCE

    return {
        "medflow": medflow.__version__,
        "python": platform.python_version(),
        "libraries": library_versions(cache_root / LIBRARY_VERSIONS_NAME if cache_root is not None else None),
        "plugins": {f"{group}:{name}": f"{package}=={version}"
                    for (group, name), (package, version) in sorted(PROVENANCE.items())},
    }


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> str:
    """Write ``manifest.json`` atomically (sorted keys, stable bytes); returns its content digest.

    The text is written as it is made, in ~1 MiB pieces: a manifest of 10,000 items is ~20 MB
    of text, which held whole (and again encoded) was the parent's peak memory.
    """
    def write(f) -> None:
        pending: list[str] = []
        size = 0
        for chunk in _chunks(manifest, 0):
            pending.append(chunk)
            size += len(chunk)
            if size >= _WRITE_CHUNK:
                f.write("".join(pending).encode("utf-8"))
                pending, size = [], 0
        pending.append("\n")
        f.write("".join(pending).encode("utf-8"))

    return atomic_write(Path(out_dir) / MANIFEST_NAME, write)


_WRITE_CHUNK = 1 << 20  # characters of manifest text per write


#: json's C encoder (``indent=None``): one call per entry instead of Python's indenting encoder,
#: which costs seconds on a manifest of thousands of items.
_COMPACT = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def manifest_text(manifest: dict[str, Any]) -> str:
    """The manifest as JSON text: sorted keys, stable; top-level sections indented, lists one entry per line.

    ``json.loads`` of the text gives ``manifest`` back; the layout keeps a diff of two manifests
    readable (one line per item, output or withheld file).
    """
    return "".join(_chunks(manifest, 0)) + "\n"


def _chunks(value: Any, depth: int) -> Iterator[str]:
    """The text of ``value`` at ``depth`` in pieces: top-level sections indented, their lists one entry per line."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, dict) and value and depth < 2:
        yield "{\n"
        for index, key in enumerate(sorted(value)):
            yield (",\n" if index else "") + f"{inner}{_COMPACT.encode(str(key))}: "
            yield from _chunks(value[key], depth + 1)
        yield "\n" + pad + "}"
    elif isinstance(value, list | tuple) and value and depth < 2:
        yield "[\n"
        for index, entry in enumerate(value):
            yield (",\n" if index else "") + inner + _COMPACT.encode(entry)
        yield "\n" + pad + "]"
    else:
        yield _COMPACT.encode(value)


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The previous build's manifest (any of :data:`READABLE_VERSIONS`), or ``None`` if absent or unreadable."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("manifest_version") in READABLE_VERSIONS else None


def previous_items(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not manifest:
        return {}
    return {item["id"]: item for item in manifest.get("items", [])}
