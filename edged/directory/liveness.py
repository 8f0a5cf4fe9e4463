"""Liveness sessions: a terminal's scoped, short-lived permission to run a few liveness attempts,
their results, and (liveness-with-verify) the reference face's template.

A session has its own data key (owner ``liveness:<session ID>``, wrapped by the KEK like a person's).
The auth token handed to the terminal is 32 random bytes, returned once by ``create`` and stored only
as HMAC-SHA256; the reference template is sealed (AES-GCM): each under its own subkey of that key
(``session_subkey``, HKDF-SHA256). A session lives exactly ``SESSION_LIFETIME_S`` (48 h) from its
creation, whatever its token's time-to-live (60 s–24 h): ``reap`` (the daemon's maintenance thread)
deletes it then, ``delete`` at once. Either deletes its
rows and shreds its key in one transaction, then checkpoints the WAL: with ``secure_delete`` on, no
byte of the template, the token's hash or the results stays in the database or its WAL.

An attempt stores its number, time and outcome (decision, score, the cues' readings, the verify
result): never an image or a template. ``start_attempt`` counts an attempt before the images are
assessed (so concurrent attempts cannot exceed ``max_attempts``); ``finish_attempt`` writes its
outcome (or why it has none).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edged.clock import Clock
from edged.directory.crypto import seal, unseal
from edged.directory.db import Db, new_id
from edged.directory.keys import Keys
from edged.directory.receipts import Receipt
from edged.directory.sealed import template_bytes
from edged.errors import (
    BadArgument,
    LivenessAttemptsExhausted,
    LivenessSessionExpired,
    LivenessSessionNotFound,
    LivenessTokenExpired,
    LivenessTokenInvalid,
)
from edged.types import FloatArray

SESSION_LIFETIME_S = 48 * 3600
"""A session and everything in it is deleted this long after its creation (fixed)."""
TOKEN_TTL_RANGE = (60, 86_400)
DEFAULT_TOKEN_TTL_S = 600
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS = 10
TOKEN_BYTES = 32
DEVICE_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""A device correlation ID: an opaque device reference (a UUID, a terminal's asset tag), 1–64
characters of letters, digits and ``. _ : -``. No spaces or ``@``: it cannot hold a name or an
e-mail address, so it is not personal data; it is stored as given."""

Mode = Literal["passive", "passive-active"]
"""``passive``: the images decide (uncertain stays uncertain); ``passive-active``: an uncertain
attempt makes the session ask a challenge, which the next attempt's images must show."""
Status = Literal["notStarted", "started", "resultAvailable"]
"""No attempt yet; an attempt is being assessed; the latest attempt has its outcome."""

_OWNER = "liveness"
_COLUMNS = (
    "session_id, mode, device_correlation_id, token_ttl, token_expires, max_attempts, created, expires,"
    " challenge, key_id, token_hash, reference, model_id"
)


@dataclass(frozen=True, slots=True)
class _Row:
    """A stored session, still sealed (``_COLUMNS`` in order)."""

    session_id: str
    mode: str
    device_correlation_id: str | None
    token_ttl: int
    token_expires: float
    max_attempts: int
    created: float
    expires: float
    challenge: str | None
    key_id: str
    token_hash: bytes = field(repr=False)
    reference: bytes | None = field(repr=False)
    model_id: str | None


@dataclass(frozen=True, slots=True)
class CueReading:
    """One cue of an attempt's outcome (``edged.pipeline.liveness.Cue``, stored)."""

    name: str
    value: float
    score: float
    verdict: str


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """The verify part of a liveness-with-verify attempt (no template, no image)."""

    is_identical: bool
    confidence: float
    distance: float
    threshold: float
    far: float


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What an attempt found: the liveness decision, its score and cues, and the verify result."""

    decision: str
    score: float
    cues: tuple[CueReading, ...]
    decided_by: tuple[str, ...]
    frames: int
    challenge: str | None = None
    verify: VerifyOutcome | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a session: its number (1, 2, …), when it started, and its outcome (None while
    it runs, or when it failed: ``error`` names why, e.g. ``NoFaceDetected``)."""

    number: int
    time: float
    outcome: AttemptOutcome | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LivenessSession:
    session_id: str
    mode: Mode
    device_correlation_id: str | None
    token_ttl_s: int
    token_expires: float
    max_attempts: int
    with_verify: bool
    created: float
    expires: float
    challenge: str | None
    """The challenge the next attempt must show (passive-active, after an uncertain attempt)."""
    attempts: tuple[Attempt, ...]

    @property
    def status(self) -> Status:
        if not self.attempts:
            return "notStarted"
        last = self.attempts[-1]
        return "started" if last.outcome is None and last.error is None else "resultAvailable"

    @property
    def started(self) -> float | None:
        return self.attempts[0].time if self.attempts else None


