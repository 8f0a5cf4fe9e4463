"""The liveness sessions' repository (``edged.directory.liveness``) on a real encrypted SQLite
directory with a manual clock: the token stored only as its keyed hash, its time-to-live, the
attempts counted, the 48-hour lifetime (the reaper), and deletion that leaves no byte of the
reference template, the token or the session's key in the database or its WAL."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import numpy as np
import pytest
from directory_helpers import MODEL, found_on_disk, int8_bytes, template

from edged.clock import ManualClock
from edged.directory import store as store_module
from edged.directory.crypto import Kek, unseal
from edged.directory.liveness import (
    SESSION_LIFETIME_S,
    AttemptOutcome,
    CueReading,
    VerifyOutcome,
    session_subkey,
)
from edged.directory.schema import MIGRATIONS
from edged.directory.store import Store
from edged.errors import (
    BadArgument,
    DecryptionFailed,
    LivenessAttemptsExhausted,
    LivenessSessionExpired,
    LivenessSessionNotFound,
    LivenessTokenExpired,
    LivenessTokenInvalid,
)

OUTCOME = AttemptOutcome(
    "realface",
    0.93,
    (CueReading("model", 0.93, 0.93, "real"),),
    ("model",),
    1,
    None,
    VerifyOutcome(True, 0.9, 0.5, 0.8, 1e-3),
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(10)


def secrets_of(store: Store, session_id: str, token: str, vector: np.ndarray | None) -> dict[str, bytes]:
    key_id, token_hash, reference = store.db.execute(
        "SELECT key_id, token_hash, reference FROM liveness_sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    (wrapped,) = store.db.execute("SELECT wrapped FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()
    found = {
        "token": token.encode(),
        "token hash": bytes(token_hash),
        "wrapped key": bytes(wrapped),
        "session id": session_id.encode(),
    }
    if vector is not None:
        found |= {
            "template ciphertext": bytes(reference),
            "template float32": np.asarray(vector, "<f4").tobytes(),
            "template int8": int8_bytes(vector),
        }
    return found


def test_a_session_is_created_with_its_settings_and_a_token_stored_only_hashed(
    store: Store, clock: ManualClock, state_dir: Path
) -> None:
    created = store.liveness.create("passive-active", "terminal-7:a.b_c", 120, 2)
    session = created.session
    assert session.mode == "passive-active" and session.device_correlation_id == "terminal-7:a.b_c"
    assert session.created == clock.now() and session.expires == clock.now() + SESSION_LIFETIME_S
    assert session.token_expires == clock.now() + 120 and session.max_attempts == 2
    assert session.status == "notStarted" and session.attempts == () and not session.with_verify
    assert len(created.token) >= 43
    store.checkpoint()
    assert found_on_disk(state_dir, {"token": created.token.encode()}) == []
    defaults = store.liveness.create("passive").session
    assert (defaults.token_ttl_s, defaults.max_attempts, defaults.device_correlation_id) == (600, 3, None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token_ttl_s": 59},
        {"token_ttl_s": 86_401},
        {"max_attempts": 0},
        {"max_attempts": 11},
        {"device_correlation_id": "Jane Doe"},
        {"device_correlation_id": "jane@example.com"},
        {"device_correlation_id": "x" * 65},
        {"device_correlation_id": ""},
        {"device_correlation_id": "kiosk-3\n"},  # a trailing newline: a full match, not re.match's $
    ],
)
def test_out_of_range_settings_are_refused(store: Store, kwargs: dict[str, object]) -> None:
    with pytest.raises(BadArgument):
        store.liveness.create("passive", **kwargs)  # type: ignore[arg-type]
    assert store.liveness.count() == 0


def test_attempts_need_the_token_before_it_expires_and_are_counted(store: Store, clock: ManualClock) -> None:
    created = store.liveness.create("passive", token_ttl_s=60, max_attempts=2)
    other = store.liveness.create("passive")
    sid = created.session.session_id
    with pytest.raises(LivenessTokenInvalid) as wrong:
        store.liveness.start_attempt(sid, other.token)  # another session's token
    assert other.session.session_id not in wrong.value.message
    with pytest.raises(LivenessTokenInvalid):
        store.liveness.start_attempt(sid, "")
    first = store.liveness.start_attempt(sid, created.token)
    assert first.number == 1 and first.reference is None
    assert store.liveness.get(sid).status == "started"
    store.liveness.finish_attempt(sid, 1, OUTCOME)
    got = store.liveness.get(sid)
    assert got.status == "resultAvailable" and got.attempts[0].outcome == OUTCOME
    assert store.liveness.start_attempt(sid, created.token).number == 2
    store.liveness.finish_attempt(sid, 2, None, "NoFaceDetected", challenge="blink")
    got = store.liveness.get(sid)
    assert got.attempts[1].error == "NoFaceDetected" and got.challenge == "blink"
    with pytest.raises(LivenessAttemptsExhausted):
        store.liveness.start_attempt(sid, created.token)
    clock.advance(60)
    with pytest.raises(LivenessTokenExpired):
        store.liveness.start_attempt(sid, created.token)
    with pytest.raises(LivenessTokenInvalid):  # a wrong token tells nothing about expiry or attempts
        store.liveness.start_attempt(sid, other.token)
    assert len(store.liveness.get(sid).attempts) == 2


def test_unknown_sessions_are_not_found(store: Store) -> None:
    for call in (
        lambda: store.liveness.get("nope"),
        lambda: store.liveness.delete("nope"),
        lambda: store.liveness.start_attempt("nope", "token"),
    ):
        with pytest.raises(LivenessSessionNotFound, match="'nope'"):
            call()


def test_the_reference_template_is_sealed_and_given_to_an_admitted_attempt(
    store: Store, rng: np.random.Generator, state_dir: Path
) -> None:
    vector = template(rng)
    created = store.liveness.create("passive", reference=vector, model_id=MODEL)
    assert created.session.with_verify
    sid = created.session.session_id
    store.checkpoint()
    plain = {k: v for k, v in secrets_of(store, sid, created.token, vector).items() if "template " in k}
    plain.pop("template ciphertext")
    assert found_on_disk(state_dir, plain) == [], "the template is stored sealed"
    admitted = store.liveness.start_attempt(sid, created.token)
    assert admitted.reference is not None and admitted.reference.tobytes() == vector.tobytes()


def test_delete_removes_every_byte_of_the_session(
    store: Store, rng: np.random.Generator, state_dir: Path
) -> None:
    vector = template(rng)
    created = store.liveness.create("passive", "dev-1", reference=vector, model_id=MODEL)
    sid = created.session.session_id
    store.liveness.start_attempt(sid, created.token)
    store.liveness.finish_attempt(sid, 1, OUTCOME)
    secrets = secrets_of(store, sid, created.token, vector)
    store.checkpoint()
    assert found_on_disk(state_dir, {"template ciphertext": secrets["template ciphertext"]})
    receipt = store.liveness.delete(sid)
    assert receipt.deleted == {"livenessSessions": 1, "attempts": 1} and receipt.signature
    with pytest.raises(LivenessSessionNotFound):
        store.liveness.get(sid)
    assert store.db.scalar("SELECT COUNT(*) FROM liveness_attempts") == 0
    assert f"liveness:{sid}" not in {r[0] for r in store.db.execute("SELECT owner FROM data_keys")}
    assert found_on_disk(state_dir, secrets) == []


def test_sessions_expire_48_hours_after_creation_and_the_reaper_deletes_them(
    store: Store, clock: ManualClock, rng: np.random.Generator, state_dir: Path
) -> None:
    vector = template(rng)
    old = store.liveness.create("passive", reference=vector, model_id=MODEL, token_ttl_s=86_400)
    clock.advance(3600)
    young = store.liveness.create("passive")
    sid = old.session.session_id
    store.liveness.start_attempt(sid, old.token)
    store.liveness.finish_attempt(sid, 1, OUTCOME)
    secrets = secrets_of(store, sid, old.token, vector)
    clock.advance(SESSION_LIFETIME_S - 3600 - 1)  # 1 s before the old one's 48 h
    assert store.liveness.reap() == 0
    assert store.liveness.get(sid).session_id == sid
    clock.advance(1)
    assert [s.session_id for s in store.liveness.page()] == [young.session.session_id]
    assert store.liveness.reap() == 1
    assert store.liveness.count() == 1
    with pytest.raises(LivenessSessionNotFound):
        store.liveness.get(sid)
    assert found_on_disk(state_dir, secrets) == []
    clock.advance(3600)
    with pytest.raises(LivenessSessionExpired):  # found expired before the reaper ran: reaped now
        store.liveness.start_attempt(young.session.session_id, young.token)
    assert store.liveness.count() == 0


def test_migration_5_adds_the_sessions_to_a_directory_of_version_4(
    state_dir: Path, kek: Kek, clock: ManualClock, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:4])
    old = Store.open(state_dir, kek, clock)
    try:
        assert old.db.user_version() == 4
        face_id = old.transient.add(template(rng), MODEL, 600, client="cli").face_id
    finally:
        old.close()
    monkeypatch.undo()
    store = Store.open(state_dir, kek, clock)
    try:
        assert store.db.user_version() == 5 == len(MIGRATIONS)
        assert store.transient.get(face_id).shape == (128,)  # what version 4 held is kept
        created = store.liveness.create("passive")
        assert store.liveness.start_attempt(created.session.session_id, created.token).number == 1
    finally:
        store.close()


def test_the_token_hash_and_the_template_use_two_keys_derived_from_the_sessions_key(
    store: Store, rng: np.random.Generator
) -> None:
    """One key, one purpose: the token's HMAC and the template's AEAD each under its own HKDF
    subkey of the session's data key, neither under the data key itself."""
    vector = template(rng)
    created = store.liveness.create("passive", reference=vector, model_id=MODEL)
    sid = created.session.session_id
    key_id, token_hash, sealed = store.db.execute(
        "SELECT key_id, token_hash, reference FROM liveness_sessions WHERE session_id = ?", (sid,)
    ).fetchone()
    key = store.keys.unwrap(key_id)
    aad = f"liveness|{sid}|{MODEL}".encode()
    raw_hash = hmac.new(key, f"token|{sid}|{created.token}".encode(), hashlib.sha256).digest()
    assert bytes(token_hash) != raw_hash
    with pytest.raises(DecryptionFailed):
        unseal(key, bytes(sealed), aad)
    token_key, template_key = session_subkey(key, "token"), session_subkey(key, "template")
    assert len({key, token_key, template_key}) == 3
    tokened = hmac.new(token_key, f"token|{sid}|{created.token}".encode(), hashlib.sha256).digest()
    assert bytes(token_hash) == tokened
    assert np.array_equal(np.frombuffer(unseal(template_key, bytes(sealed), aad), "<f4"), vector)
    assert store.liveness.start_attempt(sid, created.token).reference is not None
