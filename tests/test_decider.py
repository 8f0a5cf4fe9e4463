"""The door decider: trigger level, fusion, low quality, unknown, granted, denied, refractory periods,
verify windows, the verify_only privacy contract, the multi-face policy, liveness (spoof, uncertain held,
denied or challenged), sessions and payloads.

Pure and table-driven on a ManualClock with a fixed calibration (threshold 0.47 at FAR 1e-4, the loosest
calibrated threshold 0.61 is the distance cap). One end-to-end test runs the real pipeline, tracker,
matcher and decider on frames of scikit-image's public-domain portraits."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from skimage import data

from edged.clock import ManualClock
from edged.door.decider import Decider
from edged.door.events import OUTCOMES, ChallengeEvent, Decision, Events, FaceObservation, SessionEvent
from edged.door.liveness import CHALLENGE_GRACE_S
from edged.door.settings import DoorSettings
from edged.door.zone import CaptureZone, CaptureZoneSettings
from edged.errors import BadArgument
from edged.inference.manifest import Calibration, FarThreshold
from edged.matcher import Match, TemplateIndex
from edged.pipeline.fusion import LivenessSettings
from edged.pipeline.liveness import CHALLENGES, Cue, LivenessResult
from edged.pipeline.pipeline import FacePipeline
from edged.tracker import FaceTracker
from edged.types import Box, Face, ImageRGB

CAL = Calibration(
    default_far=1e-3,
    default_threshold=0.54,
    thresholds=(
        FarThreshold(1e-2, 0.61, 1_000_000),
        FarThreshold(1e-3, 0.54, 1_000_000),
        FarThreshold(1e-4, 0.47, 1_000_000),
        FarThreshold(1e-5, 0.42, 1_000_000),
    ),
    points=((0.0, 1.0), (0.54, 0.5), (1.0, 0.0)),
)
THRESHOLD, CAP = 0.47, 0.61
DT = 0.04  # 25 fps

Frame = list[FaceObservation]


def door(**overrides: Any) -> DoorSettings:
    return DoorSettings.model_validate({"group": "staff", **overrides})


def make(clock: ManualClock, **overrides: Any) -> Decider:
    return Decider("front", door(**overrides), CAL, clock, model="dlib_resnet_v1_int8")


def good(
    track: int, *candidates: tuple[str, float], px: float = 100.0, sharp: float = 200.0
) -> FaceObservation:
    """A frame that passed the gate, with the 1:N search's answer (person, distance)."""
    group = tuple(Match(person, f"{person}-face", d) for person, d in candidates)
    return FaceObservation(track, (), px, 0.95, sharp, Box(100, 100, 100 + px, 100 + px), group=group)


def claimed(track: int, person: str, distance: float | None, *others: tuple[str, float]) -> FaceObservation:
    """A verify frame: the claimed person's distance (None: beyond the cap) and the 1:N answer."""
    claim = () if distance is None else (Match(person, f"{person}-face", distance),)
    group = tuple(Match(p, f"{p}-face", d) for p, d in others)
    return FaceObservation(track, (), 100.0, 0.95, 200.0, Box(0, 0, 100, 100), group=group, claimed=claim)


def only_claimed(track: int, person: str, distance: float) -> FaceObservation:
    """A verify_only frame: the claimed person's distance, no 1:N answer at all."""
    return FaceObservation(track, (), 100.0, claimed=(Match(person, f"{person}-face", distance),))


def bad(track: int, *reasons: str) -> FaceObservation:
    """A frame that failed the gate (not embedded, not matched)."""
    return FaceObservation(track, reasons or ("blurred",), 60.0, 0.9, 10.0, Box(0, 0, 60, 60))


def run(
    decider: Decider, clock: ManualClock, frames: Iterable[Frame], ended: Sequence[Sequence[int]] = ()
) -> list[Events]:
    """Feed frames DT apart; ``ended[i]`` ends tracks at frame i."""
    out = []
    for i, frame in enumerate(frames):
        out.append(decider.update(frame, ended=ended[i] if i < len(ended) else ()))
        clock.advance(DT)
    return out


def decisions(events: Iterable[Events]) -> list[Decision]:
    return [d for e in events for d in e.decisions]


def summary(events: Iterable[Events]) -> list[tuple[str, tuple[str, ...], str | None]]:
    return [(d.outcome, d.reasons, d.person_id) for d in decisions(events)]


def first_decision_frame(events: list[Events]) -> int | None:
    return next((i for i, e in enumerate(events) if e.decisions), None)


# -- trigger level, fusion, outcomes ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 5])
def test_trigger_level_n_minus_one_good_frames_decide_nothing(n: int) -> None:
    clock = ManualClock()
    decider = make(clock, trigger_frames=n)
    events = run(decider, clock, [[good(1, ("ada", 0.3))]] * (n - 1))
    assert decisions(events) == []
    events += run(decider, clock, [[good(1, ("ada", 0.3))]])
    assert summary(events) == [("granted", ("match",), "ada")]
    assert first_decision_frame(events) == n - 1
    assert decisions(events)[0].frames == n


def test_failed_frames_do_not_count_towards_the_trigger_level() -> None:
    clock = ManualClock()
    decider = make(clock, trigger_frames=3)
    frames = [[good(1, ("ada", 0.3))], [bad(1)], [bad(1)], [good(1, ("ada", 0.3))], [bad(1)]]
    assert decisions(run(decider, clock, frames)) == []
    assert summary(run(decider, clock, [[good(1, ("ada", 0.3))]])) == [("granted", ("match",), "ada")]


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        # one person, consistently close: granted
        ([[("ada", 0.30)], [("ada", 0.35)], [("ada", 0.32)]], ("granted", ("match",), "ada")),
        # consistently far (beyond 0.47, within the cap): unknown
        ([[("ada", 0.55)], [("ada", 0.52)], [("ada", 0.58)]], ("unknown", ("no_match",), None)),
        # nobody within the search cap in any frame: unknown
        ([[], [], []], ("unknown", ("no_match",), None)),
        # absent from one frame's answer: that frame counts at the cap, (0.3 + 0.3 + 0.61) / 3 = 0.403
        ([[("ada", 0.30)], [("ada", 0.30)], []], ("granted", ("match",), "ada")),
        # absent from two: (0.3 + 0.61 + 0.61) / 3 = 0.507 → no single lucky frame grants
        ([[("ada", 0.30)], [], []], ("unknown", ("no_match",), None)),
        # two candidates: the lower fused distance wins, not the single best frame
        (
            [[("bob", 0.20), ("ada", 0.40)], [("ada", 0.30), ("bob", 0.50)], [("ada", 0.30), ("bob", 0.55)]],
            ("granted", ("match",), "ada"),
        ),
    ],
    ids=["close", "far", "none", "one-miss", "two-misses", "two-candidates"],
)
def test_identify_fusion_and_outcome(
    frames: list[list[tuple[str, float]]], expected: tuple[str, tuple[str, ...], str | None]
) -> None:
    clock = ManualClock()
    decider = make(clock)
    events = run(decider, clock, [[good(1, *candidates)] for candidates in frames])
    assert summary(events) == [expected]
    assert first_decision_frame(events) == 2


