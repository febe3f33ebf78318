"""Texts a build holds for every item, kept on disk while it runs: the manifest's entries, the
up-to-date items' cached records.

A build used to hold every item's entry (about 7 KB of Python objects each) until it wrote the
manifest, so the parent's memory grew with the dataset. Each entry is now encoded once, as the
manifest writes it (:func:`medflow.engine.manifest.encode_entry`), into an anonymous temp file
in the output folder (a :class:`~medflow.text_spool.TextSpool`: the first megabyte held in
memory); the manifest is written from that text, and whoever reads the entries (dataset
writers, the accounting, the redaction, the build log) parses one at a time. The plans of
up-to-date items keep their cached record's text the same way (:class:`SpooledText`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from medflow.engine.manifest import encode_entry
from medflow.text_spool import TextSpool

__all__ = ["EntrySpool", "SpooledText", "TextSpool"]

@dataclass(frozen=True, slots=True)
class SpooledText:
    """One text kept in a :class:`TextSpool` (~100 bytes of memory, whatever its length)."""

    spool: TextSpool
    span: int

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
        self._spans: dict[str, int] = {}
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
