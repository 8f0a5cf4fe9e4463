"""Keys and authenticated encryption for the directory (the ``cryptography`` package).

Key hierarchy:

    key-encryption key (KEK, 32 bytes, supplied by the operator: a key file or a systemd credential)
      └── wraps, per person / face list / transient face, a data key (DEK, 32 bytes, AES-256-GCM)
            └── encrypts that owner's templates, name and userData

Every ciphertext is ``nonce (12) ‖ ciphertext ‖ tag (16)``, and its associated data binds it to its
row (owner, face and model IDs), so a blob copied into another row fails to decrypt. Deleting an
owner destroys its wrapped DEK: the ciphertexts left anywhere (a backup, a freed page) are noise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edged import environment
from edged.errors import ConfigError, DecryptionFailed
from edged.secretfile import write_secret

KEY_BYTES = 32
NONCE_BYTES = 12
CREDENTIAL_NAME = "edged-kek"


@dataclass(frozen=True, slots=True)
class Kek:
    """The operator's key-encryption key. ``key_id`` is a public fingerprint (never the key)."""

    key: bytes = field(repr=False)
    source: str

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"edged-kek-id|" + self.key).hexdigest()[:16]


def _parse_key(data: bytes, source: str) -> bytes:
    text = data.strip()
    if len(data) == KEY_BYTES and not re.fullmatch(rb"[0-9A-Za-z+/=\s]+", data):
        return data  # raw bytes (a random key is practically never all printable text)
    for decode in (binascii.unhexlify, base64.b64decode):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise ConfigError(
        f"{source} does not hold a 256-bit key (want 32 raw bytes, 64 hex digits or base64 of 32 bytes; "
        "create one with: edged keys init)"
    )


def read_kek(path: Path) -> Kek:
    """Read a key file; refuse one that other users can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist (create one with: edged keys init)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    credentials = environment.credentials_dir()
    is_credential = credentials is not None and path.resolve().is_relative_to(credentials.resolve())
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and not is_credential:
        raise ConfigError(
            f"key file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    return Kek(_parse_key(data, f"key file {path}"), str(path))


def locate_key_file(key_file: Path | None) -> Path:
    """``--key-file``, else ``$EDGED_KEY_FILE``, else ``$CREDENTIALS_DIRECTORY/edged-kek`` (systemd
    ``LoadCredentialEncrypted=edged-kek:…``, TPM-bound where the board has one)."""
    if key_file is not None:
        return key_file
    from_env = environment.key_file()
    if from_env is not None:
        return from_env
    credentials = environment.credentials_dir()
    if credentials is not None:
        return credentials / CREDENTIAL_NAME
    raise ConfigError(
        "no key-encryption key: give --key-file FILE, set EDGED_KEY_FILE, or provide the systemd "
        f"credential {CREDENTIAL_NAME!r} (create a key with: edged keys init --key-file FILE)"
    )


def create_key_file(path: Path) -> Kek:
    """Write a new random key (base64, mode 0600). Never overwrites."""
    key = os.urandom(KEY_BYTES)
    write_secret(path, base64.b64encode(key) + b"\n")
    return Kek(key, str(path))


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes, what: str = "ciphertext") -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise DecryptionFailed(f"{what} is truncated ({len(blob)} bytes)")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise DecryptionFailed(
            f"{what} failed authentication (tampered, moved to another row, or wrong key)"
        ) from None


def wrap_key(kek: Kek, data_key: bytes, aad: bytes) -> bytes:
    return seal(kek.key, data_key, b"dek|" + aad)


def unwrap_key(kek: Kek, blob: bytes, aad: bytes) -> bytes:
    return unseal(kek.key, blob, b"dek|" + aad, "a wrapped data key")


class DeviceSigner:
    """The device's Ed25519 key: signs deletion receipts (and, later, what the device publishes)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> DeviceSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeviceSigner:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def public_hex(self) -> str:
        return (
            self._private.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex()
        )

    def sign(self, data: bytes) -> str:
        return self._private.sign(data).hex()


def verify_signature(public_hex: str, data: bytes, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            bytes.fromhex(signature_hex), data
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def canonical(value: Any) -> bytes:
    """The bytes a signature covers: JSON with sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
