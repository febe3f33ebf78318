"""A synthetic chest/abdomen CT phantom in pure numpy (no I/O, no DICOM).

The phantom is drawn analytically in patient space (LPS, mm) at one anatomical
level at a time, so any slice grid (pixel spacing, field of view, slice position)
samples the same anatomy. Axial slices only: rows run along +y (posterior),
columns along +x (patient left), as for ImageOrientationPatient ``1\\0\\0\\0\\1\\0``.

Anatomical frame (``level_mm``): 0 is the dome of the diaphragm, positive is
cranial (+z in LPS). Structures, in painting order, for ``scale = 1``:

=================  ==========================================  ===============  ===========
structure          centre (x, y) mm / size mm                  levels (mm)      HU
=================  ==========================================  ===============  ===========
body (fat layer)   ellipse at (0, 0), semi-axes 165 x 115      all              -100
soft tissue        same ellipse shrunk by 12 mm                all              40
liver              (-60, 0), semi-axes 75 x 70, tapering       -120 .. 10       60
kidneys            (+-55, 45), 25 x 35                         -120 .. -60      30
stomach gas        (50, -30), radius 18                        -60 .. -10       -900
lungs              (+-75, 5), 50 x 75 at the widest (30 mm)    -30 .. 90        -870..-800
lung vessels       tubes of radius 1.2..3 mm inside the lungs  -30 .. 90        40
heart (+ fat)      (15, -30), 45 x 38 (fat rim 4 mm)           -10 .. 50        45 (-90)
aorta              (22, 35), radius 13                         -120 .. 70       50
sternum            (0, -95), 14 x 6                            0 .. 90          700
ribs               8 circles r 5 mm on the inner body outline  -70 .. 90       900
vertebral body     (0, 63), radius 17, cortical rim 3 mm       all              700 (1200)
spinal canal       (0, 88), radius 8                           all              10
spinous process    (0, 105), 6 x 10                            all              900
=================  ==========================================  ===============  ===========

Every length (centres, sizes) is multiplied by ``Anatomy.scale``; levels are not.
Lungs shrink towards both ends of their range (semi-axes times
``sqrt(1 - ((level - 30) / 60) ** 2)``), so consecutive slices differ.

Determinism: only IEEE-exact operations (``+ - * /``, ``sqrt``, comparisons,
``rint``) touch floating point, and the noise is integer-valued (sum of four
uniform integers, :func:`integer_noise`), so the same inputs give the same int16
values on every platform; no libm transcendental function is on the path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HU_MIN = -1024
HU_MAX = 3071
HU_AIR = -1000
HU_FAT = -100
HU_SOFT = 40
HU_LIVER = 60
HU_KIDNEY = 30
HU_GAS = -900
HU_LUNG_ANTERIOR = -870
HU_LUNG_POSTERIOR = -800
HU_VESSEL = 40
HU_HEART = 45
HU_AORTA = 50
HU_BONE = 700
HU_CORTICAL = 1200
HU_RIB = 900
HU_CSF = 10

LUNG_LEVELS_MM = (-30.0, 90.0)
_N_VESSELS = 14
_RIB_ANGLES_DEG = (25.0, 50.0, 130.0, 155.0, 205.0, 230.0, 310.0, 335.0)


@dataclass(frozen=True)
class Anatomy:
    """One phantom "patient".

    Attributes:
        scale: body size factor applied to every in-plane length (1.0: an adult of
            330 x 230 mm axial outline).
        vessels: lung vessel tubes, one row ``(x0, y0, dxdz, dydz, radius)`` each, in mm
            before scaling: centre ``(x0 + dxdz * level, y0 + dydz * level)``.
    """

    scale: float
    vessels: tuple[tuple[float, float, float, float, float], ...]


def make_anatomy(scale: float, seed: int) -> Anatomy:
    """Anatomy with lung vessels drawn from ``np.random.default_rng(seed)``.

    Only ``Generator.random`` (exact bit manipulation) is used, so the vessels are
    the same on every platform.
    """
    rng = np.random.default_rng(seed)
    u = rng.random((_N_VESSELS, 5))
    vessels = []
    for i, (a, b, c, d, e) in enumerate(u):
        side = -1.0 if i % 2 == 0 else 1.0
        x0 = side * (50.0 + 50.0 * a)  # 50..100 mm from the midline
        y0 = -45.0 + 100.0 * b
        vessels.append((x0, y0, (c - 0.5) * 0.3, (d - 0.5) * 0.3, 1.2 + 1.8 * e))
    return Anatomy(scale=float(scale), vessels=tuple(vessels))


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    """Boolean mask of the filled axis-aligned ellipse (broadcast over x (1, cols), y (rows, 1))."""
    if ax <= 0 or ay <= 0:
        return np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    return np.square((x - cx) / ax) + np.square((y - cy) / ay) <= 1.0


def _profile(level: float, low: float, high: float) -> float:
    """Half-ellipse taper: 1 in the middle of ``[low, high]``, 0 at and outside the ends."""
    t = (level - (low + high) / 2.0) / ((high - low) / 2.0)
    return float(np.sqrt(1.0 - t * t)) if -1.0 < t < 1.0 else 0.0


def phantom_hu(anatomy: Anatomy, level_mm: float, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
    """Noise-free phantom slice in Hounsfield units.

    Args:
        anatomy: the phantom patient.
        level_mm: anatomical level (0 = diaphragm dome, + cranial), mm.
        x_mm: float64, shape ``(cols,)``: LPS x of each column centre, mm.
        y_mm: float64, shape ``(rows,)``: LPS y of each row centre, mm.

    Returns:
        int16 array, axes ``yx``, shape ``(rows, cols)``, HU in ``[-1000, 1200]``.
    """
    s = anatomy.scale
    x = np.asarray(x_mm, dtype=np.float64)[None, :] / s  # work in the unscaled frame
    y = np.asarray(y_mm, dtype=np.float64)[:, None] / s
    lv = float(level_mm)
    out = np.full((y.shape[0], x.shape[1]), HU_AIR, dtype=np.int16)

    out[_ellipse(x, y, 0, 0, 165, 115)] = HU_FAT
    out[_ellipse(x, y, 0, 0, 153, 103)] = HU_SOFT

    liver = float(np.sqrt(_profile(lv, -120, 10)))  # fuller than a half-ellipse
    out[_ellipse(x, y, -60, 0, 75 * liver, 70 * liver)] = HU_LIVER
    if -120 <= lv <= -60:
        for side in (-1, 1):
            out[_ellipse(x, y, side * 55, 45, 25, 35)] = HU_KIDNEY
    if -60 <= lv <= -10:
        out[_ellipse(x, y, 50, -30, 18, 18)] = HU_GAS

    lung = _profile(lv, *LUNG_LEVELS_MM)
    if lung > 0:
        lungs = _ellipse(x, y, -75, 5, 50 * lung, 75 * lung) | _ellipse(x, y, 75, 5, 50 * lung, 75 * lung)
        # Dependent lung is denser: linear ramp from anterior (y = -70) to posterior (y = 80).
        ramp = np.clip((y + 70.0) / 150.0, 0.0, 1.0)
        lung_hu = np.rint(HU_LUNG_ANTERIOR + (HU_LUNG_POSTERIOR - HU_LUNG_ANTERIOR) * ramp)
        out = np.where(lungs, lung_hu.astype(np.int16), out)
        vessels = np.zeros_like(lungs)
        for x0, y0, dxdz, dydz, r in anatomy.vessels:
            vessels |= _ellipse(x, y, x0 + dxdz * lv, y0 + dydz * lv, r, r)
        out[vessels & lungs] = HU_VESSEL

    heart = _profile(lv, -10, 50)
    if heart > 0:
        out[_ellipse(x, y, 15, -30, 45 * heart + 4, 38 * heart + 4)] = HU_FAT
        out[_ellipse(x, y, 15, -30, 45 * heart, 38 * heart)] = HU_HEART
    if -120 <= lv <= 70:
        out[_ellipse(x, y, 22, 35, 13, 13)] = HU_AORTA
    if 0 <= lv <= 90:
        out[_ellipse(x, y, 0, -95, 14, 6)] = HU_BONE
    if -70 <= lv <= 90:
        # Ribs run obliquely: their cross-sections drift around the outline with the level.
        for k, deg in enumerate(_RIB_ANGLES_DEG):
            shift = (lv + 70.0) * (0.05 if k % 2 else -0.05)
            cx, cy = _on_outline(deg, 145.0, 95.0, shift)
            out[_ellipse(x, y, cx, cy, 5, 5)] = HU_RIB

    out[_ellipse(x, y, 0, 63, 17, 17)] = HU_CORTICAL
    out[_ellipse(x, y, 0, 63, 14, 14)] = HU_BONE
    out[_ellipse(x, y, 0, 88, 8, 8)] = HU_CSF
    out[_ellipse(x, y, 0, 105, 6, 10)] = HU_RIB
    return out


# cos/sin of the rib angles, tabulated in exact decimals so no libm call is needed.
_COS_SIN = {
    25.0: (0.9063077870366499, 0.42261826174069944),
    50.0: (0.6427876096865394, 0.766044443118978),
    130.0: (-0.6427876096865394, 0.766044443118978),
    155.0: (-0.9063077870366499, 0.42261826174069944),
    205.0: (-0.9063077870366499, -0.42261826174069944),
    230.0: (-0.6427876096865394, -0.766044443118978),
    310.0: (0.6427876096865394, -0.766044443118978),
    335.0: (0.9063077870366499, -0.42261826174069944),
}


def _on_outline(deg: float, ax: float, ay: float, shift_mm: float) -> tuple[float, float]:
    """Point on the ellipse ``(ax, ay)`` at angle ``deg``, moved ``shift_mm`` along y."""
    c, s = _COS_SIN[deg]
    return ax * c, ay * s + shift_mm


def integer_noise(shape: tuple[int, ...], sigma_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Approximately gaussian integer noise (Irwin-Hall sum of four uniform integers).

    Each term is uniform on ``[-a, a]`` with ``a`` chosen so that the sum's standard
    deviation ``sqrt(4 * a * (a + 1) / 3)`` is the closest to ``sigma_hu``. Integer-only,
    hence bit-identical on every platform; bounded by ``4 * a``.

    Returns:
        int16 array of ``shape``.
    """
    if sigma_hu <= 0:
        return np.zeros(shape, dtype=np.int16)
    target = 3.0 * sigma_hu * sigma_hu / 4.0  # a * (a + 1)
    a = max(1, int(round((np.sqrt(1.0 + 4.0 * target) - 1.0) / 2.0)))
    terms = rng.integers(-a, a + 1, size=(4, *shape), dtype=np.int16)
    return terms.sum(axis=0, dtype=np.int16)


