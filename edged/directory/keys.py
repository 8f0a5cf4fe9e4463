"""The directory's key material, kept in the ``meta`` and ``data_keys`` tables, all wrapped by the
operator's key-encryption key (KEK):

- the KEK check (a value sealed with the KEK: a wrong key is refused before anything is written);
- the device's signing key (deletion receipts, the audit chain's head);
- the card key (cards are stored as HMAC-SHA256 of their number under it);
- one data key per owner (person, face list, transient face). Deleting an owner deletes its data
  key (crypto-shredding): whatever ciphertext of it is left anywhere is noise.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from edged.directory.crypto import (
    DeviceSigner,
    Kek,
    new_data_key,
    seal,
    unseal,
    unwrap_key,
    wrap_key,
)
from edged.directory.db import Check, Db, new_id
from edged.directory.receipts import Receipt
from edged.directory.schema import CARDS_MIGRATION
from edged.errors import ConfigError, DecryptionFailed, WrongKey

KEK_CHECK = b"edged directory key check v1"
CARD_KEY_AAD = b"cards"


@dataclass(frozen=True, slots=True)
class OwnerKey:
    """An owner's data key (``key`` unwrapped: keep it in memory only)."""

    key_id: str
    key: bytes = field(repr=False)


def key_check(kek: Kek) -> Check:
    """The check ``Db.open`` runs before anything is written: ``WrongKey`` when ``kek`` does not
    open the directory, ``ConfigError`` when it is not one."""

    def check(db: sqlite3.Connection, path: Path) -> None:
        try:
            has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
            row = (
                db.execute("SELECT value FROM meta WHERE key = 'kek_check'").fetchone() if has_meta else None
            )
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path} is not a usable SQLite database: {exc}") from exc
        if row is None:
            if has_meta:
                raise ConfigError(f"{path} has no key check: not an edged directory, or damaged")
            return  # created but never migrated: nothing to protect yet
        try:
            unseal(kek.key, bytes(row[0]), b"kek-check")
        except DecryptionFailed:
            stored = db.execute("SELECT value FROM meta WHERE key = 'kek_id'").fetchone()
            raise WrongKey(
                f"the key from {kek.source} (id {kek.key_id}) does not open {path} "
                f"(it was written with key id {stored[0] if stored else '?'}); nothing was changed"
            ) from None

    return check


class Keys:
    """The key material of one open directory. Construct it after ``Keys.seed`` ran."""

    def __init__(self, db: Db, kek: Kek) -> None:
        self.db = db
        self._kek = kek
        wrapped = db.scalar("SELECT value FROM meta WHERE key = 'device_key'")
        self._signer = DeviceSigner.from_bytes(unwrap_key(kek, bytes(wrapped), b"device"))
        self._card_key: bytes | None = None  # unwrapped on first use

    @staticmethod
    def seed(db: Db, kek: Kek, before: int, after: int) -> None:
        """Create the key material that the migrations from ``before`` to ``after`` bring (in the
        migrating transaction): the KEK check and the device key with a new directory, the card key
        with the cards migration."""
        if before == 0:
            db.execute("INSERT INTO meta VALUES ('kek_check', ?)", (seal(kek.key, KEK_CHECK, b"kek-check"),))
            db.execute("INSERT INTO meta VALUES ('kek_id', ?)", (kek.key_id,))
            signer = DeviceSigner.generate()
            db.execute(
                "INSERT INTO meta VALUES ('device_key', ?)",
                (wrap_key(kek, signer.private_bytes(), b"device"),),
            )
        if before < CARDS_MIGRATION <= after:
            db.execute(
                "INSERT INTO meta VALUES ('card_key', ?)", (wrap_key(kek, new_data_key(), CARD_KEY_AAD),)
            )

    # -- the device key -------------------------------------------------------------------------

    @property
    def device_public_key(self) -> str:
        return self._signer.public_hex

    def sign(self, data: bytes) -> str:
        return self._signer.sign(data)

    def receipt(
        self, operation: str, targets: dict[str, str], deleted: dict[str, int], shredded: str, now: float
    ) -> Receipt:
        unsigned = Receipt(operation, targets, deleted, shredded, now, self.device_public_key, "")
        return replace(unsigned, signature=self.sign(unsigned.payload()))

    # -- the card key ---------------------------------------------------------------------------

    def card_key(self) -> bytes:
        if self._card_key is None:
            wrapped = self.db.scalar("SELECT value FROM meta WHERE key = 'card_key'")
            self._card_key = unwrap_key(self._kek, bytes(wrapped), CARD_KEY_AAD)
        return self._card_key

    # -- owners' data keys ----------------------------------------------------------------------

    def create(self, owner: str) -> OwnerKey:
        """A new data key for ``owner`` (``person:ID``, ``list:ID``, ``transient:ID``), stored
        wrapped; call it inside the transaction that creates the owner."""
        created = OwnerKey(new_id(), new_data_key())
        self.db.execute(
            "INSERT INTO data_keys VALUES (?, ?, ?)",
            (created.key_id, owner, wrap_key(self._kek, created.key, owner.encode())),
        )
        return created

    def unwrap(self, key_id: str) -> bytes:
        row = self.db.execute("SELECT owner, wrapped FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            raise DecryptionFailed(f"data key {key_id} is gone")
        return unwrap_key(self._kek, bytes(row[1]), str(row[0]).encode())

    def shred(self, key_ids: Sequence[str]) -> str:
        """Delete wrapped data keys (inside the deleting transaction); returns the sha256 over their
        IDs (for the receipt)."""
        digest = hashlib.sha256()
        for key_id in sorted(key_ids):
            self.db.execute("DELETE FROM data_keys WHERE key_id = ?", (key_id,))
            digest.update(key_id.encode())
        return digest.hexdigest()

    # -- rotation -------------------------------------------------------------------------------

    def _use(self, kek: Kek) -> None:
        self._kek = kek

    def rotate(self, new: Kek, on_step: Callable[[int], None] | None = None) -> int:
        """Re-wrap every data key, the device key and the card key under ``new`` in ONE transaction
        (templates are not re-encrypted): a crash at any point leaves a directory that opens with
        exactly one of the two keys. Returns how many data keys were re-wrapped. Inside a larger
        transaction (the rotation and its audit record) the new key is used once that commits."""
        with self.db.tx() as db:
            rows = db.execute("SELECT key_id, owner, wrapped FROM data_keys").fetchall()
            for step, (key_id, owner, wrapped) in enumerate(rows, 1):
                plain = unwrap_key(self._kek, bytes(wrapped), str(owner).encode())
                db.execute(
                    "UPDATE data_keys SET wrapped = ? WHERE key_id = ?",
                    (wrap_key(new, plain, str(owner).encode()), key_id),
                )
                if on_step:
                    on_step(step)
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'device_key'",
                (wrap_key(new, self._signer.private_bytes(), b"device"),),
            )
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'card_key'",
                (wrap_key(new, self.card_key(), CARD_KEY_AAD),),
            )
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'kek_check'", (seal(new.key, KEK_CHECK, b"kek-check"),)
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'kek_id'", (new.key_id,))
            db.on_commit(lambda: self._use(new))
        self.db.checkpoint()
        return len(rows)
