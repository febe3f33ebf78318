"""Spatial kernels: stack analysis, resampling, orientation, crop/pad and slice resize.

Plain numpy (plus SimpleITK and OpenCV for interpolation); no ``Sample``, no I/O.

Conventions:

* Arrays have axes ``zyx`` (slice, row, column); a trailing channel axis is handled
  by the callers, one channel at a time.
* Physical space is DICOM patient space (LPS), lengths in mm.
* A stack is described by ``row_direction`` ``r`` (increasing column index ``x``),
  ``column_direction`` ``c`` (increasing row index ``y``), the pixel spacing
  ``(dy, dx)`` (DICOM PixelSpacing order: rows, then columns) and every slice's
  ImagePositionPatient ``P_k`` (PS3.3 C.7.6.2.1.1). The centre of voxel
  ``(k, i, j)`` is ``P_k + j*dx*r + i*dy*c``.
* Pixel-box convention: voxel ``i`` of an axis with spacing ``s`` covers
  ``[(i - 0.5) s, (i + 0.5) s]`` from the first centre. Resampling and resizing keep
  the boxes' outer edges (the field of view), as OpenCV's ``resize`` does: the new
  first centre moves by ``(s_new - s_old) / 2`` along the axis.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from medflow._lazy import lazy_import

sitk = lazy_import("SimpleITK")

#: Slices within this fraction of a voxel of a regular lattice count as regular.
LATTICE_TOLERANCE = 0.01

#: interpolator name -> SimpleITK constant name (looked up on use: SimpleITK is imported lazily)
SITK_INTERPOLATORS = {
    "nearest": "sitkNearestNeighbor",
    "linear": "sitkLinear",
    "bspline": "sitkBSpline",  # cubic B-spline interpolation (order 3, prefiltered)
}


def representable(value: float, dtype: np.dtype) -> bool:
    """True when ``dtype`` can hold ``value``: integers exactly and within range, floats without overflow."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return bool(not np.isfinite(value) or abs(value) <= float(np.finfo(dtype).max))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return bool(float(value).is_integer() and info.min <= value <= info.max)
    return bool(dtype.kind == "b" and value in (0, 1))


@dataclass(frozen=True)
class StackAnalysis:
    """Where the slices of a stack lie, relative to the first slice.

    Attributes:
        normal: unit normal ``r x c``.
        axis: unit vector of increasing slice index along the normal, ``+normal`` or
            ``-normal`` (slices may be ordered against the normal).
        along: ``(n,)`` distance of each slice from the first along ``axis``, mm, increasing.
        in_plane: ``(n, 2)`` offset of each slice's position from the first along
            ``(r, c)``, mm; non-zero for a gantry-tilted (sheared) stack.
        step: mean distance between slices along ``axis`` (mm), ``None`` for one slice.
        tilted: some slice is off the normal line through the first one by more than
            ``LATTICE_TOLERANCE`` of a pixel.
        uneven: some slice is off the uniform lattice along the normal by more than
            ``LATTICE_TOLERANCE`` of the mean step.
    """

    normal: np.ndarray
    axis: np.ndarray
    along: np.ndarray
    in_plane: np.ndarray
    step: float | None
    tilted: bool
    uneven: bool

    @property
    def regular(self) -> bool:
        return not (self.tilted or self.uneven)

    def describe(self) -> str:
        """Human words for what makes the stack irregular ("" when regular)."""
        words = []
        if self.tilted:
            shift = float(np.abs(self.in_plane).max())
            words.append(f"tilted (slice positions drift up to {shift:.3g} mm off the slice normal)")
        if self.uneven:
            gaps = np.diff(self.along)
            words.append(f"uneven (steps from {gaps.min():.4g} to {gaps.max():.4g} mm along the normal)")
        return " and ".join(words)


def analyse_stack(
    row_direction, column_direction, pixel_spacing, slice_positions
) -> StackAnalysis:
    """Locate every slice relative to the first one (see :class:`StackAnalysis`).

    Raises:
        ValueError: two slices at the same distance along the normal (duplicates) or
            slices not monotonic along the normal.
    """
    r = np.asarray(row_direction, float)
    c = np.asarray(column_direction, float)
    positions = np.asarray(slice_positions, float).reshape(-1, 3)
    normal = np.cross(r, c)
    normal /= np.linalg.norm(normal)
    rel = positions - positions[0]
    signed = rel @ normal
    sign = 1.0 if len(signed) < 2 or signed[-1] >= signed[0] else -1.0
    along = signed * sign
    in_plane = np.stack([rel @ r, rel @ c], axis=1)
    if len(along) < 2:
        return StackAnalysis(normal, normal * sign, along, in_plane, None, False, False)
    gaps = np.diff(along)
    if np.any(gaps <= 0):
        raise ValueError(
            "slices are not strictly ordered along the slice normal (duplicate or unsorted positions)"
        )
    step = float(along[-1] / (len(along) - 1))
    uneven = bool(np.abs(along - step * np.arange(len(along))).max() > LATTICE_TOLERANCE * step)
    tilted = bool(np.abs(in_plane).max() > LATTICE_TOLERANCE * min(pixel_spacing))
    return StackAnalysis(normal, normal * sign, along, in_plane, step, tilted, uneven)


