"""Exact assembly of one item (a series or a multi-frame instance) into a `Sample`.

Rules (they are the contract of :func:`read_item`):

* **Order.** Slices are sorted by the projection of ImagePositionPatient on the slice
  normal ``n = row x column`` (ImageOrientationPatient, PS3.3 C.7.6.2.1.1), ascending;
  never by InstanceNumber or file name. A multi-frame RT Dose grid without per-frame
  functional groups places frame k at ImagePositionPatient + (GridFrameOffsetVector[k] -
  GridFrameOffsetVector[0]) along the normal (PS3.3 C.8.8.3.2).
* **Positions are exact.** ``geometry.slice_positions[i]`` is slice ``i``'s own
  ImagePositionPatient; nothing is resampled, so a tilted, uneven or gapped stack
  stays exactly where the scanner put it, and findings are reported as notes.
* **Duplicates.** Slices whose projections differ by at most ``DUPLICATE_TOLERANCE_MM``
  share a position. ``"first"`` keeps the one with the lowest (InstanceNumber,
  SOPInstanceUID compared component by component as integers; frame number for a
  multi-frame file) and reports the others; ``"error"`` raises :class:`InputError`.
* **Spacing, gaps and gantry tilt** are measured on the sorted positions by
  :mod:`medflow.sources.stack_geometry` (rules there) and reported as notes.
* **Values.** ``stored * RescaleSlope + RescaleIntercept`` per slice
  (:func:`medflow.ops.intensity.rescale`, PS3.3 C.11.1.1.2), from the frame's Pixel
  Value Transformation functional group for multi-frame files (per-frame, else
  shared, else top level); a Modality LUT Sequence is applied by pydicom's
  ``apply_modality_lut``. Color images (SamplesPerPixel 3, or PALETTE COLOR) become
  ``"zyxc"`` RGB without rescale; YBR is converted to RGB by pydicom.
* **Memory.** Headers are read first (no pixels) and each file's Pixel Data is checked
  against its declared Rows, Columns, NumberOfFrames, SamplesPerPixel and BitsAllocated
  (:func:`medflow.sources.discovery.read_image_header` with ``check_pixel_data``) before
  anything is allocated; the float32 output is allocated once and filled one decoded
  slice (frame) at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medflow.errors import InputError
from medflow.ops.intensity import rescale
from medflow.sample import Geometry, Sample
from medflow.sources.base import ItemRef
from medflow.sources.decode_ahead import DecodeAhead, DecodeWorkers
from medflow.sources.decoders import transfer_syntax_of
from medflow.sources.discovery import (
    ORIENTATION_TOLERANCE,
    PIXEL_DATA_OFFSET,
    HeaderProblem,
    read_image_header,
)
from medflow.sources.frame_headers import FrameHeaders
from medflow.sources.pixels import (  # noqa: F401 - BULK_DATA_THRESHOLD: part of this module's contract
    BULK_DATA_THRESHOLD,
    NATIVE_LITTLE_ENDIAN,
    BufferPool,
    LazyHeaders,
    decode_encoded,
    decode_error,
    decode_file,
    header_json,
    iter_frames,
    read_header_bytes,
    read_native,
)
from medflow.sources.stack_geometry import slice_normal, spacing_findings, tilt_degrees, tilt_findings

if TYPE_CHECKING:  # pydicom is imported where a header or pixel data is decoded: native streams never need it
    from pydicom.dataset import Dataset

DUPLICATE_TOLERANCE_MM = 0.01


def _uid_key(uid: str) -> tuple:
    try:
        return (0, tuple(int(part) for part in uid.split(".")))
    except ValueError:
        return (1, uid)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


@dataclass
class _Slice:
    """One slice (a file, or one frame of a multi-frame file) before pixels are read."""

    label: str  # what a user sees: the relative path, or "frame 3"
    rel: str
    frame: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float
    tie_key: tuple
    spacing_hints: tuple[float, float]  # SliceThickness, SpacingBetweenSlices (0 when absent)
    tilt_tag: float | None  # GantryDetectorTilt (0018,1120)


def _floats(value, count: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if values.size == count and np.all(np.isfinite(values)) else None


def _number(value, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _header(path: Path) -> Dataset:
    try:
        return read_image_header(path, check_pixel_data=True)
    except HeaderProblem as problem:
        raise InputError(os.fspath(path), problem.reason) from problem


def _functional_groups(ds: Dataset) -> tuple[list[Dataset], Dataset | None]:
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    return per_frame, (shared[0] if len(shared) else None)


def _group_value(frame_group: Dataset | None, shared: Dataset | None, sequence: str, keyword: str):
    """A value from a frame's functional group, else the shared group (PS3.3 C.7.6.16)."""
    for group in (frame_group, shared):
        if group is not None and sequence in group and len(group[sequence].value):
            item = group[sequence].value[0]
            if keyword in item:
                return item.get(keyword)
    return None


