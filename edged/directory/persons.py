"""Persons (of a person group, or of the person directory: no group) and their persisted faces.

A person's name and userData, and its faces' templates and userData, are sealed with the person's
own data key; deleting the person deletes its faces, memberships and cards, and shreds the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edged.clock import Clock
from edged.directory.crypto import seal, unseal
from edged.directory.db import Db, new_id
from edged.directory.groups import Groups
from edged.directory.keys import Keys
from edged.directory.receipts import Receipt
from edged.directory.sealed import FaceTable
from edged.errors import PersonNotFound
from edged.types import FloatArray


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str
    group_id: str | None
    name: str
    user_data: str | None
    face_ids: tuple[str, ...]
    created: float


@dataclass(frozen=True, slots=True)
class PersonRow:
    """A stored person, still sealed (nothing decrypted)."""

    person_id: str
    group_id: str | None
    key_id: str
    name: bytes
    user_data: bytes | None
    created: float


def _aad(kind: str, person_id: str, group_id: str | None) -> bytes:
    return f"{kind}|{person_id}|{group_id or ''}".encode()


class Persons:
    """The ``persons`` table, and the persons' rows of ``faces`` (``faces``: get, update, delete,
    count). ``group_id`` None is the person directory everywhere; a person is found only in its own
    group (or only in the directory)."""

    def __init__(self, db: Db, keys: Keys, clock: Clock, groups: Groups) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock
        self.groups = groups
        self.faces = FaceTable(db, keys, clock, "person_id")

    def create(self, group_id: str | None, name: str, user_data: str | None) -> str:
        if group_id is not None:
            self.groups.get(group_id)
        person_id = new_id()
        with self.db.tx() as db:
            owner = self.keys.create(f"person:{person_id}")
            db.execute(
                "INSERT INTO persons VALUES (?, ?, ?, ?, ?, ?)",
                (
                    person_id,
                    group_id,
                    owner.key_id,
                    seal(owner.key, name.encode(), _aad("name", person_id, group_id)),
                    None
                    if user_data is None
                    else seal(owner.key, user_data.encode(), _aad("udata", person_id, group_id)),
                    self.clock.now(),
                ),
            )
            if group_id is not None:
                self.groups.touch(group_id)
        return person_id

    def row(self, group_id: str | None, person_id: str) -> PersonRow:
        """The person, sealed; ``PersonGroupNotFound`` / ``PersonNotFound`` naming the ID."""
        if group_id is not None:
            self.groups.get(group_id)
        row = self.db.execute(
            "SELECT person_id, group_id, key_id, name, user_data, created FROM persons"
            " WHERE person_id = ? AND group_id IS ?",
            (person_id, group_id),
        ).fetchone()
        if row is None:
            where = f"person group {group_id!r}" if group_id else "the person directory"
            raise PersonNotFound(f"person {person_id!r} is not in {where}")
        pid, gid, key_id, name, user_data, created = row
        return PersonRow(
            pid, gid, key_id, bytes(name), None if user_data is None else bytes(user_data), created
        )

    def has(self, group_id: str | None, person_id: str) -> bool:
        """Whether ``person_id`` is in ``group_id`` (None: the person directory); nothing decrypted."""
        row = self.db.execute(
            "SELECT 1 FROM persons WHERE person_id = ? AND group_id IS ?", (person_id, group_id)
        ).fetchone()
        return row is not None

    def get(self, group_id: str | None, person_id: str) -> Person:
        return self._open(self.row(group_id, person_id))

    def _open(self, row: PersonRow) -> Person:
        key = self.keys.unwrap(row.key_id)
        pid, gid = row.person_id, row.group_id
        faces = tuple(
            self.db.column("SELECT face_id FROM faces WHERE person_id = ? ORDER BY created, face_id", (pid,))
        )
        name = unseal(key, row.name, _aad("name", pid, gid), "a person's name").decode()
        user_data = (
            None
            if row.user_data is None
            else unseal(key, row.user_data, _aad("udata", pid, gid), "a person's userData").decode()
        )
        return Person(pid, gid, name, user_data, faces, row.created)

    def page(self, group_id: str | None, start: str | None = None, top: int = 1000) -> list[Person]:
        """Up to ``top`` persons whose IDs sort after ``start`` (None: from the first), by ID."""
        if group_id is not None:
            self.groups.get(group_id)
        person_ids = self.db.column(
            "SELECT person_id FROM persons WHERE group_id IS ? AND person_id > ? ORDER BY person_id LIMIT ?",
            (group_id, start or "", top),
        )
        return [self.get(group_id, person_id) for person_id in person_ids]

    def count(self, group_id: str | None) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM persons WHERE group_id IS ?", (group_id,)))

    def update(self, group_id: str | None, person_id: str, name: str | None, user_data: str | None) -> Person:
        row = self.row(group_id, person_id)
        key = self.keys.unwrap(row.key_id)
        with self.db.tx() as db:
            if name is not None:
                db.execute(
                    "UPDATE persons SET name = ? WHERE person_id = ?",
                    (seal(key, name.encode(), _aad("name", row.person_id, row.group_id)), row.person_id),
                )
            if user_data is not None:
                db.execute(
                    "UPDATE persons SET user_data = ? WHERE person_id = ?",
                    (
                        seal(key, user_data.encode(), _aad("udata", row.person_id, row.group_id)),
                        row.person_id,
                    ),
                )
        return self.get(group_id, person_id)

    def delete(self, group_id: str | None, person_id: str) -> Receipt:
        row = self.row(group_id, person_id)
        pid, gid = row.person_id, row.group_id
        with self.db.tx() as db:
            faces = int(db.scalar("SELECT COUNT(*) FROM faces WHERE person_id = ?", (pid,)))
            cards = int(db.scalar("SELECT COUNT(*) FROM cards WHERE person_id = ?", (pid,)))
            # cascades faces, memberships, cards
            db.execute("DELETE FROM persons WHERE person_id = ?", (pid,))
            shredded = self.keys.shred([row.key_id])
            if gid is not None:
                self.groups.touch(gid)
        self.db.checkpoint()
        targets = {"personId": pid, **({"personGroupId": gid} if gid else {})}
        deleted = {"persons": 1, "faces": faces, **({"cards": cards} if cards else {})}
        return self.keys.receipt("delete_person", targets, deleted, shredded, self.clock.now())

    # -- the person's faces ---------------------------------------------------------------------

    def add_face(
        self,
        group_id: str | None,
        person_id: str,
        template: FloatArray,
        model_id: str,
        user_data: str | None,
        quality: dict[str, Any],
    ) -> str:
        row = self.row(group_id, person_id)
        key = self.keys.unwrap(row.key_id)
        return self.faces.add(row.person_id, key, template, model_id, user_data, quality)
