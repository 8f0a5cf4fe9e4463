"""The quality gate: whether a face is good enough to make or match a template, with reason codes
and the measured values behind them."""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field

from edged.strict import Strict
from edged.types import Detection, ImageRGB, Mesh, Quality

__all__ = ["QualityThresholds", "assess", "brightness", "outside_fraction", "pose_degrees", "sharpness"]


class QualityThresholds(Strict):
    """Limits of the quality gate (reason codes in edged/pipeline/quality.py)."""

    min_face_px: float = Field(48.0, ge=0, description="smallest face box side, frame pixels (too_small)")
    min_sharpness: float = Field(40.0, ge=0, description="variance of the Laplacian on the chip (blurred)")
    max_yaw_deg: float = Field(40.0, gt=0, le=90, description="largest left/right head turn (extreme_pose)")
    max_pitch_deg: float = Field(35.0, gt=0, le=90, description="largest up/down head tilt (extreme_pose)")
    max_roll_deg: float = Field(45.0, gt=0, le=180, description="largest in-plane rotation (extreme_pose)")
    min_brightness: float = Field(40.0, ge=0, le=255, description="darkest mean chip grey level (too_dark)")
    max_brightness: float = Field(
        225.0, ge=0, le=255, description="brightest mean chip grey level (too_bright)"
    )
    max_outside_fraction: float = Field(
        0.1, ge=0, le=1, description="largest share of the face box outside the frame (cut_by_border)"
    )
    min_face_score: float = Field(
        0.5, ge=0, le=1, description="face-mesh face probability below which a detection is not a face"
    )
    min_detection_score: float = Field(0.5, ge=0, le=1, description="detector score (low_detection_score)")


# reason codes (stable: they appear in CLI output, MQTT events and enrolment refusals)
TOO_SMALL = "too_small"
BLURRED = "blurred"
EXTREME_POSE = "extreme_pose"
TOO_DARK = "too_dark"
TOO_BRIGHT = "too_bright"
CUT_BY_BORDER = "cut_by_border"
NOT_A_FACE = "not_a_face"
LOW_DETECTION_SCORE = "low_detection_score"

# mesh points: nose tip, cheek extremes (subject's right/left), forehead top, chin
_NOSE, _RIGHT_CHEEK, _LEFT_CHEEK, _FOREHEAD, _CHIN = 1, 234, 454, 10, 152


def pose_degrees(mesh: Mesh) -> tuple[float, float, float]:
    """(yaw, pitch, roll) estimated from mesh geometry; 0 is frontal. Positive yaw: the nose is
    towards the subject's left cheek in the image."""
    p = mesh.points[:, :2].astype(np.float64)
    eye_vec = p[263] - p[33]
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    # express points in the eye-aligned frame so roll does not leak into yaw/pitch
    c, s = math.cos(math.radians(-roll)), math.sin(math.radians(-roll))
    rot = np.array([[c, -s], [s, c]])
    nose, right, left, top, chin = (rot @ p[i] for i in (_NOSE, _RIGHT_CHEEK, _LEFT_CHEEK, _FOREHEAD, _CHIN))
    width = max(left[0] - right[0], 1e-6)
    height = max(chin[1] - top[1], 1e-6)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, 2 * (nose[0] - right[0]) / width - 1))))
    # the nose tip of a frontal face sits ~55 % of the way from forehead top to chin
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, 2 * ((nose[1] - top[1]) / height - 0.55)))))
    return yaw, pitch, roll


def sharpness(chip: ImageRGB) -> float:
    """Variance of the Laplacian over the central face area of an aligned chip."""
    gray = cv2.cvtColor(chip[30:130, 30:120], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def brightness(chip: ImageRGB) -> float:
    return float(cv2.cvtColor(chip[40:120, 35:115], cv2.COLOR_RGB2GRAY).mean())


def outside_fraction(detection: Detection, width: int, height: int) -> float:
    box = detection.box
    inside_w = max(0.0, min(box.x2, width) - max(box.x1, 0.0))
    inside_h = max(0.0, min(box.y2, height) - max(box.y1, 0.0))
    return 1.0 - (inside_w * inside_h) / max(box.area, 1e-6)


def assess(
    image: ImageRGB,
    detection: Detection,
    mesh: Mesh | None,
    chip: ImageRGB | None,
    limits: QualityThresholds,
) -> Quality:
    """Measure the face and list every limit it breaks."""
    h, w = image.shape[:2]
    reasons: list[str] = []
    size = max(detection.box.width, detection.box.height)
    outside = outside_fraction(detection, w, h)
    measures: dict[str, float] = {
        "face_px": round(size, 1),
        "detection_score": round(detection.score, 3),
        "outside_fraction": round(outside, 3),
    }
    if detection.score < limits.min_detection_score:
        reasons.append(LOW_DETECTION_SCORE)
    if size < limits.min_face_px:
        reasons.append(TOO_SMALL)
    if outside > limits.max_outside_fraction:
        reasons.append(CUT_BY_BORDER)
    if mesh is not None:
        yaw, pitch, roll = pose_degrees(mesh)
        measures.update(
            face_score=round(mesh.face_score, 3),
            yaw=round(yaw, 1),
            pitch=round(pitch, 1),
            roll=round(roll, 1),
        )
        if mesh.face_score < limits.min_face_score:
            reasons.append(NOT_A_FACE)
        if (
            abs(yaw) > limits.max_yaw_deg
            or abs(pitch) > limits.max_pitch_deg
            or abs(roll) > limits.max_roll_deg
        ):
            reasons.append(EXTREME_POSE)
    if chip is not None:
        sharp, light = sharpness(chip), brightness(chip)
        measures.update(sharpness=round(sharp, 1), brightness=round(light, 1))
        if sharp < limits.min_sharpness:
            reasons.append(BLURRED)
        if light < limits.min_brightness:
            reasons.append(TOO_DARK)
        elif light > limits.max_brightness:
            reasons.append(TOO_BRIGHT)
    return Quality(tuple(reasons), measures)
