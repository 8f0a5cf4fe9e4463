"""The persisted faces of a scope (a person group, the person directory, a face list): their IDs
(nothing decrypted), their templates (decrypted, only in memory), or a train's page of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edged.directory.db import Db
from edged.directory.groups import Groups
from edged.directory.keys import Keys
from edged.directory.lists import FaceLists
from edged.directory.scope import GroupScope, ListScope, PersonScope, Scope, group_of
from edged.directory.sealed import TemplatePage, Templates, open_templates, sealed_template

ID_BATCH = 500
"""IDs per ``IN (...)`` query (well under SQLite's limit on bound parameters)."""


class Faces:
    """The persisted faces of a scope: a person group, the person directory or a face list. A scope
    that does not exist is ``PersonGroupNotFound`` / ``FaceListNotFound``."""

    def __init__(self, db: Db, keys: Keys, groups: Groups, face_lists: FaceLists) -> None:
        self.db = db
        self.keys = keys
        self.groups = groups
        self.face_lists = face_lists

    def _from(self, scope: Scope, model_id: str | None = None) -> tuple[str, tuple[Any, ...]]:
        """The FROM/WHERE of a scope's faces (``f``, with the owner ``o`` and its ``key_id``), of one
        recognition model when ``model_id`` is given."""
        model = ("", ()) if model_id is None else (" AND f.model_id = ?", (model_id,))
        if isinstance(scope, ListScope):
            self.face_lists.get(scope.list_id)
            where = " FROM faces f JOIN face_lists o USING (list_id) WHERE f.list_id = ?" + model[0]
            return where, (scope.list_id, *model[1])
        if isinstance(scope, GroupScope):
            self.groups.get(scope.group_id)
        where = " FROM faces f JOIN persons o USING (person_id) WHERE o.group_id IS ?" + model[0]
        return where, (group_of(scope), *model[1])

    def ids(self, scope: Scope, model_id: str | None = None) -> list[str]:
        """The persisted face IDs of a scope (of one recognition model when given), sorted; nothing
        decrypted (what the daemon compares its indexes with after another process wrote)."""
        where, params = self._from(scope, model_id)
        return self.db.column(f"SELECT f.face_id{where} ORDER BY f.face_id", params)

    def templates(
        self,
        scope: Scope,
        *,
        person_ids: Sequence[str] | None = None,
        face_ids: Sequence[str] | None = None,
        model_id: str | None = None,
    ) -> Templates:
        """Decrypt the templates of a scope (only those of ``person_ids`` / only ``face_ids`` / only
        those of the recognition model ``model_id`` when given: a person may hold templates of
        several models, which are never compared with each other)."""
        where, params = self._from(scope, model_id)
        owner = "f.list_id" if isinstance(scope, ListScope) else "f.person_id"
        select = f"SELECT f.face_id, {owner}, f.template, f.model_id, o.key_id{where}"
        if face_ids is None:
            rows = self.db.execute(f"{select} ORDER BY f.face_id", params).fetchall()
        else:
            rows = []
            wanted_faces = sorted(set(face_ids))
            for i in range(0, len(wanted_faces), ID_BATCH):
                batch = wanted_faces[i : i + ID_BATCH]
                marks = ", ".join("?" * len(batch))
                rows += self.db.execute(
                    f"{select} AND f.face_id IN ({marks}) ORDER BY f.face_id", (*params, *batch)
                ).fetchall()
        wanted = set(person_ids) if person_ids is not None else None
        sealed = [sealed_template(r) for r in rows if wanted is None or r[1] in wanted]
        return open_templates(self.keys, sealed, faces_own_themselves=isinstance(scope, ListScope))

    def train_page(
        self, scope: PersonScope, after: str | None, persons: int, model_id: str | None = None
    ) -> TemplatePage:
        """The templates of at most ``persons`` persons of a group or the directory, those whose IDs
        sort after ``after`` (None: from the first). A train reads a large group page by page, so
        whoever shares this connection gets it between pages; pages read at different times are not
        one snapshot."""
        group_id = group_of(scope)
        if group_id is not None:
            self.groups.get(group_id)
        last = self.db.scalar(
            "SELECT MAX(person_id) FROM (SELECT person_id FROM persons WHERE group_id IS ? AND"
            " person_id > ? ORDER BY person_id LIMIT ?)",
            (group_id, after or "", persons),
        )
        if last is None:
            return TemplatePage(Templates.empty(), None)
        rows = self.db.execute(
            "SELECT f.face_id, f.person_id, f.template, f.model_id, p.key_id FROM persons p"
            " JOIN faces f USING (person_id) WHERE p.group_id IS ? AND p.person_id > ?"
            " AND p.person_id <= ? AND (? IS NULL OR f.model_id = ?)",
            (group_id, after or "", last, model_id, model_id),
        ).fetchall()
        templates = open_templates(self.keys, [sealed_template(r) for r in rows], faces_own_themselves=False)
        return TemplatePage(templates, str(last))
