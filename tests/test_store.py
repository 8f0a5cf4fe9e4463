"""The encrypted directory store (``edged.directory.store``): SQLite settings and migrations, every
operation with its NotFound/Exists errors, exact template round trips, no plaintext on disk, real
deletion with signed receipts, ciphertexts bound to their rows, and a wrong key that changes nothing.

Real SQLite files in ``tmp_path``, real AES-GCM and Ed25519, real key files, a manual clock.
Templates are synthetic 128-d float32 vectors."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import shutil
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest
from directory_helpers import MODEL, NAME, disk_files, found_on_disk, int8_bytes, template

from edged.api.wire import receipt_json
from edged.clock import ManualClock
from edged.directory import crypto
from edged.directory.receipts import Receipt
from edged.directory.schema import MIGRATIONS
from edged.directory.scope import DirectoryScope, GroupScope, ListScope
from edged.directory.sealed import TEMPLATE_DIM
from edged.directory.store import DB_NAME, Store
from edged.errors import (
    BadArgument,
    ConfigError,
    DecryptionFailed,
    DynamicPersonGroupNotFound,
    FaceListExists,
    FaceListNotFound,
    FaceNotFound,
    PersonGroupExists,
    PersonGroupNotFound,
    PersonNotFound,
    WrongKey,
)

USER_DATA = '{"badge": "ZQM-774312", "department": "Cryptozoology Annex"}'
FACE_USER_DATA = "front door camera, Tuesday, badge ZQM-774312"


# -- helpers --------------------------------------------------------------------------------------


def plaintext_needles(name: str, user_data: str, templates: list[np.ndarray]) -> dict[str, bytes]:
    needles = {"name": name.encode(), "userData": user_data.encode()}
    for part in name.split() + user_data.split():
        if len(part) >= 7:
            needles[f"fragment {part!r}"] = part.strip('",{}').encode()
    for i, vector in enumerate(templates):
        needles[f"template {i} float32"] = np.asarray(vector, "<f4").tobytes()
        needles[f"template {i} int8"] = int8_bytes(vector)
    return needles


def person_secrets(store: Store, person_id: str) -> dict[str, bytes]:
    """Every stored byte string that belongs to a person: ciphertexts, wrapped key and key ID."""
    key_id, name, user_data = store.db.execute(
        "SELECT key_id, name, user_data FROM persons WHERE person_id = ?", (person_id,)
    ).fetchone()
    secrets = {"key_id": str(key_id).encode(), "name ciphertext": bytes(name)}
    if user_data is not None:
        secrets["userData ciphertext"] = bytes(user_data)
    (wrapped,) = store.db.execute("SELECT wrapped FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()
    secrets["wrapped data key"] = bytes(wrapped)
    for face_id, blob, face_user_data in store.db.execute(
        "SELECT face_id, template, user_data FROM faces WHERE person_id = ?", (person_id,)
    ):
        secrets[f"template ciphertext {face_id}"] = bytes(blob)
        if face_user_data is not None:
            secrets[f"face userData ciphertext {face_id}"] = bytes(face_user_data)
    return secrets


def list_secrets(store: Store, list_id: str) -> dict[str, bytes]:
    (key_id,) = store.db.execute("SELECT key_id FROM face_lists WHERE list_id = ?", (list_id,)).fetchone()
    (wrapped,) = store.db.execute("SELECT wrapped FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()
    secrets = {"key_id": str(key_id).encode(), "wrapped data key": bytes(wrapped)}
    for face_id, blob in store.db.execute(
        "SELECT face_id, template FROM faces WHERE list_id = ?", (list_id,)
    ):
        secrets[f"template ciphertext {face_id}"] = bytes(blob)
    return secrets


def key_id_of(store: Store, person_id: str) -> str:
    return str(store.db.execute("SELECT key_id FROM persons WHERE person_id = ?", (person_id,)).fetchone()[0])


def enrol(
    store: Store,
    group_id: str | None,
    name: str,
    rng: np.random.Generator,
    faces: int = 3,
    user_data: str | None = None,
) -> tuple[str, list[np.ndarray], list[str]]:
    person_id = store.persons.create(group_id, name, user_data)
    vectors = [template(rng) for _ in range(faces)]
    face_ids = [store.persons.add_face(group_id, person_id, v, MODEL, None, {"q": 0.9}) for v in vectors]
    return person_id, vectors, face_ids


def assert_receipt_verifies(receipt: Receipt) -> None:
    assert crypto.verify_signature(receipt.device_public_key, receipt.payload(), receipt.signature)
    for forged in (
        dataclasses.replace(receipt, deleted={k: v + 1 for k, v in receipt.deleted.items()}),
        dataclasses.replace(receipt, time=receipt.time + 1),
        dataclasses.replace(receipt, targets={**receipt.targets, "personId": "someone-else"}),
        dataclasses.replace(receipt, shredded_keys_sha256="0" * 64),
        dataclasses.replace(receipt, operation="delete_nothing"),
        dataclasses.replace(receipt, device_public_key=crypto.DeviceSigner.generate().public_hex),
    ):
        assert not crypto.verify_signature(forged.device_public_key, forged.payload(), forged.signature)


def assert_same_rows(got_ids: tuple[str, ...], got: np.ndarray, expected: dict[str, np.ndarray]) -> None:
    assert sorted(got_ids) == sorted(expected)
    assert got.dtype == np.float32
    assert got.shape == (len(expected), TEMPLATE_DIM)
    for row, face_id in zip(got, got_ids, strict=True):
        assert row.tobytes() == np.asarray(expected[face_id], "<f4").tobytes()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def group(store: Store) -> str:
    store.groups.create("staff", "Staff", "doors 1-3", "group", MODEL)
    return "staff"


# -- SQLite settings, migrations, files ------------------------------------------------------------


def test_sqlite_settings(store: Store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.db.execute("PRAGMA secure_delete").fetchone()[0] == 1


def test_settings_hold_after_reopening(state_dir: Path, kek: crypto.Kek) -> None:
    Store.open(state_dir, kek).close()
    again = Store.open(state_dir, kek)
    try:
        assert again.db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert again.db.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert again.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert again.db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    finally:
        again.close()


def test_one_file_under_the_state_directory(store: Store, state_dir: Path) -> None:
    assert store.path == state_dir / DB_NAME
    assert store.path.is_file()
    with store.path.open("rb") as handle:
        assert handle.read(16) == b"SQLite format 3\x00"


def test_user_version_holds_the_current_version(store: Store) -> None:
    assert store.db.user_version() == len(MIGRATIONS)
    tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "data_keys", "persons", "faces", "audit", "directory_version"} <= tables
    assert "schema_version" not in tables


def test_reopening_does_not_migrate_again(
    state_dir: Path, kek: crypto.Kek, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edged.directory.db")
    first = Store.open(state_dir, kek)
    assert any("migrated to version 1" in r.getMessage() for r in caplog.records)
    first.groups.create("g", "G", None, "group", MODEL)
    person_id, vectors, _ = enrol(first, "g", "Ada", rng, faces=1)
    device_key = first.device_public_key
    meta = dict(first.db.execute("SELECT key, value FROM meta").fetchall())
    first.close()
    caplog.clear()

    second = Store.open(state_dir, kek)
    try:
        assert not any("migrated" in r.getMessage() for r in caplog.records)
        assert second.db.user_version() == len(MIGRATIONS)
        assert second.persons.get("g", person_id).name == "Ada"
        assert second.faces.templates(GroupScope("g")).matrix[0].tobytes() == vectors[0].tobytes()
        assert second.device_public_key == device_key  # the device key is created once
        assert dict(second.db.execute("SELECT key, value FROM meta").fetchall()) == meta
    finally:
        second.close()


def test_a_newer_schema_is_refused(state_dir: Path, kek: crypto.Kek) -> None:
    Store.open(state_dir, kek).close()
    with sqlite3.connect(state_dir / DB_NAME) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(ConfigError, match="schema version 99") as excinfo:
        Store.open(state_dir, kek)
    assert str(state_dir / DB_NAME) in str(excinfo.value)


def test_a_file_that_is_not_a_database_is_a_config_error(state_dir: Path, kek: crypto.Kek) -> None:
    state_dir.mkdir()
    (state_dir / DB_NAME).write_bytes(b"this is not sqlite" * 300)
    with pytest.raises(ConfigError, match="not a usable SQLite database") as excinfo:
        Store.open(state_dir, kek)
    assert str(state_dir / DB_NAME) in str(excinfo.value)


def test_database_files_are_private(store: Store, group: str, rng: np.random.Generator) -> None:
    enrol(store, group, "Ada", rng, faces=1)
    files = [p for p in store.path.parent.iterdir() if p.name.startswith(DB_NAME)]
    assert {p.name for p in files} >= {DB_NAME, DB_NAME + "-wal"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


# -- person groups ----------------------------------------------------------------------------------


def test_group_create_get_update_list(store: Store, clock: ManualClock) -> None:
    created = store.groups.create("staff", "Staff", "doors 1-3", "group", MODEL)
    assert (created.group_id, created.kind, created.name, created.user_data) == (
        "staff",
        "group",
        "Staff",
        "doors 1-3",
    )
    assert created.recognition_model == MODEL
    assert created.train_status == "notstarted"
    assert created.trained_at is None
    assert created.created == created.modified == clock.now()
    assert store.groups.create("visitors", "Visitors", None, "large", MODEL).kind == "large"

    clock.advance(10)
    updated = store.groups.update("staff", "Staff (all)", None)
    assert (updated.name, updated.user_data) == ("Staff (all)", "doors 1-3")
    assert updated.modified == clock.now()
    assert updated.created == created.created
    assert store.groups.update("staff", None, "doors 1-4").user_data == "doors 1-4"
    assert store.groups.get("staff").name == "Staff (all)"
    assert [g.group_id for g in store.groups.page()] == ["staff", "visitors"]


def test_group_list_paging(store: Store) -> None:
    ids = [f"group-{i:02d}" for i in range(7)]
    for group_id in reversed(ids):
        store.groups.create(group_id, group_id.upper(), None, "group", MODEL)
    assert [g.group_id for g in store.groups.page(top=3)] == ids[:3]
    assert [g.group_id for g in store.groups.page(start=ids[2], top=3)] == ids[3:6]
    assert [g.group_id for g in store.groups.page(start=ids[5])] == ids[6:]
    assert store.groups.page(start=ids[6]) == []


def test_training_status(store: Store, group: str, clock: ManualClock) -> None:
    store.groups.set_training(group, "running")
    assert (store.groups.get(group).train_status, store.groups.get(group).trained_at) == ("running", None)
    clock.advance(5)
    store.groups.set_training(group, "succeeded")
    done = store.groups.get(group)
    assert (done.train_status, done.trained_at) == ("succeeded", clock.now())
    clock.advance(5)
    store.groups.set_training(group, "failed", "no persons")
    failed = store.groups.get(group)
    assert (failed.train_status, failed.train_message) == ("failed", "no persons")
    assert failed.trained_at == clock.now() - 5  # the last success is kept


def test_group_exists(store: Store, group: str) -> None:
    with pytest.raises(PersonGroupExists, match="'staff' already exists"):
        store.groups.create(group, "Other", None, "large", MODEL)
    assert store.groups.get(group).name == "Staff"


def test_an_invalid_group_kind_is_not_reported_as_an_existing_group(store: Store) -> None:
    """A CHECK-constraint violation is a bad argument, not "already exists"."""
    with pytest.raises((BadArgument, ValueError)) as excinfo:
        store.groups.create("new-group", "New", None, "huge", MODEL)
    assert not isinstance(excinfo.value, PersonGroupExists)
    with pytest.raises((BadArgument, ValueError)) as excinfo:
        store.face_lists.create("new-list", "New", None, "huge", MODEL)
    assert not isinstance(excinfo.value, FaceListExists)


def test_group_not_found_names_the_id(store: Store) -> None:
    missing = "no-such-group"
    calls = [
        lambda: store.groups.get(missing),
        lambda: store.groups.update(missing, "x", None),
        lambda: store.groups.set_training(missing, "running"),
        lambda: store.groups.delete(missing),
        lambda: store.persons.create(missing, "Ada", None),
        lambda: store.persons.get(missing, "p"),
        lambda: store.persons.page(missing),
        lambda: store.faces.templates(GroupScope(missing)),
    ]
    for call in calls:
        with pytest.raises(PersonGroupNotFound, match=f"'{missing}'"):
            call()


def test_delete_group(store: Store, group: str) -> None:
    receipt = store.groups.delete(group)
    assert receipt.deleted == {"persons": 0, "faces": 0}
    with pytest.raises(PersonGroupNotFound):
        store.groups.get(group)
    assert store.groups.page() == []
    store.groups.create(group, "Again", None, "group", MODEL)  # the ID is free again
    assert store.groups.get(group).name == "Again"


# -- persons ----------------------------------------------------------------------------------------


def test_person_create_get(store: Store, group: str, clock: ManualClock) -> None:
    person_id = store.persons.create(group, NAME, USER_DATA)
    person = store.persons.get(group, person_id)
    assert (person.person_id, person.group_id, person.name, person.user_data) == (
        person_id,
        group,
        NAME,
        USER_DATA,
    )
    assert person.face_ids == ()
    assert person.created == clock.now()
    assert store.persons.get(group, store.persons.create(group, "No data", None)).user_data is None


def test_unicode_names_round_trip(store: Store) -> None:
    name = "Zoë Ångström-Ńgũgĩ 李小龍 🚪"
    person_id = store.persons.create(None, name, "ÆØÅ")
    assert store.persons.get(None, person_id).name == name
    assert store.persons.get(None, person_id).user_data == "ÆØÅ"


def test_directory_and_group_are_separate_scopes(store: Store, group: str) -> None:
    in_group = store.persons.create(group, "In group", None)
    in_directory = store.persons.create(None, "In directory", None)
    store.groups.create("other", "Other", None, "group", MODEL)
    assert store.persons.get(None, in_directory).group_id is None
    with pytest.raises(PersonNotFound, match=f"'{in_group}' is not in the person directory"):
        store.persons.get(None, in_group)
    with pytest.raises(PersonNotFound, match=f"'{in_directory}' is not in person group 'staff'"):
        store.persons.get(group, in_directory)
    with pytest.raises(PersonNotFound, match=f"'{in_group}' is not in person group 'other'"):
        store.persons.get("other", in_group)
    assert [p.person_id for p in store.persons.page(group)] == [in_group]
    assert [p.person_id for p in store.persons.page(None)] == [in_directory]
    assert store.persons.page("other") == []
    assert (store.persons.count(group), store.persons.count(None), store.persons.count("other")) == (1, 1, 0)
    with pytest.raises(PersonNotFound):
        store.persons.delete(None, in_group)
    with pytest.raises(PersonNotFound):
        store.persons.delete("other", in_group)
    assert store.persons.get(group, in_group).name == "In group"


def test_person_list_paging(store: Store, group: str) -> None:
    ids = sorted(store.persons.create(group, f"Person {i}", None) for i in range(7))
    page = store.persons.page(group, top=3)
    assert [p.person_id for p in page] == ids[:3]
    assert [p.name for p in page] == [store.persons.get(group, i).name for i in ids[:3]]
    assert [p.person_id for p in store.persons.page(group, start=ids[2], top=3)] == ids[3:6]
    assert [p.person_id for p in store.persons.page(group, start=ids[5], top=3)] == ids[6:]
    assert store.persons.page(group, start=ids[6]) == []
    walked: list[str] = []
    start = None
    while page := store.persons.page(group, start=start, top=2):
        walked += [p.person_id for p in page]
        start = page[-1].person_id
    assert walked == ids


def test_person_update(store: Store, group: str) -> None:
    person_id = store.persons.create(group, "Ada", "old")
    assert store.persons.update(group, person_id, "Ada Lovelace", None).name == "Ada Lovelace"
    assert store.persons.get(group, person_id).user_data == "old"
    updated = store.persons.update(group, person_id, None, "new")
    assert (updated.name, updated.user_data) == ("Ada Lovelace", "new")
    same = store.persons.update(group, person_id, None, None)
    assert (same.name, same.user_data) == ("Ada Lovelace", "new")


def test_person_not_found_names_the_id(store: Store, group: str, rng: np.random.Generator) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    calls = [
        lambda: store.persons.get(group, missing),
        lambda: store.persons.update(group, missing, "x", None),
        lambda: store.persons.delete(group, missing),
        lambda: store.persons.add_face(group, missing, template(rng), MODEL, None, {}),
        lambda: store.persons.get(None, missing),
        lambda: store.dynamic_groups.create("dg", "DG", None, [missing]),
    ]
    for call in calls:
        with pytest.raises(PersonNotFound, match=missing):
            call()


def test_delete_person(store: Store, group: str, rng: np.random.Generator, clock: ManualClock) -> None:
    person_id, _, face_ids = enrol(store, group, "Ada", rng, faces=2)
    keep_id, keep_vectors, keep_faces = enrol(store, group, "Grace", rng, faces=1)
    clock.advance(60)
    receipt = store.persons.delete(group, person_id)
    assert receipt.operation == "delete_person"
    assert receipt.targets == {"personId": person_id, "personGroupId": group}
    assert receipt.deleted == {"persons": 1, "faces": 2}
    assert receipt.time == clock.now()
    assert store.groups.get(group).modified == clock.now()
    with pytest.raises(PersonNotFound):
        store.persons.get(group, person_id)
    for face_id in face_ids:
        with pytest.raises(FaceNotFound):
            store.persons.faces.get(face_id, person_id)
    assert [p.person_id for p in store.persons.page(group)] == [keep_id]
    result = store.faces.templates(GroupScope(group))
    assert_same_rows(result.face_ids, result.matrix, {keep_faces[0]: keep_vectors[0]})
    assert result.owner_ids == (keep_id,)


# -- persisted faces ------------------------------------------------------------------------------


def test_person_faces(store: Store, group: str, rng: np.random.Generator, clock: ManualClock) -> None:
    person_id = store.persons.create(group, "Ada", None)
    first = store.persons.add_face(group, person_id, template(rng), MODEL, FACE_USER_DATA, {"sharpness": 0.8})
    clock.advance(1)
    second = store.persons.add_face(group, person_id, template(rng), MODEL, None, {})
    assert store.persons.get(group, person_id).face_ids == (first, second)  # in order of creation
    assert store.persons.faces.count(person_id) == 2
    face = store.persons.faces.get(first, person_id)
    assert (face.face_id, face.owner_id, face.user_data, face.quality) == (
        first,
        person_id,
        FACE_USER_DATA,
        {"sharpness": 0.8},
    )
    assert store.persons.faces.get(second, person_id).user_data is None
    assert store.persons.faces.get(second, person_id).created == clock.now()
    assert store.persons.faces.update(second, person_id, "side door").user_data == "side door"
    assert store.persons.faces.get(first, person_id).user_data == FACE_USER_DATA

    receipt = store.persons.faces.delete(first, person_id)
    assert receipt.deleted == {"faces": 1}
    assert receipt.targets == {"persistedFaceId": first, "personId": person_id}
    assert_receipt_verifies(receipt)
    assert store.persons.get(group, person_id).face_ids == (second,)
    assert store.faces.templates(GroupScope(group)).face_ids == (second,)


def test_face_not_found_names_the_id(store: Store, group: str, rng: np.random.Generator) -> None:
    ada, _, (ada_face,) = enrol(store, group, "Ada", rng, faces=1)
    grace = store.persons.create(group, "Grace", None)
    missing = "11111111-1111-4111-8111-111111111111"
    for call in (
        lambda: store.persons.faces.get(missing, ada),
        lambda: store.persons.faces.update(missing, ada, "x"),
        lambda: store.persons.faces.delete(missing, ada),
    ):
        with pytest.raises(FaceNotFound, match=missing):
            call()
    # a face is only found under its own owner
    with pytest.raises(FaceNotFound, match=ada_face):
        store.persons.faces.get(ada_face, grace)
    with pytest.raises(FaceNotFound, match=ada_face):
        store.persons.faces.delete(ada_face, grace)
    assert store.persons.faces.get(ada_face, ada).owner_id == ada


def test_a_template_must_be_128_or_512_finite_floats(store: Store, group: str) -> None:
    person_id = store.persons.create(group, "Ada", None)
    bad_ones = (np.zeros(127, np.float32), np.zeros(256, np.float32), np.full(128, np.nan, np.float32))
    for bad in (*bad_ones, np.full(512, np.inf, np.float32)):
        with pytest.raises(ValueError, match="128 or 512 finite floats"):
            store.persons.add_face(group, person_id, bad, MODEL, None, {})
    assert store.persons.faces.count(person_id) == 0


# -- templates() ----------------------------------------------------------------------------------


def test_templates_of_a_group_are_exact(store: Store, group: str, rng: np.random.Generator) -> None:
    expected: dict[str, np.ndarray] = {}
    owners: dict[str, str] = {}
    for name in ("Ada", "Grace", "Edsger"):
        person_id, vectors, face_ids = enrol(store, group, name, rng, faces=3)
        expected |= dict(zip(face_ids, vectors, strict=True))
        owners |= dict.fromkeys(face_ids, person_id)
    enrol(store, None, "Directory person", rng)  # not part of the group
    result = store.faces.templates(GroupScope(group))
    assert_same_rows(result.face_ids, result.matrix, expected)
    assert result.owner_ids == tuple(owners[f] for f in result.face_ids)


def test_templates_of_the_directory_with_a_person_restriction(
    store: Store, group: str, rng: np.random.Generator
) -> None:
    enrol(store, group, "In a group", rng)
    people = {name: enrol(store, None, name, rng, faces=2) for name in ("Ada", "Grace", "Edsger")}
    everyone = store.faces.templates(DirectoryScope())
    expected = {f: v for _, vs, fs in people.values() for f, v in zip(fs, vs, strict=True)}
    assert_same_rows(everyone.face_ids, everyone.matrix, expected)

    ada, ada_vectors, ada_faces = people["Ada"]
    grace = people["Grace"][0]
    some = store.faces.templates(DirectoryScope(), person_ids=[ada, grace])
    assert set(some.owner_ids) == {ada, grace}
    assert len(some.face_ids) == 4
    only_ada = store.faces.templates(DirectoryScope(), person_ids=[ada])
    assert_same_rows(only_ada.face_ids, only_ada.matrix, dict(zip(ada_faces, ada_vectors, strict=True)))
    assert only_ada.owner_ids == (ada, ada)
    none = store.faces.templates(DirectoryScope(), person_ids=[])
    assert none.matrix.shape == (0, TEMPLATE_DIM)
    assert none.matrix.dtype == np.float32


def test_templates_of_a_face_list(store: Store, rng: np.random.Generator) -> None:
    store.face_lists.create("lobby", "Lobby", None, "list", MODEL)
    vectors = [template(rng) for _ in range(4)]
    face_ids = [store.face_lists.add_face("lobby", v, MODEL, None, {}) for v in vectors]
    result = store.faces.templates(ListScope("lobby"))
    assert_same_rows(result.face_ids, result.matrix, dict(zip(face_ids, vectors, strict=True)))
    assert result.owner_ids == result.face_ids  # a face list's "owners" are its faces


def test_templates_of_empty_and_missing_scopes(store: Store, group: str) -> None:
    empty = store.faces.templates(GroupScope(group))
    assert (empty.face_ids, empty.owner_ids, empty.matrix.shape) == ((), (), (0, TEMPLATE_DIM))
    assert store.faces.templates(DirectoryScope()).matrix.shape == (0, TEMPLATE_DIM)
    with pytest.raises(FaceListNotFound, match="'nope'"):
        store.faces.templates(ListScope("nope"))
    with pytest.raises(TypeError):  # a scope is required: a group, the directory or a face list
        store.faces.templates()  # type: ignore[call-arg]


def test_templates_page_by_page_and_by_face_id(store: Store, group: str, rng: np.random.Generator) -> None:
    """What a train reads (pages of persons) and what a re-sync reads (face IDs, then only the
    templates it lacks) are the group's templates, each exactly once."""
    expected: dict[str, np.ndarray] = {}
    for i in range(7):
        _, vectors, face_ids = enrol(store, group, f"P{i}", rng, faces=1 + i % 3)
        expected |= dict(zip(face_ids, vectors, strict=True))
    enrol(store, None, "Directory person", rng)  # not part of the group
    pages, after = [], None
    while True:
        page = store.faces.train_page(GroupScope(group), after, 3)
        if page.last is None:
            break
        pages.append(page.templates)
        after = page.last
    assert [len(set(p.owner_ids)) for p in pages] == [3, 3, 1]
    ids = tuple(f for p in pages for f in p.face_ids)
    assert_same_rows(ids, np.concatenate([p.matrix for p in pages]), expected)
    assert store.faces.ids(GroupScope(group)) == sorted(expected)
    assert len(store.faces.ids(DirectoryScope())) == 3
    wanted = sorted(expected)[::2]
    some = store.faces.templates(GroupScope(group), face_ids=[*wanted, "not-a-face"])
    assert_same_rows(some.face_ids, some.matrix, {f: expected[f] for f in wanted})
    with pytest.raises(PersonGroupNotFound):
        store.faces.train_page(GroupScope("nope"), None, 3)
    with pytest.raises(PersonGroupNotFound):
        store.faces.ids(GroupScope("nope"))


