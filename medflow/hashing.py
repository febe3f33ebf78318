"""Content digests of file and array bytes: BLAKE3, the algorithm a build records.

Every checksum of *content* goes through here: output files (the manifest), input files (their
fingerprints), cache entries (their integrity check). BLAKE3 hashes ~5 GB/s on one core where
sha256 does ~1 GB/s, and a cold build hashes every output byte, every cached byte and every input
byte once. It runs single-threaded: the engine already gives each item its share of the cores.
The digest is 32 bytes (64 hex digits), as ``b3sum`` prints it.

Keys and identities made from small strings (cache keys, pseudonyms, the recipe hash) are not
content digests: they stay sha256/HMAC-SHA256 where they are made.

A digest is recorded under the name of its algorithm (``{"path", "blake3", "size"}``), so a
reader tells an entry written by an older medflow (``"sha256"``) and checks it with sha256.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any, Protocol

import blake3

#: The algorithm of new digests, and the name they are recorded under.
ALGORITHM = "blake3"
#: Algorithms older builds recorded content digests with, still checked when read back.
LEGACY_ALGORITHMS = ("sha256",)
_CHUNK = 1 << 20  # file reads: 1 MiB, large enough for full speed, small enough for any file


class Hasher(Protocol):
    """A streaming hasher: ``update`` with bytes-like objects, then ``hexdigest``."""

    def update(self, data: Any, /) -> Any: ...

    def hexdigest(self) -> str: ...


def new_hasher(algorithm: str = ALGORITHM) -> Hasher:
    """A fresh streaming hasher of ``algorithm`` (``update`` takes any contiguous buffer).

    Raises:
        ValueError: ``algorithm`` is neither :data:`ALGORITHM` nor one of :data:`LEGACY_ALGORITHMS`.
    """
    if algorithm == ALGORITHM:
        return blake3.blake3(max_threads=1)
    if algorithm in LEGACY_ALGORITHMS:
        return hashlib.new(algorithm)
    raise ValueError(f"unknown content digest algorithm {algorithm!r} (medflow knows {ALGORITHM}, "
                     f"{', '.join(LEGACY_ALGORITHMS)})")


def digest_bytes(data: Any, algorithm: str = ALGORITHM) -> str:
    """Hex digest of a bytes-like ``data``."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return hasher.hexdigest()


def file_digest(path: str | os.PathLike[str], algorithm: str = ALGORITHM) -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks into one reused buffer.

    Raises:
        OSError: as :func:`open` and reading the file.
    """
    hasher = new_hasher(algorithm)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            hasher.update(view[:n])
    return hasher.hexdigest()


def recorded_digest(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(algorithm, hex digest)`` an entry records (``{"path", "blake3" | "sha256", ...}``), or None.

    The current algorithm's field wins when an entry has several.
    """
    for algorithm in (ALGORITHM, *LEGACY_ALGORITHMS):
        value = entry.get(algorithm)
        if isinstance(value, str):
            return algorithm, value
    return None


def manifest_input_algorithm(manifest: Mapping[str, Any]) -> str:
    """The algorithm of a manifest's input digests (the items' ``files`` pairs name none).

    sha256 in manifests before version 2 (an older medflow), :data:`ALGORITHM` since.
    """
    version = manifest.get("manifest_version")
    return LEGACY_ALGORITHMS[0] if isinstance(version, int) and version < 2 else ALGORITHM
