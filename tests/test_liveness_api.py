"""The liveness operations over MQTT, end to end (as tests/test_api.py: a real mosquitto, edged's
request server, the real pipeline with the anti-spoofing models and cues, a real encrypted SQLite
directory, real Ed25519 keys), in MQTT v5 and 3.1.1; every reply validated against the shipped JSON
Schema. The manual clock's expiries are in tests/test_liveness_service.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from directory_helpers import found_on_disk
from mqtt_broker import Broker
from skimage import data
from test_api import Env, make_env

from edged.pipeline.fusion import LivenessChecker
from edged.pipeline.pipeline import FacePipeline
from edged.types import ImageRGB

DECISIONS = ("realface", "spoofface", "uncertain")


@pytest.fixture(params=["5", "3.1.1"])
def env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    broker: Broker,
    pipeline: FacePipeline,
    checker: LivenessChecker,
) -> Iterator[Env]:
    with make_env(tmp_path, broker, pipeline, request.param, set(), liveness=checker) as e:
        yield e


def b64(image: bytes) -> str:
    return base64.b64encode(image).decode("ascii")


@pytest.fixture(scope="module")
def cameraman() -> ImageRGB:
    return np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))


def test_a_session_with_verify_over_mqtt(
    env: Env,
    astronaut: ImageRGB,
    cameraman: ImageRGB,
    encode_image: Callable[..., bytes],
    tmp_path: Path,
) -> None:
    astro, other = b64(encode_image(astronaut, ".jpg")), b64(encode_image(cameraman, ".png"))
    body = {
        "livenessOperationMode": "Passive",
        "deviceCorrelationId": "kiosk-7",
        "authTokenTimeToLiveInSeconds": 120,
        "maxAttempts": 2,
        "verifyImage": astro,
    }
    assert env.error("create_liveness_session", body)["code"] == "Unauthorized"
    assert env.error("create_liveness_session", body, "reception")["code"] == "Forbidden"
    created = env.ok("create_liveness_session", body)
    sid, token = created["sessionId"], created["authToken"]
    assert created["expiresDateTime"].endswith("Z") and len(token) >= 43
    info = env.ok("get_liveness_session", {"sessionId": sid})
    assert info["status"] == "NotStarted" and info["withVerify"] and info["deviceCorrelationId"] == "kiosk-7"
    assert "authToken" not in info and token not in json.dumps(info)
    assert env.error("get_liveness_session", {"sessionId": sid}, "reception")["code"] == "Forbidden"
    assert env.error("list_liveness_sessions", {}, "reception")["code"] == "Forbidden"

    wrong = env.error(
        "liveness_session_attempt", {"sessionId": sid, "authToken": "x" * 43, "images": [astro]}
    )
    assert wrong["code"] == "LivenessTokenInvalid" and "kiosk" not in wrong["message"]
    same = env.ok("liveness_session_attempt", {"sessionId": sid, "authToken": token, "images": [astro]}, None)
    assert same["livenessDecision"] in DECISIONS and same["attemptId"] == 1 and same["attemptsRemaining"] == 1
    assert same["verifyResult"]["isIdentical"] and same["cues"][0]["name"] == "model"
    stranger = env.ok(
        "liveness_session_attempt", {"sessionId": sid, "authToken": token, "images": [other]}, "reception"
    )
    assert not stranger["verifyResult"]["isIdentical"]
    exhausted = env.error(
        "liveness_session_attempt", {"sessionId": sid, "authToken": token, "images": [astro]}
    )
    assert exhausted["code"] == "LivenessAttemptsExhausted"
    info = env.ok("get_liveness_session", {"sessionId": sid})
    assert info["status"] == "ResultAvailable" and [a["attemptId"] for a in info["attempts"]] == [1, 2]
    assert info["attempts"][0]["verifyResult"]["isIdentical"] is True
    assert info["attempts"][1]["verifyResult"]["isIdentical"] is False

    receipt = env.ok("delete_liveness_session", {"sessionId": sid})
    assert receipt["deleted"] == {"livenessSessions": 1, "attempts": 2}
    gone = env.error("liveness_session_attempt", {"sessionId": sid, "authToken": token, "images": [astro]})
    assert gone["code"] == "LivenessSessionNotFound"
    assert (
        env.error("get_liveness_session", {"sessionId": sid}, "manager")["code"] == "LivenessSessionNotFound"
    )
    assert env.ok("list_liveness_sessions", {})["sessions"] == []
    env.store.checkpoint()
    needles = {"token": token.encode(), "image": base64.b64decode(astro)[:4096]}
    assert found_on_disk(tmp_path / "state", needles) == []
    results = [r.result for r in env.store.audit.records() if r.operation == "liveness_session_attempt"]
    assert [r.split(";")[0].split(",")[0] for r in results] == [
        "refused: LivenessTokenInvalid",
        "ok",
        "ok",
        "refused: LivenessAttemptsExhausted",
    ]  # the attempt after the delete names no session: not audited


def test_detect_liveness_and_a_verify_image_with_the_attempt(
    env: Env, astronaut: ImageRGB, cameraman: ImageRGB, encode_image: Callable[..., bytes]
) -> None:
    astro, other = b64(encode_image(astronaut, ".jpg")), b64(encode_image(cameraman, ".png"))
    one = env.ok("detect_liveness", {"images": [astro]}, signer=None)
    assert one["livenessDecision"] in DECISIONS and one["frames"] == 1 and one["decidedBy"] is not None
    several = env.ok("detect_liveness", {"images": [astro, astro, astro], "intervalS": 0.2}, signer=None)
    assert several["frames"] == 3
    assert env.error("detect_liveness", {"images": []})["code"] == "BadArgument"
    assert env.error("detect_liveness", {"images": [astro], "challenge": "wave"})["code"] == "BadArgument"
    # a challenge the requester chose proves nothing: only a session's own challenge is checked
    chosen = env.error("detect_liveness", {"images": [astro, astro], "challenge": "turn_left"})
    assert chosen["code"] == "BadArgument" and "challenge: unknown field" in chosen["message"], chosen
    created = env.ok("create_liveness_session", {"livenessOperationMode": "PassiveActive"})
    attempt = {"sessionId": created["sessionId"], "authToken": created["authToken"], "images": [astro]}
    same = env.ok("liveness_session_attempt", {**attempt, "verifyImage": astro}, signer=None)
    assert same["verifyResult"]["isIdentical"]
    if same["livenessDecision"] == "uncertain":  # PassiveActive asks a challenge after uncertain
        assert same["nextChallenge"] in ("turn_left", "turn_right", "blink")
    different = env.ok("liveness_session_attempt", {**attempt, "verifyImage": other}, signer=None)
    assert not different["verifyResult"]["isIdentical"]
    assert not env.ok("get_liveness_session", {"sessionId": created["sessionId"]})["withVerify"]
    bad = env.error("create_liveness_session", {"deviceCorrelationId": "Jane Doe"}, "manager")
    assert bad["code"] == "BadArgument" and "deviceCorrelationId" in bad["message"]


def test_a_requests_images_share_one_pixel_budget_checked_before_any_is_decoded(
    env: Env, encode_image: Callable[..., bytes]
) -> None:
    """32 PNGs of 4096×4096 zeros (49 KB each: a 2 MB request) would decode to 1.6 GB: refused from
    their headers, naming the first image beyond the budget (2 × the image limit's pixels)."""
    zeros = b64(encode_image(np.zeros((4096, 4096, 3), np.uint8), ".png"))
    budget = 2 * 4096 * 4096
    for op, extra in (
        ("detect_liveness", {}),
        ("liveness_session_attempt", {"sessionId": "0" * 32, "authToken": "x" * 43}),
    ):
        error = env.error(op, {"images": [zeros] * 32, **extra}, signer=None)
        assert error["code"] == "InvalidImageSize", error
        assert "images[2]" in error["message"] and f"{budget:,}" in error["message"], error
