"""Content-addressed cache: bytes under keys, nothing else.

Two kinds of entries, both written atomically (temp file + ``os.replace``) so two
builds may share a cache folder:

* arrays with a JSON header (checkpoints): ``objects/<k[:2]>/<k>.mfc``. The header
  records the array's sha256; a mismatch on read is a corrupt entry:
  :class:`CacheError` is raised and the entry is deleted so it is recomputed.
* small JSON records (e.g. an item's output record): ``records/<k[:2]>/<k>.json``.

The cache never decides what is stale: the plan does, by choosing keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from medflow.errors import CacheError
from medflow.writers.atomic import atomic_write, atomic_write_bytes

_MAGIC = b"MFCACHE1"
_HEADER = struct.Struct("<8sQ")  # magic, length of the JSON header in bytes


class Cache:
    """A cache folder (created on first write)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # --- arrays -----------------------------------------------------------------
    def _object_path(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / f"{key}.mfc"

    def has(self, key: str) -> bool:
        return self._object_path(key).is_file()

    def put(self, key: str, header: dict[str, Any], array: np.ndarray) -> None:
        """Store ``array`` (any dtype except object) with a JSON-able ``header`` under ``key``."""
        array = np.ascontiguousarray(array)
        if array.dtype.hasobject:
            raise TypeError("object arrays cannot be cached")
        payload = memoryview(array).cast("B") if array.size else b""
        meta = dict(header)
        meta["_array"] = {
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        meta_bytes = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()

        def write(f) -> None:
            f.write(_HEADER.pack(_MAGIC, len(meta_bytes)))
            f.write(meta_bytes)
            f.write(payload)

        atomic_write(self._object_path(key), write)

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
            magic, meta_len = _HEADER.unpack_from(data)
            if magic != _MAGIC:
                raise ValueError("bad magic")
            meta = json.loads(data[_HEADER.size : _HEADER.size + meta_len])
            info = meta.pop("_array")
            body = memoryview(data)[_HEADER.size + meta_len :]
            if hashlib.sha256(body).hexdigest() != info["sha256"]:
                raise ValueError("array bytes do not match their sha256")
            array = np.frombuffer(body, dtype=np.dtype(info["dtype"])).reshape(info["shape"]).copy()
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            self._discard(path)
            raise CacheError(f"corrupt cache entry {path}: {exc}") from exc
        return meta, array

    # --- records ----------------------------------------------------------------
    def _record_path(self, key: str) -> Path:
        return self.root / "records" / key[:2] / f"{key}.json"

    def put_record(self, key: str, record: dict[str, Any]) -> None:
        atomic_write_bytes(self._record_path(key), json.dumps(record, sort_keys=True, indent=1).encode())

    def get_record(self, key: str) -> dict[str, Any] | None:
        """The record under ``key``, ``None`` when absent; a corrupt record is deleted and reads as absent."""
        path = self._record_path(key)
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            self._discard(path)
            return None

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
