"""Texts a build holds for every item, kept on disk while it runs: the manifest's entries, the
up-to-date items' cached records.

A build used to hold every item's entry (about 7 KB of Python objects each) until it wrote the
manifest, so the parent's memory grew with the dataset. Each entry is now encoded once, as the
manifest writes it (:func:`medflow.engine.manifest.encode_entry`), into an anonymous temp file
in the output folder (past the first megabyte, held in memory); the manifest is written from that text, and whoever reads the entries
(dataset writers, the accounting, the redaction, the build log) parses one at a time. The plans
of up-to-date items keep their cached record's text the same way (:class:`SpooledText`).
"""

from __future__ import annotations

import json
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, overload

from medflow.engine.manifest import encode_entry

#: A spool holds this many bytes in memory before it moves them to its file: a small build
#: (one series: one entry, one record) makes no file at all.
MEMORY_BYTES = 1 << 20


class TextSpool:
    """Byte strings a build keeps: :meth:`put` one, :meth:`get` it back.

    The first :data:`MEMORY_BYTES` stay in memory; past them, all go to an anonymous temp file
    of ``folder`` (the system's temp folder for ``None``). The file has no name on Linux
    (``O_TMPFILE``) and elsewhere a medflow temp name; it is owner-only, and removed when the
    spool is closed or garbage collected, or when the process dies. Callers serialize the calls.
    """

    def __init__(self, folder: Path | None, purpose: str):
        self._folder, self._purpose = folder, purpose
        self._end = 0
        self._memory: bytearray | None = bytearray()  # None once moved to the file, or closed
        self._file: BinaryIO | None = None
        self._close: Callable[[], Any] = lambda: None

    def _to_file(self) -> None:
        from medflow.workspace import TEMP_PREFIX, current_run_id

        self._file = tempfile.TemporaryFile(  # noqa: SIM115 - closed by close() or the finalizer
            dir=self._folder, prefix=f"{TEMP_PREFIX}{current_run_id()}-", suffix=f"-{self._purpose}.tmp")
        self._close = weakref.finalize(self, self._file.close)
        self._file.write(self._memory)
        self._memory = None

    def put(self, data: bytes) -> tuple[int, int]:
        """Keep ``data``; its (offset, length), which :meth:`get` takes."""
        span = (self._end, len(data))
        if self._file is None and self._end + len(data) <= MEMORY_BYTES:
            self._memory += data  # TypeError once closed
        else:
            if self._file is None:
                self._to_file()
            self._file.seek(self._end)
            self._file.write(data)
        self._end += len(data)
        return span

    def get(self, span: tuple[int, int]) -> bytes:
        """The bytes :meth:`put` kept at ``span``.

        Raises:
            ValueError: the spool is closed.
        """
        offset, length = span
        if self._file is None:
            if self._memory is None:
                raise ValueError("the spool is closed")
            return bytes(self._memory[offset:offset + length])
        self._file.seek(offset)
        return self._file.read(length)

    def close(self) -> None:
        """Let go of the texts now (the file is removed; reading afterwards fails)."""
        self._memory = None
        self._close()


@dataclass(frozen=True, slots=True)
class SpooledText:
    """One text kept in a :class:`TextSpool` (~100 bytes of memory, whatever its length)."""

    spool: TextSpool
    span: tuple[int, int]

    @classmethod
    def keep(cls, spool: TextSpool, data: bytes) -> SpooledText:
        return cls(spool, spool.put(data))

    def read(self) -> bytes:
        return self.spool.get(self.span)


class EntrySpool(Sequence[dict[str, Any]]):
    """Item entries by id, on disk, read back in plan order (a read-only ``Sequence`` of parsed entries).

    ``put`` adds an item's entry or replaces it (the last one put wins); reading needs an entry
    for every id of ``order``. The texts are in a :class:`TextSpool` of ``folder`` (its file is
    owner-only: before redaction, entries name the input files).
    """

    def __init__(self, folder: Path, order: Iterable[str]):
        self._folder, self._order = folder, list(order)
        self._spans: dict[str, tuple[int, int]] = {}
        self._texts = TextSpool(folder, "manifest-entries")

    def put(self, entry: dict[str, Any]) -> None:
        """Add the entry of ``entry["id"]``, or replace the one put before."""
        self._spans[entry["id"]] = self._texts.put(encode_entry(entry).encode("utf-8"))

    def has(self, item_id: str) -> bool:
        """Has the item of this id an entry?"""
        return item_id in self._spans

    def text(self, item_id: str) -> str:
        """The entry of ``item_id`` as the manifest writes it (one line, no newline)."""
        return self._texts.get(self._spans[item_id]).decode("utf-8")

    def texts(self) -> Iterator[str]:
        """Every entry's text, in plan order."""
        for item_id in self._order:
            yield self.text(item_id)

    def map(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> EntrySpool:
        """A new spool (same folder and order) of ``change(entry)`` for every entry; this one is left as it is."""
        changed = EntrySpool(self._folder, self._order)
        for entry in self:
            changed.put(change(entry))
        return changed

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return [json.loads(self.text(item_id)) for item_id in self._order[index]]
        return json.loads(self.text(self._order[index]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for text in self.texts():
            yield json.loads(text)

    def __len__(self) -> int:
        return len(self._order)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EntrySpool({len(self._spans)} of {len(self._order)} entries)"

    def close(self) -> None:
        """Remove the file now (reading the entries afterwards fails)."""
        self._texts.close()
