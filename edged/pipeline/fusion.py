"""Liveness per track: the model's scores over the good frames plus the motion cues → one
``LivenessResult`` (docs/liveness.md has the rule and the thresholds' meaning).

The rule, in order:
1. any cue that says ``spoof`` (the model, parallax, a challenge answered with another motion) →
   ``spoofface``;
2. a challenge was asked → ``realface`` only when it passed; until then, or when the window ended
   without any motion, ``uncertain``;
3. the model says ``real`` → ``realface`` (with several frames: no cue said spoof, see 1);
4. otherwise ``uncertain``.
So a confident spoof verdict always wins, and ``realface`` never comes without the model or a passed
challenge vouching for it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from pydantic import Field, model_validator

from edged.errors import NoFaceDetected
from edged.pipeline import cues
from edged.pipeline.eyes import EyeModel
from edged.pipeline.liveness import (
    Challenge,
    Cue,
    CueVerdict,
    FacePatch,
    LivenessDecision,
    LivenessFrame,
    LivenessResult,
    PassiveModel,
)
from edged.pipeline.pipeline import FacePipeline
from edged.strict import Strict
from edged.types import ImageRGB

__all__ = [
    "NOT_MEASURED",
    "LivenessChecker",
    "LivenessSettings",
    "LivenessTrack",
    "eye_series",
    "fuse",
    "model_cue",
    "track_cues",
]


NOT_MEASURED = float("nan")
"""A cue's value when it could not be measured (no good frame, no motion, no face patch)."""

CHALLENGE_MAX_FPS = 60.0
"""The frame rate a track's challenge buffer is sized for: it keeps the first frame at or after the
ask and up to ``challenge_window_s`` × this many frames after it (at a higher rate the oldest of
those go, never the first: the turns are measured from its yaw, or from the last gate-passing
frame before the ask when the gate refused it: ``_reference_yaw``)."""


class LivenessSettings(Strict):
    """Thresholds of liveness (docs/liveness.md): each cue's verdict and the track's window."""

    model_real: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="mean model p(real) over the good frames at or above which the model says real",
    )
    model_spoof: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="mean model p(real) over the good frames at or below which the model says spoof",
    )
    min_frames: int = Field(
        1, ge=1, le=100, description="good frames with a model score the model cue needs to say anything"
    )
    recent_frames: int = Field(
        5,
        ge=1,
        le=100,
        description="the newest scored frames whose mean p(real) must agree too: the model says real "
        "only when it and the mean over all good frames are at or above model_real, and spoof when "
        "either is at or below model_spoof (a photo raised in front of a live face on the same track "
        "is not outvoted by the live frames before it)",
    )
    parallax_spoof: float = Field(
        0.045,
        ge=0,
        description="nose points' residual under the flat points' homography, tracked in the image "
        "(inter-ocular distances), at or below which the face moved as one plane: parallax says spoof",
    )
    parallax_real: float = Field(
        0.15,
        ge=0,
        description="nose residual (inter-ocular distances) at or above which the nose stood out of "
        "the plane of the eyes: parallax says real",
    )
    parallax_min_motion_deg: float = Field(
        10.0,
        gt=0,
        le=90,
        description="how far the face turned over the track (the flat points' plane tilt between frames, "
        "tracked in the image, or the mesh's yaw/pitch change; degrees) before parallax says anything",
    )
    blink_closed_fraction: float = Field(
        0.6,
        gt=0,
        lt=1,
        description="eye openness below this fraction of the open-eye reference (the largest of the "
        "0.6 s before) counts as closed; a blink: closed, then back half-way within 0.5 s",
    )
    turn_deg: float = Field(
        15.0,
        gt=0,
        le=90,
        description="yaw change from the first frame after a challenge that counts as a turn",
    )
    challenge_window_s: float = Field(
        3.0, gt=0, le=30, description="how long after a challenge is shown its motion must happen"
    )
    window_frames: int = Field(
        40, ge=2, le=300, description="frames a track keeps (the newest): the cues look at these"
    )

    @model_validator(mode="after")
    def _ordered(self) -> LivenessSettings:
        if self.model_spoof >= self.model_real:
            raise ValueError("model_spoof must be below model_real")
        if self.parallax_spoof >= self.parallax_real:
            raise ValueError("parallax_spoof must be below parallax_real")
        return self