def test_data_version_changes_only_for_another_connections_commits(
    store: Store, group: str, rng: np.random.Generator, state_dir: Path, kek: crypto.Kek
) -> None:
    version = store.data_version()
    enrol(store, group, "Ada", rng)
    assert store.data_version() == version, "its own commits do not count"
    other = Store.open(state_dir, kek)
    try:
        assert store.data_version() == version, "opening (reading) changes nothing"
        enrol(other, group, "Grace", rng)
    finally:
        other.close()
    assert store.data_version() != version


def test_an_interrupted_training_is_recovered(store: Store, group: str, clock: ManualClock) -> None:
    store.groups.create("new", "Never trained", None, "group", MODEL)
    store.groups.create("idle", "Not training", None, "group", MODEL)
    store.groups.set_training(group, "succeeded")
    trained_at = store.groups.get(group).trained_at
    clock.advance(60)
    for group_id in (group, "new"):
        store.groups.set_training(group_id, "running")  # then the process was killed
    recovered = store.groups.recover_interrupted_training()
    assert [(g.group_id, g.train_status, g.train_message) for g in recovered] == [
        ("new", "failed", "interrupted"),
        (group, "succeeded", None),
    ]
    assert store.groups.get(group).trained_at == trained_at
    assert store.groups.get("idle").train_status == "notstarted"
    assert store.groups.recover_interrupted_training() == []


