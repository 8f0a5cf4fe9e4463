"""The synthetic attacks and bona fide sequences of ``edged bench liveness`` (edged_bench.attacks),
checked with the real face pipeline on scikit-image's public-domain astronaut: deterministic for a
seed, the face still found in the attack frames, a printed sheet's mesh moves as one plane (one
homography) while the re-rendered head turn changes the measured yaw and moves the nose against the
face outline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.quality import pose_degrees
from edged.types import Face, ImageRGB, Mesh
from edged_bench.attacks import head_turn, portrait, print_attack, screen_attack, video_frames, windows

SMALL = (320, 240)
Attack = Callable[..., list[ImageRGB]]

# mesh points: nose tip and the bridge below the eyes; the outline's cheek extremes; the eye corners
NOSE = (1, 4, 5, 195)
RIGHT_CHEEK, LEFT_CHEEK = 234, 454
EYES = (33, 263)


@pytest.fixture(scope="module")
def photo(astronaut_face: Face, astronaut: ImageRGB) -> ImageRGB:
    return portrait(astronaut, astronaut_face.detection.box)


def largest_mesh(pipeline: FacePipeline, frame: ImageRGB) -> Mesh | None:
    faces = pipeline.faces(frame, embed=False)
    return faces[0].mesh if faces else None


def meshes(pipeline: FacePipeline, frames: list[ImageRGB]) -> list[Mesh]:
    found = [largest_mesh(pipeline, frame) for frame in frames]
    return [mesh for mesh in found if mesh is not None]


def nose_offset(mesh: Mesh) -> float:
    """Where the nose tip sits between the cheek extremes, as a fraction of the face width."""
    p = mesh.points[:, :2].astype(np.float64)
    middle = (p[RIGHT_CHEEK] + p[LEFT_CHEEK]) / 2
    return float((p[1, 0] - middle[0]) / np.linalg.norm(p[LEFT_CHEEK] - p[RIGHT_CHEEK]))


def plane_residual(first: Mesh, other: Mesh) -> float:
    """The nose points' distance from where one homography fitted to all the other mesh points
    puts them, over the inter-ocular distance (the parallax a planar object does not have)."""
    a, b = first.points[:, :2].astype(np.float64), other.points[:, :2].astype(np.float64)
    rest = np.setdiff1d(np.arange(len(a)), NOSE)
    homography, _ = cv2.findHomography(a[rest], b[rest], 0)
    moved = cv2.perspectiveTransform(a[list(NOSE)][None], homography)[0]
    return float(
        np.linalg.norm(moved - b[list(NOSE)], axis=1).mean() / np.linalg.norm(a[EYES[1]] - a[EYES[0]])
    )


@pytest.mark.parametrize("make", [print_attack, screen_attack])
def test_attacks_are_deterministic_for_a_seed(make: Attack, photo: ImageRGB) -> None:
    first = make(photo, 7, frames=3, size=SMALL)
    again = make(photo, 7, frames=3, size=SMALL)
    other = make(photo, 8, frames=3, size=SMALL)
    assert len(first) == 3
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in first)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[2]), "a sequence moves"


def test_head_turn_is_deterministic_for_a_seed(astronaut_face: Face, astronaut: ImageRGB) -> None:
    points = astronaut_face.mesh.points if astronaut_face.mesh else None
    assert points is not None
    first = head_turn(astronaut, points, 3, frames=3)
    again = head_turn(astronaut, points, 3, frames=3)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert first[0].shape == astronaut.shape
    assert not np.array_equal(first[1], head_turn(astronaut, points, 4, frames=3)[1])


@pytest.mark.parametrize(("make", "seeds"), [(print_attack, (0, 1, 2)), (screen_attack, (0, 1, 2))])
def test_the_face_is_found_in_attack_frames(
    make: Attack, seeds: tuple[int, ...], pipeline: FacePipeline, photo: ImageRGB
) -> None:
    frames = [frame for seed in seeds for frame in make(photo, seed, frames=3)]
    found = meshes(pipeline, frames)
    assert len(found) >= 0.8 * len(frames), f"a face in {len(found)} of {len(frames)} attack frames"


def test_a_flat_print_moves_as_one_plane_a_head_turn_does_not(
    pipeline: FacePipeline, photo: ImageRGB, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    sheet = meshes(pipeline, print_attack(photo, 5, frames=6, bend=0.0))
    assert len(sheet) == 6
    # the sheet moved and tilted (the mesh moved), yet one homography carries the nose with the rest
    travel = max(float(np.abs(m.points[:, :2] - sheet[0].points[:, :2]).mean()) for m in sheet)
    assert travel > 5.0
    print_residuals = [plane_residual(sheet[0], m) for m in sheet[1:]]
    assert max(print_residuals) < 0.05, print_residuals
    assert max(nose_offset(m) for m in sheet) - min(nose_offset(m) for m in sheet) < 0.06

    assert astronaut_face.mesh is not None
    turn = meshes(pipeline, head_turn(astronaut, astronaut_face.mesh.points, 5, frames=6))
    assert len(turn) == 6
    yaws = [pose_degrees(m)[0] for m in turn]
    assert max(yaws) - min(yaws) >= 10.0, yaws
    offsets = [nose_offset(m) for m in turn]
    assert max(offsets) - min(offsets) > 0.1, offsets
    turn_residuals = [plane_residual(turn[0], m) for m in turn[1:]]
    assert max(turn_residuals) > 3 * max(print_residuals), (turn_residuals, print_residuals)


def test_video_windows(tmp_path: Path) -> None:
    frames = [np.full((48, 64, 3), i * 20, np.uint8) for i in range(10)]
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for frame in frames:
        writer.write(frame)
    writer.release()
    decoded = video_frames(path, step=2)
    assert len(decoded) == 5
    assert [int(f.mean() + 0.5) for f in decoded] == pytest.approx([0, 40, 80, 120, 160], abs=3)
    assert video_frames(tmp_path / "missing.mp4") == []
    assert [len(w) for w in windows(decoded, 2)] == [2, 2]
    assert len(windows(decoded, 2, stride=1)) == 4