def phantom_slice(
    anatomy: Anatomy,
    level_mm: float,
    shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    origin_mm: tuple[float, float],
    *,
    noise_hu: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One noisy axial CT slice of the phantom, in HU.

    Args:
        anatomy: the phantom patient.
        level_mm: anatomical level (0 = diaphragm dome, + cranial), mm.
        shape: ``(rows, cols)``.
        spacing_mm: ``(row_spacing, column_spacing)`` as DICOM PixelSpacing, mm.
        origin_mm: LPS ``(x, y)`` of the centre of pixel (0, 0), i.e. the first two
            values of ImagePositionPatient, mm.
        noise_hu: standard deviation of the added noise, HU.
        rng: source of the noise (seed it for reproducible output).

    Returns:
        int16 array, axes ``yx``, HU clipped to ``[-1024, 3071]`` (the range of a
        12-bit stored value with RescaleIntercept -1024).
    """
    rows, cols = shape
    x = origin_mm[0] + spacing_mm[1] * np.arange(cols, dtype=np.float64)
    y = origin_mm[1] + spacing_mm[0] * np.arange(rows, dtype=np.float64)
    clean = phantom_hu(anatomy, level_mm, x, y).astype(np.int32)
    noisy = clean + integer_noise((rows, cols), noise_hu, rng)
    return np.clip(noisy, HU_MIN, HU_MAX).astype(np.int16)


# --------------------------------------------------------------------------- organ labels

#: Organ label values of :func:`phantom_labels`: (value, name, SNOMED CT code, code meaning).
ORGANS: tuple[tuple[int, str, str, str], ...] = (
    (1, "liver", "10200004", "Liver"),
    (2, "kidney", "64033007", "Kidney"),
    (3, "lung", "39607008", "Lung"),
    (4, "heart", "80891009", "Heart"),
    (5, "aorta", "15825003", "Aorta"),
    (6, "vertebra", "51282000", "Vertebra"),
)


def phantom_labels(anatomy: Anatomy, level_mm: float, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
    """The organ label map of :func:`phantom_hu`'s slice: what each pixel shows (values of :data:`ORGANS`).

    Painted in :func:`phantom_hu`'s order with the same shapes, so a label is the organ whose
    HU the pixel holds: structures painted later without a label (stomach gas, heart fat,
    sternum, ribs, spinal canal, spinous process) clear it to 0. The vertebra is the body with
    its cortical rim.

    Returns:
        uint8 array, axes ``yx``, shape ``(rows, cols)``.
    """
    s = anatomy.scale
    x = np.asarray(x_mm, dtype=np.float64)[None, :] / s
    y = np.asarray(y_mm, dtype=np.float64)[:, None] / s
    lv = float(level_mm)
    out = np.zeros((y.shape[0], x.shape[1]), dtype=np.uint8)
    liver = float(np.sqrt(_profile(lv, -120, 10)))
    out[_ellipse(x, y, -60, 0, 75 * liver, 70 * liver)] = 1
    if -120 <= lv <= -60:
        for side in (-1, 1):
            out[_ellipse(x, y, side * 55, 45, 25, 35)] = 2
    if -60 <= lv <= -10:
        out[_ellipse(x, y, 50, -30, 18, 18)] = 0
    lung = _profile(lv, *LUNG_LEVELS_MM)
    if lung > 0:
        out[_ellipse(x, y, -75, 5, 50 * lung, 75 * lung) | _ellipse(x, y, 75, 5, 50 * lung, 75 * lung)] = 3
    heart = _profile(lv, -10, 50)
    if heart > 0:
        out[_ellipse(x, y, 15, -30, 45 * heart + 4, 38 * heart + 4)] = 0
        out[_ellipse(x, y, 15, -30, 45 * heart, 38 * heart)] = 4
    if -120 <= lv <= 70:
        out[_ellipse(x, y, 22, 35, 13, 13)] = 5
    if 0 <= lv <= 90:
        out[_ellipse(x, y, 0, -95, 14, 6)] = 0
    if -70 <= lv <= 90:
        for k, deg in enumerate(_RIB_ANGLES_DEG):
            shift = (lv + 70.0) * (0.05 if k % 2 else -0.05)
            cx, cy = _on_outline(deg, 145.0, 95.0, shift)
            out[_ellipse(x, y, cx, cy, 5, 5)] = 0
    out[_ellipse(x, y, 0, 63, 17, 17)] = 6
    out[_ellipse(x, y, 0, 88, 8, 8)] = 0
    out[_ellipse(x, y, 0, 105, 6, 10)] = 0
    return out


def _ellipse_outline(cx: float, cy: float, ax: float, ay: float, n: int = 72) -> np.ndarray:
    """``n`` points (x, y) on an ellipse, mm in the unscaled frame (numpy cos/sin: contours only, not image bytes)."""
    t = 2.0 * np.pi * np.arange(n) / n
    return np.column_stack([cx + ax * np.cos(t), cy + ay * np.sin(t)])


def phantom_contours(anatomy: Anatomy, level_mm: float) -> dict[str, list[np.ndarray]]:
    """Planar contours (LPS x, y in mm, scaled) of a few structures at ``level_mm``, for an RTSTRUCT.

    ``liver`` (one ellipse), ``kidney`` (two ellipses: two islands), ``aorta`` (one circle) and
    ``vertebral_cortex`` (circles of radius 17 and 14 mm: a ring, the inner contour a hole).
    Polygons of 72 vertices; structures absent at the level have no contour.
    """
    s = anatomy.scale
    lv = float(level_mm)
    out: dict[str, list[np.ndarray]] = {"liver": [], "kidney": [], "aorta": [], "vertebral_cortex": []}
    liver = float(np.sqrt(_profile(lv, -120, 10)))
    if liver > 0:
        out["liver"].append(_ellipse_outline(-60, 0, 75 * liver, 70 * liver) * s)
    if -120 <= lv <= -60:
        out["kidney"] += [_ellipse_outline(side * 55, 45, 25, 35) * s for side in (-1, 1)]
    if -120 <= lv <= 70:
        out["aorta"].append(_ellipse_outline(22, 35, 13, 13) * s)
    out["vertebral_cortex"] += [_ellipse_outline(0, 63, 17, 17) * s, _ellipse_outline(0, 63, 14, 14) * s]
    return out
