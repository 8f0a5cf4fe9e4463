"""Sealed faces: the rows of the ``faces`` table, shared by persons and face lists, and how they
are sealed and opened.

A face's template (128 float32) and userData are sealed with its owner's data key, with associated
data that names the owner, the face and the model (``face_aad``), so a blob copied to another row
fails to decrypt. ``FaceTable`` is one owner kind's view of the table (the persons' faces, the face
lists' faces); ``edged.directory.faces`` reads the faces of a scope.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edged.clock import Clock
from edged.directory.crypto import seal, unseal
from edged.directory.db import Db, new_id
from edged.directory.keys import Keys
from edged.directory.receipts import NOTHING_SHREDDED, Receipt
from edged.errors import FaceNotFound
from edged.types import FloatArray

TEMPLATE_DIM = 128
"""The dlib family's template size (the directory's templates before the mbf family)."""
TEMPLATE_DIMS = (128, 512)
"""The template sizes the directory stores (one per embedder family: dlib, mbf)."""


@dataclass(frozen=True, slots=True)
class PersistedFace:
    face_id: str
    owner_id: str
    user_data: str | None
    quality: dict[str, Any]
    created: float


@dataclass(frozen=True, slots=True)
class Templates:
    """Decrypted templates of one group / list / the directory: rows align."""

    face_ids: tuple[str, ...]
    owner_ids: tuple[str, ...]
    matrix: FloatArray

    @classmethod
    def empty(cls) -> Templates:
        """No rows (its width is the dlib size whatever the model: check ``face_ids``, not the
        matrix's shape)."""
        return cls((), (), np.zeros((0, TEMPLATE_DIM), np.float32))


@dataclass(frozen=True, slots=True)
class TemplatePage:
    """One page of a train's read: the templates of some persons, and the last of their IDs (None:
    there were no more persons)."""

    templates: Templates
    last: str | None


@dataclass(frozen=True, slots=True)
class FaceRow:
    """A stored face, still sealed."""

    face_id: str
    owner_id: str
    model_id: str
    user_data: bytes | None
    quality: str | None
    created: float


@dataclass(frozen=True, slots=True)
class SealedTemplate:
    """A stored template, still sealed, with what it takes to open it."""

    face_id: str
    owner_id: str
    blob: bytes
    model_id: str
    key_id: str


def template_bytes(template: FloatArray) -> bytes:
    vector = np.asarray(template, np.float32).reshape(-1)
    if vector.size not in TEMPLATE_DIMS or not np.all(np.isfinite(vector)):
        sizes = " or ".join(str(d) for d in TEMPLATE_DIMS)
        raise ValueError(f"a template is {sizes} finite floats, got shape {np.shape(template)}")
    return vector.astype("<f4").tobytes()


def face_aad(owner_id: str, face_id: str, model_id: str) -> bytes:
    return f"face|{owner_id}|{face_id}|{model_id}".encode()


def open_templates(keys: Keys, rows: Sequence[SealedTemplate], *, faces_own_themselves: bool) -> Templates:
    """Decrypt templates (each owner's key unwrapped once). A face list's faces are their own
    owners (``faces_own_themselves``): a find-similar match names the face."""
    unwrapped: dict[str, bytes] = {}
    face_ids, owner_ids, vectors = [], [], []
    for row in rows:
        key = unwrapped.get(row.key_id) or unwrapped.setdefault(row.key_id, keys.unwrap(row.key_id))
        plain = unseal(key, row.blob, face_aad(row.owner_id, row.face_id, row.model_id), "a template")
        face_ids.append(row.face_id)
        owner_ids.append(row.face_id if faces_own_themselves else row.owner_id)
        vectors.append(np.frombuffer(plain, "<f4"))
    if not vectors:
        return Templates.empty()
    if len({v.size for v in vectors}) > 1:  # the caller did not choose a model (``model_id``)
        raise ValueError("templates of two recognition models cannot be read as one matrix")
    return Templates(tuple(face_ids), tuple(owner_ids), np.stack(vectors).astype(np.float32))


class FaceTable:
    """The faces of one kind of owner: persons (``person_id``) or face lists (``list_id``)."""

    def __init__(self, db: Db, keys: Keys, clock: Clock, column: Literal["person_id", "list_id"]) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock
        self.column = column
        self._owners = "persons" if column == "person_id" else "face_lists"
        self._target = "personId" if column == "person_id" else "faceListId"

    def owner_key(self, owner_id: str) -> bytes:
        return self.keys.unwrap(
            str(self.db.scalar(f"SELECT key_id FROM {self._owners} WHERE {self.column} = ?", (owner_id,)))
        )

    def add(
        self,
        owner_id: str,
        key: bytes,
        template: FloatArray,
        model_id: str,
        user_data: str | None,
        quality: dict[str, Any],
    ) -> str:
        face_id = new_id()
        with self.db.tx() as db:
            db.execute(
                f"INSERT INTO faces (face_id, {self.column}, template, model_id, user_data, quality, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    face_id,
                    owner_id,
                    seal(key, template_bytes(template), face_aad(owner_id, face_id, model_id)),
                    model_id,
                    None
                    if user_data is None
                    else seal(key, user_data.encode(), face_aad(owner_id, face_id, "udata")),
                    json.dumps(quality, sort_keys=True),
                    self.clock.now(),
                ),
            )
        return face_id

    def row(self, face_id: str, owner_id: str) -> FaceRow:
        row = self.db.execute(
            f"SELECT face_id, {self.column}, model_id, user_data, quality, created FROM faces"
            f" WHERE face_id = ? AND {self.column} = ?",
            (face_id, owner_id),
        ).fetchone()
        if row is None:
            raise FaceNotFound(f"persisted face {face_id!r} does not exist there")
        face, owner, model_id, user_data, quality, created = row
        return FaceRow(
            face, owner, model_id, None if user_data is None else bytes(user_data), quality, created
        )

    def get(self, face_id: str, owner_id: str) -> PersistedFace:
        row = self.row(face_id, owner_id)
        text = None
        if row.user_data is not None:
            aad = face_aad(row.owner_id, row.face_id, "udata")
            text = unseal(self.owner_key(row.owner_id), row.user_data, aad, "a face's userData").decode()
        return PersistedFace(row.face_id, row.owner_id, text, json.loads(row.quality or "{}"), row.created)

    def update(self, face_id: str, owner_id: str, user_data: str) -> PersistedFace:
        row = self.row(face_id, owner_id)
        key = self.owner_key(row.owner_id)
        with self.db.tx() as db:
            db.execute(
                "UPDATE faces SET user_data = ? WHERE face_id = ?",
                (seal(key, user_data.encode(), face_aad(row.owner_id, row.face_id, "udata")), row.face_id),
            )
        return self.get(face_id, owner_id)

    def delete(self, face_id: str, owner_id: str) -> Receipt:
        row = self.row(face_id, owner_id)
        with self.db.tx() as db:
            db.execute("DELETE FROM faces WHERE face_id = ?", (row.face_id,))
        self.db.checkpoint()
        targets = {"persistedFaceId": row.face_id, self._target: row.owner_id}
        return self.keys.receipt("delete_face", targets, {"faces": 1}, NOTHING_SHREDDED, self.clock.now())

    def count(self, owner_id: str) -> int:
        return int(self.db.scalar(f"SELECT COUNT(*) FROM faces WHERE {self.column} = ?", (owner_id,)))


def sealed_template(row: Sequence[Any]) -> SealedTemplate:
    """A ``(face_id, owner_id, template, model_id, key_id)`` row as a ``SealedTemplate``."""
    face_id, owner_id, blob, model_id, key_id = row
    return SealedTemplate(face_id, owner_id, bytes(blob), model_id, key_id)