# ---------------------------------------------------------------------------- resample


@dataclass(frozen=True)
class Resampled:
    """Output of :func:`resample_stack`.

    Attributes:
        pixels: ``(nz, ny, nx)`` array; the input dtype when every interpolation is
            nearest, else float32.
        origin: centre of voxel (0, 0, 0), LPS mm.
        directions: ``(3, 3)`` columns: unit vectors of increasing x, y, z index.
        spacing: ``(sz, sy, sx)`` mm.
        source_slice: ``(nz,)`` index of the input slice nearest to each output slice.
        method: one line saying how it was computed (for the geometry notes).
    """

    pixels: np.ndarray
    origin: np.ndarray
    directions: np.ndarray
    spacing: tuple[float, float, float]
    source_slice: np.ndarray
    method: str


def resample_stack(
    pixels: np.ndarray,
    row_direction,
    column_direction,
    pixel_spacing: tuple[float, float],
    slice_positions,
    spacing: tuple[float, float, float],
    interpolator: str = "linear",
    *,
    anisotropic: bool = False,
    z_interpolator: str = "nearest",
    fill_value: float = 0.0,
    threads: int | None = None,
) -> Resampled:
    """Resample a slice stack onto a regular grid with ``spacing = (sz, sy, sx)`` mm.

    The output grid has axes ``r``, ``c`` and the slice normal (oriented like the
    slice order), and covers the input's field of view (pixel-box convention; for a
    tilted stack, the union of all slices' boxes). Sizes are ``round(extent / s)``.

    * Regular stack, ``anisotropic=False``: one SimpleITK ``Resample`` on the image
      with origin ``P_0``, direction ``[r, c, ±n]`` and spacing ``(dx, dy, step)``.
    * Otherwise (tilted or uneven stack, or ``anisotropic=True``): two passes computed
      from the true slice positions. (1) Each input slice is resampled in its own plane
      by SimpleITK onto the output's in-plane grid, using the slice's own position
      (this absorbs the tilt shear exactly). (2) Along the normal, each output slice is
      interpolated with numpy between the two input slices that bracket it, at their
      true distances (``z_interpolator``: ``linear`` or ``nearest``; when not
      ``anisotropic``, ``linear``, or ``nearest`` for the nearest interpolator).
      Outside the first/last slice the edge slice is used (within half a step).

    Args:
        pixels: ``(nz, ny, nx)`` array, any real dtype.
        spacing: target ``(sz, sy, sx)`` in mm, each > 0. With one input slice ``sz``
            is ignored and the output keeps one slice.
        interpolator: ``nearest``, ``linear`` or ``bspline`` (cubic B-spline, SimpleITK).
        fill_value: value of output voxels outside the input slices' boxes (with a tilted
            stack, voxels at the edge of the slices' sheared footprint blend it with data).
        threads: SimpleITK threads for each ``Resample`` (``None``: SimpleITK's global default,
            every core unless ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` says otherwise). The
            output does not depend on it: each output voxel is computed on its own, from the
            same inputs in the same order, whichever thread computes it (pinned by
            ``tests/test_resample_threads.py``).

    Returns:
        :class:`Resampled`.

    Raises:
        ValueError: bad interpolator names, a non-3-D array, duplicate slice positions, or
            a ``fill_value`` the kept integer dtype cannot hold.
    """
    if interpolator not in SITK_INTERPOLATORS:
        raise ValueError(f"unknown interpolator {interpolator!r}; use one of {sorted(SITK_INTERPOLATORS)}")
    if z_interpolator not in ("nearest", "linear"):
        raise ValueError(f"z_interpolator must be 'nearest' or 'linear' (got {z_interpolator!r})")
    if pixels.ndim != 3:
        raise ValueError(f"resample_stack needs a (z, y, x) array, got shape {pixels.shape}")
    dy, dx = (float(v) for v in pixel_spacing)
    sz, sy, sx = (float(v) for v in spacing)
    stack = analyse_stack(row_direction, column_direction, pixel_spacing, slice_positions)
    r = np.asarray(row_direction, float)
    c = np.asarray(column_direction, float)
    p0 = np.asarray(slice_positions, float).reshape(-1, 3)[0]
    directions = np.column_stack([r, c, stack.axis])
    nz, ny, nx = pixels.shape
    along_method = z_interpolator if anisotropic else ("nearest" if interpolator == "nearest" else "linear")
    # SimpleITK has no float16 or bool pixels: those go through float32.
    keeps_dtype = interpolator == "nearest" and pixels.dtype not in (np.float16, np.bool_)
    plane_dtype = pixels.dtype if keeps_dtype else np.dtype(np.float32)
    if not representable(fill_value, plane_dtype):
        raise ValueError(f"fill value {fill_value} is not representable in dtype {plane_dtype}")

    # In-plane grid: union of every slice's pixel boxes along r and c.
    lo_x, hi_x = stack.in_plane[:, 0].min() - dx / 2, stack.in_plane[:, 0].max() + (nx - 0.5) * dx
    lo_y, hi_y = stack.in_plane[:, 1].min() - dy / 2, stack.in_plane[:, 1].max() + (ny - 0.5) * dy
    size_x = max(1, int(round((hi_x - lo_x) / sx)))
    size_y = max(1, int(round((hi_y - lo_y) / sy)))
    x0, y0 = lo_x + sx / 2, lo_y + sy / 2
    if nz == 1:
        size_z, t0, sz_out = 1, 0.0, sz
    else:
        step = stack.step
        size_z = max(1, int(round((stack.along[-1] + step) / sz)))
        t0, sz_out = -step / 2 + sz / 2, sz
    t_out = t0 + sz_out * np.arange(size_z)
    origin = p0 + x0 * r + y0 * c + t0 * stack.axis
    source_slice = np.abs(t_out[:, None] - stack.along[None, :]).argmin(axis=1)

    if stack.regular and not anisotropic and nz > 1:
        image = sitk.GetImageFromArray(pixels.astype(plane_dtype, copy=False))
        image.SetOrigin(tuple(p0))
        image.SetSpacing((dx, dy, stack.step))
        image.SetDirection(tuple(directions.ravel()))
        out = _sitk_resample(
            image, origin, directions, (sx, sy, sz_out), (size_x, size_y, size_z), interpolator, fill_value,
            threads,
        )
        method = f"SimpleITK {interpolator} resampling of the regular stack"
        return Resampled(out, origin, directions, (sz_out, sy, sx), source_slice, method)

    planes = np.empty((nz, size_y, size_x), dtype=plane_dtype)
    for k in range(nz):
        image = sitk.GetImageFromArray(pixels[k].astype(plane_dtype, copy=False))
        image.SetOrigin(tuple(float(v) for v in stack.in_plane[k]))
        image.SetSpacing((dx, dy))
        planes[k] = _sitk_resample(
            image, (x0, y0), np.eye(2), (sx, sy), (size_x, size_y), interpolator, fill_value, threads
        )
    out_dtype = plane_dtype if along_method == "nearest" else np.dtype(np.float32)
    out = interpolate_along(planes, stack.along, t_out, along_method, out_dtype)
    method = (
        f"SimpleITK {interpolator} in each slice's plane at its true position, then {along_method} "
        "interpolation along the normal between the true slice distances"
    )
    return Resampled(out, origin, directions, (sz_out, sy, sx), source_slice, method)