def test_fusion_weights_frames_by_face_size_and_sharpness() -> None:
    frames = [(100.0, 200.0, 0.30), (25.0, 200.0, 0.60), (100.0, 25.0, 0.60)]
    # unweighted mean 0.5 (unknown); weighted (1·0.30 + 0.24·0.60 + 0.24·0.60) / 1.48 ≈ 0.40 (granted)
    clock = ManualClock()
    decider = make(clock)
    events = run(decider, clock, [[good(1, ("ada", d), px=px, sharp=s)] for px, s, d in frames])
    [decision] = decisions(events)
    assert (decision.outcome, decision.person_id) == ("granted", "ada")
    assert decision.score is not None
    assert decision.score.distance == pytest.approx((0.95 * 0.30 + 2 * 0.2375 * 0.60) / (0.95 + 2 * 0.2375))


def test_granted_decision_carries_everything_the_decision_topic_needs() -> None:
    clock = ManualClock()
    decider = make(clock)
    [decision] = decisions(run(decider, clock, [[good(7, ("ada", 0.3))]] * 3))
    assert decision.door == "front"
    assert decision.mode == "identify"
    assert decision.track_id == 7
    assert decision.threshold == THRESHOLD
    assert decision.far == 1e-4
    assert decision.score is not None
    assert decision.score.distance == pytest.approx(0.3)
    assert decision.score.confidence == pytest.approx(CAL.confidence(0.3))
    assert decision.decided_at == pytest.approx(2 * DT)
    assert decision.time == pytest.approx(1_800_000_000.0 + 2 * DT)
    assert decision.model == "dlib_resnet_v1_int8"
    payload = decision.to_payload()
    assert payload["schema"] == 1
    assert payload["outcome"] == "granted"
    assert payload["person_id"] == "ada"
    assert payload["session_id"] == decider.sessions()[0].session_id


def test_directory_version_is_copied_from_the_frame_it_was_decided_on() -> None:
    clock = ManualClock()
    decider = make(clock, trigger_frames=1)
    [decision] = decider.update([good(1, ("ada", 0.3))], directory_version=42).decisions
    assert decision.directory_version == 42


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (None, ("granted", ("match",), "ada")),
        (["ada", "bob"], ("granted", ("match",), "ada")),
        (["bob"], ("denied", ("not_allowed",), "ada")),
        ([], ("denied", ("not_allowed",), "ada")),
    ],
)
def test_identified_person_not_allowed_at_this_door_is_denied(
    allowed: list[str] | None, expected: tuple[str, tuple[str, ...], str | None]
) -> None:
    clock = ManualClock()
    decider = make(clock, allowed=allowed)
    assert summary(run(decider, clock, [[good(1, ("ada", 0.3))]] * 3)) == [expected]


# -- low quality -----------------------------------------------------------------------------------------


def test_low_quality_after_m_frames_none_passing_the_gate() -> None:
    clock = ManualClock()
    decider = make(clock, low_quality_frames=4)
    frames = [[bad(1, "extreme_pose")], [bad(1, "blurred", "extreme_pose")], [bad(1, "extreme_pose")]]
    events = run(decider, clock, frames)
    assert decisions(events) == []
    events += run(decider, clock, [[bad(1, "blurred")]])
    [decision] = decisions(events)
    assert (decision.outcome, decision.reasons, decision.person_id) == (
        "low_quality",
        ("extreme_pose", "blurred"),  # most frequent first
        None,
    )
    assert (decision.score, decision.frames) == (None, 4)
    # reported once per track …
    assert decisions(run(decider, clock, [[bad(1)]] * 10)) == []
    # … and not final: once the face is usable, the track is decided
    assert summary(run(decider, clock, [[good(1, ("ada", 0.3))]] * 3)) == [("granted", ("match",), "ada")]


def test_no_low_quality_when_any_frame_passed_the_gate() -> None:
    clock = ManualClock()
    decider = make(clock, low_quality_frames=3, trigger_frames=5)
    frames = [[good(1, ("ada", 0.3))]] + [[bad(1)]] * 10
    assert decisions(run(decider, clock, frames)) == []


# -- refractory periods ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap_s", "decided_again"),
    [(1.0, False), (4.8, False), (5.2, True), (30.0, True)],
)
def test_same_person_on_a_new_track_within_the_refractory_period(gap_s: float, decided_again: bool) -> None:
    clock = ManualClock()
    decider = make(clock, refractory_s=5.0)
    first = run(decider, clock, [[good(1, ("ada", 0.3))]] * 3 + [[]], ended=[[], [], [], [1]])
    assert summary(first) == [("granted", ("match",), "ada")]
    clock.advance(gap_s - 4 * DT)
    second = run(decider, clock, [[good(2, ("ada", 0.3))]] * 3)
    if decided_again:
        assert summary(second) == [("granted", ("match",), "ada")]
    else:
        assert decisions(second) == []
        assert decider.sessions()[0].phase == "refractory"


def test_suppressed_track_is_decided_once_the_refractory_period_is_over() -> None:
    clock = ManualClock()
    decider = make(clock, refractory_s=1.0)
    run(decider, clock, [[good(1, ("ada", 0.3))]] * 3 + [[]], ended=[[], [], [], [1]])
    events = run(decider, clock, [[good(2, ("ada", 0.3))]] * 40)  # 1.6 s of frames
    [decision] = decisions(events)
    assert (decision.outcome, decision.track_id) == ("granted", 2)
    assert decision.decided_at == pytest.approx(2 * DT + 1.0)


def test_a_different_person_is_not_held_by_anothers_refractory_period() -> None:
    clock = ManualClock()
    decider = make(clock, refractory_s=5.0)
    events = run(decider, clock, [[good(1, ("ada", 0.3))]] * 3 + [[]], ended=[[], [], [], [1]])
    events += run(decider, clock, [[good(2, ("bob", 0.3))]] * 3)
    assert summary(events) == [("granted", ("match",), "ada"), ("granted", ("match",), "bob")]


