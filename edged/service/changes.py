"""The directory changes: person groups (and their training), persons and their faces, face lists
and their faces, cards. Each takes the ``Caller`` and follows one recipe (``DirectoryAccess.change``):
the policy allows the caller or refuses (audited), the arguments are checked, the store changes
under the service lock and its audit record is written in the same transaction, and the cached
indexes follow once that committed. ``enrol_person`` is one enrolment of one person, all or
nothing: the images' faces are embedded first, then the person and all its faces are stored in one
transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial

from edged.directory.groups import PersonGroup
from edged.directory.receipts import Receipt
from edged.directory.scope import GroupScope, ListScope, person_scope
from edged.errors import DuplicateIdentity, EdgedError, PersonGroupNotFound, QuotaExceeded
from edged.matcher import Match
from edged.service import policy
from edged.service.access import Operations
from edged.service.limits import (
    MAX_FACES_PER_PERSON,
    MAX_LIST_FACES,
    MAX_PERSONS,
    MAX_USER_DATA,
    check_id,
    check_names,
    check_text,
)
from edged.service.policy import Caller
from edged.types import Box, Face, FloatArray, ImageRGB

logger = logging.getLogger(__name__)

DIRECTORY = "(directory)"
"""The person group of a person of the directory, in audit records."""


@dataclass(frozen=True, slots=True)
class Enrolment:
    face_id: str
    person_id: str
    quality: tuple[str, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Embedded:
    """A face found in an image and embedded for enrolment (the inference, done before the lock)."""

    face: Face
    template: FloatArray = field(repr=False)


@dataclass(frozen=True, slots=True)
class PersonEnrolment:
    """What ``enrol_person`` did: the person (``created`` when it was new) and, for each embedded
    face in order, its enrolment or why it was left out."""

    person_id: str
    created: bool
    faces: tuple[Enrolment | EdgedError, ...]


def _quality(face: Face) -> dict[str, object]:
    return {"reasons": list(face.quality.reasons), **face.quality.measures}


class DirectoryChanges(Operations):
    # -- person groups ------------------------------------------------------------------------------

    def create_group(
        self, caller: Caller, group_id: str, name: str, user_data: str | None = None, large: bool = False
    ) -> PersonGroup:
        with self.access.change(caller, "create_person_group") as change:
            check_id("personGroupId", group_id)
            check_names(name, user_data)
            change.targets = {"personGroupId": group_id}
            kind = "large" if large else "group"
            return self.store.groups.create(group_id, name, user_data, kind, self.model_id)

    def update_group(
        self, caller: Caller, group_id: str, name: str | None, user_data: str | None
    ) -> PersonGroup:
        with self.access.change(caller, "update_person_group") as change:
            check_names(name, user_data)
            change.targets = {"personGroupId": group_id}
            return self.store.groups.update(group_id, name, user_data)

    def delete_group(self, caller: Caller, group_id: str) -> Receipt:
        with self.access.change(caller, "delete_person_group") as change:
            receipt = self.store.groups.delete(group_id)
            change.then(partial(self.indexes.drop, GroupScope(group_id)))
            change.targets = {"personGroupId": group_id}
            change.receipt(receipt)
        return receipt

    def train(self, caller: Caller, group_id: str) -> PersonGroup:
        """(Re)build the group's index from the store: the explicit train step of the reference
        service. Afterwards adds and deletes keep the index consistent without retraining.

        The new index is built while the old one keeps serving (the door searches it meanwhile):
        the templates are read and decrypted ``TRAIN_PAGE_PERSONS`` persons at a time, each page
        under the service lock (the SQLite connection is shared), the index is built outside it;
        then, in one hold of the lock, it is re-synced with the store (whatever was enrolled or
        deleted while it was built), ``succeeded`` and the audit record commit in one transaction,
        and the index is swapped in. A failure commits ``failed`` with its record (result
        ``failed: <code>``). A process stopped in the middle leaves ``running`` and no record: the
        daemon recovers it at start, audited (``recover_interrupted_training``)."""
        self.access.allow(caller, "train")
        scope = GroupScope(group_id)
        with self.access.lock:
            storage = self.indexes.storage(scope)  # PersonGroupNotFound
            self.indexes.check_scope(scope)  # another model's group: nothing to build here
            self.store.groups.set_training(group_id, "running")
        try:
            index = self.indexes.build(group_id, storage)
            with self.access.change(caller, "train") as change:  # no enrolment reaches only the old index
                self.indexes.check_scope(scope)  # again: another process may have re-created it meanwhile
                self.indexes.resync(scope, index)
                self.store.groups.set_training(group_id, "succeeded")
                change.targets = {"personGroupId": group_id}
                change.then(partial(self.indexes.put, scope, index))  # the swap: the door's next search
                return self.store.groups.get(group_id)
        except Exception as exc:
            self._train_failed(caller, group_id, exc)
            raise

    def _train_failed(self, caller: Caller, group_id: str, exc: Exception) -> None:
        try:
            with self.access.change(caller, "train") as change:
                self.store.groups.set_training(group_id, "failed", str(exc)[:200])
                change.targets = {"personGroupId": group_id}
                change.result = f"failed: {exc.code if isinstance(exc, EdgedError) else type(exc).__name__}"
        except PersonGroupNotFound:
            pass  # deleted while it was being trained
        except Exception:  # keep the training's own error
            logger.exception("person group %r: could not record the failed training", group_id)

    # -- persons and their faces --------------------------------------------------------------------

    def create_person(
        self, caller: Caller, group_id: str | None, name: str, user_data: str | None = None
    ) -> str:
        with self.access.change(caller, "create_person") as change:
            check_names(name, user_data)
            if group_id is not None:
                group = self.store.groups.get(group_id)
                self.indexes.check_model(f"person group {group_id!r}", group.recognition_model)
                kind = group.kind
                if self.store.persons.count(group_id) >= MAX_PERSONS[kind]:
                    raise QuotaExceeded(
                        f"person group {group_id!r} already holds {MAX_PERSONS[kind]:,} persons"
                    )
            person_id = self.store.persons.create(group_id, name, user_data)
            change.targets = {"personId": person_id, "personGroupId": group_id or DIRECTORY}
        return person_id

    def add_person_face(
        self,
        caller: Caller,
        group_id: str | None,
        person_id: str,
        image: ImageRGB,
        *,
        target: Box | None = None,
        user_data: str | None = None,
    ) -> Enrolment:
        """Detect, gate, check for a duplicate identity, then store the template (encrypted)."""
        embedded = self._enrollable(caller, "add_person_face", image, target, user_data)
        return self._add_person_face(caller, group_id, person_id, embedded, user_data)

    def embed(self, caller: Caller, image: ImageRGB, target: Box | None = None) -> Embedded:
        """The face of an image to enrol with ``enrol_person``: found, gated and embedded (no lock,
        no change; the caller must be allowed to add faces)."""
        return self._enrollable(caller, "add_person_face", image, target, None)

    def enrol_person(
        self,
        caller: Caller,
        group_id: str | None,
        person_id: str | None,
        name: str,
        faces: Sequence[Embedded],
        user_data: str | None = None,
    ) -> PersonEnrolment:
        """One enrolment of one person, all or nothing: in one transaction, the person is created
        (``person_id`` None: named ``name``, with ``user_data``) and each face (from ``embed``)
        added, each change with its audit record. A face refused there (a duplicate identity, the
        quota) is left out with its error and the others go on; anything else, or a process killed
        on the way, leaves nothing."""
        results: list[Enrolment | EdgedError] = []
        with self.access.lock:
            if faces:
                self._load_duplicate_index(caller, group_id)
            with self.access.transaction():
                created = person_id is None
                if person_id is None:
                    person_id = self.create_person(caller, group_id, name, user_data)
                for embedded in faces:
                    try:
                        results.append(self._add_person_face(caller, group_id, person_id, embedded, None))
                    except EdgedError as exc:
                        results.append(exc)
        return PersonEnrolment(person_id, created, tuple(results))

    def _add_person_face(
        self, caller: Caller, group_id: str | None, person_id: str, embedded: Embedded, user_data: str | None
    ) -> Enrolment:
        with self.access.lock:  # the index loaded before the write transaction, not inside it
            self._load_duplicate_index(caller, group_id)
            return self._store_person_face(caller, group_id, person_id, embedded, user_data)

    def _store_person_face(
        self, caller: Caller, group_id: str | None, person_id: str, embedded: Embedded, user_data: str | None
    ) -> Enrolment:
        operation = "add_person_face"
        face, template = embedded.face, embedded.template
        warnings: list[str] = []
        with self.access.change(caller, operation) as change:
            self.store.persons.get(group_id, person_id)
            self.indexes.check_scope(person_scope(group_id))
            if self.store.persons.faces.count(person_id) >= MAX_FACES_PER_PERSON:
                raise QuotaExceeded(f"person {person_id!r} already has {MAX_FACES_PER_PERSON} faces")
            if self.settings.duplicate_policy != "off":
                clash = self._duplicate(group_id, person_id, template)
                if clash is not None:
                    message = (
                        f"the face matches a different person, {clash.owner_id} "
                        f"(distance {clash.distance:.3f})"
                    )
                    if self.settings.duplicate_policy == "refuse":
                        targets = {"personId": person_id}
                        self.access.audit(operation, caller.actor, caller.role, targets, "refused: duplicate")
                        raise DuplicateIdentity(message)
                    warnings.append(message)
            face_id = self.store.persons.add_face(
                group_id, person_id, template, self.model_id, user_data, _quality(face)
            )
            change.then(partial(self.indexes.added, person_scope(group_id), face_id, person_id, template))
            if group_id is not None:
                self.store.groups.touch(group_id)
            change.targets = {"personId": person_id, "persistedFaceId": face_id}
        return Enrolment(face_id, person_id, face.quality.reasons, tuple(warnings))

    def _enrollable(
        self, caller: Caller, operation: str, image: ImageRGB, target: Box | None, user_data: str | None
    ) -> Embedded:
        """What an enrolment does before it takes the service lock: the caller is allowed (a refused
        one costs no inference), the userData checked, and the face found and embedded."""
        self.access.allow(caller, operation)
        check_text("userData", user_data, MAX_USER_DATA)
        return Embedded(*self.finder.enrollable(image, target))

    def _load_duplicate_index(self, caller: Caller, group_id: str | None) -> None:
        """Under the service lock, before the change's write transaction: the index the duplicate
        check searches, loaded (decrypted: the whole scope, in a fresh CLI process) while no SQLite
        write lock is held, so other writers (the daemon) do not wait for the decryption. Nothing
        for a caller the change will refuse, or a group that does not exist (the change says so)."""
        if self.settings.duplicate_policy == "off" or not policy.allows(caller.role, "add_person_face"):
            return
        with suppress(PersonGroupNotFound):
            self.indexes.get(person_scope(group_id))

    def _duplicate(self, group_id: str | None, person_id: str, template: FloatArray) -> Match | None:
        """The closest face of another person within the duplicate threshold. The index was loaded
        before the transaction (``_load_duplicate_index``); what other processes committed since is
        added now (``refresh``: one PRAGMA when nothing changed, else only new faces decrypted)."""
        self.access.refresh()
        index = self.indexes.get(person_scope(group_id))
        threshold = self.calibration.threshold_for(self.settings.duplicate_far)
        for match in index.search(template, 2, max_distance=threshold):
            if match.owner_id != person_id:
                return match
        return None

    def delete_person(self, caller: Caller, group_id: str | None, person_id: str) -> Receipt:
        with self.access.change(caller, "delete_person") as change:
            receipt = self.store.persons.delete(group_id, person_id)
            change.then(partial(self.indexes.owner_removed, person_scope(group_id), person_id))
            change.targets = {"personId": person_id, "personGroupId": group_id or DIRECTORY}
            change.receipt(receipt)
        return receipt

    def delete_person_face(
        self, caller: Caller, group_id: str | None, person_id: str, face_id: str
    ) -> Receipt:
        with self.access.change(caller, "delete_person_face") as change:
            self.store.persons.get(group_id, person_id)
            receipt = self.store.persons.faces.delete(face_id, person_id)
            change.then(partial(self.indexes.face_removed, person_scope(group_id), face_id))
            change.targets = {"personId": person_id, "persistedFaceId": face_id}
        return receipt

    # -- face lists -------------------------------------------------------------------------------

    def create_face_list(
        self, caller: Caller, list_id: str, name: str, user_data: str | None = None, large: bool = False
    ) -> None:
        with self.access.change(caller, "create_face_list") as change:
            check_id("faceListId", list_id)
            check_names(name, user_data)
            kind = "large" if large else "list"
            self.store.face_lists.create(list_id, name, user_data, kind, self.model_id)
            change.targets = {"faceListId": list_id}

    def add_list_face(
        self,
        caller: Caller,
        list_id: str,
        image: ImageRGB,
        *,
        target: Box | None = None,
        user_data: str | None = None,
    ) -> str:
        operation = "add_face_list_face"
        embedded = self._enrollable(caller, operation, image, target, user_data)
        face, template = embedded.face, embedded.template
        with self.access.change(caller, operation) as change:
            face_list = self.store.face_lists.get(list_id)
            self.indexes.check_model(f"face list {list_id!r}", face_list.recognition_model)
            kind = face_list.kind
            if self.store.face_lists.faces.count(list_id) >= MAX_LIST_FACES[kind]:
                raise QuotaExceeded(f"face list {list_id!r} already holds {MAX_LIST_FACES[kind]:,} faces")
            face_id = self.store.face_lists.add_face(
                list_id, template, self.model_id, user_data, _quality(face)
            )
            change.then(partial(self.indexes.added, ListScope(list_id), face_id, face_id, template))
            change.targets = {"faceListId": list_id, "persistedFaceId": face_id}
        return face_id

    def delete_face_list(self, caller: Caller, list_id: str) -> Receipt:
        with self.access.change(caller, "delete_face_list") as change:
            receipt = self.store.face_lists.delete(list_id)
            change.then(partial(self.indexes.drop, ListScope(list_id)))
            change.targets = {"faceListId": list_id}
        return receipt

    def delete_list_face(self, caller: Caller, list_id: str, face_id: str) -> Receipt:
        with self.access.change(caller, "delete_face_list_face") as change:
            receipt = self.store.face_lists.faces.delete(face_id, list_id)
            change.then(partial(self.indexes.face_removed, ListScope(list_id), face_id))
            change.targets = {"faceListId": list_id, "persistedFaceId": face_id}
        return receipt

    # -- cards (verify-mode claims) -------------------------------------------------------------------

    def set_card(self, caller: Caller, card_id: str, person_id: str, group_id: str | None = None) -> str:
        """Map a card number to a person of ``group_id`` (None: the person directory), replacing the
        card's previous person. Only its keyed hash is stored; returns the card's reference (a prefix
        of that hash, also in the audit record)."""
        with self.access.change(caller, "set_card") as change:
            ref = self.store.cards.set(card_id, group_id, person_id)
            change.targets = {"personId": person_id, "personGroupId": group_id or DIRECTORY, "card": ref}
        return ref

    def delete_card(self, caller: Caller, card_id: str) -> str:
        """Remove a card (``CardNotFound`` when no person has it); returns its reference."""
        with self.access.change(caller, "delete_card") as change:
            ref = self.store.cards.delete(card_id)
            change.targets = {"card": ref}
        return ref
