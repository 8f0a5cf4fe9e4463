# ruff: noqa: N815  (the field names are the wire names of the cloud face APIs: camelCase)
"""Request and response schemas of the liveness operations (docs/mqtt-api.md, "Liveness"), in the
style of ``edged.api.schemas``: strict, closed, camelCase, the reference service's names where it
has them (``livenessDecision``, ``livenessOperationMode`` ``Passive | PassiveActive``,
``deviceCorrelationId``, ``authTokenTimeToLiveInSeconds``, ``status`` ``NotStarted | Started |
ResultAvailable``, ``verifyImage``, ``verifyResult``). Times are RFC 3339 in UTC.

Images travel base64-encoded, in order (the frames of one approach, ``intervalS`` apart), and are
decoded in memory only; the auth token only in ``authToken``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edged.api.schemas import Closed, Image, Request, Uuid, VerifyResult
from edged.directory.liveness import DEFAULT_MAX_ATTEMPTS, DEFAULT_TOKEN_TTL_S, MAX_ATTEMPTS, TOKEN_TTL_RANGE
from edged.service.liveness import INTERVAL_RANGE, MAX_IMAGES

Images = Annotated[
    list[Image],
    Field(
        min_length=1,
        max_length=MAX_IMAGES,
        description="the frames of one approach, in order (one image: the model cue alone)",
    ),
]
IntervalS = Annotated[
    float,
    Field(ge=INTERVAL_RANGE[0], le=INTERVAL_RANGE[1], description="seconds between two images"),
]
ChallengeName = Literal["turn_left", "turn_right", "blink"]
OperationMode = Literal["Passive", "PassiveActive"]
DeviceCorrelationId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9._:-]{1,64}$",
        description="an opaque device reference (not personal data): 1-64 of A-Z a-z 0-9 . _ : -",
    ),
]


# -- requests ----------------------------------------------------------------------------------------


class DetectLivenessRequest(Request):
    images: Images
    intervalS: IntervalS = 0.1
    # no challenge: one the requester chose proves nothing (only a session's own challenge counts)


class CreateLivenessSessionRequest(Request):
    livenessOperationMode: OperationMode = Field(
        "Passive", description="PassiveActive: an uncertain attempt makes the session ask a challenge"
    )
    deviceCorrelationId: DeviceCorrelationId | None = None
    authTokenTimeToLiveInSeconds: int = Field(
        DEFAULT_TOKEN_TTL_S, ge=TOKEN_TTL_RANGE[0], le=TOKEN_TTL_RANGE[1], description="the token's life"
    )
    maxAttempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=MAX_ATTEMPTS)
    verifyImage: Image | None = Field(
        None, description="liveness-with-verify: the reference face (its template kept ≤ 48 h, sealed)"
    )


class LivenessSessionRef(Request):
    sessionId: Uuid


class LivenessSessionAttemptRequest(LivenessSessionRef):
    authToken: str = Field(min_length=1, max_length=128, description="the session's auth token")
    images: Images
    intervalS: IntervalS = 0.1
    verifyImage: Image | None = Field(
        None, description="a reference face for this attempt only (not with a session that has one)"
    )


# -- responses ---------------------------------------------------------------------------------------


class LivenessCue(Closed):
    name: str = Field(description="model, parallax, blink or challenge (docs/liveness.md)")
    value: float | None = Field(description="the raw measure, in the cue's own unit (null: not measured)")
    score: float = Field(description="the measure mapped to [0, 1]; 1 = live")
    verdict: Literal["real", "spoof", "none"]


class LivenessOutcome(Closed):
    livenessDecision: Literal["realface", "spoofface", "uncertain"]
    score: float
    cues: list[LivenessCue]
    decidedBy: list[str] = Field(description="the cues whose verdict made the decision")
    frames: int = Field(description="images used")
    challenge: ChallengeName | None = Field(None, description="the challenge checked, if any")


class LivenessAttemptResult(LivenessOutcome):
    sessionId: str
    attemptId: int = Field(description="the attempt's number in its session: 1, 2, …")
    attemptsRemaining: int
    verifyResult: VerifyResult | None = Field(None, description="liveness-with-verify: the 1:1 verify")
    nextChallenge: ChallengeName | None = Field(
        None, description="PassiveActive after uncertain: show this; the next attempt must contain it"
    )


class LivenessAttempt(Closed):
    attemptId: int
    startDateTime: str
    result: LivenessOutcome | None = Field(description="None while it runs or when it failed")
    verifyResult: VerifyResult | None = None
    error: str | None = Field(None, description="the error code of an attempt that failed")


class CreatedLivenessSession(Closed):
    sessionId: str
    authToken: str = Field(description="for the terminal; returned only here, stored only as a keyed hash")
    authTokenExpiresDateTime: str
    expiresDateTime: str = Field(description="the session and its data are deleted then (48 h)")


class LivenessSessionInfo(Closed):
    sessionId: str
    livenessOperationMode: OperationMode
    deviceCorrelationId: str | None
    authTokenTimeToLiveInSeconds: int
    maxAttempts: int
    withVerify: bool
    status: Literal["NotStarted", "Started", "ResultAvailable"]
    createdDateTime: str
    sessionStartDateTime: str | None
    expiresDateTime: str
    sessionExpired: bool = Field(description="always false: an expired session is deleted")
    nextChallenge: ChallengeName | None
    attempts: list[LivenessAttempt]


class LivenessSessionList(Closed):
    sessions: list[LivenessSessionInfo]