def _sitk_resample(image, origin, directions, spacing, size, interpolator, fill_value, threads=None) -> np.ndarray:
    resampler = sitk.ResampleImageFilter()
    if threads is not None:
        resampler.SetNumberOfThreads(max(1, int(threads)))
    resampler.SetOutputOrigin(tuple(float(v) for v in origin))
    resampler.SetOutputDirection(tuple(float(v) for v in np.asarray(directions).ravel()))
    resampler.SetOutputSpacing(tuple(float(v) for v in spacing))
    resampler.SetSize([int(v) for v in size])
    resampler.SetInterpolator(getattr(sitk, SITK_INTERPOLATORS[interpolator]))
    resampler.SetDefaultPixelValue(float(fill_value))
    resampler.SetOutputPixelType(image.GetPixelID())
    return array_of_image(resampler.Execute(image))


class _ImageBuffer:
    """Exposes a SimpleITK image's pixel buffer to numpy and keeps the image alive while the array lives."""

    def __init__(self, image):
        self.image = image
        view = sitk.GetArrayViewFromImage(image)
        interface = dict(view.__array_interface__)
        interface["data"] = (interface["data"][0], False)  # writable: the image is ours alone
        self.__array_interface__ = interface


def array_of_image(image) -> np.ndarray:
    """The ``zyx`` (C-ordered) pixels of a SimpleITK image without copying them.

    ``sitk.GetArrayFromImage`` copies the buffer (0.3 s for a 500 MB volume);
    ``GetArrayViewFromImage`` does not, but its array dangles once the image is freed.
    Here the array's base holds the image, so the buffer lives as long as the array.
    """
    return np.asarray(_ImageBuffer(image))