def test_a_lingering_track_is_decided_again_only_after_the_refractory_period() -> None:
    clock = ManualClock()
    decider = make(clock, refractory_s=1.0)
    assert decider.request(1) is not None
    events = run(decider, clock, [[good(1, ("ada", 0.3))]] * 3)
    assert decider.request(1) is None, "a track within its refractory period needs no matching"
    events += run(decider, clock, [[FaceObservation(1, (), 100.0)]] * 24)  # ≈ 1 s, not matched
    assert decider.request(1) is not None
    events += run(decider, clock, [[good(1, ("ada", 0.3))]] * 3)
    assert [d.outcome for d in decisions(events)] == ["granted", "granted"]
    first, second = decisions(events)
    assert second.decided_at - first.decided_at >= 1.0


def test_an_unknown_track_is_retried_on_fresh_evidence_and_granted_when_it_matches() -> None:
    clock = ManualClock()
    decider = make(clock, refractory_s=1.0, unknown_retry_s=1.0)
    # far away: a poor match, decided unknown (published once)
    events = run(decider, clock, [[good(1, ("ada", 0.6))]] * 3)
    assert summary(events) == [("unknown", ("no_match",), None)]
    assert decider.request(1) is None  # quiet until the retry time
    # still poor for a while: tried again and again, but unknown is not published twice
    clock.advance(1.0)
    assert decisions(run(decider, clock, [[good(1, ("ada", 0.6))]] * 30)) == []
    # closer, now matching well: the fresh window's evidence alone decides; the earlier poor frames
    # do not drag the fused distance up
    clock.advance(1.0)
    events = run(decider, clock, [[good(1, ("ada", 0.3))]] * 3)
    assert summary(events) == [("granted", ("match",), "ada")]
    (granted,) = decisions(events)
    assert granted.score is not None and granted.score.distance == pytest.approx(0.3, abs=1e-6)


def test_a_stranger_standing_at_the_door_gets_one_unknown() -> None:
    clock = ManualClock()
    decider = make(clock, unknown_retry_s=0.5)
    frames = [[good(1, ("ada", 0.7))]] * 200  # ~ 20 s of a stranger at 10 fps
    events = run(decider, clock, frames)
    assert summary(events) == [("unknown", ("no_match",), None)]


def test_an_unknown_track_is_not_decided_again_until_it_ends_without_retries() -> None:
    clock = ManualClock()
    decider = make(clock, refractory_s=1.0, unknown_retry_s=0)
    events = run(decider, clock, [[good(1, ("ada", 0.6))]] * 3)
    assert summary(events) == [("unknown", ("no_match",), None)]
    assert decider.request(1) is None
    # much later, now matching well: still the same track, still nothing
    clock.advance(60)
    assert decisions(run(decider, clock, [[good(1, ("ada", 0.3))]] * 10)) == []
    assert decider.sessions()[0].phase == "decided"
    # the track ends; the person's next approach is decided afresh
    events = run(decider, clock, [[]] + [[good(2, ("ada", 0.3))]] * 3, ended=[[1]])
    assert summary(events) == [("granted", ("match",), "ada")]


# -- verify modes ----------------------------------------------------------------------------------------


def test_verify_decides_nothing_without_a_claim() -> None:
    clock = ManualClock()
    decider = make(clock, mode="verify")
    assert decider.request(1) is None
    events = run(decider, clock, [[claimed(1, "ada", 0.3)]] * 10 + [[bad(1)]] * 20)
    assert decisions(events) == []
    assert decider.sessions()[0].phase == "waiting_claim"


@pytest.mark.parametrize(
    ("frames", "allowed", "expected"),
    [
        # the claimed person matches and is the best candidate: granted
        ([claimed(1, "ada", 0.30, ("ada", 0.30), ("bob", 0.55))], None, ("granted", ("match",), "ada")),
        # the claimed person does not match (beyond the threshold, or not within the cap at all)
        ([claimed(1, "ada", 0.52)], None, ("denied", ("claim_mismatch",), "ada")),
        ([claimed(1, "ada", None)], None, ("denied", ("claim_mismatch",), "ada")),
        # someone else matches and the claimed person does not
        (
            [claimed(1, "ada", 0.58, ("bob", 0.25), ("ada", 0.58))],
            None,
            ("denied", ("claim_mismatch", "other_person"), "ada"),
        ),
        # both within the threshold, but someone else is closer: denied
        (
            [claimed(1, "ada", 0.40, ("bob", 0.20), ("ada", 0.40))],
            None,
            ("denied", ("other_person",), "ada"),
        ),
        # both within, the claimed person closest: granted
        (
            [claimed(1, "ada", 0.20, ("ada", 0.20), ("bob", 0.40))],
            None,
            ("granted", ("match",), "ada"),
        ),
        # a match, but not allowed at this door
        ([claimed(1, "ada", 0.30, ("ada", 0.30))], ["bob"], ("denied", ("not_allowed",), "ada")),
    ],
    ids=["match", "mismatch", "beyond-cap", "someone-else", "someone-closer", "closest", "not-allowed"],
)
def test_verify_claim_outcomes(
    frames: Frame, allowed: list[str] | None, expected: tuple[str, tuple[str, ...], str | None]
) -> None:
    clock = ManualClock()
    decider = make(clock, mode="verify", allowed=allowed)
    decider.claim("ada")
    request = decider.request(1)
    assert request is not None
    assert (request.group, request.k, request.person_id, request.max_distance) == ("staff", 3, "ada", CAP)
    events = run(decider, clock, [frames] * 3)
    assert summary(events) == [expected]
    assert first_decision_frame(events) == 2
    # one decision per claim: the window is closed
    assert decider.request(1) is None
    assert decisions(run(decider, clock, [frames] * 5)) == []


def test_verify_window_opens_with_a_claim_and_closes_after_w_seconds() -> None:
    clock = ManualClock()
    decider = make(clock, mode="verify", verify_window_s=2.0, trigger_frames=3)
    decider.claim("ada")
    assert decider.claim_open
    # frames of a face that fails the gate for the whole window, then the window closes
    events = run(decider, clock, [[bad(1, "extreme_pose")]] * 5)
    assert decisions(events) == []
    clock.advance(2.0)
    assert not decider.claim_open
    events = run(decider, clock, [[claimed(1, "ada", 0.3)]] * 3)
    [expired] = decisions(events)
    assert (expired.outcome, expired.reasons, expired.person_id, expired.track_id) == (
        "denied",
        ("claim_expired",),
        "ada",
        None,
    )
    # outside a window nothing is decided, however good the frames
    assert decisions(run(decider, clock, [[claimed(1, "ada", 0.3)]] * 10)) == []
    # a new claim opens a new window: the frames before it do not count
    decider.claim("ada")
    events = run(decider, clock, [[claimed(1, "ada", 0.3)]] * 3)
    assert summary(events) == [("granted", ("match",), "ada")]
    assert first_decision_frame(events) == 2


