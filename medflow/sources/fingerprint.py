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

MEMO_FORMAT = 1


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

    def sha256(self, path: Path) -> str:
        """sha256 hex digest of ``path``'s bytes."""
        key = os.fspath(Path(path).resolve())
        stat = os.stat(key)
        with self._lock:
            entry = self._entries.get(key)
        if not self._verify and entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return entry[2]
        digest = sha256_file(Path(key))
        with self._lock:
            self._entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
            self._dirty = True
        return digest

    def save(self) -> None:
        """Write the memo atomically (no-op when nothing changed or in memory only)."""
        if self._path is None or not self._dirty:
            return
        payload = json.dumps({"format": MEMO_FORMAT, "entries": self._entries}, separators=(",", ":"))
        atomic_write_bytes(self._path, payload.encode())
        self._dirty = False