def _slice(ds: Dataset, frame: int, label: str, rel: str, tie_key: tuple) -> _Slice:
    """Geometry and rescale of one frame: its functional groups (per-frame, then shared),
    then the top-level attributes of a classic single-frame image."""
    per_frame, shared = _functional_groups(ds)
    group = per_frame[frame] if frame < len(per_frame) else None

    def value(sequence: str, keyword: str):
        found = _group_value(group, shared, sequence, keyword)
        return ds.get(keyword) if found is None else found

    tilt = value("CTAcquisitionDetailsSequence", "GantryDetectorTilt")
    return _Slice(
        label=label,
        rel=rel,
        frame=frame,
        position=_floats(value("PlanePositionSequence", "ImagePositionPatient"), 3),
        orientation=_floats(value("PlaneOrientationSequence", "ImageOrientationPatient"), 6),
        pixel_spacing=_pair(value("PixelMeasuresSequence", "PixelSpacing")),
        slope=_number(value("PixelValueTransformationSequence", "RescaleSlope"), 1.0),
        intercept=_number(value("PixelValueTransformationSequence", "RescaleIntercept"), 0.0),
        tie_key=tie_key,
        spacing_hints=(
            _number(value("PixelMeasuresSequence", "SliceThickness"), 0.0),
            _number(value("PixelMeasuresSequence", "SpacingBetweenSlices"), 0.0),
        ),
        tilt_tag=None if tilt in (None, "") else _number(tilt, 0.0),
    )