def test_a_new_claim_replaces_the_open_one() -> None:
    clock = ManualClock()
    decider = make(clock, mode="verify")
    decider.claim("ada")
    run(decider, clock, [[claimed(1, "ada", 0.3)]] * 2)
    decider.claim("bob")
    with pytest.raises(BadArgument, match="not theirs"):
        decider.update([claimed(1, "ada", 0.3)])
    events = run(decider, clock, [[claimed(1, "bob", 0.3)]] * 3)
    assert summary(events) == [("granted", ("match",), "bob")]
    assert first_decision_frame(events) == 2


def test_identify_doors_take_no_claims() -> None:
    decider = make(ManualClock())
    with pytest.raises(BadArgument, match="identify mode"):
        decider.claim("ada")


def test_verify_only_never_asks_for_or_accepts_a_1_to_n_search() -> None:
    clock = ManualClock()
    decider = make(clock, mode="verify_only")
    assert decider.request(1) is None
    decider.claim("ada")
    request = decider.request(1)
    assert request is not None
    assert (request.k, request.person_id) == (0, "ada"), "only the claimed person's distance"
    for group in [(), (Match("ada", "f", 0.3),), (Match("bob", "f", 0.2),)]:
        face = FaceObservation(1, (), 100.0, group=group, claimed=(Match("ada", "f", 0.3),))
        with pytest.raises(BadArgument, match="verify_only"):
            decider.update([face])
    # even a frame that failed the gate must not carry a 1:N answer
    with pytest.raises(BadArgument, match="verify_only"):
        decider.update([FaceObservation(1, ("blurred",), 100.0, group=())])
    events = run(decider, clock, [[only_claimed(1, "ada", 0.3)]] * 3)
    assert summary(events) == [("granted", ("match",), "ada")]
    decider.claim("ada")
    events = run(decider, clock, [[only_claimed(1, "ada", 0.55)]] * 3)
    assert summary(events) == [("denied", ("claim_mismatch",), "ada")]


# -- multi-face policy -----------------------------------------------------------------------------------


def two_faces(n: int) -> list[Frame]:
    return [[good(1, ("ada", 0.3)), good(2, ("bob", 0.3))]] * n


def test_multi_face_deny_denies_every_session_present_once() -> None:
    clock = ManualClock()
    decider = make(clock, multi_face="deny")
    events = run(decider, clock, two_faces(1))
    assert sorted((d.track_id, d.outcome, d.reasons, d.person_id) for d in decisions(events)) == [
        (1, "denied", ("multiple_faces",), None),
        (2, "denied", ("multiple_faces",), None),
    ]
    # the sessions stay denied: neither more faces nor the other one leaving decide them again
    events = run(decider, clock, [*two_faces(5), [], *[[good(1, ("ada", 0.3))]] * 5], ended=[[]] * 5 + [[2]])
    assert decisions(events) == []
    assert {s.phase for s in decider.sessions()} == {"decided"}


def test_multi_face_hold_decides_nothing_while_several_faces_are_present() -> None:
    clock = ManualClock()
    decider = make(clock, multi_face="hold")
    events = run(decider, clock, two_faces(6))
    assert decisions(events) == []
    assert {s.phase for s in decider.sessions()} == {"held"}
    # the second face leaves: the evidence gathered meanwhile decides at once
    events = run(decider, clock, [[good(1, ("ada", 0.3))]], ended=[[2]])
    assert summary(events) == [("granted", ("match",), "ada")]


def test_multi_face_in_verify_mode() -> None:
    for policy, expected in [("deny", [("denied", ("multiple_faces",), "ada")]), ("hold", [])]:
        clock = ManualClock()
        decider = make(clock, mode="verify", multi_face=policy)
        decider.claim("ada")
        frame = [claimed(1, "ada", 0.3, ("ada", 0.3)), claimed(2, "ada", 0.5, ("bob", 0.3))]
        assert summary(run(decider, clock, [frame] * 4)) == expected, policy
        assert decider.claim_open is (policy == "hold")


# -- sessions and payloads -------------------------------------------------------------------------------


def test_sessions_new_update_end_with_before_and_after() -> None:
    clock = ManualClock()
    decider = make(clock)
    frames = [[good(1, ("ada", 0.3))]] * 4 + [[]]
    events = run(decider, clock, frames, ended=[[], [], [], [], [1]])
    sessions = [s for e in events for s in e.sessions]
    assert [s.type for s in sessions] == ["new", "update", "end"]
    new, update, end = sessions
    assert new.before == new.after
    assert (new.after.phase, new.after.frames, new.after.outcome) == ("collecting", 1, None)
    # frame counts alone are not material; the decision is
    assert update.before == new.after
    assert (update.after.phase, update.after.outcome, update.after.person_id) == (
        "refractory",
        "granted",
        "ada",
    )
    assert update.after.decision_id == decisions(events)[0].event_id
    assert end.before == update.after
    assert (end.after.phase, end.after.updated_at) == ("ended", pytest.approx(4 * DT))
    assert len({s.after.session_id for s in sessions}) == 1
    assert decider.sessions() == []


@pytest.mark.parametrize(
    ("distances", "updates"),
    [
        ([0.30, 0.31, 0.29, 0.30, 0.32], 0),  # steady: frame counts change, nothing material
        ([0.30, 0.60, 0.60, 0.60, 0.60], 1),  # the fused confidence falls by more than a step
    ],
)
def test_session_update_only_on_material_change(distances: list[float], updates: int) -> None:
    clock = ManualClock()
    decider = make(clock, trigger_frames=10)
    frames = [[good(1, ("ada", d))] for d in distances]
    frames.insert(2, [bad(1, "blurred")])  # the gate's verdict alone is not material either
    events = run(decider, clock, frames)
    sessions = [s for e in events for s in e.sessions]
    assert [s.type for s in sessions] == ["new"] + ["update"] * updates
    for s in sessions[1:]:
        assert s.before.score is not None and s.after.score is not None
        assert abs(s.before.score.confidence - s.after.score.confidence) >= 0.1


