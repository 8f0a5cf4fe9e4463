"""Training a large person group while the door searches it (edged/service/faces.py): the door's
search never waits for the train, the old index serves until the new one is swapped in, and changes
made while the new index is being built are in it.

A real encrypted SQLite directory with 40,000 synthetic templates (10,000 persons) plus the
astronaut enrolled through the real pipeline. Nothing is timed: a second SQLite connection holds the
database's write lock while the door searches, so the train cannot finish (it cannot commit
``succeeded``) until the search has returned."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from edged.directory.crypto import create_key_file, read_kek
from edged.directory.scope import GroupScope
from edged.directory.sealed import TEMPLATE_DIM
from edged.directory.store import DB_NAME, Store
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.service.policy import Caller
from edged.service.settings import DirectorySettings
from edged.types import Face, ImageRGB

MANAGER = Caller("cli", "manager")

PERSONS = 10_000
FACES_EACH = 4
WAIT_S = 120.0  # a deadline for things that must happen, never a measure of speed


@dataclass
class Big:
    service: FaceService
    state: Path
    eileen: str


def synthetic(rng: np.random.Generator, n: int) -> np.ndarray:
    """Templates shaped like real ones (norm ≈ 1.4), far from any real face."""
    x = rng.standard_normal((n, TEMPLATE_DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True) * 1.4).astype(np.float32)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A directory with the large group ``big`` of PERSONS × FACES_EACH synthetic templates, written
    through the store (synchronous=OFF on the seeding connection only: seeding speed)."""
    root = tmp_path_factory.mktemp("big")
    key_file = root / "kek"
    state = root / "state"
    seeder = Store.open(state, create_key_file(key_file))
    try:
        seeder.db.execute("PRAGMA synchronous = OFF")
        seeder.groups.create("big", "Big", None, "large", "dlib_resnet_v1_int8.tflite")
        rng = np.random.default_rng(11)
        vectors = synthetic(rng, PERSONS * FACES_EACH)
        for i in range(PERSONS):
            person = seeder.persons.create("big", f"person {i}", None)
            for j in range(FACES_EACH):
                seeder.persons.add_face(
                    "big", person, vectors[i * FACES_EACH + j], "dlib_resnet_v1_int8.tflite", None, {}
                )
    finally:
        seeder.close()
    return key_file, state


@pytest.fixture
def big(
    seeded: tuple[Path, Path], tmp_path: Path, pipeline: FacePipeline, astronaut: ImageRGB
) -> Iterator[Big]:
    """A copy of the seeded directory, the astronaut added, trained once (the door's index cached)."""
    key_file, seeded_state = seeded
    state = tmp_path / "state"
    state.mkdir()
    for path in seeded_state.iterdir():
        (state / path.name).write_bytes(path.read_bytes())
        (state / path.name).chmod(0o600)
    store = Store.open(state, read_kek(key_file))
    settings = DirectorySettings(enroll_requires_quality=False)  # the cameraman looks down
    service = FaceService(pipeline, store, settings, pipeline.embedder.model.path.name)
    eileen = service.changes.create_person(MANAGER, "big", "Eileen Collins")
    service.changes.add_person_face(MANAGER, "big", eileen, astronaut)
    assert service.changes.train(MANAGER, "big").train_status == "succeeded"
    try:
        yield Big(service, state, eileen)
    finally:
        store.close()


def status(db: sqlite3.Connection) -> str:
    return str(db.execute("SELECT train_status FROM person_groups WHERE group_id = 'big'").fetchone()[0])


def start_train(service: FaceService) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(service.changes.train(MANAGER, "big"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="train", daemon=True)
    thread.start()
    return thread, outcome


def wait_running(db: sqlite3.Connection) -> None:
    deadline = time.monotonic() + WAIT_S
    while status(db) != "running":
        assert time.monotonic() < deadline, "the train never reported running"
        time.sleep(0.002)


def test_the_door_searches_while_a_large_group_trains(big: Big, astronaut_face: Face) -> None:
    service = big.service
    probe = astronaut_face.embedding
    assert probe is not None
    old = service.trained_index("big")
    assert len(old) == PERSONS * FACES_EACH + 1
    assert [m.owner_id for m in service.search_door("big", probe, 1, 0.4)] == [big.eileen]

    other = sqlite3.connect(big.state / DB_NAME, isolation_level=None, timeout=WAIT_S)
    try:
        for _ in range(5):
            trainer, outcome = start_train(service)
            wait_running(other)
            # Another connection takes the write lock: from here the train cannot commit its end
            # (``succeeded``) until this connection lets go, i.e. until after the door's search.
            other.execute("BEGIN IMMEDIATE")
            if status(other) == "running":
                break
            other.execute("ROLLBACK")  # this train was quicker than us: try again
            trainer.join(WAIT_S)
        else:
            pytest.fail("every train finished before the write lock was taken")
        try:
            during = service.search_door("big", probe, 1, 0.4)  # the door, while the train runs
            assert status(other) == "running"
        finally:
            other.execute("ROLLBACK")
        trainer.join(WAIT_S)
    finally:
        other.close()
    assert not trainer.is_alive()
    (result,) = outcome
    # The train could only succeed after the write lock was released, which was after the search
    # returned: the search did not wait for the train (before the fix it waited on the service lock
    # the train held, and the train, unable to commit, failed with "database is locked").
    assert not isinstance(result, BaseException), f"the train failed: {result!r}"
    assert service.get_group("big").train_status == "succeeded"
    assert [m.owner_id for m in during] == [big.eileen], "the old index served during the train"
    new = service.trained_index("big")
    assert new is not old, "the new index was swapped in"
    assert len(new) == len(old)
    assert [m.owner_id for m in service.search_door("big", probe, 1, 0.4)] == [big.eileen]


def test_changes_during_the_train_are_in_the_new_index(big: Big, astronaut_face: Face) -> None:
    """The build reads the group page by page, so a person deleted or enrolled while it runs may be
    in a page already read, or not yet; the re-sync before the swap makes the new index exactly the
    stored faces, whichever it was."""
    service = big.service
    probe = astronaut_face.embedding
    assert probe is not None
    cameraman = np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))
    other = sqlite3.connect(big.state / DB_NAME, isolation_level=None, timeout=WAIT_S)
    try:
        trainer, outcome = start_train(service)
        wait_running(other)
        service.changes.delete_person(MANAGER, "big", big.eileen)  # between two pages, or after the swap
        newcomer = service.changes.create_person(MANAGER, "big", "the cameraman")
        service.changes.add_person_face(MANAGER, "big", newcomer, cameraman)
        trainer.join(WAIT_S)
    finally:
        other.close()
    (result,) = outcome
    assert not isinstance(result, BaseException), f"the train failed: {result!r}"
    index = service.trained_index("big")
    stored = service.store.faces.ids(GroupScope("big"))
    assert len(stored) == PERSONS * FACES_EACH + 1
    assert index.diff_faces(stored) == ([], []), "the index holds exactly the stored faces"
    assert big.eileen not in index.owners() and newcomer in index.owners()
    assert all(m.owner_id != big.eileen for m in service.search_door("big", probe, 5, None))
