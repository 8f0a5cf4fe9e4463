"""Liveness fusion (edged.pipeline.fusion): the rule over given model scores and cue verdicts (a pure
function, table-driven), the settings, the track's bounded window and its challenge, and
``LivenessChecker`` end to end on real images with the real models (the anti-spoofing pair, the face
pipeline, the iris model)."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
from liveness_helpers import HAMILTON, SILENT_FACE_SAMPLES, closed_eyes, track, video
from pydantic import ValidationError

from edged.config import Config
from edged.errors import NoFaceDetected
from edged.pipeline import cues
from edged.pipeline.antispoof import AntiSpoof
from edged.pipeline.eyes import EyeModel
from edged.pipeline.fusion import LivenessChecker, LivenessSettings, LivenessTrack, fuse, track_cues
from edged.pipeline.liveness import Challenge, Cue, LivenessFrame
from edged.pipeline.pipeline import FacePipeline
from edged.types import Box, Face, ImageRGB
from edged_bench.attacks import head_turn, portrait, screen_attack

SETTINGS = LivenessSettings()
REAL, SPOOF, NONE = "real", "spoof", "none"


def cue(name: str, verdict: str, score: float = 0.5) -> Cue:
    return Cue(name, 0.0, score, verdict)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# the rule, over given numbers


@pytest.mark.parametrize(
    ("name", "scores", "cues", "decision", "decided_by"),
    [
        ("one real image", [0.97], [], "realface", ("model",)),
        ("one printed image", [0.05], [], "spoofface", ("model",)),
        ("the model cannot tell", [0.6], [], "uncertain", ()),
        ("no good frame", [], [], "uncertain", ()),
        (
            "real frames, parallax real too",
            [0.95, 0.97],
            [cue("parallax", REAL, 0.9)],
            "realface",
            ("model", "parallax"),
        ),
        (
            "real model, but the face moved as a plane",
            [0.95, 0.97],
            [cue("parallax", SPOOF, 0.0)],
            "spoofface",
            ("parallax",),
        ),
        (
            "model spoof outvotes a real parallax",
            [0.1, 0.15],
            [cue("parallax", REAL, 1.0)],
            "spoofface",
            ("model",),
        ),
        ("both say spoof", [0.05], [cue("parallax", SPOOF, 0.1)], "spoofface", ("model", "parallax")),
        ("a blink alone is not enough", [0.6, 0.6], [cue("blink", REAL, 1.0)], "uncertain", ()),
        (
            "real with a blink",
            [0.95],
            [cue("blink", REAL, 1.0), cue("parallax", NONE)],
            "realface",
            ("model", "blink"),
        ),
    ],
)
def test_fusion_rule(
    name: str, scores: list[float], cues: list[Cue], decision: str, decided_by: tuple[str, ...]
) -> None:
    result = fuse(scores, cues, SETTINGS, max(len(scores), 1))
    assert result.decision == decision, name
    assert result.decided_by == decided_by, name
    assert 0.0 <= result.score <= 1.0
    assert result.cues[0].name == "model"


@pytest.mark.parametrize(
    ("name", "scores", "challenge", "decision"),
    [
        ("asked, not done yet: no realface even with a real model", [0.97], NONE, "uncertain"),
        ("asked and passed: a grey model becomes realface", [0.6], REAL, "realface"),
        ("asked and failed: spoof", [0.97], SPOOF, "spoofface"),
        ("passed, but the model says spoof", [0.05], REAL, "spoofface"),
    ],
)
def test_fusion_with_a_challenge(name: str, scores: list[float], challenge: str, decision: str) -> None:
    result = fuse(
        scores, [cue("challenge", challenge, 1.0 if challenge == REAL else 0.0)], SETTINGS, 3, "blink"
    )
    assert result.decision == decision, name
    assert result.challenge == "blink"


def test_the_model_cue_is_the_mean_over_the_good_frames() -> None:
    result = fuse([0.97, 0.93], [], SETTINGS, 2)
    model = result.cues[0]
    assert model.value == pytest.approx(0.95) and model.verdict == "real"
    assert math.isnan(fuse([], [], SETTINGS, 1).cues[0].value)
    assert fuse([0.99], [], LivenessSettings(min_frames=2), 1).decision == "uncertain"


def test_the_model_must_say_real_over_the_newest_frames_too() -> None:
    # a photo raised in front of a live face on the same track: 37 live frames, then 3 good frames
    # of the photo; the mean over the 40 (0.94) would say real
    scores = [0.97] * 37 + [0.6] * 3
    assert sum(scores) / len(scores) >= SETTINGS.model_real
    result = fuse(scores, [], SETTINGS, len(scores))
    assert result.decision == "uncertain", result
    assert result.cues[0].verdict == "none" and result.cues[0].score < SETTINGS.model_real
    # a spoof-looking end is a spoof verdict; a live end after grey frames is real only by both means
    assert fuse([0.97] * 37 + [0.1] * 5, [], SETTINGS, 42).decision == "spoofface"
    assert fuse([0.6] * 3 + [0.97] * 37, [], SETTINGS, 40).decision == "realface"
    assert fuse(scores, [], LivenessSettings(recent_frames=100), 40).decision == "realface"


def test_settings_are_ordered_and_in_the_root_config() -> None:
    with pytest.raises(ValidationError):
        LivenessSettings(model_real=0.3, model_spoof=0.5)
    with pytest.raises(ValidationError):
        LivenessSettings(parallax_spoof=0.2, parallax_real=0.1)
    with pytest.raises(ValidationError):
        LivenessSettings(unknown=1)  # type: ignore[call-arg]
    assert Config().liveness == SETTINGS
    assert Config.model_validate({"liveness": {"model_real": 0.95}}).liveness.model_real == 0.95
    for name, field in LivenessSettings.model_fields.items():
        assert field.description, name


# ---------------------------------------------------------------------------------------------
# the track


def still_frame(t: float, points: np.ndarray, score: float | None = 0.95) -> LivenessFrame:
    return LivenessFrame(t, Box(0, 0, 10, 10), points, True, score)


def test_the_track_keeps_a_bounded_window(astronaut_face: Face) -> None:
    assert astronaut_face.mesh is not None
    track_ = LivenessTrack(LivenessSettings(window_frames=8))
    for i in range(50):
        track_.add(still_frame(i * 0.1, astronaut_face.mesh.points, 0.1 if i < 42 else 0.97))
    assert len(track_.frames) == 8
    # only the window counts: the 42 spoof-looking frames before it are gone
    result = track_.result(5.0)
    assert result.decision == "realface" and result.frames == 8


def test_a_challenge_on_a_still_track(astronaut_face: Face) -> None:
    assert astronaut_face.mesh is not None
    points = astronaut_face.mesh.points
    track_ = LivenessTrack(SETTINGS)
    for i in range(5):
        track_.add(still_frame(i * 0.1, points))
    assert track_.result(0.4).decision == "realface"
    track_.ask("turn_left", 0.5)
    for i in range(5, 20):
        track_.add(still_frame(i * 0.1, points))
    # inside the window nothing has happened yet: held; after it, the challenge was not met (no
    # motion at all: not answered, so uncertain, not spoof)
    assert track_.result(1.9).decision == "uncertain"
    late = track_.result(0.5 + SETTINGS.challenge_window_s + 0.1)
    assert late.decision == "uncertain"
    assert late.challenge == "turn_left"
    challenge = next(c for c in late.cues if c.name == "challenge")
    assert challenge.verdict == "none" and challenge.score == 0.0


def test_a_track_of_a_real_head_turn_passes_its_challenge(
    pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    assert astronaut_face.mesh is not None
    images = head_turn(astronaut, astronaut_face.mesh.points, 1)  # one side: measured turn_right
    frames = track(pipeline, images, scores=[0.6] * len(images))  # a grey model: the challenge decides
    assert len(frames) == len(images)
    for asked, decision in (("turn_right", "realface"), ("turn_left", "spoofface"), ("blink", "spoofface")):
        track_ = LivenessTrack(SETTINGS)
        track_.ask(asked, 0.0)  # type: ignore[arg-type]
        for frame in frames:
            track_.add(frame)
        result = track_.result(frames[0].t + SETTINGS.challenge_window_s)
        assert result.decision == decision, (asked, result)


def test_frames_the_quality_gate_refused_answer_no_challenge(
    pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    # the splice: one sharp frame (the face a liveness-with-verify checks) and a turn that only
    # frames the gate refused show (nobody verifies whose face they are): the turn is not seen
    assert astronaut_face.mesh is not None
    images = head_turn(astronaut, astronaut_face.mesh.points, 1)
    frames = track(pipeline, images, scores=[0.6] * len(images))
    assert all(f.quality_ok for f in frames)
    spliced = [frames[0], *(dataclasses.replace(f, quality_ok=False) for f in frames[1:])]
    for answer in (frames, spliced):
        track_ = LivenessTrack(SETTINGS)
        track_.ask("turn_right", 0.0)
        for frame in answer:
            track_.add(frame)
        result = track_.result(frames[0].t + SETTINGS.challenge_window_s)
        expected = "realface" if answer is frames else "uncertain"
        assert result.decision == expected, result
    assert {c.name for c in result.cues} == {"model", "challenge"}  # no parallax, no blink from one frame


def test_a_turn_whose_first_frames_the_gate_refused_is_measured_from_the_pose_at_the_ask(
    pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    # a blur as the head starts turning: the first gate-passing frame after the ask is at the turn's
    # peak, so measured from it the return to centre would look like the other turn (a spoof);
    # measured from the last good frame before the ask, it is the asked turn
    assert astronaut_face.mesh is not None
    turn = track(pipeline, head_turn(astronaut, astronaut_face.mesh.points, 1), scores=[0.6] * 12)
    yaws = [cues.yaw_degrees(f.points) for f in turn]
    peak = max(range(len(turn)), key=lambda i: abs(yaws[i] - yaws[0]))
    assert abs(yaws[peak] - yaws[0]) >= SETTINGS.turn_deg and abs(yaws[-1] - yaws[0]) < 5
    before = [dataclasses.replace(turn[0], t=0.1 * i) for i in range(3)]  # still, then the ask
    shown = 0.3
    after = [
        dataclasses.replace(f, t=shown + 0.1 * i, quality_ok=f.quality_ok and not 0 < i < peak)
        for i, f in enumerate(turn)
    ]
    after[0] = dataclasses.replace(after[0], quality_ok=False)  # the frame of the ask too
    track_ = LivenessTrack(SETTINGS)
    for frame in before:
        track_.add(frame)
    track_.ask("turn_right", shown)
    for frame in after:
        track_.add(frame)
    result = track_.result(shown + SETTINGS.challenge_window_s)
    assert result.decision == "realface", result


def test_a_tracks_result_rests_on_the_frames_the_gate_passed(
    pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    # the door's liveness_min_frames counts what the result rests on: refused frames say nothing
    assert astronaut_face.mesh is not None
    turn = track(pipeline, head_turn(astronaut, astronaut_face.mesh.points, 1), scores=[0.97] * 12)
    track_ = LivenessTrack(SETTINGS)
    for i, frame in enumerate(turn[:6]):
        track_.add(dataclasses.replace(frame, quality_ok=frame.quality_ok and i % 3 != 0))
    assert track_.result(turn[5].t).frames == 4


def at_fps(turn: list[LivenessFrame], fps: float, back: bool) -> list[LivenessFrame]:
    """A subject at ``fps`` doing a head turn (the real meshes of ``turn``: out to its largest yaw
    change and, with ``back``, back again): still until 1 s (the challenge is asked then), out over
    1 s, held 0.5 s, back over 1 s (or held), still until past the 3 s window."""
    yaws = [cues.yaw_degrees(f.points) for f in turn]
    peak = max(range(len(turn)), key=lambda i: abs(yaws[i] - yaws[0]))

    def index(t: float) -> int:
        if t < 1.0:
            return 0
        if t < 2.0:
            return round((t - 1.0) * peak)
        if t < 2.5 or not back:
            return peak
        if t < 3.5:
            return peak + round((t - 2.5) * (len(turn) - 1 - peak))
        return len(turn) - 1

    return [dataclasses.replace(turn[index(i / fps)], t=i / fps) for i in range(round(4.2 * fps))]


@pytest.mark.parametrize("fps", [10.0, 30.0])
@pytest.mark.parametrize("back", [False, True])
def test_a_challenge_is_judged_from_the_ask_whatever_the_frame_rate(
    pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face, fps: float, back: bool
) -> None:
    # at 30 fps the 3 s window is 90 frames, more than the track's window of 40: the check still
    # starts at the ask (the reference yaw), so a turn, held or turned back, passes
    assert astronaut_face.mesh is not None
    images = head_turn(astronaut, astronaut_face.mesh.points, 1)  # one side and back: turn_right
    turn = track(pipeline, images, scores=[0.6] * len(images))
    assert len(turn) == len(images)
    track_ = LivenessTrack(SETTINGS)
    for frame in at_fps(turn, fps, back):
        track_.add(frame)
        if frame.t >= 1.0 and track_.challenge is None:
            track_.ask("turn_right", frame.t)  # as the worker: after the frame of the ask
    assert len(track_.frames) == SETTINGS.window_frames
    result = track_.result(1.0 + SETTINGS.challenge_window_s + 0.1)
    assert result.decision == "realface", result
    assert "challenge" in result.decided_by


def test_a_blink_challenge_on_real_closed_eyes(
    pipeline: FacePipeline, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    assert astronaut_face.mesh is not None
    shut = closed_eyes(astronaut, astronaut_face.mesh.points)
    images = [astronaut, astronaut, astronaut, shut, astronaut, astronaut]
    frames = track(pipeline, images, eyes=EyeModel.load(), scores=[0.6] * len(images))
    cues = dict((c.name, c) for c in track_cues(frames, SETTINGS, ("blink", 0.0), now=10.0))
    assert cues["blink"].verdict == "real"
    assert cues["challenge"].verdict == "real"
    turned = track_cues(frames, SETTINGS, ("turn_left", 0.0), now=10.0)
    assert (
        next(c for c in turned if c.name == "challenge").verdict == "spoof"
    )  # a blink when a turn was asked


# ---------------------------------------------------------------------------------------------
# LivenessChecker on real images with the real models


@pytest.fixture(scope="module")
def checker(pipeline: FacePipeline) -> LivenessChecker:
    return LivenessChecker(pipeline, AntiSpoof.load(), SETTINGS, EyeModel.load())


def sample(name: str) -> ImageRGB:
    path = SILENT_FACE_SAMPLES / f"image_{name}.jpg"
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    return np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


def test_one_real_image_is_a_realface_by_the_model_alone(checker: LivenessChecker) -> None:
    result = checker.assess([sample("T1")])
    assert result.decision == "realface"
    assert result.decided_by == ("model",) and [c.name for c in result.cues] == ["model"]
    assert result.frames == 1 and result.score > SETTINGS.model_real


@pytest.mark.parametrize("name", ["F1", "F2"])
def test_a_printed_or_screen_sample_is_never_a_realface(checker: LivenessChecker, name: str) -> None:
    # F1 (a print, turned 60°: the quality gate refuses it, so the model is not asked) and F2 (a
    # screen, p(real) 0.38) come out uncertain; neither may come out realface
    assert checker.assess([sample(name)]).decision != "realface"


def test_the_astronaut_portrait(checker: LivenessChecker, astronaut: ImageRGB) -> None:
    # a scanned photographic print of a real face: the model gives it 0.46, so uncertain — never
    # realface from one image of a photograph
    result = checker.assess([astronaut])
    assert result.decision == "uncertain"
    assert 0.2 < result.cues[0].value < 0.9


def test_an_image_without_a_face(
    checker: LivenessChecker, astronaut: ImageRGB, no_face_images: dict[str, ImageRGB]
) -> None:
    with pytest.raises(NoFaceDetected):
        checker.assess([no_face_images["coffee"]])
    with pytest.raises(NoFaceDetected, match="image 2 of 2"):
        checker.assess([astronaut, no_face_images["grey"]])


def test_a_moving_screen_sequence_is_never_a_realface(
    checker: LivenessChecker, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    photo = portrait(astronaut, astronaut_face.detection.box)
    for seed in (1, 2, 3):  # seeds whose every frame shows the face
        result = checker.assess(screen_attack(photo, seed, frames=12))
        assert result.decision != "realface", (seed, result)
        assert {c.name for c in result.cues} == {"model", "parallax", "blink"}


def test_real_head_motion_is_a_realface(checker: LivenessChecker) -> None:
    if not HAMILTON.is_file():
        pytest.skip(f"{HAMILTON} is not here")
    frames = video(HAMILTON, step=3)[28:40]  # 1.2 s of the performer turning his head
    result = checker.assess(frames, interval_s=0.1)
    assert result.decision == "realface", result
    assert "model" in result.decided_by
    assert result.frames == 12


def test_a_challenge_needs_its_motion_in_the_images(checker: LivenessChecker) -> None:
    t1 = sample("T1")
    # the same real image over and over: no motion, so any challenge fails or stays unanswered
    for asked in ("turn_left", "turn_right", "blink"):
        challenge: Challenge = asked  # type: ignore[assignment]
        result = checker.assess([t1] * 4, challenge=challenge)
        assert result.decision != "realface"
        assert result.challenge == asked
