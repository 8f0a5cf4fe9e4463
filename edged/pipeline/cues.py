"""Motion and geometry cues of liveness, over the face-mesh points of a track (docs/liveness.md).

Pure functions over ``LivenessFrame.points`` / ``Mesh.points`` (468 × 3, frame pixels):
- parallax: a homography fitted to "flat" points (eye corners, brows, the face contour beside the
  eyes) between two frames, and the residual of the nose points under it, in inter-ocular
  distances. A photo or a screen moves as one plane (residual ≈ mesh noise); a turning head does
  not (the nose stands out of the plane of the eyes).
- blink: the eye aspect ratio (EAR) of both eyes over time; a blink is a dip below a fraction of
  the track's open-eye baseline and back.
- head turn: the yaw of ``quality.pose_degrees`` over time.
- the active challenge: exactly the asked motion (and no other) in the frames after it was asked.

Left and right are the subject's own. edged sees the camera's frames as captured (not mirrored): the
subject's left cheek (mesh point 454) is on the image's right, and a positive yaw
(``pose_degrees``) means the nose turned towards it, so a turn to the subject's left raises the yaw.
A mirrored source (a selfie preview fed back as the frames) would swap the two turns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from edged.pipeline.liveness import Challenge
from edged.pipeline.quality import pose_degrees
from edged.types import FloatArray, Mesh

__all__ = [
    "FLAT_POINTS",
    "NOSE_POINTS",
    "ChallengeCheck",
    "Motion",
    "Parallax",
    "blinks",
    "check_challenge",
    "eye_aspect_ratio",
    "inter_ocular",
    "motions",
    "pair_parallax",
    "track_parallax",
    "yaw_degrees",
]

FLAT_POINTS: tuple[int, ...] = (
    # eye corners (subject's right: 33 outer, 133 inner; left: 362 inner, 263 outer)
    33,
    133,
    362,
    263,
    # brows: outer ends and middles
    70,
    105,
    107,
    336,
    334,
    300,
    # the face contour beside the eyes (temples) and the upper cheeks below the eyes
    127,
    356,
    117,
    346,
)
"""Mesh points near one plane on a face: the plane of the eyes."""

NOSE_POINTS: tuple[int, ...] = (1, 4, 5, 195, 197)
"""Nose tip and bridge: the points that stand out of the plane of the eyes."""

# eye aspect ratio points, (outer, upper 1, upper 2, inner, lower 2, lower 1) per eye
_RIGHT_EYE = (33, 160, 158, 133, 153, 144)
_LEFT_EYE = (263, 387, 385, 362, 380, 373)

Turn = Literal["turn_left", "turn_right"]


def inter_ocular(points: FloatArray) -> float:
    """The distance between the two eye centres (mean of each eye's corners), frame pixels."""
    p = points[:, :2].astype(np.float64)
    right = (p[33] + p[133]) / 2
    left = (p[362] + p[263]) / 2
    return float(np.linalg.norm(left - right))


def eye_aspect_ratio(points: FloatArray) -> float:
    """The mean of both eyes' aspect ratios: (two eyelid gaps) / (2 × corner distance); ~0.25–0.35
    open, near 0 closed (Soukupová & Čech's EAR on the mesh's eye points)."""
    p = points[:, :2].astype(np.float64)
    ratios = []
    for outer, up1, up2, inner, low2, low1 in (_RIGHT_EYE, _LEFT_EYE):
        gaps = np.linalg.norm(p[up1] - p[low1]) + np.linalg.norm(p[up2] - p[low2])
        ratios.append(gaps / max(2.0 * float(np.linalg.norm(p[outer] - p[inner])), 1e-6))
    return float(np.mean(ratios))


def yaw_degrees(points: FloatArray) -> float:
    """The head's yaw (``quality.pose_degrees``): positive = turned towards the subject's left."""
    return pose_degrees(Mesh(points, 1.0))[0]


@dataclass(frozen=True, slots=True)
class Motion:
    """How far the viewpoint changed between two frames, degrees: the larger of the yaw change, the
    pitch change (``pose_degrees``) and the tilt of the flat points' plane (from the anisotropy of
    the affine map between them: a plane seen under a tilt θ shrinks by cos θ across the tilt)."""

    yaw: float
    pitch: float
    tilt: float

    @property
    def degrees(self) -> float:
        return max(abs(self.yaw), abs(self.pitch), self.tilt)


def motions(a: FloatArray, b: FloatArray) -> Motion:
    """The viewpoint change from frame ``a``'s points to frame ``b``'s."""
    ya, pa, _ = pose_degrees(Mesh(a, 1.0))
    yb, pb, _ = pose_degrees(Mesh(b, 1.0))
    src = a[list(FLAT_POINTS), :2].astype(np.float64)
    dst = b[list(FLAT_POINTS), :2].astype(np.float64)
    src_c, dst_c = src - src.mean(axis=0), dst - dst.mean(axis=0)
    linear, *_ = np.linalg.lstsq(src_c, dst_c, rcond=None)
    s = np.linalg.svd(linear, compute_uv=False)
    tilt = math.degrees(math.acos(min(1.0, float(s[1] / max(s[0], 1e-9)))))
    return Motion(yb - ya, pb - pa, tilt)


@dataclass(frozen=True, slots=True)
class Parallax:
    """The parallax of one pair of frames: ``residual`` is the mean distance of the nose points
    from where the flat points' homography puts them, in inter-ocular distances; ``motion`` the
    viewpoint change of the pair, degrees; ``first``/``second`` the frames' indices."""

    residual: float
    motion: float
    first: int
    second: int


def pair_parallax(a: FloatArray, b: FloatArray) -> float:
    """The nose points' residual under the flat points' homography from ``a`` to ``b``, in
    inter-ocular distances (of ``b``)."""
    flat = list(FLAT_POINTS)
    nose = list(NOSE_POINTS)
    src = a[flat, :2].astype(np.float64)
    dst = b[flat, :2].astype(np.float64)
    homography, _ = cv2.findHomography(src, dst, 0)
    if homography is None:
        return math.inf
    moved = cv2.perspectiveTransform(a[nose, :2].astype(np.float64)[None], homography)[0]
    error = np.linalg.norm(moved - b[nose, :2].astype(np.float64), axis=1)
    return float(error.mean() / max(inter_ocular(b), 1e-6))


def track_parallax(tracks: Sequence[FloatArray], min_motion_deg: float) -> Parallax | None:
    """The parallax of the pair of frames with the most viewpoint change, or None when no pair moved
    by ``min_motion_deg`` (a still face says nothing about its depth). Candidate pairs: the yaw and
    pitch extremes, and the first frame against each other frame (O(n) fits, not O(n²))."""
    n = len(tracks)
    if n < 2:
        return None
    poses = [pose_degrees(Mesh(p, 1.0)) for p in tracks]
    yaws = [pose[0] for pose in poses]
    pitches = [pose[1] for pose in poses]
    pairs = {(0, i) for i in range(1, n)}
    for values in (yaws, pitches):
        lo, hi = int(np.argmin(values)), int(np.argmax(values))
        if lo != hi:
            pairs.add((min(lo, hi), max(lo, hi)))
    best: tuple[float, int, int] | None = None
    for i, j in sorted(pairs):
        moved = motions(tracks[i], tracks[j]).degrees
        if moved >= min_motion_deg and (best is None or moved > best[0]):
            best = (moved, i, j)
    if best is None:
        return None
    moved, i, j = best
    return Parallax(pair_parallax(tracks[i], tracks[j]), moved, i, j)


def blinks(
    ratios: Sequence[float], closed_fraction: float, baseline: float | None = None
) -> tuple[int, float]:
    """Blinks in a sequence of eye aspect ratios, and the lowest ratio relative to the open-eye
    baseline (default: the 75th percentile of the sequence). A blink: a frame below
    ``closed_fraction`` × baseline with a frame at or above the re-open level (half-way back to the
    baseline) before and after it."""
    if len(ratios) < 3:
        return 0, 1.0
    values = np.asarray(ratios, np.float64)
    if baseline is None:
        baseline = float(np.percentile(values, 75))
    if baseline <= 0:
        return 0, 1.0
    closed = closed_fraction * baseline
    reopen = (closed_fraction + 1.0) / 2.0 * baseline
    count, state = 0, "start"
    for value in values:
        if state in ("start", "closed_seen") and value >= reopen:
            if state == "closed_seen":
                count += 1
            state = "open"
        elif state == "open" and value < closed:
            state = "closed_seen"
    return count, float(values.min() / baseline)


@dataclass(frozen=True, slots=True)
class ChallengeCheck:
    """What happened after a challenge: the yaw excursions from the first frame's yaw (degrees,
    ``left`` ≥ 0 towards the subject's left, ``right`` ≥ 0 towards their right), the blinks, and the
    verdict: ``passed`` (exactly the asked motion), ``failed`` (another motion, or none by the end of
    the window) or ``pending`` (the window is still open and nothing wrong has happened)."""

    left: float
    right: float
    blinks: int
    status: Literal["passed", "failed", "pending"]


def check_challenge(
    challenge: Challenge,
    tracks: Sequence[FloatArray],
    complete: bool,
    turn_deg: float,
    closed_fraction: float,
    baseline_ratios: Sequence[float] = (),
) -> ChallengeCheck:
    """Whether exactly ``challenge`` happened in ``tracks`` (the mesh points of the frames after the
    challenge was shown, in order). ``complete``: the window is over (no more frames will come).
    ``baseline_ratios``: eye aspect ratios of earlier frames, to steady the open-eye baseline."""
    if not tracks:
        return ChallengeCheck(0.0, 0.0, 0, "failed" if complete else "pending")
    yaws = np.array([yaw_degrees(p) for p in tracks])
    start = float(yaws[0])
    left = max(0.0, float(yaws.max()) - start)
    right = max(0.0, start - float(yaws.min()))
    ratios = [eye_aspect_ratio(p) for p in tracks]
    baseline = float(np.percentile([*baseline_ratios, *ratios], 75))
    count, _ = blinks(ratios, closed_fraction, baseline)
    seen = {"turn_left": left >= turn_deg, "turn_right": right >= turn_deg, "blink": count > 0}
    wrong = any(happened for motion, happened in seen.items() if motion != challenge)
    if wrong:
        status: Literal["passed", "failed", "pending"] = "failed"
    elif complete:
        status = "passed" if seen[challenge] else "failed"
    else:
        status = "pending"
    return ChallengeCheck(left, right, count, status)
