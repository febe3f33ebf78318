"""Byte strings a build keeps for every item or file, in memory up to a megabyte, then in a temp file.

The manifest's entries and the up-to-date items' records (:mod:`medflow.engine.spool`) and the
fingerprint memo's journal (:mod:`medflow.sources.memo_store`) keep their texts here: a build of
many items then holds where each text is (one int), not the text.
"""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def span(offset: int, length: int) -> int:
    """(offset, length) of bytes as one int: ~80 bytes less than a tuple, for each of many texts."""
    return offset << 32 | length


def unspan(where: int) -> tuple[int, int]:
    """The (offset, length) of :func:`span`."""
    return where >> 32, where & 0xFFFFFFFF


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

    def put(self, data: bytes) -> int:
        """Keep ``data``; where it is (:func:`span`), which :meth:`get` takes."""
        where = span(self._end, len(data))
        if self._file is None and self._end + len(data) <= MEMORY_BYTES:
            self._memory += data  # TypeError once closed
        else:
            if self._file is None:
                self._to_file()
            self._file.seek(self._end)
            self._file.write(data)
        self._end += len(data)
        return where

    def get(self, where: int) -> bytes:
        """The bytes :meth:`put` kept ``where``.

        Raises:
            ValueError: the spool is closed.
        """
        offset, length = unspan(where)
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
