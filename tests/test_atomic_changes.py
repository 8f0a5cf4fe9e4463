"""A directory change and its audit record commit together, or neither does (issue 9, defects 3 and
4). Real SQLite triggers in the real file make a write fail where a full disk or a kill would: an
audit record that cannot be written rolls its change back (the service's changes, train, the CLI's
own writes); a refusal's record stays although its change is rolled back; one enrolment of one
person is all or nothing, so running it again enrols every image once. Real models, real files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from directory_helpers import MODEL, template
from skimage import data

from edged.clock import ManualClock
from edged.directory import crypto
from edged.directory.audit import ChainCheck
from edged.directory.scope import GroupScope
from edged.directory.store import DB_NAME, Store
from edged.errors import DuplicateIdentity, EdgedError, WrongKey
from edged.pipeline.pipeline import FacePipeline
from edged.service.changes import Embedded
from edged.service.faces import FaceService
from edged.service.policy import Caller
from edged.service.settings import DirectorySettings
from edged.types import ImageRGB

RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]
MANAGER = Caller("cli", "manager")

REFUSE_OK_RECORDS = (
    "CREATE TRIGGER audit_refused BEFORE INSERT ON audit WHEN NEW.result LIKE 'ok%'"
    " BEGIN SELECT RAISE(ABORT, 'the audit log refuses the record'); END"
)
"""Every record of a change that succeeded fails to be written (refusals and failures still are)."""


def shifted(image: ImageRGB, dx: int, dy: int) -> ImageRGB:
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    size = (image.shape[1], image.shape[0])
    return np.ascontiguousarray(cv2.warpAffine(image, matrix, size, borderMode=cv2.BORDER_REPLICATE))


@pytest.fixture
def service(tmp_path: Path, pipeline: FacePipeline) -> Iterator[FaceService]:
    store = Store.open(tmp_path / "state", crypto.create_key_file(tmp_path / "kek"), ManualClock())
    yield FaceService(pipeline, store, DirectorySettings(), "dlib_resnet_v1_int8.tflite")
    store.close()


def eileen_in_staff(service: FaceService, astronaut: ImageRGB) -> str:
    """The group ``staff`` with the astronaut enrolled as Eileen; returns her person ID."""
    service.changes.create_group(MANAGER, "staff", "Staff")
    person = service.changes.create_person(MANAGER, "staff", "Eileen")
    service.changes.add_person_face(MANAGER, "staff", person, astronaut)
    return person


def contents(store: Store) -> tuple[object, ...]:
    """Everything a change could have touched, and the audit log."""
    persons = {
        g.group_id: [(p.person_id, p.name, p.face_ids) for p in store.persons.page(g.group_id)]
        for g in store.groups.page()
    }
    return (
        store.groups.page(),
        persons,
        store.version(),
        [r.hash for r in store.audit.records()],
        store.db.scalar("SELECT value FROM meta WHERE key = 'audit_head'"),
    )


# -- the service's changes ---------------------------------------------------------------------------

CHANGES: dict[str, Callable[[FaceService, str, ImageRGB], object]] = {
    "delete_person": lambda s, person, _: s.changes.delete_person(MANAGER, "staff", person),
    "delete_person_group": lambda s, _, __: s.changes.delete_group(MANAGER, "staff"),
    "delete_person_face": lambda s, person, _: s.changes.delete_person_face(
        MANAGER, "staff", person, s.store.persons.get("staff", person).face_ids[0]
    ),
    "add_person_face": lambda s, person, image: s.changes.add_person_face(
        MANAGER, "staff", person, shifted(image, 12, 6)
    ),
    "create_person": lambda s, _, __: s.changes.create_person(MANAGER, "staff", "Another"),
    "update_person_group": lambda s, _, __: s.changes.update_group(MANAGER, "staff", "Renamed", None),
    "set_card": lambda s, person, _: s.changes.set_card(MANAGER, "4711", person, "staff"),
}


@pytest.mark.parametrize("operation", list(CHANGES))
def test_a_change_whose_audit_record_fails_is_rolled_back(
    service: FaceService, astronaut: ImageRGB, operation: str
) -> None:
    person = eileen_in_staff(service, astronaut)
    service.changes.train(MANAGER, "staff")
    probe = service.recognition.finder.enrollable(astronaut, None)[1]
    assert [m.owner_id for m in service.search_door("staff", probe, 1, None)] == [person]
    before = contents(service.store)
    service.store.db.execute(REFUSE_OK_RECORDS)

    with pytest.raises(sqlite3.IntegrityError, match="refuses the record"):
        CHANGES[operation](service, person, astronaut)

    assert contents(service.store) == before, "the change was committed without its audit record"
    assert [m.owner_id for m in service.search_door("staff", probe, 1, None)] == [person]
    assert service.directory_version() == service.store.version()
    assert service.store.audit.verify().intact


def test_a_train_whose_audit_record_fails_is_not_swapped_in(
    service: FaceService, astronaut: ImageRGB
) -> None:
    eileen_in_staff(service, astronaut)
    cached = service.access.indexes.cached(GroupScope("staff"))  # loaded by the duplicate check
    service.store.db.execute(REFUSE_OK_RECORDS)

    with pytest.raises(sqlite3.IntegrityError, match="refuses the record"):
        service.changes.train(MANAGER, "staff")

    group = service.store.groups.get("staff")
    assert (group.train_status, group.trained_at) == ("failed", None), "trained without its record"
    assert group.train_message is not None and "refuses the record" in group.train_message
    last = list(service.store.audit.records())[-1]
    assert (last.operation, last.result, last.targets) == (
        "train",
        "failed: IntegrityError",
        {"personGroupId": "staff"},
    ), "the failure is recorded with its status"
    assert service.access.indexes.cached(GroupScope("staff")) is cached, "the new index was swapped in"
    assert service.store.audit.verify().intact


def test_a_refusal_is_recorded_although_its_change_is_rolled_back(
    service: FaceService, astronaut: ImageRGB
) -> None:
    eileen_in_staff(service, astronaut)
    second = service.changes.create_person(MANAGER, "staff", "Impostor")
    with pytest.raises(DuplicateIdentity):
        service.changes.add_person_face(MANAGER, "staff", second, shifted(astronaut, 10, 10))
    last = list(service.store.audit.records())[-1]
    assert (last.operation, last.targets, last.result) == (
        "add_person_face",
        {"personId": second},
        "refused: duplicate",
    )
    assert service.store.persons.get("staff", second).face_ids == ()
    assert service.store.audit.verify().intact


def test_the_signed_head_commits_with_its_record(store: Store) -> None:
    store.audit.append("create_person_group", "cli", "manager", {"personGroupId": "staff"}, "ok")
    store.db.execute(
        "CREATE TRIGGER head_refused BEFORE INSERT ON meta WHEN NEW.key = 'audit_head'"
        " BEGIN SELECT RAISE(ABORT, 'no head'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="no head"):
        store.audit.append("delete_person_group", "cli", "manager", {"personGroupId": "staff"}, "ok")
    assert [r.seq for r in store.audit.records()] == [1], "a record was written without its head"
    assert store.audit.verify() == ChainCheck(True, 1, "ok")


# -- one enrolment of one person: all or nothing -------------------------------------------------------


def test_an_enrolment_that_fails_at_the_third_face_leaves_nothing(
    service: FaceService, astronaut: ImageRGB
) -> None:
    service.changes.create_group(MANAGER, "staff", "Staff")
    faces = [service.changes.embed(MANAGER, shifted(astronaut, dx, 5)) for dx in (0, 15, -15, 8)]
    before = contents(service.store)
    service.store.db.execute(
        "CREATE TRIGGER third_face BEFORE INSERT ON faces"
        " WHEN (SELECT COUNT(*) FROM faces WHERE person_id = NEW.person_id) >= 2"
        " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="the disk is full"):
        service.changes.enrol_person(MANAGER, "staff", None, "Eileen", faces)
    assert contents(service.store) == before, "a part of the enrolment was kept"
    assert service.access.indexes.get(GroupScope("staff")).owner_count == 0, "the index kept a part"

    service.store.db.execute("DROP TRIGGER third_face")
    enrolment = service.changes.enrol_person(MANAGER, "staff", None, "Eileen", faces)
    assert enrolment.created and all(not isinstance(f, EdgedError) for f in enrolment.faces)
    assert len(service.store.persons.get("staff", enrolment.person_id).face_ids) == 4
    assert len(service.access.indexes.get(GroupScope("staff"))) == 4
    operations = [r.operation for r in service.store.audit.records()]
    assert operations == ["create_person_group", "create_person", *["add_person_face"] * 4]
    assert service.store.audit.verify().intact


def test_a_face_refused_inside_an_enrolment_is_left_out_and_recorded(
    service: FaceService, astronaut: ImageRGB, cameraman_face: Embedded
) -> None:
    eileen = eileen_in_staff(service, astronaut)
    faces = [cameraman_face, service.changes.embed(MANAGER, shifted(astronaut, 10, 10)), cameraman_face]
    enrolment = service.changes.enrol_person(MANAGER, "staff", None, "Cameraman", faces)
    first, refused, third = enrolment.faces
    assert isinstance(refused, DuplicateIdentity) and eileen in refused.message
    assert not isinstance(first, EdgedError) and not isinstance(third, EdgedError)
    person = service.store.persons.get("staff", enrolment.person_id)
    assert set(person.face_ids) == {first.face_id, third.face_id}
    results = [(r.operation, r.result) for r in service.store.audit.records()][-4:]
    assert results == [
        ("create_person", "ok"),
        ("add_person_face", "ok"),
        ("add_person_face", "ok"),
        ("add_person_face", "refused: duplicate"),  # written once the enrolment committed
    ]
    assert service.store.audit.verify().intact


@pytest.fixture
def cameraman_face(pipeline: FacePipeline) -> Embedded:
    """A second identity (scikit-image's cameraman), embedded (it would not pass the quality gate)."""
    (face,) = pipeline.faces(np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1)))
    assert face.embedding is not None
    return Embedded(face, face.embedding)


