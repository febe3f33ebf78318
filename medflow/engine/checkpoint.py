"""Samples in and out of the cache: the array as bytes, everything else as a JSON header."""

from __future__ import annotations

import numpy as np

from medflow.engine.cache import Cache
from medflow.sample import Geometry, Sample


def save_sample(cache: Cache, key: str, sample: Sample) -> None:
    """Store ``sample`` under ``key`` (pixels raw, the rest JSON)."""
    cache.put(key, sample_header(sample), sample.pixels)


def sample_header(sample: Sample) -> dict:
    """Everything of a Sample but its pixels, as JSON."""
    return {
        "item_id": sample.item_id,
        "axes": sample.axes,
        "channels": list(sample.channels),
        "geometry": sample.geometry.to_json() if sample.geometry else None,
        "headers": sample.headers,
        "meta": sample.meta,
        "source_files": list(sample.source_files),
        "private_tables": sample.private_tables,
    }


def load_sample(cache: Cache, key: str) -> Sample | None:
    """The Sample under ``key``, ``None`` when absent; raises CacheError when corrupt."""
    entry = cache.get(key)
    if entry is None:
        return None
    header, pixels = entry
    return sample_from_header(header, pixels)


def sample_from_header(header: dict, pixels: np.ndarray) -> Sample:
    """The Sample of :func:`sample_header` with ``pixels``."""
    geometry = Geometry.from_json(header["geometry"]) if header["geometry"] else None
    return Sample(
        item_id=header["item_id"],
        pixels=np.asarray(pixels),
        axes=header["axes"],
        channels=tuple(header["channels"]),
        geometry=geometry,
        headers=header["headers"],
        meta=header["meta"],
        source_files=tuple(header.get("source_files", ())),
        private_tables=header.get("private_tables", {}),
    )
