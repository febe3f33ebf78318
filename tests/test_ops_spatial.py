"""medflow.ops.spatial against SimpleITK, OpenCV and hand-computed geometry.

Golden values come from SimpleITK's own resampling/indexing, from analytic
functions sampled at each voxel's true physical position, or from arithmetic done
by hand in the test, never from medflow.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from medflow.ops import spatial

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


@pytest.fixture(autouse=True)
def _floating_point_errors_raise():
    """As in the engine (medflow.engine.run.apply_step): NaN/inf/overflow raise instead of spreading."""
    with np.errstate(divide="raise", invalid="raise", over="raise", under="ignore"):
        yield


def voxel_centres(shape, origin, directions, spacing_zyx):
    """(nz, ny, nx, 3) LPS centres of a regular grid (directions: columns x, y, z)."""
    directions = np.asarray(directions, float)
    k, i, j = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    sz, sy, sx = spacing_zyx
    return (
        np.asarray(origin, float)
        + (j * sx)[..., None] * directions[:, 0]
        + (i * sy)[..., None] * directions[:, 1]
        + (k * sz)[..., None] * directions[:, 2]
    )


def stack_centres(shape, row, col, pixel_spacing, positions):
    """(nz, ny, nx, 3) LPS centres of a stack with per-slice positions (PS3.3 C.7.6.2.1.1)."""
    _, ny, nx = shape
    dy, dx = pixel_spacing
    i, j = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    plane = (j * dx)[..., None] * np.asarray(row) + (i * dy)[..., None] * np.asarray(col)
    return np.asarray(positions, float)[:, None, None, :] + plane[None]


def sitk_image(pixels, origin, directions, spacing_zyx):
    image = sitk.GetImageFromArray(pixels)
    image.SetOrigin(tuple(origin))
    image.SetDirection(tuple(np.asarray(directions, float).ravel()))
    image.SetSpacing(tuple(reversed(spacing_zyx)))
    return image


# ---------------------------------------------------------------------------- analysis


def test_regular_stack_is_regular_and_reversed_order_keeps_axis_sign():
    positions = [(0.0, 0.0, 10.0 - 2.5 * k) for k in range(6)]  # slices ordered against the normal
    stack = spatial.analyse_stack(*AXIAL, (0.5, 0.5), positions)
    assert stack.regular
    assert stack.step == pytest.approx(2.5)
    np.testing.assert_allclose(stack.axis, (0, 0, -1))


def test_tilted_and_uneven_stacks_are_detected():
    tilt = np.deg2rad(18.5)
    col = (0.0, np.cos(tilt), -np.sin(tilt))  # GE-style tilted IOP 1\0\0\0\0.948\-0.317
    tilted = spatial.analyse_stack((1, 0, 0), col, (0.5, 0.5), [(0, 0, 3.0 * k) for k in range(5)])
    assert tilted.tilted and not tilted.uneven
    uneven = spatial.analyse_stack(*AXIAL, (0.5, 0.5), [(0, 0, z) for z in (0, 2, 4, 5, 9)])
    assert uneven.uneven and not uneven.tilted
    assert "uneven" in uneven.describe() and "tilted" in tilted.describe()


def test_duplicate_positions_are_an_error():
    with pytest.raises(ValueError, match="strictly ordered"):
        spatial.analyse_stack(*AXIAL, (1, 1), [(0, 0, 0), (0, 0, 1), (0, 0, 1)])


# ---------------------------------------------------------------------------- resample, regular


def _regular_case():
    rng = np.random.default_rng(7)
    pixels = rng.normal(size=(9, 14, 12)).astype(np.float32)
    origin = (-20.0, 11.0, 40.0)
    positions = [(origin[0], origin[1], origin[2] + 3.0 * k) for k in range(9)]
    return pixels, positions


@pytest.mark.parametrize("interpolator", ["linear", "bspline", "nearest"])
def test_regular_resample_equals_direct_simpleitk(interpolator):
    pixels, positions = _regular_case()
    result = spatial.resample_stack(pixels, *AXIAL, (0.8, 0.7), positions, (1.3, 0.5, 0.9), interpolator)
    # Independent: SimpleITK resampling onto the grid medflow reports.
    image = sitk_image(pixels, positions[0], np.eye(3), (3.0, 0.8, 0.7))
    reference = sitk_image(np.zeros(result.pixels.shape, np.float32), result.origin, result.directions, result.spacing)
    methods = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline, "nearest": sitk.sitkNearestNeighbor}
    expected = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), methods[interpolator], -5.0))
    np.testing.assert_allclose(result.pixels, expected, atol=1e-5)


def test_regular_resample_grid_keeps_field_of_view_per_simpleitk_index_maths():
    pixels, positions = _regular_case()
    result = spatial.resample_stack(pixels, *AXIAL, (0.8, 0.7), positions, (1.5, 0.4, 1.4), "linear")
    image = sitk_image(pixels, positions[0], np.eye(3), (3.0, 0.8, 0.7))
    # First output centre: half a new voxel inside the input's first voxel box edge (continuous index -0.5).
    first = image.TransformContinuousIndexToPhysicalPoint(
        (-0.5 + 0.5 * 1.4 / 0.7, -0.5 + 0.5 * 0.4 / 0.8, -0.5 + 0.5 * 1.5 / 3.0)
    )
    np.testing.assert_allclose(result.origin, first, atol=1e-9)
    # Sizes: field of view / new spacing, rounded (9*3/1.5=18, 14*0.8/0.4=28, 12*0.7/1.4=6).
    assert result.pixels.shape == (18, 28, 6)
    assert result.spacing == (1.5, 0.4, 1.4)


def test_linear_ramp_in_z_is_reproduced_exactly():
    nz, pixel = 6, (1.0, 1.0)
    positions = [(0.0, 0.0, 5.0 + 4.0 * k) for k in range(nz)]
    ramp = np.broadcast_to((2.0 * np.array([p[2] for p in positions]) - 7.0)[:, None, None], (nz, 4, 4))
    result = spatial.resample_stack(ramp.astype(np.float32), *AXIAL, pixel, positions, (1.0, 1.0, 1.0), "linear")
    z = voxel_centres(result.pixels.shape, result.origin, result.directions, result.spacing)[..., 2]
    inside = (z >= 5.0) & (z <= 25.0)
    np.testing.assert_allclose(result.pixels[inside], (2.0 * z - 7.0)[inside], atol=1e-4)


def test_anisotropic_z_linear_matches_trilinear_and_nearest_keeps_dtype():
    pixels, positions = _regular_case()
    args = (*AXIAL, (0.8, 0.7), positions, (1.0, 0.6, 0.6), "linear")
    joint = spatial.resample_stack(pixels, *args)
    separate = spatial.resample_stack(pixels, *args, anisotropic=True, z_interpolator="linear")
    np.testing.assert_allclose(separate.pixels, joint.pixels, atol=1e-5)
    labels = (pixels > 0).astype(np.int16)
    nearest = spatial.resample_stack(labels, *AXIAL, (0.8, 0.7), positions, (1.0, 0.6, 0.6), "nearest")
    assert nearest.pixels.dtype == np.int16 and set(np.unique(nearest.pixels)) <= {0, 1}


def test_nearest_refuses_a_fill_value_the_integer_dtype_cannot_hold():
    labels = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="not representable in dtype uint8"):
        spatial.resample_stack(labels, *AXIAL, (1, 1), [(0, 0, z) for z in (0, 1, 2)], (1, 1, 1), "nearest", fill_value=-1024)


def test_anisotropic_nearest_along_z_copies_the_nearest_true_slice():
    pixels = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 3, 3), np.float32)
    positions = [(0, 0, 4.0 * k) for k in range(5)]
    result = spatial.resample_stack(
        pixels, *AXIAL, (1, 1), positions, (1.0, 1.0, 1.0), "linear", anisotropic=True, z_interpolator="nearest"
    )
    z = result.origin[2] + np.arange(result.pixels.shape[0]) * 1.0
    expected = np.clip(np.floor(z / 4.0 + 0.5 - 1e-9), 0, 4)  # nearest slice, ties to the lower one
    np.testing.assert_array_equal(result.pixels[:, 1, 1], expected)


# ---------------------------------------------------------------------------- resample, irregular


def _linear_field(points):
    return 0.7 * points[..., 0] - 1.3 * points[..., 1] + 2.1 * points[..., 2] + 5.0


def _interior(result, low, high):
    """Mask of output voxels whose centres lie in the box [low, high] (LPS)."""
    centres = voxel_centres(result.pixels.shape, result.origin, result.directions, result.spacing)
    return np.all((centres >= low) & (centres <= high), axis=-1), centres


def test_tilted_stack_linear_field_is_exact_at_every_interior_output_voxel():
    tilt = np.deg2rad(18.5)
    row, col = (1.0, 0.0, 0.0), (0.0, np.cos(tilt), -np.sin(tilt))
    positions = [(-10.0, -12.0, 2.5 * k) for k in range(10)]  # table moves along z only: sheared stack
    shape = (10, 30, 24)
    values = _linear_field(stack_centres(shape, row, col, (1.0, 1.0), positions)).astype(np.float32)
    result = spatial.resample_stack(values, row, col, (1.0, 1.0), positions, (1.0, 1.0, 1.0), "linear")
    normal = np.cross(row, col)
    np.testing.assert_allclose(result.directions, np.column_stack([row, col, normal]), atol=1e-12)
    centres = voxel_centres(result.pixels.shape, result.origin, result.directions, result.spacing)
    # Interior: inside every slice's plane box and between the first and last slice planes.
    stack = spatial.analyse_stack(row, col, (1.0, 1.0), positions)
    rel = centres - np.asarray(positions[0])
    u, v, w = rel @ np.asarray(row), rel @ np.asarray(col), rel @ normal
    inside = (
        (u >= stack.in_plane[:, 0].max()) & (u <= stack.in_plane[:, 0].min() + 23)
        & (v >= stack.in_plane[:, 1].max()) & (v <= stack.in_plane[:, 1].min() + 29)
        & (w >= 0) & (w <= stack.along[-1])
    )  # fmt: skip
    assert inside.sum() > 1000
    np.testing.assert_allclose(result.pixels[inside], _linear_field(centres[inside]), atol=2e-3)
    # Ignoring the tilt (orthonormal SimpleITK image) would misplace the field by millimetres.
    naive = sitk_image(values, positions[0], np.column_stack([row, col, normal]), (2.5 * np.cos(tilt), 1.0, 1.0))
    point = centres[inside][len(centres[inside]) // 2]
    naive_value = naive.EvaluateAtPhysicalPoint(tuple(point), sitk.sitkLinear)
    assert abs(naive_value - _linear_field(point)) > 1.0


def _blob(points, centre, sigma=2.0):
    return np.exp(-np.sum((points - centre) ** 2, axis=-1) / (2 * sigma**2))


def _centroid(result):
    centres = voxel_centres(result.pixels.shape, result.origin, result.directions, result.spacing)
    weights = np.clip(result.pixels.astype(np.float64), 0, None)
    return (weights[..., None] * centres).sum(axis=(0, 1, 2)) / weights.sum()


@pytest.mark.parametrize("case", ["tilted", "uneven", "tilted_uneven_reversed"])
def test_point_feature_stays_at_its_physical_location(case):
    tilt = np.deg2rad(18.5 if "tilted" in case else 0.0)
    row, col = (1.0, 0.0, 0.0), (0.0, np.cos(tilt), -np.sin(tilt))
    # Uneven: a 4 mm gap, then 1 mm steps around the feature (ignoring the gap would move it by mm).
    uneven = np.array([0, 1.5, 3, 4.5, 6, 9, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 29])
    z = uneven if "uneven" in case else 1.5 * np.arange(20)
    if "reversed" in case:
        z = z[::-1]
    positions = [(-12.0, -14.0, float(v)) for v in z]
    shape = (len(z), 28, 24)
    centre = np.array([-1.3, -1.9, 18.2])
    values = _blob(stack_centres(shape, row, col, (1.0, 1.0), positions), centre).astype(np.float32)
    result = spatial.resample_stack(values, row, col, (1.0, 1.0), positions, (0.75, 0.75, 0.75), "linear")
    np.testing.assert_allclose(_centroid(result), centre, atol=0.25)


def test_interpolate_along_uses_true_positions():
    planes = np.array([0.0, 10.0, 40.0])[:, None] * np.ones((3, 2))
    out = spatial.interpolate_along(planes, np.array([0.0, 1.0, 4.0]), np.array([-1, 0.5, 2.5, 9]), "linear", np.float64)
    np.testing.assert_allclose(out[:, 0], [0.0, 5.0, 25.0, 40.0])
    nearest = spatial.interpolate_along(planes, np.array([0.0, 1.0, 4.0]), np.array([2.4, 2.6]), "nearest")
    np.testing.assert_allclose(nearest[:, 0], [10.0, 40.0])


# ---------------------------------------------------------------------------- orient


def test_orientation_codes_follow_simpleitk_dicomorient():
    # A sagittal image: x along -P (anterior), y along -S (inferior), z along +L.
    directions = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    pixels = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    image = sitk_image(pixels, (3.0, -7.0, 11.0), directions, (2.0, 0.5, 0.75))
    for code in ("LPS", "RAS", "RAI", "ASL", "SPR"):
        expected = sitk.DICOMOrient(image, code)
        source, flip, obliquity = spatial.orientation_transform(directions, code)
        assert obliquity == pytest.approx(0.0, abs=1e-9)
        np.testing.assert_array_equal(spatial.apply_orientation(pixels, source, flip), sitk.GetArrayFromImage(expected))


def test_orientation_code_errors():
    with pytest.raises(ValueError, match="one body axis twice"):
        spatial.orientation_vectors("LRS")
    with pytest.raises(ValueError, match="3 letters"):
        spatial.orientation_vectors("LPX")


def test_oblique_directions_go_to_the_closest_code_and_report_the_angle():
    angle = np.deg2rad(20.0)
    directions = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    source, flip, obliquity = spatial.orientation_transform(directions, "LPS")
    assert source == (0, 1, 2) and flip == (False, False, False)
    assert obliquity == pytest.approx(20.0)


@settings(max_examples=60, deadline=None)
@given(st.permutations([0, 1, 2]), st.lists(st.booleans(), min_size=3, max_size=3),
       st.sampled_from(["LPS", "RAS", "SRA", "PIL"]))
def test_orient_there_and_back_is_identity(perm, signs, code):
    directions = np.zeros((3, 3))
    for axis, body in enumerate(perm):
        directions[body, axis] = -1.0 if signs[axis] else 1.0
    pixels = np.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2)
    source, flip, _ = spatial.orientation_transform(directions, code)
    oriented = spatial.apply_orientation(pixels, source, flip)
    new_dirs = np.column_stack([directions[:, source[a]] * (-1 if flip[a] else 1) for a in range(3)])
    np.testing.assert_array_equal(new_dirs, spatial.orientation_vectors(code))
    back_source, back_flip, _ = spatial.orientation_transform(new_dirs, "".join(_code_of(directions)))
    np.testing.assert_array_equal(spatial.apply_orientation(oriented, back_source, back_flip), pixels)


def _code_of(directions):
    letters = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}
    return [letters[(int(np.abs(d).argmax()), int(np.sign(d[np.abs(d).argmax()])))] for d in directions.T]


# ---------------------------------------------------------------------------- crop / pad, resize


def test_crop_pad_plan_by_hand():
    # z 10 -> 7 crops 1 at the start (3 // 2); y 4 -> 7 pads 1 before, 2 after; x unchanged.
    assert spatial.crop_pad_plan((10, 4, 5), (7, 7, None)) == [(1, 0, 0), (0, 1, 2), (0, 0, 0)]
    array = np.arange(10 * 4 * 5, dtype=np.int16).reshape(10, 4, 5)
    out = spatial.crop_pad(array, (7, 7, None), -1024)
    assert out.shape == (7, 7, 5) and out.dtype == np.int16
    np.testing.assert_array_equal(out[:, 1:5], array[1:8])
    assert (out[:, 0] == -1024).all() and (out[:, 5:] == -1024).all()


def test_crop_pad_refuses_an_unrepresentable_pad_value():
    with pytest.raises(ValueError, match="not representable"):
        spatial.crop_pad(np.zeros((2, 2, 2), np.uint8), (3, 3, 3), -1024)


@settings(max_examples=50, deadline=None)
@given(st.tuples(*[st.integers(1, 7)] * 3), st.tuples(*[st.integers(0, 4)] * 3))
def test_pad_then_crop_back_is_identity(shape, extra):
    array = np.random.default_rng(0).integers(0, 100, size=shape).astype(np.float32)
    padded = spatial.crop_pad(array, tuple(n + e for n, e in zip(shape, extra, strict=True)), -1.0)
    np.testing.assert_array_equal(spatial.crop_pad(padded, shape, -1.0), array)


def test_resize_matches_opencv_and_field_of_view_maths():
    import cv2

    ramp = np.tile(np.arange(8, dtype=np.float32) * 3.0, (2, 6, 1))  # value = 3 * column index
    out = spatial.resize_slices(ramp, (3, 4), "linear")
    np.testing.assert_array_equal(out[1], cv2.resize(ramp[1], (4, 3), interpolation=cv2.INTER_LINEAR))
    # Pixel-box convention by hand: 8 columns of 0.5 mm -> 4 columns of 1.0 mm; first centre moves +0.25 mm.
    assert spatial.resized_spacing_and_shift(8, 4, 0.5) == (1.0, 0.25)
    # Output column j sits at old column (j + 0.5) * 2 - 0.5, so the ramp gives 3 * that.
    np.testing.assert_allclose(out[0, 0], 3.0 * ((np.arange(4) + 0.5) * 2 - 0.5))


def test_resize_nearest_is_centre_consistent_and_keeps_channels():
    array = np.arange(4, dtype=np.uint8).reshape(1, 1, 4, 1).repeat(2, axis=3)
    out = spatial.resize_slices(array, (1, 2), "nearest")
    assert out.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(out[0, 0, :, 0], [1, 3])  # centres at old 0.5 and 2.5 -> round up


@settings(max_examples=30, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-np.pi, np.pi)] * 3),
    drift=st.tuples(st.floats(-0.4, 0.4), st.floats(-0.4, 0.4)),
    gaps=st.lists(st.floats(0.6, 3.0), min_size=3, max_size=6),
    pixel=st.tuples(st.floats(0.5, 1.5), st.floats(0.5, 1.5)),
    target=st.tuples(*[st.floats(0.5, 2.0)] * 3),
    reverse=st.booleans(),
)
def test_any_stack_reproduces_a_linear_field_inside_its_hull(angles, drift, gaps, pixel, target, reverse):
    """Property: bilinear in-plane + linear along the normal is exact for a linear field (any tilt, gaps, pose)."""
    ax, ay, az = angles
    rot = (
        np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        @ np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        @ np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    )
    row, col, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    along = np.concatenate([[0.0], np.cumsum(gaps)]) * (-1 if reverse else 1)
    k = np.arange(len(along))
    positions = np.array([5.0, -7.0, 11.0]) + along[:, None] * normal + k[:, None] * (drift[0] * row + drift[1] * col)
    shape = (len(along), 12, 11)
    values = _linear_field(stack_centres(shape, row, col, pixel, positions)).astype(np.float64)
    result = spatial.resample_stack(values, row, col, pixel, positions, target, "linear")
    centres = voxel_centres(result.pixels.shape, result.origin, result.directions, result.spacing)
    rel = centres - positions[0]
    u, v, w = rel @ row, rel @ col, rel @ result.directions[:, 2]
    drift_u, drift_v = k * drift[0], k * drift[1]
    eps = 1e-6
    inside = (
        (u >= drift_u.max() - eps) & (u <= drift_u.min() + 10 * pixel[1] + eps)
        & (v >= drift_v.max() - eps) & (v <= drift_v.min() + 11 * pixel[0] + eps)
        & (w >= -eps) & (w <= np.abs(along[-1]) + eps)
    )  # fmt: skip
    assert inside.sum() > 0
    # a stack within LATTICE_TOLERANCE of a regular lattice is resampled as that lattice (by
    # design: positions rounded in the headers): its slices then sit up to that far from their
    # true place, which moves a linear field by at most |gradient| x the distance
    step = along[-1] / (len(along) - 1)
    snap = np.abs(along - step * k).max()
    snap = snap if snap <= spatial.LATTICE_TOLERANCE * abs(step) else 0.0
    shift = np.abs(k * np.hypot(*drift)).max()
    shift = shift if shift <= spatial.LATTICE_TOLERANCE * min(pixel) else 0.0
    gradient = np.linalg.norm([0.7, -1.3, 2.1])  # of _linear_field
    np.testing.assert_allclose(result.pixels[inside], _linear_field(centres[inside]),
                               atol=5e-3 + gradient * (snap + shift))
