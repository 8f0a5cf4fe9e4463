"""Signed requests: who is asking, and may they (Ed25519 signatures, timestamps, nonces).

A signed request carries ``"auth": {"client", "ts", "nonce", "sig"}``. The signature covers

    b"edged-request-v1\\n" + device_id + b"\\n" + operation + b"\\n" + canonical(request without auth.sig)

so it binds the request to one terminal and one operation (no replay to another door or another
operation), and ``auth.client/ts/nonce`` are signed with the body. ``canonical`` is the directory's
(sorted keys, no spaces, ASCII). ``Authenticator.check`` refuses, in this order: a malformed ``auth``
(BadArgument naming the field), an unknown client, a timestamp more than ``signature_window_s`` away
from the clock, a wrong signature, and a nonce already used by that client within the window
(Unauthorized). A nonce is recorded only once the signature verified, so nobody can burn another
client's nonces; it is kept in a small SQLite file (WAL, ``synchronous=FULL``) so a replay is also
refused after a restart, and pruned once older than the window.

Requests without ``auth`` get ``ApiSettings.unsigned_role`` (``none``: refused).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import reprlib
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edged.api.settings import ApiSettings, ClientSettings
from edged.clock import Clock
from edged.directory.crypto import canonical
from edged.directory.nonces import Nonces
from edged.errors import BadArgument, ConfigError, Forbidden, Unauthorized
from edged.secretfile import write_secret
from edged.service import policy
from edged.service.policy import Role

__all__ = [
    "DOMAIN",
    "Authenticator",
    "Principal",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "new_nonce",
    "public_key_b64",
    "sign_request",
    "signing_message",
    "write_private_key",
]

DOMAIN = b"edged-request-v1"
"""The first line of every signed message (a version, and no other edged signature can collide)."""

AUTH_FIELDS = frozenset({"client", "ts", "nonce", "sig"})
NONCE_RE = re.compile(r"(?=[A-Za-z0-9_=-]{16,64}\Z)[A-Za-z0-9_-]+={0,2}")
CLIENT_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""Client IDs (``api.clients`` keys, ``auth.client``): bounded, so nothing long reaches a log or audit."""
NONCE_BYTES = 16
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: the signing client (None when unsigned), its role, and whether signed."""

    client: str | None
    role: Role
    signed: bool

    def may(self, role: Role) -> bool:
        """True when this principal's role includes ``role``."""
        return policy.includes(self.role, role)

    def require(self, role: Role, op: str) -> None:
        """Forbidden unless this principal's role includes ``role`` (the role ``op`` needs)."""
        if not self.may(role):
            who = f"client {self.client!r}" if self.client is not None else "an unsigned request"
            hint = "" if self.signed else "; sign the request with a client key of that role"
            raise Forbidden(f"{op} needs the {role} role; {who} has the {self.role} role{hint}")


# -- the signed message ------------------------------------------------------------------------


def signing_message(device_id: str, op: str, request: Mapping[str, Any]) -> bytes:
    """The bytes a request's signature covers: the whole request with ``auth.sig`` removed."""
    unsigned = dict(request)
    auth = unsigned.get("auth")
    if isinstance(auth, Mapping):
        unsigned["auth"] = {k: v for k, v in auth.items() if k != "sig"}
    return DOMAIN + b"\n" + device_id.encode() + b"\n" + op.encode() + b"\n" + canonical(unsigned)


def new_nonce() -> str:
    """16 random bytes, base64url without padding (22 characters)."""
    return secrets.token_urlsafe(NONCE_BYTES)


def sign_request(
    request: Mapping[str, Any],
    op: str,
    device_id: str,
    client: str,
    private_key: Ed25519PrivateKey,
    now: float,
    nonce: str | None = None,
) -> dict[str, Any]:
    """A new request dict: ``request`` (any ``auth`` it had replaced) with ``auth`` filled in and
    signed for ``op`` on ``device_id``. ``now`` is the wall clock (unix seconds)."""
    signed = {k: v for k, v in request.items() if k != "auth"}
    signed["auth"] = {"client": client, "ts": now, "nonce": nonce if nonce is not None else new_nonce()}
    signature = private_key.sign(signing_message(device_id, op, signed))
    signed["auth"]["sig"] = base64.b64encode(signature).decode("ascii")
    return signed


# -- keys ---------------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as ``ClientSettings.public_key`` wants it: base64 of the 32 raw bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` as an unencrypted PKCS#8 PEM, mode 0600. Never overwrites a file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret(path, pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key PEM (``edged client keygen``); refuse one others can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"signing key {path} does not exist (create one with: edged client keygen --out FILE)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"signing key {path} is readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"signing key {path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is a {type(key).__name__}, not an Ed25519 key")
    return key