def test_session_has_no_identity_before_a_decision() -> None:
    clock = ManualClock()
    decider = make(clock, trigger_frames=5)
    # a candidate ID no random UUID of the payload can contain by chance ("ada" could: hex digits)
    events = run(decider, clock, [[good(1, ("person-ada", 0.3))]] * 3)
    [session] = decider.sessions()
    assert (session.person_id, session.outcome) == (None, None)
    assert session.score is not None, "the fused score is shown, the candidate is not"
    assert "person-ada" not in json.dumps([s.to_payload() for e in events for s in e.sessions])


def walk(value: object, path: str = "") -> Iterator[str]:
    """Every key path in a JSON-like value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}"
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, path)


FORBIDDEN = ("image", "embedding", "template", "chip", "jpeg", "png", "vector")


def all_events() -> list[Decision | SessionEvent]:
    """Every kind of decision and session event, from one door of each mode."""
    out: list[Events] = []
    clock = ManualClock()
    ident = make(clock, multi_face="deny", low_quality_frames=3, allowed=["ada"])
    out += run(ident, clock, [[good(1, ("ada", 0.3))]] * 3 + [[bad(2)]] * 3, ended=[[]] * 3 + [[1]])
    out += run(
        ident, clock, [[]] + [[good(3, ("bob", 0.3))]] * 3 + [[good(4, ("eve", 0.6))]] * 3, ended=[[2]]
    )
    out += run(ident, clock, [[good(4, ("eve", 0.6)), good(5, ("ada", 0.3))]], ended=[])
    verify = make(clock, mode="verify")
    verify.claim("ada")
    out += run(verify, clock, [[claimed(1, "ada", 0.5)]] * 3)
    verify.claim("ada")
    clock.advance(20)
    out += run(verify, clock, [[]], ended=[[1]])
    attacked = make(clock, liveness="passive")
    out += run(attacked, clock, [[live(good(1, ("ada", 0.3)), SPOOFED)]], ended=[[]])
    found: list[Decision | SessionEvent] = [d for e in out for d in e.decisions]
    found += [s for e in out for s in e.sessions]
    outcomes = {d.outcome for d in found if isinstance(d, Decision)}
    assert outcomes == set(OUTCOMES), "every outcome is covered"
    assert {s.type for s in found if isinstance(s, SessionEvent)} == {"new", "update", "end"}
    return found


def test_every_payload_is_json_with_a_schema_and_no_biometric_data() -> None:
    for event in all_events():
        payload = event.to_payload()
        assert payload["schema"] == 1
        assert json.loads(json.dumps(payload, allow_nan=False)) == payload
        for key in walk(payload):
            assert not any(word in key.lower() for word in FORBIDDEN), key


def test_event_ids_are_unique() -> None:
    found = all_events()
    ids = [e.event_id for e in found]
    assert len(ids) == len(set(ids)) > 10


# -- contract and settings -------------------------------------------------------------------------------


def test_one_observation_per_track_and_frame() -> None:
    decider = make(ManualClock())
    with pytest.raises(BadArgument, match="one observation per track"):
        decider.update([good(1), good(1)])
    with pytest.raises(BadArgument, match="both observed and ended"):
        decider.update([good(1)], ended=[1])


def test_settings_defaults_and_validation() -> None:
    settings = door()
    assert (settings.mode, settings.far, settings.trigger_frames, settings.low_quality_frames) == (
        "identify",
        1e-4,
        3,
        10,
    )
    assert (settings.refractory_s, settings.verify_window_s, settings.multi_face) == (5.0, 10.0, "hold")
    assert (settings.allowed, settings.capture_zone) == (None, None)
    with_zone = door(capture_zone={"box": [0.2, 0.0, 0.8, 1.0]}, allowed=["ada"])
    assert with_zone.allowed == frozenset({"ada"})
    assert with_zone.capture_zone is not None
    assert with_zone.capture_zone.zone().contains(Box(300, 100, 340, 140), (640, 480))
    for bad_settings in [
        {"modes": "identify"},  # a typo is an error
        {"mode": "1:N"},
        {"group": ""},
        {"trigger_frames": 0},
        {"multi_face": "ignore"},
        {"capture_zone": {"box": [0.8, 0.0, 0.2, 1.0]}},
        {"capture_zone": {"box": [0, 0, 800, 600]}},  # fractions by default
        {"capture_zone": {"box": [0, 0, 800, 600], "units": "inches"}},
    ]:
        with pytest.raises(ValidationError):
            door(**bad_settings)
    assert CaptureZoneSettings(box=(0, 0, 800, 600), units="pixels").zone().normalized is False
    with pytest.raises(ValidationError):
        DoorSettings.model_validate({})  # the group is required
    with pytest.raises(BadArgument, match="below the smallest calibrated FAR"):
        Decider("front", door(far=1e-6), CAL, ManualClock())


# -- end to end: real pipeline, tracker, matcher, decider ------------------------------------------------


def shifted(image: ImageRGB, i: int) -> ImageRGB:
    """Frame i of a slow approach: the portrait moved 3 px right and 2 px down per frame."""
    return np.ascontiguousarray(np.roll(image, (2 * i, 3 * i), axis=(0, 1)))


def step(
    pipeline: FacePipeline,
    tracker: FaceTracker,
    decider: Decider,
    index: TemplateIndex,
    image: ImageRGB,
    now: float,
    zone: CaptureZone,
) -> Events:
    """One frame of the daemon's worker loop (``DoorWorker.process``, one door, one index)."""
    faces: list[Face] = pipeline.faces(image, embed=False)
    tracks = tracker.update([f.detection.box for f in faces], now)
    observations = []
    for track in tracks:
        face = faces[track.index]
        if not zone.contains(face.detection.box, (image.shape[1], image.shape[0])):
            continue
        request = decider.request(track.track_id)
        group = claim = None
        if request is not None and face.quality.ok:
            template = pipeline.embed(image, face).embedding
            assert template is not None
            if request.k:
                group = index.search(template, request.k, request.max_distance)
            if request.person_id is not None:
                claim = index.search(template, 1, request.max_distance, owners={request.person_id})
        observations.append(FaceObservation.of(track.track_id, face, group=group, claimed=claim))
    return decider.update(observations, ended=[t.track_id for t in tracker.ended])


