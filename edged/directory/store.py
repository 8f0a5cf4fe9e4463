"""The directory's SQLite store: the only module that contains SQL.

One file under the state directory, WAL mode, ``synchronous=FULL``, foreign keys on and
``secure_delete`` on (freed pages are zeroed), schema migrations with a version table. Everything
about a person (name, userData, templates, face userData) is sealed with that person's data key;
face lists have their own key; every transient face has its own key. Deleting an owner deletes its
rows and its wrapped data key, then checkpoints the WAL (TRUNCATE), so neither the database nor the
WAL keeps a byte of it.

Card numbers (verify-mode claims) are never stored: a card is the HMAC-SHA256 of its number under a
random card key that the KEK wraps (``meta.card_key``), mapped to a person and deleted with it.

The store hands out decrypted values and takes plaintext values; it never logs them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edged.clock import Clock, SystemClock
from edged.directory.audit import AuditRecord, chain_hash, verify_chain
from edged.directory.crypto import (
    DeviceSigner,
    Kek,
    new_data_key,
    seal,
    unseal,
    unwrap_key,
    verify_signature,
    wrap_key,
)
from edged.errors import (
    BadArgument,
    CardNotFound,
    ConfigError,
    DecryptionFailed,
    DynamicPersonGroupNotFound,
    FaceListExists,
    FaceListNotFound,
    FaceNotFound,
    PersonGroupExists,
    PersonGroupNotFound,
    PersonNotFound,
    WrongKey,
)
from edged.types import FloatArray

logger = logging.getLogger(__name__)

DB_NAME = "directory.sqlite3"
TEMPLATE_DIM = 128
_KEK_CHECK = b"edged directory key check v1"
_CARD_KEY_AAD = b"cards"
MAX_CARD_ID = 128
ID_BATCH = 500
"""IDs per ``IN (...)`` query (well under SQLite's limit on bound parameters)."""
CARDS_MIGRATION = 2
"""The migration that adds the cards table; the card key is created (wrapped by the KEK) with it."""

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE data_keys (
        key_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL UNIQUE,
        wrapped BLOB NOT NULL
    );
    CREATE TABLE person_groups (
        group_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('group', 'large')),
        name TEXT NOT NULL,
        user_data TEXT,
        recognition_model TEXT NOT NULL,
        train_status TEXT NOT NULL DEFAULT 'notstarted',
        train_message TEXT,
        trained_at REAL,
        created REAL NOT NULL,
        modified REAL NOT NULL
    );
    CREATE TABLE persons (
        person_id TEXT PRIMARY KEY,
        group_id TEXT REFERENCES person_groups (group_id) ON DELETE CASCADE,
        key_id TEXT NOT NULL REFERENCES data_keys (key_id),
        name BLOB NOT NULL,
        user_data BLOB,
        created REAL NOT NULL
    );
    CREATE INDEX persons_by_group ON persons (group_id, person_id);
    CREATE TABLE face_lists (
        list_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('list', 'large')),
        name TEXT NOT NULL,
        user_data TEXT,
        recognition_model TEXT NOT NULL,
        key_id TEXT NOT NULL REFERENCES data_keys (key_id),
        created REAL NOT NULL
    );
    CREATE TABLE faces (
        face_id TEXT PRIMARY KEY,
        person_id TEXT REFERENCES persons (person_id) ON DELETE CASCADE,
        list_id TEXT REFERENCES face_lists (list_id) ON DELETE CASCADE,
        template BLOB NOT NULL,
        model_id TEXT NOT NULL,
        user_data BLOB,
        quality TEXT,
        created REAL NOT NULL,
        CHECK ((person_id IS NULL) != (list_id IS NULL))
    );
    CREATE INDEX faces_by_person ON faces (person_id);
    CREATE INDEX faces_by_list ON faces (list_id);
    CREATE TABLE dynamic_groups (
        dgroup_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        user_data TEXT,
        created REAL NOT NULL
    );
    CREATE TABLE dynamic_members (
        dgroup_id TEXT NOT NULL REFERENCES dynamic_groups (dgroup_id) ON DELETE CASCADE,
        person_id TEXT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
        PRIMARY KEY (dgroup_id, person_id)
    );
    CREATE TABLE transient_faces (
        face_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES data_keys (key_id),
        template BLOB NOT NULL,
        model_id TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL
    );
    CREATE INDEX transient_by_expiry ON transient_faces (expires);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        operation TEXT NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        targets TEXT NOT NULL,
        result TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    """,
    # 2: cards for verify-mode claims, keyed by HMAC-SHA256 of the card number (never the number)
    """
    CREATE TABLE cards (
        card_hash BLOB PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
        created REAL NOT NULL
    );
    CREATE INDEX cards_by_person ON cards (person_id);
    """,
)


def normalize_card(card_id: str) -> str:
    """A card number as it is hashed: surrounding whitespace removed, letters in lower case (readers
    print hexadecimal UIDs in either case). Raises ``BadArgument`` without repeating the number."""
    if not isinstance(card_id, str):
        raise BadArgument(f"a card ID is a string, not {type(card_id).__name__}")
    text = card_id.strip().lower()
    if not 1 <= len(text) <= MAX_CARD_ID or not text.isprintable():
        raise BadArgument(f"a card ID is 1-{MAX_CARD_ID} printable characters")
    return text


@dataclass(frozen=True, slots=True)
class PersonGroup:
    group_id: str
    kind: str
    name: str
    user_data: str | None
    recognition_model: str
    train_status: str
    train_message: str | None
    trained_at: float | None
    created: float
    modified: float


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str
    group_id: str | None
    name: str
    user_data: str | None
    face_ids: tuple[str, ...]
    created: float


@dataclass(frozen=True, slots=True)
class PersistedFace:
    face_id: str
    owner_id: str
    user_data: str | None
    quality: dict[str, Any]
    created: float


@dataclass(frozen=True, slots=True)
class FaceList:
    list_id: str
    kind: str
    name: str
    user_data: str | None
    recognition_model: str
    created: float


@dataclass(frozen=True, slots=True)
class DynamicGroup:
    dgroup_id: str
    name: str
    user_data: str | None
    created: float


@dataclass(frozen=True, slots=True)
class Templates:
    """Decrypted templates of one group / list / the directory: rows align."""

    face_ids: tuple[str, ...]
    owner_ids: tuple[str, ...]
    matrix: FloatArray


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof of a deletion, signed with the device key (verify with ``crypto.verify_signature``)."""

    operation: str
    targets: dict[str, str]
    deleted: dict[str, int]
    shredded_keys_sha256: str
    time: float
    device_public_key: str
    signature: str

    def payload(self) -> bytes:
        return canonical(
            {
                "operation": self.operation,
                "targets": self.targets,
                "deleted": self.deleted,
                "shredded_keys_sha256": self.shredded_keys_sha256,
                "time": self.time,
                "device_public_key": self.device_public_key,
            }
        )

    def as_json(self) -> dict[str, Any]:
        return {**json.loads(self.payload()), "signature": self.signature}


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def new_id() -> str:
    return str(uuid.uuid4())


