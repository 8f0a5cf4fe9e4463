"""Dynamic person groups: named sets of persons of the person directory (identify's scope)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edged.clock import Clock
from edged.directory.db import Db
from edged.directory.persons import Persons
from edged.errors import DynamicPersonGroupNotFound, PersonGroupExists


@dataclass(frozen=True, slots=True)
class DynamicGroup:
    dgroup_id: str
    name: str
    user_data: str | None
    created: float


class DynamicGroups:
    """The ``dynamic_groups`` and ``dynamic_members`` tables. Only persons of the directory can be
    members; deleting a person removes its memberships, deleting a group none of its members."""

    def __init__(self, db: Db, clock: Clock, persons: Persons) -> None:
        self.db = db
        self.clock = clock
        self.persons = persons

    def create(self, dgroup_id: str, name: str, user_data: str | None, members: Sequence[str]) -> None:
        members = list(dict.fromkeys(members))  # a repeated ID is one membership
        for person_id in members:
            self.persons.row(None, person_id)
        with self.db.creating(PersonGroupExists(f"dynamic person group {dgroup_id!r} already exists")) as db:
            db.execute(
                "INSERT INTO dynamic_groups VALUES (?, ?, ?, ?)",
                (dgroup_id, name, user_data, self.clock.now()),
            )
            db.executemany("INSERT INTO dynamic_members VALUES (?, ?)", [(dgroup_id, p) for p in members])

    def get(self, dgroup_id: str) -> DynamicGroup:
        row = self.db.execute(
            "SELECT dgroup_id, name, user_data, created FROM dynamic_groups WHERE dgroup_id = ?", (dgroup_id,)
        ).fetchone()
        if row is None:
            raise DynamicPersonGroupNotFound(f"dynamic person group {dgroup_id!r} does not exist")
        return DynamicGroup(*row)

    def members(self, dgroup_id: str) -> list[str]:
        self.get(dgroup_id)
        return self.db.column(
            "SELECT person_id FROM dynamic_members WHERE dgroup_id = ? ORDER BY person_id", (dgroup_id,)
        )

    def update_members(self, dgroup_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        self.get(dgroup_id)
        for person_id in add:
            self.persons.row(None, person_id)
        with self.db.tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO dynamic_members VALUES (?, ?)", [(dgroup_id, p) for p in add]
            )
            db.executemany(
                "DELETE FROM dynamic_members WHERE dgroup_id = ? AND person_id = ?",
                [(dgroup_id, p) for p in remove],
            )

    def delete(self, dgroup_id: str) -> None:
        self.get(dgroup_id)
        with self.db.tx() as db:
            db.execute("DELETE FROM dynamic_groups WHERE dgroup_id = ?", (dgroup_id,))
