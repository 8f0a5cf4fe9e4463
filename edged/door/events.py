"""What the door decider takes and gives: the matcher's answers for one tracked face
(``MatchRequest`` → ``FaceObservation``), and the frozen events it produces (``Decision``, the
session lifecycle ``SessionEvent`` over ``SessionState`` snapshots, the liveness ``ChallengeEvent``,
all in ``Events``), each with ``to_payload()`` for the ``decision``, ``session`` and ``challenge``
topics (docs/mqtt.md). Pure values, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

from edged.door.settings import DoorMode
from edged.matcher import Match
from edged.pipeline.liveness import Challenge, LivenessResult
from edged.types import Box, Face

__all__ = [
    "CHALLENGE_TIMEOUT",
    "CLAIM_EXPIRED",
    "CLAIM_MISMATCH",
    "LIVENESS_UNCERTAIN",
    "MATCH",
    "MULTIPLE_FACES",
    "NOT_ALLOWED",
    "NO_MATCH",
    "OTHER_PERSON",
    "OUTCOMES",
    "PRESENTATION_ATTACK",
    "SCHEMA",
    "UNKNOWN_CARD",
    "UNKNOWN_PERSON",
    "ChallengeEvent",
    "Decision",
    "Events",
    "FaceObservation",
    "JsonValue",
    "MatchRequest",
    "Outcome",
    "Payload",
    "Phase",
    "Score",
    "SessionEvent",
    "SessionState",
    "liveness_payload",
]

SCHEMA = 1
"""Version of the decision and session payloads."""

Outcome = Literal["granted", "denied", "unknown", "low_quality", "spoof"]
"""A decision's outcome. ``spoof``: the track's liveness is ``spoofface`` (a door with liveness on);
never a person, never granted."""
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
Phase = Literal["collecting", "held", "refractory", "waiting_claim", "decided", "ended"]
"""A session's phase: collecting evidence; held (several faces, ``hold`` policy); refractory (decided
or matched within the refractory period); waiting_claim (verify door, no claim open); decided (final
until the track ends: unknown, multiple_faces); ended."""
SessionType = Literal["new", "update", "end"]

# reason codes (stable: they appear in MQTT events). low_quality decisions carry the gate's own codes
# (edged/pipeline/quality.py: extreme_pose, blurred, …), most frequent first.
MATCH = "match"
NO_MATCH = "no_match"
NOT_ALLOWED = "not_allowed"
CLAIM_MISMATCH = "claim_mismatch"
OTHER_PERSON = "other_person"
MULTIPLE_FACES = "multiple_faces"
CLAIM_EXPIRED = "claim_expired"
UNKNOWN_CARD = "unknown_card"
UNKNOWN_PERSON = "unknown_person"
"""A claim refused before any face is checked (``Decider.refuse_claim``): no person has the card, or
the claimed person is not in the door's group."""
PRESENTATION_ATTACK = "presentation_attack"
"""``spoof``: the track's liveness is ``spoofface`` (the cues that decided are in ``liveness``)."""
LIVENESS_UNCERTAIN = "liveness_uncertain"
"""``denied`` (liveness passive): still ``uncertain`` ``liveness_window_s`` after the track was ready."""
CHALLENGE_TIMEOUT = "challenge_timeout"
"""``denied`` (liveness challenge): no motion at all within the challenge's window (a wrong motion is
``spoof``)."""

FULL_WEIGHT_PX = 100.0
"""A face box side (pixels) at or above which a frame's size factor is 1 (the chip is 150 px)."""
FULL_WEIGHT_SHARPNESS = 100.0
"""Sharpness (variance of the Laplacian on the chip) at or above which the sharpness factor is 1."""
MIN_WEIGHT = 0.05
"""Floor of a frame's weight, so a frame that passed the gate always counts a little."""
CONFIDENCE_STEP = 0.1
"""A session ``update`` is emitted when the fused confidence moves by at least this much."""

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
Payload: TypeAlias = "dict[str, JsonValue]"


def _floats(values: Iterable[float]) -> list[JsonValue]:
    return [float(v) for v in values]


def _number(value: float) -> float | None:
    """``value`` rounded for a payload; None when it is not finite (JSON has no NaN)."""
    return round(float(value), 4) if math.isfinite(value) else None


