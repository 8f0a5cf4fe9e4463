"""Where templates are searched: a person group, the person directory (persons in no group), or a
face list. The service keys its matching indexes by these; the store reads faces by them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GroupScope:
    """The persons of a (large) person group."""

    group_id: str

    def __str__(self) -> str:
        return f"person group {self.group_id!r}"


@dataclass(frozen=True, slots=True)
class DirectoryScope:
    """The persons of the person directory (in no person group)."""

    def __str__(self) -> str:
        return "the person directory"


@dataclass(frozen=True, slots=True)
class ListScope:
    """The faces of a (large) face list."""

    list_id: str

    def __str__(self) -> str:
        return f"face list {self.list_id!r}"


Scope = GroupScope | DirectoryScope | ListScope
PersonScope = GroupScope | DirectoryScope


def person_scope(group_id: str | None) -> PersonScope:
    """A person group's scope, or the person directory's for None."""
    return DirectoryScope() if group_id is None else GroupScope(group_id)


def group_of(scope: PersonScope) -> str | None:
    """The person group of a scope of persons (None: the person directory)."""
    return scope.group_id if isinstance(scope, GroupScope) else None
