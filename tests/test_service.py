"""The face operations over the real pipeline, a real encrypted SQLite directory and a manual clock.

Identities that are always available: the astronaut (scikit-image, public domain) and the
cameraman (scikit-image's ``camera()``, a different man, distance ≈ 0.8 from the astronaut).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from skimage import data

from edged.clock import ManualClock
from edged.directory.audit import AuditLog, ChainCheck
from edged.directory.crypto import create_key_file, read_kek, verify_signature
from edged.directory.faces import Faces
from edged.directory.scope import DirectoryScope, GroupScope, ListScope, Scope
from edged.directory.sealed import Templates
from edged.directory.store import Store
from edged.errors import (
    BadArgument,
    DuplicateIdentity,
    FaceListNotFound,
    FaceNotFound,
    Forbidden,
    NoFaceDetected,
    PersonGroupExists,
    PersonGroupNotFound,
    PersonGroupNotTrained,
    PersonNotFound,
    QualityTooLow,
    QuotaExceeded,
)
from edged.pipeline.pipeline import FacePipeline
from edged.service import changes as changes_module
from edged.service import limits
from edged.service.faces import AUDIT_PRUNE_BATCH, FaceService
from edged.service.policy import Caller
from edged.service.settings import DirectorySettings
from edged.types import Box, ImageRGB

MANAGER = Caller("cli", "manager")


def shifted(image: ImageRGB, dx: int, dy: int) -> ImageRGB:
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    size = (image.shape[1], image.shape[0])
    return np.ascontiguousarray(cv2.warpAffine(image, matrix, size, borderMode=cv2.BORDER_REPLICATE))


@pytest.fixture(scope="module")
def cameraman() -> ImageRGB:
    return np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(tmp_path: Path, pipeline: FacePipeline, clock: ManualClock) -> Iterator[FaceService]:
    kek = create_key_file(tmp_path / "kek")
    store = Store.open(tmp_path / "state", kek, clock)
    yield FaceService(pipeline, store, DirectorySettings(), "dlib_resnet_v1_int8.tflite")
    store.close()


def face_id_of(service: FaceService, image: ImageRGB) -> str:
    detected = service.recognition.detect(MANAGER, image)
    assert len(detected) == 1
    assert detected[0].face_id is not None
    return detected[0].face_id


def enrolled_group(service: FaceService, astronaut: ImageRGB) -> str:
    service.changes.create_group(MANAGER, "staff", "Staff")
    person = service.changes.create_person(MANAGER, "staff", "Eileen")
    service.changes.add_person_face(MANAGER, "staff", person, astronaut)
    return person


# -- detect, verify, expiry -------------------------------------------------------------------------


def test_detect_gives_face_ids_that_expire(
    service: FaceService, astronaut: ImageRGB, clock: ManualClock
) -> None:
    detected = service.recognition.detect(MANAGER, astronaut, ttl_s=120)
    assert len(detected) == 1
    face_id = detected[0].face_id
    assert face_id is not None
    assert detected[0].expires == pytest.approx(clock.now() + 120)
    other = face_id_of(service, shifted(astronaut, 20, 10))
    assert service.recognition.verify_faces(face_id, other).is_identical
    clock.advance(121)
    with pytest.raises(FaceNotFound, match="expired"):
        service.recognition.verify_faces(face_id, other)
    assert service.store.transient.count() == 1  # the expired one was reaped on use; `other` lives 24 h
    clock.advance(86_400)
    assert service.reap() == 1
    assert service.store.transient.count() == 0


def test_detect_without_face_ids_stores_nothing(service: FaceService, astronaut: ImageRGB) -> None:
    detected = service.recognition.detect(MANAGER, astronaut, return_face_id=False)
    assert detected[0].face_id is None
    assert service.store.transient.count() == 0


@pytest.mark.parametrize("ttl", [59, 86_401])
def test_face_id_lifetime_is_bounded(service: FaceService, astronaut: ImageRGB, ttl: int) -> None:
    with pytest.raises(BadArgument, match="faceIdTimeToLive"):
        service.recognition.detect(MANAGER, astronaut, ttl_s=ttl)


def test_verify_different_people(service: FaceService, astronaut: ImageRGB, cameraman: ImageRGB) -> None:
    result = service.recognition.verify_faces(face_id_of(service, astronaut), face_id_of(service, cameraman))
    assert not result.is_identical
    assert result.confidence < 0.5
    assert result.distance > result.threshold


def test_verify_face_against_person(service: FaceService, astronaut: ImageRGB, cameraman: ImageRGB) -> None:
    person = enrolled_group(service, astronaut)
    assert service.recognition.verify_person(
        face_id_of(service, shifted(astronaut, -15, 5)), person, "staff"
    ).is_identical
    assert not service.recognition.verify_person(face_id_of(service, cameraman), person, "staff").is_identical
    with pytest.raises(PersonNotFound):
        service.recognition.verify_person(
            face_id_of(service, astronaut), "00000000-0000-0000-0000-000000000000", "staff"
        )


# -- identify ---------------------------------------------------------------------------------------


def test_identify_needs_training(service: FaceService, astronaut: ImageRGB) -> None:
    enrolled_group(service, astronaut)
    probe = face_id_of(service, astronaut)
    with pytest.raises(PersonGroupNotTrained, match="staff"):
        service.recognition.identify([probe], group_id="staff")
    with pytest.raises(PersonGroupNotFound):
        service.recognition.identify([probe], group_id="nobody")


def test_identify_finds_the_person_and_never_guesses(
    service: FaceService, astronaut: ImageRGB, cameraman: ImageRGB
) -> None:
    person = enrolled_group(service, astronaut)
    assert service.changes.train(MANAGER, "staff").train_status == "succeeded"
    known, stranger = face_id_of(service, shifted(astronaut, 25, -10)), face_id_of(service, cameraman)
    results = dict(service.recognition.identify([known, stranger], group_id="staff"))
    assert [c.person_id for c in results[known]] == [person]
    assert results[known][0].confidence > 0.5
    assert results[stranger] == [], "a stranger gets no candidate, never a best guess"


def test_a_deleted_person_is_never_returned(service: FaceService, astronaut: ImageRGB) -> None:
    person = enrolled_group(service, astronaut)
    service.changes.train(MANAGER, "staff")
    probe = face_id_of(service, astronaut)
    assert service.recognition.identify([probe], group_id="staff")[0][1]
    receipt = service.changes.delete_person(MANAGER, "staff", person)
    assert verify_signature(receipt.device_public_key, receipt.payload(), receipt.signature)
    assert receipt.deleted == {"persons": 1, "faces": 1}
    assert service.recognition.identify([probe], group_id="staff")[0][1] == []
    with pytest.raises(PersonNotFound):
        service.store.persons.get("staff", person)


def test_refresh_picks_up_what_another_connection_committed(
    service: FaceService, astronaut: ImageRGB, tmp_path: Path
) -> None:
    """The CLI beside the daemon: its deletions and enrolments reach the cached indexes on the next
    ``refresh`` (the daemon calls it every second); its own changes and reads cost nothing."""
    person = enrolled_group(service, astronaut)
    service.changes.train(MANAGER, "staff")
    probe = face_id_of(service, astronaut)
    template = service.store.transient.get(probe)
    service.changes.create_face_list(MANAGER, "visitors", "Visitors")
    listed = service.changes.add_list_face(MANAGER, "visitors", astronaut)
    assert service.recognition.find_similar(probe, face_list_id="visitors")  # the list's index is cached too
    assert service.refresh() == 0, "the service's own commits are not changes from elsewhere"
    assert [m.owner_id for m in service.search_door("staff", template, 3, None)] == [person]

    other = Store.open(tmp_path / "state", read_kek(tmp_path / "kek"))
    try:
        assert service.refresh() == 0, "another connection that only reads changes nothing"
        other.persons.delete("staff", person)
        newcomer = other.persons.create("staff", "Eileen, again", None)
        added = other.persons.add_face("staff", newcomer, template, service.model_id, None, {})
        other.face_lists.faces.delete(listed, "visitors")
        assert service.refresh() == 2
        assert [m.owner_id for m in service.search_door("staff", template, 3, None)] == [newcomer]
        assert service.trained_index("staff").diff_faces([added]) == ([], [])
        assert service.recognition.find_similar(probe, face_list_id="visitors", mode="matchFace") == []
        assert service.refresh() == 0
        other.groups.delete("staff")
        assert service.refresh() == 2  # the group's index dropped, the list's checked
        with pytest.raises(PersonGroupNotFound):
            service.search_door("staff", template, 3, None)
    finally:
        other.close()


def test_faces_added_after_training_are_matched(service: FaceService, astronaut: ImageRGB) -> None:
    service.changes.create_group(MANAGER, "late", "Late")
    service.changes.train(MANAGER, "late")
    person = service.changes.create_person(MANAGER, "late", "Eileen")
    service.changes.add_person_face(MANAGER, "late", person, astronaut)
    assert (
        service.recognition.identify([face_id_of(service, astronaut)], group_id="late")[0][1][0].person_id
        == person
    )


def test_identify_in_the_directory_and_dynamic_groups(service: FaceService, astronaut: ImageRGB) -> None:
    person = service.changes.create_person(MANAGER, None, "Eileen")
    service.changes.add_person_face(MANAGER, None, person, astronaut)
    other = service.changes.create_person(MANAGER, None, "Nobody yet")
    probe = face_id_of(service, astronaut)
    assert service.recognition.identify([probe])[0][1][0].person_id == person
    assert service.recognition.identify([probe], person_ids=["*"])[0][1][0].person_id == person
    assert service.recognition.identify([probe], person_ids=[other])[0][1] == []
    service.store.dynamic_groups.create("night-shift", "Night shift", None, [other])
    assert service.recognition.identify([probe], dynamic_group_id="night-shift")[0][1] == []
    service.store.dynamic_groups.update_members("night-shift", add=[person])
    assert service.recognition.identify([probe], dynamic_group_id="night-shift")[0][1][0].person_id == person


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_candidates": 0}, "maxNumOfCandidatesReturned"),
        ({"max_candidates": 101}, "maxNumOfCandidatesReturned"),
        ({"confidence_threshold": 1.5}, "confidenceThreshold"),
    ],
)
def test_identify_arguments_are_checked(
    service: FaceService, astronaut: ImageRGB, kwargs: dict[str, float], message: str
) -> None:
    enrolled_group(service, astronaut)
    service.changes.train(MANAGER, "staff")
    with pytest.raises(BadArgument, match=message):
        service.recognition.identify([face_id_of(service, astronaut)], group_id="staff", **kwargs)  # type: ignore[arg-type]


def test_identify_takes_one_to_ten_faces(service: FaceService, astronaut: ImageRGB) -> None:
    enrolled_group(service, astronaut)
    service.changes.train(MANAGER, "staff")
    with pytest.raises(BadArgument, match="faceIds count"):
        service.recognition.identify([], group_id="staff")
    probe = face_id_of(service, astronaut)
    with pytest.raises(BadArgument, match="faceIds count"):
        service.recognition.identify([probe] * 11, group_id="staff")


# -- enrolment rules --------------------------------------------------------------------------------


def test_duplicate_identity_is_refused_and_names_the_person(
    service: FaceService, astronaut: ImageRGB
) -> None:
    first = enrolled_group(service, astronaut)
    second = service.changes.create_person(MANAGER, "staff", "Impostor")
    with pytest.raises(DuplicateIdentity, match=first):
        service.changes.add_person_face(MANAGER, "staff", second, shifted(astronaut, 10, 10))
    assert service.store.persons.get("staff", second).face_ids == ()


class WatchedFaces(Faces):
    """The store's real template reader, noting for each whole scope it decrypts (an index loaded)
    whether a SQLite write transaction was open meanwhile."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.db, store.keys, store.groups, store.face_lists)
        self.loads: list[tuple[Scope, bool]] = []

    def templates(
        self,
        scope: Scope,
        *,
        person_ids: Sequence[str] | None = None,
        face_ids: Sequence[str] | None = None,
        model_id: str | None = None,
    ) -> Templates:
        if person_ids is None and face_ids is None:
            self.loads.append((scope, self.db.in_transaction))
        return super().templates(scope, person_ids=person_ids, face_ids=face_ids, model_id=model_id)


