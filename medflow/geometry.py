"""The geometry record of a written item: where every voxel of an output lies in LPS mm.

:func:`output_record` turns the final :class:`~medflow.sample.Sample` into a small JSON-able
dict that the engine stores in the item's ``meta["geometry"]`` (so it is in the manifest and on
``medflow.dataset.open(...)[i].geometry``) together with ``meta["array"]`` (axes, shape,
dtype, channels of the written array). :func:`from_record` rebuilds the exact
:class:`~medflow.sample.Geometry`.

Record (all lengths in mm, DICOM patient space LPS, axes of the ``zyx`` grid):

* ``origin``: centre of voxel (0, 0, 0) (first slice's ImagePositionPatient).
* ``spacing``: ``[z, y, x]``: distance between slices along the slice normal (``null`` for one
  slice or an uneven stack), between rows, between columns (DICOM PixelSpacing order, reversed
  for x/y: ``[row spacing, column spacing]`` = ``[y, x]``).
* ``direction``: unit vectors ``{"x", "y", "z"}``: along a row (increasing column index), down a
  column, and the slice normal (row x column).
* ``slice_step``: mean vector from one slice centre to the next (``null`` for one slice); not
  parallel to ``direction.z`` for a gantry-tilted stack.
* ``regular``: every slice lies at ``origin + k * slice_step`` (within 1e-3 mm); if not,
  ``slice_positions`` lists every slice's position, else it is omitted (rebuildable).
* ``notes``: findings of series assembly and of spatial steps (tilt, gaps, resampling).

An item without patient geometry (CR, DX, MG, US, SC: no ImagePositionPatient /
ImageOrientationPatient) has ``geometry: null`` and, instead, ``meta["pixel_spacing"]``
(:func:`planar_spacing_record`): the in-plane spacing its file states, and where it came from:

* ``spacing``: ``[row, column]`` mm (DICOM order: between rows, between columns), ``null`` when
  the file states none (or only zeros / unreadable values: never a guess).
* ``spacing_source``: ``PixelSpacing`` (0028,0030), the spacing in the patient (PS3.3 10.7.1.1)
  when present; otherwise ``ImagerPixelSpacing`` (0018,1164), measured at the detector's front
  plane, or ``ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor`` when (0018,1114)
  (SID / SOD, PS3.3 C.8.11.5 DX Positioning) is present and > 0: the detector spacing divided by
  the magnification is the spacing at the isocentre (the correction PS3.3 10.7.1.2 calls
  GEOMETRY); ``null`` without spacing.
* ``magnification_factor``: the EstimatedRadiographicMagnificationFactor applied, else ``null``.
* ``file_grid``: the file's ``[Rows, Columns]``; ``of_written_array``: ``true`` when the written
  array still has those rows and columns, so ``spacing`` is its spacing. Spatial steps track the
  spacing of patient geometry only: after a resize or pad of such an image the spacing of the
  written array is unknown (``false``) and ``spacing`` stays the file's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medflow.sample import Geometry, Sample

#: Positions within this distance (mm) of the regular lattice count as regular.
REGULAR_TOLERANCE_MM = 1e-3


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def geometry_record(geometry: Geometry) -> dict[str, Any]:
    """The JSON record of ``geometry`` (format in the module docstring)."""
    positions = np.asarray(geometry.slice_positions, float)
    step = geometry.slice_step
    normal = geometry.normal
    if step is not None:
        lattice = positions[0] + np.arange(len(positions))[:, None] * step
        regular = bool(np.max(np.abs(lattice - positions)) <= REGULAR_TOLERANCE_MM)
    else:
        regular = True
    z_spacing = geometry.slice_spacing
    if z_spacing is None and step is not None and regular:
        z_spacing = float(abs(np.dot(step, normal)))
    record: dict[str, Any] = {
        "space": "LPS",
        "units": "mm",
        "origin": _floats(positions[0]),
        "spacing": [z_spacing, float(geometry.pixel_spacing[0]), float(geometry.pixel_spacing[1])],
        "direction": {
            "x": _floats(geometry.row_direction),
            "y": _floats(geometry.column_direction),
            "z": _floats(normal),
        },
        "slice_step": _floats(step) if step is not None else None,
        "n_slices": len(positions),
        "regular": regular,
        "notes": list(geometry.notes),
    }
    if not regular:
        record["slice_positions"] = [_floats(p) for p in positions]
    return record


def from_record(record: dict[str, Any]) -> Geometry:
    """The exact :class:`Geometry` of a record made by :func:`geometry_record`."""
    origin = np.asarray(record["origin"], float)
    if "slice_positions" in record:
        positions = [tuple(p) for p in record["slice_positions"]]
    else:
        step = np.asarray(record["slice_step"] or (0.0, 0.0, 0.0), float)
        positions = [tuple(_floats(origin + k * step)) for k in range(int(record["n_slices"]))]
    return Geometry(
        row_direction=tuple(record["direction"]["x"]),
        column_direction=tuple(record["direction"]["y"]),
        pixel_spacing=(record["spacing"][1], record["spacing"][2]),
        slice_positions=tuple(positions),
        slice_spacing=record["spacing"][0] if record["regular"] else None,
        notes=tuple(record.get("notes", ())),
    )


def array_record(sample: Sample, n_first: int | None = None) -> dict[str, Any]:
    """Axes, shape, dtype and channel names of the array that is written (``n_first``: streamed length)."""
    shape = list(sample.pixels.shape)
    if n_first is not None and shape:
        shape[0] = n_first
    return {"axes": sample.axes, "shape": shape, "dtype": str(sample.pixels.dtype), "channels": list(sample.channels)}


#: DICOM JSON keys (PS3.18 F.2) of the attributes a planar spacing is read from.
_TAGS = {"PixelSpacing": "00280030", "ImagerPixelSpacing": "00181164",
         "EstimatedRadiographicMagnificationFactor": "00181114", "Rows": "00280010", "Columns": "00280011"}


def _values(header: dict[str, Any], keyword: str) -> list[float] | None:
    """The numeric values of ``keyword`` in a DICOM JSON header; ``None`` if absent or not numbers."""
    try:
        values = [float(v) for v in header.get(_TAGS[keyword], {}).get("Value", [])]
    except (TypeError, ValueError):
        return None
    return values if values and all(np.isfinite(values)) else None


def stated_pixel_spacing(header: dict[str, Any]) -> tuple[list[float] | None, str | None, float | None]:
    """``(spacing [row, column] mm, source attribute, magnification factor)`` a 2-D image's header states.

    Rules (module docstring): PixelSpacing, else ImagerPixelSpacing divided by a positive
    EstimatedRadiographicMagnificationFactor, else ImagerPixelSpacing. A spacing must be two values
    > 0 (PS3.3 10.7.1.3); one that is not (e.g. ``0\\0``) counts as absent. ``header`` is a DICOM
    JSON model dict (:attr:`medflow.sample.Sample.headers`).
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _values(header, keyword)
        if values is None or len(values) != 2 or min(values) <= 0:
            continue
        if keyword == "ImagerPixelSpacing":
            factor = _values(header, "EstimatedRadiographicMagnificationFactor")
            if factor and len(factor) == 1 and factor[0] > 0:
                return [v / factor[0] for v in values], f"{keyword}/EstimatedRadiographicMagnificationFactor", factor[0]
        return values, keyword, None
    return None, None, None