def _ramp(value: float, low: float, high: float) -> float:
    """``value`` mapped linearly from [low, high] to [0, 1], clipped."""
    return min(1.0, max(0.0, (value - low) / (high - low)))


def model_cue(scores: Sequence[float], settings: LivenessSettings) -> Cue:
    """The model's cue: the mean p(real) of the good frames' scores (its value), checked against
    the mean of the newest ``recent_frames`` too: real when both are at or above ``model_real``,
    spoof when either is at or below ``model_spoof``; its score is the lower of the two."""
    if len(scores) < settings.min_frames or not scores:
        return Cue("model", NOT_MEASURED, 0.5, "none")
    mean = float(sum(scores) / len(scores))
    newest = scores[-settings.recent_frames :]
    low = min(mean, float(sum(newest) / len(newest)))
    verdict: CueVerdict = (
        "real" if low >= settings.model_real else "spoof" if low <= settings.model_spoof else "none"
    )
    return Cue("model", round(mean, 4), round(low, 4), verdict)


def track_cues(
    frames: Sequence[LivenessFrame],
    settings: LivenessSettings,
    challenge: tuple[Challenge, float] | None = None,
    now: float | None = None,
    answer: Sequence[LivenessFrame] | None = None,
) -> tuple[Cue, ...]:
    """The motion cues over ``frames`` (in time order): parallax and blink when there are several
    frames, and the challenge's check when one was asked (``(challenge, shown at)``) over ``answer``
    (default: ``frames``; ``LivenessTrack`` gives the frames it kept from the ask on). ``now``: the
    current time (default: the last frame's); the challenge's window is over when ``now`` is past it."""
    found: list[Cue] = []
    # every cue looks only at the frames that pass the quality gate: a mesh on a refused frame (cut
    # by the border, extreme pose, blurred) can be far off, and liveness-with-verify verifies exactly
    # these frames — frames nobody verifies must not vouch for liveness (a blurred live face of one
    # person answering a challenge beside a sharp photo of another)
    reference = _reference_yaw(frames if answer is None else answer, challenge)
    frames = [f for f in frames if f.quality_ok]
    if answer is not None:
        answer = [f for f in answer if f.quality_ok]
    if len(frames) >= 2:
        # a frame without its face patch cannot be tracked in the image
        good = [(f.points, f.patch) for f in frames if f.patch is not None]
        parallax = cues.track_parallax(
            [points for points, _ in good], [patch for _, patch in good], settings.parallax_min_motion_deg
        )
        if parallax is None:
            found.append(Cue("parallax", NOT_MEASURED, 0.5, "none"))
        else:
            verdict: CueVerdict = (
                "spoof"
                if parallax.residual <= settings.parallax_spoof
                else "real"
                if parallax.residual >= settings.parallax_real
                else "none"
            )
            score = _ramp(parallax.residual, settings.parallax_spoof, settings.parallax_real)
            found.append(Cue("parallax", round(parallax.residual, 4), round(score, 4), verdict))
        seen = cues.blinks(eye_series(frames), [f.t for f in frames], settings.blink_closed_fraction)
        found.append(
            Cue("blink", round(seen.deepest, 4), 1.0 if seen.count else 0.5, "real" if seen.count else "none")
        )
    if challenge is not None:
        found.append(
            _challenge_cue(frames if answer is None else answer, settings, challenge, now, reference)
        )
    return tuple(found)


