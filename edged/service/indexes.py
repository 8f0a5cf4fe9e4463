"""The matching indexes of the directory: one ``TemplateIndex`` per scope (a person group, the person
directory, a face list), decrypted from the store on first use and kept in line with it. Decrypted
templates exist only here, in memory.

Changes to the cache, and every store call, hold the service lock; each ``TemplateIndex`` has its
own lock, so a search (the door's) needs only that one and never waits for a long directory
operation (a train, an identify, a re-sync after another process wrote).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

import numpy as np

from edged.directory.scope import DirectoryScope, GroupScope, ListScope, Scope
from edged.directory.sealed import Templates
from edged.directory.store import Store
from edged.errors import BadArgument, FaceListNotFound, PersonGroupNotFound, PersonGroupNotTrained
from edged.matcher import Storage, TemplateIndex
from edged.types import FloatArray

logger = logging.getLogger(__name__)

TRAIN_PAGE_PERSONS = 1024
"""Persons whose templates a train reads (and decrypts) per hold of the service lock: the SQLite
connection is shared, so other operations get it between pages (≈ 20 ms of decryption each)."""


class Indexes:
    """The index cache, keyed by scope."""

    def __init__(
        self, store: Store, lock: threading.RLock, model_id: str | None = None, dim: int = 128
    ) -> None:
        """``model_id``: the recognition model whose templates the indexes hold (a person may hold
        templates of several; None: every template, all of one size ``dim``)."""
        self.store = store
        self.lock = lock
        self.model_id = model_id
        self.dim = dim
        self._cache: dict[Scope, TemplateIndex] = {}

    def storage(self, scope: Scope) -> Storage:
        """Small groups and lists: exact float32 (10,000 templates are 5 MB). Large ones and the
        directory: int8 (1M templates in < 200 MB at ~12 ms a query; docs/matching.md).
        ``PersonGroupNotFound`` / ``FaceListNotFound`` when the scope does not exist."""
        if isinstance(scope, DirectoryScope):
            return "int8"
        if isinstance(scope, ListScope):
            return "int8" if self.store.face_lists.get(scope.list_id).kind == "large" else "float32"
        return "int8" if self.store.groups.get(scope.group_id).kind == "large" else "float32"

    def cached(self, scope: Scope) -> TemplateIndex | None:
        """The cached index of ``scope``, if any (a dictionary lookup: no lock, nothing loaded)."""
        return self._cache.get(scope)

    def get(self, scope: Scope) -> TemplateIndex:
        """The index of ``scope``, loaded (decrypted) from the store on first use. Under the lock."""
        index = self._cache.get(scope)
        if index is None:
            index = self._cache[scope] = self.load(scope)
        return index

    def trained(self, group_id: str) -> TemplateIndex:
        """The index of a trained person group; ``PersonGroupNotFound`` / ``PersonGroupNotTrained``.
        Under the lock."""
        group = self.store.groups.get(group_id)
        self.check_model(f"person group {group_id!r}", group.recognition_model)
        if group.train_status != "succeeded":
            raise PersonGroupNotTrained(
                f"person group {group_id!r} is not trained (status {group.train_status}): run train first"
            )
        return self.get(GroupScope(group_id))

    def check_model(self, what: str, model: str) -> None:
        """``BadArgument`` when ``what`` (a group, a face list) holds templates of another
        recognition model than the indexes' (they never compare)."""
        if self.model_id is not None and model != self.model_id:
            raise BadArgument(
                f"{what} uses recognition model {model}; this terminal matches with {self.model_id} "
                "(templates of two models are never compared)"
            )

    def check_scope(self, scope: Scope) -> None:
        """``check_model`` for a group's or a face list's scope (the person directory holds any
        model's templates); ``PersonGroupNotFound`` / ``FaceListNotFound`` when it is gone."""
        if isinstance(scope, GroupScope):
            self.check_model(
                f"person group {scope.group_id!r}", self.store.groups.get(scope.group_id).recognition_model
            )
        elif isinstance(scope, ListScope):
            self.check_model(
                f"face list {scope.list_id!r}", self.store.face_lists.get(scope.list_id).recognition_model
            )

    def load(self, scope: Scope) -> TemplateIndex:
        """A new index of the scope's templates, all read at once (under the lock); a group or a
        face list of another recognition model is ``BadArgument``."""
        self.check_scope(scope)
        templates = self.store.faces.templates(scope, model_id=self.model_id)
        index = TemplateIndex(dim=self.dim, storage=self.storage(scope))
        if templates.face_ids:
            index.add_many(templates.face_ids, templates.owner_ids, templates.matrix)
        return index

    def put(self, scope: Scope, index: TemplateIndex) -> None:
        """Swap in a new index (under the lock): the next search uses it."""
        self._cache[scope] = index

    def drop(self, scope: Scope) -> None:
        """Forget a cached index and empty it (a search holding it finds nothing from now on)."""
        index = self._cache.pop(scope, None)
        if index is not None:
            index.clear()

    # -- keeping cached indexes in line with a change (under the lock) ------------------------------

    def added(self, scope: Scope, face_id: str, owner_id: str, template: FloatArray) -> None:
        index = self._cache.get(scope)
        if index is not None:
            index.add(face_id, owner_id, template)

    def owner_removed(self, scope: Scope, owner_id: str) -> None:
        index = self._cache.get(scope)
        if index is not None:
            index.remove_owner(owner_id)

    def face_removed(self, scope: Scope, face_id: str) -> None:
        index = self._cache.get(scope)
        if index is not None:
            index.remove_face(face_id)

    def resync(self, scope: Scope, index: TemplateIndex) -> tuple[int, int]:
        """Bring ``index`` in line with the store's faces of ``scope``: faces no longer stored are
        removed (first: nothing is decrypted for that), stored faces it lacks are decrypted and
        added. Under the lock; returns (added, removed). ``PersonGroupNotFound`` /
        ``FaceListNotFound`` when the scope is gone."""
        missing, extra = index.diff_faces(self.store.faces.ids(scope, self.model_id))
        removed = index.remove_faces(extra)
        if missing:
            templates = self.store.faces.templates(scope, face_ids=missing, model_id=self.model_id)
            index.add_many(templates.face_ids, templates.owner_ids, templates.matrix)
        return len(missing), removed

    def resync_all(self) -> int:
        """Re-sync every cached index with the store (after another process wrote): the face IDs
        are compared, nothing is decrypted but new faces; an index whose group or list is gone is
        dropped, one re-created as the other kind reloaded. Under the lock. Returns the number of
        indexes checked; raises the first error after trying them all."""
        failed: Exception | None = None
        synced = 0
        for scope, index in list(self._cache.items()):
            try:
                model = self._model_of(scope)
                if self.model_id is not None and model not in (None, self.model_id):
                    # deleted and re-created by a terminal of another model: nothing here to search
                    logger.warning(
                        "directory changed by another process: %s now uses recognition model %s, "
                        "this terminal %s: its index is dropped",
                        scope,
                        model,
                        self.model_id,
                    )
                    self.drop(scope)
                elif self.storage(scope) != index.storage:  # deleted and re-created as the other kind
                    self._cache[scope] = self.load(scope)
                    index.clear()
                else:
                    added, removed = self.resync(scope, index)
                    if added or removed:
                        logger.info(
                            "directory changed by another process: %s: %d face(s) added, %d removed",
                            scope,
                            added,
                            removed,
                        )
            except (PersonGroupNotFound, FaceListNotFound):
                logger.info("directory changed by another process: %s was deleted", scope)
                self.drop(scope)
            except Exception as exc:  # e.g. a locked database: the next call tries again
                failed = failed or exc
                continue
            synced += 1
        if failed is not None:
            raise failed
        return synced

    def _model_of(self, scope: Scope) -> str | None:
        """The recognition model of a group's or a face list's scope (None: the person directory,
        which holds templates of any model); NotFound when the scope is gone."""
        if isinstance(scope, GroupScope):
            return self.store.groups.get(scope.group_id).recognition_model
        if isinstance(scope, ListScope):
            return self.store.face_lists.get(scope.list_id).recognition_model
        return None

    # -- training ---------------------------------------------------------------------------------

    def build(self, group_id: str, storage: Storage) -> TemplateIndex:
        """A new index of the group's templates, read page by page (the lock is held for one page
        at a time, not for the whole read), built with one ``add_many`` (which fits its frame)."""
        pages: list[Templates] = []
        after: str | None = None
        while True:
            with self.lock:
                page = self.store.faces.train_page(
                    GroupScope(group_id), after, TRAIN_PAGE_PERSONS, self.model_id
                )
            if page.last is None:
                break
            after = page.last
            if page.templates.face_ids:
                pages.append(page.templates)
        index = TemplateIndex(dim=self.dim, storage=storage)
        if pages:
            index.add_many(
                [f for p in pages for f in p.face_ids],
                [o for p in pages for o in p.owner_ids],
                np.concatenate([p.matrix for p in pages]),
            )
        return index

    def sizes(self, group_ids: Collection[str]) -> dict[str, dict[str, int | None]]:
        """Persons (with a face) and faces in each group's cached index; None for a group with no
        index (gone, untrained, or not loaded). O(1) per group (no SQL, nothing decrypted)."""
        sizes: dict[str, dict[str, int | None]] = {}
        with self.lock:
            for group_id in group_ids:
                index = self._cache.get(GroupScope(group_id))
                if index is None:
                    sizes[group_id] = {"persons": None, "faces": None}
                else:
                    sizes[group_id] = {"persons": index.owner_count, "faces": len(index)}
        return sizes