def test_the_duplicate_check_loads_its_index_before_the_write_transaction(
    service: FaceService, pipeline: FacePipeline, astronaut: ImageRGB
) -> None:
    """A fresh process (the CLI) has no index cached: the duplicate check decrypts the whole scope,
    which must not happen while it holds SQLite's write lock (the daemon's writes would wait for it,
    and fail after the busy timeout)."""
    first = enrolled_group(service, astronaut)
    store = service.store
    store.faces = watched = WatchedFaces(store)
    fresh = FaceService(pipeline, store, DirectorySettings(), pipeline.embedder.model_id)  # nothing cached
    second = fresh.changes.create_person(MANAGER, "staff", "Impostor")
    with pytest.raises(DuplicateIdentity, match=first):
        fresh.changes.add_person_face(MANAGER, "staff", second, shifted(astronaut, 10, 10))
    enrolling = FaceService(
        pipeline, store, DirectorySettings(), pipeline.embedder.model_id
    )  # the CLI's enroll
    twin = enrolling.changes.embed(MANAGER, shifted(astronaut, -10, 5))
    (refused,) = enrolling.changes.enrol_person(MANAGER, "staff", None, "Twin", [twin]).faces
    assert isinstance(refused, DuplicateIdentity) and first in refused.message
    assert watched.loads == [(GroupScope("staff"), False)] * 2, "an index was loaded in a transaction"
    assert store.persons.get("staff", second).face_ids == ()


