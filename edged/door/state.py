"""The door decider's private working state: one ``TrackState`` per live track, the ``OpenClaim`` of
a verify door, and the ``Verdict`` a decision is built from. Mutable, used by ``Decider`` only (on
the worker thread)."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from edged.door.events import Outcome, Phase, Score, SessionState
from edged.pipeline.liveness import Challenge, LivenessResult
from edged.types import Box

__all__ = ["OpenClaim", "TrackState", "Verdict"]


@dataclass(slots=True)
class OpenClaim:
    """A verify-mode claim, open until ``expires_at`` (monotonic)."""

    person_id: str
    opened_at: float
    expires_at: float


@dataclass(slots=True, eq=False)
class TrackState:
    """The decider's live state of one track (mutable, the decider's alone)."""

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
    # the newest good frames' evidence: (weight, best distance per person, the claimed person's)
    recent: deque[tuple[float, dict[str, float], float | None]] = field(default_factory=deque)
    low_quality_reported: bool = False
    # liveness (a door with liveness on): the latest result, since when the track has been ready but
    # uncertain, the challenge asked and until when (monotonic)
    liveness: LivenessResult | None = None
    uncertain_since: float | None = None
    challenge: Challenge | None = None
    challenge_expires: float = 0.0
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
        self.recent.clear()
        self.low_quality_reported = False
        self.uncertain_since = None
        self.challenge = None
        self.challenge_expires = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the evidence says, before it becomes a ``Decision``."""

    outcome: Outcome
    reasons: tuple[str, ...]
    person_id: str | None
    score: Score | None
