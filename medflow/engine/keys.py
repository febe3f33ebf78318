"""Canonical hashing and cache keys.

Cache key of link k of an item's chain (link 0 is the read) =
sha256(canonical JSON of {previous key, step name, version, params}), and link 0's
key covers the cache format version, the item's content fingerprint and the
reader's version and params. Canonical JSON sorts keys, so key order in a recipe
never changes a key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

CACHE_FORMAT_VERSION = 4  # 4: entries checked with BLAKE3 (medflow.hashing), not sha256


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace; NaN/inf are refused (not JSON)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def hash_json(value: Any) -> str:
    """sha256 hex digest of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


class KeyTemplate:
    """:func:`hash_json` of one dict for many values of one of its string fields.

    Every item of a build hashes the same reader and step params under another fingerprint or
    previous key: the canonical JSON around that field is made once, and each key costs one
    sha256 of the joined bytes (the same bytes :func:`canonical_json` gives, hence the same key).
    """

    _SLOT = "\x00medflow-key-slot\x00"  # escaped by JSON: no string of a recipe serializes to it

    def __init__(self, value: dict[str, Any], field: str):
        self._value, self._field = value, field
        text = canonical_json({**value, field: self._SLOT})
        parts = text.split(canonical_json(self._SLOT))
        self._parts = (parts[0], parts[1]) if len(parts) == 2 else None

    def key(self, field_value: str) -> str:
        """``hash_json({**value, field: field_value})``."""
        if self._parts is None:  # the slot's text occurs elsewhere too: the plain way
            return hash_json({**self._value, self._field: field_value})
        head, tail = self._parts
        return hashlib.sha256(head + canonical_json(field_value) + tail).hexdigest()


def read_key_template(reader: str, reader_version: int, reader_params: dict[str, Any]) -> KeyTemplate:
    """:func:`read_key` of these reader and params, for any fingerprint."""
    return KeyTemplate(
        {"format": CACHE_FORMAT_VERSION, "reader": reader, "version": reader_version, "params": reader_params},
        "fingerprint",
    )


def step_key_template(name: str, version: int, params: dict[str, Any]) -> KeyTemplate:
    """:func:`step_key` of this step and params, for any previous key."""
    return KeyTemplate({"step": name, "version": version, "params": params}, "prev")


def read_key(fingerprint: str, reader: str, reader_version: int, reader_params: dict[str, Any]) -> str:
    """Key of an item's read checkpoint."""
    return hash_json(
        {
            "format": CACHE_FORMAT_VERSION,
            "fingerprint": fingerprint,
            "reader": reader,
            "version": reader_version,
            "params": reader_params,
        }
    )


def step_key(previous_key: str, name: str, version: int, params: dict[str, Any]) -> str:
    """Key of the Sample after applying step ``name`` to the Sample under ``previous_key``."""
    return hash_json({"prev": previous_key, "step": name, "version": version, "params": params})


def output_key(final_key: str, writers: list[dict[str, Any]]) -> str:
    """Key of an item's output record: the final Sample's key plus every per-item writer (kind, version, params)."""
    return hash_json({"final": final_key, "writers": writers})


def output_key_template(writers: list[dict[str, Any]]) -> KeyTemplate:
    """:func:`output_key` of these writers, for any final key (the writers' params serialized once per build)."""
    return KeyTemplate({"writers": writers}, "final")
