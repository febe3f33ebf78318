"""The `Sample` that flows through steps, and its geometry.

Conventions (see ARCHITECTURE.md):

* Physical space is DICOM patient space (LPS), lengths in mm.
* ``pixels`` is a C-ordered numpy array whose axes are named by ``axes``:
  ``"zyx"`` for a slice stack / volume, ``"yx"`` for one image, a trailing ``"c"``
  for channels. Only the layout step produces ``"nchw"``-style axes.
* ``channels`` names the channels in order (e.g. ``("r", "g", "b")``,
  ``("y", "cb", "cr")``) when the array has a channel axis, else ``()``.
* ``label`` (optional) is an integer label map on the image's own ``zyx`` grid (same
  slices, rows and columns as ``pixels`` before any layout step); ``segments`` name its
  values. Spatial steps move it with nearest neighbour, intensity steps leave it alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Geometry:
    """Exact physical geometry of a slice stack, in LPS millimetres.

    Every slice keeps its own position: nothing is resampled, so a tilted,
    uneven or gapped stack is described exactly.

    Attributes:
        row_direction: unit vector along a row, i.e. the direction of increasing
            column index ``x`` (first triplet of ImageOrientationPatient).
        column_direction: unit vector down a column, i.e. increasing row index
            ``y`` (second triplet of ImageOrientationPatient).
        pixel_spacing: ``(row_spacing, column_spacing)`` in mm, exactly as DICOM
            PixelSpacing: distance between rows (along y), then between columns (along x).
        slice_positions: ImagePositionPatient (centre of the first transmitted pixel)
            of each slice, in array order along ``z``; shape ``(n_slices, 3)``.
        slice_spacing: distance in mm between consecutive slices measured along
            the slice normal when that distance is uniform (within tolerance), else ``None``.
        notes: human-readable findings of series assembly (tilt, gaps, duplicates).
    """

    row_direction: Vec3
    column_direction: Vec3
    pixel_spacing: tuple[float, float]
    slice_positions: tuple[Vec3, ...]
    slice_spacing: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def origin(self) -> Vec3:
        """Position of voxel (0, 0, 0) in LPS mm (first slice's ImagePositionPatient)."""
        return self.slice_positions[0]

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal, row_direction x column_direction."""
        n = np.cross(np.asarray(self.row_direction, float), np.asarray(self.column_direction, float))
        return n / np.linalg.norm(n)

    @property
    def slice_step(self) -> np.ndarray | None:
        """Mean vector from one slice's position to the next (mm), ``None`` for one slice.

        For a gantry-tilted stack this vector is *not* parallel to the normal:
        it is the sheared third axis of the voxel grid.
        """
        positions = np.asarray(self.slice_positions, float)
        if len(positions) < 2:
            return None
        return (positions[-1] - positions[0]) / (len(positions) - 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "row_direction": list(self.row_direction),
            "column_direction": list(self.column_direction),
            "pixel_spacing": list(self.pixel_spacing),
            "slice_positions": [list(p) for p in self.slice_positions],
            "slice_spacing": self.slice_spacing,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Geometry:
        return cls(
            row_direction=tuple(data["row_direction"]),
            column_direction=tuple(data["column_direction"]),
            pixel_spacing=tuple(data["pixel_spacing"]),
            slice_positions=tuple(tuple(p) for p in data["slice_positions"]),
            slice_spacing=data.get("slice_spacing"),
            notes=tuple(data.get("notes", ())),
        )


@dataclass(frozen=True)
class Segment:
    """What one value of a label map means.

    Attributes:
        value: the integer the label map holds for this segment (0 is background).
        name: the segment's name (SEG SegmentLabel, RTSTRUCT ROIName, or the recipe's name).
        category: coded concept of the segment's category as ``[value, scheme, meaning]``
            (SEG SegmentedPropertyCategoryCodeSequence), empty when unknown.
        type: coded concept of the segment's type (SEG SegmentedPropertyTypeCodeSequence,
            RTSTRUCT RTROIInterpretedType as ``["", "", type]``), empty when unknown.
        source: where it was read: ``"SEG #<SegmentNumber>"``, ``"RTSTRUCT ROI <ROINumber>"``,
            ``"mask <value>"``, or several of them joined by ``"; "`` when segments were merged.
    """

    value: int
    name: str
    category: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "name": self.name, "category": list(self.category),
                "type": list(self.type), "source": self.source}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        return cls(int(data["value"]), data["name"], tuple(data.get("category", ())),
                   tuple(data.get("type", ())), data.get("source", ""))


@dataclass
class Sample:
    """One item (a series or a multi-frame instance) flowing through the steps.

    Attributes:
        item_id: stable id of the item, never derived from patient tags.
        pixels: the array; axes named by ``axes``.
        axes: axis names, e.g. ``"zyx"``, ``"zyxc"``; after layout e.g. ``"nchw"``.
        channels: channel names in order when there is a ``c`` axis, else ``()``.
        geometry: LPS geometry of the ``z``, ``y``, ``x`` axes, ``None`` if unknown.
        headers: per-slice DICOM headers as DICOM JSON model dicts (PS3.18 F.2),
            pixel data excluded, in the same order as the ``z`` axis.
        meta: small JSON-able facts about the item (modality, series description,
            units of the values, applied window...). Steps add to it; it goes to the
            manifest, so it never holds patient identity or file paths.
        source_files: absolute paths of the files the pixels came from (z order for a
            series; one file for a multi-frame item). For writers that need the original
            instances (anonymized DICOM); never written to the manifest.
        private_tables: rows for files that must stay outside the dataset (e.g. the
            de-identification crosswalk, original -> pseudonym): absolute path -> rows,
            the first row being the header. The engine merges every item's rows and
            writes each file once, atomically, with mode 0600; never in the manifest.
        originals: the parsed original instances (pydicom Datasets, pixel data as stored,
            never decoded) when the item was read without pixels (a chain that does not read
            pixels, e.g. de-identify -> DICOM). Identifying: only de-identifying writers use
            them; they are never cached, pickled back to the parent or written.
        label: optional integer label map (uint8 or uint16), axes ``zyx``, on the image's
            grid: ``label[z, y, x]`` belongs to the voxel ``pixels[z, y, x]`` (before a layout
            step); 0 is background. ``None`` when the item has no labels.
        segments: the label map's values and what they mean, sorted by value.
    """

    item_id: str
    pixels: np.ndarray
    axes: str
    channels: tuple[str, ...] = ()
    geometry: Geometry | None = None
    headers: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    source_files: tuple[str, ...] = ()
    private_tables: dict[str, list[list[str]]] = field(default_factory=dict)
    originals: tuple[Any, ...] = ()
    label: np.ndarray | None = None
    segments: tuple[Segment, ...] = ()

    def __post_init__(self) -> None:
        if self.pixels.ndim != len(self.axes):
            raise ValueError(
                f"Sample {self.item_id}: pixels have {self.pixels.ndim} dims but axes is {self.axes!r}"
            )
        if "c" in self.axes and self.channels and len(self.channels) != self.pixels.shape[self.axes.index("c")]:
            raise ValueError(
                f"Sample {self.item_id}: {len(self.channels)} channel names for "
                f"{self.pixels.shape[self.axes.index('c')]} channels"
            )
        if self.label is not None and (self.label.ndim != 3 or not np.issubdtype(self.label.dtype, np.integer)):
            raise ValueError(
                f"Sample {self.item_id}: a label map is an integer 'zyx' array, got shape "
                f"{self.label.shape} dtype {self.label.dtype}"
            )

    def label_matches(self) -> bool:
        """Does the label map lie on the pixels' ``zyx`` grid (``True`` when there is none)?"""
        if self.label is None:
            return True
        return self.axes[:3] == "zyx" and self.label.shape == self.pixels.shape[:3]

    def replace(self, **changes: Any) -> Sample:
        """A new Sample with ``changes`` applied; ``meta`` is copied, never shared."""
        if "meta" not in changes:
            changes["meta"] = dict(self.meta)
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """Shape, dtype, axes and value range: what an error message needs to show."""
        arr = self.pixels
        if arr.size and np.issubdtype(arr.dtype, np.number):
            value_range = f"[{arr.min():.6g}, {arr.max():.6g}]"
        else:
            value_range = "[]"
        return f"shape={arr.shape} dtype={arr.dtype} axes={self.axes!r} range={value_range}"
