"""Cards for verify-mode claims: the directory keeps only a keyed hash of a card number (HMAC-SHA256
under a card key that the operator's KEK wraps), maps it to a person, and deletes it with the
person for real. The migration adds the table to an existing directory. The service checks roles and
audits; the door worker's search follows retraining and waits for index changes, not the service lock.

Real SQLite files, real key files, the real pipeline for the service tests."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from directory_helpers import MODEL, found_on_disk, template

from edged.clock import ManualClock
from edged.directory import crypto
from edged.directory import store as store_module
from edged.directory.schema import MIGRATIONS
from edged.directory.store import DB_NAME, Store
from edged.errors import (
    BadArgument,
    CardNotFound,
    Forbidden,
    PersonGroupNotFound,
    PersonGroupNotTrained,
    PersonNotFound,
)
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.service.policy import Caller
from edged.service.settings import DirectorySettings
from edged.types import ImageRGB

MANAGER = Caller("cli", "manager")

CARD = "04A1B2C3D4E5F6"
OTHER_CARD = "998877665544"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(99)


@pytest.fixture
def person(store: Store, rng: np.random.Generator) -> str:
    store.groups.create("staff", "Staff", None, "group", MODEL)
    person_id = store.persons.create("staff", "Ada", None)
    store.persons.add_face("staff", person_id, template(rng), MODEL, None, {})
    return person_id


def card_hashes(store: Store) -> list[bytes]:
    return [bytes(r[0]) for r in store.db.execute("SELECT card_hash FROM cards")]


# -- store --------------------------------------------------------------------------------------------


def test_a_card_maps_to_its_person(store: Store, person: str) -> None:
    assert store.cards.person_for(CARD) is None
    ref = store.cards.set(CARD, "staff", person)
    assert store.cards.person_for(CARD) == person
    assert store.cards.person_for(f"  {CARD.lower()}\n") == person, "readers print hex in either case"
    assert store.cards.person_for(OTHER_CARD) is None
    assert store.cards.count(person) == 1
    assert len(ref) == 16 and CARD.lower() not in ref


def test_set_card_moves_a_card_to_another_person(store: Store, person: str) -> None:
    other = store.persons.create("staff", "Bea", None)
    store.cards.set(CARD, "staff", person)
    store.cards.set(CARD, "staff", other)
    assert store.cards.person_for(CARD) == other
    assert (store.cards.count(person), store.cards.count(other)) == (0, 1)


def test_card_errors(store: Store, person: str) -> None:
    with pytest.raises(PersonNotFound):
        store.cards.set(CARD, "staff", "no-such-person")
    with pytest.raises(PersonNotFound):
        store.cards.set(CARD, None, person)  # she is in staff, not in the directory
    with pytest.raises(CardNotFound):
        store.cards.delete(CARD)
    for bad in ("", "   ", "x" * 129, "04\x00A1"):
        with pytest.raises(BadArgument, match="printable characters") as excinfo:
            store.cards.set(bad, "staff", person)
        assert bad.strip() == "" or bad not in str(excinfo.value)
    store.cards.set(CARD, "staff", person)
    store.cards.delete(CARD.lower())
    assert store.cards.person_for(CARD) is None


def test_only_a_keyed_hash_is_stored(
    store: Store, person: str, state_dir: Path, tmp_path: Path, clock: ManualClock, kek: crypto.Kek
) -> None:
    store.cards.set(CARD, "staff", person)
    store.checkpoint()
    assert found_on_disk(state_dir, {"card": CARD.encode(), "card (lower)": CARD.lower().encode()}) == []
    (stored,) = card_hashes(store)
    assert stored != hashlib.sha256(CARD.lower().encode()).digest(), "a plain hash can be brute-forced"
    other_kek = crypto.create_key_file(tmp_path / "other.key")
    other = Store.open(tmp_path / "other-state", other_kek, clock)
    try:
        other.groups.create("staff", "Staff", None, "group", MODEL)
        other.cards.set(CARD, "staff", other.persons.create("staff", "Ada", None))
        assert card_hashes(other) != [stored], "each directory has its own card key"
    finally:
        other.close()
    (wrapped,) = store.db.execute("SELECT value FROM meta WHERE key = 'card_key'").fetchone()
    card_key = crypto.unwrap_key(kek, bytes(wrapped), b"cards")
    assert stored == hmac.new(card_key, CARD.lower().encode(), hashlib.sha256).digest()


def test_deleting_the_person_deletes_her_cards_for_real(store: Store, person: str, state_dir: Path) -> None:
    store.cards.set(CARD, "staff", person)
    store.cards.set(OTHER_CARD, "staff", person)
    hashes = card_hashes(store)
    receipt = store.persons.delete("staff", person)
    assert receipt.deleted == {"persons": 1, "faces": 1, "cards": 2}
    assert store.cards.person_for(CARD) is None and card_hashes(store) == []
    assert found_on_disk(state_dir, {f"hash {i}": h for i, h in enumerate(hashes)}) == []


def test_deleting_the_group_deletes_its_cards(store: Store, person: str) -> None:
    store.cards.set(CARD, "staff", person)
    receipt = store.groups.delete("staff")
    assert receipt.deleted["cards"] == 1
    assert card_hashes(store) == []


def test_cards_survive_reopening_and_key_rotation(
    store: Store, person: str, state_dir: Path, tmp_path: Path
) -> None:
    store.cards.set(CARD, "staff", person)
    new = crypto.create_key_file(tmp_path / "new.key")
    store.keys.rotate(new)
    assert store.cards.person_for(CARD) == person
    store.close()
    reopened = Store.open(state_dir, new)
    try:
        assert reopened.cards.person_for(CARD) == person
    finally:
        reopened.close()


def test_the_migration_adds_cards_to_an_existing_directory(
    state_dir: Path, kek: crypto.Kek, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:  # a directory written by an edged that knew schema version 1
        m.setattr(store_module, "MIGRATIONS", MIGRATIONS[:1])
        old = Store.open(state_dir, kek)
        old.groups.create("staff", "Staff", None, "group", MODEL)
        person_id = old.persons.create("staff", "Ada", None)
        old.close()
    with sqlite3.connect(state_dir / DB_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'cards'").fetchone() is None
    db.close()
    store = Store.open(state_dir, kek)
    try:
        assert store.db.user_version() == len(MIGRATIONS)
        assert store.persons.get("staff", person_id).name == "Ada"
        store.cards.set(CARD, "staff", person_id)
        assert store.cards.person_for(CARD) == person_id
        foreign = store.db.execute("PRAGMA foreign_key_list(cards)").fetchall()
        assert [(f[2], f[3], f[6]) for f in foreign] == [("persons", "person_id", "CASCADE")]
    finally:
        store.close()


# -- service ------------------------------------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path, pipeline: FacePipeline, clock: ManualClock) -> Iterator[FaceService]:
    kek = crypto.create_key_file(tmp_path / "service.key")
    store = Store.open(tmp_path / "service-state", kek, clock)
    yield FaceService(pipeline, store, DirectorySettings(), "dlib_resnet_v1_int8.tflite")
    store.close()


@pytest.fixture
def eileen(service: FaceService, astronaut: ImageRGB) -> str:
    service.changes.create_group(MANAGER, "staff", "Staff")
    person_id = service.changes.create_person(MANAGER, "staff", "Eileen")
    service.changes.add_person_face(MANAGER, "staff", person_id, astronaut)
    service.changes.train(MANAGER, "staff")
    return person_id


def test_service_cards_are_role_checked_and_audited(service: FaceService, eileen: str) -> None:
    with pytest.raises(Forbidden):
        service.changes.set_card(Caller("door-1", "recognizer"), CARD, eileen, "staff")
    with pytest.raises(Forbidden):
        service.changes.delete_card(Caller("door-1", "recognizer"), CARD)
    assert service.person_for_card(CARD) is None
    ref = service.changes.set_card(Caller("ops", "manager"), CARD, eileen, "staff")
    assert service.person_for_card(CARD.lower()) == eileen
    assert service.person_for_card("") is None, "a malformed number is simply nobody's"
    assert service.has_person("staff", eileen) and not service.has_person(None, eileen)
    assert service.changes.delete_card(Caller("ops", "admin"), CARD) == ref
    records = list(service.store.audit.records())
    tail = [(r.operation, r.actor, r.result) for r in records[-4:]]
    assert tail == [
        ("set_card", "door-1", "refused: role"),
        ("delete_card", "door-1", "refused: role"),
        ("set_card", "ops", "ok"),
        ("delete_card", "ops", "ok"),
    ]
    assert records[-2].targets == {"personId": eileen, "personGroupId": "staff", "card": ref}
    assert all(CARD.lower() not in str(r.as_json()).lower() for r in records)
    assert service.store.audit.verify().intact


def test_search_door_follows_the_directory(service: FaceService, eileen: str, astronaut: ImageRGB) -> None:
    probe = service.pipeline.faces(astronaut)[0].embedding
    assert probe is not None
    (match,) = service.search_door("staff", probe, 3, 0.6)
    assert match.owner_id == eileen and match.distance < 0.1
    assert service.search_door("staff", probe, 1, 0.6, owners={"someone-else"}) == []
    assert service.door_sizes(["staff", "nothing"]) == {
        "staff": {"persons": 1, "faces": 1},
        "nothing": {"persons": None, "faces": None},
    }
    service.changes.train(
        MANAGER, "staff"
    )  # a new index object: the door must search the new one, not a stale copy
    service.changes.delete_person(MANAGER, "staff", eileen)
    assert service.search_door("staff", probe, 3, 0.6) == []
    assert service.door_sizes(["staff"]) == {"staff": {"persons": 0, "faces": 0}}
    service.changes.delete_group(MANAGER, "staff")
    with pytest.raises(PersonGroupNotFound):
        service.search_door("staff", probe, 3, 0.6)
    service.changes.create_group(MANAGER, "staff", "Staff again")
    with pytest.raises(PersonGroupNotTrained):
        service.search_door("staff", probe, 3, 0.6)


def test_search_door_waits_for_a_change_to_the_index_not_for_the_service_lock(
    service: FaceService, eileen: str, astronaut: ImageRGB
) -> None:
    """A long directory operation holds the service lock (a train of a large group, a re-sync after
    the CLI wrote): the worker's search does not wait for it. A change to the index itself (an
    enrolment or a deletion holds the index's lock) is never searched half-made: the search waits."""
    probe = service.pipeline.faces(astronaut)[0].embedding
    assert probe is not None
    results: list[int] = []
    done = threading.Event()

    def search() -> None:
        results.append(len(service.search_door("staff", probe, 3, 0.6)))
        done.set()

    with service.access.lock:
        worker = threading.Thread(target=search)
        worker.start()
        assert done.wait(30.0), "the search waited for the service lock"
    worker.join()
    done.clear()
    with service.trained_index("staff")._lock:
        worker = threading.Thread(target=search)
        worker.start()
        assert not done.wait(0.3), "the search ran while the index was being changed"
    assert done.wait(5.0)
    worker.join()
    assert results == [1, 1]
