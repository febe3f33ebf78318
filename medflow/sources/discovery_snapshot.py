"""What discovery found in a folder, kept for the next build while the folder's listing is unchanged.

A rebuild's discovery asked the memo about every file (its header facts and digest: one entry
parsed per file, ~25 us a file with the grouping) to find the items the last build found.
A snapshot keeps that result, the items (with their fingerprints and their files' digests) and
the skipped files, under the *listing key*: a digest of what discovery reads of the folder
besides the files' contents, i.e. the source folder, discovery's settings and rules (filter,
``mismatched_size``, medflow's version), and for every file the walk yields its relative path,
size, modification and change times, inode and device, plus the walk's own findings (hidden
files, unlistable folders). A file cannot change without changing its change time (which no
user call can set back), so the same key means the same discovery; a hit costs the walk and one
``lstat`` a file. Any difference, a file behind a symbolic link (its target's changes would not
show), ``--verify`` or a keyed recipe (whose memo keeps nothing identifying) means a full
discovery, as without a snapshot.

One snapshot per source folder and settings, in the cache (``discovery/``, owner-only: its
paths and series descriptions are as identifying as the memo's), replaced atomically; a damaged
or unreadable one reads as absent. Layout, one JSON text a line: ``{"format", "key"}``, the
skipped files, one line per item, and last ``{"blake3": digest of every line before it}``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from stat import S_ISLNK
from typing import Any

from medflow.errors import FileSystemError
from medflow.hashing import ALGORITHM, new_hasher
from medflow.sources.base import ItemRef
from medflow.writers.atomic import atomic_write

FORMAT = 1
FOLDER = "discovery"


class Snapshot:
    """The snapshot of one source folder's discovery under one listing (see the module docstring)."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key

    @classmethod
    def of_listing(cls, folder: Path, root: Path, settings: dict[str, Any],
                   candidates: Iterable[tuple[str, str]], walk_skipped: list[tuple[str, str]]) -> Snapshot | None:
        """The snapshot for this listing, kept in ``folder``; ``None`` when it cannot be trusted
        (a symbolic link among the ``candidates``, a file gone before its ``lstat``).

        ``candidates``: discovery's walk, ``(relative path, absolute path)``; ``walk_skipped``
        what the walk left out; ``settings``: everything else discovery's result depends on
        (JSON-able).
        """
        from medflow import __version__

        head = json.dumps({"format": FORMAT, "medflow": __version__, "root": os.fspath(root), "settings": settings},
                          sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogateescape")
        name = hashlib.sha256(head).hexdigest()[:32]  # one snapshot per folder and settings
        key = hashlib.sha256(head)
        for rel, path in candidates:
            try:
                st = os.lstat(path)
            except OSError:
                return None
            if S_ISLNK(st.st_mode):
                return None
            key.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}\n"
                       .encode("utf-8", "surrogateescape"))
        key.update(json.dumps(walk_skipped, ensure_ascii=True).encode())
        return cls(Path(folder) / f"{name}.json", key.hexdigest())

    def load(self, root: str) -> tuple[list[ItemRef], list[tuple[str, str]], dict[str, str]] | None:
        """``(items, skipped, digests)`` of the snapshot when it holds this listing, else ``None``.

        ``digests``: relative path -> content digest of every file of the items.
        """
        try:
            with open(self.path, "rb") as f:
                head = f.readline()
                if json.loads(head) != {"format": FORMAT, "key": self.key}:
                    return None
                hasher = new_hasher()
                hasher.update(head)
                skipped_line = f.readline()
                hasher.update(skipped_line)
                skipped = [(str(rel), str(reason)) for rel, reason in json.loads(skipped_line)]
                items, digests = [], {}
                for line in f:
                    if line.startswith(b'{"'):  # the trailer: the digest of every line before it
                        if json.loads(line) != {ALGORITHM: hasher.hexdigest()} or f.read(1):
                            return None
                        return items, skipped, digests
                    hasher.update(line)
                    (item_id, kind, modality, description, fingerprint, files, file_digests, notes, broken,
                     labels) = json.loads(line)
                    items.append(ItemRef(item_id=item_id, root=root, files=tuple(files), kind=kind,
                                         modality=modality, series_description=description, fingerprint=fingerprint,
                                         notes=tuple(notes), broken_files=tuple((rel, why) for rel, why in broken),
                                         labels=tuple(labels)))
                    digests.update(zip(files, file_digests, strict=True))
            return None  # cut before its trailer
        except (OSError, ValueError, TypeError, KeyError):
            return None  # absent, damaged or of another layout: discovery runs in full

    def save(self, items: list[ItemRef], skipped: list[tuple[str, str]], digest_of) -> None:
        """Keep ``items`` and ``skipped`` under this listing; ``digest_of(rel)``: a file's content digest.

        Written line by line (never held whole). Best effort: a snapshot that cannot be written (a
        full or read-only cache) only costs the next build a full discovery.
        """
        def write(f) -> None:
            hasher = new_hasher()

            def line(value) -> None:
                text = json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"
                hasher.update(text)
                f.write(text)

            line({"format": FORMAT, "key": self.key})
            line(skipped)
            for item in items:
                line([item.item_id, item.kind, item.modality, item.series_description, item.fingerprint,
                      list(item.files), [digest_of(rel) for rel in item.files], list(item.notes),
                      [list(pair) for pair in item.broken_files], list(item.labels)])
            f.write(json.dumps({ALGORITHM: hasher.hexdigest()}).encode() + b"\n")

        try:
            atomic_write(self.path, write, mode=0o600)
        except FileSystemError:
            pass
