"""The liveness operations: a one-shot check of a few images, and liveness sessions (a terminal's
scoped, short-lived permission to run a few attempts; ``edged.directory.liveness``), with
liveness-with-verify.

Who may: a recognizer runs ``detect_liveness`` and a session's attempt (with the session's auth
token); only a manager creates, gets, lists and deletes sessions (``edged.service.policy``).
Session changes and every attempt are audit records (IDs, the attempt's number and its decision;
never an image, a template or a token); a refused attempt of a session (wrong or expired token, an
expired session, attempts used up) is one too (an unknown session ID is not: it is the caller's
text, and names nothing).

The liveness itself is a ``LivenessAssessor`` (``edged.pipeline.fusion.LivenessChecker`` over the
anti-spoofing model and the face mesh's cues), run under the finder's inference lock (the service's
interpreters are shared by the API's workers), outside the service lock. An attempt is counted
when its token lets it in, before its images are assessed: concurrent attempts cannot exceed
``maxAttempts``, and one that fails (no face, or any other error) has used its turn, without
clearing the challenge the session asks. A ``verifyImage`` sent to a session that has one is refused
before the attempt is counted.

Liveness-with-verify: a reference image at the session's creation (its template sealed in the
session, deleted with it: at most 48 h) or with the attempt (embedded for the call only). The verify
result covers every image the liveness check used: the largest face of each image whose face passes
the quality gate (of every image when none does) is verified against the reference; identical only
if all are, with the lowest confidence. Consecutive images must show the same face (else
``BadArgument``): a victim's photo spliced before another person's live frames is refused.

``passive-active`` sessions: an attempt whose result is ``uncertain`` makes the session ask a random
challenge (in the reply: the terminal's display shows it); the next attempt's images must show it.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from edged.directory.liveness import (
    AttemptOutcome,
    CreatedSession,
    CueReading,
    LivenessSession,
    Mode,
    VerifyOutcome,
    check_settings,
)
from edged.directory.receipts import Receipt
from edged.errors import (
    BadArgument,
    EdgedError,
    LivenessSessionExpired,
    LivenessSessionNotFound,
    ModelError,
    NoFaceDetected,
)
from edged.inference.manifest import Calibration
from edged.pipeline.liveness import CHALLENGES, Challenge, LivenessAssessor, LivenessResult
from edged.pipeline.verify import Verification, verify
from edged.service.access import DirectoryAccess, Operations
from edged.service.finder import FaceFinder
from edged.service.limits import check_range
from edged.service.policy import Caller
from edged.service.settings import DirectorySettings
from edged.types import FloatArray, ImageRGB

logger = logging.getLogger(__name__)

MAX_IMAGES = 32
"""Images of one liveness check (frames of one approach)."""
INTERVAL_RANGE = (0.01, 2.0)
"""Seconds between two images of one check."""
_CHALLENGE: dict[str, Challenge] = {c: c for c in CHALLENGES}


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """A session's attempt: its number, the liveness result, the verify result (with-verify only),
    and the challenge the next attempt must show (passive-active after ``uncertain``; else None)."""

    session_id: str
    number: int
    remaining: int
    liveness: LivenessResult
    verification: Verification | None
    next_challenge: Challenge | None


def outcome_of(result: LivenessResult, verification: Verification | None) -> AttemptOutcome:
    """An attempt's result as the session stores it."""
    return AttemptOutcome(
        decision=result.decision,
        score=result.score,
        cues=tuple(CueReading(c.name, c.value, c.score, c.verdict) for c in result.cues),
        decided_by=result.decided_by,
        frames=result.frames,
        challenge=result.challenge,
        verify=None
        if verification is None
        else VerifyOutcome(
            verification.is_identical,
            verification.confidence,
            verification.distance,
            verification.threshold,
            verification.far,
        ),
    )