# -- face lists -----------------------------------------------------------------------------------


def test_face_lists(store: Store, rng: np.random.Generator, clock: ManualClock) -> None:
    created = store.face_lists.create("lobby", "Lobby", "camera 2", "list", MODEL)
    assert (created.list_id, created.kind, created.name, created.user_data, created.created) == (
        "lobby",
        "list",
        "Lobby",
        "camera 2",
        clock.now(),
    )
    store.face_lists.create("archive", "Archive", None, "large", MODEL)
    assert [f.list_id for f in store.face_lists.all()] == ["archive", "lobby"]
    with pytest.raises(FaceListExists, match="'lobby' already exists"):
        store.face_lists.create("lobby", "Again", None, "list", MODEL)

    face_ids = sorted(
        store.face_lists.add_face("lobby", template(rng), MODEL, f"visit {i}", {}) for i in range(3)
    )
    assert store.face_lists.face_ids("lobby") == face_ids
    assert store.face_lists.faces.count("lobby") == 3
    face = store.face_lists.faces.get(face_ids[0], "lobby")
    assert face.owner_id == "lobby"
    assert face.user_data is not None
    assert face.user_data.startswith("visit ")
    assert store.face_lists.faces.update(face_ids[0], "lobby", "updated").user_data == "updated"
    with pytest.raises(FaceNotFound):
        store.face_lists.faces.get(face_ids[0], "archive")
    store.face_lists.faces.delete(face_ids[0], "lobby")
    assert store.face_lists.face_ids("lobby") == face_ids[1:]


