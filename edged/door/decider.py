"""Door decisions: multi-frame fusion per face track, the trigger level, refractory periods, door modes,
the multi-face policy, and the session lifecycle. Pure computation on an injected clock: no I/O, no
threads, no MQTT, no search (the caller runs the matcher and passes its answers in).

One ``Decider`` per door; ``edged.door.worker.DoorWorker.process`` is the caller. Per frame, for each
tracked face in the door's capture zone: ``request(track_id)`` says what to match (None: do not embed
this face now); a face that passes the gate is embedded and searched as asked, and the answers go into
a ``FaceObservation``; then ``update(observations, ended=…)`` returns the ``Events`` (decisions,
session events and liveness challenges, payloads in ``edged.door.events``).

Liveness (a door with ``liveness`` on): each observation carries its track's ``LivenessResult``, and
``edged.door.liveness.LivenessGate`` is asked before any other decision on the track: ``spoof``,
held while ``uncertain``, denied or challenged after ``liveness_window_s`` (module doc there).

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
from collections.abc import Iterable, Sequence

from edged.clock import Clock
from edged.door.events import (
    CLAIM_EXPIRED,
    CLAIM_MISMATCH,
    MATCH,
    MULTIPLE_FACES,
    NO_MATCH,
    NOT_ALLOWED,
    OTHER_PERSON,
    PRESENTATION_ATTACK,
    UNKNOWN_CARD,
    UNKNOWN_PERSON,
    ChallengeEvent,
    Decision,
    Events,
    FaceObservation,
    MatchRequest,
    Phase,
    Score,
    SessionEvent,
    SessionState,
)
from edged.door.liveness import Gate, LivenessGate
from edged.door.settings import DoorMode, DoorSettings
from edged.door.state import OpenClaim, TrackState, Verdict
from edged.errors import BadArgument
from edged.inference.manifest import Calibration
from edged.pipeline.fusion import LivenessSettings

__all__ = ["SEARCH_K", "UNKNOWN_CLAIM", "Decider"]

SEARCH_K = 3
"""Candidates asked of a 1:N search per frame (a person outside them scores ``cap`` in that frame)."""
UNKNOWN_CLAIM = (UNKNOWN_CARD, UNKNOWN_PERSON)
"""Reasons of a claim refused before any face is checked (``Decider.refuse_claim``)."""


def _new_id() -> str:
    return str(uuid.uuid4())


class Decider:
    """Decisions for one door (module doc). ``model`` (the embedder's identity) is copied into every
    decision; ``update(directory_version=…)`` names the directory the matches came from;
    ``liveness``: the root liveness settings (a challenge's window)."""

    def __init__(
        self,
        door: str,
        settings: DoorSettings,
        calibration: Calibration,
        clock: Clock,
        model: str | None = None,
        liveness: LivenessSettings | None = None,
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
        self._tracks: dict[int, TrackState] = {}
        self._recent: dict[str, float] = {}  # person → monotonic time of their latest decision
        self._claim: OpenClaim | None = None
        window = (liveness or LivenessSettings()).challenge_window_s
        self.liveness = LivenessGate(door, settings, clock, window)
        self._challenges: list[ChallengeEvent] = []  # asked during the current update

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
        self._claim = OpenClaim(person_id, now, now + self.settings.verify_window_s)
        for track in self._tracks.values():
            track.reset()
            track.quiet_until = 0.0

    def refuse_claim(
        self, reason: str, captured_at: float | None = None, directory_version: int | None = None
    ) -> Decision:
        """A claim that cannot be checked — an unknown card, a person not in the door's group — is
        denied at once (``reason``, no person), so the door controller gets an answer instead of
        waiting for a window that was never opened. An open claim is left as it is.
        ``directory_version`` names the directory the card or membership was looked up in."""
        if self.settings.mode == "identify":
            raise BadArgument(f"door {self.door!r} is in identify mode: it takes no claims")
        if reason not in UNKNOWN_CLAIM:
            raise BadArgument(f"a refused claim's reason is one of {UNKNOWN_CLAIM}, not {reason!r}")
        make = _DecisionFactory(self, self.clock.monotonic(), directory_version, captured_at)
        return make(Verdict("denied", (reason,), None, None), None, 0)

    def update(
        self,
        faces: Sequence[FaceObservation],
        ended: Iterable[int] = (),
        directory_version: int | None = None,
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
        self._challenges = []

        claim = self._claim
        if claim is not None and now >= claim.expires_at:
            decisions.append(make(Verdict("denied", (CLAIM_EXPIRED,), claim.person_id, None), None, 0))
            self._claim = claim = None
        self._recent = {p: t for p, t in self._recent.items() if now - t < self.settings.refractory_s}

        created: set[int] = set()
        present: list[TrackState] = []
        for face in faces:
            track = self._tracks.get(face.track_id)
            if track is None:
                track = TrackState(face.track_id, _new_id(), now, now)
                self._tracks[face.track_id] = track
                created.add(track.track_id)
            track.updated_at = now
            track.box = face.box
            track.gate_reasons = face.reasons
            track.liveness = face.liveness
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
        return Events(tuple(decisions), tuple(sessions), tuple(self._challenges))

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

    def _eligible(self, track: TrackState, now: float) -> bool:
        """Whether this track may collect evidence and be decided now."""
        if track.quiet_until > now:
            return False
        if self.settings.mode == "identify":
            return True
        return self._claim is not None

    def _add_evidence(self, track: TrackState, face: FaceObservation) -> None:
        track.frames += 1
        if not face.passed:
            track.failed.update(face.reasons)
            return
        track.passed += 1
        mode = self.settings.mode
        verifying = mode != "identify"
        if (face.group is None and mode != "verify_only") or (face.claimed is None and verifying):
            return  # not matched as requested (the request was not followed): no evidence
        best: dict[str, float] = {}
        for match in face.group or ():
            best[match.owner_id] = min(best.get(match.owner_id, math.inf), match.distance)
        claimed = min(m.distance for m in face.claimed) if verifying and face.claimed else None
        track.add_good(face.weight, best, claimed, self.cap, self.settings.recent_frames)

    def _fused(self, track: TrackState, credit: float) -> Score:
        return self._at(self.cap - credit / track.weight)

    def _at(self, distance: float) -> Score:
        return Score(distance, self.calibration.confidence(distance))

    def _best(self, track: TrackState, exclude: str | None = None) -> tuple[str, Score] | None:
        people = [(c, p) for p, c in track.credit.items() if p != exclude]
        if track.weight <= 0 or not people:
            return None
        credit, person = max(people)
        return person, self._fused(track, credit)

    def _score(self, track: TrackState) -> Score | None:
        if track.weight <= 0:
            return None
        if self.settings.mode != "identify":
            return self._fused(track, track.claim_credit)
        best = self._best(track)
        return None if best is None else best[1]

    def _verdict(self, track: TrackState) -> Verdict:
        allowed = self.settings.allowed
        if self.settings.mode == "identify":
            best = self._best(track)
            if best is None or best[1].distance > self.threshold:
                return Verdict("unknown", (NO_MATCH,), None, None if best is None else best[1])
            person, score = best
            recent = track.recent_distance(person, self.cap)
            if recent > self.threshold:
                # the track's face now is not the one that matched before it (a photo held up, then
                # another face on the same track): nobody is identified, at the newest frames' score
                return Verdict("unknown", (NO_MATCH,), None, self._at(recent))
            if allowed is not None and person not in allowed:
                return Verdict("denied", (NOT_ALLOWED,), person, score)
            return Verdict("granted", (MATCH,), person, score)
        assert self._claim is not None
        claimed = self._claim.person_id
        score = self._fused(track, track.claim_credit)
        score = max(score, self._at(track.recent_distance(None, self.cap)), key=lambda s: s.distance)
        match = score.distance <= self.threshold
        other = self._best(track, exclude=claimed) if self.settings.mode == "verify" else None
        someone_else = other is not None and (
            other[1].distance <= self.threshold and other[1].distance < score.distance
        )
        if not match or someone_else:
            reasons = ((CLAIM_MISMATCH,) if not match else ()) + ((OTHER_PERSON,) if someone_else else ())
            return Verdict("denied", reasons, claimed, score)
        if allowed is not None and claimed not in allowed:
            return Verdict("denied", (NOT_ALLOWED,), claimed, score)
        return Verdict("granted", (MATCH,), claimed, score)

    def _decide(
        self, track: TrackState, now: float, make: _DecisionFactory, suppressed: set[int]
    ) -> Decision | None:
        settings = self.settings
        if self.liveness.on:
            gate = self.liveness.check(track, now, ready=track.good >= settings.trigger_frames)
            if gate.action != "pass":
                return self._gated(track, gate, make)
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
            verdict = Verdict("low_quality", reasons, None, None)
            return self._record(track, make(verdict, track, track.frames), None)
        return None

    def _gated(self, track: TrackState, gate: Gate, make: _DecisionFactory) -> Decision | None:
        """A liveness gate that stops the usual decision: held (a challenge asked), or a final
        ``spoof`` / ``denied`` for the track (verify modes: the claim's one answer)."""
        if gate.asked is not None:
            self._challenges.append(gate.asked)
        if gate.action in ("hold", "ask"):
            return None
        if gate.action == "spoof":
            verdict = Verdict("spoof", (PRESENTATION_ATTACK,), None, None)
        else:
            assert gate.reason is not None
            claimed = None if self._claim is None else self._claim.person_id
            verdict = Verdict("denied", (gate.reason,), claimed, self._score(track))
        if self.settings.mode == "identify":
            return self._record(track, make(verdict, track, track.good), math.inf)
        self._claim = None
        return self._record(track, make(verdict, track, track.good), 0.0)

    def _deny_crowd(self, eligible: list[TrackState], make: _DecisionFactory) -> list[Decision]:
        """``deny`` policy with several faces present: identify denies each eligible session; a verify
        door denies the open claim once (on the first face) and marks every face present."""
        if not eligible:
            return []
        if self.settings.mode == "identify":
            return [
                self._record(
                    t, make(Verdict("denied", (MULTIPLE_FACES,), None, self._score(t)), t, t.good), math.inf
                )
                for t in eligible
            ]
        assert self._claim is not None
        first = eligible[0]
        verdict = Verdict("denied", (MULTIPLE_FACES,), self._claim.person_id, self._score(first))
        decision = make(verdict, first, first.good)
        for track in eligible:
            self._record(track, decision, 0.0)
        self._claim = None
        return [decision]

    @staticmethod
    def _record(track: TrackState, decision: Decision, quiet_until: float | None) -> Decision:
        """Note ``decision`` on the track; ``quiet_until`` None keeps the track collecting."""
        track.outcome = decision.outcome
        track.decision_id = decision.event_id
        track.decision_score = decision.score
        if decision.outcome in ("granted", "denied"):
            track.person_id = decision.person_id
        if quiet_until is not None:
            track.quiet_until = quiet_until
        return decision

    def _phase(self, track: TrackState, now: float, held: bool, suppressed: bool) -> Phase:
        if track.quiet_until == math.inf:
            return "decided"
        if track.quiet_until > now or suppressed:
            return "refractory"
        if self.settings.mode != "identify" and self._claim is None:
            return "waiting_claim"
        return "held" if held and self.settings.multi_face == "hold" else "collecting"

    def _snapshot(self, track: TrackState) -> SessionState:
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
        self, decider: Decider, now: float, directory_version: int | None, captured_at: float | None = None
    ) -> None:
        self.decider = decider
        self.now = now
        self.time = decider.clock.now()
        self.directory_version = directory_version
        self.captured_at = captured_at

    def __call__(self, verdict: Verdict, track: TrackState | None, frames: int) -> Decision:
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
            liveness=track.liveness if track is not None and d.liveness.on else None,
        )