def interpolate_along(
    planes: np.ndarray, positions: np.ndarray, targets: np.ndarray, method: str, dtype=None
) -> np.ndarray:
    """Interpolate ``planes`` (axis 0 sampled at increasing ``positions``) at ``targets``.

    ``linear``: ``(1 - a) * planes[k] + a * planes[k + 1]`` with
    ``a = (t - p_k) / (p_{k+1} - p_k)``, computed in float64 one output plane at a time;
    ``nearest``: the plane at the nearest position (ties go to the lower index).
    Targets outside ``[p_0, p_last]`` take the edge plane. The result has ``dtype``
    (default: the planes' dtype).
    """
    positions = np.asarray(positions, float)
    targets = np.asarray(targets, float)
    out = np.empty((len(targets),) + planes.shape[1:], dtype=dtype or planes.dtype)
    if method == "nearest" or len(positions) == 1:
        index = np.abs(targets[:, None] - positions[None, :]).argmin(axis=1)
        out[...] = planes[index]
        return out
    clipped = np.clip(targets, positions[0], positions[-1])
    upper = np.clip(np.searchsorted(positions, clipped, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    weight = (clipped - positions[lower]) / (positions[upper] - positions[lower])
    for o, (k, a) in enumerate(zip(lower, weight, strict=True)):
        low = planes[k].astype(np.float64)
        out[o] = low + a * (planes[k + 1].astype(np.float64) - low)
    return out


# ---------------------------------------------------------------------------- orient

_LETTERS = {
    "L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0), "I": (0.0, 0.0, -1.0),
}  # fmt: skip


def orientation_vectors(code: str) -> np.ndarray:
    """LPS unit vectors (as columns) of an orientation code like ``"LPS"`` or ``"RAS"``.

    Letter ``i`` names where increasing index ``i`` points, for the axes ``x``
    (column), ``y`` (row), ``z`` (slice) in that order: the convention of SimpleITK's
    ``DICOMOrientImageFilter`` and of nibabel's axis codes. ``"LPS"`` is the identity
    of DICOM patient space; ``"RAS"`` is NIfTI/nibabel's canonical orientation.

    Raises:
        ValueError: not three letters from L/R, P/A, S/I each used once.
    """
    code = code.upper()
    if len(code) != 3 or any(ch not in _LETTERS for ch in code):
        raise ValueError(f"orientation code must be 3 letters from L,R,P,A,S,I (got {code!r})")
    vectors = np.array([_LETTERS[ch] for ch in code]).T
    if sorted(np.abs(vectors).argmax(axis=0)) != [0, 1, 2]:
        raise ValueError(f"orientation code {code!r} names one body axis twice")
    return vectors


def orientation_transform(directions: np.ndarray, code: str) -> tuple[tuple[int, int, int], tuple[bool, ...], float]:
    """Axis permutation and flips that bring an image with ``directions`` closest to ``code``.

    Args:
        directions: ``(3, 3)`` columns = LPS unit vectors of increasing x, y, z index.
        code: target orientation code (see :func:`orientation_vectors`).

    Returns:
        ``(source, flip, obliquity_deg)``: new axis ``a`` (0=x, 1=y, 2=z) is old axis
        ``source[a]``, reversed when ``flip[a]``; ``obliquity_deg`` is the largest angle
        between a new axis and the code's direction (0 for a non-oblique image).
    """
    target = orientation_vectors(code)
    dots = target.T @ np.asarray(directions, float)  # dots[a, i] = target_a . old_i
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(dots[a, p[a]]) for a in range(3)))
    flip = tuple(bool(dots[a, best[a]] < 0) for a in range(3))
    cosines = np.clip([abs(dots[a, best[a]]) for a in range(3)], -1.0, 1.0)
    return tuple(int(i) for i in best), flip, float(np.degrees(np.arccos(cosines.min())))


