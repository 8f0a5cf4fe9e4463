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
import numpy.typing as npt

from edged.pipeline.liveness import Challenge, FacePatch
from edged.pipeline.quality import pose_degrees
from edged.types import FloatArray, Mesh

__all__ = [
    "FLAT_POINTS",
    "NOSE_POINTS",
    "Blinks",
    "ChallengeCheck",
    "Motion",
    "Parallax",
    "TrackedPair",
    "blinks",
    "check_challenge",
    "eye_aspect_ratio",
    "image_parallax",
    "inter_ocular",
    "motions",
    "pair_parallax",
    "track_pair",
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

BLINK_MAX_CLOSED_S = 0.5
"""The longest closure that is a blink (a blink lasts 0.1–0.4 s)."""
BLINK_REFERENCE_S = 0.6
"""How far back the open-eye reference of a frame looks."""


LK_WINDOW = 15
"""Lucas–Kanade window, patch pixels (a face box is ``PATCH_BOX_PX`` = 128 across)."""
PARALLAX_FRAMES = 6
"""Frames of a track (spread evenly) whose every pair the parallax tracks: 15 pairs (~40 ms here)."""
LK_BACK_IOD = 0.05
"""A point tracked forward then back must land this close (inter-ocular distances) to be used."""


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
    """How far the head's pose changed between two frames, degrees (``pose_degrees``).

    Only the pose counts as motion: the tilt of the flat points' plane (their foreshortening) was
    measured and is too noisy to use: mesh jitter on a still face reads as 5–15° of tilt."""

    yaw: float
    pitch: float

    @property
    def degrees(self) -> float:
        return max(abs(self.yaw), abs(self.pitch))


def motions(a: FloatArray, b: FloatArray) -> Motion:
    """The pose change from frame ``a``'s points to frame ``b``'s."""
    ya, pa, _ = pose_degrees(Mesh(a, 1.0))
    yb, pb, _ = pose_degrees(Mesh(b, 1.0))
    return Motion(yb - ya, pb - pa)


@dataclass(frozen=True, slots=True)
class Parallax:
    """The parallax over a track (``track_parallax``): ``residual`` in inter-ocular distances,
    ``motion`` in degrees, ``pairs`` how many pairs of frames tracked."""

    residual: float
    motion: float
    pairs: int


def pair_parallax(a: FloatArray, b: FloatArray) -> float:
    """The nose points' residual under the flat points' homography from ``a`` to ``b``, in
    inter-ocular distances (of ``b``), on the mesh's own points. Measured, not used for a verdict:
    the mesh puts a tilted photo's nose where a turned head's would be (its 3-D prior), so this
    grows with the estimated pose change whether the face is flat or not (docs/liveness.md)."""
    return _residual(
        a[list(FLAT_POINTS), :2], a[list(NOSE_POINTS), :2], b[list(FLAT_POINTS), :2], b[list(NOSE_POINTS), :2]
    )


def _residual(flat_a: FloatArray, nose_a: FloatArray, flat_b: FloatArray, nose_b: FloatArray) -> float:
    homography, _ = cv2.findHomography(flat_a.astype(np.float64), flat_b.astype(np.float64), 0)
    if homography is None:
        return math.inf
    moved = cv2.perspectiveTransform(nose_a.astype(np.float64)[None], homography)[0]
    error = np.linalg.norm(moved - nose_b.astype(np.float64), axis=1)
    right, left = flat_b[:2].mean(axis=0), flat_b[2:4].mean(axis=0)  # the eye corners: 33, 133 | 362, 263
    return float(error.mean() / max(float(np.linalg.norm(left - right)), 1e-6))


@dataclass(frozen=True, slots=True)
class TrackedPair:
    """Two frames' flat and nose points tracked in the image (``track_pair``): ``residual`` the nose
    points' distance from where the flat points' homography puts them (inter-ocular distances);
    ``tilt`` how far the flat points' plane turned (degrees, from the anisotropy of their affine map:
    a plane turned by θ shrinks by cos θ across the turn)."""

    residual: float
    tilt: float


def track_pair(
    patch_a: FacePatch, a: FloatArray, patch_b: FacePatch, b: FloatArray, window: int = LK_WINDOW
) -> TrackedPair | None:
    """The flat and nose points of frame ``a`` tracked into frame ``b`` by pyramidal Lucas–Kanade on
    the grey face patches (starting from the mesh's points of ``b``; a point is kept only when
    tracking it back lands within ``LK_BACK_IOD`` of where it started). What a flat print or screen
    shows moves exactly by one homography; a head does not. None when too few points track."""
    index = [*FLAT_POINTS, *NOSE_POINTS]
    src = patch_a.to_patch(a[index]).reshape(-1, 1, 2)
    start = patch_b.to_patch(b[index]).reshape(-1, 1, 2)
    size = (window, window)
    flags = cv2.OPTFLOW_USE_INITIAL_FLOW
    dst, ok, _ = cv2.calcOpticalFlowPyrLK(
        patch_a.gray, patch_b.gray, src, start.copy(), winSize=size, maxLevel=3, flags=flags
    )
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(
        patch_b.gray, patch_a.gray, dst, src.copy(), winSize=size, maxLevel=3, flags=flags
    )
    src2 = src.reshape(-1, 2).astype(np.float64)
    dst2 = dst.reshape(-1, 2).astype(np.float64)
    iod_a, iod_b = _iod(src2), _iod(dst2)
    drift = np.linalg.norm(back.reshape(-1, 2) - src2, axis=1) / iod_a
    good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (drift < LK_BACK_IOD)
    n = len(FLAT_POINTS)
    flat, nose = good[:n], good[n:]
    if flat.sum() < 6 or nose.sum() < 2:
        return None
    flat_a, flat_b = src2[:n][flat], dst2[:n][flat]
    homography, _ = cv2.findHomography(flat_a, flat_b, 0)
    if homography is None:
        return None
    moved = cv2.perspectiveTransform(src2[n:][nose][None], homography)[0]
    residual = float(np.linalg.norm(moved - dst2[n:][nose], axis=1).mean() / iod_b)
    linear, *_ = np.linalg.lstsq(flat_a - flat_a.mean(axis=0), flat_b - flat_b.mean(axis=0), rcond=None)
    stretch = np.linalg.svd(linear, compute_uv=False)
    tilt = math.degrees(math.acos(min(1.0, float(stretch[1] / max(stretch[0], 1e-9)))))
    return TrackedPair(residual, tilt)


def image_parallax(
    patch_a: FacePatch, a: FloatArray, patch_b: FacePatch, b: FloatArray, window: int = LK_WINDOW
) -> float | None:
    """The nose points' residual of ``track_pair`` (inter-ocular distances), or None."""
    pair = track_pair(patch_a, a, patch_b, b, window)
    return None if pair is None else pair.residual


def _iod(flat: npt.NDArray[np.float64]) -> float:
    right, left = flat[:2].mean(axis=0), flat[2:4].mean(axis=0)
    return max(float(np.linalg.norm(left - right)), 1e-6)


def track_parallax(
    tracks: Sequence[FloatArray],
    patches: Sequence[FacePatch],
    min_motion_deg: float,
    frames: int = PARALLAX_FRAMES,
) -> Parallax | None:
    """The image parallax over a track: every pair among ``frames`` frames spread evenly over it
    (``track_pair``); ``residual`` is the 90th percentile of the pairs' nose residuals (a head that
    turned at some point shows it in some pairs; a plane shows it in none), ``motion`` the larger of
    the 90th percentile of the pairs' plane tilts and the largest pose change between the frames
    (``pose_degrees``). None when the track did not move by ``min_motion_deg`` (a still face says
    nothing about its depth) or no pair tracked."""
    n = len(tracks)
    if n < 2:
        return None
    chosen = sorted({round(i * (n - 1) / max(frames - 1, 1)) for i in range(min(frames, n))})
    poses = np.array([pose_degrees(Mesh(tracks[i], 1.0))[:2] for i in chosen])
    pose_change = float((poses.max(axis=0) - poses.min(axis=0)).max())
    measured = [
        pair
        for x, i in enumerate(chosen)
        for j in chosen[x + 1 :]
        if (pair := track_pair(patches[i], tracks[i], patches[j], tracks[j])) is not None
    ]
    if not measured:
        return None
    tilt = float(np.percentile([p.tilt for p in measured], 90))
    motion = max(tilt, pose_change)
    if motion < min_motion_deg:
        return None
    residual = float(np.percentile([p.residual for p in measured], 90))
    return Parallax(residual, motion, len(measured))


@dataclass(frozen=True, slots=True)
class Blinks:
    """The blinks in a sequence of eye aspect ratios, and the deepest dip: the lowest ratio relative
    to the open-eye reference just before it (1.0 = no dip)."""

    count: int
    deepest: float


def blinks(
    ratios: Sequence[float],
    times: Sequence[float],
    closed_fraction: float,
    max_closed_s: float = BLINK_MAX_CLOSED_S,
    reference_s: float = BLINK_REFERENCE_S,
    since: float = -math.inf,
) -> Blinks:
    """Blinks in eye aspect ratios over time. The open-eye reference of a frame is the largest
    ratio of the ``reference_s`` before it (a slow change, a head turn or a look down, moves it
    along); a blink is a frame below ``closed_fraction`` × reference, then a frame back above
    half-way between the closed level and the reference within ``max_closed_s`` (a longer closure
    is not a blink). A blink is fast: a slow drift of the ratio is not one. Only closures at or
    after ``since`` count (earlier frames still serve as the reference)."""
    count, deepest = 0, 1.0
    closed_at: float | None = None
    closed_ref = 0.0
    for i, (value, t) in enumerate(zip(ratios, times, strict=True)):
        window = [r for r, u in zip(ratios[:i], times[:i], strict=True) if t - u <= reference_s]
        if closed_at is not None:
            if value >= (closed_fraction + 1.0) / 2.0 * closed_ref:
                if t - closed_at <= max_closed_s:
                    count += 1
                closed_at = None
            elif t - closed_at > max_closed_s:
                closed_at = None
            continue
        if not window:
            continue
        reference = max(window)
        if reference <= 0:
            continue
        if t < since:
            continue
        deepest = min(deepest, value / reference)
        if value < closed_fraction * reference:
            closed_at, closed_ref = t, reference
    return Blinks(count, deepest)


@dataclass(frozen=True, slots=True)
class ChallengeCheck:
    """What happened after a challenge: the yaw excursions from the first frame's yaw (degrees,
    ``left`` ≥ 0 towards the subject's left, ``right`` ≥ 0 towards their right), the blinks, and the
    verdict: ``passed`` (exactly the asked motion), ``failed`` (another motion, or none by the end of
    the window: ``moved`` tells the two apart) or ``pending`` (the window is still open and nothing
    wrong has happened)."""

    left: float
    right: float
    blinks: int
    status: Literal["passed", "failed", "pending"]
    moved: bool = False
    """Whether any of the three motions happened (a failure without it is no answer, not a wrong one)."""


def check_challenge(
    challenge: Challenge,
    points: Sequence[FloatArray],
    times: Sequence[float],
    shown: float,
    complete: bool,
    turn_deg: float,
    closed_fraction: float,
    eyes: Sequence[float] | None = None,
    reference: float | None = None,
) -> ChallengeCheck:
    """Whether exactly ``challenge`` happened after ``shown``: ``points``/``times`` are the track's
    mesh points and times in order (frames before ``shown`` only give the blink's open-eye
    reference); the turns are measured from ``reference`` (a yaw, degrees), by default the yaw of
    the first frame at or after ``shown``. ``complete``: the window is over (no more frames will
    come). ``eyes``: how open the eyes are on each frame (``EyeModel.openness``); default: the
    mesh's eye aspect ratio."""
    after = [p for p, t in zip(points, times, strict=True) if t >= shown]
    if not after:
        return ChallengeCheck(0.0, 0.0, 0, "failed" if complete else "pending")
    yaws = np.array([yaw_degrees(p) for p in after])
    start = float(yaws[0]) if reference is None else reference
    left = max(0.0, float(yaws.max()) - start)
    right = max(0.0, start - float(yaws.min()))
    ratios = list(eyes) if eyes is not None else [eye_aspect_ratio(p) for p in points]
    count = blinks(ratios, times, closed_fraction, since=shown).count
    seen = {"turn_left": left >= turn_deg, "turn_right": right >= turn_deg, "blink": count > 0}
    wrong = any(happened for motion, happened in seen.items() if motion != challenge)
    status: Literal["passed", "failed", "pending"]
    if wrong:
        status = "failed"
    elif complete:
        status = "passed" if seen[challenge] else "failed"
    else:
        status = "pending"
    return ChallengeCheck(left, right, count, status, any(seen.values()))
