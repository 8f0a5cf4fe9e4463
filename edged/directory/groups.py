"""Person groups (and large person groups) and their training state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edged.clock import Clock
from edged.directory.db import Db
from edged.directory.keys import Keys
from edged.directory.receipts import Receipt
from edged.errors import BadArgument, PersonGroupExists, PersonGroupNotFound

GROUP_KINDS = ("group", "large")
_COLUMNS = (
    "group_id, kind, name, user_data, recognition_model, train_status, train_message, trained_at,"
    " created, modified"
)


def check_kind(what: str, kind: str, kinds: Sequence[str]) -> None:
    if kind not in kinds:
        raise BadArgument(f"{what}'s kind is {' or '.join(repr(k) for k in kinds)}, not {kind!r}")


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


class Groups:
    """The ``person_groups`` table. Deleting a group deletes its persons, their faces and cards, and
    shreds the persons' data keys."""

    def __init__(self, db: Db, keys: Keys, clock: Clock) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock

    def create(self, group_id: str, name: str, user_data: str | None, kind: str, model: str) -> PersonGroup:
        check_kind("a person group", kind, GROUP_KINDS)
        now = self.clock.now()
        with self.db.creating(PersonGroupExists(f"person group {group_id!r} already exists")) as db:
            db.execute(
                "INSERT INTO person_groups (group_id, kind, name, user_data, recognition_model, created,"
                " modified) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (group_id, kind, name, user_data, model, now, now),
            )
        return self.get(group_id)

    def get(self, group_id: str) -> PersonGroup:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM person_groups WHERE group_id = ?", (group_id,)
        ).fetchone()
        if row is None:
            raise PersonGroupNotFound(f"person group {group_id!r} does not exist")
        return PersonGroup(*row)

    def page(self, start: str | None = None, top: int = 1000) -> list[PersonGroup]:
        """Up to ``top`` groups whose IDs sort after ``start`` (None: from the first), by ID."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM person_groups WHERE group_id > ? ORDER BY group_id LIMIT ?",
            (start or "", top),
        ).fetchall()
        return [PersonGroup(*row) for row in rows]

    def update(self, group_id: str, name: str | None, user_data: str | None) -> PersonGroup:
        self.get(group_id)
        with self.db.tx() as db:
            if name is not None:
                db.execute("UPDATE person_groups SET name = ? WHERE group_id = ?", (name, group_id))
            if user_data is not None:
                db.execute("UPDATE person_groups SET user_data = ? WHERE group_id = ?", (user_data, group_id))
            self.touch(group_id)
        return self.get(group_id)

    def touch(self, group_id: str) -> None:
        """Record that a group changed (a trained group stays usable: the index is kept consistent,
        and ``modified`` tells when the last training became older than the data)."""
        self.db.execute(
            "UPDATE person_groups SET modified = ? WHERE group_id = ?", (self.clock.now(), group_id)
        )

    def set_training(self, group_id: str, status: str, message: str | None = None) -> None:
        self.get(group_id)
        trained_at = self.clock.now() if status == "succeeded" else None
        with self.db.tx() as db:
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
        with self.db.tx() as db:
            group_ids = db.column(
                "SELECT group_id FROM person_groups WHERE train_status = 'running' ORDER BY group_id"
            )
            db.execute(
                "UPDATE person_groups SET"
                " train_status = CASE WHEN trained_at IS NULL THEN 'failed' ELSE 'succeeded' END,"
                " train_message = CASE WHEN trained_at IS NULL THEN 'interrupted' ELSE NULL END"
                " WHERE train_status = 'running'"
            )
        return [self.get(group_id) for group_id in group_ids]

    def delete(self, group_id: str) -> Receipt:
        self.get(group_id)
        with self.db.tx() as db:
            key_ids = db.column("SELECT key_id FROM persons WHERE group_id = ?", (group_id,))
            faces = db.scalar(
                "SELECT COUNT(*) FROM faces JOIN persons USING (person_id) WHERE persons.group_id = ?",
                (group_id,),
            )
            cards = db.scalar(
                "SELECT COUNT(*) FROM cards JOIN persons USING (person_id) WHERE persons.group_id = ?",
                (group_id,),
            )
            # cascades persons, their faces and their cards
            db.execute("DELETE FROM person_groups WHERE group_id = ?", (group_id,))
            shredded = self.keys.shred(key_ids)
        self.db.checkpoint()
        return self.keys.receipt(
            "delete_person_group",
            {"personGroupId": group_id},
            {"persons": len(key_ids), "faces": int(faces), **({"cards": int(cards)} if cards else {})},
            shredded,
            self.clock.now(),
        )