def test_end_to_end_astronaut_granted_once_cameraman_low_quality(
    pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    assert pipeline.calibration is not None and astronaut_face.embedding is not None
    index = TemplateIndex(storage="float32")
    index.add("eileen-face-1", "eileen", astronaut_face.embedding)
    clock = ManualClock()
    settings = door(trigger_frames=3, low_quality_frames=5, capture_zone={"box": [0.1, 0.1, 0.9, 0.9]})
    assert settings.capture_zone is not None
    zone = settings.capture_zone.zone()
    tracker = FaceTracker(max_missed_s=0.5)
    decider = Decider("front", settings, pipeline.calibration, clock, model="face_embedder")

    def play(frames: list[ImageRGB]) -> list[Events]:
        out = []
        for frame in frames:
            out.append(step(pipeline, tracker, decider, index, frame, clock.monotonic(), zone))
            clock.advance(DT)
        return out

    astro = play([shifted(astronaut, i) for i in range(8)])
    assert summary(astro) == [("granted", ("match",), "eileen")]
    assert first_decision_frame(astro) == 2, "granted on the third good frame, not before"
    [granted] = decisions(astro)
    assert granted.score is not None and granted.score.distance < 0.15 < granted.threshold
    assert [s.type for e in astro for s in e.sessions] == ["new", "update"]

    # she leaves; a second later the cameraman (a different man) stands in front of the camera
    clock.advance(1.0)
    gone = play([np.zeros_like(astronaut)])
    assert [s.type for s in gone[0].sessions] == ["end"]
    camera = np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))
    cameraman = play([shifted(camera, i) for i in range(8)])
    # The detector and the face mesh find his face (≈ (180,121)-(264,205)), but the mesh puts his head
    # in near profile (yaw ≈ 90°), so every frame fails the quality gate with extreme_pose: he is never
    # embedded or matched, and after low_quality_frames (5) frames the track is decided low_quality,
    # once. Neither granted (he is not eileen) nor unknown (no usable frame to say so).
    assert summary(cameraman) == [("low_quality", ("extreme_pose",), None)]
    assert first_decision_frame(cameraman) == 4
    assert [d.track_id for d in decisions(cameraman)] == [2]


def test_a_claim_that_cannot_be_checked_is_denied_at_once() -> None:
    clock = ManualClock()
    decider = make(clock, mode="verify")
    decider.claim("ada")
    refused = decider.refuse_claim("unknown_card", captured_at=123.0)
    assert (refused.outcome, refused.reasons, refused.person_id, refused.track_id) == (
        "denied",
        ("unknown_card",),
        None,
        None,
    )
    assert refused.captured_at == 123.0 and refused.to_payload()["schema"] == 1
    assert decider.claim_open  # the open claim (another reader's) is left as it is
    with pytest.raises(BadArgument, match="reason"):
        decider.refuse_claim("no_match")
    with pytest.raises(BadArgument, match="identify mode"):
        make(clock).refuse_claim("unknown_card")


# -- liveness ------------------------------------------------------------------------------------------

REAL = LivenessResult("realface", 0.93, (Cue("model", 0.93, 0.93, "real"),), ("model",), 5)
SPOOFED = LivenessResult(
    "spoofface",
    0.04,
    (Cue("model", 0.2, 0.2, "none"), Cue("parallax", 0.01, 0.04, "spoof")),
    ("parallax",),
    8,
)
UNSURE = LivenessResult("uncertain", 0.5, (Cue("model", 0.5, 0.5, "none"),), (), 3)
WINDOW_S, CHALLENGE_S = 1.02, 2.02  # half a frame off DT's multiples: no rounding at the edges


def live(face: FaceObservation, result: LivenessResult | None) -> FaceObservation:
    """``face`` with its track's liveness result so far (what the worker passes on)."""
    return dataclasses.replace(face, liveness=result)


def live_door(clock: ManualClock, liveness: str = "passive", **overrides: Any) -> Decider:
    """A door with liveness on; the root liveness settings give a challenge CHALLENGE_S."""
    settings = door(liveness=liveness, liveness_window_s=WINDOW_S, **overrides)
    return Decider("front", settings, CAL, clock, liveness=LivenessSettings(challenge_window_s=CHALLENGE_S))


def frames_for(seconds: float) -> int:
    """Frames (DT apart) until ``seconds`` have passed."""
    return math.ceil(seconds / DT)


def challenges(events: Iterable[Events]) -> list[ChallengeEvent]:
    return [c for e in events for c in e.challenges]


def test_liveness_off_decides_as_before_and_carries_no_liveness() -> None:
    clock = ManualClock()
    decider = make(clock)
    assert door().liveness == "off"
    events = run(decider, clock, [[live(good(1, ("ada", 0.3)), SPOOFED)]] * 3)
    [decision] = decisions(events)
    assert (decision.outcome, decision.liveness) == ("granted", None)
    assert decision.to_payload()["liveness"] is None


MODES = [
    ("identify", good(1, ("ada", 0.3))),
    ("verify", claimed(1, "ada", 0.3, ("ada", 0.3))),
    ("verify_only", only_claimed(1, "ada", 0.3)),
]


@pytest.mark.parametrize("liveness", ["passive", "challenge"])
@pytest.mark.parametrize(("mode", "face"), MODES, ids=[m for m, _ in MODES])
def test_a_spoof_is_decided_spoof_at_once_never_granted(
    mode: str, face: FaceObservation, liveness: str
) -> None:
    clock = ManualClock()
    decider = live_door(clock, liveness, mode=mode)
    if mode != "identify":
        decider.claim("ada")
    # a perfect match, but the track's liveness says spoofface: spoof on the first frame (no need to
    # wait for the trigger level: nothing is matched for it), no person, the deciding cues attached
    events = run(decider, clock, [[live(face, SPOOFED)]])
    [decision] = decisions(events)
    assert (decision.outcome, decision.reasons, decision.person_id) == (
        "spoof",
        ("presentation_attack",),
        None,
    )
    payload = decision.to_payload()
    assert payload["liveness"] == {
        "decision": "spoofface",
        "score": 0.04,
        "cues": [
            {"name": "model", "value": 0.2, "score": 0.2, "verdict": "none"},
            {"name": "parallax", "value": 0.01, "score": 0.04, "verdict": "spoof"},
        ],
        "decided_by": ["parallax"],
        "frames": 8,
        "challenge": None,
    }
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    # final: the attacker standing there (identify) or the rest of the claim's frames get nothing more
    later = run(decider, clock, [[live(face, REAL)]] * 10)
    assert decisions(later) == []
    assert decider.sessions()[0].outcome == "spoof"


def test_a_spoof_of_a_stranger_is_spoof_not_unknown_and_each_claim_is_answered_spoof() -> None:
    clock = ManualClock()
    decider = live_door(clock)
    events = run(decider, clock, [[live(good(1), UNSURE)]] * 2 + [[live(good(1), SPOOFED)]])
    assert summary(events) == [("spoof", ("presentation_attack",), None)]
    verify = live_door(clock, mode="verify")
    for _ in range(2):  # the photo is still held up when the next card is shown
        verify.claim("ada")
        out = run(verify, clock, [[live(claimed(1, "ada", 0.3), SPOOFED)]] * 3)
        assert summary(out) == [("spoof", ("presentation_attack",), None)]
        assert not verify.claim_open, "a spoof is the claim's one answer"