def _series_slices(item: ItemRef) -> tuple[list[_Slice], list[Dataset]]:
    slices, headers = [], []
    first_size = None
    for rel in item.files:
        path = Path(item.root) / rel
        ds = _header(path)
        size = (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise InputError(
                os.fspath(path),
                f"Rows/Columns {size[0]}x{size[1]} differ from {first_size[0]}x{first_size[1]} "
                f"of {item.files[0]} in the same item",
            )
        instance = _number(ds.get("InstanceNumber"), float("inf"))
        slices.append(_slice(ds, 0, rel, rel, (instance, _uid_key(str(ds.get("SOPInstanceUID") or "")), rel)))
        headers.append(ds)
    return slices, headers


# Bump when the facts below, or the rules that read them, change (they live in discovery's memo).
READ_FACTS_VERSION = 3


def read_facts(ds: Dataset) -> list | None:
    """What streaming a single-frame file needs from its header, as a JSON list; ``None`` when it needs more.

    Taken at discovery from the header it parses anyway (and memoized with it), so a cold build
    parses each file once: the reader places the slice and reads its stored values from these
    facts (:func:`medflow.sources.pixels.read_native_facts`), and the header is parsed again only
    when a step reads it. Only native little-endian single-frame grayscale files with plain
    rescale qualify: the files :func:`medflow.sources.pixels.read_native` reads, and files of the
    compressed syntaxes medflow orders decoders for (:data:`medflow.sources.decoders.PLUGIN_ORDER`;
    ``syntax`` names it, '' for native files), decoded without parsing their header here.
    """
    from medflow.sources.decoders import PLUGIN_ORDER
    from medflow.sources.pixels import _native_spec, frame_spec, header_pixel_key

    syntax = transfer_syntax_of(ds)
    encoded = syntax in PLUGIN_ORDER
    spec = frame_spec(ds) if encoded else _native_spec(ds)
    pixel_offset = getattr(ds, PIXEL_DATA_OFFSET, None) if encoded else None
    if spec is None or "ModalityLUTSequence" in ds or (encoded and pixel_offset is None):
        return None
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    rows, cols, dtype, stored_bits = spec
    s = _slice(ds, 0, "", "", ())
    instance = _number(ds.get("InstanceNumber"), float("inf"))
    facts = {
        "v": READ_FACTS_VERSION,
        "rows": rows, "cols": cols, "dtype": dtype.str, "stored_bits": stored_bits,
        "position": None if s.position is None else s.position.tolist(),
        "orientation": None if s.orientation is None else s.orientation.tolist(),
        "pixel_spacing": None if s.pixel_spacing is None else list(s.pixel_spacing),
        "slope": s.slope, "intercept": s.intercept,
        "instance": None if instance == float("inf") else instance,
        "sop_uid": str(ds.get("SOPInstanceUID") or ""),
        "spacing_hints": list(s.spacing_hints), "tilt": s.tilt_tag,
        "pixel_key": header_pixel_key(ds),
        "photometric": photometric,
        "rescaled": "RescaleSlope" in ds or "RescaleIntercept" in ds,
        "syntax": syntax if encoded else "",
        "pixel_offset": pixel_offset,  # where the header bytes end (compressed files; native ones know)
    }
    return [facts[name] for name in _READ_FACT_FIELDS]  # a list: the memo keeps one per file


_READ_FACT_FIELDS = ("v", "rows", "cols", "dtype", "stored_bits", "position", "orientation", "pixel_spacing", "slope",
                     "intercept", "instance", "sop_uid", "spacing_hints", "tilt", "pixel_key", "photometric", "rescaled", "syntax",
                     "pixel_offset")


def _facts_slices(item: ItemRef, facts: tuple[dict[str, Any], ...]) -> list[_Slice]:
    """:func:`_series_slices` from discovery's facts: no header parsed."""
    slices = []
    first_size = (facts[0]["rows"], facts[0]["cols"])
    for rel, f in zip(item.files, facts, strict=True):
        if (f["rows"], f["cols"]) != first_size:
            raise InputError(
                os.fspath(Path(item.root) / rel),
                f"Rows/Columns {f['rows']}x{f['cols']} differ from {first_size[0]}x{first_size[1]} "
                f"of {item.files[0]} in the same item",
            )
        instance = float("inf") if f["instance"] is None else f["instance"]
        slices.append(_Slice(
            label=rel, rel=rel, frame=0,
            position=None if f["position"] is None else np.array(f["position"], dtype=np.float64),
            orientation=None if f["orientation"] is None else np.array(f["orientation"], dtype=np.float64),
            pixel_spacing=None if f["pixel_spacing"] is None else tuple(f["pixel_spacing"]),
            slope=f["slope"], intercept=f["intercept"],
            tie_key=(instance, _uid_key(f["sop_uid"]), rel),
            spacing_hints=tuple(f["spacing_hints"]), tilt_tag=f["tilt"],
        ))
    return slices


def _usable_facts(item: ItemRef, read_facts) -> tuple[dict[str, Any], ...] | None:
    """Discovery's reading facts of the item's files as dicts, or None when they cannot place it.

    ``read_facts``: one per file, :func:`read_facts`'s list or that list as JSON text (as the
    memo keeps it: a task then carries the memo's strings, parsed only when its item runs).
    """
    if item.kind != "series" or not read_facts or len(read_facts) != len(item.files):
        return None
    try:
        read_facts = [json.loads(f) if isinstance(f, str) else f for f in read_facts]
    except ValueError:  # a damaged memo text: the reader parses the headers instead
        return None
    if any(not f or len(f) != len(_READ_FACT_FIELDS) or f[0] != READ_FACTS_VERSION for f in read_facts):
        return None
    read_facts = [dict(zip(_READ_FACT_FIELDS, f, strict=True)) for f in read_facts]
    if len({(f["dtype"], f["rows"], f["cols"]) for f in read_facts}) != 1:
        return None  # the reader names the odd file
    return tuple(read_facts)


def reads_native_files(item: ItemRef, read_facts) -> bool:
    """Will :func:`open_stored_slabs` read every slice of ``item`` straight from a native
    (uncompressed little-endian) file's pixel data, placed by discovery's ``read_facts``?"""
    facts = _usable_facts(item, read_facts)
    return facts is not None and not any(f["syntax"] for f in facts)


def _pair(value) -> tuple[float, float] | None:
    values = _floats(value, 2)
    return None if values is None else (float(values[0]), float(values[1]))


def _multiframe_slices(item: ItemRef, ds: Dataset) -> list[_Slice]:
    n_frames = int(ds.get("NumberOfFrames") or 1)
    per_frame, _ = _functional_groups(ds)
    path = os.fspath(Path(item.root) / item.files[0])
    if per_frame and len(per_frame) != n_frames:
        raise InputError(path, f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {n_frames} frames")
    slices = [_slice(ds, index, f"frame {index + 1}", item.files[0], (index,)) for index in range(n_frames)]
    if not per_frame and "GridFrameOffsetVector" in ds and n_frames > 1:
        _place_grid_frames(path, ds, slices)
    return slices


def _place_grid_frames(path: str, ds: Dataset, slices: list[_Slice]) -> None:
    """Frame positions of an RT Dose grid from Grid Frame Offset Vector (PS3.3 C.8.8.3.2).

    The offsets are distances along the normal of the image plane; the vector is either
    relative (first element 0, offsets from ImagePositionPatient) or absolute (first element
    equal to ImagePositionPatient's z). ``offset[k] - offset[0]`` from ImagePositionPatient
    is frame k's position in both forms. Without this every frame would sit at
    ImagePositionPatient and all but the first would be dropped as duplicates.
    """
    offsets = _floats(ds.get("GridFrameOffsetVector"), len(slices))
    if offsets is None:
        raise InputError(
            path,
            f"GridFrameOffsetVector (3004,000C) must hold {len(slices)} numbers, one per frame "
            "(NumberOfFrames)",
        )
    first = slices[0]
    if first.position is None or first.orientation is None:
        return  # no geometry at all: the frames keep file order
    normal = slice_normal(first.orientation)
    for s, offset in zip(slices, offsets, strict=True):
        s.position = first.position + (offset - offsets[0]) * normal


def _order(
    item: ItemRef, slices: list[_Slice], duplicates: str
) -> tuple[list[_Slice], np.ndarray | None, list[_Slice], list[str]]:
    """Sort along the normal and resolve duplicate positions.

    Returns ``(kept slices in order, normal or None, dropped slices, notes)``.
    """
    placed = [s for s in slices if s.position is not None and s.orientation is not None]
    if len(placed) < len(slices):
        if item.kind == "series" and len(slices) > 1:
            missing = next(s for s in slices if s.position is None or s.orientation is None)
            raise InputError(
                os.fspath(Path(item.root) / missing.rel),
                f"no usable ImagePositionPatient/ImageOrientationPatient: cannot place it among "
                f"the {len(slices)} images of its series",
            )
        return (
            slices,
            None,
            [],
            ["no ImagePositionPatient/ImageOrientationPatient: geometry unknown, file order kept"],
        )
    reference = placed[0].orientation
    for s in placed:
        if np.max(np.abs(s.orientation - reference)) > ORIENTATION_TOLERANCE:
            where = os.fspath(Path(item.root) / s.rel)
            raise InputError(
                where,
                f"{s.label}: ImageOrientationPatient differs from that of {placed[0].label}; "
                "one item must have one orientation",
            )
    normal = slice_normal(reference)
    ordered = sorted(slices, key=lambda s: (float(s.position @ normal), s.tie_key))
    kept, dropped, notes = [], [], []
    i = 0
    while i < len(ordered):
        j = i + 1
        while (
            j < len(ordered)
            and (ordered[j].position - ordered[j - 1].position) @ normal <= DUPLICATE_TOLERANCE_MM
        ):
            j += 1
        group = sorted(ordered[i:j], key=lambda s: s.tie_key)
        if len(group) > 1:
            names = ", ".join(s.label for s in group)
            if duplicates == "error":
                raise InputError(
                    os.fspath(Path(item.root) / group[0].rel), f"slices at the same position: {names}"
                )
            dropped.extend(group[1:])
            rule = (
                "lowest frame number"
                if item.kind == "multiframe"
                else "lowest InstanceNumber, then SOPInstanceUID"
            )
            notes.append(
                f"duplicate position at z-index {len(kept)} ({float(group[0].position @ normal):.2f} mm along "
                f"the normal): kept {group[0].label}, dropped {', '.join(s.label for s in group[1:])} "
                f"(rule: {rule})"
            )
        kept.append(group[0])
        i = j
    return kept, normal, dropped, notes


def _geometry(item: ItemRef, kept: list[_Slice], normal, notes: list[str]) -> Geometry | None:
    if normal is None:
        return None
    spacings = {s.pixel_spacing for s in kept}
    if None in spacings:
        notes.append("no PixelSpacing (0028,0030): physical geometry unknown")
        return None
    if len(spacings) > 1:
        raise InputError(
            os.fspath(Path(item.root) / item.files[0]),
            f"PixelSpacing differs between slices of one item: {sorted(spacings)}",
        )
    positions = np.array([s.position for s in kept], dtype=np.float64)
    slice_spacing, spacing_notes = spacing_findings(np.diff(positions @ normal), list(kept[0].spacing_hints))
    tilt_notes = tilt_findings(tilt_degrees(positions, normal), kept[0].tilt_tag)
    notes[:0] = tilt_notes + spacing_notes
    orientation = kept[0].orientation
    return Geometry(
        row_direction=tuple(float(v) for v in orientation[:3]),
        column_direction=tuple(float(v) for v in orientation[3:]),
        pixel_spacing=kept[0].pixel_spacing,
        slice_positions=tuple(tuple(float(v) for v in s.position) for s in kept),
        slice_spacing=slice_spacing,
        notes=tuple(notes),
    )


def _values(arr: np.ndarray, s: _Slice, ds: Dataset, color: bool) -> np.ndarray:
    """Decoded stored values of one slice -> the float32 values the Sample holds."""
    if color:
        if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
        return arr.astype(np.float32)
    if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    return rescale(arr, s.slope, s.intercept)


def _modality(item: ItemRef, first: Dataset | None) -> str:
    return item.modality or ("" if first is None else str(first.get("Modality") or ""))


def _units(modality: str, first: Dataset, color: bool) -> str:
    lut_type = None
    if "ModalityLUTSequence" in first and "RescaleSlope" not in first:
        lut_type = str(first.ModalityLUTSequence[0].get("ModalityLUTType", ""))
    return _units_of(modality, color, lut_type, "RescaleSlope" in first or "RescaleIntercept" in first)


def _units_of(modality: str, color: bool, lut_type: str | None, rescaled: bool) -> str:
    """The units of the values: ``lut_type`` is the applied Modality LUT's type (None: none applies)."""
    if color:
        return "stored RGB"
    if lut_type is not None:
        return "HU" if lut_type == "HU" else "modality LUT"
    if modality == "CT" and rescaled:
        return "HU"
    return "stored*slope+intercept"


class NotStoredValues(ValueError):
    """``values="stored"`` was asked of an item whose values are not plain rescaled integers."""


def read_item(
    item: ItemRef,
    duplicates: Literal["first", "error"] = "first",
    values: Literal["rescaled", "stored"] = "rescaled",
    labels: dict[str, Any] | None = None,
) -> Sample:
    """Read an item's pixels and exact geometry (rules in the module docstring).

    ``labels`` (the recipe's label options, see :mod:`medflow.sources.labels`): the item's
    paired label files (``item.labels``) become the Sample's label map on its grid.

    Args:
        item: from :func:`medflow.sources.discovery.discover_dicom`.
        duplicates: what to do with slices at the same position.
        values: ``"rescaled"`` (default): float32 ``stored * slope + intercept``.
            ``"stored"``: the decoded stored integers (int8/uint8/int16/uint16) and
            ``meta["stored_rescale"]`` = per-slice ``[slope, intercept]``, so that a
            caller can fold the rescale and pointwise steps into a lookup table;
            raises :class:`NotStoredValues` for color or Modality-LUT-Sequence items.

    Returns:
        A Sample: float32 ``pixels`` with axes ``"zyx"`` (``"zyxc"``, channels r, g, b
        for color), ``geometry`` (``None`` when the files carry no patient geometry),
        per-slice ``headers`` in z order, and ``meta`` with keys modality, units,
        photometric_interpretation, notes, n_slices, dropped_files (relative paths;
        plus dropped_frames, 1-based, for a multi-frame item).

    Raises:
        InputError: a file is unreadable, truncated or corrupt; slices disagree in
            Rows/Columns, orientation or PixelSpacing; or duplicates are found with
            ``duplicates="error"``. The message names the absolute file path.
    """
    opened = _open(item, duplicates)
    stored = values == "stored"
    if stored:
        dtype = opened.stored_dtype
        if dtype is None:
            raise NotStoredValues(f"item {item.item_id} has no plain integer stored values")
    else:
        dtype = np.float32
    pixels = np.empty(opened.shape, dtype=dtype)
    if item.kind == "multiframe":
        _fill_frames(pixels, opened.path, opened.kept, opened.first, opened.color, stored)
    else:
        for rank, (s, arr, ds, slice_path) in enumerate(_decode_series(item, opened)):
            pixels[rank] = _stored(arr, slice_path, pixels.dtype) if stored else _values(arr, s, ds, opened.color)
    if labels is not None and item.labels:
        from medflow.sources.labels import attach_labels

        return attach_labels(opened.sample(pixels, stored), item.labels, item.root, labels)
    return opened.sample(pixels, stored)


@dataclass
class _Opened:
    """An item with its slices ordered and its geometry known, before any pixel is decoded."""

    item: ItemRef
    path: Path | None  # the file of a multi-frame item
    first: Dataset | None  # the header of item.files[0]; None when placed from discovery's facts alone
    headers_by_slice: dict[str, Dataset] | None
    kept: list[_Slice]
    dropped: list[_Slice]
    notes: list[str]
    geometry: Geometry | None
    color: bool
    shape: tuple[int, ...]
    photometric: str
    units: str
    stored_dtype: np.dtype | None  # of the stored values (None: not plain integer grayscale)

    def sample(self, pixels: np.ndarray, stored: bool, lazy: bool = False, facts=None) -> Sample:
        """The item's Sample around ``pixels``; ``lazy``: headers as :class:`LazyHeaders` (built when
        read; from the files, parsed then, for the slices placed from ``facts``)."""
        item, first, kept = self.item, self.first, self.kept
        if item.kind == "multiframe":
            headers_json = FrameHeaders(first, [s.frame for s in kept])
            if not lazy:
                headers_json = list(headers_json)
        elif lazy:
            by_slice = self.headers_by_slice
            headers_json = LazyHeaders(
                [by_slice.get(s.rel) or Path(item.root) / s.rel for s in kept],
                keys=[facts[s.rel]["pixel_key"] if facts else None for s in kept],
            )
        else:
            headers_json = [header_json(self.headers_by_slice[s.rel]) for s in kept]
        meta: dict[str, Any] = {
            "modality": _modality(item, first),
            "units": self.units,
            # of the pixels as returned, not of the files: color is always RGB here
            "photometric_interpretation": "RGB" if self.color else self.photometric,
            "notes": list(self.notes),
            "n_slices": len(kept),
            "dropped_files": sorted(s.rel for s in self.dropped) if item.kind == "series" else [],
        }
        if item.kind == "multiframe":
            meta["dropped_frames"] = sorted(s.frame + 1 for s in self.dropped)
        if stored:
            meta["stored_rescale"] = [[float(s.slope), float(s.intercept)] for s in kept]
        return Sample(
            item_id=item.item_id,
            pixels=pixels,
            axes="zyxc" if self.color else "zyx",
            channels=("r", "g", "b") if self.color else (),
            geometry=self.geometry,
            headers=headers_json,
            meta=meta,
            source_files=(os.fspath(self.path),)
            if item.kind == "multiframe"
            else tuple(os.fspath(Path(item.root) / s.rel) for s in kept),
        )


def _open(item: ItemRef, duplicates: str, facts: tuple[dict[str, Any], ...] | None = None) -> _Opened:
    """The item ordered and placed; with ``facts`` (discovery's reading facts, one per file, from
    :func:`_usable_facts`) no header is parsed (``headers_by_slice`` is then empty)."""
    if duplicates not in ("first", "error"):
        raise ValueError(f"duplicates must be 'first' or 'error', got {duplicates!r}")
    if not item.files:
        raise InputError(item.root, f"item {item.item_id} has no files")
    path = None
    if item.kind == "multiframe":
        path = Path(item.root) / item.files[0]
        first = _header(path)
        headers_by_slice = None
        slices = _multiframe_slices(item, first)
    elif facts is not None:  # no header parsed
        slices = _facts_slices(item, facts)
        first, headers_by_slice = None, {}
    else:
        slices, headers = _series_slices(item)
        first = headers[0]
        headers_by_slice = {s.rel: ds for s, ds in zip(slices, headers, strict=True)}
    kept, normal, dropped, notes = _order(item, slices, duplicates)
    geometry = _geometry(item, kept, normal, notes)
    notes[:0] = item.notes  # discovery's and pairing's findings (e.g. built without labels) reach the meta
    if first is None:  # facts of item.files[0], as ``first`` below; all share dtype, Rows and Columns
        f = facts[0]
        units = _units_of(_modality(item, None), color=False, lut_type=None, rescaled=f["rescaled"])
        return _Opened(item, None, None, headers_by_slice, kept, dropped, notes, geometry, False,
                       (len(kept), f["rows"], f["cols"]), f["photometric"], units, np.dtype(f["dtype"]))
    rows, cols = int(first.Rows), int(first.Columns)
    photometric = str(first.get("PhotometricInterpretation", "")).strip()
    color = int(first.get("SamplesPerPixel") or 1) == 3 or photometric == "PALETTE COLOR"
    if color and photometric != "RGB":
        # pydicom converts YBR_FULL(_422) and the JPEG 2000 YBR_ICT/RCT encodings to RGB while
        # decoding; apply_color_lut maps PALETTE COLOR to RGB.
        notes.append(f"{photometric} pixels converted to RGB")
    shape = (len(kept), rows, cols, 3) if color else (len(kept), rows, cols)
    return _Opened(item, path, first, headers_by_slice, kept, dropped, notes, geometry, color, shape,
                   photometric, _units(_modality(item, first), first, color), _stored_dtype(first, color))


def _decode_series(item: ItemRef, opened: _Opened):
    """Decode a series' slices in z order: yields (slice, decoded array, header, path)."""
    rows, cols = opened.shape[1:3]
    for s in opened.kept:
        slice_path = Path(item.root) / s.rel
        try:
            arr = decode_file(slice_path, opened.headers_by_slice[s.rel])
        except Exception as exc:  # decoders raise many types
            raise decode_error(slice_path, exc) from exc
        if arr.shape[:2] != (rows, cols):
            raise InputError(
                os.fspath(slice_path), f"decoded pixels have shape {arr.shape}, expected {rows}x{cols}"
            )
        yield s, arr, opened.headers_by_slice[s.rel], slice_path


def open_stored_slabs(
    item: ItemRef, duplicates: Literal["first", "error"], slab, buffers: int = 4, read_facts=None,
    decode_workers: DecodeWorkers | None = None,
) -> tuple[Sample, Iterator[tuple[np.ndarray, Callable[[], None]]]]:
    """A series' stored values slab by slab (z order), for streaming.

    Returns a Sample whose ``pixels`` is an empty ``(n_slices, 0, 0)`` placeholder of the
    stored dtype (headers, geometry and meta as :func:`read_item` with ``values="stored"``),
    and an iterator of ``(array of at most slab slices, release)``: the arrays live in at
    most ``buffers`` reused buffers, and the caller calls ``release()`` once done with one
    (the iterator waits for a free buffer). ``slab``: slices per slab, or a function of the
    slice shape and the stored values' itemsize giving it. ``read_facts``: discovery's, one per
    file (:func:`read_facts`): then only the first file's header is parsed. ``decode_workers``:
    worker processes a series of compressed (not native little endian) files may also be decoded
    on, when it is long enough (:mod:`medflow.sources.decode_ahead`), same values. Raises
    :class:`NotStoredValues` for color or Modality-LUT-Sequence items.
    """
    usable = _usable_facts(item, read_facts)
    opened = _open(item, duplicates, usable)
    dtype = opened.stored_dtype
    if dtype is None or item.kind not in ("series", "multiframe"):
        raise NotStoredValues(f"item {item.item_id} cannot be streamed as stored values")
    if item.kind == "multiframe":
        return _frame_slabs(opened, dtype, slab, buffers)
    facts = None
    if len(opened.headers_by_slice) < len(item.files):  # placed from discovery's facts
        facts = dict(zip(item.files, usable, strict=True))
    skeleton = opened.sample(np.empty((len(opened.kept), 0, 0), dtype=dtype), stored=True, lazy=True, facts=facts)
    headers = skeleton.headers
    rows, cols = opened.shape[1:3]
    if callable(slab):
        slab = slab((rows, cols), dtype.itemsize)

    kept = opened.kept

    def decode_here(index: int) -> np.ndarray:
        slice_path = Path(item.root) / kept[index].rel
        ds = opened.headers_by_slice.get(kept[index].rel)
        if ds is None:  # placed from discovery's facts
            return _decoded_from_facts(slice_path, facts[kept[index].rel], rows, cols, dtype)
        return _decoded_stored(slice_path, ds, rows, cols, dtype)

    def read_slice(index: int, out: np.ndarray, ahead: DecodeAhead | None) -> bytes | None:
        """Kept slice ``index``'s stored values into ``out``; its header bytes (None: its parsed header is kept)."""
        s = kept[index]
        slice_path = Path(item.root) / s.rel
        ds = opened.headers_by_slice.get(s.rel)
        if ahead is not None or (ds is None and facts[s.rel]["syntax"]):  # compressed
            out[...] = ahead.take(index) if ahead is not None else decode_here(index)
            return None if ds is not None else read_header_bytes(slice_path, facts[s.rel]["pixel_offset"])
        if ds is None:  # native, placed from discovery's facts
            raw = read_native(slice_path, facts[s.rel], out)
            if raw is not None:
                return raw
            ds = _header(slice_path)  # not what discovery saw: parse it, the checks name the problem
        raw = read_native(slice_path, ds, out)
        if raw is None:
            out[...] = _decoded_stored(slice_path, ds, rows, cols, dtype)
        return raw

    def slabs() -> Iterator[tuple[np.ndarray, Callable[[], None]]]:
        pool = BufferPool((slab, rows, cols), dtype, buffers)
        ahead = _decode_ahead(item, opened, decode_here, decode_workers, facts)
        try:
            for first in range(0, len(kept), slab):
                buffer = pool.get()
                part = kept[first : first + slab]
                for row, s in enumerate(part):
                    try:
                        headers.set_raw(first + row, read_slice(first + row, buffer[row], ahead))
                    except (InputError, NotStoredValues):
                        pool.put(buffer)
                        raise
                    except Exception as exc:  # decoders and reads raise many types
                        pool.put(buffer)
                        raise decode_error(Path(item.root) / s.rel, exc) from exc
                    except BaseException:
                        pool.put(buffer)
                        raise
                yield buffer[: len(part)], (lambda buffer=buffer: pool.put(buffer))
        finally:
            if ahead is not None:
                ahead.close()

    return skeleton, slabs()


def _frame_slabs(opened: _Opened, dtype: np.dtype, slab, buffers: int):
    """:func:`open_stored_slabs` of a multi-frame item: its kept frames decoded one at a time, in z order."""
    skeleton = opened.sample(np.empty((len(opened.kept), 0, 0), dtype=dtype), stored=True, lazy=True)
    rows, cols = opened.shape[1:3]
    if callable(slab):
        slab = slab((rows, cols), dtype.itemsize)
    path, kept = opened.path, opened.kept

    def slabs() -> Iterator[tuple[np.ndarray, Callable[[], None]]]:
        pool = BufferPool((slab, rows, cols), dtype, buffers)
        frames = iter_frames(path, opened.first, [s.frame for s in kept])
        for first in range(0, len(kept), slab):
            buffer = pool.get()
            part = kept[first : first + slab]
            try:
                for row in range(len(part)):
                    frame = next(frames, None)
                    if frame is None:
                        expected = int(opened.first.get("NumberOfFrames") or 1)
                        raise InputError(os.fspath(path), f"decoded {first + row} of the kept frames, NumberOfFrames says {expected}")
                    buffer[row] = _stored(_checked(frame, path, rows, cols), path, dtype)
            except (InputError, NotStoredValues):
                pool.put(buffer)
                raise
            except Exception as exc:  # decoders raise many types
                pool.put(buffer)
                raise decode_error(path, exc) from exc
            yield buffer[: len(part)], (lambda buffer=buffer: pool.put(buffer))

    return skeleton, slabs()


def _decoded_from_facts(slice_path: Path, facts: dict[str, Any], rows: int, cols: int, dtype: np.dtype) -> np.ndarray:
    """A compressed slice's stored values, decoded in the transfer syntax discovery saw (no header parsed here).

    Should the file no longer be what discovery saw, its header is parsed and the checks of
    :func:`_decoded_stored` name the problem.
    """
    try:
        return decode_stored_slice((os.fspath(slice_path), facts["syntax"], rows, cols, dtype.str))
    except Exception:  # noqa: BLE001 - decoders raise many types; the parsed header's path says why
        return _decoded_stored(slice_path, None, rows, cols, dtype)


def _decoded_stored(slice_path: Path, ds: Dataset | None, rows: int, cols: int, dtype: np.dtype) -> np.ndarray:
    """A slice's stored values decoded by pydicom and checked against the series (errors name the file)."""
    try:
        if ds is None:
            ds = _header(slice_path)
        return _stored(_checked(decode_file(slice_path, ds), slice_path, rows, cols), slice_path, dtype)
    except (InputError, NotStoredValues):
        raise
    except Exception as exc:  # decoders raise many types
        raise decode_error(slice_path, exc) from exc


def decode_stored_slice(argument: tuple[str, str, int, int, str]) -> np.ndarray:
    """On a worker: ``(path, transfer syntax, rows, cols, dtype)`` -> the slice's stored values.

    As :func:`_decoded_stored` for an encoded file, without parsing its header first (the
    reader parsed it; should the file disagree, the reader decodes it again and says why).
    """
    path, transfer_syntax, rows, cols, dtype = argument
    return _stored(_checked(decode_encoded(Path(path), transfer_syntax), Path(path), rows, cols), Path(path),
                   np.dtype(dtype))


#: Slices submitted to the decoding workers ahead of the one read, per worker.
DECODE_AHEAD_PER_WORKER = 8


def _decode_ahead(item: ItemRef, opened: _Opened, decode_here, workers: DecodeWorkers | None, facts) -> DecodeAhead | None:
    """Decoding on worker processes beside this one, for a series of compressed files (else None).

    ``facts``: discovery's, by file, for the slices placed from them (else None).
    """
    by_slice = opened.headers_by_slice
    if workers is None or workers.count < 1 or len(opened.kept) < 2 or by_slice is None:
        return None

    def syntax(s: _Slice) -> str:
        ds = by_slice.get(s.rel)
        return transfer_syntax_of(ds) if ds is not None else facts[s.rel]["syntax"]  # '' for a native file

    syntaxes = [syntax(s) for s in opened.kept]
    if any(not ts or ts in NATIVE_LITTLE_ENDIAN for ts in syntaxes):
        return None
    rows, cols = opened.shape[1:3]
    dtype = opened.stored_dtype.str
    slices = [(os.fspath(Path(item.root) / s.rel), ts) for s, ts in zip(opened.kept, syntaxes, strict=True)]
    return DecodeAhead(len(slices), decode_here, workers.start, decode_stored_slice,
                       lambda index: (*slices[index], rows, cols, dtype), window=DECODE_AHEAD_PER_WORKER * workers.count,
                       workers=workers.count)


def _checked(arr: np.ndarray, slice_path: Path, rows: int, cols: int) -> np.ndarray:
    if arr.shape[:2] != (rows, cols):
        raise InputError(os.fspath(slice_path), f"decoded pixels have shape {arr.shape}, expected {rows}x{cols}")
    return arr


def _stored_dtype(ds: Dataset, color: bool) -> np.dtype | None:
    """dtype that holds the stored values exactly (None: not a plain integer grayscale item)."""
    if color or ("ModalityLUTSequence" in ds and "RescaleSlope" not in ds):
        return None
    bits = int(ds.get("BitsAllocated") or 0)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    if bits == 8:
        return np.dtype(np.int8 if signed else np.uint8)
    if bits == 16:
        return np.dtype(np.int16 if signed else np.uint16)
    return None


def _stored(arr: np.ndarray, path: Path, dtype: np.dtype) -> np.ndarray:
    if arr.dtype != dtype:
        raise NotStoredValues(f"{path}: decoded stored values are {arr.dtype}, the header says {dtype}")
    return arr


def _fill_frames(
    pixels: np.ndarray, path: Path, kept: list[_Slice], ds: Dataset, color: bool, stored: bool = False
) -> None:
    """Decode a multi-frame file one frame at a time into ``pixels`` (z order of ``kept``)."""
    rank_of = {s.frame: rank for rank, s in enumerate(kept)}
    by_frame = {s.frame: s for s in kept}
    seen = 0
    try:
        for index, frame in enumerate(iter_frames(path, ds)):
            seen += 1
            if index in rank_of:
                pixels[rank_of[index]] = (
                    _stored(frame, path, pixels.dtype) if stored else _values(frame, by_frame[index], ds, color)
                )
    except (InputError, NotStoredValues):
        raise
    except Exception as exc:
        raise decode_error(path, exc) from exc
    expected = int(ds.get("NumberOfFrames") or 1)
    if seen != expected:
        raise InputError(os.fspath(path), f"decoded {seen} frames, NumberOfFrames says {expected}")
