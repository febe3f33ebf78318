"""The fingerprint memo's file, and its journal: entries located, parsed when asked for.

A rebuild asks the memo about every input file, but a build held the whole memo parsed: ~2.3 KB
of Python objects per file (~41 MiB for 20,000 inputs and 10,000 outputs), the largest part of
a no-op rebuild's memory. The file is now ``{"format": 6}`` on its first line, then one line
per entry, ``<key as JSON>\\t<entry as JSON>`` (JSON text never holds a raw tab or newline). A
build keeps each entry's place in the file (~0.3 KB a file) and parses an entry when asked.

The file stays open while the build runs: a concurrent build that saves the memo replaces the
file, which leaves this one reading the file it loaded. A small file (at most :data:`BLOB_BYTES`)
is read into memory instead, as is every file on Windows, which cannot replace an open file
(still a fifth of the parsed entries): one read instead of a ``pread`` per entry, ~5 us each,
a tenth of a no-op rebuild of 200 files.

A cold build makes an entry for every file (header facts, digest). The memo holds a few
thousand of them, then appends them to a :class:`Journal` (a temp file past its first
megabyte, the last text of a key wins) and lets go of them; :func:`write_memo` merges the three at the end.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from medflow.text_spool import TextSpool, span, unspan

FORMAT = 6
_HEAD = b'{"format":%d}\n' % FORMAT
#: A memo file of at most this many bytes (~1,200 files) is held in memory while a build reads it.
BLOB_BYTES = 1 << 20
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
        self._spans: dict[str, int] = {}  # key -> its entry's place in the file (see medflow.text_spool.span)
        self._damaged: set[str] = set()
        self._file: BinaryIO | None = open(path, "rb")  # noqa: SIM115 - closed by close() or the finalizer
        self._blob: bytes | None = None
        self._finalizer = weakref.finalize(self, self._file.close)
        try:
            if os.name == "nt" or os.fstat(self._file.fileno()).st_size <= BLOB_BYTES:
                self._blob = self._file.read()
                self._finalizer()
                self._file = None
                lines = io.BytesIO(self._blob)  # lines as the file gives them
            else:
                lines = self._file
            head = next(lines, b"")
            if head != _HEAD:
                raise ValueError(f"not a memo of format {FORMAT}")
            self._locate(lines, len(head))
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
                    self._spans[key] = span(offset + len(key_text) + 1, len(entry_text) - 1)
            offset += len(line)

    def _read(self, where: int) -> bytes:
        offset, length = unspan(where)
        if self._blob is not None:
            return self._blob[offset:offset + length]
        return _read_at(self._file, offset, length)

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry of ``key`` (parsed anew on each call), ``None`` when absent or damaged."""
        where = self._spans.get(key)
        if where is None:
            return None
        try:
            entry = _decode(self._read(where).decode("ascii"))
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
        for key, where in self._spans.items():
            if key not in leave_out and key not in self._damaged:
                yield key, self._read(where)

    def close(self) -> None:
        """Let go of the file (then every entry reads as absent)."""
        self._finalizer()
        self._file, self._blob, self._spans = None, None, {}


class Journal:
    """Entries a build changed and let go of, in a :class:`~medflow.text_spool.TextSpool` beside the
    memo: key -> entry, parsed when asked.

    Appending an entry again replaces it (its latest text is read). Callers serialize the calls
    (the memo's lock).
    """

    def __init__(self, folder: Path | None):
        self._texts = TextSpool(folder, "memo-journal")
        self._places: dict[str, int] = {}  # key -> where its latest text is

    def append(self, entries: dict[str, dict[str, Any]]) -> None:
        """Add (or replace) these entries.

        Raises:
            OSError: they could not be written (a full disk): the entries written before are kept.
        """
        for key, entry in entries.items():
            self._places[key] = self._texts.put(_encode(entry).encode())

    def get(self, key: str) -> dict[str, Any] | None:
        """The latest entry of ``key`` (parsed anew on each call), ``None`` when absent."""
        where = self._places.get(key)
        return None if where is None else _decode(self._texts.get(where).decode("ascii"))

    def __contains__(self, key: object) -> bool:
        return key in self._places

    def texts(self, leave_out: Any) -> Iterator[tuple[str, bytes]]:
        """(key, latest entry text) of every entry not in ``leave_out``."""
        for key, where in self._places.items():
            if key not in leave_out:
                yield key, self._texts.get(where)

    def close(self) -> None:
        self._texts.close()
        self._places = {}


def _read_at(file: BinaryIO, offset: int, length: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(file.fileno(), length, offset)
    file.seek(offset)  # Windows: callers serialize reads (the memo's lock)
    return file.read(length)


class _Either:
    """``key in`` one of two containers (what :func:`write_memo` leaves out of an older layer)."""

    def __init__(self, first: Any, second: Any):
        self.first, self.second = first, second

    def __contains__(self, key: object) -> bool:
        return key in self.first or key in self.second


def write_memo(f: BinaryIO, stored: StoredEntries | None, journal: Journal | None,
               changed: dict[str, dict[str, Any]]) -> None:
    """Write a memo file: the ``stored`` entries this build did not change (as they were), the
    ``journal``'s latest entries that ``changed`` does not hold, then ``changed``; streamed, never all held."""
    newer = _Either(changed, journal if journal is not None else {})
    texts = itertools.chain(stored.texts(newer) if stored is not None else (),
                            journal.texts(changed) if journal is not None else (),
                            ((key, _encode(entry).encode()) for key, entry in changed.items()))
    pending = [_HEAD]
    for key, text in texts:
        pending.append(b"%s\t%s\n" % (_encode(key).encode(), text))
        if len(pending) >= 512:
            f.write(b"".join(pending))
            pending = []
    f.write(b"".join(pending))