def liveness_payload(result: LivenessResult) -> Payload:
    """A liveness result in an event: ``decision`` (realface | spoofface | uncertain), ``score``,
    ``cues`` (name, value, score, verdict), ``decided_by`` (the cues whose verdict made the decision),
    ``frames`` and ``challenge`` (the challenge asked, or null)."""
    cues: list[JsonValue] = [
        {"name": c.name, "value": _number(c.value), "score": _number(c.score), "verdict": c.verdict}
        for c in result.cues
    ]
    return {
        "decision": result.decision,
        "score": _number(result.score),
        "cues": cues,
        "decided_by": list(result.decided_by),
        "frames": result.frames,
        "challenge": result.challenge,
    }


# -- inputs --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatchRequest:
    """What the caller computes for a face that passes the gate (the decider never searches):

    - ``k > 0``: ``index(group).search(template, k, max_distance)`` → ``FaceObservation.group``;
    - ``person_id``: ``index(group).search(template, 1, max_distance, owners={person_id})`` →
      ``FaceObservation.claimed``.

    A ``verify_only`` door never asks for a 1:N search (``k == 0``)."""

    group: str
    k: int
    person_id: str | None
    max_distance: float


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """One tracked face in the capture zone, in one frame. ``reasons``: the gate's reason codes
    (empty: passed). ``group`` / ``claimed``: the matcher's answers to the ``MatchRequest`` (None when
    not searched); evidence on a frame that fails the gate is ignored. ``liveness``: the track's
    liveness result so far (``LivenessTrack.result``; None when not assessed: a door with liveness
    on then treats the track as ``uncertain``)."""

    track_id: int
    reasons: tuple[str, ...]
    face_px: float
    detection_score: float = 1.0
    sharpness: float | None = None
    box: Box | None = None
    group: tuple[Match, ...] | None = None
    claimed: tuple[Match, ...] | None = None
    liveness: LivenessResult | None = None

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def weight(self) -> float:
        """This frame's weight in the fusion: size × sharpness × detection score, each ≤ 1."""
        size = min(1.0, max(0.0, self.face_px) / FULL_WEIGHT_PX)
        sharp = 1.0 if self.sharpness is None else min(1.0, max(0.0, self.sharpness) / FULL_WEIGHT_SHARPNESS)
        return max(MIN_WEIGHT, size * sharp * min(1.0, max(0.0, self.detection_score)))

    @classmethod
    def of(
        cls,
        track_id: int,
        face: Face,
        group: Sequence[Match] | None = None,
        claimed: Sequence[Match] | None = None,
        liveness: LivenessResult | None = None,
    ) -> FaceObservation:
        """From the pipeline's ``Face`` (its quality verdict and measures)."""
        measures = face.quality.measures
        box = face.detection.box
        return cls(
            track_id=track_id,
            reasons=face.quality.reasons,
            face_px=measures.get("face_px", max(box.width, box.height)),
            detection_score=face.detection.score,
            sharpness=measures.get("sharpness"),
            box=box,
            group=None if group is None else tuple(group),
            claimed=None if claimed is None else tuple(claimed),
            liveness=liveness,
        )