def _reference_yaw(
    frames: Sequence[LivenessFrame], challenge: tuple[Challenge, float] | None
) -> float | None:
    """The yaw a challenge's turns are measured from: the first frame at or after the ask when the
    quality gate passed it; when it refused it (a blur as the turn starts), the last gate-passing
    frame before the ask — not the first gate-passing one after, which may be mid-turn (a genuine
    return to centre would then read as the other turn). None: the first gate-passing frame after
    the ask (``cues.check_challenge``'s default), when no frame before it passed."""
    if challenge is None:
        return None
    shown = challenge[1]
    first = next((f for f in frames if f.t >= shown), None)
    if first is None or first.quality_ok:
        return None
    before = [f for f in frames if f.t < shown and f.quality_ok]
    return cues.yaw_degrees(before[-1].points) if before else None


def eye_series(frames: Sequence[LivenessFrame]) -> list[float]:
    """How open the eyes are on each frame: the iris model's openness when every frame has it,
    else the mesh's eye aspect ratio (one measure per track: the two are not on one scale)."""
    openness = [f.eye_openness for f in frames]
    if all(value is not None for value in openness):
        return [float(value) for value in openness if value is not None]
    return [cues.eye_aspect_ratio(f.points) for f in frames]


def _challenge_cue(
    frames: Sequence[LivenessFrame],
    settings: LivenessSettings,
    challenge: tuple[Challenge, float],
    now: float | None,
    reference: float | None = None,
) -> Cue:
    asked, shown = challenge
    end = shown + settings.challenge_window_s
    inside = [f for f in frames if f.t <= end]
    now = now if now is not None else (frames[-1].t if frames else shown)
    check = cues.check_challenge(
        asked,
        [f.points for f in inside],
        [f.t for f in inside],
        shown,
        now >= end,
        settings.turn_deg,
        settings.blink_closed_fraction,
        eye_series(inside),
        reference,
    )
    value = {"turn_left": check.left, "turn_right": check.right, "blink": float(check.blinks)}[asked]
    if check.status == "passed":
        return Cue("challenge", round(value, 2), 1.0, "real")
    if check.status == "failed":
        # another motion than the asked one is a spoof (a recording of another challenge); no
        # motion at all is no answer: not passed, so never realface, but not proven a spoof
        return Cue("challenge", round(value, 2), 0.0, "spoof" if check.moved else "none")
    return Cue("challenge", round(value, 2), 0.5, "none")


def fuse(
    model_scores: Sequence[float],
    motion_cues: Sequence[Cue],
    settings: LivenessSettings,
    frames: int,
    challenge: Challenge | None = None,
) -> LivenessResult:
    """The decision from the model's scores over the good frames and the other cues' verdicts (the
    module's rule). ``score``: the weakest score among the cues that decided (the model cue's
    score when none decided)."""
    model = model_cue(model_scores, settings)
    every = (model, *motion_cues)
    spoof = tuple(c for c in every if c.verdict == "spoof")
    decision: LivenessDecision
    if spoof:
        decision, deciders = "spoofface", spoof
    else:
        asked = next((c for c in motion_cues if c.name == "challenge"), None)
        real = tuple(c for c in every if c.verdict == "real")
        vouched = asked.verdict == "real" if asked is not None else model.verdict == "real"
        decision, deciders = ("realface", real) if vouched else ("uncertain", ())
    score = min(c.score for c in deciders) if deciders else model.score
    return LivenessResult(
        decision, round(score, 4), every, tuple(c.name for c in deciders), frames, challenge
    )


