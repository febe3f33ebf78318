"""Atomic file writes: a temp file in the same folder, fsync, then ``os.replace``.

A reader (or a resumed build) never sees a partial file: either the old file, or
no file, or the complete new one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; outputs get the mode a plain
# open() would give them (0666 minus the umask), unless a caller asks for another.
DEFAULT_FILE_MODE = 0o666 & ~_current_umask()


def atomic_write(
    path: Path, write: Callable[[BinaryIO], None], *, mode: int | None = None, durable: bool = False
) -> str:
    """Write ``path`` atomically through ``write(fileobj)`` and return the sha256 of its bytes.

    The temp file lives in the destination folder (same filesystem, so ``os.replace``
    is atomic) and is removed if ``write`` raises. ``mode`` sets permissions (e.g. 0o600).
    A killed process never leaves a partial file under ``path``. ``durable=True`` also
    fsyncs before the rename, so the bytes survive a power cut (slow: used for the
    manifest; cache entries carry their own hash and outputs their manifest sha256).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            write(hashing)
            raw.flush()
            if durable:
                os.fsync(raw.fileno())
        os.chmod(tmp_name, DEFAULT_FILE_MODE if mode is None else mode)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return hashing.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None, durable: bool = False) -> str:
    """Write ``data`` to ``path`` atomically; returns its sha256."""
    return atomic_write(path, lambda f: f.write(data), mode=mode, durable=durable)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class _HashingWriter:
    """File-like wrapper that hashes every byte written through it."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._digest = hashlib.sha256()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._digest.update(view)
        return self._raw.write(view)

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    # numpy.save checks for these on file-like objects
    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, *args):
        raise OSError("hashing writer is not seekable")

    def seekable(self) -> bool:
        return False
