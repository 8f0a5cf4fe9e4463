"""Door decisions: multi-frame fusion per face track, the trigger level, refractory periods, door modes,
the multi-face policy, and the session lifecycle. Pure computation on an injected clock: no I/O, no
threads, no MQTT, no search (the caller runs the matcher and passes its answers in).

One ``Decider`` per door. Per frame the worker does::

    tracks = tracker.update([f.detection.box for f in faces], now)
    observations = []
    for track in tracks:
        face = faces[track.index]
        request = decider.request(track.track_id)  # None: nothing to match for this face now
        group = claimed = None
        if request is not None and face.quality.ok:  # (+ liveness, once it exists)
            template = pipeline.embed(image, face).embedding
            index = indexes[request.group]
            if request.k:  # never for a verify_only door
                group = tuple(index.search(template, request.k, request.max_distance))
            if request.person_id is not None:
                claimed = tuple(index.search(template, 1, request.max_distance, owners={request.person_id}))
        observations.append(FaceObservation.of(track.track_id, face, group=group, claimed=claimed))
    events = decider.update(observations, ended=[t.track_id for t in tracker.ended])
    # publish events.decisions → …/decision and events.sessions → …/session (to_payload())

Fusion (``docs/decisions.md``): every frame that passes the gate adds weight ``w`` (face size ×
sharpness × detection score, each capped at 1) and, per candidate person, the credit
``w·(cap − distance)``, where ``cap`` is the search's ``max_distance`` (the loosest calibrated
threshold); a person absent from a frame's answer scores ``cap`` there. The fused distance of a person
is ``cap − credit / Σw``: the weighted mean of per-frame distances, absent frames counted at ``cap``.
Nothing is decided before ``trigger_frames`` such frames. The calibrated single-pair threshold for the
door's FAR is applied to the fused distance (conservative: averaging correlated frames narrows the
impostor distribution, it does not widen it).

Not thread-safe: call ``claim``, ``request`` and ``update`` from the worker thread only (queue claims
from the network thread).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, get_args

from pydantic import Field, model_validator

from edged.clock import Clock
from edged.errors import BadArgument
from edged.inference.manifest import Calibration
from edged.matcher import Match
from edged.strict import Strict
from edged.tracker import CaptureZone
from edged.types import Box, Face

__all__ = [
    "CLAIM_EXPIRED",
    "CLAIM_MISMATCH",
    "MATCH",
    "MULTIPLE_FACES",
    "NOT_ALLOWED",
    "NO_MATCH",
    "OTHER_PERSON",
    "OUTCOMES",
    "SCHEMA",
    "CaptureZoneSettings",
    "Decider",
    "Decision",
    "DoorMode",
    "DoorSettings",
    "Events",
    "FaceObservation",
    "MatchRequest",
    "MultiFacePolicy",
    "Outcome",
    "Phase",
    "Score",
    "SessionEvent",
    "SessionState",
]

SCHEMA = 1
"""Version of the decision and session payloads."""

Outcome = Literal["granted", "denied", "unknown", "low_quality"]
"""A decision's outcome. Liveness will add ``spoof`` (a gate before matching, like quality)."""
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
DoorMode = Literal["identify", "verify", "verify_only"]
MultiFacePolicy = Literal["deny", "hold"]
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
UNKNOWN_CLAIM = ("unknown_card", "unknown_person")
"""Reasons of a claim refused before any face is checked (``Decider.refuse_claim``)."""

SEARCH_K = 3
"""Candidates asked of a 1:N search per frame (a person outside them scores ``cap`` in that frame)."""
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


def _new_id() -> str:
    return str(uuid.uuid4())


def _floats(values: Iterable[float]) -> list[JsonValue]:
    return [float(v) for v in values]


# -- settings ------------------------------------------------------------------------------------------