def _raw_public_key(text: str, where: str) -> Ed25519PublicKey:
    raw: bytes | None = None
    for altchars in (None, b"-_"):  # standard base64, or base64url
        try:
            raw = base64.b64decode(text.strip().encode("ascii"), altchars=altchars, validate=True)
            break
        except (binascii.Error, ValueError, UnicodeEncodeError):
            continue
    if raw is None or len(raw) != PUBLIC_KEY_BYTES:
        got = "not base64" if raw is None else f"{len(raw)} bytes"
        raise ConfigError(f"{where}: not an Ed25519 public key (want base64 of 32 raw bytes; got {got})")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(client: str, settings: ClientSettings) -> Ed25519PublicKey:
    """The client's public key from ``public_key`` or ``public_key_file``; ConfigError naming it."""
    if settings.public_key is not None:
        return _raw_public_key(settings.public_key, f"api.clients.{client}.public_key")
    path = settings.public_key_file
    assert path is not None  # ClientSettings holds exactly one of the two
    where = f"api.clients.{client}.public_key_file {str(path)!r}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: neither a PEM nor base64 text") from None
        return _raw_public_key(text, where)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{where}: not a PEM public key (SubjectPublicKeyInfo): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where}: a {type(key).__name__}, not an Ed25519 public key")
    return key


# -- the authenticator --------------------------------------------------------------------------


def _finite(ts: object) -> bool:
    """A number a double holds, and not inf or NaN (``10**400`` is an int no float holds)."""
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return False
    try:
        return math.isfinite(ts)
    except OverflowError:
        return False


def _field(auth: Mapping[str, Any], name: str) -> Any:
    if name not in auth:
        raise BadArgument(f"auth.{name} is missing (a signed request has auth.client, ts, nonce, sig)")
    return auth[name]


class Authenticator:
    """Checks requests against the configured clients. Thread-safe; ``close()`` the nonce file."""

    def __init__(self, settings: ApiSettings, device_id: str, clock: Clock, nonce_path: Path | None) -> None:
        self.settings = settings
        self.device_id = device_id
        self.clock = clock
        self._keys = {client: load_public_key(client, cs) for client, cs in settings.clients.items()}
        self._roles: dict[str, Role] = {client: cs.role for client, cs in settings.clients.items()}
        self._nonces = Nonces.open(nonce_path)

    def close(self) -> None:
        self._nonces.close()

    def __enter__(self) -> Authenticator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def nonces_held(self) -> int:
        """How many nonces are remembered (pruned as requests arrive)."""
        return len(self._nonces)

    def check(self, op: str, request: Mapping[str, Any]) -> Principal:
        """The principal behind ``request`` for operation ``op``; BadArgument for a malformed
        ``auth``, Unauthorized for an unsigned request when unsigned requests are refused, an
        unknown client, a stale or future timestamp, a bad signature or a replayed nonce."""
        if "auth" not in request:
            if self.settings.unsigned_role == "none":
                raise Unauthorized(
                    f"{op}: unsigned requests are refused here; sign it (auth) with a client key"
                )
            return Principal(client=None, role=self.settings.unsigned_role, signed=False)
        auth = request["auth"]
        if not isinstance(auth, Mapping):
            raise BadArgument(f"auth must be an object {{client, ts, nonce, sig}}, not {type(auth).__name__}")
        unknown = sorted(
            ascii(k)[1:-1] if isinstance(k, str) else repr(k) for k in auth if k not in AUTH_FIELDS
        )
        if unknown:
            raise BadArgument(f"auth has unknown field(s) {', '.join(unknown)} (want client, ts, nonce, sig)")
        client = _field(auth, "client")
        ts = _field(auth, "ts")
        nonce = _field(auth, "nonce")
        sig = _field(auth, "sig")
        if not isinstance(client, str) or not CLIENT_RE.fullmatch(client):
            raise BadArgument("auth.client must be a client ID: 1-64 characters of A-Z a-z 0-9 _ . -")
        if not _finite(ts):
            raise BadArgument(f"auth.ts must be a finite number (unix seconds), not {reprlib.repr(ts)}")
        if not isinstance(nonce, str) or not NONCE_RE.fullmatch(nonce):
            raise BadArgument("auth.nonce must be 16-64 characters of base64url or hex")
        if not isinstance(sig, str):
            raise BadArgument("auth.sig must be a base64 string")
        try:
            signature = base64.b64decode(sig.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise BadArgument("auth.sig is not base64") from None
        if len(signature) != SIGNATURE_BYTES:
            raise BadArgument(f"auth.sig must be a 64-byte Ed25519 signature, not {len(signature)} bytes")

        key = self._keys.get(client)
        if key is None:
            raise Unauthorized(f"{op}: unknown client {client!r}")
        now = self.clock.now()
        window = self.settings.signature_window_s
        if abs(ts - now) > window:
            raise Unauthorized(
                f"{op}: stale or future timestamp (auth.ts is {ts - now:+.0f} s from the device clock; "
                f"the window is ±{window:g} s)"
            )
        try:
            key.verify(signature, signing_message(self.device_id, op, request))
        except InvalidSignature:
            raise Unauthorized(
                f"{op}: bad signature for client {client!r} (wrong key, or the request, operation or "
                "device differs from what was signed)"
            ) from None
        # Remember the nonce until the timestamp (or the arrival, if later) leaves the window.
        if float(ts) <= self._nonces.watermark:
            raise Unauthorized(
                f"{op}: the timestamp is before the replay memory (nonces older than it are forgotten; "
                "did the device clock step back?): sign it again with the current time"
            )
        if not self._nonces.add(client, nonce, float(ts), max(float(ts), now), now - window):
            raise Unauthorized(f"{op}: replayed request (client {client!r} already used this nonce)")
        return Principal(client=client, role=self._roles[client], signed=True)