def test_face_list_not_found_names_the_id(store: Store, rng: np.random.Generator) -> None:
    for call in (
        lambda: store.face_lists.get("nope"),
        lambda: store.face_lists.face_ids("nope"),
        lambda: store.face_lists.add_face("nope", template(rng), MODEL, None, {}),
        lambda: store.face_lists.delete("nope"),
        lambda: store.faces.templates(ListScope("nope")),
    ):
        with pytest.raises(FaceListNotFound, match="'nope'"):
            call()


# -- dynamic person groups ----------------------------------------------------------------------------


def test_dynamic_groups(store: Store, group: str) -> None:
    ada, grace, edsger = (store.persons.create(None, n, None) for n in ("Ada", "Grace", "Edsger"))
    store.dynamic_groups.create("night-shift", "Night shift", "after 22:00", [ada, grace])
    dynamic = store.dynamic_groups.get("night-shift")
    assert (dynamic.dgroup_id, dynamic.name, dynamic.user_data) == (
        "night-shift",
        "Night shift",
        "after 22:00",
    )
    assert store.dynamic_groups.members("night-shift") == sorted([ada, grace])

    store.dynamic_groups.update_members("night-shift", add=[edsger, ada], remove=[grace])
    assert store.dynamic_groups.members("night-shift") == sorted([ada, edsger])
    store.dynamic_groups.update_members(
        "night-shift", remove=["not-a-member"]
    )  # removing a non-member: no-op
    assert store.dynamic_groups.members("night-shift") == sorted([ada, edsger])

    # only persons of the directory can be members
    in_group = store.persons.create(group, "In group", None)
    with pytest.raises(PersonNotFound, match=in_group):
        store.dynamic_groups.update_members("night-shift", add=[in_group])
    with pytest.raises(PersonNotFound, match=in_group):
        store.dynamic_groups.create("other", "Other", None, [in_group])
    assert store.dynamic_groups.members("night-shift") == sorted([ada, edsger])

    with pytest.raises(PersonGroupExists, match="'night-shift' already exists"):
        store.dynamic_groups.create("night-shift", "Again", None, [])

    # deleting a person removes its memberships (and nothing else)
    store.persons.delete(None, ada)
    assert store.dynamic_groups.members("night-shift") == [edsger]
    assert store.persons.get(None, grace).name == "Grace"

    store.dynamic_groups.delete("night-shift")
    with pytest.raises(DynamicPersonGroupNotFound):
        store.dynamic_groups.get("night-shift")
    assert store.persons.get(None, edsger).name == "Edsger"  # members are not deleted with the group
    assert store.db.execute("SELECT COUNT(*) FROM dynamic_members").fetchone()[0] == 0