class Liveness(Operations):
    """The liveness operations (``FaceService.liveness``). ``assessor`` None: the anti-spoofing
    models are not loaded; sessions can be managed, but a check is ``ModelError``."""

    def __init__(
        self,
        access: DirectoryAccess,
        finder: FaceFinder,
        settings: DirectorySettings,
        calibration: Calibration,
        model_id: str,
        assessor: LivenessAssessor | None,
    ) -> None:
        super().__init__(access, finder, settings, calibration, model_id)
        self.assessor = assessor

    # -- the checks ---------------------------------------------------------------------------------

    def _checker(self) -> LivenessAssessor:
        if self.assessor is None:
            raise ModelError("liveness is not available: the anti-spoofing models are not loaded")
        return self.assessor

    def _assess(
        self, images: Sequence[ImageRGB], interval_s: float, challenge: Challenge | None
    ) -> LivenessResult:
        assessor = self._checker()
        check_range("images count", len(images), 1, MAX_IMAGES)
        check_range("intervalS", interval_s, *INTERVAL_RANGE)
        if challenge is not None and challenge not in CHALLENGES:
            raise BadArgument(f"challenge must be one of {', '.join(CHALLENGES)}, not {challenge!r}")
        return self.finder.exclusive(lambda: assessor.assess(images, interval_s, challenge))

    def detect_liveness(
        self,
        caller: Caller,
        images: Sequence[ImageRGB],
        interval_s: float = 0.1,
    ) -> LivenessResult:
        """The liveness of the face in ``images`` (one: the model alone; several, in order,
        ``interval_s`` apart: every cue). Nothing is stored. No challenge: one the requester chose
        proves nothing (a recording of it turns ``uncertain`` into ``realface``); only a session's
        own challenge (``passive-active``) is checked."""
        self.access.allow(caller, "detect_liveness")
        return self._assess(images, interval_s, None)

    def _template(self, image: ImageRGB, what: str) -> FloatArray:
        face = self.finder.one_face(image, None, what)
        assert face.embedding is not None
        return face.embedding

    def _verify_frames(self, images: Sequence[ImageRGB], reference: FloatArray) -> Verification:
        """The verify result of an attempt: the largest face of every image (the face the liveness
        check assessed) against ``reference``; identical only when every one is, with the lowest
        confidence. The frames whose face passes the quality gate are verified (all of them when
        none does). ``BadArgument`` when two consecutive verified frames do not show the same face:
        the liveness of one face and the identity of another must not make one result. (Frames the
        gate refuses — a profile, a blur — are not compared: their templates drift, and a genuine
        head turn must not be refused for it; the liveness cues ignore them too, so every frame that
        vouched for liveness is a verified one.)"""
        faces = []
        for i, image in enumerate(images):
            found = self.finder.faces(image)
            if not found:
                raise NoFaceDetected(f"no face in image {i + 1} of {len(images)}")
            embedded = self.finder.embed(image, found[0])
            assert embedded.embedding is not None
            faces.append((embedded.quality.ok, embedded.embedding))
        good = [i for i, (ok, _) in enumerate(faces) if ok] or list(range(len(faces)))
        for before, after in itertools.pairwise(good):
            if not verify(faces[before][1], faces[after][1], self.calibration).is_identical:
                raise BadArgument(
                    f"the face of image {after + 1} is not the same face as in image {before + 1}: "
                    "liveness-with-verify needs one person's face in every image"
                )
        results = [verify(faces[i][1], reference, self.calibration) for i in good]
        return max(results, key=lambda v: v.distance)

    # -- sessions -----------------------------------------------------------------------------------

    def create_session(
        self,
        caller: Caller,
        mode: Mode = "passive",
        device_correlation_id: str | None = None,
        token_ttl_s: int = 600,
        max_attempts: int = 3,
        verify_image: ImageRGB | None = None,
    ) -> CreatedSession:
        """A new session and its auth token (returned here only). ``verify_image``: the reference
        face of a liveness-with-verify session (its template sealed in the session)."""
        self.access.allow(caller, "create_liveness_session")
        check_settings(mode, device_correlation_id, token_ttl_s, max_attempts)
        reference = None if verify_image is None else self._template(verify_image, "verifyImage")
        with self.access.change(caller, "create_liveness_session") as change:
            created = self.store.liveness.create(
                mode,
                device_correlation_id,
                token_ttl_s,
                max_attempts,
                reference,
                None if reference is None else self.model_id,
            )
            change.targets = {"sessionId": created.session.session_id}
            change.result = f"ok; {mode}{', with verify' if reference is not None else ''}"
        return created

    def get_session(self, caller: Caller, session_id: str) -> LivenessSession:
        self.access.allow(caller, "get_liveness_session")
        with self.access.lock:
            return self.store.liveness.get(session_id)

    def list_sessions(
        self, caller: Caller, start: str | None = None, top: int = 1000
    ) -> list[LivenessSession]:
        self.access.allow(caller, "list_liveness_sessions")
        check_range("top", top, 1, 1000)
        with self.access.lock:
            return self.store.liveness.page(start, top)

    def delete_session(self, caller: Caller, session_id: str) -> Receipt:
        """Delete the session, its results and its reference template, for real."""
        with self.access.change(caller, "delete_liveness_session") as change:
            change.targets = {"sessionId": session_id}
            receipt = self.store.liveness.delete(session_id)
            change.receipt(receipt)
        return receipt

    def attempt(
        self,
        caller: Caller,
        session_id: str,
        token: str,
        images: Sequence[ImageRGB],
        interval_s: float = 0.1,
        verify_image: ImageRGB | None = None,
    ) -> AttemptResult:
        """One attempt of a session, let in by its auth token (refusals audited). ``verify_image``:
        a reference face for this call only (not with a session that has one)."""
        operation = "liveness_session_attempt"
        self.access.allow(caller, operation)
        self._checker()  # before the attempt is counted
        check_range("images count", len(images), 1, MAX_IMAGES)
        check_range("intervalS", interval_s, *INTERVAL_RANGE)
        try:
            with self.access.lock:
                admitted = self.store.liveness.start_attempt(session_id, token, verify_image is not None)
                session = self.store.liveness.get(session_id)
        except EdgedError as exc:
            if not isinstance(exc, LivenessSessionNotFound) or isinstance(exc, LivenessSessionExpired):
                # a session that exists (an unknown ID is the caller's text: not for the audit log)
                self.access.audit(
                    operation, caller.actor, caller.role, {"sessionId": session_id}, f"refused: {exc.code}"
                )
            raise
        targets = {"sessionId": session_id, "attempt": str(admitted.number)}
        try:
            reference = admitted.reference
            if reference is not None and admitted.model_id != self.model_id:
                raise BadArgument(
                    f"liveness session {session_id!r} holds a reference of recognition model "
                    f"{admitted.model_id}; this terminal verifies with {self.model_id}"
                )
            if verify_image is not None:
                reference = self._template(verify_image, "verifyImage")
            result = self._assess(images, interval_s, _CHALLENGE.get(admitted.challenge or ""))
            verification = None
            if reference is not None:
                verification = self._verify_frames(images, reference)
        except Exception as exc:  # every failure ends the attempt (never "started" for ever)
            code = exc.code if isinstance(exc, EdgedError) else "InternalError"
            with self.access.change(caller, operation) as change:
                change.targets, change.result = targets, f"failed: {code}"
                self.store.liveness.fail_attempt(session_id, admitted.number, code)
            raise
        remaining = session.max_attempts - admitted.number
        ask: Challenge | None = None
        if session.mode == "passive-active" and result.decision == "uncertain" and remaining > 0:
            ask = secrets.choice(CHALLENGES)
        with self.access.change(caller, operation) as change:
            change.targets = targets
            change.result = f"ok; {result.decision}" + (
                "" if verification is None else f", identical {str(verification.is_identical).lower()}"
            )
            self.store.liveness.finish_attempt(
                session_id, admitted.number, outcome_of(result, verification), challenge=ask
            )
        return AttemptResult(session_id, admitted.number, remaining, result, verification, ask)

    # -- retention ----------------------------------------------------------------------------------

    def reap(self) -> int:
        """Delete the sessions 48 h old (the daemon's maintenance thread: at start, every minute)."""
        with self.access.lock:
            count = self.store.liveness.reap()
        if count:
            logger.info("retention: deleted %d liveness sessions (48 h old)", count)
        return count
