"""The liveness operations of the request API (docs/mqtt-api.md, "Liveness"), registered like the
others (``edged.api.operations.operation``; ``operations`` imports this module at its end, so
``OPERATIONS`` always holds them): a one-shot ``detect_liveness`` and a session's attempt
(recognizer; the attempt also needs the session's auth token), and creating, getting, listing and
deleting liveness sessions (manager). The service is ``edged.service.liveness``."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from edged.api import liveness_schemas as ls
from edged.api import schemas as s
from edged.api import wire
from edged.api.operations import Context, change, operation
from edged.directory.liveness import Attempt, LivenessSession
from edged.directory.liveness import VerifyOutcome as StoredVerify
from edged.pipeline.verify import Verification
from edged.types import ImageRGB

_MODES = {"Passive": "passive", "PassiveActive": "passive-active"}
_WIRE_MODES = {v: k for k, v in _MODES.items()}
_STATUS = {"notStarted": "NotStarted", "started": "Started", "resultAvailable": "ResultAvailable"}


def _time(t: float) -> str:
    """Unix seconds as RFC 3339 (UTC, ``Z``)."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


PIXEL_BUDGET_IMAGES = 2
"""A liveness request's images (and its verifyImage) together: at most this many images at the
image limit's ``max_pixels`` (2 × 4096 × 4096 by default), checked from their headers before any
is decoded (up to 32 frames of up to 1280×720 fit)."""


def _images(
    c: Context, images: list[str], verify_image: str | None = None
) -> tuple[list[ImageRGB], ImageRGB | None]:
    """The request's frames and its verifyImage, within the request's pixel budget."""
    named = [(f"images[{i}]", text) for i, text in enumerate(images)]
    if verify_image is not None:
        named.append(("verifyImage", verify_image))
    decoded = c.images(named, PIXEL_BUDGET_IMAGES * c.limits.max_pixels)
    if verify_image is None:
        return decoded, None
    return decoded[:-1], decoded[-1]


def _verify(v: Verification | StoredVerify | None) -> s.VerifyResult | None:
    if v is None:
        return None
    return wire.verification(Verification(v.is_identical, v.confidence, v.distance, v.threshold, v.far))


def _attempt(a: Attempt) -> ls.LivenessAttempt:
    return ls.LivenessAttempt(
        attemptId=a.number,
        startDateTime=_time(a.time),
        result=None if a.outcome is None else wire.liveness(a.outcome),
        verifyResult=None if a.outcome is None else _verify(a.outcome.verify),
        error=a.error,
    )


def _session(session: LivenessSession) -> ls.LivenessSessionInfo:
    started = session.started
    return ls.LivenessSessionInfo.model_validate(
        {
            "sessionId": session.session_id,
            "livenessOperationMode": _WIRE_MODES[session.mode],
            "deviceCorrelationId": session.device_correlation_id,
            "authTokenTimeToLiveInSeconds": session.token_ttl_s,
            "maxAttempts": session.max_attempts,
            "withVerify": session.with_verify,
            "status": _STATUS[session.status],
            "createdDateTime": _time(session.created),
            "sessionStartDateTime": None if started is None else _time(started),
            "expiresDateTime": _time(session.expires),
            "sessionExpired": False,
            "nextChallenge": session.challenge,
            "attempts": [_attempt(a).model_dump() for a in session.attempts],
        }
    )


@operation(
    "detect_liveness", ls.DetectLivenessRequest, ls.LivenessOutcome, "is the face live? (nothing stored)"
)
def _detect_liveness(c: Context, r: ls.DetectLivenessRequest) -> ls.LivenessOutcome:
    images, _ = _images(c, r.images)
    result = c.service.liveness.detect_liveness(c.caller, images, r.intervalS)
    return wire.liveness(result)


@change(
    "create_liveness_session",
    ls.CreateLivenessSessionRequest,
    ls.CreatedLivenessSession,
    "a liveness session and its auth token (48 h; with verifyImage: liveness-with-verify)",
)
def _create_liveness_session(c: Context, r: ls.CreateLivenessSessionRequest) -> ls.CreatedLivenessSession:
    created = c.service.liveness.create_session(
        c.caller,
        "passive-active" if r.livenessOperationMode == "PassiveActive" else "passive",
        r.deviceCorrelationId,
        r.authTokenTimeToLiveInSeconds,
        r.maxAttempts,
        None if r.verifyImage is None else c.image(r.verifyImage),
    )
    return ls.CreatedLivenessSession(
        sessionId=created.session.session_id,
        authToken=created.token,
        authTokenExpiresDateTime=_time(created.session.token_expires),
        expiresDateTime=_time(created.session.expires),
    )


@operation(
    "get_liveness_session", ls.LivenessSessionRef, ls.LivenessSessionInfo, "one session and its results"
)
def _get_liveness_session(c: Context, r: ls.LivenessSessionRef) -> ls.LivenessSessionInfo:
    return _session(c.service.liveness.get_session(c.caller, r.sessionId))


@operation("list_liveness_sessions", s.ListRequest, ls.LivenessSessionList, "the live sessions")
def _list_liveness_sessions(c: Context, r: s.ListRequest) -> ls.LivenessSessionList:
    sessions = c.service.liveness.list_sessions(c.caller, r.start, r.top)
    return ls.LivenessSessionList(sessions=[_session(x) for x in sessions])


@change(
    "delete_liveness_session",
    ls.LivenessSessionRef,
    s.ReceiptResult,
    "the session, its results and its reference template, for real",
)
def _delete_liveness_session(c: Context, r: ls.LivenessSessionRef) -> BaseModel:
    return wire.receipt(c.service.liveness.delete_session(c.caller, r.sessionId))


@operation(
    "liveness_session_attempt",
    ls.LivenessSessionAttemptRequest,
    ls.LivenessAttemptResult,
    "one attempt of a session, with its auth token (audited)",
)
def _liveness_session_attempt(c: Context, r: ls.LivenessSessionAttemptRequest) -> ls.LivenessAttemptResult:
    images, verify_image = _images(c, r.images, r.verifyImage)
    done = c.service.liveness.attempt(c.caller, r.sessionId, r.authToken, images, r.intervalS, verify_image)
    return ls.LivenessAttemptResult.model_validate(
        {
            **wire.liveness(done.liveness).model_dump(),
            "sessionId": done.session_id,
            "attemptId": done.number,
            "attemptsRemaining": done.remaining,
            "verifyResult": None if done.verification is None else _verify(done.verification),
            "nextChallenge": done.next_challenge,
        }
    )
