"""Content-addressed cache: bytes under keys, nothing else.

Two kinds of entries, both written atomically (temp file + ``os.replace``) so two
builds may share a cache folder:

* arrays with a JSON header (checkpoints): ``objects/<k[:2]>/<k>.mfc``. The header
  records the array's content digest (:mod:`medflow.hashing`, BLAKE3); a mismatch on read is
  a corrupt entry: :class:`CacheError` is raised and the entry is deleted so it is recomputed.
* small JSON records (e.g. an item's output record): ``records/<k[:2]>/<k>.json``, with the
  digest of their canonical JSON.

An entry of an older format (``MFCACHE2``, whose checksums were sha256) is never misread: its
keys are not asked for (the cache format version joins every key) and, if it were, its magic
or its missing ``blake3`` field makes it a corrupt entry, deleted and recomputed.

The cache never decides what is stale: the plan does, by choosing keys.

A cache is an accelerator, never a condition of the build: an entry that cannot be written
because the cache's file system is full (ENOSPC, or a quota: EDQUOT) is skipped, its temp
file removed, and :attr:`Cache.skipped` says why; the item is built all the same and a later
build computes what was not kept. Any other write error is raised as before.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medflow.errors import CacheError, FileSystemError
from medflow.hashing import ALGORITHM, digest_bytes, new_hasher
from medflow.writers.atomic import TempFile, atomic_write_bytes

_MAGIC = b"MFCACHE3"  # 3: BLAKE3 checksums
# An entry is: magic, the array's raw bytes, the JSON header, then a trailer (header
# length, magic). The header comes last so an array can be written slab by slab.
_TRAILER = struct.Struct("<Q8s")
#: Slabs read and waiting for the digest thread of :meth:`Cache.get_slabs` (beyond the one it hashes).
_VERIFY_DEPTH = 4


#: Write errors that mean "the cache is full": the entry is skipped, the build goes on.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def cache_is_full(exc: FileSystemError) -> bool:
    """Did a cache write fail because its file system (or the user's quota there) is full?"""
    return exc.errno in _FULL


class Cache:
    """A cache folder (created on first write)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        # entry paths as strings: a rebuild of many items asks for several per item (pathlib ~2 us a join)
        self._objects = os.path.join(self.root, "objects")
        self._records = os.path.join(self.root, "records")
        #: Why the first entry this instance could not keep was skipped (a full disk), else None.
        self.skipped: str | None = None

    def _skip(self, exc: FileSystemError) -> None:
        self.skipped = self.skipped or str(exc)

    # --- arrays -----------------------------------------------------------------
    def _object_path(self, key: str) -> Path:
        return Path(self._object_file(key))

    def _object_file(self, key: str) -> str:
        return os.path.join(self._objects, key[:2], f"{key}.mfc")

    def has(self, key: str) -> bool:
        return os.path.isfile(self._object_file(key))

    def put(self, key: str, header: dict[str, Any], array: np.ndarray) -> None:
        """Store ``array`` (any dtype except object) with a JSON-able ``header`` under ``key``
        (skipped when the cache is full, see the module)."""
        writer = self.open_writer(key)
        try:
            writer.write(array)
            writer.commit(header, array.shape)
        except BaseException:
            writer.abort()
            raise

    def open_writer(self, key: str) -> ArrayWriter:
        """Write an array under ``key`` slab by slab (axis 0); it appears only on ``commit``.

        When the cache is full the writer drops the entry, at its first write or later, and
        takes every further call as a no-op (see the module).
        """
        return ArrayWriter(self._object_path(key), on_full=self._skip)

    def get(self, key: str) -> tuple[dict[str, Any], np.ndarray] | None:
        """The entry under ``key``, or ``None`` when absent.

        Raises:
            CacheError: the entry is corrupt (it has been deleted; recompute it).
        """
        path = self._object_path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            meta, info, start, stop = _parse(path, len(data), data[-_TRAILER.size :], lambda a, b: data[a:b])
            body = memoryview(data)[start:stop]
            if digest_bytes(body) != info[ALGORITHM]:
                raise ValueError(f"array bytes do not match their {ALGORITHM} digest")
            array = np.frombuffer(body, dtype=np.dtype(info["dtype"])).reshape(info["shape"]).copy()
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            self._discard(path)
            raise CacheError(f"corrupt cache entry {path}: {exc}") from exc
        return meta, array

    def get_slabs(self, key: str, slab) -> tuple[dict[str, Any], Iterator[np.ndarray]] | None:
        """The header and the array slab by slab (axis 0, read from disk as needed), or None.

        ``slab``: rows per slab, or a function of the array's (shape, dtype) giving it.

        The array's digest is checked as the slabs go by, on a thread of its own (BLAKE3
        releases the GIL: the caller's work on a slab overlaps the hash of the next); a
        mismatch raises CacheError after the last slab (the entry is deleted), so a caller
        must not commit what it built from the slabs before the iterator is exhausted.
        """
        path = self._object_path(key)
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                f.seek(max(0, size - _TRAILER.size))
                trailer = f.read()

                def read(a: int, b: int) -> bytes:
                    f.seek(a)
                    return f.read(b - a)

                meta, info, start, stop = _parse(path, size, trailer, read)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            self._discard(path)
            raise CacheError(f"corrupt cache entry {path}: {exc}") from exc
        dtype, shape = np.dtype(info["dtype"]), tuple(info["shape"])
        if callable(slab):
            slab = slab(shape, dtype)

        def slabs() -> Iterator[np.ndarray]:
            from medflow.engine.writebehind import WriteBehind

            digest = new_hasher()
            row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            verifier = WriteBehind(_VERIFY_DEPTH)  # each slab's bytes object stays alive until hashed
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    for first in range(0, shape[0], slab):
                        rows = min(slab, shape[0] - first)
                        data = f.read(rows * row_bytes)
                        verifier.submit(functools.partial(digest.update, data))
                        yield np.frombuffer(data, dtype=dtype).reshape((rows,) + shape[1:])
                verifier.finish()
            except BaseException:
                verifier.stop()  # also when the caller closes the iterator early
                raise
            if digest.hexdigest() != info[ALGORITHM]:
                self._discard(path)
                raise CacheError(f"corrupt cache entry {path}: array bytes do not match their {ALGORITHM} digest")

        return meta, slabs()

    # --- records ----------------------------------------------------------------
    def _record_path(self, key: str) -> str:
        return os.path.join(self._records, key[:2], f"{key}.json")

    def put_record(self, key: str, record: dict[str, Any]) -> None:
        """Store a JSON-able ``record`` under ``key`` with the digest of its canonical JSON."""
        body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        # {"<algorithm>": digest, "record": record}, made from the canonical text instead of encoding it twice
        wrapped = _RECORD_HEAD + digest_bytes(body).encode() + _RECORD_MID + body + _RECORD_TAIL
        # owner-only, like the array entries: records can hold private tables (a crosswalk)
        try:
            atomic_write_bytes(Path(self._record_path(key)), wrapped, mode=0o600)
        except FileSystemError as exc:
            if not cache_is_full(exc):
                raise
            self._skip(exc)

    def get_record(self, key: str) -> dict[str, Any] | None:
        """The record under ``key``, ``None`` when absent.

        A record that is not valid JSON, or whose content does not hash to its stored
        checksum (damaged or edited), is deleted and reads as absent: the caller re-derives it.
        """
        found = self.get_record_and_text(key)
        return None if found is None else found[0]

    def get_record_and_text(self, key: str) -> tuple[dict[str, Any], bytes] | None:
        """The record under ``key`` and its canonical JSON text (what :meth:`put_record` hashed); ``None`` when absent.

        Checked like :meth:`get_record`. For callers that keep many records (the plans of every
        item of a dataset): the text is ~0.9 KB where the parsed record is ~7 KB of Python objects.
        """
        path = self._record_path(key)
        try:
            with open(path, "rb") as f:
                text = f.read()
            stored, body = _split_record(text)
            if body is None:  # another layout (an older medflow's): its canonical text made again
                wrapped = json.loads(text)
                stored, record = wrapped[ALGORITHM], wrapped["record"]
                body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            else:
                record = json.loads(body)
            if digest_bytes(body) != stored:
                raise ValueError("checksum mismatch")
            if not isinstance(record, dict):
                raise ValueError("a record is a JSON object")
            return record, body
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            self._discard(path)
            return None

    @staticmethod
    def _discard(path: str | Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# A record file: _RECORD_HEAD, the body's 64-hex digest, _RECORD_MID, the canonical body, _RECORD_TAIL.
_RECORD_HEAD, _RECORD_MID, _RECORD_TAIL = b'{"%s":"' % ALGORITHM.encode(), b'","record":', b"}\n"
_RECORD_BODY_AT = len(_RECORD_HEAD) + 64 + len(_RECORD_MID)


def _split_record(text: bytes) -> tuple[str | None, bytes | None]:
    """(stored digest, canonical body) of a record file as :meth:`Cache.put_record` writes it, else (None, None).

    The digest is checked against the body's bytes as stored: no second encoding of the record
    (which was a third of the time of planning an unchanged item).
    """
    digest_at = len(_RECORD_HEAD)
    if (text.startswith(_RECORD_HEAD) and text.endswith(_RECORD_TAIL)
            and text[digest_at + 64:_RECORD_BODY_AT] == _RECORD_MID):
        return text[digest_at:digest_at + 64].decode("ascii", "replace"), text[_RECORD_BODY_AT:-len(_RECORD_TAIL)]
    return None, None


def _parse(path: Path, size: int, trailer: bytes, read) -> tuple[dict[str, Any], dict[str, Any], int, int]:
    """Header, array info and the array's byte range [start, stop) of an entry."""
    meta_len, magic = _TRAILER.unpack(trailer)
    if magic != _MAGIC or read(0, len(_MAGIC)) != _MAGIC:
        raise ValueError("bad magic")
    stop = size - _TRAILER.size - meta_len
    if stop < len(_MAGIC):
        raise ValueError("truncated")
    meta = json.loads(read(stop, stop + meta_len))
    info = meta.pop("_array")
    if not isinstance(info.get(ALGORITHM), str):
        raise ValueError(f"no {ALGORITHM} checksum (an entry of another cache format)")
    expected = int(np.prod(info["shape"], dtype=np.int64)) * np.dtype(info["dtype"]).itemsize
    if stop - len(_MAGIC) != expected:
        raise ValueError(f"array is {stop - len(_MAGIC)} bytes, its header says {expected}")
    return meta, info, len(_MAGIC), stop


class ArrayWriter:
    """An array written slab by slab into a temp file next to its entry, renamed on ``commit``.

    ``on_full``: called with the error when the file system is full; the entry is then dropped
    (its temp file removed) and later writes, hashes and the commit do nothing. Without it the
    error is raised. Writes and hashes may run on two threads (one each).
    """

    def __init__(self, path: Path, on_full=None):
        self._on_full = on_full
        self._dropped = False
        self._file: TempFile | None = None
        self._digest = new_hasher()
        self._dtype: np.dtype | None = None
        self._guarded(self._open, path)

    def _open(self, path: Path) -> None:
        self._file = TempFile(path)  # a medflow temp name: a killed run's is removed by the next run
        self._file.write(_MAGIC)

    def _guarded(self, write, *args) -> None:
        """``write(*args)`` unless the entry was dropped; a full file system drops it (see the class)."""
        if self._dropped:
            return
        try:
            write(*args)
        except FileSystemError as exc:
            if self._on_full is None or not cache_is_full(exc):
                raise
            self._dropped = True
            self.abort()  # the space of the bytes written so far comes back at once
            self._on_full(exc)

    def parts(self, array: np.ndarray) -> list:
        """The bytes ``array`` appends (call in order; then :meth:`write_parts` and :meth:`hash_parts`)."""
        array = np.ascontiguousarray(array)
        if array.dtype.hasobject:
            raise TypeError("object arrays cannot be cached")
        if self._dtype is None:
            self._dtype = array.dtype
        elif array.dtype != self._dtype:
            raise TypeError(f"slab dtype {array.dtype} differs from {self._dtype}")
        return [memoryview(array).cast("B")] if array.size else []

    def write_parts(self, parts: list) -> None:
        self._guarded(self._write_parts, parts)

    def _write_parts(self, parts: list) -> None:
        for data in parts:
            self._file.write(data)

    def hash_parts(self, parts: list) -> None:
        if self._dropped:
            return
        for data in parts:
            self._digest.update(data)

    def write(self, array: np.ndarray) -> None:
        parts = self.parts(array)
        self.hash_parts(parts)
        self.write_parts(parts)

    def commit(self, header: dict[str, Any], shape: tuple[int, ...]) -> None:
        """Finish the entry: ``shape`` is the whole array's (checked against the bytes written)."""
        self._guarded(self._commit, header, shape)

    def _commit(self, header: dict[str, Any], shape: tuple[int, ...]) -> None:
        meta = dict(header)
        meta["_array"] = {
            "dtype": (self._dtype or np.dtype(np.float32)).str,
            "shape": list(shape),
            ALGORITHM: self._digest.hexdigest(),
        }
        meta_bytes = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()
        self._file.write(meta_bytes)
        self._file.write(_TRAILER.pack(len(meta_bytes), _MAGIC))
        self._file.commit(mode=0o600)

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