def _template_bytes(template: FloatArray) -> bytes:
    vector = np.asarray(template, np.float32).reshape(-1)
    if vector.size != TEMPLATE_DIM or not np.all(np.isfinite(vector)):
        raise ValueError(f"a template is {TEMPLATE_DIM} finite floats, got shape {np.shape(template)}")
    return vector.astype("<f4").tobytes()


class Store:
    """The directory database. One instance per process; methods are serialised by SQLite's
    connection (``check_same_thread=False`` with an explicit lock is the caller's job in the
    daemon: the service layer owns the instance)."""

    def __init__(self, path: Path, kek: Kek, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        self._kek = kek
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._check_key_read_only(path, kek)
        else:  # ciphertext only, but nobody else's business: 0600 (SQLite copies it to -wal)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA secure_delete = ON")
            self._db.execute("PRAGMA busy_timeout = 5000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path} is not a usable SQLite database: {exc}") from exc
        try:
            if str(mode).lower() != "wal":
                raise ConfigError(f"{path}: cannot switch to WAL mode (got {mode})")
            self._check_key_then_migrate()
            self._signer = self._device_signer()
            self._card_key_value: bytes | None = None  # unwrapped on first use
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open(cls, state_dir: Path, kek: Kek, clock: Clock | None = None) -> Store:
        return cls(state_dir / DB_NAME, kek, clock)

    def close(self) -> None:
        self._db.close()

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _version(self) -> int:
        exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone()
        if not exists:
            return 0
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _check_key_then_migrate(self) -> None:
        version = self._version()
        if version > len(MIGRATIONS):
            raise ConfigError(
                f"{self.path} has schema version {version}; this edged knows up to {len(MIGRATIONS)}"
            )
        if version > 0:
            self._check_key()  # before anything is written
        with self._tx() as db:
            if version == 0:
                db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                db.execute("INSERT INTO schema_version VALUES (0)")
            for number in range(version + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                if number == CARDS_MIGRATION:
                    db.execute(
                        "INSERT INTO meta VALUES ('card_key', ?)",
                        (wrap_key(self._kek, new_data_key(), _CARD_KEY_AAD),),
                    )
                db.execute("UPDATE schema_version SET version = ?", (number,))
                logger.info("directory schema migrated to version %d", number)
            if version == 0:
                db.execute(
                    "INSERT INTO meta VALUES ('kek_check', ?)",
                    (seal(self._kek.key, _KEK_CHECK, b"kek-check"),),
                )
                db.execute("INSERT INTO meta VALUES ('kek_id', ?)", (self._kek.key_id,))
                signer = DeviceSigner.generate()
                db.execute(
                    "INSERT INTO meta VALUES ('device_key', ?)",
                    (wrap_key(self._kek, signer.private_bytes(), b"device"),),
                )

    def _check_key(self) -> None:
        self._verify_kek(self._db, self.path, self._kek)

    @staticmethod
    def _verify_kek(db: sqlite3.Connection, path: Path, kek: Kek) -> None:
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

    @classmethod
    def _check_key_read_only(cls, path: Path, kek: Kek) -> None:
        """Check the key on a read-only connection before opening read-write: a refused key must not
        even let SQLite replay a WAL left by a power cut into the database."""
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path} is not a usable SQLite database: {exc}") from exc
        try:
            cls._verify_kek(db, path, kek)
        finally:
            db.close()

    def _device_signer(self) -> DeviceSigner:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'device_key'").fetchone()
        return DeviceSigner.from_bytes(unwrap_key(self._kek, bytes(row[0]), b"device"))

    def _card_key(self) -> bytes:
        if self._card_key_value is None:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'card_key'").fetchone()
            self._card_key_value = unwrap_key(self._kek, bytes(row[0]), _CARD_KEY_AAD)
        return self._card_key_value

    @property
    def device_public_key(self) -> str:
        return self._signer.public_hex

    def _new_owner_key(self, db: sqlite3.Connection, owner: str) -> tuple[str, bytes]:
        key_id, key = new_id(), new_data_key()
        db.execute(
            "INSERT INTO data_keys VALUES (?, ?, ?)",
            (key_id, owner, wrap_key(self._kek, key, owner.encode())),
        )
        return key_id, key

    def _owner_key(self, key_id: str) -> bytes:
        row = self._db.execute("SELECT owner, wrapped FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            raise DecryptionFailed(f"data key {key_id} is gone")
        return unwrap_key(self._kek, bytes(row[1]), str(row[0]).encode())

    def _shred(self, db: sqlite3.Connection, key_ids: Sequence[str]) -> str:
        """Delete wrapped data keys; returns the sha256 over their IDs (for the receipt)."""
        digest = hashlib.sha256()
        for key_id in sorted(key_ids):
            db.execute("DELETE FROM data_keys WHERE key_id = ?", (key_id,))
            digest.update(key_id.encode())
        return digest.hexdigest()

    def checkpoint(self) -> None:
        """Move the WAL into the database and truncate it (after deletions: no old page stays)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _receipt(
        self, operation: str, targets: dict[str, str], deleted: dict[str, int], shredded: str
    ) -> Receipt:
        unsigned = Receipt(
            operation, targets, deleted, shredded, self.clock.now(), self.device_public_key, ""
        )
        return replace(unsigned, signature=self._signer.sign(unsigned.payload()))

    # -- person groups --------------------------------------------------------------------------

    def create_group(
        self, group_id: str, name: str, user_data: str | None, kind: str, model: str
    ) -> PersonGroup:
        if kind not in ("group", "large"):
            raise BadArgument(f"a person group's kind is 'group' or 'large', not {kind!r}")
        now = self.clock.now()
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO person_groups (group_id, kind, name, user_data, recognition_model, created,"
                    " modified) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (group_id, kind, name, user_data, model, now, now),
                )
        except sqlite3.IntegrityError:
            raise PersonGroupExists(f"person group {group_id!r} already exists") from None
        return self.get_group(group_id)

    def get_group(self, group_id: str) -> PersonGroup:
        row = self._db.execute(
            "SELECT group_id, kind, name, user_data, recognition_model, train_status, train_message,"
            " trained_at, created, modified FROM person_groups WHERE group_id = ?",
            (group_id,),
        ).fetchone()
        if row is None:
            raise PersonGroupNotFound(f"person group {group_id!r} does not exist")
        return PersonGroup(*row)

    def list_groups(self, start: str | None = None, top: int = 1000) -> list[PersonGroup]:
        rows = self._db.execute(
            "SELECT group_id FROM person_groups WHERE group_id > ? ORDER BY group_id LIMIT ?",
            (start or "", top),
        ).fetchall()
        return [self.get_group(r[0]) for r in rows]

    def update_group(self, group_id: str, name: str | None, user_data: str | None) -> PersonGroup:
        self.get_group(group_id)
        with self._tx() as db:
            if name is not None:
                db.execute("UPDATE person_groups SET name = ? WHERE group_id = ?", (name, group_id))
            if user_data is not None:
                db.execute("UPDATE person_groups SET user_data = ? WHERE group_id = ?", (user_data, group_id))
            db.execute(
                "UPDATE person_groups SET modified = ? WHERE group_id = ?", (self.clock.now(), group_id)
            )
        return self.get_group(group_id)

    def set_training(self, group_id: str, status: str, message: str | None = None) -> None:
        self.get_group(group_id)
        trained_at = self.clock.now() if status == "succeeded" else None
        with self._tx() as db:
            db.execute(
                "UPDATE person_groups SET train_status = ?, train_message = ?,"
                " trained_at = COALESCE(?, trained_at) WHERE group_id = ?",
                (status, message, trained_at, group_id),
            )

    def recover_interrupted_training(self) -> list[PersonGroup]:
        """Groups left ``running`` by a process that stopped in the middle of a train (killed,
        powered off): back to ``succeeded`` when the group had been trained before (``trained_at``
        set: its members are what an index is built from, at every start), else ``failed`` with the
        message ``interrupted``. Returns the recovered groups as they are now."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT group_id FROM person_groups WHERE train_status = 'running' ORDER BY group_id"
            ).fetchall()
            db.execute(
                "UPDATE person_groups SET"
                " train_status = CASE WHEN trained_at IS NULL THEN 'failed' ELSE 'succeeded' END,"
                " train_message = CASE WHEN trained_at IS NULL THEN 'interrupted' ELSE NULL END"
                " WHERE train_status = 'running'"
            )
        return [self.get_group(r[0]) for r in rows]

    def touch_group(self, group_id: str) -> None:
        """Record that a group's membership changed (a trained group stays usable: the index is
        kept consistent, and ``modified`` tells when the last training became older than the data)."""
        self._db.execute(
            "UPDATE person_groups SET modified = ? WHERE group_id = ?", (self.clock.now(), group_id)
        )

    def delete_group(self, group_id: str) -> Receipt:
        self.get_group(group_id)
        with self._tx() as db:
            persons = db.execute(
                "SELECT person_id, key_id FROM persons WHERE group_id = ?", (group_id,)
            ).fetchall()
            faces = db.execute(
                "SELECT COUNT(*) FROM faces JOIN persons USING (person_id) WHERE persons.group_id = ?",
                (group_id,),
            ).fetchone()[0]
            cards = db.execute(
                "SELECT COUNT(*) FROM cards JOIN persons USING (person_id) WHERE persons.group_id = ?",
                (group_id,),
            ).fetchone()[0]
            # cascades persons, their faces and their cards
            db.execute("DELETE FROM person_groups WHERE group_id = ?", (group_id,))
            shredded = self._shred(db, [r[1] for r in persons])
        self.checkpoint()
        return self._receipt(
            "delete_person_group",
            {"personGroupId": group_id},
            {"persons": len(persons), "faces": int(faces), **({"cards": int(cards)} if cards else {})},
            shredded,
        )

    # -- persons --------------------------------------------------------------------------------

    def _aad(self, kind: str, person_id: str, extra: str = "") -> bytes:
        return f"{kind}|{person_id}|{extra}".encode()

    def create_person(self, group_id: str | None, name: str, user_data: str | None) -> str:
        if group_id is not None:
            self.get_group(group_id)
        person_id = new_id()
        with self._tx() as db:
            key_id, key = self._new_owner_key(db, f"person:{person_id}")
            db.execute(
                "INSERT INTO persons VALUES (?, ?, ?, ?, ?, ?)",
                (
                    person_id,
                    group_id,
                    key_id,
                    seal(key, name.encode(), self._aad("name", person_id, group_id or "")),
                    None
                    if user_data is None
                    else seal(key, user_data.encode(), self._aad("udata", person_id, group_id or "")),
                    self.clock.now(),
                ),
            )
            if group_id is not None:
                db.execute(
                    "UPDATE person_groups SET modified = ? WHERE group_id = ?", (self.clock.now(), group_id)
                )
        return person_id

    def _person_row(self, group_id: str | None, person_id: str) -> tuple[Any, ...]:
        if group_id is not None:
            self.get_group(group_id)
        row = self._db.execute(
            "SELECT person_id, group_id, key_id, name, user_data, created FROM persons"
            " WHERE person_id = ? AND group_id IS ?",
            (person_id, group_id),
        ).fetchone()
        if row is None:
            where = f"person group {group_id!r}" if group_id else "the person directory"
            raise PersonNotFound(f"person {person_id!r} is not in {where}")
        return tuple(row)

    def get_person(self, group_id: str | None, person_id: str) -> Person:
        pid, gid, key_id, name, user_data, created = self._person_row(group_id, person_id)
        key = self._owner_key(key_id)
        faces = tuple(
            r[0]
            for r in self._db.execute(
                "SELECT face_id FROM faces WHERE person_id = ? ORDER BY created, face_id", (pid,)
            )
        )
        return Person(
            pid,
            gid,
            unseal(key, bytes(name), self._aad("name", pid, gid or ""), "a person's name").decode(),
            None
            if user_data is None
            else unseal(
                key, bytes(user_data), self._aad("udata", pid, gid or ""), "a person's userData"
            ).decode(),
            faces,
            created,
        )

    def list_persons(self, group_id: str | None, start: str | None = None, top: int = 1000) -> list[Person]:
        if group_id is not None:
            self.get_group(group_id)
        rows = self._db.execute(
            "SELECT person_id FROM persons WHERE group_id IS ? AND person_id > ? ORDER BY person_id LIMIT ?",
            (group_id, start or "", top),
        ).fetchall()
        return [self.get_person(group_id, r[0]) for r in rows]

    def count_persons(self, group_id: str | None) -> int:
        return int(
            self._db.execute("SELECT COUNT(*) FROM persons WHERE group_id IS ?", (group_id,)).fetchone()[0]
        )

    def update_person(
        self, group_id: str | None, person_id: str, name: str | None, user_data: str | None
    ) -> Person:
        pid, gid, key_id, *_ = self._person_row(group_id, person_id)
        key = self._owner_key(key_id)
        with self._tx() as db:
            if name is not None:
                db.execute(
                    "UPDATE persons SET name = ? WHERE person_id = ?",
                    (seal(key, name.encode(), self._aad("name", pid, gid or "")), pid),
                )
            if user_data is not None:
                db.execute(
                    "UPDATE persons SET user_data = ? WHERE person_id = ?",
                    (seal(key, user_data.encode(), self._aad("udata", pid, gid or "")), pid),
                )
        return self.get_person(group_id, person_id)

    def delete_person(self, group_id: str | None, person_id: str) -> Receipt:
        pid, gid, key_id, *_ = self._person_row(group_id, person_id)
        with self._tx() as db:
            faces = db.execute("SELECT COUNT(*) FROM faces WHERE person_id = ?", (pid,)).fetchone()[0]
            cards = db.execute("SELECT COUNT(*) FROM cards WHERE person_id = ?", (pid,)).fetchone()[0]
            db.execute(
                "DELETE FROM persons WHERE person_id = ?", (pid,)
            )  # cascades faces, memberships, cards
            shredded = self._shred(db, [key_id])
            if gid is not None:
                db.execute(
                    "UPDATE person_groups SET modified = ? WHERE group_id = ?", (self.clock.now(), gid)
                )
        self.checkpoint()
        targets = {"personId": pid, **({"personGroupId": gid} if gid else {})}
        deleted = {"persons": 1, "faces": int(faces), **({"cards": int(cards)} if cards else {})}
        return self._receipt("delete_person", targets, deleted, shredded)

    # -- persisted faces ------------------------------------------------------------------------

    def _face_aad(self, owner_id: str, face_id: str, model_id: str) -> bytes:
        return f"face|{owner_id}|{face_id}|{model_id}".encode()

    def add_person_face(
        self,
        group_id: str | None,
        person_id: str,
        template: FloatArray,
        model_id: str,
        user_data: str | None,
        quality: dict[str, Any],
    ) -> str:
        pid, _gid, key_id, *_ = self._person_row(group_id, person_id)
        key = self._owner_key(key_id)
        face_id = new_id()
        with self._tx() as db:
            db.execute(
                "INSERT INTO faces (face_id, person_id, template, model_id, user_data, quality, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    face_id,
                    pid,
                    seal(key, _template_bytes(template), self._face_aad(pid, face_id, model_id)),
                    model_id,
                    None
                    if user_data is None
                    else seal(key, user_data.encode(), self._face_aad(pid, face_id, "udata")),
                    json.dumps(quality, sort_keys=True),
                    self.clock.now(),
                ),
            )
        return face_id

    def count_faces(self, person_id: str | None = None, list_id: str | None = None) -> int:
        column, value = ("person_id", person_id) if person_id is not None else ("list_id", list_id)
        return int(self._db.execute(f"SELECT COUNT(*) FROM faces WHERE {column} = ?", (value,)).fetchone()[0])

    def _face_row(self, face_id: str, person_id: str | None, list_id: str | None) -> tuple[Any, ...]:
        row = self._db.execute(
            "SELECT face_id, person_id, list_id, template, model_id, user_data, quality, created FROM faces"
            " WHERE face_id = ? AND person_id IS ? AND list_id IS ?",
            (face_id, person_id, list_id),
        ).fetchone()
        if row is None:
            raise FaceNotFound(f"persisted face {face_id!r} does not exist there")
        return tuple(row)

    def _owner_key_for_face(self, person_id: str | None, list_id: str | None) -> bytes:
        if person_id is not None:
            row = self._db.execute("SELECT key_id FROM persons WHERE person_id = ?", (person_id,)).fetchone()
        else:
            row = self._db.execute("SELECT key_id FROM face_lists WHERE list_id = ?", (list_id,)).fetchone()
        return self._owner_key(row[0])

    def get_face(
        self, face_id: str, *, person_id: str | None = None, list_id: str | None = None
    ) -> PersistedFace:
        fid, pid, lid, _template, _model, user_data, quality, created = self._face_row(
            face_id, person_id, list_id
        )
        owner = pid or lid
        text = None
        if user_data is not None:
            key = self._owner_key_for_face(pid, lid)
            text = unseal(
                key, bytes(user_data), self._face_aad(owner, fid, "udata"), "a face's userData"
            ).decode()
        return PersistedFace(fid, owner, text, json.loads(quality or "{}"), created)

    def update_face(
        self, face_id: str, user_data: str, *, person_id: str | None = None, list_id: str | None = None
    ) -> PersistedFace:
        fid, pid, lid, *_ = self._face_row(face_id, person_id, list_id)
        key = self._owner_key_for_face(pid, lid)
        with self._tx() as db:
            db.execute(
                "UPDATE faces SET user_data = ? WHERE face_id = ?",
                (seal(key, user_data.encode(), self._face_aad(pid or lid, fid, "udata")), fid),
            )
        return self.get_face(face_id, person_id=person_id, list_id=list_id)

    def delete_face(
        self, face_id: str, *, person_id: str | None = None, list_id: str | None = None
    ) -> Receipt:
        fid, pid, lid, *_ = self._face_row(face_id, person_id, list_id)
        with self._tx() as db:
            db.execute("DELETE FROM faces WHERE face_id = ?", (fid,))
        self.checkpoint()
        targets = {"persistedFaceId": fid, **({"personId": pid} if pid else {"faceListId": lid})}
        return self._receipt("delete_face", targets, {"faces": 1}, hashlib.sha256(b"").hexdigest())

    def _scope_sql(
        self, group_id: str | None, directory: bool, list_id: str | None
    ) -> tuple[str, tuple[Any, ...]]:
        """The FROM/WHERE of a scope's faces (``f``, with the owner's ``key_id``); checks the scope
        exists (``PersonGroupNotFound`` / ``FaceListNotFound``)."""
        if list_id is not None:
            self.get_face_list(list_id)
            return " FROM faces f JOIN face_lists o USING (list_id) WHERE f.list_id = ?", (list_id,)
        if group_id is not None:
            self.get_group(group_id)
        elif not directory:
            raise ValueError("templates() needs group_id, directory=True or list_id")
        return " FROM faces f JOIN persons o USING (person_id) WHERE o.group_id IS ?", (group_id,)

    def face_ids(
        self, *, group_id: str | None = None, directory: bool = False, list_id: str | None = None
    ) -> list[str]:
        """The persisted face IDs of a person group, the person directory or a face list, sorted;
        nothing decrypted (what the daemon compares its indexes with after another process wrote)."""
        where, params = self._scope_sql(group_id, directory, list_id)
        return [r[0] for r in self._db.execute(f"SELECT f.face_id{where} ORDER BY f.face_id", params)]

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` of this connection: it changes when another connection
        (another process: the CLI while the daemon runs) commits, never for this one's own commits."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def templates(
        self,
        *,
        group_id: str | None = None,
        directory: bool = False,
        list_id: str | None = None,
        person_ids: Sequence[str] | None = None,
        face_ids: Sequence[str] | None = None,
    ) -> Templates:
        """Decrypt the templates of a person group, of the person directory, or of a face list (only
        those of ``person_ids`` / only ``face_ids`` when given)."""
        where, params = self._scope_sql(group_id, directory, list_id)
        select = f"SELECT f.face_id, {'f.list_id' if list_id is not None else 'f.person_id'},"
        select += f" f.template, f.model_id, o.key_id{where}"
        if face_ids is None:
            rows = self._db.execute(f"{select} ORDER BY f.face_id", params).fetchall()
        else:
            rows = []
            wanted_faces = sorted(set(face_ids))
            for i in range(0, len(wanted_faces), ID_BATCH):
                batch = wanted_faces[i : i + ID_BATCH]
                marks = ", ".join("?" * len(batch))
                rows += self._db.execute(
                    f"{select} AND f.face_id IN ({marks}) ORDER BY f.face_id", (*params, *batch)
                ).fetchall()
        return self._decrypt(rows, person_ids, list_id is not None)

    def group_templates_page(
        self, group_id: str | None, after: str | None, persons: int
    ) -> tuple[Templates, str | None]:
        """The templates of at most ``persons`` persons of a group (None: the person directory), those
        whose IDs sort after ``after`` (None: from the first); and the last of those person IDs, None
        when there were none. A train reads a large group page by page, so whoever shares this
        connection gets it between pages; pages read at different times are not one snapshot."""
        if group_id is not None:
            self.get_group(group_id)
        last = self._db.execute(
            "SELECT MAX(person_id) FROM (SELECT person_id FROM persons WHERE group_id IS ? AND"
            " person_id > ? ORDER BY person_id LIMIT ?)",
            (group_id, after or "", persons),
        ).fetchone()[0]
        if last is None:
            return Templates((), (), np.zeros((0, TEMPLATE_DIM), np.float32)), None
        rows = self._db.execute(
            "SELECT f.face_id, f.person_id, f.template, f.model_id, p.key_id FROM persons p"
            " JOIN faces f USING (person_id) WHERE p.group_id IS ? AND p.person_id > ?"
            " AND p.person_id <= ?",
            (group_id, after or "", last),
        ).fetchall()
        return self._decrypt(rows, None, False), str(last)

    def _decrypt(self, rows: list[Any], person_ids: Sequence[str] | None, face_list: bool) -> Templates:
        """Rows of (face_id, owner_id, sealed template, model_id, key_id) → decrypted templates."""
        wanted = set(person_ids) if person_ids is not None else None
        keys: dict[str, bytes] = {}
        face_ids, owner_ids, vectors = [], [], []
        for face_id, owner_id, blob, model_id, key_id in rows:
            if wanted is not None and owner_id not in wanted:
                continue
            key = keys.get(key_id) or keys.setdefault(key_id, self._owner_key(key_id))
            plain = unseal(key, bytes(blob), self._face_aad(owner_id, face_id, model_id), "a template")
            face_ids.append(face_id)
            owner_ids.append(face_id if face_list else owner_id)
            vectors.append(np.frombuffer(plain, "<f4"))
        matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, TEMPLATE_DIM), np.float32)
        return Templates(tuple(face_ids), tuple(owner_ids), matrix)

    # -- face lists -----------------------------------------------------------------------------

    def create_face_list(
        self, list_id: str, name: str, user_data: str | None, kind: str, model: str
    ) -> FaceList:
        if kind not in ("list", "large"):
            raise BadArgument(f"a face list's kind is 'list' or 'large', not {kind!r}")
        try:
            with self._tx() as db:
                key_id, _ = self._new_owner_key(db, f"list:{list_id}")
                db.execute(
                    "INSERT INTO face_lists VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (list_id, kind, name, user_data, model, key_id, self.clock.now()),
                )
        except sqlite3.IntegrityError:
            raise FaceListExists(f"face list {list_id!r} already exists") from None
        return self.get_face_list(list_id)

    def get_face_list(self, list_id: str) -> FaceList:
        row = self._db.execute(
            "SELECT list_id, kind, name, user_data, recognition_model, created FROM face_lists"
            " WHERE list_id = ?",
            (list_id,),
        ).fetchone()
        if row is None:
            raise FaceListNotFound(f"face list {list_id!r} does not exist")
        return FaceList(*row)

    def list_face_lists(self) -> list[FaceList]:
        return [
            self.get_face_list(r[0])
            for r in self._db.execute("SELECT list_id FROM face_lists ORDER BY list_id")
        ]

    def face_list_face_ids(self, list_id: str) -> list[str]:
        self.get_face_list(list_id)
        return [
            r[0]
            for r in self._db.execute(
                "SELECT face_id FROM faces WHERE list_id = ? ORDER BY face_id", (list_id,)
            )
        ]

    def add_list_face(
        self,
        list_id: str,
        template: FloatArray,
        model_id: str,
        user_data: str | None,
        quality: dict[str, Any],
    ) -> str:
        self.get_face_list(list_id)
        key = self._owner_key_for_face(None, list_id)
        face_id = new_id()
        with self._tx() as db:
            db.execute(
                "INSERT INTO faces (face_id, list_id, template, model_id, user_data, quality, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    face_id,
                    list_id,
                    seal(key, _template_bytes(template), self._face_aad(list_id, face_id, model_id)),
                    model_id,
                    None
                    if user_data is None
                    else seal(key, user_data.encode(), self._face_aad(list_id, face_id, "udata")),
                    json.dumps(quality, sort_keys=True),
                    self.clock.now(),
                ),
            )
        return face_id

    def delete_face_list(self, list_id: str) -> Receipt:
        self.get_face_list(list_id)
        with self._tx() as db:
            key_id = db.execute("SELECT key_id FROM face_lists WHERE list_id = ?", (list_id,)).fetchone()[0]
            faces = db.execute("SELECT COUNT(*) FROM faces WHERE list_id = ?", (list_id,)).fetchone()[0]
            db.execute("DELETE FROM face_lists WHERE list_id = ?", (list_id,))
            shredded = self._shred(db, [key_id])
        self.checkpoint()
        return self._receipt("delete_face_list", {"faceListId": list_id}, {"faces": int(faces)}, shredded)

    # -- dynamic person groups (over the person directory) --------------------------------------

    def create_dynamic_group(
        self, dgroup_id: str, name: str, user_data: str | None, members: Sequence[str]
    ) -> None:
        members = list(dict.fromkeys(members))  # a repeated ID is one membership
        for person_id in members:
            self._person_row(None, person_id)
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO dynamic_groups VALUES (?, ?, ?, ?)",
                    (dgroup_id, name, user_data, self.clock.now()),
                )
                db.executemany("INSERT INTO dynamic_members VALUES (?, ?)", [(dgroup_id, p) for p in members])
        except sqlite3.IntegrityError:
            raise PersonGroupExists(f"dynamic person group {dgroup_id!r} already exists") from None

    def get_dynamic_group(self, dgroup_id: str) -> DynamicGroup:
        row = self._db.execute(
            "SELECT dgroup_id, name, user_data, created FROM dynamic_groups WHERE dgroup_id = ?", (dgroup_id,)
        ).fetchone()
        if row is None:
            raise DynamicPersonGroupNotFound(f"dynamic person group {dgroup_id!r} does not exist")
        return DynamicGroup(*row)

    def dynamic_members(self, dgroup_id: str) -> list[str]:
        self.get_dynamic_group(dgroup_id)
        return [
            r[0]
            for r in self._db.execute(
                "SELECT person_id FROM dynamic_members WHERE dgroup_id = ? ORDER BY person_id", (dgroup_id,)
            )
        ]

    def update_dynamic_members(
        self, dgroup_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        self.get_dynamic_group(dgroup_id)
        for person_id in add:
            self._person_row(None, person_id)
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO dynamic_members VALUES (?, ?)", [(dgroup_id, p) for p in add]
            )
            db.executemany(
                "DELETE FROM dynamic_members WHERE dgroup_id = ? AND person_id = ?",
                [(dgroup_id, p) for p in remove],
            )

    def delete_dynamic_group(self, dgroup_id: str) -> None:
        self.get_dynamic_group(dgroup_id)
        with self._tx() as db:
            db.execute("DELETE FROM dynamic_groups WHERE dgroup_id = ?", (dgroup_id,))

    # -- cards (verify-mode claims) -------------------------------------------------------------

    def _card_hash(self, card_id: str) -> bytes:
        return hmac.new(self._card_key(), normalize_card(card_id).encode(), hashlib.sha256).digest()

    @staticmethod
    def card_ref(card_hash: bytes) -> str:
        """A short public reference to a card for the audit log: a prefix of its keyed hash."""
        return card_hash[:8].hex()

    def set_card(self, card_id: str, group_id: str | None, person_id: str) -> str:
        """Map a card to a person (in ``group_id``, or the directory), replacing the card's previous
        person. Returns the card's reference (``card_ref``)."""
        pid, *_ = self._person_row(group_id, person_id)
        digest = self._card_hash(card_id)
        with self._tx() as db:
            db.execute(
                "INSERT INTO cards VALUES (?, ?, ?) ON CONFLICT (card_hash) DO UPDATE"
                " SET person_id = excluded.person_id, created = excluded.created",
                (digest, pid, self.clock.now()),
            )
        return self.card_ref(digest)

    def delete_card(self, card_id: str) -> str:
        """Remove a card (``CardNotFound`` when no person has it); returns its reference."""
        digest = self._card_hash(card_id)
        with self._tx() as db:
            deleted = db.execute("DELETE FROM cards WHERE card_hash = ?", (digest,)).rowcount
        if not deleted:
            raise CardNotFound("no person has this card")
        self.checkpoint()
        return self.card_ref(digest)

    def person_for_card(self, card_id: str) -> str | None:
        """The person a card is mapped to, or None."""
        row = self._db.execute(
            "SELECT person_id FROM cards WHERE card_hash = ?", (self._card_hash(card_id),)
        ).fetchone()
        return None if row is None else str(row[0])

    def count_cards(self, person_id: str) -> int:
        return int(
            self._db.execute("SELECT COUNT(*) FROM cards WHERE person_id = ?", (person_id,)).fetchone()[0]
        )

    def has_person(self, group_id: str | None, person_id: str) -> bool:
        """Whether ``person_id`` is in ``group_id`` (None: the person directory); nothing decrypted."""
        row = self._db.execute(
            "SELECT 1 FROM persons WHERE person_id = ? AND group_id IS ?", (person_id, group_id)
        ).fetchone()
        return row is not None

    # -- transient faces ------------------------------------------------------------------------

    def add_transient(self, template: FloatArray, model_id: str, ttl_seconds: float) -> tuple[str, float]:
        face_id = new_id()
        now = self.clock.now()
        expires = now + ttl_seconds
        with self._tx() as db:
            key_id, key = self._new_owner_key(db, f"transient:{face_id}")
            db.execute(
                "INSERT INTO transient_faces VALUES (?, ?, ?, ?, ?, ?)",
                (
                    face_id,
                    key_id,
                    seal(key, _template_bytes(template), self._face_aad("transient", face_id, model_id)),
                    model_id,
                    now,
                    expires,
                ),
            )
        return face_id, expires

    def get_transient(self, face_id: str) -> FloatArray:
        row = self._db.execute(
            "SELECT key_id, template, model_id, expires FROM transient_faces WHERE face_id = ?", (face_id,)
        ).fetchone()
        if row is None:
            raise FaceNotFound(
                f"face ID {face_id!r} does not exist or has expired (face IDs live at most 24 h)"
            )
        key_id, blob, model_id, expires = row
        if expires <= self.clock.now():
            self.reap_transient()
            raise FaceNotFound(f"face ID {face_id!r} has expired")
        plain = unseal(
            self._owner_key(key_id), bytes(blob), self._face_aad("transient", face_id, model_id), "a template"
        )
        return np.frombuffer(plain, "<f4").astype(np.float32)

    def reap_transient(self) -> int:
        """Delete every expired transient face and its data key; returns how many."""
        now = self.clock.now()
        with self._tx() as db:
            rows = db.execute(
                "SELECT face_id, key_id FROM transient_faces WHERE expires <= ?", (now,)
            ).fetchall()
            db.execute("DELETE FROM transient_faces WHERE expires <= ?", (now,))
            self._shred(db, [r[1] for r in rows])
        if rows:
            self.checkpoint()
        return len(rows)

    def count_transient(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM transient_faces").fetchone()[0])

    # -- audit ----------------------------------------------------------------------------------

    def audit(
        self, operation: str, actor: str, role: str, targets: dict[str, str], result: str
    ) -> AuditRecord:
        """Append a record: IDs and outcomes only, never names, images or templates."""
        with self._tx() as db:
            last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, "0" * 64)
            record = AuditRecord(
                seq, self.clock.now(), operation, actor, role, dict(targets), result, prev, ""
            )
            record = record.with_hash(chain_hash(record))
            db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", record.row())
            head = canonical({"seq": record.seq, "hash": record.hash})
            signed = canonical({"head": head.decode(), "signature": self._signer.sign(b"audit-head|" + head)})
            db.execute("INSERT OR REPLACE INTO meta VALUES ('audit_head', ?)", (signed,))
        return record

    def audit_after(self, seq: int, limit: int) -> list[AuditRecord]:
        """Up to ``limit`` records after ``seq``, oldest first (the daemon forwards them to MQTT)."""
        rows = self._db.execute("SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [AuditRecord.from_row(tuple(row)) for row in rows]

    def audit_last_seq(self) -> int:
        (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()
        return int(seq)

    def audit_records(self) -> Iterator[AuditRecord]:
        for row in self._db.execute("SELECT * FROM audit ORDER BY seq"):
            yield AuditRecord.from_row(tuple(row))

    def verify_audit(self) -> tuple[bool, int, str]:
        """The chain must hold, and end at the head that the device key signed with the newest
        record: so removing the newest records, or rewriting the chain with fresh hashes, shows."""
        ok, count, reason = verify_chain(self.audit_records())
        if not ok:
            return ok, count, reason
        row = self._db.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
        if row is None:
            return (True, 0, "ok") if count == 0 else (False, count, "the signed head record is missing")
        signed = json.loads(bytes(row[0]))
        head = signed["head"].encode()
        if not verify_signature(self.device_public_key, b"audit-head|" + head, signed["signature"]):
            return False, count, "the signature of the chain's head does not verify"
        expected = json.loads(head)
        last = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if last is None or (int(last[0]), last[1]) != (expected["seq"], expected["hash"]):
            return (
                False,
                count,
                f"the chain should end at record {expected['seq']}; records were removed or rewritten",
            )
        return True, count, "ok"

    # -- keys -----------------------------------------------------------------------------------

    def rotate_kek(self, new: Kek, on_step: Callable[[int], None] | None = None) -> int:
        """Re-wrap every data key and the device key under ``new`` in ONE transaction (templates are
        not re-encrypted): a crash at any point leaves a directory that opens with exactly one of the
        two keys. Returns how many keys were re-wrapped."""
        with self._tx() as db:
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
                (wrap_key(new, self._card_key(), _CARD_KEY_AAD),),
            )
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'kek_check'",
                (seal(new.key, _KEK_CHECK, b"kek-check"),),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'kek_id'", (new.key_id,))
        self._kek = new
        self.checkpoint()
        return len(rows)
