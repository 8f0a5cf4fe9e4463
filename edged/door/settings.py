"""A door's settings (the ``doors:`` section of the configuration, docs/decisions.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edged.door.zone import CaptureZoneSettings
from edged.strict import Strict

__all__ = ["DoorLiveness", "DoorMode", "DoorSettings", "MultiFacePolicy"]

DoorMode = Literal["identify", "verify", "verify_only"]
MultiFacePolicy = Literal["deny", "hold"]
DoorLiveness = Literal["off", "passive", "challenge"]


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
    recent_frames: int = Field(
        5,
        ge=1,
        le=100,
        description="the newest good frames of a track that must match its person too: a track's "
        "identity is the fused distance over all its good frames AND over these (a photo of an enrolled "
        "person held on the track before another face does not lend that face its identity)",
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
    liveness: DoorLiveness = Field(
        "off",
        description="presentation-attack detection before any match decision (docs/decisions.md): off: "
        "none (faces are matched as they are, today's behaviour); passive: the anti-spoofing model and "
        "the motion cues of the track (the root liveness: settings), a spoof is decided spoof, never "
        "granted, and a track still uncertain after liveness_window_s is denied liveness_uncertain; "
        "challenge: like passive, but a track still uncertain after liveness_window_s is asked a random "
        "head turn or blink on the door's challenge topic (within liveness.challenge_window_s): done, "
        "decided as usual; a wrong motion, spoof; no motion, denied challenge_timeout",
    )
    liveness_min_frames: int = Field(
        5,
        ge=1,
        le=100,
        description="liveness passive or challenge: a realface result counts only once the track's "
        "liveness has seen this many frames (until then it is held as uncertain): the motion cues "
        "need a few frames of movement to catch a photo that the model alone takes for a face; at "
        "most the root liveness.window_frames (checked when the config is loaded)",
    )
    liveness_window_s: float = Field(
        3.0,
        gt=0,
        le=60,
        description="liveness passive or challenge: how long a track that is otherwise ready to be "
        "decided (trigger_frames good frames) may stay uncertain before it is denied (passive) or "
        "challenged (challenge)",
    )
