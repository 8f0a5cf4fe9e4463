"""Face lists (and large face lists): faces without persons, for find-similar. A list's faces are
sealed with the list's own data key, shredded when the list is deleted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edged.clock import Clock
from edged.directory.db import Db
from edged.directory.groups import check_kind
from edged.directory.keys import Keys
from edged.directory.receipts import Receipt
from edged.directory.sealed import FaceTable
from edged.errors import FaceListExists, FaceListNotFound
from edged.types import FloatArray

LIST_KINDS = ("list", "large")


@dataclass(frozen=True, slots=True)
class FaceList:
    list_id: str
    kind: str
    name: str
    user_data: str | None
    recognition_model: str
    created: float


class FaceLists:
    """The ``face_lists`` table, and the lists' rows of ``faces`` (``faces``: get, update, delete,
    count)."""

    def __init__(self, db: Db, keys: Keys, clock: Clock) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock
        self.faces = FaceTable(db, keys, clock, "list_id")

    def create(self, list_id: str, name: str, user_data: str | None, kind: str, model: str) -> FaceList:
        check_kind("a face list", kind, LIST_KINDS)
        with self.db.creating(FaceListExists(f"face list {list_id!r} already exists")) as db:
            owner = self.keys.create(f"list:{list_id}")
            db.execute(
                "INSERT INTO face_lists VALUES (?, ?, ?, ?, ?, ?, ?)",
                (list_id, kind, name, user_data, model, owner.key_id, self.clock.now()),
            )
        return self.get(list_id)

    def get(self, list_id: str) -> FaceList:
        row = self.db.execute(
            "SELECT list_id, kind, name, user_data, recognition_model, created FROM face_lists"
            " WHERE list_id = ?",
            (list_id,),
        ).fetchone()
        if row is None:
            raise FaceListNotFound(f"face list {list_id!r} does not exist")
        return FaceList(*row)

    def all(self) -> list[FaceList]:
        rows = self.db.execute(
            "SELECT list_id, kind, name, user_data, recognition_model, created FROM face_lists"
            " ORDER BY list_id"
        ).fetchall()
        return [FaceList(*row) for row in rows]

    def face_ids(self, list_id: str) -> list[str]:
        self.get(list_id)
        return self.db.column("SELECT face_id FROM faces WHERE list_id = ? ORDER BY face_id", (list_id,))

    def delete(self, list_id: str) -> Receipt:
        self.get(list_id)
        with self.db.tx() as db:
            key_id = str(db.scalar("SELECT key_id FROM face_lists WHERE list_id = ?", (list_id,)))
            faces = int(db.scalar("SELECT COUNT(*) FROM faces WHERE list_id = ?", (list_id,)))
            db.execute("DELETE FROM face_lists WHERE list_id = ?", (list_id,))
            shredded = self.keys.shred([key_id])
        self.db.checkpoint()
        return self.keys.receipt(
            "delete_face_list", {"faceListId": list_id}, {"faces": faces}, shredded, self.clock.now()
        )

    # -- the list's faces -----------------------------------------------------------------------

    def add_face(
        self,
        list_id: str,
        template: FloatArray,
        model_id: str,
        user_data: str | None,
        quality: dict[str, Any],
    ) -> str:
        self.get(list_id)
        return self.faces.add(list_id, self.faces.owner_key(list_id), template, model_id, user_data, quality)
