"""Label masks in image files (NIfTI ``.nii``/``.nii.gz``, NRRD ``.nrrd``/``.nhdr``), read with SimpleITK.

SimpleITK reads both formats into LPS (origin, spacing, direction). The mask's axes must be
the image's axes up to order and sign (a signed permutation: NIfTI writers often store
columns or slices reversed); the mask is then re-ordered onto the image's axes and each of
its slices placed on an image slice like a SEG frame (:mod:`medflow.sources.labels.grid`).
Nothing is interpolated, cropped or padded: a mask must have the image's slices x rows x
columns and lie on its lattice (each mask slice on its own image slice, no in-plane shift);
any other mask is refused, naming the difference.
Values must be non-negative integers (a float 0/1 mask is accepted when every value is whole).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medflow._lazy import lazy_import
from medflow.errors import InputError
from medflow.sample import Segment
from medflow.sources.labels.grid import GridMismatch, ImageGrid

sitk = lazy_import("SimpleITK")

MASK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")


def is_mask_file(path: Path | str) -> bool:
    return str(path).lower().endswith(MASK_SUFFIXES)


def read_mask(path: Path, grid: ImageGrid, names: list[str] | None) -> tuple[list[tuple[Segment, np.ndarray]], list[str], float]:
    """Each non-zero value of the mask as a bool ``zyx`` mask on ``grid``.

    Value v is named ``names[v - 1]`` when ``names`` is given, else ``label <v>``.

    Raises:
        InputError: unreadable, non-integer values, or not on the image's lattice.
    """
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(str(path), f"unreadable mask: {str(exc).strip().splitlines()[-1][:200]}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(str(path), f"a mask must be a 3-D scalar image (got {image.GetDimension()}-D, "
                                    f"{image.GetNumberOfComponentsPerPixel()} component(s))")
    array = sitk.GetArrayFromImage(image)  # axes z, y, x
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError(str(path), "mask values must be whole numbers (a label map, not probabilities)")
    if array.size and array.min() < 0:
        raise InputError(str(path), f"mask values must be >= 0 (min is {array.min()})")
    array = array.astype(np.int64)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)  # columns: index axes i, j, k
    spacing = np.asarray(image.GetSpacing(), float)
    origin = np.asarray(image.GetOrigin(), float)
    target = np.column_stack([grid.row_dir, grid.col_dir, grid.normal])
    relation = target.T @ direction  # rows: image axes x, y, n; columns: mask axes i, j, k
    perm = np.argmax(np.abs(relation), axis=1)
    signs = np.sign(relation[np.arange(3), perm])
    if sorted(perm) != [0, 1, 2] or np.abs(np.abs(relation[np.arange(3), perm]) - 1).max() > 1e-3:
        raise InputError(str(path), "the mask's axes are not the image's axes (up to order and sign): "
                                    "it lies on another lattice (masks are not resampled)")
    # numpy axes are (k, j, i); bring mask axis perm[a] to image axis a (x, y, n -> numpy 2, 1, 0)
    sizes = np.asarray(image.GetSize())
    for a in range(3):
        if signs[a] < 0:  # reverse that mask axis: the origin moves to its far end
            origin = origin + direction[:, perm[a]] * spacing[perm[a]] * (sizes[perm[a]] - 1)
    np_axis = {0: 2, 1: 1, 2: 0}  # sitk index axis -> numpy axis
    array = np.transpose(array, [np_axis[perm[2]], np_axis[perm[1]], np_axis[perm[0]]])
    for a, numpy_axis in ((0, 2), (1, 1), (2, 0)):
        if signs[a] < 0:
            array = np.flip(array, axis=numpy_axis)
    sx, sy, sn = spacing[perm[0]], spacing[perm[1]], spacing[perm[2]]
    nz, ny, nx = grid.shape
    if array.shape != (nz, ny, nx):
        raise InputError(str(path), "the mask's grid is {} (slices x rows x columns, on the image's axes), the "
                         "image's is {}: a mask must cover the image's grid exactly (masks are not resampled, "
                         "cropped or padded)".format(*("x".join(map(str, shape)) for shape in (array.shape, grid.shape))))
    values = sorted(int(v) for v in np.unique(array) if v != 0)
    masks = {v: np.zeros((nz, ny, nx), dtype=bool) for v in values}
    max_offset = 0.0
    placed: dict[int, int] = {}
    for k in range(array.shape[0]):
        position = origin + k * sn * grid.normal
        try:
            match = grid.place_plane(position, grid.row_dir, grid.col_dir, (sy, sx), f"mask slice {k}")
        except GridMismatch as exc:
            raise InputError(str(path), str(exc)) from None
        if match.row_offset or match.col_offset or match.z in placed:
            where = (f"shifted by {match.row_offset} row(s) and {match.col_offset} column(s)"
                     if match.row_offset or match.col_offset else f"on image slice {match.z}, as mask slice "
                     f"{placed.get(match.z)}")
            raise InputError(str(path), f"mask slice {k} lies {where}: the mask is not on the image's grid "
                             "(masks are not resampled)")
        placed[match.z] = k
        max_offset = max(max_offset, abs(match.normal_offset_mm))
        for v in values:
            grid.paste(masks[v], array[k] == v, match)
    parts = []
    for v in values:
        name = names[v - 1] if names and v <= len(names) else f"label {v}"
        parts.append((Segment(v, name, (), (), f"mask {v}"), masks[v]))
    return parts, [], max_offset
