"""Label readers: DICOM SEG, RTSTRUCT and mask files onto an item's own image grid.

Pairing (which label file belongs to which item) is discovery's job
(:mod:`medflow.sources.pairing`); this package reads the paired files when the item's
pixels are read, and gives the Sample an integer label map on its ``zyx`` grid plus the
segments' names and codes (:class:`medflow.sample.Segment`).

Label values: without ``segments`` in the recipe, a SEG keeps its SegmentNumbers, an
RTSTRUCT numbers its ROIs 1.. in StructureSetROISequence order and a mask keeps its values.
With ``segments: [name, ...]``, segment ``name`` gets value ``1 + its index`` in every item
(so a dataset's values agree), segments of the same name merge, and segments not listed are
left out (reported). Overlap (a voxel in two segments): ``overlap: error`` (default) fails
the item naming both segments; ``last`` lets the segment with the higher value win.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medflow.errors import InputError
from medflow.sample import Sample, Segment
from medflow.sources.labels.grid import GridMismatch, ImageGrid

LABEL_KINDS = ("seg", "rtstruct", "mask")


def attach_labels(sample: Sample, label_files: tuple[str, ...], root: str, options: dict[str, Any]) -> Sample:
    """``sample`` with the label map of ``label_files`` (paths relative to ``root`` or absolute).

    ``options``: ``from`` (seg | rtstruct | mask), ``segments`` (names or None),
    ``overlap`` (error | last). A Sample without geometry or with color pixels is refused.

    Raises:
        InputError: a label file cannot be read or placed on the image, or segments overlap
            under ``overlap: error``; the message names the label file.
    """
    from medflow.sources.labels.masks import read_mask
    from medflow.sources.labels.rtstruct import read_rtstruct
    from medflow.sources.labels.seg import read_seg

    paths = [Path(root) / rel for rel in label_files]
    if sample.geometry is None:
        raise InputError(os.fspath(paths[0]), f"item {sample.item_id} has no patient geometry to place labels on")
    try:
        grid = ImageGrid(sample.geometry, sample.pixels.shape[:3])
    except GridMismatch as exc:
        raise InputError(os.fspath(paths[0]), str(exc)) from None
    names = options.get("segments")
    parts: list[tuple[Segment, np.ndarray]] = []
    notes: list[str] = []
    max_offset = 0.0
    for path in paths:
        kind = options.get("from", "seg")
        if kind == "seg":
            found, found_notes, offset = read_seg(path, grid)
        elif kind == "rtstruct":
            found, found_notes, offset = read_rtstruct(path, grid)
        else:
            found, found_notes, offset = read_mask(path, grid, names)
        parts += found
        notes += found_notes
        max_offset = max(max_offset, offset)
    label, segments, paint_notes = paint(parts, grid.shape, names, options.get("overlap", "error"),
                                         os.fspath(paths[0]))
    notes += paint_notes
    if max_offset > 0:
        notes.append(f"label planes sit up to {max_offset:.4g} mm off their slices along the normal "
                     f"(tolerance {grid.tolerance_mm:.3g} mm)")
    meta = dict(sample.meta)
    meta["labels"] = {
        "from": options.get("from", "seg"),
        "segments": [s.to_json() for s in segments],
        "max_plane_offset_mm": round(max_offset, 6),
        "notes": notes,
    }
    return sample.replace(label=label, segments=tuple(segments), meta=meta)


def paint(
    parts: list[tuple[Segment, np.ndarray]], shape, names: list[str] | None, overlap: str, where: str
) -> tuple[np.ndarray, list[Segment], list[str]]:
    """One integer label map from per-segment masks (rules in the module docstring).

    Returns:
        ``(label, segments, notes)``: uint8 (uint16 above 255 values) ``zyx`` map, the
        segments sorted by value, and findings (left-out segments, listed names not found).
    """
    notes: list[str] = []
    valued: list[tuple[int, Segment, np.ndarray]] = []
    if names is not None:
        for segment, mask in parts:
            if segment.name not in names:
                notes.append(f"segment {segment.name!r} ({segment.source}) is not in 'segments': left out")
                continue
            valued.append((names.index(segment.name) + 1, segment, mask))
        present = {segment.name for _, segment, _ in valued}
        notes += [f"segment {name!r} is not in this item's labels (value {i + 1} stays empty)"
                  for i, name in enumerate(names) if name not in present]
    else:
        valued = [(segment.value, segment, mask) for segment, mask in parts]
    valued.sort(key=lambda entry: entry[0])
    top = max([v for v, _, _ in valued] + [len(names or [])] + [0])
    label = np.zeros(shape, dtype=np.uint8 if top <= 255 else np.uint16)
    merged: dict[int, Segment] = {}
    for value, segment, mask in valued:
        clash = mask & (label != 0) & (label != value)
        if clash.any():
            other = merged[int(label[clash].max())]
            if overlap == "error":
                raise InputError(
                    where,
                    f"segments {other.name!r} ({other.source}) and {segment.name!r} ({segment.source}) overlap in "
                    f"{int(clash.sum())} voxel(s); a label map holds one value per voxel: set labels.overlap: last "
                    "(the higher value wins; order them with labels.segments) or list only one of them",
                )
            notes.append(f"{int(clash.sum())} voxel(s) of {other.name!r} overlapped by {segment.name!r}: "
                         f"{segment.name!r} kept (overlap: last)")
        label[mask] = value
        if value in merged:
            old = merged[value]
            merged[value] = Segment(value, old.name, old.category or segment.category, old.type or segment.type,
                                    f"{old.source}; {segment.source}")
        else:
            name = names[value - 1] if names is not None else segment.name
            merged[value] = Segment(value, name, segment.category, segment.type, segment.source)
    if names is not None:
        for i, name in enumerate(names):
            merged.setdefault(i + 1, Segment(i + 1, name))
    return label, [merged[v] for v in sorted(merged)], notes