class CaptureZoneSettings(Strict):
    """The capture zone (region of interest): faces whose box centre is outside are ignored."""

    box: tuple[float, float, float, float] = Field(
        description="x1, y1, x2, y2: the zone's top-left and bottom-right corners"
    )
    units: Literal["fraction", "pixels"] = Field(
        "fraction", description="fraction: of the frame's width/height (0..1, any resolution); pixels"
    )

    @model_validator(mode="after")
    def _valid(self) -> CaptureZoneSettings:
        try:
            self.zone()
        except BadArgument as exc:
            raise ValueError(exc.message) from None
        return self

    def zone(self) -> CaptureZone:
        return CaptureZone(Box(*self.box), normalized=self.units == "fraction")


class DoorSettings(Strict):
    """One door: how faces at it are matched and when a decision is made."""

    mode: DoorMode = Field(
        "identify",
        description="identify: 1:N against the group; verify: a claim (person or card) opens a window and "
        "the face must match the claimed person (and nobody else better); verify_only: like verify, but "
        "never a 1:N search (privacy mode)",
    )
    group: str = Field(min_length=1, description="person group whose templates are matched at this door")
    far: float = Field(
        1e-4,
        gt=0,
        lt=1,
        description="target false-accept rate per comparison (≥ the smallest calibrated FAR, 1e-5); "
        "1:N multiplies it by the group size, hence stricter than 1:1 verify's 1e-3",
    )
    trigger_frames: int = Field(
        3, ge=1, le=100, description="frames that pass the quality gate before any decision on a track"
    )
    low_quality_frames: int = Field(
        10, ge=1, le=1000, description="frames of a track, none passing the gate, before low_quality"
    )
    refractory_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="after a decision, the same person (or track) at this door is not decided again "
        "for this long (identify)",
    )
    unknown_retry_s: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="identify: a track decided unknown is matched again on fresh evidence (the next "
        "trigger_frames good frames) this long after each try, so a person recognised only once closer "
        "is still granted; unknown is published once per track; 0: an unknown track is never retried",
    )
    verify_window_s: float = Field(
        10.0, gt=0, le=300, description="how long a claim stays open for a matching face (verify modes)"
    )
    multi_face: MultiFacePolicy = Field(
        "hold",
        description="more than one face in the capture zone: hold (decide nothing while they are) or "
        "deny (deny the sessions present, reason multiple_faces)",
    )
    allowed: frozenset[str] | None = Field(
        None, description="person IDs allowed at this door (others are denied, not_allowed); null: all"
    )
    capture_zone: CaptureZoneSettings | None = Field(
        None, description="region of interest of the door's camera; null: the whole frame"
    )


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
    not searched); evidence on a frame that fails the gate is ignored."""

    track_id: int
    reasons: tuple[str, ...]
    face_px: float
    detection_score: float = 1.0
    sharpness: float | None = None
    box: Box | None = None
    group: tuple[Match, ...] | None = None
    claimed: tuple[Match, ...] | None = None

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
    ``captured_at`` the wall-clock capture time of the frame it was decided on (None when unknown)."""

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
    directory_version: str | None = None
    captured_at: float | None = None

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
class Events:
    """What one ``update`` (or ``claim``) produced, in order."""

    decisions: tuple[Decision, ...] = ()
    sessions: tuple[SessionEvent, ...] = ()


# -- state ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Claim:
    person_id: str
    opened_at: float
    expires_at: float


@dataclass(slots=True, eq=False)
class _Track:
    """The decider's live state of one track (mutable, private)."""

    track_id: int
    session_id: str
    started_at: float
    updated_at: float
    box: Box | None = None
    gate_reasons: tuple[str, ...] = ()
    # evidence since the last reset (a decision, a claim)
    frames: int = 0
    passed: int = 0
    good: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    weight: float = 0.0
    credit: dict[str, float] = field(default_factory=dict)
    claim_credit: float = 0.0
    low_quality_reported: bool = False
    # decisions
    quiet_until: float = 0.0
    outcome: Outcome | None = None
    person_id: str | None = None
    decision_id: str | None = None
    decision_score: Score | None = None
    phase: Phase = "collecting"
    published: SessionState | None = None

    def reset(self) -> None:
        self.frames = self.passed = self.good = 0
        self.failed = Counter()
        self.weight = 0.0
        self.credit = {}
        self.claim_credit = 0.0
        self.low_quality_reported = False


