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


def output_record(sample: Sample) -> dict[str, Any]:
    """``{"geometry": ..., "array": ...}`` of the final sample, to merge into its ``meta``.

    ``geometry`` is ``None`` when the item has no patient geometry (e.g. a radiograph).
    """
    geometry = sample.geometry
    return {
        "geometry": geometry_record(geometry) if geometry is not None and geometry.slice_positions else None,
        "array": array_record(sample),
    }


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
        return {"geometry": record, "array": array_record(self.first, self.n)}


__all__ = ["SlabGeometry", "array_record", "from_record", "geometry_record", "output_record"]