def test_dynamic_group_not_found_names_the_id(store: Store) -> None:
    for call in (
        lambda: store.dynamic_groups.get("nope"),
        lambda: store.dynamic_groups.members("nope"),
        lambda: store.dynamic_groups.update_members("nope", add=[]),
        lambda: store.dynamic_groups.delete("nope"),
    ):
        with pytest.raises(DynamicPersonGroupNotFound, match="'nope'"):
            call()


# -- no plaintext on disk ---------------------------------------------------------------------------


def test_no_plaintext_on_disk(store: Store, group: str, rng: np.random.Generator, state_dir: Path) -> None:
    person_id = store.persons.create(group, NAME, USER_DATA)
    vectors = [template(rng) for _ in range(3)]
    for vector in vectors:
        store.persons.add_face(group, person_id, vector, MODEL, FACE_USER_DATA, {"q": 0.9})
    directory_person = store.persons.create(None, NAME + " II", USER_DATA)
    store.persons.add_face(None, directory_person, vectors[0] * 0.5, MODEL, None, {})
    store.face_lists.create("lobby", "Lobby", None, "list", MODEL)
    list_vector = template(rng)
    store.face_lists.add_face("lobby", list_vector, MODEL, FACE_USER_DATA, {})
    transient_vector = template(rng)
    store.transient.add(transient_vector, MODEL, 3600)
    renamed = store.persons.create(group, "Temporary Name Xylophonist", None)
    store.persons.update(group, renamed, "Final Name Vexillologist", None)

    needles = plaintext_needles(NAME, USER_DATA, [*vectors, vectors[0] * 0.5, list_vector, transient_vector])
    needles["face userData"] = FACE_USER_DATA.encode()
    needles["old name"] = b"Temporary Name Xylophonist"
    needles["new name"] = b"Final Name Vexillologist"

    open_files = disk_files(state_dir)
    assert len(open_files[DB_NAME + "-wal"]) > 0, "the WAL holds the writes while the store is open"
    # the scan does find what is stored in clear (IDs), so an empty result means something
    assert found_on_disk(state_dir, {"person ID": person_id.encode()})
    assert found_on_disk(state_dir, needles) == []

    store.close()
    assert found_on_disk(state_dir, {"person ID": person_id.encode()})
    assert found_on_disk(state_dir, needles) == []
    # and the data is there (encrypted)
    reopened = Store.open(state_dir, crypto.read_kek(state_dir.parent / "kek"))
    try:
        assert reopened.persons.get(group, person_id).name == NAME
        assert reopened.persons.get(group, renamed).name == "Final Name Vexillologist"
    finally:
        reopened.close()


