"""Liveness at the door: what a track's liveness result lets the door's decider do (docs/decisions.md).

The worker (``edged.door.worker``) keeps one ``LivenessTrack`` per track and passes its current
``LivenessResult`` on every ``FaceObservation``; the decider keeps the latest on its ``TrackState``
and asks ``LivenessGate.check`` before any other decision on the track:

- ``spoofface`` → ``spoof`` (reason ``presentation_attack``), whenever the track may be decided, even
  before ``trigger_frames``: final for the track (verify modes: the claim's answer);
- ``realface`` → the decision goes on as without liveness (matched, granted, denied, unknown), once
  the result rests on ``liveness_min_frames`` frames of the track (before, it counts as
  ``uncertain``: a photo moved in front of the camera may pass the model on its first frames, before
  the parallax cue has seen enough motion to call it flat);
- ``uncertain`` (or no result yet) while the track is not yet ready (fewer than ``trigger_frames``
  good frames) → as without liveness (nothing is decided, ``low_quality`` may be);
- ``uncertain`` on a ready track → held (the match evidence keeps accumulating) for up to
  ``liveness_window_s``; then ``passive`` doors deny (``liveness_uncertain``) and ``challenge`` doors
  ask a random challenge (``secrets.choice``: turn_left | turn_right | blink), held while the
  ``LivenessTrack`` checks it (``liveness.challenge_window_s``, the root settings): ``realface`` (the
  motion was done) goes on as usual; ``spoofface`` is ``spoof`` (another motion than the asked one:
  a recording of another challenge); still ``uncertain`` a moment (``CHALLENGE_GRACE_S``) after the
  window (no motion at all: the track's challenge cue says nothing) is denied ``challenge_timeout``
  (no evidence of an attack: the subject may not have seen the display).

Pure: the time is the decider's monotonic clock; the randomness is ``secrets``.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Literal

from edged.clock import Clock
from edged.door.events import CHALLENGE_TIMEOUT, LIVENESS_UNCERTAIN, ChallengeEvent
from edged.door.settings import DoorSettings
from edged.door.state import TrackState
from edged.pipeline.liveness import CHALLENGES

__all__ = ["CHALLENGE_GRACE_S", "Gate", "LivenessGate"]

CHALLENGE_GRACE_S = 0.5
"""After a challenge's window, how long an ``uncertain`` result is still waited for (the worker's
frame time and the decider's may differ by a moment)."""

GateAction = Literal["pass", "hold", "ask", "spoof", "deny"]


@dataclass(frozen=True, slots=True)
class Gate:
    """What the liveness lets the decider do with a track now: ``pass`` (decide as without liveness),
    ``hold`` (decide nothing), ``ask`` (decide nothing; the challenge ``asked`` is to be shown),
    ``spoof``, or ``deny`` (for ``reason``)."""

    action: GateAction
    reason: str | None = None
    asked: ChallengeEvent | None = None


PASS = Gate("pass")
HOLD = Gate("hold")
SPOOF = Gate("spoof")


class LivenessGate:
    """The liveness rules of one door (module doc)."""

    def __init__(self, door: str, settings: DoorSettings, clock: Clock, challenge_s: float) -> None:
        self.door = door
        self.settings = settings
        self.clock = clock
        self.challenge_s = challenge_s
        """The challenge's window (``LivenessSettings.challenge_window_s``)."""

    @property
    def on(self) -> bool:
        return self.settings.liveness != "off"

    def check(self, track: TrackState, now: float, ready: bool) -> Gate:
        """The gate for ``track`` now (``ready``: it has ``trigger_frames`` good frames). Notes on the
        track since when it has been held and the challenge asked."""
        result = track.liveness
        decision = "uncertain" if result is None else result.decision
        if decision == "spoofface":
            return SPOOF
        settings = self.settings
        if decision == "realface" and result is not None and result.frames < settings.liveness_min_frames:
            decision = "uncertain"  # too early to trust
        if decision == "realface" or not ready:
            return PASS
        if track.challenge is not None:
            late = now >= track.challenge_expires + CHALLENGE_GRACE_S
            return Gate("deny", CHALLENGE_TIMEOUT) if late else HOLD
        if track.uncertain_since is None:
            track.uncertain_since = now
        if now - track.uncertain_since < settings.liveness_window_s:
            return HOLD
        if settings.liveness == "passive":
            return Gate("deny", LIVENESS_UNCERTAIN)
        challenge = secrets.choice(CHALLENGES)
        track.challenge = challenge
        track.challenge_expires = now + self.challenge_s
        time = self.clock.now()
        event = ChallengeEvent(
            event_id=str(uuid.uuid4()),
            door=self.door,
            session_id=track.session_id,
            track_id=track.track_id,
            challenge=challenge,
            asked_at=now,
            time=time,
            expires_at=time + self.challenge_s,
        )
        return Gate("ask", asked=event)