def apply_orientation(array: np.ndarray, source: tuple[int, int, int], flip: tuple[bool, ...]) -> np.ndarray:
    """Permute and flip the ``z, y, x`` axes (first three; a trailing channel axis stays).

    Exact: no interpolation. ``source``/``flip`` as returned by :func:`orientation_transform`
    (in x, y, z order; array axis of x is 2, of y 1, of z 0).
    """
    order = [2 - source[2 - k] for k in range(3)] + list(range(3, array.ndim))
    out = np.transpose(array, order)
    for a in range(3):
        if flip[a]:
            out = np.flip(out, axis=2 - a)
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------- crop / pad


def crop_pad_plan(shape: tuple[int, ...], size: tuple[int | None, ...]) -> list[tuple[int, int, int]]:
    """Centered crop/pad of each axis: ``(start, pad_before, pad_after)`` per axis.

    Cropping an axis from ``n`` to ``m < n`` keeps ``[start, start + m)`` with
    ``start = (n - m) // 2``; padding to ``m > n`` adds ``(m - n) // 2`` before and the
    rest after (so an odd extra voxel goes to the end in both cases). ``None`` keeps the axis.
    New index ``i`` is old index ``i + start - pad_before``.
    """
    plan = []
    for n, m in zip(shape, size, strict=True):
        if m is None or m == n:
            plan.append((0, 0, 0))
        elif m < n:
            plan.append(((n - m) // 2, 0, 0))
        else:
            plan.append((0, (m - n) // 2, (m - n) - (m - n) // 2))
    return plan


def crop_pad(array: np.ndarray, size: tuple[int | None, ...], pad_value: float) -> np.ndarray:
    """Center-crop/pad the leading ``len(size)`` axes of ``array`` to ``size`` (see :func:`crop_pad_plan`).

    Keeps the dtype; ``pad_value`` must be representable in it exactly.
    """
    if not representable(pad_value, array.dtype):
        raise ValueError(f"pad value {pad_value} is not representable in dtype {array.dtype}")
    plan = crop_pad_plan(array.shape[: len(size)], size)
    slices = []
    pads = []
    for (start, before, after), n, m in zip(plan, array.shape, size, strict=False):
        length = n if m is None or m >= n else m
        slices.append(slice(start, start + length))
        pads.append((before, after))
    pads += [(0, 0)] * (array.ndim - len(size))
    return np.pad(array[tuple(slices)], pads, mode="constant", constant_values=pad_value)


# ---------------------------------------------------------------------------- resize

def resize_slices(array: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize every ``(y, x)`` slice of a ``zyx`` or ``zyxc`` array to ``size = (rows, cols)`` with OpenCV.

    OpenCV's ``resize`` keeps the field of view (pixel-box convention): output pixel
    ``j`` samples input coordinate ``(j + 0.5) * n_in / n_out - 0.5``. ``nearest`` is
    ``INTER_NEAREST_EXACT`` (the centre-consistent nearest neighbour; OpenCV's legacy
    ``INTER_NEAREST`` rounds down and shifts the image by up to half a pixel).
    ``cubic`` and ``lanczos4`` can overshoot the input range. Keeps the dtype
    (OpenCV supports uint8, uint16, int16, float32, float64).
    """
    import cv2

    flags = {
        "nearest": cv2.INTER_NEAREST_EXACT,
        "linear": cv2.INTER_LINEAR,
        "cubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
        "lanczos4": cv2.INTER_LANCZOS4,
    }
    if interpolation not in flags:
        raise ValueError(f"unknown interpolation {interpolation!r}; use one of {sorted(flags)}")
    rows, cols = (int(v) for v in size)
    out = np.empty((array.shape[0], rows, cols) + array.shape[3:], dtype=array.dtype)
    for k in range(array.shape[0]):
        resized = cv2.resize(array[k], (cols, rows), interpolation=flags[interpolation])
        out[k] = resized.reshape(out.shape[1:])
    return out


def resized_spacing_and_shift(n_old: int, n_new: int, spacing: float) -> tuple[float, float]:
    """New spacing and first-centre shift (mm) of an axis resized from ``n_old`` to ``n_new`` pixels.

    ``spacing_new = spacing * n_old / n_new`` (same field of view ``n * spacing``);
    the first centre moves by ``(spacing_new - spacing) / 2`` along the axis.
    """
    new = spacing * n_old / n_new
    return new, (new - spacing) / 2