def test_the_duplicate_check_sees_what_another_process_committed(
    service: FaceService, pipeline: FacePipeline, astronaut: ImageRGB, tmp_path: Path, clock: ManualClock
) -> None:
    """The index loaded (or cached) before the transaction is brought up to date inside it: a face
    another process (the CLI beside the daemon) committed meanwhile is a duplicate too."""
    service.changes.create_group(MANAGER, "staff", "Staff")
    impostor = service.changes.create_person(MANAGER, "staff", "Impostor")
    assert len(service.access.indexes.get(GroupScope("staff"))) == 0  # cached, empty
    cli = Store.open(tmp_path / "state", read_kek(tmp_path / "kek"), clock)
    try:
        first = enrolled_person(
            FaceService(pipeline, cli, DirectorySettings(), pipeline.embedder.model_id), astronaut
        )
    finally:
        cli.close()
    with pytest.raises(DuplicateIdentity, match=first):
        service.changes.add_person_face(MANAGER, "staff", impostor, shifted(astronaut, 10, 10))


def enrolled_person(service: FaceService, image: ImageRGB) -> str:
    person = service.changes.create_person(MANAGER, "staff", "Eileen")
    service.changes.add_person_face(MANAGER, "staff", person, image)
    return person


def test_duplicate_identity_can_warn_instead(
    tmp_path: Path, pipeline: FacePipeline, astronaut: ImageRGB, clock: ManualClock
) -> None:
    store = Store.open(tmp_path / "warn", create_key_file(tmp_path / "k"), clock)
    service = FaceService(
        pipeline, store, DirectorySettings(duplicate_policy="warn"), pipeline.embedder.model_id
    )
    first = enrolled_group(service, astronaut)
    second = service.changes.create_person(MANAGER, "staff", "Twin")
    enrolment = service.changes.add_person_face(MANAGER, "staff", second, astronaut)
    assert any(first in warning for warning in enrolment.warnings)


