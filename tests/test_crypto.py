"""The directory's key hierarchy and authenticated encryption (``edged.directory.crypto``): AES-256-GCM
seal/unseal bound to associated data, key files (formats, permissions, systemd credentials, where
they are looked for), key IDs, key wrapping and the device's Ed25519 signing key. Real keys, real
files, real ``cryptography``."""

from __future__ import annotations

import base64
import os
import random
import stat
from pathlib import Path

import pytest

from edged import environment
from edged.directory import crypto
from edged.errors import ConfigError, DecryptionFailed


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key-file lookup reads the environment: start every test without those variables."""
    monkeypatch.delenv(environment.KEY_FILE, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


_RNG = random.Random(20240603)  # deterministic "random" bytes for parametrize IDs


def some_bytes(n: int) -> bytes:
    return _RNG.randbytes(n)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


# -- seal / unseal --------------------------------------------------------------------------------


def test_seal_unseal_round_trip_and_layout() -> None:
    key = crypto.new_data_key()
    assert len(key) == crypto.KEY_BYTES
    plaintext = b"Zebulon Quixotic-Marchbanks"
    blob = crypto.seal(key, plaintext, b"name|p1|g1")
    assert len(blob) == crypto.NONCE_BYTES + len(plaintext) + 16  # nonce ‖ ciphertext ‖ tag
    assert plaintext not in blob
    assert crypto.unseal(key, blob, b"name|p1|g1") == plaintext
    assert crypto.unseal(key, crypto.seal(key, b"", b"aad"), b"aad") == b""


def test_seal_uses_a_fresh_nonce_every_time() -> None:
    key = crypto.new_data_key()
    blobs = {crypto.seal(key, b"same plaintext", b"aad") for _ in range(20)}
    assert len(blobs) == 20
    assert len({b[: crypto.NONCE_BYTES] for b in blobs}) == 20


def test_new_data_keys_differ() -> None:
    assert len({crypto.new_data_key() for _ in range(10)}) == 10


def test_unseal_with_wrong_aad_fails() -> None:
    key = crypto.new_data_key()
    blob = crypto.seal(key, b"template bytes", b"face|p1|f1|m1")
    with pytest.raises(DecryptionFailed, match="failed authentication"):
        crypto.unseal(key, blob, b"face|p2|f1|m1")
    with pytest.raises(DecryptionFailed):
        crypto.unseal(key, blob, b"")


def test_unseal_with_wrong_key_fails() -> None:
    blob = crypto.seal(crypto.new_data_key(), b"template bytes", b"aad")
    with pytest.raises(DecryptionFailed, match="a template failed authentication"):
        crypto.unseal(crypto.new_data_key(), blob, b"aad", "a template")


@pytest.mark.parametrize("position", [0, crypto.NONCE_BYTES, crypto.NONCE_BYTES + 5, -1])
def test_unseal_of_a_flipped_byte_fails(position: int) -> None:
    """Nonce, ciphertext or tag: any changed bit is detected."""
    key = crypto.new_data_key()
    blob = bytearray(crypto.seal(key, b"0123456789abcdef", b"aad"))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionFailed):
        crypto.unseal(key, bytes(blob), b"aad")


@pytest.mark.parametrize("length", [0, 5, crypto.NONCE_BYTES + 15])
def test_unseal_of_a_too_short_blob_says_truncated(length: int) -> None:
    key = crypto.new_data_key()
    blob = crypto.seal(key, b"", b"aad")[:length]
    with pytest.raises(DecryptionFailed, match=rf"truncated \({length} bytes\)"):
        crypto.unseal(key, blob, b"aad")


def test_unseal_of_a_cut_off_blob_fails() -> None:
    key = crypto.new_data_key()
    blob = crypto.seal(key, b"0123456789abcdef" * 4, b"aad")
    with pytest.raises(DecryptionFailed):
        crypto.unseal(key, blob[:-1], b"aad")
    with pytest.raises(DecryptionFailed):
        crypto.unseal(key, blob + b"\x00", b"aad")


# -- wrapping data keys -----------------------------------------------------------------------------


def test_wrap_unwrap_round_trip_bound_to_the_owner() -> None:
    kek = crypto.Kek(os.urandom(32), "test")
    dek = crypto.new_data_key()
    wrapped = crypto.wrap_key(kek, dek, b"person:p1")
    assert dek not in wrapped
    assert crypto.unwrap_key(kek, wrapped, b"person:p1") == dek
    with pytest.raises(DecryptionFailed, match="wrapped data key"):
        crypto.unwrap_key(kek, wrapped, b"person:p2")
    with pytest.raises(DecryptionFailed):
        crypto.unwrap_key(crypto.Kek(os.urandom(32), "other"), wrapped, b"person:p1")
    # a wrapped key is not an ordinary ciphertext of the same associated data (domain separation)
    with pytest.raises(DecryptionFailed):
        crypto.unseal(kek.key, wrapped, b"person:p1")


# -- key files ------------------------------------------------------------------------------------


def test_create_key_file_writes_base64_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    kek = crypto.create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_bytes()
    assert text.endswith(b"\n")
    assert base64.b64decode(text.strip(), validate=True) == kek.key
    assert len(kek.key) == 32
    assert kek.source == str(path)
    assert crypto.read_kek(path) == kek


def test_create_key_file_is_random(tmp_path: Path) -> None:
    assert crypto.create_key_file(tmp_path / "a").key != crypto.create_key_file(tmp_path / "b").key


def test_create_key_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    kek = crypto.create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"already exists; it is never overwritten") as excinfo:
        crypto.create_key_file(path)
    assert str(path) in str(excinfo.value)
    assert path.read_bytes() == before
    assert crypto.read_kek(path).key == kek.key


def test_create_key_file_in_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "kek"
    with pytest.raises(ConfigError, match="cannot create key file") as excinfo:
        crypto.create_key_file(path)
    assert str(path) in str(excinfo.value)


def test_read_kek_accepts_raw_32_bytes(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert crypto.read_kek(write_private(tmp_path / "raw", key)).key == key


def test_read_kek_accepts_raw_32_bytes_that_look_like_whitespace(tmp_path: Path) -> None:
    """A raw key is taken as it is, even if it starts or ends with bytes that are whitespace."""
    key = b"\n" + os.urandom(30) + b" "
    assert crypto.read_kek(write_private(tmp_path / "raw", key)).key == key


@pytest.mark.parametrize("newline", [b"", b"\n", b"\r\n"])
def test_read_kek_accepts_hex(tmp_path: Path, newline: bytes) -> None:
    key = os.urandom(32)
    assert crypto.read_kek(write_private(tmp_path / "hex", key.hex().encode() + newline)).key == key
    upper = write_private(tmp_path / "HEX", key.hex().upper().encode() + newline)
    assert crypto.read_kek(upper).key == key


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_read_kek_accepts_base64(tmp_path: Path, newline: bytes) -> None:
    key = os.urandom(32)
    path = write_private(tmp_path / "b64", base64.b64encode(key) + newline)
    kek = crypto.read_kek(path)
    assert kek.key == key
    assert kek.source == str(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        some_bytes(16),
        some_bytes(31),
        some_bytes(33) + b"\xff",
        some_bytes(16).hex().encode() + b"\n",
        some_bytes(48).hex().encode(),
        base64.b64encode(some_bytes(24)) + b"\n",
        base64.b64encode(some_bytes(33)) + b"\n",
    ],
    ids=["empty", "raw16", "raw31", "raw34", "hex16", "hex48", "b64-24", "b64-33"],
)
def test_read_kek_rejects_a_wrong_length(tmp_path: Path, content: bytes) -> None:
    path = write_private(tmp_path / "short", content)
    with pytest.raises(ConfigError, match="does not hold a 256-bit key") as excinfo:
        crypto.read_kek(path)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize(
    "content",
    [some_bytes(16).hex().encode(), base64.b64encode(some_bytes(24))],
    ids=["hex-128-bit", "base64-192-bit"],
)
def test_read_kek_does_not_take_a_short_text_key_for_32_raw_bytes(tmp_path: Path, content: bytes) -> None:
    """32 hex digits (``openssl rand -hex 16``, a 128-bit key) or 32 base64 characters (24 bytes)
    written without a newline are 32 bytes long: they must be refused as a too-short key, not used
    as a "raw" 256-bit key made of ASCII letters (a raw random key is never all hex or base64)."""
    assert len(content) == crypto.KEY_BYTES
    path = write_private(tmp_path / "short-text", content)
    with pytest.raises(ConfigError, match="does not hold a 256-bit key"):
        crypto.read_kek(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_read_kek_rejects_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = write_private(tmp_path / "kek", base64.b64encode(os.urandom(32)), mode)
    with pytest.raises(ConfigError, match=r"readable by other users") as excinfo:
        crypto.read_kek(path)
    assert str(path) in str(excinfo.value)
    assert f"{mode:o}" in str(excinfo.value)
    assert "chmod 600" in str(excinfo.value)


def test_read_kek_accepts_owner_read_only(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert crypto.read_kek(write_private(tmp_path / "kek", key, 0o400)).key == key


def test_read_kek_of_a_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(ConfigError, match="does not exist") as excinfo:
        crypto.read_kek(path)
    assert str(path) in str(excinfo.value)
    assert "edged keys init" in str(excinfo.value)


def test_read_kek_accepts_a_readable_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd decrypts ``LoadCredentialEncrypted=`` into ``$CREDENTIALS_DIRECTORY`` with its own
    permissions (the directory is private to the service): the file mode is not ours to police."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    key = os.urandom(32)
    path = write_private(creds / crypto.CREDENTIAL_NAME, base64.b64encode(key), 0o444)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert crypto.read_kek(path).key == key
    # the same file outside the credentials directory is refused
    outside = write_private(tmp_path / "kek", base64.b64encode(key), 0o444)
    with pytest.raises(ConfigError, match="readable by other users"):
        crypto.read_kek(outside)


def test_read_kek_credential_exemption_is_only_for_files_inside_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/run/credentials/edged`` must not exempt ``/run/credentials/edged-other/kek`` (a string
    prefix is not a path prefix), nor ``…/edged/../elsewhere/kek``."""
    creds = tmp_path / "creds"
    creds.mkdir()
    sibling = tmp_path / "creds-other"
    sibling.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    readable = write_private(sibling / "kek", base64.b64encode(os.urandom(32)), 0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        crypto.read_kek(readable)
    with pytest.raises(ConfigError, match="readable by other users"):
        crypto.read_kek(creds / ".." / "creds-other" / "kek")


def test_read_kek_with_an_empty_credentials_directory_variable_still_checks_the_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty ``CREDENTIALS_DIRECTORY`` means no credentials (``locate_key_file`` treats it so);
    it must not exempt every world-readable file."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "")
    readable = write_private(tmp_path / "kek", base64.b64encode(os.urandom(32)), 0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        crypto.read_kek(readable)


# -- where the key file is looked for ----------------------------------------------------------------


def test_locate_key_file_argument_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(environment.KEY_FILE, str(tmp_path / "env"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert crypto.locate_key_file(tmp_path / "arg") == tmp_path / "arg"


def test_locate_key_file_environment_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(environment.KEY_FILE, str(tmp_path / "env"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert crypto.locate_key_file(None) == tmp_path / "env"


def test_locate_key_file_systemd_credential_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert crypto.locate_key_file(None) == tmp_path / "creds" / "edged-kek"
    monkeypatch.setenv(environment.KEY_FILE, "")  # empty is unset
    assert crypto.locate_key_file(None) == tmp_path / "creds" / "edged-kek"


def test_locate_key_file_without_any_source_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as excinfo:
        crypto.locate_key_file(None)
    message = str(excinfo.value)
    assert "--key-file" in message
    assert "EDGED_KEY_FILE" in message
    assert "edged-kek" in message
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "")
    monkeypatch.setenv(environment.KEY_FILE, "")
    with pytest.raises(ConfigError):
        crypto.locate_key_file(None)


def test_located_credential_reads_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    key = os.urandom(32)
    write_private(creds / "edged-kek", key.hex().encode() + b"\n", 0o440)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert crypto.read_kek(crypto.locate_key_file(None)).key == key


# -- key IDs --------------------------------------------------------------------------------------


def test_key_id_is_a_stable_fingerprint_not_the_key() -> None:
    key = bytes(range(32))
    kek = crypto.Kek(key, "a")
    assert kek.key_id == crypto.Kek(key, "another source").key_id  # depends on the key only
    assert len(kek.key_id) == 16
    int(kek.key_id, 16)  # hex
    assert kek.key_id != crypto.Kek(bytes(range(1, 33)), "a").key_id
    for encoded in (key.hex(), base64.b64encode(key).decode()):
        for start in range(0, len(encoded) - 8):
            assert encoded[start : start + 8] not in kek.key_id
    assert key.hex()[:16] != kek.key_id


def test_kek_repr_hides_the_key() -> None:
    key = os.urandom(32)
    text = repr(crypto.Kek(key, "file"))
    assert key.hex() not in text
    assert repr(key) not in text
    assert "file" in text


def test_key_id_is_the_same_for_every_encoding_of_a_key(tmp_path: Path) -> None:
    key = os.urandom(32)
    ids = {
        crypto.read_kek(write_private(tmp_path / "raw", key)).key_id,
        crypto.read_kek(write_private(tmp_path / "hex", key.hex().encode())).key_id,
        crypto.read_kek(write_private(tmp_path / "b64", base64.b64encode(key) + b"\n")).key_id,
    }
    assert len(ids) == 1


# -- the device key -------------------------------------------------------------------------------


def test_device_signer_signs_and_verifies() -> None:
    signer = crypto.DeviceSigner.generate()
    payload = b'{"operation":"delete_person","personId":"p1"}'
    signature = signer.sign(payload)
    assert len(bytes.fromhex(signature)) == 64
    assert len(bytes.fromhex(signer.public_hex)) == 32
    assert crypto.verify_signature(signer.public_hex, payload, signature)


def test_tampered_payload_or_signature_or_other_key_fails() -> None:
    signer = crypto.DeviceSigner.generate()
    payload = b'{"deleted":{"faces":3,"persons":1}}'
    signature = signer.sign(payload)
    assert not crypto.verify_signature(signer.public_hex, payload.replace(b"3", b"2"), signature)
    assert not crypto.verify_signature(signer.public_hex, payload + b" ", signature)
    flipped = bytearray(bytes.fromhex(signature))
    flipped[10] ^= 0x40
    assert not crypto.verify_signature(signer.public_hex, payload, flipped.hex())
    other = crypto.DeviceSigner.generate()
    assert not crypto.verify_signature(other.public_hex, payload, signature)
    # malformed inputs are a failed verification, not an exception
    assert not crypto.verify_signature("zz", payload, signature)
    assert not crypto.verify_signature(signer.public_hex, payload, "not hex")
    assert not crypto.verify_signature(signer.public_hex, payload, signature[:-2])


def test_device_signer_round_trips_through_its_private_bytes() -> None:
    signer = crypto.DeviceSigner.generate()
    raw = signer.private_bytes()
    assert len(raw) == 32
    again = crypto.DeviceSigner.from_bytes(raw)
    assert again.public_hex == signer.public_hex
    assert crypto.verify_signature(signer.public_hex, b"x", again.sign(b"x"))
    assert crypto.DeviceSigner.generate().public_hex != signer.public_hex