@dataclass(frozen=True, slots=True)
class CreatedSession:
    session: LivenessSession
    token: str = field(repr=False)
    """The auth token: returned once, stored only as its keyed hash."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """An attempt let in by its token: its number, the challenge it must show, and the session's
    reference template (liveness-with-verify; decrypted, in memory only)."""

    session_id: str
    number: int
    challenge: str | None
    reference: FloatArray | None = field(default=None, repr=False)
    model_id: str | None = None
    """The recognition model of ``reference``."""


def check_device_correlation_id(value: str | None) -> str | None:
    if value is not None and not DEVICE_CORRELATION_ID.fullmatch(value):
        raise BadArgument(
            "deviceCorrelationId must be 1-64 characters of letters, digits, '.', '_', ':' and '-'"
        )
    return value


def check_settings(mode: str, device_correlation_id: str | None, token_ttl_s: int, max_attempts: int) -> None:
    """``BadArgument`` for a session setting out of its range (checked before any inference)."""
    low, high = TOKEN_TTL_RANGE
    if not low <= token_ttl_s <= high:
        raise BadArgument(f"authTokenTimeToLiveInSeconds must be {low}-{high}, not {token_ttl_s}")
    if not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise BadArgument(f"maxAttempts must be 1-{MAX_ATTEMPTS}, not {max_attempts}")
    if mode not in ("passive", "passive-active"):
        raise BadArgument(f"the mode must be passive or passive-active, not {mode!r}")
    check_device_correlation_id(device_correlation_id)


def session_subkey(key: bytes, purpose: Literal["token", "template"]) -> bytes:
    """The session key's subkey for one purpose (HKDF-SHA256): the token's HMAC and the reference
    template's AEAD never share a key."""
    info = f"edged liveness session {purpose}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def _token_hash(key: bytes, session_id: str, token: str) -> bytes:
    token_key = session_subkey(key, "token")
    return hmac.new(token_key, f"token|{session_id}|{token}".encode(), hashlib.sha256).digest()


def _template_aad(session_id: str, model_id: str) -> bytes:
    return f"{_OWNER}|{session_id}|{model_id}".encode()


def _outcome_json(outcome: AttemptOutcome) -> str:
    return json.dumps(
        {
            "decision": outcome.decision,
            "score": outcome.score,
            "cues": [[c.name, c.value, c.score, c.verdict] for c in outcome.cues],
            "decidedBy": list(outcome.decided_by),
            "frames": outcome.frames,
            "challenge": outcome.challenge,
            "verify": None
            if outcome.verify is None
            else [
                outcome.verify.is_identical,
                outcome.verify.confidence,
                outcome.verify.distance,
                outcome.verify.threshold,
                outcome.verify.far,
            ],
        },
        sort_keys=True,
    )


def _outcome(text: str) -> AttemptOutcome:
    data = json.loads(text)
    verify = data["verify"]
    return AttemptOutcome(
        decision=data["decision"],
        score=float(data["score"]),
        cues=tuple(CueReading(n, float(v), float(s), d) for n, v, s, d in data["cues"]),
        decided_by=tuple(data["decidedBy"]),
        frames=int(data["frames"]),
        challenge=data["challenge"],
        verify=None if verify is None else VerifyOutcome(bool(verify[0]), *(float(v) for v in verify[1:])),
    )


