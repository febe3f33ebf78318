"""DICOM Segmentation (PS3.3 A.51) frames placed on the image's own slices, read with highdicom.

highdicom (the Imaging Data Commons' library for SEG) decodes the frames (BINARY 1-bit
packing across frame boundaries, FRACTIONAL, compressed transfer syntaxes) and gives the
segment descriptions. Frames are placed by geometry, never by order or by reference: each
frame's ImagePositionPatient (Plane Position functional group, C.7.6.16.2.3) is matched to
the nearest slice along the normal within a tolerance (see
:mod:`medflow.sources.labels.grid`), so a SEG that references no image (pairs by frame of
reference only) or whose frames sit a rounding error off the slices is read the same way.

FRACTIONAL segments (C.8.20.2.3): a voxel is in when its value is at least half of
MaximumFractionalValue (occupancy or probability >= 0.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medflow._lazy import lazy_import
from medflow.errors import InputError
from medflow.sample import Segment
from medflow.sources.labels.grid import GridMismatch, ImageGrid

hd = lazy_import("highdicom")

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _code(sequence) -> tuple[str, ...]:
    if not sequence:
        return ()
    item = sequence[0]
    return (str(item.get("CodeValue", "") or item.get("LongCodeValue", "")),
            str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeMeaning", "")))


def _group(frame_group, shared, sequence: str):
    for group in (frame_group, shared):
        if group is not None and sequence in group and len(group[sequence].value):
            return group[sequence][0]
    return None


def read_seg(path: Path, grid: ImageGrid) -> tuple[list[tuple[Segment, np.ndarray]], list[str], float]:
    """Every segment of the SEG as a bool ``zyx`` mask on ``grid``; segment number = value.

    Returns:
        ``(parts, notes, max_offset_mm)``: (segment, mask) per segment in SegmentNumber
        order, findings, and the largest distance of a frame from its slice along the normal.

    Raises:
        InputError: not a SEG, or a frame off the image grid (other orientation or spacing,
            off every slice, a fractional pixel shift); the message names the frame.
    """
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # highdicom raises several types for invalid objects
        raise InputError(str(path), f"not a readable DICOM Segmentation: {type(exc).__name__}: {exc}") from exc
    fractional = str(seg.get("SegmentationType", "")).upper() == "FRACTIONAL"
    maximum = float(seg.get("MaximumFractionalValue", 1) or 1)
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [])
    nz, ny, nx = grid.shape
    masks = {int(s.SegmentNumber): np.zeros((nz, ny, nx), dtype=bool) for s in seg.SegmentSequence}
    max_offset = 0.0
    for index in range(int(seg.get("NumberOfFrames", 1) or 1)):
        frame_group = per_frame[index] if index < len(per_frame) else None
        what = f"SEG frame {index + 1}"
        ident = _group(frame_group, shared, "SegmentIdentificationSequence")
        position = _group(frame_group, shared, "PlanePositionSequence")
        orientation = _group(frame_group, shared, "PlaneOrientationSequence")
        measures = _group(frame_group, shared, "PixelMeasuresSequence")
        if ident is None or position is None or orientation is None or measures is None:
            raise InputError(str(path), f"{what} lacks its segment number, position, orientation or pixel spacing")
        number = int(ident.ReferencedSegmentNumber)
        if number not in masks:
            raise InputError(str(path), f"{what} refers to segment {number}, which the SegmentSequence lacks")
        iop = [float(v) for v in orientation.ImageOrientationPatient]
        try:
            match = grid.place_plane(position.ImagePositionPatient, iop[:3], iop[3:], measures.PixelSpacing, what)
        except GridMismatch as exc:
            raise InputError(str(path), str(exc)) from None
        max_offset = max(max_offset, abs(match.normal_offset_mm))
        stored = np.asarray(seg.get_stored_frame(index, as_index=True))
        plane = stored >= maximum / 2.0 if fractional else stored != 0
        grid.paste(masks[number], plane, match)
    parts = []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        name = str(item.get("SegmentLabel", "") or f"segment {number}")
        parts.append((Segment(number, name, _code(item.get("SegmentedPropertyCategoryCodeSequence")),
                              _code(item.get("SegmentedPropertyTypeCodeSequence")), f"SEG #{number}"),
                      masks[number]))
    notes = []
    if fractional:
        notes.append(f"FRACTIONAL SEG: a voxel is in when its value >= {maximum / 2:g} (half of "
                     f"MaximumFractionalValue {maximum:g})")
    return parts, notes, max_offset
