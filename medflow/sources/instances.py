"""Discovery for chains that never read pixels (de-identify -> DICOM): one item per DICOM file.

Such a chain writes every input object back (images, localizers, 2-D images without patient
geometry, multi-frame, and objects without pixel data: SR, KO, PR, SEG, RTSTRUCT), so nothing
is grouped and no header is parsed here: the worker parses each file once, applies the
series-level filters to it and writes it (:mod:`medflow.engine.instance`). Discovery only
walks the folder with the same rules as :func:`medflow.sources.discovery.discover_dicom`
(include/exclude globs, hidden files, DICOMDIR) and sets aside files that are visibly not
DICOM (no ``DICM`` marker at byte 128 and no data set start).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from medflow.sources.base import ItemRef, item_fingerprint
from medflow.sources.discovery import _RAW_DATASET_STARTS, Discovery, _walk
from medflow.sources.fingerprint import FingerprintMemo
from medflow.sources.prescan import INSTANCES, ChunkMap, prescan

if TYPE_CHECKING:
    from medflow.recipe.model import SeriesFilter

INSTANCE_PREFIX = "dcm"


def instance_item_id(rel: str) -> str:
    """Stable id of the file at ``rel``: ``dcm-<first 16 hex of sha256(path)>``.

    De-identifying builds replace it with a keyed id (:func:`medflow.engine.privacy.keyed_item_id`).
    """
    return f"{INSTANCE_PREFIX}-{hashlib.sha256(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


def dicom_kind(path: Path) -> str | None:
    """``None`` when ``path`` starts like a DICOM file, else the one-line reason it is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if len(head) == 132 and head[128:132] == b"DICM":
        return None
    if head[:2] in _RAW_DATASET_STARTS:
        return None  # a data set written without preamble: the worker tries to parse it
    return "not a DICOM file"


def discover_instances(
    root: Path, filter: SeriesFilter, memo: FingerprintMemo, map_chunks: ChunkMap | None = None  # noqa: A002
) -> Discovery:
    """Every DICOM file under ``root`` as its own item (kind ``"instance"``), sorted by item id.

    ``skipped`` lists the files left out here (not DICOM, hidden, DICOMDIR, unlistable
    folders) with their reason; path-glob filtering happens before and is silent, as in
    :func:`~medflow.sources.discovery.discover_dicom`. ``map_chunks``: worker processes that
    hash many new files (:mod:`medflow.sources.prescan`); the result is the same without.
    """
    discovery = Discovery()
    candidates = list(_walk(root, filter, discovery.skipped))
    prescan([name for _, name in candidates], memo, map_chunks, INSTANCES)
    for rel, name in candidates:
        path = Path(name)
        if not path.is_file():
            reason = "cannot read: dangling or looping symbolic link" if path.is_symlink() else "not a regular file"
            discovery.skipped.append((rel, reason))
            continue
        problem = dicom_kind(path)
        if problem is not None:
            discovery.skipped.append((rel, problem))
            continue
        try:
            digest = memo.digest(path)
        except OSError as exc:
            discovery.skipped.append((rel, f"cannot read: {exc.strerror or exc}"))
            continue
        discovery.items.append(ItemRef(
            item_id=instance_item_id(rel),
            root=str(root),
            files=(rel,),
            kind="instance",
            fingerprint=item_fingerprint([(rel, digest)]),
        ))
    discovery.items.sort(key=lambda item: item.item_id)
    return discovery