# -- real deletion --------------------------------------------------------------------------------


def crowd(store: Store, group_id: str | None, rng: np.random.Generator, count: int) -> dict[str, str]:
    """Enough persons that the tables span many pages (deletes rebalance B-trees)."""
    names = {}
    for i in range(count):
        name = f"Bystander {i:03d}"
        person_id = store.persons.create(group_id, name, f"note {i}")
        for _ in range(3):
            store.persons.add_face(group_id, person_id, template(rng), MODEL, f"face note {i}", {})
        names[person_id] = name
    return names


def test_delete_person_leaves_no_byte_of_it(
    store: Store, group: str, rng: np.random.Generator, state_dir: Path, clock: ManualClock
) -> None:
    others = crowd(store, group, rng, 30)
    victim = store.persons.create(group, NAME, USER_DATA)
    vectors = [template(rng) for _ in range(3)]
    victim_faces = [store.persons.add_face(group, victim, v, MODEL, FACE_USER_DATA, {}) for v in vectors]
    others |= crowd(store, group, rng, 10)
    secrets = person_secrets(store, victim)
    key_id = key_id_of(store, victim)
    assert found_on_disk(state_dir, {"key_id": secrets["key_id"]}), "the scan sees the stored key ID"
    keys_before = store.db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0]

    clock.advance(100)
    receipt = store.persons.delete(group, victim)

    assert found_on_disk(state_dir, secrets) == []
    assert found_on_disk(state_dir, plaintext_needles(NAME, USER_DATA, vectors)) == []
    db = store.db
    assert db.execute("SELECT COUNT(*) FROM faces WHERE person_id = ?", (victim,)).fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0] == keys_before - 1
    assert db.execute("SELECT COUNT(*) FROM persons WHERE person_id = ?", (victim,)).fetchone()[0] == 0
    everyone = store.faces.templates(GroupScope(group))
    assert victim not in everyone.owner_ids
    assert not set(victim_faces) & set(everyone.face_ids)
    assert len(everyone.face_ids) == 3 * len(others)

    assert receipt.deleted == {"persons": 1, "faces": 3}
    assert receipt.targets == {"personId": victim, "personGroupId": group}
    assert receipt.time == clock.now()
    assert receipt.device_public_key == store.device_public_key
    assert receipt.shredded_keys_sha256 == hashlib.sha256(key_id.encode()).hexdigest()
    assert receipt_json(receipt)["signature"] == receipt.signature
    assert_receipt_verifies(receipt)

    store.close()
    assert found_on_disk(state_dir, secrets) == []
    reopened = Store.open(state_dir, crypto.read_kek(state_dir.parent / "kek"))
    try:
        assert {p.person_id: p.name for p in reopened.persons.page(group)} == others
    finally:
        reopened.close()


def test_delete_directory_person_leaves_no_byte_of_it(
    store: Store, rng: np.random.Generator, state_dir: Path
) -> None:
    crowd(store, None, rng, 8)
    victim, vectors, _ = enrol(store, None, NAME, rng, faces=3, user_data=USER_DATA)
    store.dynamic_groups.create("dg", "DG", None, [victim])
    secrets = person_secrets(store, victim)
    receipt = store.persons.delete(None, victim)
    assert receipt.targets == {"personId": victim}
    assert receipt.deleted == {"persons": 1, "faces": 3}
    assert_receipt_verifies(receipt)
    assert found_on_disk(state_dir, secrets) == []
    assert store.dynamic_groups.members("dg") == []
    assert victim not in store.faces.templates(DirectoryScope()).owner_ids
    store.close()
    assert found_on_disk(state_dir, secrets) == []
    assert found_on_disk(state_dir, plaintext_needles(NAME, USER_DATA, vectors)) == []


def test_delete_face_leaves_no_byte_of_its_template(
    store: Store, group: str, rng: np.random.Generator, state_dir: Path
) -> None:
    crowd(store, group, rng, 5)
    person_id, _, face_ids = enrol(store, group, "Ada", rng, faces=3)
    (blob,) = store.db.execute("SELECT template FROM faces WHERE face_id = ?", (face_ids[1],)).fetchone()
    store.persons.faces.delete(face_ids[1], person_id)
    assert found_on_disk(state_dir, {"template ciphertext": bytes(blob)}) == []
    assert face_ids[1] not in store.faces.templates(GroupScope(group)).face_ids
    assert set(store.persons.get(group, person_id).face_ids) == {face_ids[0], face_ids[2]}