def test_the_quality_gate_guards_enrolment(service: FaceService, cameraman: ImageRGB) -> None:
    service.changes.create_group(MANAGER, "staff", "Staff")
    person = service.changes.create_person(MANAGER, "staff", "Cameraman")
    with pytest.raises(QualityTooLow, match="extreme_pose"):
        service.changes.add_person_face(MANAGER, "staff", person, cameraman)


def test_enrolment_needs_exactly_one_face_or_a_target(service: FaceService, astronaut: ImageRGB) -> None:
    service.changes.create_group(MANAGER, "staff", "Staff")
    person = service.changes.create_person(MANAGER, "staff", "Eileen")
    head = astronaut[0:300, 75:375]  # the face is (103, 81)-(197, 175) in this crop
    two = np.ascontiguousarray(np.concatenate([head, head], axis=1))
    with pytest.raises(BadArgument, match="2 faces"):
        service.changes.add_person_face(MANAGER, "staff", person, two)
    right = Box(300 + 103, 81, 300 + 197, 175)
    assert service.changes.add_person_face(MANAGER, "staff", person, two, target=right).face_id
    with pytest.raises(BadArgument, match="targetFace"):
        service.changes.add_person_face(MANAGER, "staff", person, two, target=Box(0, 400, 40, 440))
    with pytest.raises(NoFaceDetected):
        service.changes.add_person_face(MANAGER, "staff", person, np.full((200, 200, 3), 128, np.uint8))