# -- the CLI's own writes, and its enrolment -------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A directory with the group ``staff`` and one person with a (synthetic) face."""
    key = tmp_path / "edged.key"
    kek = crypto.create_key_file(key)
    store = Store.open(tmp_path / "state", kek)
    try:
        store.groups.create("staff", "Staff", None, "group", MODEL)
        person = store.persons.create("staff", "Eileen", None)
        store.persons.add_face("staff", person, template(np.random.default_rng(5)), MODEL, None, {})
    finally:
        store.close()
    return {"state": tmp_path / "state", "key": key, "tmp": tmp_path}


def edged(run_edged: RunEdged, site: dict[str, Path], *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGED_STATE_DIR": str(site["state"]), "EDGED_KEY_FILE": str(site["key"])}
    return run_edged([*args], env=env)


def sql(site: dict[str, Path], statement: str) -> None:
    db = sqlite3.connect(site["state"] / DB_NAME, isolation_level=None)
    try:
        db.execute(statement)
    finally:
        db.close()


def opened(site: dict[str, Path], key: Path) -> Store:
    return Store.open(site["state"], crypto.read_kek(key))


@pytest.mark.parametrize(
    "command",
    [
        ("groups", "update", "staff", "--name", "Renamed"),
        ("persons", "update", "staff", "Eileen", "--name", "Renamed"),
    ],
    ids=["groups-update", "persons-update"],
)
def test_a_cli_update_whose_audit_record_fails_is_rolled_back(
    run_edged: RunEdged, site: dict[str, Path], command: tuple[str, ...]
) -> None:
    sql(site, REFUSE_OK_RECORDS)
    assert edged(run_edged, site, *command).returncode != 0
    store = opened(site, site["key"])
    try:
        assert store.groups.get("staff").name == "Staff"
        assert [p.name for p in store.persons.page("staff")] == ["Eileen"]
        assert list(store.audit.records()) == []
    finally:
        store.close()


def test_a_key_rotation_whose_audit_record_fails_is_rolled_back(
    run_edged: RunEdged, site: dict[str, Path]
) -> None:
    sql(site, REFUSE_OK_RECORDS)
    new_key = site["tmp"] / "new.key"
    assert edged(run_edged, site, "keys", "rotate", "--new-key-file", new_key).returncode != 0
    with pytest.raises(WrongKey):
        opened(site, new_key)  # rotated without its record
    store = opened(site, site["key"])
    try:
        assert [p.name for p in store.persons.page("staff")] == ["Eileen"]
    finally:
        store.close()


def test_a_cli_enrolment_is_all_or_nothing_and_runs_again(
    run_edged: RunEdged, site: dict[str, Path], astronaut: ImageRGB
) -> None:
    folder = site["tmp"] / "people" / "Eileen Collins"
    folder.mkdir(parents=True)
    for i, dx in enumerate((0, 15, -15)):
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(shifted(astronaut, dx, 5), cv2.COLOR_RGB2BGR))
        assert ok
        (folder / f"{i}.png").write_bytes(encoded.tobytes())
    sql(
        site,
        "CREATE TRIGGER third_face BEFORE INSERT ON faces"
        " WHEN (SELECT COUNT(*) FROM faces WHERE person_id = NEW.person_id) >= 2"
        " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END",
    )
    failed = edged(run_edged, site, "enroll", "staff", "--from-dir", folder.parent, "--json")
    assert failed.returncode != 0
    store = opened(site, site["key"])
    try:
        assert [p.name for p in store.persons.page("staff")] == ["Eileen"], "a part of the enrolment was kept"
        assert list(store.audit.records()) == []
    finally:
        store.close()

    sql(site, "DROP TRIGGER third_face")
    again = edged(run_edged, site, "enroll", "staff", "--from-dir", folder.parent, "--json")
    assert again.returncode == 0, again.stderr
    store = opened(site, site["key"])
    try:
        (enrolled,) = [p for p in store.persons.page("staff") if p.name == "Eileen Collins"]
        assert len(enrolled.face_ids) == 3, "every image is enrolled once"
        operations = [r.operation for r in store.audit.records()]
        assert operations == ["create_person", *["add_person_face"] * 3]
        assert store.audit.verify().intact
    finally:
        store.close()
