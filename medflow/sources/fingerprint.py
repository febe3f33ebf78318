"""Content fingerprints of input files, memoized by (path, size, mtime).

Hashing every input file on every build would read the whole dataset; the memo
keeps each file's sha256 next to its size and modification time and reuses it
while both are unchanged. ``verify=True`` ignores the memo and rehashes.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from medflow.writers.atomic import atomic_write_bytes, sha256_file

MEMO_FORMAT = 2


class FingerprintMemo:
    """sha256 of files, memoized in a JSON file (``None`` path: in memory only)."""

    def __init__(self, memo_path: Path | None, verify: bool = False):
        self._path = memo_path
        self._verify = verify
        self._entries: dict[str, list] = {}
        self._dirty = False
        self._lock = threading.Lock()
        if memo_path is not None and memo_path.is_file():
            try:
                data = json.loads(memo_path.read_text())
                if data.get("format") == MEMO_FORMAT:
                    self._entries = data["entries"]
            except (ValueError, KeyError, OSError):
                self._entries = {}  # a damaged memo only costs a rehash

    def _entry(self, key: str, stat: os.stat_result) -> dict:
        """The memo entry of ``key`` if it is still valid for ``stat``, else a fresh one."""
        with self._lock:
            entry = self._entries.get(key)
            if (
                self._verify
                or not isinstance(entry, dict)
                or entry.get("size") != stat.st_size
                or entry.get("mtime_ns") != stat.st_mtime_ns
            ):
                entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
                self._entries[key] = entry
                self._dirty = True
            return entry

    def sha256(self, path: Path) -> str:
        """sha256 hex digest of ``path``'s bytes."""
        key = os.fspath(Path(path).resolve())
        entry = self._entry(key, os.stat(key))
        digest = entry.get("sha256")
        if digest is None:
            digest = sha256_file(Path(key))
            with self._lock:
                entry["sha256"] = digest
                self._dirty = True
        return digest

    def get_extra(self, path: Path, name: str):
        """A value memoized for ``path`` under ``name`` (e.g. its parsed header facts), or None.

        Valid while the file's size and mtime are unchanged; ``verify`` ignores it.
        """
        key = os.fspath(Path(path).resolve())
        return self._entry(key, os.stat(key)).get(name)

    def set_extra(self, path: Path, name: str, value) -> None:
        """Memoize a JSON-able ``value`` for ``path`` under ``name``."""
        key = os.fspath(Path(path).resolve())
        entry = self._entry(key, os.stat(key))
        with self._lock:
            entry[name] = value
            self._dirty = True

    def save(self) -> None:
        """Write the memo atomically (no-op when nothing changed or in memory only)."""
        if self._path is None or not self._dirty:
            return
        payload = json.dumps({"format": MEMO_FORMAT, "entries": self._entries}, separators=(",", ":"))
        atomic_write_bytes(self._path, payload.encode(), mode=0o600)  # input paths: owner only
        self._dirty = False