@pytest.mark.parametrize(
    ("name", "user_data", "message"),
    [("x" * 129, None, "name"), ("ok", "x" * (16 * 1024 + 1), "userData")],
)
def test_text_limits(service: FaceService, name: str, user_data: str | None, message: str) -> None:
    service.changes.create_group(MANAGER, "staff", "Staff")
    with pytest.raises(BadArgument, match=message):
        service.changes.create_person(MANAGER, "staff", name, user_data)


@pytest.mark.parametrize("group_id", ["Staff", "a b", "x" * 65, ""])
def test_group_ids_are_checked(service: FaceService, group_id: str) -> None:
    with pytest.raises(BadArgument, match="personGroupId"):
        service.changes.create_group(MANAGER, group_id, "name")


def test_group_exists_and_person_quota(
    service: FaceService, astronaut: ImageRGB, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.changes.create_group(MANAGER, "staff", "Staff")
    with pytest.raises(PersonGroupExists):
        service.changes.create_group(MANAGER, "staff", "again")
    monkeypatch.setitem(limits.MAX_PERSONS, "group", 2)
    service.changes.create_person(MANAGER, "staff", "a")
    service.changes.create_person(MANAGER, "staff", "b")
    with pytest.raises(QuotaExceeded, match="2 persons"):
        service.changes.create_person(MANAGER, "staff", "c")
    monkeypatch.setattr(changes_module, "MAX_FACES_PER_PERSON", 1)
    person = service.store.persons.page("staff")[0].person_id
    service.changes.add_person_face(MANAGER, "staff", person, astronaut)
    with pytest.raises(QuotaExceeded, match="1 faces"):
        service.changes.add_person_face(MANAGER, "staff", person, shifted(astronaut, 5, 5))


# -- find similar, group, face lists ----------------------------------------------------------------


def test_find_similar_in_a_face_list(service: FaceService, astronaut: ImageRGB, cameraman: ImageRGB) -> None:
    service.changes.create_face_list(MANAGER, "visitors", "Visitors")
    first = service.changes.add_list_face(MANAGER, "visitors", astronaut)
    service.changes.create_face_list(MANAGER, "others", "Others")
    probe = face_id_of(service, shifted(astronaut, 30, 0))
    similar = service.recognition.find_similar(probe, face_list_id="visitors")
    assert [s.face_id for s in similar] == [first]
    assert similar[0].persisted
    assert service.recognition.find_similar(face_id_of(service, cameraman), face_list_id="visitors") == []
    ranked = service.recognition.find_similar(
        face_id_of(service, cameraman), face_list_id="visitors", mode="matchFace"
    )
    assert [s.face_id for s in ranked] == [first], "matchFace ranks regardless of the threshold"
    with pytest.raises(FaceListNotFound):
        service.recognition.find_similar(probe, face_list_id="nope")
    service.changes.delete_list_face(MANAGER, "visitors", first)
    assert service.recognition.find_similar(probe, face_list_id="visitors", mode="matchFace") == []


def test_find_similar_among_face_ids(service: FaceService, astronaut: ImageRGB, cameraman: ImageRGB) -> None:
    probe = face_id_of(service, astronaut)
    same, other = face_id_of(service, shifted(astronaut, -20, 0)), face_id_of(service, cameraman)
    similar = service.recognition.find_similar(probe, face_ids=[other, same])
    assert [s.face_id for s in similar] == [same]
    assert not similar[0].persisted
    with pytest.raises(BadArgument, match="exactly one"):
        service.recognition.find_similar(probe)


def test_group_splits_people_and_keeps_a_messy_group(
    service: FaceService, astronaut: ImageRGB, cameraman: ImageRGB
) -> None:
    ids = [
        face_id_of(service, img) for img in (astronaut, shifted(astronaut, 15, 5), astronaut[:, ::-1].copy())
    ]
    stranger = face_id_of(service, cameraman)
    groups, messy = service.recognition.group([*ids, stranger])
    assert [sorted(g) for g in groups] == [sorted(ids)]
    assert messy == [stranger]
    with pytest.raises(BadArgument, match="faceIds count"):
        service.recognition.group(ids[:1])


def test_every_change_is_audited_without_names(service: FaceService, astronaut: ImageRGB) -> None:
    person = enrolled_group(service, astronaut)
    service.changes.train(MANAGER, "staff")
    service.changes.delete_person(MANAGER, "staff", person)
    operations = [r.operation for r in service.store.audit.records()]
    assert operations == ["create_person_group", "create_person", "add_person_face", "train", "delete_person"]
    assert service.store.audit.verify() == ChainCheck(True, 5, "ok")
    text = " ".join(str(r.as_json()) for r in service.store.audit.records())
    assert "Eileen" not in text


def test_audit_records_past_the_retention_are_pruned(
    tmp_path: Path, pipeline: FacePipeline, clock: ManualClock
) -> None:
    store = Store.open(tmp_path / "state", create_key_file(tmp_path / "kek"), clock)
    month = FaceService(
        pipeline,
        store,
        DirectorySettings(audit_retention_days=30, audit_min_records=0),
        pipeline.embedder.model_id,
    )
    forever = FaceService(
        pipeline, store, DirectorySettings(audit_retention_days=0, audit_min_records=0), "m"
    )
    try:
        month.changes.create_group(MANAGER, "staff", "Staff")
        clock.advance(20 * 86_400)
        month.changes.create_person(MANAGER, "staff", "Eileen")
        clock.advance(15 * 86_400)  # the group's record is 35 days old, the person's 15
        assert forever.prune_audit() == 0
        assert month.prune_audit() == 1
        assert [r.operation for r in store.audit.records()] == ["create_person", "prune_audit"]
        assert month.verify_audit(Caller("root", "admin")) == ChainCheck(True, 2, "ok")
        assert month.prune_audit() == 0
        clock.advance(3650 * 86_400)
        assert forever.prune_audit() == 0, "0 keeps every record"
        assert len(list(store.audit.records())) == 2
    finally:
        store.close()


def test_the_audit_log_is_bounded_by_count_and_keeps_its_newest_records_whatever_the_clock(
    tmp_path: Path, pipeline: FacePipeline, clock: ManualClock
) -> None:
    store = Store.open(tmp_path / "state", create_key_file(tmp_path / "kek"), clock)
    settings = DirectorySettings(audit_retention_days=30, audit_max_records=6, audit_min_records=3)
    service = FaceService(pipeline, store, settings, pipeline.embedder.model_id)
    try:
        for i in range(4):
            service.changes.create_group(MANAGER, f"g{i}", "G")
        assert service.prune_audit() == 0, "4 recent records: within both bounds"
        clock.advance(3650 * 86_400)  # a clock stepped forward: every record looks ten years old
        assert service.prune_audit() == 1, "the newest audit_min_records stay"
        assert [r.targets.get("personGroupId") for r in store.audit.records()][:3] == ["g1", "g2", "g3"]
        for i in range(4, 12):
            service.changes.create_group(MANAGER, f"g{i}", "G")
        assert len(list(store.audit.records())) == 12
        assert service.prune_audit() == 7, "none is old: down to audit_max_records, its record included"
        assert len(list(store.audit.records())) == 6
        clock.advance(31 * 86_400)
        assert service.prune_audit() == 3, "all old: the newest audit_min_records stay"
        assert [r.operation for r in store.audit.records()] == ["create_person_group"] * 2 + [
            "prune_audit"
        ] * 2
        assert store.audit.verify().intact
    finally:
        store.close()


class WatchedAuditLog(AuditLog):
    """The store's real audit log, noting at the start of each pruning batch whether a transaction is
    open and whether another thread could take the service lock once this one lets go of it once
    (held once: the batch's own hold; more: the prune holds it across batches), and whether the
    whole chain was verified."""

    def __init__(self, store: Store, lock: threading.RLock) -> None:
        super().__init__(store.db, store.keys, store.clock)
        self.lock = lock
        self.batches: list[tuple[bool, bool, int]] = []  # (in a transaction, lock free, deleted)
        self.full_verifications = 0

    def prune(self, before: float | None, **bounds: Any) -> int:
        in_transaction = self.db.in_transaction
        deleted = super().prune(before, **bounds)
        self.batches.append((in_transaction, self._free_after_one_release(), deleted))
        return deleted

    def _free_after_one_release(self) -> bool:
        taken: list[bool] = []

        def other() -> None:
            if self.lock.acquire(blocking=False):
                taken.append(True)
                self.lock.release()

        self.lock.release()
        try:
            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
        finally:
            self.lock.acquire()
        return bool(taken)

    def verify(self) -> ChainCheck:
        self.full_verifications += 1
        return super().verify()


def test_a_large_audit_log_is_pruned_in_batches_that_let_the_service_lock_go(
    tmp_path: Path, pipeline: FacePipeline, clock: ManualClock
) -> None:
    store = Store.open(tmp_path / "state", create_key_file(tmp_path / "kek"), clock)
    settings = DirectorySettings(audit_max_records=1000, audit_min_records=100)
    service = FaceService(pipeline, store, settings, pipeline.embedder.model_id)
    store.audit = watched = WatchedAuditLog(store, service.access.lock)
    try:
        with store.db.tx():
            for _ in range(2 * AUDIT_PRUNE_BATCH + 1500):
                store.audit.append("create_person_group", "mqtt:unverified:x", "?", {}, "refused: …")
        assert service.prune_audit() == 2 * AUDIT_PRUNE_BATCH + 500 + 3  # and the first two batches' records
        assert watched.batches == [
            (False, True, AUDIT_PRUNE_BATCH),
            (False, True, AUDIT_PRUNE_BATCH),
            (False, True, 503),
        ], "each batch its own transaction, under the service lock held for that batch only"
        assert watched.full_verifications == 0, "a batch verifies what it deletes, not the chain"
        assert len(list(store.audit.records())) == 1000
        assert AuditLog.verify(watched).intact
    finally:
        store.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"audit_retention_days": 1}, "0 (keep them) or at least 30 days"),
        ({"audit_retention_days": 29}, "0 (keep them) or at least 30 days"),
        ({"audit_retention_days": 3651}, "less than or equal to 3650"),
        ({"audit_max_records": 0}, "greater than or equal to 1"),
        ({"audit_max_records": 5000}, "audit_min_records (10,000) is above audit_max_records (5,000)"),
    ],
)
def test_audit_retention_settings_have_sane_bounds(settings: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        DirectorySettings.model_validate(settings)
    for days in (0, 30, 3650):
        assert DirectorySettings(audit_retention_days=days).audit_retention_days == days


def test_a_recognizer_can_match_but_never_enrol_or_delete(
    service: FaceService, astronaut: ImageRGB, cameraman: ImageRGB
) -> None:
    person = enrolled_group(service, astronaut)
    service.changes.create_face_list(MANAGER, "visitors", "Visitors")
    listed = service.changes.add_list_face(MANAGER, "visitors", astronaut)
    service.changes.train(MANAGER, "staff")
    probe = face_id_of(service, astronaut)
    # everything a recognizer may do (these take no role: they change nothing)
    assert service.recognition.identify([probe], group_id="staff")[0][1][0].person_id == person
    assert service.recognition.verify_faces(probe, face_id_of(service, shifted(astronaut, 5, 5))).is_identical
    assert service.recognition.find_similar(probe, face_list_id="visitors")
    assert service.recognition.group([probe, face_id_of(service, cameraman)])[1]
    # and everything it may not
    refused = [
        lambda: service.changes.create_group(Caller("cli", "recognizer"), "other", "Other"),
        lambda: service.changes.create_person(Caller("cli", "recognizer"), "staff", "Mallory"),
        lambda: service.changes.add_person_face(Caller("cli", "recognizer"), "staff", person, astronaut),
        lambda: service.changes.delete_person_face(Caller("cli", "recognizer"), "staff", person, "x"),
        lambda: service.changes.delete_person(Caller("cli", "recognizer"), "staff", person),
        lambda: service.changes.train(Caller("cli", "recognizer"), "staff"),
        lambda: service.changes.delete_group(Caller("cli", "recognizer"), "staff"),
        lambda: service.changes.create_face_list(Caller("cli", "recognizer"), "more", "More"),
        lambda: service.changes.add_list_face(Caller("cli", "recognizer"), "visitors", astronaut),
        lambda: service.changes.delete_list_face(Caller("cli", "recognizer"), "visitors", listed),
        lambda: service.changes.delete_face_list(Caller("cli", "recognizer"), "visitors"),
    ]
    for attempt in refused:
        with pytest.raises(Forbidden, match="recognizer"):
            attempt()
    assert service.store.persons.get("staff", person).face_ids
    assert service.store.face_lists.face_ids("visitors") == [listed]
    refusals = [r for r in service.store.audit.records() if r.result == "refused: role"]
    assert len(refusals) == len(refused)
    assert service.store.audit.verify().intact


# -- the directory version, typed scopes, the audit chain's role -------------------------------------


def test_the_directory_version_follows_changes_not_reads(
    service: FaceService, astronaut: ImageRGB, tmp_path: Path
) -> None:
    """``directory_version`` is what the door puts on each decision: it moves with every change
    this service makes, is left alone by recognition and reads, and catches up with another
    process's change at ``refresh``. Reading it costs no SQL and no lock."""
    start = service.directory_version()
    assert start == service.store.version()
    person = enrolled_group(service, astronaut)
    after_enrolment = service.directory_version()
    assert after_enrolment > start
    assert after_enrolment == service.store.version()

    service.changes.train(MANAGER, "staff")
    trained = service.directory_version()
    assert trained > after_enrolment
    probe = face_id_of(service, astronaut)  # a face ID is no directory change
    service.recognition.identify([probe], group_id="staff")
    service.get_person("staff", person)
    service.list_groups()
    assert service.directory_version() == trained == service.store.version()

    with pytest.raises(Forbidden):  # refused: nothing changed
        service.changes.delete_person(Caller("door-1", "recognizer"), "staff", person)
    assert service.directory_version() == trained

    other = Store.open(tmp_path / "state", read_kek(tmp_path / "kek"))  # the CLI, beside the daemon
    try:
        other.persons.delete("staff", person)
    finally:
        other.close()
    assert service.directory_version() == trained, "not noticed before refresh"
    assert service.refresh() == 1
    assert service.directory_version() == service.store.version() > trained


def test_indexes_are_cached_by_typed_scope(service: FaceService, astronaut: ImageRGB) -> None:
    person = enrolled_group(service, astronaut)
    service.changes.train(MANAGER, "staff")
    service.changes.create_face_list(MANAGER, "visitors", "Visitors")
    listed = service.changes.add_list_face(MANAGER, "visitors", astronaut)
    probe = face_id_of(service, astronaut)
    service.recognition.find_similar(probe, face_list_id="visitors")
    service.recognition.identify([probe])  # the person directory (empty)
    indexes = service.access.indexes
    group_index = indexes.cached(GroupScope("staff"))
    assert group_index is not None and group_index.owners() == {person}
    list_index = indexes.cached(ListScope("visitors"))
    assert list_index is not None and list_index.owners() == {listed}
    directory_index = indexes.cached(DirectoryScope())
    assert directory_index is not None and len(directory_index) == 0
    assert indexes.cached(GroupScope("visitors")) is None, "a group and a list of one name are two scopes"
    service.changes.delete_face_list(MANAGER, "visitors")
    assert indexes.cached(ListScope("visitors")) is None


def test_the_audit_chain_needs_an_admin(service: FaceService, astronaut: ImageRGB) -> None:
    enrolled_group(service, astronaut)
    with pytest.raises(Forbidden, match="role 'manager' may not read the audit chain; it needs admin"):
        service.verify_audit(Caller("ops", "manager"))
    chain = service.verify_audit(Caller("root", "admin"))
    assert chain.intact
    (refusal,) = [r for r in service.store.audit.records() if r.result == "refused: role"]
    assert (refusal.operation, refusal.actor, refusal.role) == ("verify_audit", "ops", "manager")
