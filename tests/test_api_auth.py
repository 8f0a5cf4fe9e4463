"""Signed requests with real Ed25519 keys (``cryptography``), a manual clock and a real SQLite nonce
file: the round trip, every tampering refused, unknown clients, the timestamp window, replays (also
after a restart), nonces that a bad signature must not burn, unsigned requests, malformed ``auth``,
bad key configuration, and the key file helpers."""

from __future__ import annotations

import base64
import json
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edged.api.auth import (
    Authenticator,
    Principal,
    generate_private_key,
    load_private_key,
    public_key_b64,
    sign_request,
    signing_message,
    write_private_key,
)
from edged.api.settings import ApiSettings
from edged.clock import ManualClock
from edged.directory.crypto import canonical
from edged.errors import BadArgument, ConfigError, Forbidden, Unauthorized

DEVICE = "front-door"
OP = "group_create"
BODY: dict[str, Any] = {"personGroupId": "staff", "name": "Zoë's staff ☃", "transaction": "t-1"}
WINDOW = 60.0

KEYS = {"ops": Ed25519PrivateKey.generate(), "boss": Ed25519PrivateKey.generate()}


def wire(request: dict[str, Any]) -> dict[str, Any]:
    """What the server sees: the request sent as JSON and parsed again."""
    parsed: dict[str, Any] = json.loads(json.dumps(request, ensure_ascii=False))
    return parsed