# -- outputs -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Score:
    """A fused distance and its calibrated confidence (0.5 at the default threshold)."""

    distance: float
    confidence: float

    def to_payload(self) -> Payload:
        return {"distance": round(self.distance, 4), "confidence": round(self.confidence, 4)}


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision at one door (the ``decision`` topic). ``person_id`` is set for granted and denied
    only (in verify modes: the claimed person); ``track_id``/``session_id`` are None for a claim that
    expired without a face. ``decided_at`` is monotonic, ``time`` the wall clock (epoch seconds);
    ``captured_at`` the wall-clock capture time of the frame it was decided on (None when unknown).
    ``liveness``: the track's liveness result when the decision was made (a door with liveness on;
    None otherwise, and for a decision about no track)."""

    event_id: str
    door: str
    mode: DoorMode
    outcome: Outcome
    reasons: tuple[str, ...]
    person_id: str | None
    track_id: int | None
    session_id: str | None
    score: Score | None
    threshold: float
    far: float
    frames: int
    decided_at: float
    time: float
    model: str | None = None
    directory_version: int | None = None
    captured_at: float | None = None
    liveness: LivenessResult | None = None

    def to_payload(self) -> Payload:
        return {
            "schema": SCHEMA,
            "event_id": self.event_id,
            "door": self.door,
            "mode": self.mode,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "person_id": self.person_id,
            "track_id": self.track_id,
            "session_id": self.session_id,
            "score": None if self.score is None else self.score.to_payload(),
            "threshold": round(self.threshold, 4),
            "far": self.far,
            "frames": self.frames,
            "decided_at": round(self.decided_at, 3),
            "time": round(self.time, 3),
            "captured_at": None if self.captured_at is None else round(self.captured_at, 3),
            "model": self.model,
            "directory_version": self.directory_version,
            "liveness": None if self.liveness is None else liveness_payload(self.liveness),
        }


@dataclass(frozen=True, slots=True)
class SessionState:
    """A snapshot of one approach (one track at one door). No candidate identity before a decision:
    ``person_id`` is the person of the track's latest granted/denied decision."""

    session_id: str
    door: str
    track_id: int
    phase: Phase
    started_at: float
    updated_at: float
    frames: int
    good_frames: int
    gate_reasons: tuple[str, ...]
    box: Box | None
    score: Score | None
    outcome: Outcome | None
    person_id: str | None
    decision_id: str | None

    def to_payload(self) -> Payload:
        return {
            "session_id": self.session_id,
            "door": self.door,
            "track_id": self.track_id,
            "phase": self.phase,
            "started_at": round(self.started_at, 3),
            "updated_at": round(self.updated_at, 3),
            "frames": self.frames,
            "good_frames": self.good_frames,
            "gate_reasons": list(self.gate_reasons),
            "box": None if self.box is None else _floats(self.box.as_list()),
            "score": None if self.score is None else self.score.to_payload(),
            "outcome": self.outcome,
            "person_id": self.person_id,
            "decision_id": self.decision_id,
        }

    def differs(self, other: SessionState) -> bool:
        """A material change (worth a session ``update``): phase, decision, or confidence by a step.
        Frame counts, the box and the gate's reasons alone are not (they change every frame)."""
        if (self.phase, self.outcome, self.decision_id, self.person_id) != (
            other.phase,
            other.outcome,
            other.decision_id,
            other.person_id,
        ):
            return True
        if (self.score is None) != (other.score is None):
            return True
        if self.score is not None and other.score is not None:
            return abs(self.score.confidence - other.score.confidence) >= CONFIDENCE_STEP
        return False


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A session lifecycle event (the ``session`` topic), Frigate-style: ``new`` (``before`` is
    ``after``), ``update`` (a material change), ``end`` (the track ended; ``after.phase == "ended"``)."""

    type: SessionType
    event_id: str
    before: SessionState
    after: SessionState

    def to_payload(self) -> Payload:
        return {
            "schema": SCHEMA,
            "type": self.type,
            "event_id": self.event_id,
            "door": self.after.door,
            "session_id": self.after.session_id,
            "before": self.before.to_payload(),
            "after": self.after.to_payload(),
        }


@dataclass(frozen=True, slots=True)
class ChallengeEvent:
    """An active liveness challenge for one session (the ``challenge`` topic, for the terminal's
    display): show ``challenge`` (turn_left | turn_right | blink: the subject turns their head to their
    own left or right, or blinks) until ``expires_at`` (wall clock, epoch seconds; ``time`` + the
    root ``liveness.challenge_window_s``). ``asked_at`` is monotonic: when ``LivenessTrack.ask`` is
    told it was shown."""

    event_id: str
    door: str
    session_id: str
    track_id: int
    challenge: Challenge
    asked_at: float
    time: float
    expires_at: float

    def to_payload(self) -> Payload:
        return {
            "schema": SCHEMA,
            "event_id": self.event_id,
            "door": self.door,
            "session_id": self.session_id,
            "track_id": self.track_id,
            "challenge": self.challenge,
            "time": round(self.time, 3),
            "expires_at": round(self.expires_at, 3),
        }


@dataclass(frozen=True, slots=True)
class Events:
    """What one ``update`` (or ``claim``) produced, in order."""

    decisions: tuple[Decision, ...] = ()
    sessions: tuple[SessionEvent, ...] = ()
    challenges: tuple[ChallengeEvent, ...] = ()