class LivenessSessions:
    """The ``liveness_sessions`` and ``liveness_attempts`` tables. Not part of the directory version
    (a session is no change to the persons)."""

    def __init__(self, db: Db, keys: Keys, clock: Clock) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock

    def create(
        self,
        mode: Mode,
        device_correlation_id: str | None = None,
        token_ttl_s: int = DEFAULT_TOKEN_TTL_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        reference: FloatArray | None = None,
        model_id: str | None = None,
    ) -> CreatedSession:
        """A new session and its auth token. ``reference``: the template to verify attempts against
        (sealed with the session's key, with ``model_id``)."""
        check_settings(mode, device_correlation_id, token_ttl_s, max_attempts)
        if (reference is None) != (model_id is None):
            raise ValueError("a reference template goes with its model ID")
        session_id = new_id()
        token = base64.urlsafe_b64encode(os.urandom(TOKEN_BYTES)).decode("ascii").rstrip("=")
        now = self.clock.now()
        with self.db.tx() as db:
            owner = self.keys.create(f"{_OWNER}:{session_id}")
            sealed = (
                None
                if reference is None or model_id is None
                else seal(
                    session_subkey(owner.key, "template"),
                    template_bytes(reference),
                    _template_aad(session_id, model_id),
                )
            )
            db.execute(
                "INSERT INTO liveness_sessions (session_id, key_id, token_hash, token_ttl, token_expires,"
                " device_correlation_id, mode, max_attempts, reference, model_id, challenge, created,"
                " expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (
                    session_id,
                    owner.key_id,
                    _token_hash(owner.key, session_id, token),
                    token_ttl_s,
                    now + token_ttl_s,
                    device_correlation_id,
                    mode,
                    max_attempts,
                    sealed,
                    model_id,
                    now,
                    now + SESSION_LIFETIME_S,
                ),
            )
        return CreatedSession(self.get(session_id), token)

    def _row(self, session_id: str) -> _Row:
        """The session's row; ``LivenessSessionNotFound``, or ``LivenessSessionExpired`` for one
        past its 48 h (reaped on the spot, unless inside a transaction that then rolls back)."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM liveness_sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise LivenessSessionNotFound(
                f"liveness session {session_id!r} does not exist (sessions are deleted 48 h after "
                "their creation)"
            )
        found = _Row(*row)
        if found.expires <= self.clock.now():
            self.reap()
            raise LivenessSessionExpired(f"liveness session {session_id!r} has expired (48 h)")
        return found

    def _attempts(self, session_id: str) -> tuple[Attempt, ...]:
        rows = self.db.execute(
            "SELECT attempt, time, outcome, error FROM liveness_attempts WHERE session_id = ?"
            " ORDER BY attempt",
            (session_id,),
        ).fetchall()
        return tuple(Attempt(int(n), float(t), None if o is None else _outcome(o), e) for n, t, o, e in rows)

    def _session(self, row: _Row) -> LivenessSession:
        return LivenessSession(
            session_id=row.session_id,
            mode="passive-active" if row.mode == "passive-active" else "passive",
            device_correlation_id=row.device_correlation_id,
            token_ttl_s=row.token_ttl,
            token_expires=row.token_expires,
            max_attempts=row.max_attempts,
            with_verify=row.reference is not None,
            created=row.created,
            expires=row.expires,
            challenge=row.challenge,
            attempts=self._attempts(row.session_id),
        )

    def get(self, session_id: str) -> LivenessSession:
        return self._session(self._row(session_id))

    def page(self, start: str | None = None, top: int = 1000) -> list[LivenessSession]:
        """Up to ``top`` live sessions whose IDs sort after ``start``, by ID (expired ones, not yet
        reaped, are left out)."""
        ids = self.db.column(
            "SELECT session_id FROM liveness_sessions WHERE session_id > ? AND expires > ?"
            " ORDER BY session_id LIMIT ?",
            (start or "", self.clock.now(), top),
        )
        return [self.get(session_id) for session_id in ids]

    def count(self) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM liveness_sessions"))

    def start_attempt(self, session_id: str, token: str, own_reference: bool = False) -> Admitted:
        """Let an attempt in with the session's token and count it, in one transaction. In order:
        ``LivenessSessionNotFound`` / ``LivenessSessionExpired``; ``LivenessTokenInvalid`` (not this
        session's token: nothing else about the session is told); ``LivenessTokenExpired``;
        ``LivenessAttemptsExhausted``; ``BadArgument`` when the attempt brings its own reference
        (``own_reference``) to a session that has one. A refused attempt is not counted."""
        self._row(session_id)  # an expired session is reaped here, outside the transaction
        with self.db.tx() as db:
            row = self._row(session_id)
            key = self.keys.unwrap(row.key_id)
            if not hmac.compare_digest(row.token_hash, _token_hash(key, session_id, token)):
                raise LivenessTokenInvalid(f"this is not the auth token of liveness session {session_id!r}")
            session = self._session(row)
            if session.token_expires <= self.clock.now():
                raise LivenessTokenExpired(
                    f"the auth token of liveness session {session_id!r} has expired "
                    f"(it lived {session.token_ttl_s} s)"
                )
            if len(session.attempts) >= session.max_attempts:
                raise LivenessAttemptsExhausted(
                    f"liveness session {session_id!r} has used all its {session.max_attempts} attempts"
                )
            if own_reference and row.reference is not None:
                raise BadArgument("this session has its verify image already; send none with the attempt")
            number = len(session.attempts) + 1
            db.execute(
                "INSERT INTO liveness_attempts (session_id, attempt, time) VALUES (?, ?, ?)",
                (session_id, number, self.clock.now()),
            )
            reference = None
            if row.reference is not None:
                aad = _template_aad(session_id, str(row.model_id))
                plain = unseal(
                    session_subkey(key, "template"),
                    row.reference,
                    aad,
                    "a liveness session's reference template",
                )
                reference = np.frombuffer(plain, "<f4").astype(np.float32)
        model_id = None if row.reference is None else str(row.model_id)
        return Admitted(session_id, number, session.challenge, reference, model_id)

    def finish_attempt(
        self,
        session_id: str,
        number: int,
        outcome: AttemptOutcome | None,
        error: str | None = None,
        challenge: str | None = None,
    ) -> None:
        """Write an attempt's outcome (or the code of the error that left it without one), and the
        challenge the next attempt must show (None: none). A session deleted meanwhile stays deleted."""
        with self.db.tx() as db:
            db.execute(
                "UPDATE liveness_attempts SET outcome = ?, error = ? WHERE session_id = ? AND attempt = ?",
                (None if outcome is None else _outcome_json(outcome), error, session_id, number),
            )
            db.execute(
                "UPDATE liveness_sessions SET challenge = ? WHERE session_id = ?", (challenge, session_id)
            )

    def fail_attempt(self, session_id: str, number: int, error: str) -> None:
        """Mark an attempt failed (``error``: the code of why it has no outcome); the challenge the
        session asks stays as it was (the next attempt must still show it)."""
        with self.db.tx() as db:
            db.execute(
                "UPDATE liveness_attempts SET outcome = NULL, error = ? WHERE session_id = ? AND attempt = ?",
                (error, session_id, number),
            )

    def delete(self, session_id: str) -> Receipt:
        """Delete the session, its attempts and its key (the template and the token's hash become
        noise), then checkpoint the WAL. ``LivenessSessionNotFound`` / ``…Expired``."""
        row = self._row(session_id)
        with self.db.tx() as db:
            attempts = int(
                db.scalar("SELECT COUNT(*) FROM liveness_attempts WHERE session_id = ?", (session_id,))
            )
            db.execute("DELETE FROM liveness_sessions WHERE session_id = ?", (session_id,))  # cascades
            shredded = self.keys.shred([row.key_id])
        self.db.checkpoint()
        return self.keys.receipt(
            "delete_liveness_session",
            {"sessionId": session_id},
            {"livenessSessions": 1, "attempts": attempts},
            shredded,
            self.clock.now(),
        )

    def reap(self) -> int:
        """Delete every session 48 h old or older, with its attempts and key; returns how many."""
        now = self.clock.now()
        with self.db.tx() as db:
            key_ids = db.column("SELECT key_id FROM liveness_sessions WHERE expires <= ?", (now,))
            db.execute("DELETE FROM liveness_sessions WHERE expires <= ?", (now,))
            self.keys.shred(key_ids)
        if key_ids:
            self.db.checkpoint()
        return len(key_ids)