@dataclass(frozen=True, slots=True)
class _Verdict:
    outcome: Outcome
    reasons: tuple[str, ...]
    person_id: str | None
    score: Score | None


class Decider:
    """Decisions for one door (module doc). ``model`` (the embedder's identity) is copied into every
    decision; ``update(directory_version=…)`` names the directory the matches came from."""

    def __init__(
        self,
        door: str,
        settings: DoorSettings,
        calibration: Calibration,
        clock: Clock,
        model: str | None = None,
    ) -> None:
        if not door:
            raise BadArgument("a door needs a non-empty name")
        self.door = door
        self.settings = settings
        self.calibration = calibration
        self.clock = clock
        self.model = model
        self.far = settings.far
        self.threshold = calibration.threshold_for(settings.far)
        self.cap = max([self.threshold, *(t.threshold for t in calibration.thresholds)])
        """Distance cap: the search's max_distance and the score of a person absent from a frame."""
        self._tracks: dict[int, _Track] = {}
        self._recent: dict[str, float] = {}  # person → monotonic time of their latest decision
        self._claim: _Claim | None = None

    # -- queries -------------------------------------------------------------------------------------

    @property
    def mode(self) -> DoorMode:
        return self.settings.mode

    @property
    def claim_open(self) -> bool:
        return self._claim is not None and self.clock.monotonic() < self._claim.expires_at

    def sessions(self) -> list[SessionState]:
        """A snapshot of every live session."""
        return [self._snapshot(t) for t in self._tracks.values()]

    def request(self, track_id: int) -> MatchRequest | None:
        """What to match for this track's face in the current frame (when it passes the gate), or None:
        nothing can be decided for it now (decided, refractory, or no claim open in a verify mode), so
        do not embed it. A verify_only door never asks for a 1:N search."""
        now = self.clock.monotonic()
        track = self._tracks.get(track_id)
        if track is not None and track.quiet_until > now:
            return None
        mode = self.settings.mode
        if mode == "identify":
            return MatchRequest(self.settings.group, SEARCH_K, None, self.cap)
        claim = self._claim
        if claim is None or now >= claim.expires_at:
            return None
        k = SEARCH_K if mode == "verify" else 0
        return MatchRequest(self.settings.group, k, claim.person_id, self.cap)

    # -- inputs --------------------------------------------------------------------------------------

    def claim(self, person_id: str) -> None:
        """A claim (verify modes): open a window of ``verify_window_s`` in which a face matching
        ``person_id`` is granted. A new claim replaces an open one; every track collects anew."""
        if self.settings.mode == "identify":
            raise BadArgument(f"door {self.door!r} is in identify mode: it takes no claims")
        if not isinstance(person_id, str) or not person_id:
            raise BadArgument(f"a claim needs a non-empty person ID, not {person_id!r}")
        now = self.clock.monotonic()
        self._claim = _Claim(person_id, now, now + self.settings.verify_window_s)
        for track in self._tracks.values():
            track.reset()
            track.quiet_until = 0.0

    def refuse_claim(self, reason: str, captured_at: float | None = None) -> Decision:
        """A claim that cannot be checked — an unknown card, a person not in the door's group — is
        denied at once (``reason``, no person), so the door controller gets an answer instead of
        waiting for a window that was never opened. An open claim is left as it is."""
        if self.settings.mode == "identify":
            raise BadArgument(f"door {self.door!r} is in identify mode: it takes no claims")
        if reason not in UNKNOWN_CLAIM:
            raise BadArgument(f"a refused claim's reason is one of {UNKNOWN_CLAIM}, not {reason!r}")
        make = _DecisionFactory(self, self.clock.monotonic(), None, captured_at)
        return make(_Verdict("denied", (reason,), None, None), None, 0)

    def update(
        self,
        faces: Sequence[FaceObservation],
        ended: Iterable[int] = (),
        directory_version: str | None = None,
        captured_at: float | None = None,
    ) -> Events:
        """One frame: ``faces`` are the tracked faces in the capture zone (one per track), ``ended``
        the IDs of tracks that ended. Call it every frame, with no faces too (claims expire here).
        ``captured_at`` (wall clock, epoch seconds) is the frame's capture time, copied into every
        decision made on it."""
        now = self.clock.monotonic()
        ended_ids = list(dict.fromkeys(ended))
        self._check(faces, ended_ids)
        decisions: list[Decision] = []
        make = _DecisionFactory(self, now, directory_version, captured_at)

        claim = self._claim
        if claim is not None and now >= claim.expires_at:
            decisions.append(make(_Verdict("denied", (CLAIM_EXPIRED,), claim.person_id, None), None, 0))
            self._claim = claim = None
        self._recent = {p: t for p, t in self._recent.items() if now - t < self.settings.refractory_s}

        created: set[int] = set()
        present: list[_Track] = []
        for face in faces:
            track = self._tracks.get(face.track_id)
            if track is None:
                track = _Track(face.track_id, _new_id(), now, now)
                self._tracks[face.track_id] = track
                created.add(track.track_id)
            track.updated_at = now
            track.box = face.box
            track.gate_reasons = face.reasons
            if self._eligible(track, now):
                self._add_evidence(track, face)
            present.append(track)

        suppressed: set[int] = set()
        crowded = len(present) > 1
        eligible = [t for t in present if self._eligible(t, now)]
        if crowded and self.settings.multi_face == "deny":
            decisions += self._deny_crowd(eligible, make)
        elif not crowded:
            for track in eligible:
                decision = self._decide(track, now, make, suppressed)
                if decision is not None:
                    decisions.append(decision)

        sessions: list[SessionEvent] = []
        held = {t.track_id for t in present} if crowded else set()
        for track in self._tracks.values():
            if track.track_id in ended_ids:
                continue
            track.phase = self._phase(track, now, track.track_id in held, track.track_id in suppressed)
            state = self._snapshot(track)
            if track.track_id in created:
                sessions.append(SessionEvent("new", _new_id(), state, state))
            elif track.published is not None and state.differs(track.published):
                sessions.append(SessionEvent("update", _new_id(), track.published, state))
            else:
                continue
            track.published = state
        for track_id in ended_ids:
            track = self._tracks.pop(track_id, None)
            if track is None:
                continue
            track.phase = "ended"
            track.updated_at = now
            after = self._snapshot(track)
            sessions.append(SessionEvent("end", _new_id(), track.published or after, after))
        return Events(tuple(decisions), tuple(sessions))

    # -- internals -----------------------------------------------------------------------------------

    def _check(self, faces: Sequence[FaceObservation], ended: list[int]) -> None:
        ids = [f.track_id for f in faces]
        if len(set(ids)) != len(ids):
            raise BadArgument(f"one observation per track and frame, got track IDs {ids}")
        both = set(ids).intersection(ended)
        if both:
            raise BadArgument(f"tracks {sorted(both)} are both observed and ended in one frame")
        claim = self._claim
        for face in faces:
            if self.settings.mode == "verify_only" and face.group is not None:
                raise BadArgument(
                    f"door {self.door!r} is verify_only: it never takes a 1:N search result "
                    "(match the claimed person only)"
                )
            if face.claimed is not None and claim is not None:  # without a claim it is ignored
                wrong = {m.owner_id for m in face.claimed} - {claim.person_id}
                if wrong:
                    raise BadArgument(
                        f"claimed matches for {sorted(wrong)}, but the open claim is not theirs"
                    )

    def _eligible(self, track: _Track, now: float) -> bool:
        """Whether this track may collect evidence and be decided now."""
        if track.quiet_until > now:
            return False
        if self.settings.mode == "identify":
            return True
        return self._claim is not None

    def _add_evidence(self, track: _Track, face: FaceObservation) -> None:
        track.frames += 1
        if not face.passed:
            track.failed.update(face.reasons)
            return
        track.passed += 1
        mode = self.settings.mode
        verifying = mode != "identify"
        if (face.group is None and mode != "verify_only") or (face.claimed is None and verifying):
            return  # not matched as requested (the request was not followed): no evidence
        w = face.weight
        track.good += 1
        track.weight += w
        best: dict[str, float] = {}
        for match in face.group or ():
            best[match.owner_id] = min(best.get(match.owner_id, math.inf), match.distance)
        for person, d in best.items():
            track.credit[person] = track.credit.get(person, 0.0) + w * (self.cap - min(d, self.cap))
        if verifying and face.claimed:
            d = min(m.distance for m in face.claimed)
            track.claim_credit += w * (self.cap - min(d, self.cap))

    def _fused(self, track: _Track, credit: float) -> Score:
        distance = self.cap - credit / track.weight
        return Score(distance, self.calibration.confidence(distance))

    def _best(self, track: _Track, exclude: str | None = None) -> tuple[str, Score] | None:
        people = [(c, p) for p, c in track.credit.items() if p != exclude]
        if track.weight <= 0 or not people:
            return None
        credit, person = max(people)
        return person, self._fused(track, credit)

    def _score(self, track: _Track) -> Score | None:
        if track.weight <= 0:
            return None
        if self.settings.mode != "identify":
            return self._fused(track, track.claim_credit)
        best = self._best(track)
        return None if best is None else best[1]

    def _verdict(self, track: _Track) -> _Verdict:
        allowed = self.settings.allowed
        if self.settings.mode == "identify":
            best = self._best(track)
            if best is None or best[1].distance > self.threshold:
                return _Verdict("unknown", (NO_MATCH,), None, None if best is None else best[1])
            person, score = best
            if allowed is not None and person not in allowed:
                return _Verdict("denied", (NOT_ALLOWED,), person, score)
            return _Verdict("granted", (MATCH,), person, score)
        assert self._claim is not None
        claimed = self._claim.person_id
        score = self._fused(track, track.claim_credit)
        match = score.distance <= self.threshold
        other = self._best(track, exclude=claimed) if self.settings.mode == "verify" else None
        someone_else = other is not None and (
            other[1].distance <= self.threshold and other[1].distance < score.distance
        )
        if not match or someone_else:
            reasons = ((CLAIM_MISMATCH,) if not match else ()) + ((OTHER_PERSON,) if someone_else else ())
            return _Verdict("denied", reasons, claimed, score)
        if allowed is not None and claimed not in allowed:
            return _Verdict("denied", (NOT_ALLOWED,), claimed, score)
        return _Verdict("granted", (MATCH,), claimed, score)

    def _decide(
        self, track: _Track, now: float, make: _DecisionFactory, suppressed: set[int]
    ) -> Decision | None:
        settings = self.settings
        if track.good >= settings.trigger_frames:
            verdict = self._verdict(track)
            person = verdict.person_id
            if settings.mode == "identify":
                if verdict.outcome == "unknown":
                    if settings.unknown_retry_s <= 0:
                        return self._record(track, make(verdict, track, track.good), math.inf)
                    retried, good = track.outcome == "unknown", track.good
                    track.reset()
                    track.low_quality_reported = True  # it was seen well enough to be matched
                    track.quiet_until = now + settings.unknown_retry_s
                    if retried:  # still nobody: said once already
                        track.decision_score = verdict.score
                        return None
                    return self._record(track, make(verdict, track, good), None)
                assert person is not None
                last = self._recent.get(person)
                if last is not None and now - last < settings.refractory_s:
                    suppressed.add(track.track_id)
                    return None
                self._recent[person] = now
                decision = self._record(track, make(verdict, track, track.good), now + settings.refractory_s)
                track.reset()
                return decision
            self._claim = None  # verify modes: one access decision per claim
            return self._record(track, make(verdict, track, track.good), 0.0)
        if (
            track.passed == 0
            and track.frames >= settings.low_quality_frames
            and not track.low_quality_reported
        ):
            track.low_quality_reported = True
            reasons = tuple(reason for reason, _ in track.failed.most_common())
            verdict = _Verdict("low_quality", reasons, None, None)
            return self._record(track, make(verdict, track, track.frames), None)
        return None

    def _deny_crowd(self, eligible: list[_Track], make: _DecisionFactory) -> list[Decision]:
        """``deny`` policy with several faces present: identify denies each eligible session; a verify
        door denies the open claim once (on the first face) and marks every face present."""
        if not eligible:
            return []
        if self.settings.mode == "identify":
            return [
                self._record(
                    t, make(_Verdict("denied", (MULTIPLE_FACES,), None, self._score(t)), t, t.good), math.inf
                )
                for t in eligible
            ]
        assert self._claim is not None
        first = eligible[0]
        verdict = _Verdict("denied", (MULTIPLE_FACES,), self._claim.person_id, self._score(first))
        decision = make(verdict, first, first.good)
        for track in eligible:
            self._record(track, decision, 0.0)
        self._claim = None
        return [decision]

    @staticmethod
    def _record(track: _Track, decision: Decision, quiet_until: float | None) -> Decision:
        """Note ``decision`` on the track; ``quiet_until`` None keeps the track collecting."""
        track.outcome = decision.outcome
        track.decision_id = decision.event_id
        track.decision_score = decision.score
        if decision.outcome in ("granted", "denied"):
            track.person_id = decision.person_id
        if quiet_until is not None:
            track.quiet_until = quiet_until
        return decision

    def _phase(self, track: _Track, now: float, held: bool, suppressed: bool) -> Phase:
        if track.quiet_until == math.inf:
            return "decided"
        if track.quiet_until > now or suppressed:
            return "refractory"
        if self.settings.mode != "identify" and self._claim is None:
            return "waiting_claim"
        return "held" if held and self.settings.multi_face == "hold" else "collecting"

    def _snapshot(self, track: _Track) -> SessionState:
        score = self._score(track)
        return SessionState(
            session_id=track.session_id,
            door=self.door,
            track_id=track.track_id,
            phase=track.phase,
            started_at=track.started_at,
            updated_at=track.updated_at,
            frames=track.frames,
            good_frames=track.good,
            gate_reasons=track.gate_reasons,
            box=track.box,
            score=score if score is not None else track.decision_score,
            outcome=track.outcome,
            person_id=track.person_id,
            decision_id=track.decision_id,
        )


class _DecisionFactory:
    """Builds the decisions of one ``update`` (shared time, versions and door facts)."""

    def __init__(
        self, decider: Decider, now: float, directory_version: str | None, captured_at: float | None = None
    ) -> None:
        self.decider = decider
        self.now = now
        self.time = decider.clock.now()
        self.directory_version = directory_version
        self.captured_at = captured_at

    def __call__(self, verdict: _Verdict, track: _Track | None, frames: int) -> Decision:
        d = self.decider
        return Decision(
            event_id=_new_id(),
            door=d.door,
            mode=d.settings.mode,
            outcome=verdict.outcome,
            reasons=verdict.reasons,
            person_id=verdict.person_id if verdict.outcome in ("granted", "denied") else None,
            track_id=None if track is None else track.track_id,
            session_id=None if track is None else track.session_id,
            score=verdict.score,
            threshold=d.threshold,
            far=d.far,
            frames=frames,
            decided_at=self.now,
            time=self.time,
            model=d.model,
            directory_version=self.directory_version,
            captured_at=self.captured_at,
        )