@pytest.fixture
def settings(tmp_path: Path) -> ApiSettings:
    """ops: manager, key inline; boss: admin, key in a PEM SubjectPublicKeyInfo file."""
    pem = tmp_path / "boss.pub.pem"
    pem.write_bytes(
        KEYS["boss"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return ApiSettings.model_validate(
        {
            "signature_window_s": WINDOW,
            "clients": {
                "ops": {"role": "manager", "public_key": public_key_b64(KEYS["ops"])},
                "boss": {"role": "admin", "public_key_file": str(pem)},
            },
        }
    )


@pytest.fixture
def nonce_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "nonces.sqlite3"


@pytest.fixture
def auth(settings: ApiSettings, clock: ManualClock, nonce_path: Path) -> Iterator[Authenticator]:
    with Authenticator(settings, DEVICE, clock, nonce_path) as authenticator:
        yield authenticator


def signed(
    clock: ManualClock, client: str = "ops", op: str = OP, device: str = DEVICE, **kw: Any
) -> dict[str, Any]:
    return sign_request(BODY, op, device, client, KEYS[client], clock.now(), **kw)


def test_round_trip_through_json_gives_the_clients_role(auth: Authenticator, clock: ManualClock) -> None:
    request = signed(clock)
    assert request is not BODY and "auth" not in BODY, "sign_request must not change its argument"
    assert set(request["auth"]) == {"client", "ts", "nonce", "sig"}
    assert len(base64.urlsafe_b64decode(request["auth"]["nonce"] + "==")) >= 16
    assert auth.check(OP, wire(request)) == Principal(client="ops", role="manager", signed=True)
    # the admin's key comes from a PEM file
    assert auth.check(OP, wire(signed(clock, "boss"))) == Principal("boss", "admin", True)
    # the message is exactly the documented one: domain, device, op, canonical body without auth.sig
    unsigned = {**request, "auth": {k: v for k, v in request["auth"].items() if k != "sig"}}
    message = b"edged-request-v1\n" + DEVICE.encode() + b"\n" + OP.encode() + b"\n" + canonical(unsigned)
    assert signing_message(DEVICE, OP, request) == message
    KEYS["ops"].public_key().verify(base64.b64decode(request["auth"]["sig"]), message)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(request: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = request
        for name in parents:
            target = target[name]
        target[leaf] = value

    return change


@pytest.mark.parametrize(
    "tamper",
    [
        _set("name", "Mallory"),
        _set("transaction", "t-2"),
        _set("extra", True),
        _set("auth.ts", 1_800_000_001.0),
        _set("auth.nonce", "A" * 22),
        _set("auth.client", "boss"),  # a known client, but not the one that signed
        lambda r: r.pop("personGroupId"),
    ],
    ids=["field", "transaction", "added-field", "ts", "nonce", "client", "removed-field"],
)
def test_tampered_requests_are_refused_and_burn_no_nonce(
    auth: Authenticator, clock: ManualClock, tamper: Callable[[dict[str, Any]], None]
) -> None:
    request = wire(signed(clock))
    tamper(request)
    with pytest.raises(Unauthorized, match="bad signature"):
        auth.check(OP, request)
    assert auth.nonces_held == 0


def test_signature_binds_operation_and_device(
    settings: ApiSettings, auth: Authenticator, clock: ManualClock
) -> None:
    request = wire(signed(clock))
    with pytest.raises(Unauthorized, match="bad signature"):
        auth.check("person_delete", request)  # replayed to another operation
    with Authenticator(settings, "back-door", clock, None) as other, pytest.raises(Unauthorized, match="bad"):
        other.check(OP, request)  # replayed to another terminal
    assert auth.check(OP, request).client == "ops", "the genuine request still works"


def test_unknown_client_is_refused(auth: Authenticator, clock: ManualClock) -> None:
    stranger = Ed25519PrivateKey.generate()
    request = sign_request(BODY, OP, DEVICE, "stranger", stranger, clock.now())
    with pytest.raises(Unauthorized, match="unknown client 'stranger'"):
        auth.check(OP, wire(request))


@pytest.mark.parametrize("offset", [-WINDOW - 0.5, WINDOW + 0.5, -86_400.0, 86_400.0])
def test_stale_and_future_timestamps_are_refused(
    auth: Authenticator, clock: ManualClock, offset: float
) -> None:
    request = sign_request(BODY, OP, DEVICE, "ops", KEYS["ops"], clock.now() + offset)
    with pytest.raises(Unauthorized, match="stale or future timestamp"):
        auth.check(OP, wire(request))
    assert auth.nonces_held == 0


@pytest.mark.parametrize("offset", [-WINDOW, WINDOW])
def test_timestamps_at_the_edge_of_the_window_pass(
    auth: Authenticator, clock: ManualClock, offset: float
) -> None:
    request = sign_request(BODY, OP, DEVICE, "ops", KEYS["ops"], clock.now() + offset)
    assert auth.check(OP, wire(request)).signed


def test_replay_is_refused_also_after_a_restart(
    settings: ApiSettings, auth: Authenticator, clock: ManualClock, nonce_path: Path
) -> None:
    request = wire(signed(clock))
    auth.check(OP, request)
    clock.advance(WINDOW / 2)
    with pytest.raises(Unauthorized, match="replayed"):
        auth.check(OP, request)
    auth.close()
    with Authenticator(settings, DEVICE, clock, nonce_path) as restarted:
        with pytest.raises(Unauthorized, match="replayed"):
            restarted.check(OP, request)
        # the same nonce from another client is that client's own nonce, not a replay
        other = sign_request(BODY, OP, DEVICE, "boss", KEYS["boss"], clock.now(), request["auth"]["nonce"])
        assert restarted.check(OP, wire(other)).client == "boss"
    with pytest.raises(RuntimeError, match="closed"):  # never a silent fallback to memory
        restarted.check(OP, wire(signed(clock)))


def test_replay_is_refused_in_memory_too(settings: ApiSettings, clock: ManualClock) -> None:
    with Authenticator(settings, DEVICE, clock, None) as memory:
        request = wire(signed(clock))
        memory.check(OP, request)
        with pytest.raises(Unauthorized, match="replayed"):
            memory.check(OP, request)


@pytest.mark.parametrize("on_disk", [True, False])
def test_nonces_are_pruned_once_out_of_the_window(
    settings: ApiSettings, clock: ManualClock, nonce_path: Path, on_disk: bool
) -> None:
    with Authenticator(settings, DEVICE, clock, nonce_path if on_disk else None) as auth:
        for _ in range(5):
            auth.check(OP, wire(signed(clock)))
        future = sign_request(BODY, OP, DEVICE, "ops", KEYS["ops"], clock.now() + WINDOW)
        auth.check(OP, wire(future))
        assert auth.nonces_held == 6
        clock.advance(WINDOW + 1)  # the five are out of the window; the future-dated one is not
        auth.check(OP, wire(signed(clock)))
        assert auth.nonces_held == 2
        with pytest.raises(Unauthorized, match="replayed"):
            auth.check(OP, wire(future))  # its timestamp is still inside the window


def test_a_bad_signature_does_not_burn_the_nonce(auth: Authenticator, clock: ManualClock) -> None:
    genuine = wire(signed(clock))
    # an attacker who saw the nonce (or guesses one) signs with another key under the same client id
    forged = wire(
        sign_request(
            BODY, OP, DEVICE, "ops", Ed25519PrivateKey.generate(), clock.now(), genuine["auth"]["nonce"]
        )
    )
    assert forged["auth"]["nonce"] == genuine["auth"]["nonce"]
    with pytest.raises(Unauthorized, match="bad signature"):
        auth.check(OP, forged)
    assert auth.nonces_held == 0
    assert auth.check(OP, genuine).client == "ops"


def test_concurrent_replays_let_exactly_one_through(auth: Authenticator, clock: ManualClock) -> None:
    request = wire(signed(clock))
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def attempt() -> None:
        start.wait()
        try:
            auth.check(OP, request)
            result = "ok"
        except Unauthorized:
            result = "replayed"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["ok"] + ["replayed"] * 7


def test_unsigned_requests_get_the_unsigned_role(settings: ApiSettings, clock: ManualClock) -> None:
    with Authenticator(settings, DEVICE, clock, None) as auth:
        principal = auth.check("identify", BODY)
        assert principal == Principal(client=None, role="recognizer", signed=False)
        principal.require("recognizer", "identify")
        with pytest.raises(Forbidden, match="group_create needs the manager role"):
            principal.require("manager", "group_create")
    closed = settings.model_copy(update={"unsigned_role": "none"})
    with Authenticator(closed, DEVICE, clock, None) as auth:
        with pytest.raises(Unauthorized, match="unsigned requests are refused"):
            auth.check("identify", BODY)
        assert auth.check(OP, wire(signed(clock))).role == "manager"


def test_roles_include_the_roles_below() -> None:
    admin = Principal("boss", "admin", True)
    admin.require("manager", "person_delete")
    admin.require("admin", "keys_rotate")
    with pytest.raises(Forbidden, match="client 'ops' has the manager role"):
        Principal("ops", "manager", True).require("admin", "keys_rotate")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.update(auth="ops"), "auth"),
        (lambda r: r.update(auth=None), "auth"),
        (lambda r: r["auth"].update(role="admin"), "role"),
        (lambda r: r["auth"].pop("sig"), "auth.sig"),
        (lambda r: r["auth"].pop("nonce"), "auth.nonce"),
        (lambda r: r["auth"].update(client=7), "auth.client"),
        (lambda r: r["auth"].update(ts="1800000000"), "auth.ts"),
        (lambda r: r["auth"].update(ts=True), "auth.ts"),
        (lambda r: r["auth"].update(ts=float("nan")), "auth.ts"),
        (lambda r: r["auth"].update(ts=10**400), "auth.ts"),  # no double holds it
        (lambda r: r["auth"].update({"\ud800": 1}), "auth has unknown field"),  # a lone surrogate
        (lambda r: r["auth"].update(nonce="short"), "auth.nonce"),
        (lambda r: r["auth"].update(nonce="x" * 65), "auth.nonce"),
        (lambda r: r["auth"].update(nonce="a/b+c" * 5), "auth.nonce"),
        (lambda r: r["auth"].update(sig="not base64!"), "auth.sig"),
        (lambda r: r["auth"].update(sig=base64.b64encode(b"x" * 63).decode()), "auth.sig"),
    ],
)
def test_malformed_auth_is_a_bad_argument_naming_the_field(
    auth: Authenticator, clock: ManualClock, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    request = wire(signed(clock))
    change(request)
    with pytest.raises(BadArgument, match=field):
        auth.check(OP, request)
    assert auth.nonces_held == 0


def _pem_of_x25519() -> bytes:
    return (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("client", "file_bytes", "match"),
    [
        ({"public_key": "not base64 at all"}, None, "not base64"),
        ({"public_key": base64.b64encode(b"k" * 31).decode()}, None, "31 bytes"),
        ({"public_key_file": "missing.pem"}, None, "No such file"),
        ({"public_key_file": "x25519.pem"}, _pem_of_x25519(), "not an Ed25519 public key"),
        (
            {"public_key_file": "garbage.pem"},
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "PEM",
        ),
    ],
    ids=["not-base64", "short", "missing-file", "x25519-pem", "garbage-pem"],
)
def test_a_bad_client_key_is_a_config_error_naming_the_client(
    tmp_path: Path, clock: ManualClock, client: dict[str, str], file_bytes: bytes | None, match: str
) -> None:
    if "public_key_file" in client:
        client = {"public_key_file": str(tmp_path / client["public_key_file"])}
        if file_bytes is not None:
            Path(client["public_key_file"]).write_bytes(file_bytes)
    settings = ApiSettings.model_validate({"clients": {"door-admin": {"role": "admin", **client}}})
    with pytest.raises(ConfigError, match=r"api\.clients\.door-admin") as caught:
        Authenticator(settings, DEVICE, clock, None)
    assert match in str(caught.value)


def test_public_key_file_may_hold_base64_raw(tmp_path: Path, clock: ManualClock) -> None:
    key_file = tmp_path / "ops.pub"
    key_file.write_text(public_key_b64(KEYS["ops"]) + "\n")
    settings = ApiSettings.model_validate(
        {"clients": {"ops": {"role": "manager", "public_key_file": str(key_file)}}}
    )
    with Authenticator(settings, DEVICE, clock, None) as auth:
        assert auth.check(OP, wire(signed(clock))).client == "ops"


def test_private_key_file_is_0600_never_overwritten_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "client.pem"
    key = generate_private_key()
    write_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    assert before.startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(ConfigError, match="already exists"):
        write_private_key(path, generate_private_key())
    assert path.read_bytes() == before
    assert public_key_b64(load_private_key(path)) == public_key_b64(key)
    assert len(base64.b64decode(public_key_b64(key))) == 32
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        load_private_key(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_private_key(tmp_path / "nope.pem")


@pytest.mark.parametrize("on_disk", [True, False])
def test_a_forgotten_nonce_cannot_be_replayed_after_the_clock_steps_back(
    settings: ApiSettings, clock: ManualClock, nonce_path: Path, on_disk: bool
) -> None:
    """Pruning forgets nonces older than the window; a replay of such a request must still fail when
    the device clock steps back (NTP on a Pi without an RTC) and its timestamp looks fresh again."""
    with Authenticator(settings, DEVICE, clock, nonce_path if on_disk else None) as auth:
        captured = wire(signed(clock))
        auth.check(OP, captured)
        clock.advance(WINDOW + 5)
        auth.check(OP, wire(signed(clock)))  # prunes the captured request's nonce
        assert auth.nonces_held == 1
        clock.advance(-(WINDOW + 5))  # the clock steps back: the captured ts is "now" again
        with pytest.raises(Unauthorized, match="before the replay memory"):
            auth.check(OP, captured)
        with pytest.raises(Unauthorized, match="before the replay memory"):  # fail closed until caught up
            auth.check(OP, wire(signed(clock)))
        clock.advance(WINDOW + 10)
        assert auth.check(OP, wire(signed(clock))).signed


def test_the_replay_memory_survives_a_restart_with_a_wider_window(
    settings: ApiSettings, clock: ManualClock, nonce_path: Path
) -> None:
    with Authenticator(settings, DEVICE, clock, nonce_path) as auth:
        captured = wire(signed(clock))
        auth.check(OP, captured)
        clock.advance(WINDOW + 5)
        auth.check(OP, wire(signed(clock)))  # prunes the captured request's nonce
    wider = settings.model_copy(update={"signature_window_s": 100 * WINDOW})
    with (
        Authenticator(wider, DEVICE, clock, nonce_path) as auth,  # restarted with a wider window
        pytest.raises(Unauthorized, match="before the replay memory"),
    ):
        auth.check(OP, captured)