@pytest.mark.parametrize(("mode", "face"), MODES, ids=[m for m, _ in MODES])
def test_realface_decides_as_without_liveness_and_carries_the_result(
    mode: str, face: FaceObservation
) -> None:
    clock = ManualClock()
    decider = live_door(clock, mode=mode)
    if mode != "identify":
        decider.claim("ada")
    events = run(decider, clock, [[live(face, REAL)]] * 3)
    assert summary(events) == [("granted", ("match",), "ada")]
    assert first_decision_frame(events) == 2, "the trigger level still holds"
    [decision] = decisions(events)
    assert decision.liveness == REAL
    liveness = decision.to_payload()["liveness"]
    assert isinstance(liveness, dict) and (liveness["decision"], liveness["decided_by"]) == (
        "realface",
        ["model"],
    )


def test_passive_uncertain_holds_then_grants_when_the_liveness_decides() -> None:
    clock = ManualClock()
    decider = live_door(clock)
    held = frames_for(WINDOW_S) - 2  # within the window
    events = run(decider, clock, [[live(good(1, ("ada", 0.3)), UNSURE)]] * held)
    assert decisions(events) == [], "uncertain: nothing decided, evidence collected"
    assert decider.sessions()[0].phase == "collecting"
    events = run(decider, clock, [[live(good(1, ("ada", 0.3)), REAL)]])
    assert summary(events) == [("granted", ("match",), "ada")]
    assert decisions(events)[0].frames == held + 1


def test_realface_counts_only_after_liveness_min_frames() -> None:
    """A photo waved in front of the camera can pass the model on its first frames, before the
    parallax cue has seen enough motion: realface on fewer frames than liveness_min_frames is held."""
    clock = ManualClock()
    decider = live_door(clock, liveness_min_frames=5)
    face = good(1, ("ada", 0.3))
    early = [dataclasses.replace(REAL, frames=n) for n in range(1, 5)]
    events = run(decider, clock, [[live(face, result)] for result in early])
    assert decisions(events) == [], "realface on 1-4 frames: held, although the match is ready"
    events = run(decider, clock, [[live(face, SPOOFED)]])
    assert summary(events) == [("spoof", ("presentation_attack",), None)]

    decider = live_door(clock, liveness_min_frames=5)
    events = run(decider, clock, [[live(face, result)] for result in early])
    events += run(decider, clock, [[live(face, dataclasses.replace(REAL, frames=5))]])
    assert summary(events) == [("granted", ("match",), "ada")]
    assert first_decision_frame(events) == 4


@pytest.mark.parametrize(("mode", "face"), MODES, ids=[m for m, _ in MODES])
def test_passive_uncertain_for_the_whole_window_is_denied_liveness_uncertain(
    mode: str, face: FaceObservation
) -> None:
    clock = ManualClock()
    decider = live_door(clock, mode=mode, verify_window_s=30)
    if mode != "identify":
        decider.claim("ada")
    # no result at all counts as uncertain too (the worker has not assessed the track yet)
    events = run(decider, clock, [[live(face, None)]] * 2 + [[live(face, UNSURE)]] * 40)
    person = None if mode == "identify" else "ada"
    assert summary(events) == [("denied", ("liveness_uncertain",), person)]
    # the window runs from the third good frame (ready to decide), not from the track's first frame
    assert first_decision_frame(events) == 2 + frames_for(WINDOW_S)
    [decision] = decisions(events)
    assert decision.liveness == UNSURE and decision.score is not None
    assert challenges(events) == [], "a passive door never challenges"


def test_uncertain_before_the_trigger_level_still_reports_low_quality() -> None:
    clock = ManualClock()
    decider = live_door(clock, low_quality_frames=3)
    events = run(decider, clock, [[live(bad(1, "blurred"), UNSURE)]] * 3)
    assert summary(events) == [("low_quality", ("blurred",), None)]


def ask(decider: Decider, clock: ManualClock, face: FaceObservation) -> tuple[list[Events], ChallengeEvent]:
    """Frames of an uncertain track until the door asks its challenge."""
    events = run(decider, clock, [[live(face, UNSURE)]] * (2 + frames_for(WINDOW_S) + 1))
    assert decisions(events) == []
    [asked] = challenges(events)
    return events, asked


def test_challenge_mode_asks_a_random_challenge_after_the_window() -> None:
    clock = ManualClock()
    seen: set[str] = set()
    for _ in range(60):  # secrets.choice: all three come up (the chance one is missed: 3·(2/3)^60)
        decider = live_door(clock, "challenge")
        events, asked = ask(decider, clock, good(1, ("ada", 0.3)))
        seen.add(asked.challenge)
        [session] = decider.sessions()
        assert (asked.door, asked.session_id, asked.track_id) == ("front", session.session_id, 1)
        assert asked.expires_at == pytest.approx(asked.time + CHALLENGE_S)
        assert first_decision_frame(events) is None
        assert next(i for i, e in enumerate(events) if e.challenges) == 2 + frames_for(WINDOW_S)
    assert seen == set(CHALLENGES)
    payload = asked.to_payload()
    assert set(payload) == {
        "schema",
        "event_id",
        "door",
        "session_id",
        "track_id",
        "challenge",
        "time",
        "expires_at",
    }
    assert payload["schema"] == 1 and payload["challenge"] in CHALLENGES


def test_a_challenge_done_grants_and_one_failed_is_spoof() -> None:
    clock = ManualClock()
    decider = live_door(clock, "challenge")
    face = good(1, ("ada", 0.3))
    _, asked = ask(decider, clock, face)
    done = dataclasses.replace(REAL, challenge=asked.challenge, decided_by=("challenge",))
    events = run(decider, clock, [[live(face, UNSURE)]] * 5 + [[live(face, done)]])
    assert summary(events) == [("granted", ("match",), "ada")]
    assert challenges(events) == [], "one challenge per approach"
    liveness = decisions(events)[0].to_payload()["liveness"]
    assert isinstance(liveness, dict) and liveness["challenge"] == asked.challenge

    decider = live_door(clock, "challenge", mode="verify")
    decider.claim("ada")
    face = claimed(1, "ada", 0.3)
    _, asked = ask(decider, clock, face)
    wrong = dataclasses.replace(SPOOFED, challenge=asked.challenge, decided_by=("challenge",))
    events = run(decider, clock, [[live(face, wrong)]])
    assert summary(events) == [("spoof", ("presentation_attack",), None)]