def _in_plane_shape(axes: str, shape: list[int]) -> tuple[int, int] | None:
    """(rows, columns) of an array by its axis names (``y``/``h`` rows, ``x``/``w`` columns)."""
    axes = axes.lower()
    rows = next((shape[i] for i, a in enumerate(axes) if a in "yh"), None) if len(axes) == len(shape) else None
    cols = next((shape[i] for i, a in enumerate(axes) if a in "xw"), None) if len(axes) == len(shape) else None
    return (rows, cols) if rows is not None and cols is not None else None


def planar_spacing_record(header: dict[str, Any] | None, array: dict[str, Any]) -> dict[str, Any] | None:
    """The ``meta["pixel_spacing"]`` record of an item without patient geometry (module docstring).

    ``header``: the first slice's DICOM JSON header (``None``: nothing known, returns ``None``);
    ``array``: the :func:`array_record` of the written array.
    """
    if not header:
        return None
    spacing, source, factor = stated_pixel_spacing(header)
    rows, columns = (_values(header, k) for k in ("Rows", "Columns"))
    grid = [int(rows[0]), int(columns[0])] if rows and columns else None
    written = _in_plane_shape(array.get("axes", ""), list(array.get("shape", [])))
    return {"spacing": spacing, "spacing_source": source, "magnification_factor": factor, "file_grid": grid,
            "of_written_array": bool(spacing and grid and written and list(written) == grid)}


def output_record(sample: Sample) -> dict[str, Any]:
    """``{"geometry": ..., "array": ...}`` of the final sample, to merge into its ``meta``.

    ``geometry`` is ``None`` when the item has no patient geometry (e.g. a radiograph); such an
    item gets ``pixel_spacing`` instead (:func:`planar_spacing_record`).
    """
    geometry = sample.geometry
    record = {
        "geometry": geometry_record(geometry) if geometry is not None and geometry.slice_positions else None,
        "array": array_record(sample),
    }
    if record["geometry"] is None:
        record["pixel_spacing"] = planar_spacing_record(sample.headers[0] if sample.headers else None,
                                                        record["array"])
    return record


class SlabGeometry:
    """Joins the geometry of the slabs of a streamed item into the item's record."""

    def __init__(self) -> None:
        self.first: Sample | None = None
        self.positions: list[tuple[float, float, float]] = []
        self.n = 0

    def add(self, slab: Sample) -> None:
        if self.first is None:
            self.first = slab
        if slab.geometry is not None:
            self.positions.extend(slab.geometry.slice_positions)
        self.n += slab.pixels.shape[0] if slab.pixels.ndim else 0

    def record(self) -> dict[str, Any]:
        if self.first is None:
            return {"geometry": None, "array": None}
        geometry = self.first.geometry
        record = None
        if geometry is not None and self.positions:
            import dataclasses

            record = geometry_record(dataclasses.replace(geometry, slice_positions=tuple(self.positions)))
        out = {"geometry": record, "array": array_record(self.first, self.n)}
        if record is None:
            out["pixel_spacing"] = planar_spacing_record(self.first.headers[0] if self.first.headers else None,
                                                         out["array"])
        return out


__all__ = ["SlabGeometry", "array_record", "from_record", "geometry_record", "output_record",
           "planar_spacing_record", "stated_pixel_spacing"]
