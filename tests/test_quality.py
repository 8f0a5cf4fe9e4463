"""The quality gate (edged.pipeline.quality): each reason code on a real face made to fail it, the
measures behind the verdict, and the pure measuring functions on synthetic input."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from edged.pipeline import quality
from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.quality import QualityThresholds, assess, brightness, outside_fraction, sharpness
from edged.types import Box, Detection, Face, ImageRGB

ALL_REASONS = {
    quality.TOO_SMALL,
    quality.BLURRED,
    quality.EXTREME_POSE,
    quality.TOO_DARK,
    quality.TOO_BRIGHT,
    quality.CUT_BY_BORDER,
    quality.NOT_A_FACE,
    quality.LOW_DETECTION_SCORE,
}


def test_reason_codes_are_stable() -> None:
    # they appear in CLI output, MQTT events and enrolment refusals: renaming one is a breaking change
    assert {
        "too_small",
        "blurred",
        "extreme_pose",
        "too_dark",
        "too_bright",
        "cut_by_border",
        "not_a_face",
        "low_detection_score",
    } == ALL_REASONS


def test_the_astronaut_passes_the_gate(astronaut_face: Face) -> None:
    q = astronaut_face.quality
    assert q.ok, q
    assert q.reasons == ()
    for key in (
        "face_px",
        "detection_score",
        "outside_fraction",
        "yaw",
        "pitch",
        "roll",
        "sharpness",
        "brightness",
    ):
        assert key in q.measures, key
    assert q.measures["outside_fraction"] == 0.0
    assert abs(q.measures["yaw"]) < 10 and abs(q.measures["pitch"]) < 10 and abs(q.measures["roll"]) < 10


def scaled(image: ImageRGB, factor: float) -> ImageRGB:
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


def rotated(image: ImageRGB, degrees: float) -> ImageRGB:
    matrix = cv2.getRotationMatrix2D((225.0, 128.0), degrees, 1.0)  # about the face centre
    return cv2.warpAffine(image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def brightened(image: ImageRGB, gain: float, offset: float) -> ImageRGB:
    return np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


# name → (transform of the astronaut, the reason that must appear)
FAILING: dict[str, tuple[Callable[[ImageRGB], ImageRGB], str]] = {
    "gaussian-blur-sigma-3": (lambda im: cv2.GaussianBlur(im, (0, 0), 3.0), quality.BLURRED),
    "dark-x0.15": (lambda im: brightened(im, 0.15, 0.0), quality.TOO_DARK),
    "bright-x0.3+185": (lambda im: brightened(im, 0.3, 185.0), quality.TOO_BRIGHT),
    "tiny-face-38px": (lambda im: scaled(im, 0.4), quality.TOO_SMALL),
    "cut-by-left-border": (lambda im: im[:, 200:], quality.CUT_BY_BORDER),
    "cut-by-right-border": (lambda im: im[:, :250], quality.CUT_BY_BORDER),
    "rolled-60-degrees": (lambda im: rotated(im, 60.0), quality.EXTREME_POSE),
}


@pytest.mark.parametrize("name", list(FAILING))
def test_gate_names_the_problem(pipeline: FacePipeline, astronaut: ImageRGB, name: str) -> None:
    transform, reason = FAILING[name]
    image = np.ascontiguousarray(transform(astronaut))
    faces = pipeline.faces(image, embed=False)
    assert len(faces) == 1, f"{name}: {len(faces)} faces"
    q = faces[0].quality
    assert reason in q.reasons, f"{name}: reasons {q.reasons}, measures {q.measures}"
    assert not q.ok
    assert set(q.reasons) <= ALL_REASONS


def test_opposite_lighting_reasons_exclude_each_other(pipeline: FacePipeline, astronaut: ImageRGB) -> None:
    for image in (brightened(astronaut, 0.15, 0.0), brightened(astronaut, 0.3, 185.0)):
        (face,) = pipeline.faces(image, embed=False)
        assert not {quality.TOO_DARK, quality.TOO_BRIGHT} <= set(face.quality.reasons)


@pytest.mark.parametrize("degrees", [-30.0, -15.0, 15.0, 30.0])
def test_roll_follows_an_in_plane_rotation(
    pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face, degrees: float
) -> None:
    (face,) = pipeline.faces(rotated(astronaut, degrees), embed=False)
    base = astronaut_face.quality.measures["roll"]
    # OpenCV's positive angle turns the picture counter-clockwise: the eye line's angle (y down) drops
    assert face.quality.measures["roll"] == pytest.approx(base - degrees, abs=3.0)
    assert quality.EXTREME_POSE not in face.quality.reasons


def test_outside_fraction_grows_as_the_face_leaves_the_frame(
    pipeline: FacePipeline, astronaut: ImageRGB
) -> None:
    fractions = []
    for left in (0, 185, 195, 205):
        (face,) = pipeline.faces(np.ascontiguousarray(astronaut[:, left:]), embed=False)
        fractions.append(face.quality.measures["outside_fraction"])
    assert fractions[0] == 0.0
    assert fractions == sorted(fractions), fractions
    assert fractions[-1] > 0.2


# ---------------------------------------------------------------------------------------------
# pure measures, synthetic input


def detection(box: Box, score: float = 0.9) -> Detection:
    return Detection(box, score, np.zeros((6, 2), np.float32))


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (Box(10, 10, 50, 50), 0.0),
        (Box(-20, 10, 20, 50), 0.5),
        (Box(80, 80, 120, 120), 0.75),  # a 100×100 frame: a quarter inside
        (Box(200, 200, 240, 240), 1.0),
    ],
)
def test_outside_fraction(box: Box, expected: float) -> None:
    assert outside_fraction(detection(box), 100, 100) == pytest.approx(expected)


def test_sharpness_and_brightness_measures() -> None:
    flat = np.full((150, 150, 3), 77, np.uint8)
    assert sharpness(flat) == 0.0
    assert brightness(flat) == pytest.approx(77.0)
    checker = ((np.indices((150, 150)).sum(0) % 2) * 255).astype(np.uint8)
    assert sharpness(np.repeat(checker[..., None], 3, axis=2)) > 1000.0


@pytest.mark.parametrize(
    ("box", "score", "chip_value", "expected"),
    [
        (Box(10, 10, 110, 110), 0.9, None, set()),
        (Box(10, 10, 40, 40), 0.9, None, {quality.TOO_SMALL}),
        (Box(10, 10, 110, 110), 0.3, None, {quality.LOW_DETECTION_SCORE}),
        (Box(-60, 10, 40, 110), 0.9, None, {quality.CUT_BY_BORDER}),
        (Box(10, 10, 110, 110), 0.9, 20, {quality.BLURRED, quality.TOO_DARK}),
        (Box(10, 10, 110, 110), 0.9, 240, {quality.BLURRED, quality.TOO_BRIGHT}),
    ],
)
def test_assess_lists_every_limit_broken(
    box: Box, score: float, chip_value: int | None, expected: set[str]
) -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    chip = None if chip_value is None else np.full((150, 150, 3), chip_value, np.uint8)
    verdict = assess(image, detection(box, score), None, chip, QualityThresholds())
    assert set(verdict.reasons) == expected
    assert verdict.ok == (not expected)
    assert verdict.measures["face_px"] == pytest.approx(max(box.width, box.height), abs=0.1)


def test_thresholds_are_respected() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    det = detection(Box(10, 10, 70, 70))
    assert quality.TOO_SMALL not in assess(image, det, None, None, QualityThresholds()).reasons
    strict = QualityThresholds(min_face_px=61.0)
    assert quality.TOO_SMALL in assess(image, det, None, None, strict).reasons
