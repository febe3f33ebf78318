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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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


def encode_entry(entry: Any) -> str:
    """One entry of a top-level list (an item, an output, a withheld file) as the manifest writes it: one line."""
    return _COMPACT.encode(entry)


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
    elif hasattr(value, "texts"):  # an EntrySpool: the entries one per line, their text as it was stored
        empty = True
        for text in value.texts():
            yield ("[\n" if empty else ",\n") + inner + text
            empty = False
        yield "[]" if empty else "\n" + pad + "]"
    else:
        yield _COMPACT.encode(value)


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The previous build's manifest (any of :data:`READABLE_VERSIONS`), or ``None`` if absent or unreadable."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("manifest_version") in READABLE_VERSIONS else None


class PreviousEntries(Mapping[str, dict[str, Any]]):
    """The previous build's manifest entries by item id, each parsed when asked for and not kept.

    A rebuild asks only for the entries of the items it builds again (their reasons) and of
    instance items (their records): an unchanged item needs none. The entries stay in the
    file: a manifest of 10,000 items is ~20 MB of text and ~75 MB parsed, which a rebuild of
    that many items held through its whole planning. An entry whose line no longer parses, or
    names another id, is absent (its item is built again, as a new one).
    """

    def __init__(self, path: Path, spans: dict[str, tuple[int, int]]):
        self._path, self._spans, self._file = path, spans, None

    def __getitem__(self, item_id: str) -> dict[str, Any]:
        offset, length = self._spans[item_id]
        if self._file is None:
            self._file = open(self._path, "rb")  # noqa: SIM115 - closed by close(), after the plan
        try:
            self._file.seek(offset)
            entry = json.loads(self._file.read(length))
        except (OSError, ValueError):
            raise KeyError(item_id) from None
        if not isinstance(entry, dict) or entry.get("id") != item_id:
            raise KeyError(item_id)
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _ParsedEntries(dict):
    """Entries of a manifest in another layout than :func:`write_manifest`'s (parsed whole, as it was)."""

    def close(self) -> None:
        pass


@dataclass
class PreviousBuild:
    """What a rebuild reads of the previous manifest: its top-level fields (``items`` left empty) and its entries."""

    head: dict[str, Any]
    entries: PreviousEntries | _ParsedEntries

    def __enter__(self) -> PreviousBuild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.entries.close()


def read_previous(out_dir: Path) -> PreviousBuild | None:
    """The previous build's manifest for planning (see :class:`PreviousEntries`), or ``None`` if absent or unreadable.

    A manifest in :func:`write_manifest`'s layout (one item a line) is read line by line: each
    entry is located, not parsed, and every line but the entries' is parsed to check the file.
    Any other layout (a manifest of an older medflow, or one reformatted by hand) is parsed whole.
    """
    path = Path(out_dir) / MANIFEST_NAME
    try:
        with open(path, "rb") as f:
            head_lines, spans, layout_ok = _scan_manifest(f)
            if not layout_ok:
                f.seek(0)
                head_lines, spans = [f.read()], {}
    except FileNotFoundError:
        return None
    try:
        head = json.loads(b"".join(head_lines))
    except ValueError:
        return None
    if not isinstance(head, dict) or head.get("manifest_version") not in READABLE_VERSIONS:
        return None
    items = head.get("items")
    if isinstance(items, list) and items:  # another layout: the entries were parsed with the rest
        head["items"] = []
        return PreviousBuild(head, _ParsedEntries(
            (item["id"], item) for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)))
    return PreviousBuild(head, PreviousEntries(path, spans))


_ITEMS_OPEN = b' "items": [\n'
_ENTRY_ID = re.compile(rb'"id": ("(?:[^"\\]|\\.)*")')  # the first "id" key of an entry: its own (keys sorted)


def _scan_manifest(f) -> tuple[list[bytes], dict[str, tuple[int, int]], bool]:
    """(lines of everything but the entries, with ``"items": []``; entry id -> (offset, length); layout recognized)."""
    head: list[bytes] = []
    spans: dict[str, tuple[int, int]] = {}
    offset, in_items, seen_items = 0, False, False
    for line in f:
        if in_items:
            stripped = line.rstrip(b"\n")
            if stripped in (b" ]", b" ],"):
                in_items = False
                head.append(b' "items": []' + stripped[2:] + b"\n")
            else:
                entry = stripped[2:-1] if stripped.endswith(b",") else stripped[2:]
                match = _ENTRY_ID.search(entry) if stripped.startswith(b"  {") and entry.endswith(b"}") else None
                if match is None:
                    return head, spans, False
                try:
                    item_id = json.loads(match.group(1))
                except ValueError:
                    return head, spans, False
                spans[item_id] = (offset + 2, len(entry))
        elif line == _ITEMS_OPEN and not seen_items:
            in_items = seen_items = True
        else:
            head.append(line)
        offset += len(line)
    return head, spans, not in_items