class LivenessTrack:
    """The liveness of one face track: a bounded window of its frames (the newest
    ``window_frames``), the challenge asked if any, and the result at any time.

    A challenge is checked on its own frames, whatever the frame rate: at the ask the track keeps
    the frames of the blink's open-eye reference time before it (``cues.BLINK_REFERENCE_S``), then
    the first frame at or after the ask (the turns' reference yaw) and the frames after it up to the
    window's end (``CHALLENGE_MAX_FPS``); the window of the passive cues does not limit them."""

    def __init__(self, settings: LivenessSettings) -> None:
        self.settings = settings
        self.frames: deque[LivenessFrame] = deque(maxlen=settings.window_frames)
        self.challenge: tuple[Challenge, float] | None = None
        self._before: tuple[LivenessFrame, ...] = ()
        self._first: LivenessFrame | None = None
        self._after: deque[LivenessFrame] = deque(
            maxlen=math.ceil(settings.challenge_window_s * CHALLENGE_MAX_FPS)
        )

    def add(self, frame: LivenessFrame) -> None:
        """One more frame of the track (frames come in time order)."""
        self.frames.append(frame)
        self._answer(frame)

    def ask(self, challenge: Challenge, t: float) -> None:
        """``challenge`` was shown to the subject at ``t`` (the track's clock)."""
        self.challenge = (challenge, t)
        self._before = tuple(f for f in self.frames if t - cues.BLINK_REFERENCE_S <= f.t < t)
        self._first = None
        self._after.clear()
        for frame in self.frames:
            self._answer(frame)

    def _answer(self, frame: LivenessFrame) -> None:
        """Keep ``frame`` for the challenge's check if it falls in the challenge's window."""
        if self.challenge is None:
            return
        shown = self.challenge[1]
        if not shown <= frame.t <= shown + self.settings.challenge_window_s:
            return
        if self._first is None:
            self._first = frame
        else:
            self._after.append(frame)

    def result(self, now: float) -> LivenessResult:
        """The liveness over the frames in the window at time ``now`` (a challenge: over its own)."""
        frames = list(self.frames)
        scores = [f.model_score for f in frames if f.quality_ok and f.model_score is not None]
        answer = [*self._before, *([self._first] if self._first is not None else []), *self._after]
        motion = track_cues(frames, self.settings, self.challenge, now, answer)
        asked = self.challenge[0] if self.challenge else None
        # the frames the result rests on: those the cues looked at (the door's liveness_min_frames)
        return fuse(scores, motion, self.settings, sum(f.quality_ok for f in frames), asked)


class LivenessChecker:
    """``LivenessAssessor`` over the face pipeline and a passive model: the largest face of each
    image, the model on each frame that passes the quality gate, the cues over the frames."""

    def __init__(
        self,
        pipeline: FacePipeline,
        model: PassiveModel,
        settings: LivenessSettings,
        eyes: EyeModel | None = None,
    ) -> None:
        """``eyes``: the iris model for the blink cue (``EyeModel.load()``); without it the blink
        cue uses the mesh's eye aspect ratio, which misses most blinks (docs/liveness.md)."""
        self.pipeline = pipeline
        self.model = model
        self.settings = settings
        self.eyes = eyes

    def frames(self, images: Sequence[ImageRGB], interval_s: float = 0.1) -> list[LivenessFrame]:
        """One ``LivenessFrame`` per image, ``interval_s`` apart from t = 0 (``NoFaceDetected`` for
        an image without a face)."""
        found = []
        for index, image in enumerate(images):
            faces = self.pipeline.faces(image, embed=False)
            if not faces:
                raise NoFaceDetected(f"no face in image {index + 1} of {len(images)}")
            face = faces[0]
            assert face.mesh is not None  # faces() meshes every face it returns
            good = face.quality.ok
            score = self.model.real_probability(image, face.detection.box) if good else None
            points, box = face.mesh.points, face.detection.box
            openness = self.eyes.openness(image, points) if self.eyes is not None else None
            patch = FacePatch.of(image, box)
            found.append(LivenessFrame(index * interval_s, box, points, good, score, openness, patch))
        return found

    def assess(
        self, images: Sequence[ImageRGB], interval_s: float = 0.1, challenge: Challenge | None = None
    ) -> LivenessResult:
        """One image → the model cue alone; several → every cue (``LivenessAssessor``)."""
        frames = self.frames(images, interval_s)
        scores = [f.model_score for f in frames if f.model_score is not None]
        asked = (challenge, 0.0) if challenge is not None else None
        end = frames[-1].t if frames else 0.0
        # the images are the whole record: a challenge's window is over once they are
        now = end + self.settings.challenge_window_s
        motion = track_cues(frames, self.settings, asked, now) if len(frames) > 1 or asked else ()
        return fuse(scores, motion, self.settings, len(frames), challenge)
