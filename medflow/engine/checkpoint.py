"""Samples in and out of the cache: the array as bytes, everything else as a JSON header.

Source files are stored as indices into the item's file list, never as paths: exports name
folders after patients, and an entry stays valid when the source folder moves.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from medflow.engine.cache import Cache
from medflow.sample import Geometry, Sample, Segment
from medflow.sources.base import ItemRef


def save_sample(cache: Cache, key: str, sample: Sample, item: ItemRef) -> None:
    """Store ``sample`` of ``item`` under ``key`` (pixels raw, the rest JSON; a label map under its own key)."""
    if sample.label is not None:
        cache.put(_label_key(key), {"label_of": key}, sample.label)
    cache.put(key, sample_header(sample, item), sample.pixels)


def _label_key(key: str) -> str:
    return hashlib.sha256(f"label-of:{key}".encode()).hexdigest()


def sample_header(sample: Sample, item: ItemRef) -> dict:
    """Everything of a Sample but its pixels (and its originals), as JSON; files as indices into ``item.files``."""
    labelled = {"segments": [seg.to_json() for seg in sample.segments]} if sample.label is not None else {}
    return {
        **labelled,
        "item_id": sample.item_id,
        "axes": sample.axes,
        "channels": list(sample.channels),
        "geometry": sample.geometry.to_json() if sample.geometry else None,
        "headers": sample.headers,
        "meta": sample.meta,
        "source_file_indices": _file_indices(sample.source_files, item),
        "private_tables": sample.private_tables,
    }


def load_sample(cache: Cache, key: str, item: ItemRef) -> Sample | None:
    """The Sample under ``key``, ``None`` when absent; raises CacheError when corrupt."""
    entry = cache.get(key)
    if entry is None:
        return None
    header, pixels = entry
    sample = sample_from_header(header, pixels, item)
    if "segments" in header:
        label = cache.get(_label_key(key))
        if label is None:
            return None  # the label map is gone: recompute the entry
        sample = sample.replace(label=np.asarray(label[1]), segments=tuple(
            Segment.from_json(seg) for seg in header["segments"]))
    return sample


def sample_from_header(header: dict, pixels: np.ndarray, item: ItemRef) -> Sample:
    """The Sample of :func:`sample_header` with ``pixels``; source files resolved against ``item``."""
    geometry = Geometry.from_json(header["geometry"]) if header["geometry"] else None
    root = Path(item.root)
    return Sample(
        item_id=header["item_id"],
        pixels=np.asarray(pixels),
        axes=header["axes"],
        channels=tuple(header["channels"]),
        geometry=geometry,
        headers=header["headers"],
        meta=header["meta"],
        source_files=tuple(os.fspath(root / item.files[i]) for i in header.get("source_file_indices", ())),
        private_tables=header.get("private_tables", {}),
    )


def _file_indices(paths: tuple[str, ...], item: ItemRef) -> list[int]:
    root = Path(item.root)
    index = {os.fspath(root / rel): i for i, rel in enumerate(item.files)}
    return [index[os.fspath(Path(path))] for path in paths]
