"""The face operations with the semantics of the cloud face APIs, over the pipeline, the encrypted
directory and the in-memory matching indexes.

Limits and error codes follow the reference service (see docs/directory.md). Decrypted templates
exist only here, in ``TemplateIndex`` objects; images only as arguments, never stored.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edged.config import DirectorySettings
from edged.directory.audit import AuditRecord, ChainCheck
from edged.directory.cards import normalize_card
from edged.directory.groups import PersonGroup
from edged.directory.lists import FaceList
from edged.directory.persons import Person
from edged.directory.receipts import Receipt
from edged.directory.scope import DirectoryScope, GroupScope, ListScope, Scope, person_scope
from edged.directory.sealed import Templates
from edged.directory.store import Store
from edged.errors import (
    BadArgument,
    DuplicateIdentity,
    FaceListNotFound,
    Forbidden,
    NoFaceDetected,
    PersonGroupNotFound,
    PersonGroupNotTrained,
    QualityTooLow,
    QuotaExceeded,
)
from edged.inference.manifest import Calibration
from edged.matcher import Match, Storage, TemplateIndex
from edged.pipeline.embed import distance
from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.verify import Verification, verify
from edged.types import Box, Face, FloatArray, ImageRGB

logger = logging.getLogger(__name__)

MAX_PERSONS = {"group": 10_000, "large": 1_000_000}
MAX_LIST_FACES = {"list": 1_000, "large": 1_000_000}
MAX_FACES_PER_PERSON = 248
MAX_NAME = 128
MAX_USER_DATA = 16 * 1024
ID_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
DIRECTORY = "(directory)"
CHANGING_ROLES = frozenset({"manager", "admin"})
TRAIN_PAGE_PERSONS = 1024
"""Persons whose templates a train reads (and decrypts) per hold of the service lock: the SQLite
connection is shared, so other operations get it between pages (≈ 20 ms of decryption each)."""


@dataclass(frozen=True, slots=True)
class DetectedFace:
    face_id: str | None
    expires: float | None
    face: Face

    def as_json(self) -> dict[str, Any]:
        det = self.face.detection
        out: dict[str, Any] = {
            "faceRectangle": det.box.as_list(),
            "score": round(det.score, 4),
            "quality": {
                "ok": self.face.quality.ok,
                "reasons": list(self.face.quality.reasons),
                **self.face.quality.measures,
            },
        }
        if self.face_id is not None:
            out = {"faceId": self.face_id, "expires": self.expires, **out}
        return out


@dataclass(frozen=True, slots=True)
class Candidate:
    person_id: str
    confidence: float
    distance: float

    def as_json(self) -> dict[str, Any]:
        return {"personId": self.person_id, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True, slots=True)
class Similar:
    face_id: str
    confidence: float
    persisted: bool

    def as_json(self) -> dict[str, Any]:
        key = "persistedFaceId" if self.persisted else "faceId"
        return {key: self.face_id, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True, slots=True)
class Enrolment:
    face_id: str
    person_id: str
    quality: tuple[str, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def check_id(kind: str, value: str) -> str:
    if not ID_PATTERN.match(value):
        raise BadArgument(f"{kind} {value!r} must be 1-64 characters of a-z, 0-9, '-' and '_'")
    return value


def check_text(kind: str, value: str | None, limit: int) -> str | None:
    if value is not None and len(value.encode()) > limit:
        raise BadArgument(f"{kind} is {len(value.encode())} bytes; the limit is {limit}")
    return value


def check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BadArgument(f"{name} must be between {low:g} and {high:g}, not {value:g}")


class FaceService:
    """Face API operations. Thread-safe: one lock (the service lock) serialises the store (one
    shared SQLite connection) and changes to the index cache; each ``TemplateIndex`` has its own
    lock, so the door's search (``search_door``) needs only that one and never waits for a long
    directory operation (a train, an identify, a re-sync after another process wrote)."""

    def __init__(
        self, pipeline: FacePipeline, store: Store, settings: DirectorySettings, model_id: str
    ) -> None:
        if pipeline.calibration is None:
            raise BadArgument("the embedder has no calibration: run tools/calibrate.py")
        self.pipeline = pipeline
        self.store = store
        self.settings = settings
        self.model_id = model_id
        self.calibration: Calibration = pipeline.calibration
        self._indexes: dict[str, TemplateIndex] = {}
        self._lock = threading.RLock()
        self._infer = threading.Lock()  # TFLite interpreters are not thread-safe
        self._data_version = store.data_version()  # changes when another connection commits

    # -- helpers --------------------------------------------------------------------------------

    def _faces(self, image: ImageRGB) -> list[Face]:
        with self._infer:
            return self.pipeline.faces(image, embed=False)

    def _embed(self, image: ImageRGB, face: Face) -> Face:
        with self._infer:
            return self.pipeline.embed(image, face)

    def _one_face(self, image: ImageRGB, target: Box | None, what: str) -> Face:
        faces = self._faces(image)
        if not faces:
            raise NoFaceDetected(f"no face found in {what}")
        if target is not None:
            best = max(faces, key=lambda f: f.detection.box.iou(target))
            if best.detection.box.iou(target) < 0.3:
                raise BadArgument(f"targetFace {target.as_list()} matches no detected face in {what}")
            chosen = best
        elif len(faces) > 1:
            raise BadArgument(f"{what} has {len(faces)} faces; give targetFace to choose one")
        else:
            chosen = faces[0]
        return self._embed(image, chosen)

    def _enrollable(self, image: ImageRGB, target: Box | None) -> tuple[Face, FloatArray]:
        """The one face to enrol (or ``target``), embedded, past the quality gate when required."""
        face = self._one_face(image, target, "the image")
        assert face.embedding is not None
        if self.settings.enroll_requires_quality and not face.quality.ok:
            raise QualityTooLow(f"the face fails the quality gate: {', '.join(face.quality.reasons)}")
        return face, face.embedding

    def _threshold(self, far: float) -> float:
        return self.calibration.threshold_for(far)

    def _storage(self, key: str) -> Storage:
        """Small groups and lists: exact float32 (10,000 templates are 5 MB). Large ones and the
        directory: int8 (1M templates in < 200 MB at ~12 ms a query; docs/matching.md)."""
        if key == DIRECTORY:
            return "int8"
        if key.startswith("list:"):
            return "int8" if self.store.face_lists.get(key[5:]).kind == "large" else "float32"
        return "int8" if self.store.groups.get(key).kind == "large" else "float32"

    @staticmethod
    def _scope(key: str) -> Scope:
        """An index key as the store's scope."""
        if key == DIRECTORY:
            return DirectoryScope()
        if key.startswith("list:"):
            return ListScope(key[5:])
        return GroupScope(key)

    def _index(self, key: str) -> TemplateIndex:
        """The index of a person group, the directory (``DIRECTORY``) or a face list (``list:ID``),
        loaded (decrypted) from the store on first use. Under the service lock."""
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = self._load(key)
        return index

    def _load(self, key: str) -> TemplateIndex:
        """A new index of ``key``'s templates, all read at once (under the service lock)."""
        templates = self.store.faces.templates(self._scope(key))
        index = TemplateIndex(storage=self._storage(key))
        if templates.face_ids:
            index.add_many(templates.face_ids, templates.owner_ids, templates.matrix)
        return index

    def _drop(self, key: str) -> None:
        """Forget a cached index and empty it (a search holding it finds nothing from now on)."""
        index = self._indexes.pop(key, None)
        if index is not None:
            index.clear()

    def _resync(self, key: str, index: TemplateIndex) -> tuple[int, int]:
        """Bring ``index`` in line with the store's faces of ``key``: faces no longer stored are
        removed (first: nothing is decrypted for that), stored faces it lacks are decrypted and
        added. Under the service lock; returns (added, removed). ``PersonGroupNotFound`` /
        ``FaceListNotFound`` when the scope is gone."""
        scope = self._scope(key)
        missing, extra = index.diff_faces(self.store.faces.ids(scope))
        removed = index.remove_faces(extra)
        if missing:
            templates = self.store.faces.templates(scope, face_ids=missing)
            index.add_many(templates.face_ids, templates.owner_ids, templates.matrix)
        return len(missing), removed

    def refresh(self) -> int:
        """Pick up what other processes committed to the directory (``edged persons delete`` or an
        enrolment by the CLI while the daemon runs): SQLite's ``data_version`` of the service's
        connection changes only when another connection commits, so an unchanged directory costs one
        PRAGMA. After a change, every cached index is re-synced with the store (``_resync``: the
        face IDs are compared, nothing is decrypted but new faces); one whose group or list is gone
        is dropped. The daemon calls this every second (``edged.app``). Returns the number of cached
        indexes checked (re-synced or dropped); on an error the next call tries again."""
        with self._lock:
            version = self.store.data_version()
            if version == self._data_version:
                return 0
            failed: Exception | None = None
            synced = 0
            for key, index in list(self._indexes.items()):
                try:
                    if self._storage(key) != index.storage:  # deleted and re-created as the other kind
                        self._indexes[key] = self._load(key)
                        index.clear()
                    else:
                        added, removed = self._resync(key, index)
                        if added or removed:
                            logger.info(
                                "directory changed by another process: %s: %d face(s) added, %d removed",
                                key,
                                added,
                                removed,
                            )
                except (PersonGroupNotFound, FaceListNotFound):
                    logger.info("directory changed by another process: %s was deleted", key)
                    self._drop(key)
                except Exception as exc:  # e.g. a locked database: the next call tries again
                    failed = failed or exc
                    continue
                synced += 1
            if failed is not None:
                raise failed
            self._data_version = version
            return synced

    def trained_index(self, group_id: str) -> TemplateIndex:
        """The matching index of a trained person group (the door daemon's). Raises
        ``PersonGroupNotFound`` / ``PersonGroupNotTrained``."""
        with self._lock:
            group = self.store.groups.get(group_id)
            if group.train_status != "succeeded":
                raise PersonGroupNotTrained(
                    f"person group {group_id!r} is not trained (status {group.train_status}): run train first"
                )
            return self._index(group_id)

    def search_door(
        self,
        group_id: str,
        template: FloatArray,
        k: int,
        max_distance: float | None,
        owners: Collection[str] | None = None,
    ) -> list[Match]:
        """The door worker's per-frame search of a trained group. It does not take the service lock
        (a train of a large group, an identify or a re-sync may hold it for seconds): it reads the
        group's cached index (a dictionary lookup) and searches it under the index's own lock, so it
        never sees half of an enrolment or a deletion, and a retrained group's new index from the
        moment it is swapped in. Only when the group has no cached index does it take the locked
        load path: ``PersonGroupNotFound`` / ``PersonGroupNotTrained`` once the group is gone."""
        index = self._indexes.get(group_id)
        if index is None:
            index = self.trained_index(group_id)
        return index.search(template, k, max_distance, owners=owners)

    def door_sizes(self, group_ids: Collection[str]) -> dict[str, dict[str, int | None]]:
        """Persons (with a face) and faces in each door group's index, for the stats topic; None for a
        group that is gone or untrained. O(1) per group (no SQL, nothing decrypted)."""
        sizes: dict[str, dict[str, int | None]] = {}
        with self._lock:
            for group_id in group_ids:
                index = self._indexes.get(group_id)
                if index is None:
                    sizes[group_id] = {"persons": None, "faces": None}
                else:
                    sizes[group_id] = {"persons": index.owner_count, "faces": len(index)}
        return sizes

    def _allow(self, role: str, actor: str, operation: str) -> None:
        """Only managers and admins change the directory; a recognizer-only client can detect,
        verify, identify, group and find similar, never enrol or delete (refusals are audited)."""
        if role not in CHANGING_ROLES:
            with self._lock:
                self._audit(operation, actor, role, {}, "refused: role")
            raise Forbidden(f"role {role!r} may not {operation.replace('_', ' ')}; it needs manager or admin")

    def _audit(
        self, operation: str, actor: str, role: str, targets: dict[str, str], result: str = "ok"
    ) -> None:
        self.store.audit.append(operation, actor, role, targets, result)

    # -- detection ------------------------------------------------------------------------------

    def detect(
        self, image: ImageRGB, return_face_id: bool = True, ttl_s: int | None = None
    ) -> list[DetectedFace]:
        ttl = self.settings.transient_ttl_s if ttl_s is None else ttl_s
        check_range("faceIdTimeToLive", ttl, 60, self.settings.transient_ttl_s)
        faces = self._faces(image)  # inference outside the service lock: the door keeps searching
        if not return_face_id:
            return [DetectedFace(None, None, face) for face in faces]
        embedded = [self._embed(image, face) for face in faces]
        out = []
        with self._lock:
            for face in embedded:
                assert face.embedding is not None
                added = self.store.transient.add(face.embedding, self.model_id, ttl)
                out.append(DetectedFace(added.face_id, added.expires, face))
        return out

    def _transient(self, face_id: str) -> FloatArray:
        return self.store.transient.get(face_id)

    # -- verification ---------------------------------------------------------------------------

    def verify_faces(self, face_id1: str, face_id2: str, far: float | None = None) -> Verification:
        with self._lock:
            a, b = self._transient(face_id1), self._transient(face_id2)
        return verify(a, b, self.calibration, far)

    def verify_person(
        self, face_id: str, person_id: str, group_id: str | None, far: float | None = None
    ) -> Verification:
        """Face ID against a person (in a group, or in the directory when ``group_id`` is None): the
        closest of the person's faces decides."""
        with self._lock:
            probe = self._transient(face_id)
            self.store.persons.get(group_id, person_id)  # PersonNotFound / PersonGroupNotFound
            templates = self.store.faces.templates(person_scope(group_id), person_ids=[person_id])
        if not templates.face_ids:
            raise BadArgument(f"person {person_id!r} has no faces to verify against")
        best = min(distance(probe, row) for row in templates.matrix)
        far = self.calibration.default_far if far is None else far
        threshold = self.calibration.threshold_for(far)
        return Verification(best <= threshold, self.calibration.confidence(best), best, threshold, far)

    # -- identification -------------------------------------------------------------------------

    def identify(
        self,
        face_ids: Sequence[str],
        *,
        group_id: str | None = None,
        dynamic_group_id: str | None = None,
        person_ids: Sequence[str] | None = None,
        max_candidates: int = 10,
        confidence_threshold: float | None = None,
        far: float | None = None,
    ) -> list[tuple[str, list[Candidate]]]:
        """Candidates per face ID, best first; none below the threshold (never a best guess).
        Scope: a (large) person group, a dynamic person group, or persons of the directory
        (``person_ids``; ``["*"]`` or None means all)."""
        check_range("faceIds count", len(face_ids), 1, 10)
        check_range("maxNumOfCandidatesReturned", max_candidates, 1, 100)
        if confidence_threshold is not None:
            check_range("confidenceThreshold", confidence_threshold, 0, 1)
        threshold = self._threshold(far if far is not None else self.settings.identify_far)
        with self._lock:
            probes = [self._transient(face_id) for face_id in face_ids]
            owners: set[str] | None = None
            if group_id is not None:
                group = self.store.groups.get(group_id)
                if group.train_status != "succeeded":
                    raise PersonGroupNotTrained(
                        f"person group {group_id!r} is not trained (status {group.train_status}): "
                        "run train first"
                    )
                index = self._index(group_id)
            else:
                index = self._index(DIRECTORY)
                if dynamic_group_id is not None:
                    owners = set(self.store.dynamic_groups.members(dynamic_group_id))
                elif person_ids is not None and list(person_ids) != ["*"]:
                    for person_id in person_ids:
                        self.store.persons.get(None, person_id)
                    owners = set(person_ids)
            results = []
            for face_id, probe in zip(face_ids, probes, strict=True):
                matches = index.search(probe, max_candidates, max_distance=threshold, owners=owners)
                candidates = [self._candidate(m) for m in matches]
                if confidence_threshold is not None:
                    candidates = [c for c in candidates if c.confidence >= confidence_threshold]
                results.append((face_id, candidates))
        return results

    def _candidate(self, match: Match) -> Candidate:
        return Candidate(match.owner_id, self.calibration.confidence(match.distance), match.distance)

    def find_similar(
        self,
        face_id: str,
        *,
        face_ids: Sequence[str] | None = None,
        face_list_id: str | None = None,
        max_candidates: int = 20,
        mode: Literal["matchPerson", "matchFace"] = "matchPerson",
    ) -> list[Similar]:
        check_range("maxNumOfCandidatesReturned", max_candidates, 1, 1000)
        if (face_ids is None) == (face_list_id is None):
            raise BadArgument("give exactly one of faceIds and faceListId")
        threshold = self._threshold(self.calibration.default_far) if mode == "matchPerson" else None
        with self._lock:
            probe = self._transient(face_id)
            if face_ids is not None:
                check_range("faceIds count", len(face_ids), 1, 1000)
                index = TemplateIndex()
                index.add_many(
                    list(face_ids), list(face_ids), np.stack([self._transient(f) for f in face_ids])
                )
                persisted = False
            else:
                assert face_list_id is not None
                index = self._index(f"list:{face_list_id}")
                persisted = True
            matches = index.search_faces(probe, max_candidates, max_distance=threshold)
        return [Similar(m.face_id, self.calibration.confidence(m.distance), persisted) for m in matches]

    def group(self, face_ids: Sequence[str]) -> tuple[list[list[str]], list[str]]:
        """Groups of the same person (pairwise distance within the default threshold, transitively),
        largest first, and the messy group of faces similar to none."""
        check_range("faceIds count", len(face_ids), 2, 1000)
        threshold = self._threshold(self.calibration.default_far)
        with self._lock:
            vectors = np.stack([self._transient(f) for f in face_ids])
        parent = list(range(len(face_ids)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        sq = (vectors.astype(np.float64) ** 2).sum(1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * vectors @ vectors.T, 0))
        for i, j in zip(*np.nonzero(np.triu(d <= threshold, 1)), strict=True):
            parent[root(int(i))] = root(int(j))
        clusters: dict[int, list[str]] = {}
        for i, face_id in enumerate(face_ids):
            clusters.setdefault(root(i), []).append(face_id)
        groups = sorted((c for c in clusters.values() if len(c) > 1), key=len, reverse=True)
        messy = [c[0] for c in clusters.values() if len(c) == 1]
        return groups, messy

    # -- person groups --------------------------------------------------------------------------

    def create_group(
        self,
        group_id: str,
        name: str,
        user_data: str | None = None,
        large: bool = False,
        actor: str = "cli",
        role: str = "manager",
    ) -> PersonGroup:
        self._allow(role, actor, "create_person_group")
        check_id("personGroupId", group_id)
        check_text("name", name, MAX_NAME)
        check_text("userData", user_data, MAX_USER_DATA)
        with self._lock:
            group = self.store.groups.create(
                group_id, name, user_data, "large" if large else "group", self.model_id
            )
            self._audit("create_person_group", actor, role, {"personGroupId": group_id})
        return group

    def delete_group(self, group_id: str, actor: str = "cli", role: str = "manager") -> Receipt:
        self._allow(role, actor, "delete_person_group")
        with self._lock:
            receipt = self.store.groups.delete(group_id)
            self._drop(group_id)
            self._audit(
                "delete_person_group",
                actor,
                role,
                {"personGroupId": group_id},
                f"ok; receipt {receipt.signature[:32]}",
            )
        return receipt

    def train(self, group_id: str, actor: str = "cli", role: str = "manager") -> PersonGroup:
        """(Re)build the group's index from the store: the explicit train step of the reference
        service. Afterwards adds and deletes keep the index consistent without retraining.

        The new index is built while the old one keeps serving (the door searches it meanwhile):
        the templates are read and decrypted ``TRAIN_PAGE_PERSONS`` persons at a time, each page
        under the service lock (the SQLite connection is shared), the index is built outside it;
        then, under the lock, it is re-synced with the store (whatever was enrolled or deleted while
        it was built), the status committed, and the index swapped in. A process stopped in the
        middle leaves ``running``: the daemon recovers it at start (``recover_interrupted_training``)."""
        self._allow(role, actor, "train")
        with self._lock:
            storage = self._storage(group_id)  # PersonGroupNotFound
            self.store.groups.set_training(group_id, "running")
        try:
            index = self._build(group_id, storage)
            with self._lock:  # one hold: no enrolment can reach only the old index
                self._resync(group_id, index)
                self.store.groups.set_training(group_id, "succeeded")
                self._indexes[group_id] = index  # the swap: the door's next search uses it
        except Exception as exc:
            with self._lock:
                try:
                    self.store.groups.set_training(group_id, "failed", str(exc)[:200])
                except PersonGroupNotFound:
                    pass  # deleted while it was being trained
                except Exception:  # keep the training's own error
                    logger.exception("person group %r: could not record the failed training", group_id)
            raise
        with self._lock:
            self._audit("train", actor, role, {"personGroupId": group_id})
            return self.store.groups.get(group_id)

    def _build(self, group_id: str, storage: Storage) -> TemplateIndex:
        """A new index of the group's templates, read page by page (the service lock is held for one
        page at a time, not for the whole read), built with one ``add_many`` (which fits its frame)."""
        pages: list[Templates] = []
        after: str | None = None
        while True:
            with self._lock:
                page = self.store.faces.train_page(GroupScope(group_id), after, TRAIN_PAGE_PERSONS)
            if page.last is None:
                break
            after = page.last
            if page.templates.face_ids:
                pages.append(page.templates)
        index = TemplateIndex(storage=storage)
        if pages:
            index.add_many(
                [f for p in pages for f in p.face_ids],
                [o for p in pages for o in p.owner_ids],
                np.concatenate([p.matrix for p in pages]),
            )
        return index

    def recover_interrupted_training(self) -> list[PersonGroup]:
        """At the daemon's start: a group left ``running`` by a process stopped mid-train goes back to
        ``succeeded`` when it had been trained before (a door on it starts: its index is built from
        the store at every start anyway), else to ``failed`` (``interrupted``). Logged and audited."""
        with self._lock:
            groups = self.store.groups.recover_interrupted_training()
            for group in groups:
                logger.warning(
                    "person group %r: a training was interrupted (the process stopped); status now %s",
                    group.group_id,
                    group.train_status,
                )
                self._audit(
                    "train",
                    "edged",
                    "system",
                    {"personGroupId": group.group_id},
                    f"interrupted; recovered to {group.train_status}",
                )
        return groups

    # -- persons and their faces ----------------------------------------------------------------

    def create_person(
        self,
        group_id: str | None,
        name: str,
        user_data: str | None = None,
        actor: str = "cli",
        role: str = "manager",
    ) -> str:
        self._allow(role, actor, "create_person")
        check_text("name", name, MAX_NAME)
        check_text("userData", user_data, MAX_USER_DATA)
        with self._lock:
            if group_id is not None:
                kind = self.store.groups.get(group_id).kind
                if self.store.persons.count(group_id) >= MAX_PERSONS[kind]:
                    raise QuotaExceeded(
                        f"person group {group_id!r} already holds {MAX_PERSONS[kind]:,} persons"
                    )
            person_id = self.store.persons.create(group_id, name, user_data)
            self._audit(
                "create_person", actor, role, {"personId": person_id, "personGroupId": group_id or DIRECTORY}
            )
        return person_id

    def add_person_face(
        self,
        group_id: str | None,
        person_id: str,
        image: ImageRGB,
        *,
        target: Box | None = None,
        user_data: str | None = None,
        actor: str = "cli",
        role: str = "manager",
    ) -> Enrolment:
        """Detect, gate, check for a duplicate identity, then store the template (encrypted)."""
        self._allow(role, actor, "add_person_face")
        check_text("userData", user_data, MAX_USER_DATA)
        face, template = self._enrollable(image, target)
        warnings: list[str] = []
        with self._lock:
            self.store.persons.get(group_id, person_id)
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
                        self._audit(
                            "add_person_face", actor, role, {"personId": person_id}, "refused: duplicate"
                        )
                        raise DuplicateIdentity(message)
                    warnings.append(message)
            quality = {"reasons": list(face.quality.reasons), **face.quality.measures}
            face_id = self.store.persons.add_face(
                group_id, person_id, template, self.model_id, user_data, quality
            )
            key = group_id if group_id is not None else DIRECTORY
            if key in self._indexes:
                self._indexes[key].add(face_id, person_id, template)
            if group_id is not None:
                self.store.groups.touch(group_id)
            self._audit("add_person_face", actor, role, {"personId": person_id, "persistedFaceId": face_id})
        return Enrolment(face_id, person_id, face.quality.reasons, tuple(warnings))

    def _duplicate(self, group_id: str | None, person_id: str, template: FloatArray) -> Match | None:
        index = self._index(group_id if group_id is not None else DIRECTORY)
        threshold = self._threshold(self.settings.duplicate_far)
        for match in index.search(template, 2, max_distance=threshold):
            if match.owner_id != person_id:
                return match
        return None

    def delete_person(
        self, group_id: str | None, person_id: str, actor: str = "cli", role: str = "manager"
    ) -> Receipt:
        self._allow(role, actor, "delete_person")
        with self._lock:
            receipt = self.store.persons.delete(group_id, person_id)
            key = group_id if group_id is not None else DIRECTORY
            if key in self._indexes:
                self._indexes[key].remove_owner(person_id)
            self._audit(
                "delete_person",
                actor,
                role,
                {"personId": person_id, "personGroupId": group_id or DIRECTORY},
                f"ok; receipt {receipt.signature[:32]}",
            )
        return receipt

    def delete_person_face(
        self, group_id: str | None, person_id: str, face_id: str, actor: str = "cli", role: str = "manager"
    ) -> Receipt:
        self._allow(role, actor, "delete_person_face")
        with self._lock:
            self.store.persons.get(group_id, person_id)
            receipt = self.store.persons.faces.delete(face_id, person_id)
            key = group_id if group_id is not None else DIRECTORY
            if key in self._indexes:
                self._indexes[key].remove_face(face_id)
            self._audit(
                "delete_person_face", actor, role, {"personId": person_id, "persistedFaceId": face_id}
            )
        return receipt

    # -- face lists -----------------------------------------------------------------------------

    def create_face_list(
        self,
        list_id: str,
        name: str,
        user_data: str | None = None,
        large: bool = False,
        actor: str = "cli",
        role: str = "manager",
    ) -> None:
        self._allow(role, actor, "create_face_list")
        check_id("faceListId", list_id)
        check_text("name", name, MAX_NAME)
        check_text("userData", user_data, MAX_USER_DATA)
        with self._lock:
            self.store.face_lists.create(
                list_id, name, user_data, "large" if large else "list", self.model_id
            )
            self._audit("create_face_list", actor, role, {"faceListId": list_id})

    def add_list_face(
        self,
        list_id: str,
        image: ImageRGB,
        *,
        target: Box | None = None,
        user_data: str | None = None,
        actor: str = "cli",
        role: str = "manager",
    ) -> str:
        self._allow(role, actor, "add_face_list_face")
        check_text("userData", user_data, MAX_USER_DATA)
        face, template = self._enrollable(image, target)
        with self._lock:
            kind = self.store.face_lists.get(list_id).kind
            if self.store.face_lists.faces.count(list_id) >= MAX_LIST_FACES[kind]:
                raise QuotaExceeded(f"face list {list_id!r} already holds {MAX_LIST_FACES[kind]:,} faces")
            quality = {"reasons": list(face.quality.reasons), **face.quality.measures}
            face_id = self.store.face_lists.add_face(list_id, template, self.model_id, user_data, quality)
            key = f"list:{list_id}"
            if key in self._indexes:
                self._indexes[key].add(face_id, face_id, template)
            self._audit(
                "add_face_list_face", actor, role, {"faceListId": list_id, "persistedFaceId": face_id}
            )
        return face_id

    def delete_face_list(self, list_id: str, actor: str = "cli", role: str = "manager") -> Receipt:
        self._allow(role, actor, "delete_face_list")
        with self._lock:
            receipt = self.store.face_lists.delete(list_id)
            self._drop(f"list:{list_id}")
            self._audit("delete_face_list", actor, role, {"faceListId": list_id})
        return receipt

    def delete_list_face(
        self, list_id: str, face_id: str, actor: str = "cli", role: str = "manager"
    ) -> Receipt:
        self._allow(role, actor, "delete_face_list_face")
        with self._lock:
            receipt = self.store.face_lists.faces.delete(face_id, list_id)
            key = f"list:{list_id}"
            if key in self._indexes:
                self._indexes[key].remove_face(face_id)
            self._audit(
                "delete_face_list_face", actor, role, {"faceListId": list_id, "persistedFaceId": face_id}
            )
        return receipt

    # -- reads (the MQTT API's get/list operations) ---------------------------------------------

    def get_group(self, group_id: str) -> PersonGroup:
        with self._lock:
            return self.store.groups.get(group_id)

    def list_groups(self, start: str | None = None, top: int = 1000) -> list[PersonGroup]:
        with self._lock:
            return self.store.groups.page(start, top)

    def update_group(
        self,
        group_id: str,
        name: str | None,
        user_data: str | None,
        actor: str = "cli",
        role: str = "manager",
    ) -> PersonGroup:
        self._allow(role, actor, "update_person_group")
        check_text("name", name, MAX_NAME)
        check_text("userData", user_data, MAX_USER_DATA)
        with self._lock:
            group = self.store.groups.update(group_id, name, user_data)
            self._audit("update_person_group", actor, role, {"personGroupId": group_id})
        return group

    def get_person(self, group_id: str | None, person_id: str) -> Person:
        with self._lock:
            return self.store.persons.get(group_id, person_id)

    def list_persons(self, group_id: str | None, start: str | None = None, top: int = 1000) -> list[Person]:
        with self._lock:
            return self.store.persons.page(group_id, start, top)

    def get_face_list(self, list_id: str) -> tuple[FaceList, list[str]]:
        with self._lock:
            return self.store.face_lists.get(list_id), self.store.face_lists.face_ids(list_id)

    def list_face_lists(self) -> list[FaceList]:
        with self._lock:
            return self.store.face_lists.all()

    def verify_audit(self, actor: str = "cli", role: str = "admin") -> ChainCheck:
        """The audit chain's state (admin only): intact, how many records, and why not."""
        if role != "admin":
            self.record("verify_audit", actor, role, {}, "refused: role")
            raise Forbidden(f"role {role!r} may not read the audit chain; it needs admin")
        with self._lock:
            return self.store.audit.verify()

    def audit_after(self, seq: int | None, limit: int) -> tuple[int, list[AuditRecord]]:
        """Audit records after ``seq`` (None: start at the newest, forwarding nothing older) and the
        position after them."""
        with self._lock:
            if seq is None:
                return self.store.audit.last_seq(), []
            records = self.store.audit.after(seq, limit)
        return (records[-1].seq if records else seq), records

    def record(self, operation: str, actor: str, role: str, targets: dict[str, str], result: str) -> None:
        """An audit record for something decided outside the service (a refused request)."""
        with self._lock:
            self._audit(operation, actor, role, targets, result)

    # -- retention ------------------------------------------------------------------------------

    def reap(self) -> int:
        """Delete expired transient faces (called at start-up and on a schedule)."""
        with self._lock:
            count = self.store.transient.reap()
        if count:
            logger.info("retention: deleted %d expired face IDs", count)
        return count

    # -- cards (verify-mode claims) -------------------------------------------------------------

    def set_card(
        self,
        card_id: str,
        person_id: str,
        group_id: str | None = None,
        actor: str = "cli",
        role: str = "manager",
    ) -> str:
        """Map a card number to a person of ``group_id`` (None: the person directory), replacing the
        card's previous person. Only its keyed hash is stored; returns the card's reference (a prefix
        of that hash, also in the audit record)."""
        self._allow(role, actor, "set_card")
        with self._lock:
            ref = self.store.cards.set(card_id, group_id, person_id)
            self._audit(
                "set_card",
                actor,
                role,
                {"personId": person_id, "personGroupId": group_id or DIRECTORY, "card": ref},
            )
        return ref

    def delete_card(self, card_id: str, actor: str = "cli", role: str = "manager") -> str:
        """Remove a card (``CardNotFound`` when no person has it); returns its reference."""
        self._allow(role, actor, "delete_card")
        with self._lock:
            ref = self.store.cards.delete(card_id)
            self._audit("delete_card", actor, role, {"card": ref})
        return ref

    def person_for_card(self, card_id: str) -> str | None:
        """The person a card is mapped to, or None (also for a malformed card number)."""
        try:
            normalize_card(card_id)
        except BadArgument:
            return None
        with self._lock:
            return self.store.cards.person_for(card_id)

    def has_person(self, group_id: str | None, person_id: str) -> bool:
        """Whether the person is in ``group_id`` (None: the person directory)."""
        with self._lock:
            return self.store.persons.has(group_id, person_id)