def test_delete_group_shreds_every_persons_key(
    store: Store, group: str, rng: np.random.Generator, state_dir: Path, clock: ManualClock
) -> None:
    store.groups.create("kept", "Kept", None, "group", MODEL)
    kept = crowd(store, "kept", rng, 5)
    members = crowd(store, group, rng, 12)
    named, vectors, _ = enrol(store, group, NAME, rng, faces=3, user_data=USER_DATA)
    secrets: dict[str, bytes] = {}
    key_ids = []
    for person_id in [*members, named]:
        secrets |= {f"{person_id} {k}": v for k, v in person_secrets(store, person_id).items()}
        key_ids.append(key_id_of(store, person_id))
    directory_person = store.persons.create(None, "Directory", None)
    keys_before = store.db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0]

    receipt = store.groups.delete(group)

    assert receipt.operation == "delete_person_group"
    assert receipt.targets == {"personGroupId": group}
    assert receipt.deleted == {"persons": 13, "faces": 39}
    assert receipt.time == clock.now()
    expected_digest = hashlib.sha256("".join(sorted(key_ids)).encode()).hexdigest()
    assert receipt.shredded_keys_sha256 == expected_digest
    assert_receipt_verifies(receipt)
    db = store.db
    assert db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0] == keys_before - 13
    placeholders = ",".join("?" * len(key_ids))
    assert db.execute(
        f"SELECT COUNT(*) FROM data_keys WHERE key_id IN ({placeholders})", key_ids
    ).fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM persons WHERE group_id = ?", (group,)).fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 15  # the kept group's faces
    assert found_on_disk(state_dir, secrets) == []
    assert found_on_disk(state_dir, plaintext_needles(NAME, USER_DATA, vectors)) == []
    assert {p.person_id: p.name for p in store.persons.page("kept")} == kept
    assert store.persons.get(None, directory_person).name == "Directory"
    store.close()
    assert found_on_disk(state_dir, secrets) == []


def test_delete_face_list_shreds_its_key(store: Store, rng: np.random.Generator, state_dir: Path) -> None:
    store.face_lists.create("lobby", "Lobby", None, "large", MODEL)
    store.face_lists.create("kept", "Kept", None, "list", MODEL)
    vectors = [template(rng) for _ in range(6)]
    for vector in vectors:
        store.face_lists.add_face("lobby", vector, MODEL, FACE_USER_DATA, {})
    kept_vector = template(rng)
    kept_face = store.face_lists.add_face("kept", kept_vector, MODEL, None, {})
    secrets = list_secrets(store, "lobby")
    (key_id,) = store.db.execute("SELECT key_id FROM face_lists WHERE list_id = 'lobby'").fetchone()

    receipt = store.face_lists.delete("lobby")

    assert receipt.operation == "delete_face_list"
    assert receipt.targets == {"faceListId": "lobby"}
    assert receipt.deleted == {"faces": 6}
    assert receipt.shredded_keys_sha256 == hashlib.sha256(str(key_id).encode()).hexdigest()
    assert_receipt_verifies(receipt)
    with pytest.raises(FaceListNotFound):
        store.face_lists.get("lobby")
    assert store.db.execute("SELECT COUNT(*) FROM faces WHERE list_id = 'lobby'").fetchone()[0] == 0
    assert store.db.execute("SELECT COUNT(*) FROM data_keys WHERE owner = 'list:lobby'").fetchone()[0] == 0
    assert found_on_disk(state_dir, secrets) == []
    assert found_on_disk(state_dir, plaintext_needles("unused-name", "unused-data", vectors)) == []
    kept = store.faces.templates(ListScope("kept"))
    assert_same_rows(kept.face_ids, kept.matrix, {kept_face: kept_vector})


def test_receipts_stay_verifiable_with_the_same_device_key_after_reopening(
    store: Store, group: str, rng: np.random.Generator, state_dir: Path, kek: crypto.Kek
) -> None:
    first, _, _ = enrol(store, group, "Ada", rng)
    second, _, _ = enrol(store, group, "Grace", rng)
    receipt = store.persons.delete(group, first)
    store.close()
    reopened = Store.open(state_dir, kek)
    try:
        assert reopened.device_public_key == receipt.device_public_key
        later = reopened.persons.delete(group, second)
        assert later.device_public_key == receipt.device_public_key
        assert_receipt_verifies(later)
        payload = json.loads(later.payload())
        assert payload["deleted"] == {"persons": 1, "faces": 3}
    finally:
        reopened.close()


# -- ciphertexts are bound to their rows ----------------------------------------------------------------


def test_a_template_copied_to_another_persons_face_fails(
    store: Store, group: str, rng: np.random.Generator
) -> None:
    _, _, (ada_face, *_) = enrol(store, group, "Ada", rng)
    _, _, (grace_face, *_) = enrol(store, group, "Grace", rng)
    store.db.execute(
        "UPDATE faces SET template = (SELECT template FROM faces WHERE face_id = ?) WHERE face_id = ?",
        (ada_face, grace_face),
    )
    with pytest.raises(DecryptionFailed, match="a template failed authentication"):
        store.faces.templates(GroupScope(group))


def test_templates_swapped_between_faces_of_one_person_fail(store: Store, rng: np.random.Generator) -> None:
    _, _, (first, second, _) = enrol(store, None, "Ada", rng)
    db = store.db
    (a,) = db.execute("SELECT template FROM faces WHERE face_id = ?", (first,)).fetchone()
    (b,) = db.execute("SELECT template FROM faces WHERE face_id = ?", (second,)).fetchone()
    db.execute("UPDATE faces SET template = ? WHERE face_id = ?", (b, first))
    db.execute("UPDATE faces SET template = ? WHERE face_id = ?", (a, second))
    with pytest.raises(DecryptionFailed):
        store.faces.templates(DirectoryScope())


def test_a_list_template_copied_to_a_persons_face_fails(
    store: Store, group: str, rng: np.random.Generator
) -> None:
    _, _, (face_id, *_) = enrol(store, group, "Ada", rng)
    store.face_lists.create("lobby", "Lobby", None, "list", MODEL)
    list_face = store.face_lists.add_face("lobby", template(rng), MODEL, None, {})
    store.db.execute(
        "UPDATE faces SET template = (SELECT template FROM faces WHERE face_id = ?) WHERE face_id = ?",
        (list_face, face_id),
    )
    with pytest.raises(DecryptionFailed):
        store.faces.templates(GroupScope(group))
    assert store.faces.templates(ListScope("lobby")).face_ids == (list_face,)


def test_a_changed_model_id_fails(store: Store, group: str, rng: np.random.Generator) -> None:
    enrol(store, group, "Ada", rng, faces=1)
    store.db.execute("UPDATE faces SET model_id = 'another-model'")
    with pytest.raises(DecryptionFailed):
        store.faces.templates(GroupScope(group))


