"""The fingerprint memo's file: one entry a line, located when loaded, parsed when asked for.

A rebuild asks the memo about every input file, but a build held the whole memo parsed: ~2.3 KB
of Python objects per file (~41 MiB for 20,000 inputs and 10,000 outputs), the largest part of
a no-op rebuild's memory. The file is now ``{"format": 6}`` on its first line, then one line
per entry, ``<key as JSON>\\t<entry as JSON>`` (JSON text never holds a raw tab or newline). A
build keeps each entry's place in the file (~0.3 KB a file) and parses an entry when asked.

The file stays open while the build runs: a concurrent build that saves the memo replaces the
file, which leaves this one reading the file it loaded. Windows cannot replace an open file, so
there the file's bytes are read into memory instead (still a fifth of the parsed entries).
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

FORMAT = 6
_HEAD = b'{"format":%d}\n' % FORMAT
_encode = json.JSONEncoder(separators=(",", ":")).encode  # ASCII only: no raw tab or newline in the text
_decode = json.JSONDecoder().decode


class StoredEntries:
    """The entries of a memo file as it was loaded: key -> entry, each parsed when asked and not kept."""

    def __init__(self, path: Path):
        """Locate every entry of ``path`` (format :data:`FORMAT`).

        Raises:
            OSError: the file cannot be read.
            ValueError: it is not a memo of this format (its first line).
        """
        self._spans: dict[str, tuple[int, int]] = {}
        self._damaged: set[str] = set()
        self._file: BinaryIO | None = open(path, "rb")  # noqa: SIM115 - closed by close() or the finalizer
        self._blob: bytes | None = None
        self._finalizer = weakref.finalize(self, self._file.close)
        try:
            head = self._file.readline()
            if head != _HEAD:
                raise ValueError(f"not a memo of format {FORMAT}")
            self._locate(self._file, len(head))
            if os.name == "nt":  # the file must not stay open (see the module's docstring)
                self._file.seek(0)
                self._blob = self._file.read()
                self._finalizer()
                self._file = None
        except BaseException:
            self.close()
            raise

    def _locate(self, lines: Iterator[bytes], offset: int) -> None:
        for line in lines:
            key_text, tab, entry_text = line.partition(b"\t")
            if tab and line.endswith(b"\n") and entry_text.startswith(b"{"):  # else damaged: absent
                if b"\\" not in key_text and key_text[:1] == b'"' == key_text[-1:] and len(key_text) > 1:
                    key = key_text[1:-1].decode("ascii", "replace")  # no escape: the text is the key
                else:
                    try:
                        key = json.loads(key_text)
                    except ValueError:
                        key = None
                if isinstance(key, str):
                    self._spans[key] = (offset + len(key_text) + 1, len(entry_text) - 1)
            offset += len(line)

    def _read(self, span: tuple[int, int]) -> bytes:
        offset, length = span
        if self._blob is not None:
            return self._blob[offset:offset + length]
        return os.pread(self._file.fileno(), length, offset)

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry of ``key`` (parsed anew on each call), ``None`` when absent or damaged."""
        span = self._spans.get(key)
        if span is None:
            return None
        try:
            entry = _decode(self._read(span).decode("ascii"))
        except ValueError:  # UnicodeDecodeError included
            entry = None
        if not isinstance(entry, dict):
            self._damaged.add(key)  # not written back by the next save
            return None
        return entry

    def __contains__(self, key: object) -> bool:
        return key in self._spans

    def texts(self, leave_out: Any) -> Iterator[tuple[str, bytes]]:
        """(key, entry text) of every entry not in ``leave_out`` nor found damaged, in file order."""
        for key, span in self._spans.items():
            if key not in leave_out and key not in self._damaged:
                yield key, self._read(span)

    def close(self) -> None:
        """Let go of the file (then every entry reads as absent)."""
        self._finalizer()
        self._file, self._blob, self._spans = None, None, {}


def write_memo(f: BinaryIO, stored: StoredEntries | None, changed: dict[str, dict[str, Any]]) -> None:
    """Write a memo file: the ``stored`` entries this build did not change, as they were, then ``changed``."""
    pending = [_HEAD]
    for key, text in stored.texts(changed) if stored is not None else ():
        pending.append(b"%s\t%s\n" % (_encode(key).encode(), text))
        if len(pending) >= 512:
            f.write(b"".join(pending))
            pending = []
    for key, entry in changed.items():
        pending.append(f"{_encode(key)}\t{_encode(entry)}\n".encode())
        if len(pending) >= 512:
            f.write(b"".join(pending))
            pending = []
    f.write(b"".join(pending))
