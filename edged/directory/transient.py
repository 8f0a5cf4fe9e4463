"""Transient faces: the face IDs that detect returns (a template, sealed with its own data key,
that expires; at most 24 h), each with the client that asked for it (for the quotas of live face
IDs, ``edged.service.quota``). The reaper deletes expired ones with their keys."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.clock import Clock
from edged.directory.crypto import seal, unseal
from edged.directory.db import Db, new_id
from edged.directory.keys import Keys
from edged.directory.sealed import face_aad, template_bytes
from edged.errors import BadArgument, FaceNotFound
from edged.types import FloatArray

_OWNER = "transient"
"""The owner in a transient template's associated data."""


@dataclass(frozen=True, slots=True)
class TransientFace:
    face_id: str
    expires: float


@dataclass(frozen=True, slots=True)
class LiveFaces:
    """How many face IDs have not expired (of one client, or of all), and the earliest expiry
    among them (None when there are none)."""

    count: int
    next_expiry: float | None


class TransientFaces:
    """The ``transient_faces`` table. Not part of the directory version: a face ID is no change to
    the directory."""

    def __init__(self, db: Db, keys: Keys, clock: Clock) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock

    def add(
        self, template: FloatArray, model_id: str, ttl_seconds: float, client: str | None = None
    ) -> TransientFace:
        """A new face ID for ``template``, owned by ``client`` (who asked for it; the service always
        names one; None, like a face ID of an older edged, counts only against the device's cap)."""
        face_id = new_id()
        now = self.clock.now()
        expires = now + ttl_seconds
        with self.db.tx() as db:
            owner = self.keys.create(f"transient:{face_id}")
            db.execute(
                "INSERT INTO transient_faces (face_id, key_id, template, model_id, created, expires, client)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    face_id,
                    owner.key_id,
                    seal(owner.key, template_bytes(template), face_aad(_OWNER, face_id, model_id)),
                    model_id,
                    now,
                    expires,
                    client,
                ),
            )
        return TransientFace(face_id, expires)

    def get(self, face_id: str, model_id: str | None = None) -> FloatArray:
        """The template of a face ID; ``FaceNotFound`` when it does not exist or has expired (an
        expired one is reaped on the spot); ``BadArgument`` when ``model_id`` is given and the face
        was detected with another recognition model (its template compares with no other's)."""
        row = self.db.execute(
            "SELECT key_id, template, model_id, expires FROM transient_faces WHERE face_id = ?", (face_id,)
        ).fetchone()
        if row is None:
            raise FaceNotFound(
                f"face ID {face_id!r} does not exist or has expired (face IDs live at most 24 h)"
            )
        key_id, blob, stored_model, expires = row
        if expires <= self.clock.now():
            self.reap()
            raise FaceNotFound(f"face ID {face_id!r} has expired")
        if model_id is not None and stored_model != model_id:
            raise BadArgument(
                f"face ID {face_id!r} was detected with recognition model {stored_model}; this comparison "
                f"uses {model_id}: detect the face again"
            )
        plain = unseal(
            self.keys.unwrap(key_id), bytes(blob), face_aad(_OWNER, face_id, stored_model), "a template"
        )
        return np.frombuffer(plain, "<f4").astype(np.float32)

    def reap(self) -> int:
        """Delete every expired transient face and its data key; returns how many."""
        now = self.clock.now()
        with self.db.tx() as db:
            key_ids = db.column("SELECT key_id FROM transient_faces WHERE expires <= ?", (now,))
            db.execute("DELETE FROM transient_faces WHERE expires <= ?", (now,))
            self.keys.shred(key_ids)
        if key_ids:
            self.db.checkpoint()
        return len(key_ids)

    def count(self) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM transient_faces"))

    def live(self, client: str | None = None) -> LiveFaces:
        """The face IDs that have not expired, of ``client`` (None: of every client): a range of
        the index on (client, expires), or on expires; expired ones not yet reaped do not count."""
        now = self.clock.now()
        if client is None:
            row = self.db.execute(
                "SELECT COUNT(*), MIN(expires) FROM transient_faces WHERE expires > ?", (now,)
            ).fetchone()
        else:
            row = self.db.execute(
                "SELECT COUNT(*), MIN(expires) FROM transient_faces WHERE client = ? AND expires > ?",
                (client, now),
            ).fetchone()
        return LiveFaces(int(row[0]), None if row[1] is None else float(row[1]))
