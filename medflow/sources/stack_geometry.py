"""Findings about a sorted slice stack: nominal step, gaps, uneven spacing, gantry tilt.

Pure numpy on positions in LPS mm; the sentences are written for a user reading a
build report. Rules:

* **Spacing.** The nominal step is the most common step along the normal when at
  least half the steps agree with it; otherwise the largest of SliceThickness /
  SpacingBetweenSlices of which every step is a whole multiple; otherwise none.
  Two steps agree when they differ by at most :func:`spacing_tolerance` =
  ``max(0.01 mm, 1 %)`` of the nominal step. The stack has a uniform
  ``slice_spacing`` (the mean step) when every step agrees with the nominal one. A
  step of ``k >= 2`` nominal steps is a gap (``k - 1`` missing slices); other
  disagreeing steps are reported as uneven spacing.
* **Gantry tilt.** The angle between the stack's mean step vector (last position
  minus first) and the slice normal, reported above ``TILT_REPORT_DEGREES``, with
  GantryDetectorTilt (0018,1120) quoted when present. The tag's sign convention is
  the vendor's (GE +18.5 and Philips -18.5 give the same geometry in dcm_qa_ct), so
  only the measured, unsigned angle is used.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

SPACING_ABS_TOLERANCE_MM = 0.01
SPACING_REL_TOLERANCE = 0.01
TILT_REPORT_DEGREES = 0.1


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal ``row x column`` of ImageOrientationPatient (6 direction cosines), float64."""
    orientation = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def spacing_tolerance(step: float) -> float:
    """How far (mm) a step may be from ``step`` and still count as equal: max(0.01 mm, 1 %)."""
    return max(SPACING_ABS_TOLERANCE_MM, SPACING_REL_TOLERANCE * abs(step))


def nominal_step(steps: np.ndarray, hints: list[float] = ()) -> float | None:
    """The stack's nominal step along the normal (mm), or ``None`` (rule in the module docstring).

    Args:
        steps: positive steps between consecutive slices along the normal, mm.
        hints: SliceThickness and SpacingBetweenSlices values (mm), any order.
    """
    steps = np.asarray(steps, dtype=np.float64)
    if steps.size == 0:
        return None
    best, best_count = None, 0
    for candidate in np.sort(steps):  # ascending: ties go to the smaller step
        agree = np.abs(steps - candidate) <= spacing_tolerance(candidate)
        if agree.sum() > best_count:
            best, best_count = float(np.mean(steps[agree])), int(agree.sum())
    if 2 * best_count >= steps.size:
        return best
    for hint in sorted({float(h) for h in hints if h and h > 0}, reverse=True):
        k = np.round(steps / hint)
        if np.all(k >= 1) and np.all(np.abs(steps - k * hint) <= spacing_tolerance(hint)):
            return hint
    return None


def spacing_findings(steps: np.ndarray, hints: list[float] = ()) -> tuple[float | None, list[str]]:
    """Uniform spacing or the notes explaining why not.

    Args:
        steps: steps between consecutive sorted slices along the normal, mm (float64).
        hints: SliceThickness / SpacingBetweenSlices, mm.

    Returns:
        ``(slice_spacing, notes)``: the mean step if every step agrees with the
        nominal one, else ``None`` with one note per gap and one for uneven steps.
    """
    steps = np.asarray(steps, dtype=np.float64)
    if steps.size == 0:
        return None, []
    nominal = nominal_step(steps, hints)
    if nominal is not None and np.all(np.abs(steps - nominal) <= spacing_tolerance(nominal)):
        return float(np.mean(steps)), []
    notes, uneven = [], []
    for i, step in enumerate(steps):
        k = round(step / nominal) if nominal else 0
        if nominal and k >= 2 and abs(step - k * nominal) <= spacing_tolerance(nominal):
            missing = k - 1
            notes.append(
                f"gap of {step:.2f} mm between z-index {i} and {i + 1} "
                f"(≈{missing} missing slice{'s' if missing > 1 else ''} at the {nominal:.2f} mm step); "
                "slices after the gap keep their true positions"
            )
        elif not nominal or abs(step - nominal) > spacing_tolerance(nominal):
            uneven.append(step)
    if uneven or nominal is None:
        counts = Counter(f"{s:.2f}" for s in (steps if nominal is None else uneven))
        listed = ", ".join(f"{value} mm (x{n})" for value, n in counts.items())
        base = f"; the usual step is {nominal:.2f} mm" if nominal else ""
        notes.append(f"uneven slice spacing along the normal: steps of {listed}{base}; slice_spacing is None")
    return None, notes


def tilt_degrees(positions: np.ndarray, normal: np.ndarray) -> float | None:
    """Angle (degrees, 0..90) between the mean step vector of a sorted stack and the normal.

    ``None`` for fewer than 2 slices or coincident ends. A gantry-tilted CT has a
    step vector along the table while the normal follows the tilted gantry.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if len(positions) < 2:
        return None
    step = positions[-1] - positions[0]
    length = np.linalg.norm(step)
    if length == 0:
        return None
    cosine = min(1.0, abs(float(step @ normal)) / length)
    return float(np.degrees(np.arccos(cosine)))


def tilt_findings(angle: float | None, tag: float | None) -> list[str]:
    """Notes on gantry tilt from the measured ``angle`` and GantryDetectorTilt ``tag`` (degrees)."""
    tag_text = f" (GantryDetectorTilt {tag:+g}°)" if tag is not None else ""
    if angle is not None and angle > TILT_REPORT_DEGREES:
        return [
            f"gantry tilt detected: the slice step makes {angle:.2f}° with the slice normal{tag_text}; "
            "each slice keeps its own ImagePositionPatient, so the stack's slice axis is sheared, not resampled"
        ]
    if tag is not None and abs(tag) > TILT_REPORT_DEGREES:
        where = (
            "one slice, so no shear can be measured" if angle is None else "the slices step along the normal"
        )
        return [f"GantryDetectorTilt is {tag:+g}° but {where}"]
    return []