@pytest.mark.parametrize("mode", ["identify", "verify"])
def test_a_photo_held_on_the_track_does_not_lend_another_face_its_identity(mode: str) -> None:
    # the splice at the door: a sharp photo of ada held until the challenge is asked, then the
    # attacker's own live face on the same track (gate passed, nobody matches it) does the turn;
    # over all its frames the track is still ada (the photo frames outweigh), over its newest not
    clock = ManualClock()
    decider = live_door(clock, "challenge", mode=mode, verify_window_s=30)
    if mode == "verify":
        decider.claim("ada")
    photo = good(1, ("ada", 0.30)) if mode == "identify" else claimed(1, "ada", 0.30)
    attacker = good(1, sharp=45.0) if mode == "identify" else claimed(1, "ada", None)
    events, asked = ask(decider, clock, photo)
    done = dataclasses.replace(REAL, challenge=asked.challenge, decided_by=("challenge",))
    events += run(decider, clock, [[live(attacker, UNSURE)]] * 8 + [[live(attacker, done)]])
    assert "granted" not in [d.outcome for d in decisions(events)], summary(events)

    # the same approach by ada herself (her live face after the photo-like still frames) is granted
    clock = ManualClock()
    decider = live_door(clock, "challenge", mode=mode, verify_window_s=30)
    if mode == "verify":
        decider.claim("ada")
    events, asked = ask(decider, clock, photo)
    done = dataclasses.replace(REAL, challenge=asked.challenge, decided_by=("challenge",))
    turning = good(1, ("ada", 0.40)) if mode == "identify" else claimed(1, "ada", 0.40)
    events += run(decider, clock, [[live(turning, UNSURE)]] * 8 + [[live(turning, done)]])
    assert summary(events) == [("granted", ("match",), "ada")]


def test_the_newest_frames_must_match_the_tracks_person_without_liveness_too() -> None:
    clock = ManualClock()
    decider = make(clock, trigger_frames=12, recent_frames=3)
    # 9 frames of ada, then 3 of nobody: the whole track fuses to 0.3·0.75 + 0.61·0.25 ≈ 0.38 (ada),
    # its newest 3 frames are nobody
    events = run(decider, clock, [[good(1, ("ada", 0.3))]] * 9 + [[good(1)]] * 3)
    assert summary(events) == [("unknown", ("no_match",), None)]
    [refused] = decisions(events)
    assert refused.score is not None and refused.score.distance > THRESHOLD  # the newest frames' score
    with pytest.raises(ValidationError):
        door(recent_frames=0)


@pytest.mark.parametrize(("mode", "face"), MODES, ids=[m for m, _ in MODES])
def test_a_challenge_not_done_in_time_is_denied_challenge_timeout(mode: str, face: FaceObservation) -> None:
    clock = ManualClock()
    decider = live_door(clock, "challenge", mode=mode, verify_window_s=30)
    if mode != "identify":
        decider.claim("ada")
    _, asked = ask(decider, clock, face)
    # no motion at all: the track's challenge cue says nothing (uncertain) through the window and after
    events = run(decider, clock, [[live(face, UNSURE)]] * (frames_for(CHALLENGE_S + CHALLENGE_GRACE_S) - 1))
    assert decisions(events) == [], "held while the challenge's window (and a moment after) runs"
    events = run(decider, clock, [[live(face, UNSURE)]] * 2)
    person = None if mode == "identify" else "ada"
    assert summary(events) == [("denied", ("challenge_timeout",), person)]
    [decision] = decisions(events)
    assert decision.decided_at >= asked.asked_at + CHALLENGE_S + CHALLENGE_GRACE_S
    assert challenges(events) == []
    assert decisions(run(decider, clock, [[live(face, UNSURE)]] * 10)) == []


def test_a_wrong_motion_seen_at_the_challenges_end_is_still_spoof() -> None:
    clock = ManualClock()
    decider = live_door(clock, "challenge")
    face = good(1, ("ada", 0.3))
    _, asked = ask(decider, clock, face)
    events = run(decider, clock, [[live(face, UNSURE)]] * frames_for(CHALLENGE_S))
    wrong = dataclasses.replace(SPOOFED, challenge=asked.challenge, decided_by=("challenge",))
    events += run(decider, clock, [[live(face, wrong)]])
    assert summary(events) == [("spoof", ("presentation_attack",), None)]


@pytest.mark.parametrize("liveness", ["passive", "challenge"])
@pytest.mark.parametrize("mode", ["identify", "verify", "verify_only"])
def test_granted_only_ever_on_a_realface_frame(mode: str, liveness: str) -> None:
    """Random sequences of liveness results and match distances, tracks ending and claims: every
    granted decision is made on a frame whose liveness is realface."""
    rng = random.Random(f"{mode}-{liveness}")
    results = [REAL, SPOOFED, UNSURE, None]
    granted = 0
    for _ in range(40):
        clock = ManualClock()
        decider = live_door(clock, liveness, mode=mode, refractory_s=0.5, unknown_retry_s=0.3)
        track = 1
        for _ in range(120):
            if mode != "identify" and rng.random() < 0.05:
                decider.claim("ada")
            result = rng.choice(results) if rng.random() < 0.3 else REAL if rng.random() < 0.3 else UNSURE
            d = rng.choice([0.2, 0.3, 0.5, 0.7])
            face = {
                "identify": good(track, ("ada", d)),
                "verify": claimed(track, "ada", d, ("ada", d)),
                "verify_only": only_claimed(track, "ada", d),
            }[mode]
            ended = []
            if rng.random() < 0.03:
                ended, track = [track], track + 1
            events = decider.update([] if ended else [live(face, result)], ended=ended)
            clock.advance(DT)
            for decision in events.decisions:
                assert decision.outcome != "granted" or result == REAL, (decision, result)
                assert decision.outcome != "spoof" or result == SPOOFED
                granted += decision.outcome == "granted"
    assert granted > 0


def test_liveness_settings() -> None:
    settings = door(liveness="challenge")
    assert (settings.liveness, settings.liveness_window_s, settings.liveness_min_frames) == (
        "challenge",
        3.0,
        5,
    )
    for bad_settings in [
        {"liveness": "on"},
        {"liveness": True},
        {"liveness_window_s": 0},
        {"liveness_min_frames": 0},
    ]:
        with pytest.raises(ValidationError):
            door(**bad_settings)
