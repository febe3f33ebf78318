"""Intensity corrections that need neighbours: N4 bias-field correction and denoising.

Plain numpy in and out (SimpleITK and OpenCV do the work); no ``Sample``, no I/O.
Volumes have axes ``zyx`` and spacing ``(sz, sy, sx)`` in mm. N4 runs on the threads it
is given (its output does not depend on their number: ``tests/test_n4_effort.py``);
curvature flow runs single-threaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medflow._lazy import lazy_import

sitk = lazy_import("SimpleITK")


def _image(volume: np.ndarray, spacing_zyx: Sequence[float]) -> sitk.Image:
    """A float32 SimpleITK image of a ``zyx`` volume (2-D when it has one slice)."""
    array = np.asarray(volume, dtype=np.float32)
    spacing = tuple(float(v) for v in spacing_zyx)
    if array.shape[0] == 1:
        image = sitk.GetImageFromArray(array[0])
        image.SetSpacing((spacing[2], spacing[1]))
    else:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((spacing[2], spacing[1], spacing[0]))
    return image


def _array(image: sitk.Image, shape: tuple[int, ...]) -> np.ndarray:
    return sitk.GetArrayFromImage(image).reshape(shape)


def n4_bias_correction(
    volume: np.ndarray,
    spacing_zyx: Sequence[float],
    *,
    shrink_factor: int = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
    convergence_threshold: float = 0.001,
    control_points: int = 4,
    mask: str = "otsu",
    intensity_offset: float = 0.0,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """N4 bias-field correction (Tustison et al. 2010, SimpleITK ``N4BiasFieldCorrectionImageFilter``).

    N4 models the image as ``true * bias`` with a smooth multiplicative ``bias``
    (a cubic B-spline in physical space) and estimates ``log(bias)`` on a shrunken
    copy of the volume; the full-resolution field is then evaluated from the B-spline
    and divided out: ``corrected = (x + offset) / bias - offset``.

    Args:
        volume: ``zyx`` array, any real dtype (one slice is corrected in 2-D).
        spacing_zyx: voxel spacing ``(sz, sy, sx)`` in mm (the spline lives in physical space).
        shrink_factor: each axis is shrunk by this factor for the estimation (never to
            fewer than 4 voxels); the field is evaluated at full resolution.
        iterations: maximum iterations per fitting level (one entry per level; each
            level doubles the control-point grid resolution).
        convergence_threshold: stop a level when the coefficient of variation change is below it.
        control_points: control points per axis at the first level (>= 4 for a cubic spline).
        mask: ``"otsu"`` fits only voxels above Otsu's threshold (the object, not the
            background); ``"positive"`` fits every voxel. Voxels with ``x + offset <= 0``
            are always left out (N4 works on ``log``).
        intensity_offset: added before and subtracted after (N4 needs positive
            intensities: e.g. 1024 for CT in HU).
        threads: threads of the N4 fit and of the full-resolution field (``None``:
            SimpleITK's default, every core). The output does not depend on it.

    Cost (``benchmarks/bench_n4.py``): the fit dominates and grows with the shrunken
    volume's voxel count times the iterations actually run (``convergence_threshold``
    usually stops a level early) times the control-point grid (which doubles per level).

    Returns:
        ``(corrected, bias)``: float32 arrays of the volume's shape.
    """
    shape = volume.shape
    shifted = np.asarray(volume, dtype=np.float64) + intensity_offset
    image = _image(shifted, spacing_zyx)
    factors = [max(1, min(shrink_factor, size // 4)) for size in image.GetSize()]
    small = sitk.Shrink(image, factors)
    positive = sitk.Cast(small > 0, sitk.sitkUInt8)
    if mask == "otsu":
        otsu = sitk.OtsuThreshold(small, 0, 1, 200)  # 1 above the threshold
        fit_mask = sitk.And(otsu, positive)
    elif mask == "positive":
        fit_mask = positive
    else:
        raise ValueError(f"mask must be 'otsu' or 'positive' (got {mask!r})")
    if not sitk.GetArrayViewFromImage(fit_mask).any():
        raise ValueError("N4 has no voxel to fit: the mask is empty (are intensities positive? see intensity_offset)")
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetConvergenceThreshold(float(convergence_threshold))
    n4.SetNumberOfControlPoints([int(control_points)] * image.GetDimension())
    if threads is not None:
        n4.SetNumberOfThreads(max(1, int(threads)))
    n4.Execute(small, fit_mask)
    log_bias = _array(n4.GetLogBiasFieldAsImage(image), shape).astype(np.float64)
    bias = np.exp(log_bias)
    corrected = shifted / bias - intensity_offset
    return corrected.astype(np.float32), bias.astype(np.float32)


def curvature_flow(
    volume: np.ndarray, spacing_zyx: Sequence[float], *, time_step: float = 0.0625, iterations: int = 5
) -> np.ndarray:
    """Edge-preserving smoothing by curvature flow (SimpleITK ``CurvatureFlowImageFilter``).

    Level sets move with speed proportional to their curvature, so noise (high
    curvature) is smoothed faster than edges. The spacing given to ITK is the voxel
    spacing divided by its smallest value, so anisotropic voxels are respected and
    ``time_step`` is in units of the finest axis: stable up to ``1 / 2**(d+1)``
    (0.125 in 2-D, 0.0625 in 3-D). One slice is smoothed in 2-D.

    Returns:
        float32 array of the volume's shape.
    """
    spacing = np.asarray(spacing_zyx, float)
    relative = spacing / spacing[1:].min() if volume.shape[0] == 1 else spacing / spacing.min()
    image = _image(volume, relative)
    smoother = sitk.CurvatureFlowImageFilter()
    smoother.SetTimeStep(float(time_step))
    smoother.SetNumberOfIterations(int(iterations))
    smoother.SetNumberOfThreads(1)
    return _array(smoother.Execute(image), volume.shape).astype(np.float32)


def nl_means_8bit(
    volume: np.ndarray,
    value_range: tuple[float, float],
    *,
    h: float = 10.0,
    template_window: int = 7,
    search_window: int = 21,
) -> np.ndarray:
    """Non-local means (OpenCV ``fastNlMeansDenoising``) on 8-bit-quantized slices.

    Each ``(y, x)`` slice is quantized to uint8 by ``round(255 * (x - low) / (high - low))``
    after clipping to ``[low, high]``, denoised in 2-D, and mapped back with
    ``low + q * (high - low) / 255``. The output therefore has 256 levels and values
    outside ``value_range`` are clipped: use it for display-range data, prefer
    :func:`curvature_flow` for float data.

    Args:
        volume: ``zyx`` array.
        value_range: ``(low, high)`` quantization range in input units, ``low < high``.
        h: filter strength in 8-bit levels (larger removes more noise and detail).
        template_window, search_window: odd patch and search window sizes in pixels.

    Returns:
        float32 array of the volume's shape.
    """
    import cv2

    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range must be increasing (got [{low}, {high}])")
    scale = (high - low) / 255.0
    quantized = np.rint((np.clip(np.asarray(volume, np.float64), low, high) - low) / scale).astype(np.uint8)
    out = np.empty(volume.shape, dtype=np.float32)
    for k in range(volume.shape[0]):
        denoised = cv2.fastNlMeansDenoising(quantized[k], None, float(h), int(template_window), int(search_window))
        out[k] = low + denoised.astype(np.float64) * scale
    return out
