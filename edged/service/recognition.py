"""The recognition operations: detect (with face IDs), verify, identify, find similar, group. They
change nothing in the directory (face IDs are transient): every role may run them
(``edged.service.policy``). Detect takes the caller all the same: the face IDs it stores count
against that client's quota (``edged.service.quota``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edged.directory.scope import DirectoryScope, ListScope, person_scope
from edged.errors import BadArgument
from edged.inference.manifest import Calibration
from edged.matcher import Match, TemplateIndex
from edged.pipeline.embed import distance
from edged.pipeline.verify import Verification, verify
from edged.service.access import DirectoryAccess, Operations
from edged.service.finder import FaceFinder
from edged.service.limits import check_range
from edged.service.policy import Caller
from edged.service.quota import FaceIdQuota
from edged.service.settings import DirectorySettings
from edged.types import Face, FloatArray, ImageRGB


@dataclass(frozen=True, slots=True)
class DetectedFace:
    """A face found by detect, with its face ID and expiry (None when none was asked for)."""

    face_id: str | None
    expires: float | None
    face: Face


@dataclass(frozen=True, slots=True)
class Candidate:
    """A person identify found for a face: the closest of its faces decides."""

    person_id: str
    confidence: float
    distance: float


@dataclass(frozen=True, slots=True)
class Similar:
    """A face find-similar found."""

    face_id: str
    confidence: float
    persisted: bool
    """A persisted face of a face list (else a face ID)."""


class Recognition(Operations):
    def __init__(
        self,
        access: DirectoryAccess,
        finder: FaceFinder,
        settings: DirectorySettings,
        calibration: Calibration,
        model_id: str,
        quota: FaceIdQuota,
    ) -> None:
        super().__init__(access, finder, settings, calibration, model_id)
        self.quota = quota

    def _threshold(self, far: float) -> float:
        return self.calibration.threshold_for(far)

    def _transient(self, face_id: str) -> FloatArray:
        return self.store.transient.get(face_id, self.model_id)

    def detect(
        self, caller: Caller, image: ImageRGB, return_face_id: bool = True, ttl_s: int | None = None
    ) -> list[DetectedFace]:
        """The faces in ``image``, each with a new face ID owned by ``caller`` (unless
        ``return_face_id`` is false: then nothing is stored). ``QuotaExceeded`` when the caller, or
        the device, holds too many live face IDs, or the disk is under its floor: checked before
        inference (a client at its limit costs no inference) and again for the faces found."""
        ttl = self.settings.transient_ttl_s if ttl_s is None else ttl_s
        check_range("faceIdTimeToLive", ttl, 60, self.settings.transient_ttl_s)
        if return_face_id:
            with self.access.lock:
                self.quota.check(caller.actor, 1)
        faces = self.finder.faces(image)  # inference outside the service lock: the door keeps searching
        if not return_face_id:
            return [DetectedFace(None, None, face) for face in faces]
        embedded = [self.finder.embed(image, face) for face in faces]
        out = []
        with self.access.lock:
            if embedded:
                self.quota.check(caller.actor, len(embedded))
            for face in embedded:
                assert face.embedding is not None
                added = self.store.transient.add(face.embedding, self.model_id, ttl, client=caller.actor)
                out.append(DetectedFace(added.face_id, added.expires, face))
        return out

    # -- verification -------------------------------------------------------------------------------

    def verify_faces(self, face_id1: str, face_id2: str, far: float | None = None) -> Verification:
        with self.access.lock:
            a, b = self._transient(face_id1), self._transient(face_id2)
        return verify(a, b, self.calibration, far)

    def verify_person(
        self, face_id: str, person_id: str, group_id: str | None, far: float | None = None
    ) -> Verification:
        """Face ID against a person (in a group, or in the directory when ``group_id`` is None): the
        closest of the person's faces decides."""
        with self.access.lock:
            probe = self._transient(face_id)
            self.store.persons.get(group_id, person_id)  # PersonNotFound / PersonGroupNotFound
            self.indexes.check_scope(person_scope(group_id))
            templates = self.store.faces.templates(
                person_scope(group_id), person_ids=[person_id], model_id=self.model_id
            )
        if not templates.face_ids:
            raise BadArgument(
                f"person {person_id!r} has no faces of recognition model {self.model_id} to verify against"
            )
        best = min(distance(probe, row) for row in templates.matrix)
        far = self.calibration.default_far if far is None else far
        threshold = self.calibration.threshold_for(far)
        return Verification(best <= threshold, self.calibration.confidence(best), best, threshold, far)

    # -- identification -----------------------------------------------------------------------------

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
        with self.access.lock:
            probes = [self._transient(face_id) for face_id in face_ids]
            owners: set[str] | None = None
            if group_id is not None:
                index = self.access.indexes.trained(group_id)
            else:
                index = self.access.indexes.get(DirectoryScope())
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
        with self.access.lock:
            probe = self._transient(face_id)
            if face_ids is not None:
                check_range("faceIds count", len(face_ids), 1, 1000)
                index = TemplateIndex(dim=int(probe.size))
                index.add_many(
                    list(face_ids), list(face_ids), np.stack([self._transient(f) for f in face_ids])
                )
                persisted = False
            else:
                assert face_list_id is not None
                index = self.access.indexes.get(ListScope(face_list_id))
                persisted = True
            matches = index.search_faces(probe, max_candidates, max_distance=threshold)
        return [Similar(m.face_id, self.calibration.confidence(m.distance), persisted) for m in matches]

    def group(self, face_ids: Sequence[str]) -> tuple[list[list[str]], list[str]]:
        """Groups of the same person (pairwise distance within the default threshold, transitively),
        largest first, and the messy group of faces similar to none."""
        check_range("faceIds count", len(face_ids), 2, 1000)
        threshold = self._threshold(self.calibration.default_far)
        with self.access.lock:
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
