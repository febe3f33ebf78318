"""What a source hands the engine: item references, not pixels."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class ItemRef:
    """One item of a dataset, as found by discovery (no pixel data read yet).

    Attributes:
        item_id: stable id, derived from UIDs by hashing (never from patient tags):
            ``<modality>-<16 hex>``; see :func:`make_item_id`.
        root: absolute path of the source folder.
        files: the item's files, POSIX paths relative to ``root``, sorted.
        kind: ``"series"`` (single-frame files sharing SeriesInstanceUID),
            ``"multiframe"`` (one multi-frame instance) or ``"instance"`` (any one DICOM
            file, for chains that never read pixels: see :mod:`medflow.sources.instances`).
        modality: Modality (0008,0060).
        series_description: SeriesDescription (0008,103E), may be empty.
        fingerprint: sha256 over the (relative path, file content digest) pairs: changes
            when any of the item's files changes, appears or disappears.
        notes: findings of discovery for this item (e.g. files skipped).
        broken_files: ``(relative path, reason)`` of files of this series whose header
            is cut off or unreadable: the item fails naming them rather than being
            built with a hole.
        labels: label files paired with the item (SEG, RTSTRUCT or masks; POSIX paths relative
            to ``root``, may start with ``..``), read with its pixels; see
            :mod:`medflow.sources.pairing`.
    """

    item_id: str
    root: str
    files: tuple[str, ...]
    kind: Literal["series", "multiframe", "instance"]
    modality: str = ""
    series_description: str = ""
    fingerprint: str = ""
    notes: tuple[str, ...] = field(default=())
    broken_files: tuple[tuple[str, str], ...] = field(default=())
    labels: tuple[str, ...] = field(default=())

    @property
    def all_files(self) -> list[str]:
        """Every file the item read or failed to read: ``files`` then the broken ones."""
        return [*self.files, *(rel for rel, _ in self.broken_files)]


def make_item_id(modality: str, *uids: str) -> str:
    """Stable item id from UIDs: ``<modality lower>-<first 16 hex of sha256(uids)>``.

    UIDs are hashed because they can themselves identify a patient (PS3.15 E.1).
    """
    digest = hashlib.sha256("\\".join(uids).encode("ascii", "replace")).hexdigest()[:16]
    prefix = "".join(ch for ch in (modality or "xx").lower() if ch.isalnum()) or "xx"
    return f"{prefix}-{digest}"


def item_fingerprint(file_hashes: list[tuple[str, str]]) -> str:
    """sha256 over sorted ``(relative path, content digest)`` pairs (a key over small strings).

    The digests are :func:`medflow.hashing.file_digest`'s (BLAKE3) of the files' bytes.
    """
    digest = hashlib.sha256()
    for rel_path, sha in sorted(file_hashes):
        digest.update(rel_path.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
        digest.update(sha.encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()
