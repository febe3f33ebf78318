"""The image's own slice grid, as label readers see it: where a plane or a point falls.

Every slice keeps its own ImagePositionPatient (see :class:`medflow.sample.Geometry`), so
a label plane is matched to *a slice*, not to a regular lattice: a tilted, uneven or gapped
stack is labelled exactly where its slices are.

Tolerance rule: a label plane (SEG frame, RTSTRUCT contour) belongs to the slice whose plane
is nearest along the slice normal, when that distance is at most ``PLANE_TOLERANCE`` times
the smallest distance between consecutive slices (along the normal); with one slice, times
its SliceThickness-free fallback of 1 mm. Writers of real data round positions (a QIN PET
SEG sits 0.04 mm off its slices), so equality would be wrong; a fraction of the slice
spacing cannot pick the wrong slice. The largest offset found is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medflow.sample import Geometry

PLANE_TOLERANCE = 0.2  # fraction of the smallest slice distance along the normal
ORIENTATION_TOLERANCE = 1e-3  # per direction cosine, as discovery groups series
SPACING_TOLERANCE = 1e-3  # relative, PixelSpacing of a label plane vs the image's
PIXEL_TOLERANCE = 0.01  # in pixels: a label plane's in-plane offset must be this close to whole pixels


class GridMismatch(ValueError):
    """A label plane does not lie on the image's grid; the message says how it differs."""


@dataclass(frozen=True)
class PlaneMatch:
    """Where a label plane lies on the image grid."""

    z: int  # slice index
    row_offset: int  # plane row 0 is image row ``row_offset``
    col_offset: int
    normal_offset_mm: float  # signed distance of the plane from slice ``z`` along the normal


class ImageGrid:
    """The ``zyx`` grid of a Sample: per-slice positions, in-plane directions and spacing (LPS mm)."""

    def __init__(self, geometry: Geometry, shape_zyx: tuple[int, int, int]):
        self.geometry = geometry
        self.shape = tuple(int(v) for v in shape_zyx)
        self.row_dir = np.asarray(geometry.row_direction, float)  # along x (columns)
        self.col_dir = np.asarray(geometry.column_direction, float)  # along y (rows)
        self.normal = geometry.normal
        self.dy, self.dx = (float(v) for v in geometry.pixel_spacing)
        self.positions = np.asarray(geometry.slice_positions, float)
        if len(self.positions) != self.shape[0]:
            raise GridMismatch(f"geometry has {len(self.positions)} slice positions for {self.shape[0]} slices")
        heights = self.positions @ self.normal
        gaps = np.abs(np.diff(np.sort(heights)))
        gaps = gaps[gaps > 1e-6]
        self.tolerance_mm = PLANE_TOLERANCE * (float(gaps.min()) if gaps.size else 1.0)
        self.heights = heights

    def nearest_slice(self, point: np.ndarray) -> tuple[int, float]:
        """Index of the slice whose plane is nearest to ``point`` (LPS mm) along the normal, and that signed distance."""
        distances = (np.asarray(point, float) - self.positions) @ self.normal
        z = int(np.argmin(np.abs(distances)))
        return z, float(distances[z])

    def to_pixels(self, points: np.ndarray, z: int) -> np.ndarray:
        """Continuous ``(column, row)`` coordinates of ``points`` (n, 3) in slice ``z``: 0 is a pixel centre."""
        rel = np.asarray(points, float) - self.positions[z]
        return np.column_stack([rel @ self.row_dir / self.dx, rel @ self.col_dir / self.dy])

    def place_plane(self, position, row_direction, column_direction, pixel_spacing, what: str) -> PlaneMatch:
        """Match a label plane (its ImagePositionPatient, orientation and PixelSpacing) to a slice.

        Raises:
            GridMismatch: other orientation or pixel spacing, off every slice along the normal
                (beyond :data:`PLANE_TOLERANCE`), or shifted in-plane by a fraction of a pixel.
        """
        row_direction = np.asarray(row_direction, float)
        column_direction = np.asarray(column_direction, float)
        if (np.abs(row_direction - self.row_dir).max() > ORIENTATION_TOLERANCE
                or np.abs(column_direction - self.col_dir).max() > ORIENTATION_TOLERANCE):
            raise GridMismatch(
                f"{what}: orientation {_fmt(row_direction)}/{_fmt(column_direction)} differs from the image's "
                f"{_fmt(self.row_dir)}/{_fmt(self.col_dir)} (labels are not resampled)"
            )
        dy, dx = (float(v) for v in pixel_spacing)
        if abs(dy - self.dy) > SPACING_TOLERANCE * self.dy or abs(dx - self.dx) > SPACING_TOLERANCE * self.dx:
            raise GridMismatch(
                f"{what}: PixelSpacing {dy:g}\\{dx:g} differs from the image's {self.dy:g}\\{self.dx:g} "
                "(labels are not resampled)"
            )
        position = np.asarray(position, float)
        z, offset = self.nearest_slice(position)
        if abs(offset) > self.tolerance_mm:
            raise GridMismatch(
                f"{what}: {abs(offset):.3g} mm from the nearest slice along the normal (tolerance "
                f"{self.tolerance_mm:.3g} mm = {PLANE_TOLERANCE} x the smallest slice distance)"
            )
        col, row = self.to_pixels(position[None, :], z)[0]
        if abs(col - round(col)) > PIXEL_TOLERANCE or abs(row - round(row)) > PIXEL_TOLERANCE:
            raise GridMismatch(
                f"{what}: shifted in-plane by ({col:.3f}, {row:.3f}) pixels, not a whole number (labels are "
                "not resampled)"
            )
        return PlaneMatch(z, int(round(row)), int(round(col)), offset)

    def paste(self, volume: np.ndarray, plane: np.ndarray, match: PlaneMatch) -> None:
        """OR ``plane`` (bool, rows x columns) into ``volume`` (bool, zyx) at ``match``, clipped to the image."""
        _, ny, nx = self.shape
        r0, c0 = match.row_offset, match.col_offset
        rs, cs = max(0, -r0), max(0, -c0)
        re, ce = min(plane.shape[0], ny - r0), min(plane.shape[1], nx - c0)
        if re <= rs or ce <= cs:
            return
        volume[match.z, r0 + rs : r0 + re, c0 + cs : c0 + ce] |= plane[rs:re, cs:ce]


def _fmt(vector: np.ndarray) -> str:
    return "\\".join(f"{v:.4g}" for v in vector)