def test_names_swapped_between_persons_fail(store: Store, group: str) -> None:
    ada = store.persons.create(group, "Ada", "a")
    grace = store.persons.create(group, "Grace", "g")
    db = store.db
    (ada_name,) = db.execute("SELECT name FROM persons WHERE person_id = ?", (ada,)).fetchone()
    (grace_name,) = db.execute("SELECT name FROM persons WHERE person_id = ?", (grace,)).fetchone()
    db.execute("UPDATE persons SET name = ? WHERE person_id = ?", (grace_name, ada))
    db.execute("UPDATE persons SET name = ? WHERE person_id = ?", (ada_name, grace))
    for person_id in (ada, grace):
        with pytest.raises(DecryptionFailed, match="a person's name failed authentication"):
            store.persons.get(group, person_id)
    with pytest.raises(DecryptionFailed):
        store.persons.page(group)


def test_user_data_copied_to_another_person_fails(store: Store, group: str) -> None:
    ada = store.persons.create(group, "Ada", "secret a")
    grace = store.persons.create(group, "Grace", "secret g")
    store.db.execute(
        "UPDATE persons SET user_data = (SELECT user_data FROM persons WHERE person_id = ?)"
        " WHERE person_id = ?",
        (ada, grace),
    )
    with pytest.raises(DecryptionFailed, match="userData"):
        store.persons.get(group, grace)
    assert store.persons.get(group, ada).user_data == "secret a"


def test_a_person_moved_to_another_group_by_sql_fails(store: Store, group: str) -> None:
    store.groups.create("other", "Other", None, "group", MODEL)
    ada = store.persons.create(group, "Ada", None)
    store.db.execute("UPDATE persons SET group_id = 'other' WHERE person_id = ?", (ada,))
    with pytest.raises(DecryptionFailed):
        store.persons.get("other", ada)


def test_a_wrapped_key_copied_to_another_owner_fails(
    store: Store, group: str, rng: np.random.Generator
) -> None:
    ada, _, _ = enrol(store, group, "Ada", rng)
    grace, _, _ = enrol(store, group, "Grace", rng)
    store.db.execute(
        "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys WHERE key_id = ?) WHERE key_id = ?",
        (key_id_of(store, ada), key_id_of(store, grace)),
    )
    with pytest.raises(DecryptionFailed, match="wrapped data key"):
        store.persons.get(group, grace)
    with pytest.raises(DecryptionFailed, match="wrapped data key"):
        store.faces.templates(GroupScope(group))
    assert store.persons.get(group, ada).name == "Ada"


def test_a_person_pointed_at_another_persons_key_fails(store: Store, group: str) -> None:
    ada = store.persons.create(group, "Ada", None)
    grace = store.persons.create(group, "Grace", None)
    store.db.execute("UPDATE persons SET key_id = ? WHERE person_id = ?", (key_id_of(store, ada), grace))
    with pytest.raises(DecryptionFailed):
        store.persons.get(group, grace)


# -- a wrong key fails cleanly and changes nothing -------------------------------------------------------


def db_and_wal(state_dir: Path) -> dict[str, tuple[int, str]]:
    """Size and sha256 of the database and of its WAL (absent and empty are the same: nothing to
    replay)."""
    wal = state_dir / (DB_NAME + "-wal")
    files = {"database": (state_dir / DB_NAME).read_bytes(), "WAL": wal.read_bytes() if wal.exists() else b""}
    return {name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()}


def other_key(tmp_path: Path) -> crypto.Kek:
    return crypto.create_key_file(tmp_path / "other.kek")


def attempt_wrong_key(state_dir: Path, wrong: crypto.Kek, expected_key_id: str) -> None:
    with pytest.raises(WrongKey) as excinfo:
        Store.open(state_dir, wrong)
    message = str(excinfo.value)
    assert message.startswith("WrongKey: ")
    assert wrong.source in message
    assert wrong.key_id in message
    assert expected_key_id in message
    assert "nothing was changed" in message
    del excinfo
    gc.collect()  # whatever the failed attempt left open is closed now


def test_wrong_key_after_a_clean_close(
    store: Store, group: str, rng: np.random.Generator, state_dir: Path, kek: crypto.Kek, tmp_path: Path
) -> None:
    person_id, _, _ = enrol(store, group, NAME, rng)
    store.close()
    before = db_and_wal(state_dir)
    attempt_wrong_key(state_dir, other_key(tmp_path), kek.key_id)
    assert db_and_wal(state_dir) == before
    reopened = Store.open(state_dir, kek)
    try:
        assert reopened.persons.get(group, person_id).name == NAME
        assert reopened.faces.templates(GroupScope(group)).matrix.shape == (3, TEMPLATE_DIM)
    finally:
        reopened.close()


def test_wrong_key_while_the_directory_is_open_elsewhere(
    store: Store, group: str, rng: np.random.Generator, state_dir: Path, kek: crypto.Kek, tmp_path: Path
) -> None:
    person_id, _, _ = enrol(store, group, NAME, rng)
    before = db_and_wal(state_dir)
    assert before["WAL"][0] > 0, "the WAL holds committed transactions"
    attempt_wrong_key(state_dir, other_key(tmp_path), kek.key_id)
    assert db_and_wal(state_dir) == before
    assert store.persons.get(group, person_id).name == NAME


def test_wrong_key_after_a_power_cut_changes_nothing(
    store: Store, group: str, rng: np.random.Generator, state_dir: Path, kek: crypto.Kek, tmp_path: Path
) -> None:
    """The files as a power cut leaves them (committed transactions still in the WAL, no -shm):
    a wrong key must not checkpoint the WAL into the database nor delete it."""
    person_id, _, _ = enrol(store, group, NAME, rng)
    image = tmp_path / "power-cut"
    image.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(state_dir / (DB_NAME + suffix), image / (DB_NAME + suffix))
    before = db_and_wal(image)
    assert before["WAL"][0] > 0, "the WAL holds committed transactions"
    attempt_wrong_key(image, other_key(tmp_path), kek.key_id)
    assert db_and_wal(image) == before
    recovered = Store.open(image, kek)
    try:
        assert recovered.persons.get(group, person_id).name == NAME
    finally:
        recovered.close()


def test_wrong_key_on_a_fresh_directory_is_not_created_twice(
    state_dir: Path, kek: crypto.Kek, tmp_path: Path
) -> None:
    """The first key used creates the directory; any other is refused from then on."""
    Store.open(state_dir, kek).close()
    attempt_wrong_key(state_dir, other_key(tmp_path), kek.key_id)
    attempt_wrong_key(state_dir, crypto.Kek(bytes(32), "an all-zero key"), kek.key_id)
