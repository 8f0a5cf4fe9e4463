"""Liveness (presentation-attack detection): the values every part of it shares.

Three parts produce and consume these records:
- ``pipeline/antispoof.py`` — the MiniFASNet ensemble, one frame and one face box → the probability
  that the face is real (``PassiveModel``);
- ``pipeline/cues.py`` — motion and geometry cues over the face mesh of a track (parallax, blink,
  head turn for a challenge);
- ``pipeline/fusion.py`` — per track: the model's scores over the good frames plus the cues →
  one ``LivenessResult`` (``realface | spoofface | uncertain``, a score, the cues that decided).

The terms are the reference service's: ``realface``, ``spoofface``, ``uncertain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edged.types import Box, FloatArray, ImageRGB

__all__ = [
    "CHALLENGES",
    "Challenge",
    "Cue",
    "CueVerdict",
    "FacePatch",
    "LivenessAssessor",
    "LivenessDecision",
    "LivenessFrame",
    "LivenessResult",
    "PassiveModel",
]

LivenessDecision = Literal["realface", "spoofface", "uncertain"]
CueVerdict = Literal["real", "spoof", "none"]
"""What one cue says on its own: ``none`` when it could not tell (too few frames, no motion …)."""

Challenge = Literal["turn_left", "turn_right", "blink"]
"""An active challenge the terminal's display shows: the subject turns their head to their own
left or right, or blinks."""
CHALLENGES: tuple[Challenge, ...] = ("turn_left", "turn_right", "blink")


@dataclass(frozen=True, slots=True)
class Cue:
    """One cue's reading over a frame or a track.

    ``name``: ``model``, ``parallax``, ``blink`` or ``challenge``; ``value``: the raw measure in the
    cue's own unit (documented in docs/liveness.md); ``score``: the measure mapped to [0, 1], 1 = live;
    ``verdict``: what the cue says alone."""

    name: str
    value: float
    score: float
    verdict: CueVerdict


@dataclass(frozen=True, slots=True)
class LivenessResult:
    """The liveness of one face: over one image (the model cue only) or over a track.

    ``decided_by`` names the cues whose verdict made ``decision`` (empty for ``uncertain`` when no
    cue could tell); ``frames`` is how many frames were used; ``challenge`` the challenge asked, if
    any."""

    decision: LivenessDecision
    score: float
    cues: tuple[Cue, ...]
    decided_by: tuple[str, ...]
    frames: int
    challenge: Challenge | None = None


PATCH_BOX_PX = 128
"""A face patch shows the face box at this side, whatever the face's size in the frame."""


@dataclass(frozen=True, slots=True)
class FacePatch:
    """The grey face region of one frame, kept for the parallax cue (it tracks mesh points in the
    image between two frames of a track): ``gray`` is the box with half its side around it, scaled
    so that the box side is ``PATCH_BOX_PX``; a frame pixel p is patch pixel (p − origin) × scale."""

    gray: npt.NDArray[np.uint8] = field(repr=False)
    origin: tuple[float, float]
    scale: float

    @staticmethod
    def of(image: ImageRGB, box: Box, margin: float = 0.5) -> FacePatch:
        """The patch of ``box`` in ``image`` (RGB); outside the frame is the border replicated."""
        side = max(box.width, box.height, 1.0)
        scale = PATCH_BOX_PX / side
        cx, cy = box.center
        half = side * (0.5 + margin)
        origin = (cx - half, cy - half)
        size = round(2 * half * scale)
        matrix = np.array([[scale, 0.0, -origin[0] * scale], [0.0, scale, -origin[1] * scale]], np.float32)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        patch = cv2.warpAffine(
            gray, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
        )
        return FacePatch(np.ascontiguousarray(patch, np.uint8), origin, scale)

    def to_patch(self, points: FloatArray) -> npt.NDArray[np.float32]:
        """Frame pixels (N × 2 or more columns: x, y first) → this patch's pixels (N × 2)."""
        out = (points[:, :2].astype(np.float32) - np.array(self.origin, np.float32)) * np.float32(self.scale)
        return np.ascontiguousarray(out, np.float32)


@dataclass(frozen=True, slots=True)
class LivenessFrame:
    """What the liveness of a track needs from one frame: its time (monotonic seconds), the face
    box, the 468 mesh points (frame pixels, as ``Mesh.points``), whether the quality gate passed,
    the model's probability that the face is real (None when the model was not run), and how open
    the eyes are by the iris model (``pipeline/eyes.EyeModel.openness``; None when it was not run:
    the blink cue then falls back to the mesh's eye aspect ratio, which misses most blinks), and the
    grey face patch (``FacePatch.of(image, box)``; None: the parallax cue cannot be measured)."""

    t: float
    box: Box
    points: FloatArray = field(repr=False)
    quality_ok: bool
    model_score: float | None
    eye_openness: float | None = None
    patch: FacePatch | None = None


class PassiveModel(Protocol):
    """A single-frame anti-spoofing model (``pipeline/antispoof.AntiSpoof``)."""

    def real_probability(self, image: ImageRGB, box: Box) -> float:
        """The probability, in [0, 1], that the face in ``box`` of ``image`` (RGB) is real."""
        ...


class LivenessAssessor(Protocol):
    """Liveness of the face in a few images (``pipeline/fusion.LivenessChecker``): one image → the
    model cue alone; several images (frames of one approach, in order, ``interval_s`` apart) → all
    cues. The largest face of each image is the subject; an image without a face raises
    ``NoFaceDetected``. ``challenge``: the challenge that was asked before the first image (its
    motion must be in the images)."""

    def assess(
        self, images: Sequence[ImageRGB], interval_s: float = 0.1, challenge: Challenge | None = None
    ) -> LivenessResult: ...
