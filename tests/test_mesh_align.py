"""Face mesh (edged.pipeline.mesh) and alignment to dlib's 150×150 chip (edged.pipeline.align).

The aligner is checked against synthetic frames built from a known similarity transform, through
the mapping documented in the module: chip pixel ``u`` shows the frame point
``s·R(θ)·(75, 75) + t + R(θ)·k·(u − 74.5)``, ``k = (150·s − 1)/149`` (dlib's geometry), i.e. template
coordinate ``75 + (k/s)·(u − 74.5)``, which is ``u + 0.5`` when ``s = 1``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from edged.pipeline.align import (
    ARCFACE_EYE_INDICES,
    ARCFACE_SIZE,
    ARCFACE_TEMPLATE,
    CHIP_SIZE,
    CHIP_TEMPLATE,
    KEYPOINT_TEMPLATE,
    align_arcface,
    align_chip,
    arcface_points,
    chip_for,
    fit_similarity,
)
from edged.pipeline.mesh import MESH_SIZE, roi_transform
from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.verify import verify
from edged.types import Box, Detection, Face, ImageRGB, Mesh

Points = npt.NDArray[np.float64]

RANDOM_TEMPLATE = np.random.default_rng(7).uniform(10, 140, (26, 2))
"""A 26-point template (the pipeline fits many mesh points, not only five)."""


def rotation(theta: float) -> Points:
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def similarity(points: Points, scale: float, degrees: float, shift: tuple[float, float]) -> Points:
    return scale * points @ rotation(math.radians(degrees)).T + np.asarray(shift, np.float64)


def template_coordinates_of_chip(scale: float) -> Points:
    """For every chip pixel (row-major, [..., (x, y)]), the template coordinate it samples."""
    k = (CHIP_SIZE * scale - 1.0) / (CHIP_SIZE - 1)
    u = np.stack(np.meshgrid(np.arange(CHIP_SIZE), np.arange(CHIP_SIZE)), axis=-1).astype(np.float64)
    return 75.0 + (k / scale) * (u - 74.5)


def pattern(template_xy: Points) -> npt.NDArray[np.float64]:
    """A smooth grey pattern defined in template coordinates."""
    x, y = template_xy[..., 0], template_xy[..., 1]
    return 128 + 50 * np.sin(x / 7.0) + 40 * np.cos(y / 9.0 + x / 23.0)


def frame_with_pattern(scale: float, degrees: float, margin: int = 20) -> tuple[ImageRGB, Points, Points]:
    """A frame showing ``pattern`` through the similarity (scale, degrees, t), the chip area fully
    inside it. Returns (frame, t as a 2-vector, the five CHIP_TEMPLATE points in the frame)."""
    rot = rotation(math.radians(degrees))
    corners = scale * np.array([[0, 0], [150, 0], [0, 150], [150, 150]], np.float64) @ rot.T
    shift = margin - corners.min(0)
    width, height = (corners.max(0) - corners.min(0) + 2 * margin).astype(int)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    template_xy = (np.stack([xs - shift[0], ys - shift[1]], axis=-1) / scale) @ rot  # R⁻¹ = Rᵀ
    grey = np.clip(pattern(template_xy), 0, 255).astype(np.uint8)
    frame = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    return frame, shift, scale * CHIP_TEMPLATE @ rot.T + shift


# ---------------------------------------------------------------------------------------------
# fit_similarity


@pytest.mark.parametrize(
    "template", [CHIP_TEMPLATE, KEYPOINT_TEMPLATE, RANDOM_TEMPLATE], ids=["five", "two-eyes", "26-points"]
)
@pytest.mark.parametrize(
    ("scale", "degrees", "shift"),
    [
        (1.0, 0.0, (0.0, 0.0)),
        (2.5, 30.0, (10.0, -5.0)),
        (0.3, -120.0, (400.0, 300.0)),
        (1.7, 179.0, (5.0, 5.0)),
        (6.0, -45.0, (1200.0, 800.0)),
        (0.05, 90.0, (-20.0, 33.0)),
    ],
)
def test_fit_similarity_recovers_a_known_transform(
    template: Points, scale: float, degrees: float, shift: tuple[float, float]
) -> None:
    s, theta, t = fit_similarity(template, similarity(template, scale, degrees, shift))
    assert s == pytest.approx(scale, rel=1e-9)
    assert math.degrees(theta) == pytest.approx(degrees, abs=1e-7)
    np.testing.assert_allclose(t, shift, atol=1e-3 * max(1.0, scale))


def test_fit_similarity_is_least_squares_under_noise() -> None:
    noisy = similarity(RANDOM_TEMPLATE, 2.0, 12.0, (300.0, 200.0))
    noisy += np.random.default_rng(3).normal(0.0, 0.5, noisy.shape)
    s, theta, t = fit_similarity(RANDOM_TEMPLATE, noisy)
    assert s == pytest.approx(2.0, rel=0.01)
    assert math.degrees(theta) == pytest.approx(12.0, abs=0.5)
    np.testing.assert_allclose(t, (300.0, 200.0), atol=3.0)


def test_fit_similarity_never_returns_a_reflection() -> None:
    mirrored = CHIP_TEMPLATE * np.array([-1.0, 1.0]) + np.array([300.0, 0.0])
    s, theta, t = fit_similarity(CHIP_TEMPLATE, mirrored)
    fitted = s * CHIP_TEMPLATE @ rotation(theta).T + t
    assert s > 0
    # a mirror image cannot be reproduced by a rotation: the fit leaves a real residual
    assert np.abs(fitted - mirrored).max() > 10.0


# ---------------------------------------------------------------------------------------------
# align_chip


@pytest.mark.parametrize(
    ("scale", "degrees"),
    [(1.0, 0.0), (0.8, 10.0), (0.5, 5.0), (2.0, -15.0), (3.0, 25.0), (5.0, -30.0), (4.0, 90.0), (9.0, 45.0)],
)
def test_align_chip_reproduces_a_warped_pattern(scale: float, degrees: float) -> None:
    frame, _, points = frame_with_pattern(scale, degrees)
    chip = align_chip(frame, points)
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3)
    assert chip.dtype == np.uint8
    expected = pattern(template_coordinates_of_chip(scale))
    error = np.abs(chip[..., 0].astype(np.float64) - expected)[3:-3, 3:-3]
    # bilinear sampling of a smooth pattern plus truncation to uint8: about one grey level
    assert error.mean() < 1.5, f"mean error {error.mean():.2f} grey levels"
    assert error.max() < 4.0, f"max error {error.max():.1f} grey levels"


@pytest.mark.parametrize(
    ("scale", "degrees"), [(0.8, 10.0), (1.0, 0.0), (2.0, -15.0), (3.0, 25.0), (5.0, -30.0)]
)
def test_align_chip_puts_the_template_points_where_they_belong(scale: float, degrees: float) -> None:
    """Bright dots at the five template points of the frame come out at the template points of the
    chip (dlib's pixel convention: template coordinate ``T`` is chip pixel ``≈ T − 0.5``)."""
    _, shift, points = frame_with_pattern(scale, degrees)
    size = math.ceil(shift.max() + 160 * scale + 20)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sigma = 2.0 * scale
    dots = sum(250 * np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2)) for px, py in points)
    frame = np.repeat(np.clip(dots, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    chip = align_chip(np.ascontiguousarray(frame), points)[..., 0].astype(np.float64)
    k = (CHIP_SIZE * scale - 1.0) / (CHIP_SIZE - 1)
    expected = 74.5 + (scale / k) * (CHIP_TEMPLATE - 75.0)
    for (ex, ey), (tx, ty) in zip(expected, CHIP_TEMPLATE, strict=True):
        x0, y0, r = round(ex), round(ey), 6
        window = chip[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
        wy, wx = np.mgrid[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
        cx, cy = (window * wx).sum() / window.sum(), (window * wy).sum() / window.sum()
        assert math.hypot(cx - ex, cy - ey) < 0.1, f"dot for template ({tx}, {ty}) at ({cx:.2f}, {cy:.2f})"
        assert math.hypot(cx - (tx - 0.5), cy - (ty - 0.5)) < 0.3


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_align_chip_half_out_of_frame_gives_zeros_outside(scale: float) -> None:
    frame, _, points = frame_with_pattern(scale, 0.0)
    centre_x = int(points[:, 0].mean())  # cut the frame through the middle of the face
    cut = np.ascontiguousarray(frame[:, centre_x:])
    chip = align_chip(cut, points - np.array([centre_x, 0.0]))
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3)
    # chip column u shows frame x = centre + k·(u − 74.5), negative (outside) left of the cut
    template_x = template_coordinates_of_chip(scale)[0, :, 0]
    frame_x = scale * template_x + (points[:, 0].mean() - scale * CHIP_TEMPLATE[:, 0].mean()) - centre_x
    outside = frame_x < -2 * scale - 2
    inside = frame_x > 4 * scale + 4
    assert outside.sum() > 50 and inside.sum() > 50
    assert not chip[:, outside].any(), "pixels outside the frame must be zero"
    expected = pattern(template_coordinates_of_chip(scale))
    error = np.abs(chip[3:-3, inside, 0].astype(np.float64) - expected[3:-3, inside])
    assert error.mean() < 1.5


def test_align_chip_entirely_outside_the_frame_is_black() -> None:
    frame = np.full((100, 100, 3), 200, np.uint8)
    chip = align_chip(frame, similarity(CHIP_TEMPLATE, 1.0, 0.0, (-500.0, -500.0)))
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3)
    assert not chip.any()


# ---------------------------------------------------------------------------------------------
# face mesh on the real model


def test_mesh_on_the_astronaut(pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face) -> None:
    det = astronaut_face.detection
    mesh = pipeline.mesher.mesh(astronaut, det)
    assert mesh.points.shape == (468, 3)
    assert mesh.face_score > 0.9
    box = det.box
    side = max(box.width, box.height)
    xy = mesh.points[:, :2]
    assert (xy[:, 0] > box.x1 - 0.3 * side).all() and (xy[:, 0] < box.x2 + 0.3 * side).all()
    assert (xy[:, 1] > box.y1 - 0.5 * side).all() and (xy[:, 1] < box.y2 + 0.3 * side).all()
    # eye centres of the mesh (mean of each eye's corners) agree with the detector's eye keypoints
    right_eye = xy[[33, 133]].mean(0)
    left_eye = xy[[362, 263]].mean(0)
    assert np.linalg.norm(right_eye - det.keypoints[0]) < 0.1 * side
    assert np.linalg.norm(left_eye - det.keypoints[1]) < 0.1 * side


@pytest.mark.parametrize("degrees", [0.0, 30.0, 90.0, -60.0])
def test_roi_transform_centres_and_rotates_the_crop(degrees: float) -> None:
    box = Box(100.0, 200.0, 180.0, 280.0)
    theta = math.radians(degrees)
    eyes = (
        np.array([[140.0, 230.0], [140.0, 230.0]]) + np.array([[-20.0, 0.0], [20.0, 0.0]]) @ rotation(theta).T
    )
    keypoints = np.zeros((6, 2), np.float32)
    keypoints[:2] = eyes
    matrix, side = roi_transform(Detection(box, 0.9, keypoints))
    assert side == pytest.approx(1.5 * 80.0)
    centre = matrix[:, :2] @ np.array([MESH_SIZE / 2, MESH_SIZE / 2]) + matrix[:, 2]
    np.testing.assert_allclose(centre, box.center, atol=1e-3)
    # the crop's x axis runs along the eye line, scaled to the ROI side
    x_axis = matrix[:, 0]
    assert np.linalg.norm(x_axis) * MESH_SIZE == pytest.approx(side, rel=1e-5)
    assert math.degrees(math.atan2(x_axis[1], x_axis[0])) == pytest.approx(degrees, abs=1e-4)


def test_chip_for_with_and_without_mesh(
    pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    """The keypoint fallback (no mesh) still gives a chip of the same person."""
    det, mesh = astronaut_face.detection, astronaut_face.mesh
    with_mesh = chip_for(astronaut, det, mesh)
    without_mesh = chip_for(astronaut, det, None)
    for chip in (with_mesh, without_mesh):
        assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3)
        assert chip.dtype == np.uint8
    result = verify(
        pipeline.embedder.embed(with_mesh), pipeline.embedder.embed(without_mesh), pipeline.calibration
    )
    assert result.is_identical, f"distance {result.distance:.3f} > threshold {result.threshold:.3f}"


# ---------------------------------------------------------------------------------------------
# the 112×112 five-point ArcFace chip (the MBF embedder's input)


def arcface_frame(scale: float, degrees: float, margin: int = 20) -> tuple[ImageRGB, Points]:
    """A frame showing ``pattern`` (defined in 112-chip coordinates) through the similarity
    chip → frame ``scale·R·u + t``; returns the frame and the ArcFace template points in it."""
    rot = rotation(math.radians(degrees))
    corners = scale * np.array([[0, 0], [112, 0], [0, 112], [112, 112]], np.float64) @ rot.T
    shift = margin - corners.min(0)
    width, height = (corners.max(0) - corners.min(0) + 2 * margin).astype(int)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    chip_xy = (np.stack([xs - shift[0], ys - shift[1]], axis=-1) / scale) @ rot
    grey = np.clip(pattern(chip_xy), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(
        np.repeat(grey[..., None], 3, axis=2)
    ), scale * ARCFACE_TEMPLATE @ rot.T + shift


@pytest.mark.parametrize(
    ("scale", "degrees"), [(1.0, 0.0), (1.0, 25.0), (0.6, -40.0), (1.8, 10.0), (4.5, 70.0)]
)
def test_align_arcface_samples_chip_pixel_u_at_s_r_u_plus_t(scale: float, degrees: float) -> None:
    """insightface's norm_crop geometry: chip pixel u shows the frame point that the template
    similarity maps u to (no half-pixel shift), also through the pyramid for large faces."""
    frame, points = arcface_frame(scale, degrees)
    chip = align_arcface(frame, points)
    assert chip.shape == (ARCFACE_SIZE, ARCFACE_SIZE, 3) and chip.dtype == np.uint8
    u = np.stack(np.meshgrid(np.arange(ARCFACE_SIZE), np.arange(ARCFACE_SIZE)), axis=-1).astype(np.float64)
    expected = pattern(u)
    error = np.abs(chip[..., 0].astype(np.float64) - expected)[4:-4, 4:-4]
    assert error.mean() < 1.5, error.mean()
    # a half-pixel shift of this pattern (what dlib's geometry would give) is measurably worse
    shifted = np.abs(chip[..., 0].astype(np.float64) - pattern(u + 0.5))[4:-4, 4:-4]
    assert shifted.mean() > error.mean()


def test_align_arcface_outside_the_frame_is_black() -> None:
    frame = np.full((100, 100, 3), 200, np.uint8)
    assert not align_arcface(frame, ARCFACE_TEMPLATE + 1000.0).any()


def test_arcface_points_are_eye_centres_nose_tip_and_mouth_corners() -> None:
    points = np.random.default_rng(5).uniform(0, 300, (468, 3))
    five = arcface_points(Mesh(points, 0.99))
    assert five.shape == (5, 2) and five.dtype == np.float64
    np.testing.assert_allclose(five[0], points[list(ARCFACE_EYE_INDICES[0]), :2].mean(0))
    np.testing.assert_allclose(five[1], points[list(ARCFACE_EYE_INDICES[1]), :2].mean(0))
    np.testing.assert_allclose(five[2], points[1, :2])
    np.testing.assert_allclose(five[3:], points[[61, 291], :2])


def test_arcface_points_of_the_astronaut_land_on_the_template(
    astronaut: ImageRGB, astronaut_face: Face
) -> None:
    """On a real, frontal face the mesh's five points, aligned, fall within a few pixels of the
    template, so the mesh indices name the right features on the right sides (a swapped side is
    ~35 px off; measured here: 6.6 px at most, the nose tip — she smiles, her mouth is wide)."""
    assert astronaut_face.mesh is not None
    points = arcface_points(astronaut_face.mesh)
    scale, theta, t = fit_similarity(points, ARCFACE_TEMPLATE)
    mapped = scale * points @ rotation(theta).T + t
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 8.0
    chip = align_arcface(astronaut, points)
    assert chip.shape == (ARCFACE_SIZE, ARCFACE_SIZE, 3) and chip.std() > 20
