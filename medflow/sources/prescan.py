"""Header facts and content digests of many new files at once, on the build's worker processes.

Discovery needs two things of every file it has not seen unchanged before: its header facts
(:func:`medflow.sources.discovery.header_facts`) and its content digest (the items'
fingerprints). Each reads one file only, and together they are most of a cold discovery
(~0.4 ms per tiny file, ~0.8 ms per 512 x 512 slice, one core). With more than one worker and
enough such files, :func:`prescan` has them read on worker processes (the reusable ones the
build's items then run on, so a build that goes parallel anyway pays no extra start-up), and
the parent keeps what needs every file at once: grouping into items, planning.

What a worker read is taken only for a file whose size and mtime are still those the worker
saw before and after reading it (:meth:`FingerprintMemo.prime`); any other file, and any
failure, is left to the parent's own scan, which reports problems as before. So the items,
their fingerprints and every skip reason are the same as a serial discovery's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from stat import S_ISREG
from typing import Any

from medflow.sources.fingerprint import FingerprintMemo

#: Fewer new files than this: the parent reads them (waking two workers costs ~0.6-0.9 s, which
#: a build of many items pays anyway, and reading 1,000 files takes 0.4-0.8 s on one core).
MIN_FILES = 1000
#: Files per task sent to a worker (a task costs ~1 ms of pickling and IPC).
CHUNK = 64

#: ``map_chunks(function, chunks)``: ``function(chunk)`` for every chunk on worker processes,
#: results in any order (:func:`medflow.engine.execute.map_on_workers`).
ChunkMap = Callable[[Callable[[list[str]], Any], Iterable[list[str]]], Iterable[Any]]

SERIES, INSTANCES = "series", "instances"


def prescan(
    paths: list[str], memo: FingerprintMemo, map_chunks: ChunkMap | None, what: str, facts_name: str | None = None
) -> dict[str, dict]:
    """Read, on workers, the files of ``paths`` the memo knows nothing valid of; returns their facts.

    Args:
        paths: the candidate files (absolute, as discovery will ask the memo about them).
        memo: primed with every digest (and, under ``facts_name``, facts) a worker read.
        map_chunks: runs chunks on workers; ``None``: nothing is read here.
        what: :data:`SERIES` (header facts, then the digest of image files and of broken files
            of a series) or :data:`INSTANCES` (the digest of every file that starts like DICOM).
        facts_name: the memo's name for the header facts (:data:`SERIES`).

    Returns:
        ``{path: header facts}`` of the files read (:data:`SERIES`), for discovery to use as
        the memo's; empty when there was too little to read or no ``map_chunks``.
    """
    if map_chunks is None or len(paths) < MIN_FILES:
        return {}
    wanted = [path for path in paths if not _known(path, memo, what, facts_name)]
    if len(wanted) < MIN_FILES:
        return {}
    chunks = [wanted[i : i + CHUNK] for i in range(0, len(wanted), CHUNK)]
    scanned: dict[str, dict] = {}
    try:
        for rows in map_chunks(_scanner(what), chunks):
            for path, size, mtime_ns, facts, digest in rows:
                extras = {facts_name: facts} if facts is not None and facts_name else {}
                if memo.prime(path, size, mtime_ns, digest, extras) and facts is not None:
                    scanned[path] = facts
    except Exception:  # noqa: BLE001 - a worker died: what was not read, the caller reads
        pass
    return scanned


def _known(path: str, memo: FingerprintMemo, what: str, facts_name: str | None) -> bool:
    """Whether the memo already holds what discovery will ask of ``path`` (so no worker reads it)."""
    try:
        if what == SERIES:
            facts = memo.get_extra(path, facts_name)
            if facts is None:
                return False
            if "problem" in facts and not facts.get("series_uid"):
                return True  # a skipped file: never hashed
        return memo.known_digest(path) is not None
    except OSError:
        return True  # cannot be looked at: the parent's scan says why


def _scanner(what: str) -> Callable[[list[str]], list[tuple]]:
    return scan_series_files if what == SERIES else scan_instance_files


def scan_series_files(paths: list[str]) -> list[tuple[str, int, int, dict, str | None]]:
    """In a worker: ``(path, size, mtime_ns, header facts, digest or None)`` of each readable file.

    The digest is taken for files discovery hashes: images, and files that fail inside a
    series (their item then fails naming them); not for files it skips.
    """
    from medflow.sources.discovery import forget_shared_values, header_facts

    def read(path: str) -> tuple[dict, str | None]:
        facts = header_facts(path)
        hashed = "problem" not in facts or bool(facts.get("series_uid"))
        return facts, _digest(path) if hashed else None

    try:
        return _scan(paths, read)  # values shared in the chunk are pickled once
    finally:
        forget_shared_values()  # a reusable worker keeps nothing of the source


def scan_instance_files(paths: list[str]) -> list[tuple[str, int, int, None, str]]:
    """In a worker: ``(path, size, mtime_ns, None, digest)`` of each file that starts like DICOM."""
    from medflow.sources.instances import dicom_kind

    def read(path: str) -> tuple[None, str | None]:
        return None, _digest(path) if dicom_kind(path) is None else None

    return [row for row in _scan(paths, read) if row[4] is not None]


def _scan(paths: list[str], read: Callable[[str], tuple[Any, str | None]]) -> list[tuple]:
    rows = []
    for path in paths:
        try:
            before = os.stat(path)
            if not S_ISREG(before.st_mode):
                continue  # a FIFO or device would block or never end: the parent judges it
            facts, digest = read(path)
            after = os.stat(path)
        except Exception:  # noqa: BLE001 - any failure: the parent reads the file and reports it
            continue
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            continue  # changed while read
        rows.append((path, before.st_size, before.st_mtime_ns, facts, digest))
    return rows


def _digest(path: str) -> str:
    from medflow.hashing import file_digest

    return file_digest(path)
