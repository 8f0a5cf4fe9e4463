"""Retention of transient faces (face IDs from detection): usable until their time-to-live runs out,
then a clear ``FaceNotFound`` (expired), and the reaper deletes the rows and their data keys so no
byte of the template stays in the database or its WAL. A manual clock drives time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from directory_helpers import MODEL, found_on_disk, int8_bytes, template

from edged.clock import ManualClock
from edged.directory import crypto
from edged.directory.scope import DirectoryScope, ListScope
from edged.directory.sealed import TEMPLATE_DIM
from edged.directory.store import Store
from edged.errors import FaceNotFound

DAY = 86_400.0


def transient_secrets(store: Store, face_id: str, vector: np.ndarray) -> dict[str, bytes]:
    """The stored ciphertext, wrapped key and key ID of a transient face, and its plaintext forms."""
    key_id, blob = store.db.execute(
        "SELECT key_id, template FROM transient_faces WHERE face_id = ?", (face_id,)
    ).fetchone()
    (wrapped,) = store.db.execute("SELECT wrapped FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()
    return {
        "key_id": str(key_id).encode(),
        "template ciphertext": bytes(blob),
        "wrapped data key": bytes(wrapped),
        "template float32": np.asarray(vector, "<f4").tobytes(),
        "template int8": int8_bytes(vector),
    }


def data_key_owners(store: Store) -> set[str]:
    return {r[0] for r in store.db.execute("SELECT owner FROM data_keys")}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_a_transient_face_is_usable_until_its_ttl(
    store: Store, clock: ManualClock, rng: np.random.Generator
) -> None:
    vector = template(rng)
    added = store.transient.add(vector, MODEL, 600)
    face_id, expires = added.face_id, added.expires
    assert expires == clock.now() + 600
    got = store.transient.get(face_id)
    assert got.dtype == np.float32
    assert got.tobytes() == vector.tobytes()
    clock.advance(599)
    assert store.transient.get(face_id).tobytes() == vector.tobytes()
    assert store.transient.count() == 1


def test_an_expired_face_is_not_found_and_gone(
    store: Store, clock: ManualClock, rng: np.random.Generator, state_dir: Path
) -> None:
    vector = template(rng)
    face_id = store.transient.add(vector, MODEL, 60).face_id
    secrets = transient_secrets(store, face_id, vector)
    clock.advance(60)
    with pytest.raises(FaceNotFound, match="expired") as excinfo:
        store.transient.get(face_id)
    assert face_id in str(excinfo.value)
    # the failed lookup reaped it: a second one still says what happened
    with pytest.raises(FaceNotFound, match="expired") as excinfo:
        store.transient.get(face_id)
    assert face_id in str(excinfo.value)
    assert store.transient.count() == 0
    assert f"transient:{face_id}" not in data_key_owners(store)
    assert found_on_disk(state_dir, secrets) == []


def test_an_unknown_face_id_is_not_found(store: Store) -> None:
    missing = "22222222-2222-4222-8222-222222222222"
    with pytest.raises(FaceNotFound, match=missing):
        store.transient.get(missing)


def test_reap_deletes_expired_faces_and_their_keys_only(
    store: Store, clock: ManualClock, rng: np.random.Generator, state_dir: Path
) -> None:
    short = {store.transient.add(v, MODEL, 60).face_id: v for v in (template(rng) for _ in range(3))}
    medium = {store.transient.add(v, MODEL, 3600).face_id: v for v in (template(rng) for _ in range(2))}
    clock.advance(30)
    late = {store.transient.add(v, MODEL, 60).face_id: v for v in (template(rng) for _ in range(2))}
    secrets: dict[str, bytes] = {}
    for face_id, vector in short.items():
        secrets |= {f"{face_id} {k}": v for k, v in transient_secrets(store, face_id, vector).items()}
    assert found_on_disk(state_dir, {k: v for k, v in secrets.items() if "ciphertext" in k}), (
        "the scan sees the stored ciphertexts before the reap"
    )
    assert store.transient.count() == 7
    assert store.transient.reap() == 0  # nothing has expired yet
    assert store.transient.count() == 7

    clock.advance(30)  # the first three expire now (60 s), the late ones at +60 s from their creation
    assert store.transient.reap() == 3
    assert store.transient.count() == 4
    rows = {r[0] for r in store.db.execute("SELECT face_id FROM transient_faces")}
    assert rows == set(medium) | set(late)
    owners = data_key_owners(store)
    assert not {f"transient:{f}" for f in short} & owners
    assert {f"transient:{f}" for f in [*medium, *late]} <= owners
    assert store.db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0] == 4
    assert found_on_disk(state_dir, secrets) == []
    for face_id, vector in {**medium, **late}.items():
        assert store.transient.get(face_id).tobytes() == vector.tobytes()
    for face_id in short:
        with pytest.raises(FaceNotFound, match="expired"):
            store.transient.get(face_id)

    assert store.transient.reap() == 0
    clock.advance(30)
    assert store.transient.reap() == 2
    assert set(store.db.execute("SELECT face_id FROM transient_faces").fetchall()) == {(f,) for f in medium}
    clock.advance(DAY)
    assert store.transient.reap() == 2
    assert store.transient.count() == 0
    assert store.db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0] == 0


def test_reaping_keeps_persons_and_face_lists(
    store: Store, clock: ManualClock, rng: np.random.Generator
) -> None:
    person_id = store.persons.create(None, "Ada", None)
    kept_vector = template(rng)
    store.persons.add_face(None, person_id, kept_vector, MODEL, None, {})
    store.face_lists.create("lobby", "Lobby", None, "list", MODEL)
    store.face_lists.add_face("lobby", template(rng), MODEL, None, {})
    store.transient.add(template(rng), MODEL, 60)
    clock.advance(DAY)
    assert store.transient.reap() == 1
    assert data_key_owners(store) == {f"person:{person_id}", "list:lobby"}
    assert store.persons.get(None, person_id).name == "Ada"
    assert store.faces.templates(DirectoryScope()).matrix[0].tobytes() == kept_vector.tobytes()
    assert store.faces.templates(ListScope("lobby")).matrix.shape == (1, TEMPLATE_DIM)


def test_expiry_survives_a_restart(
    tmp_path: Path, state_dir: Path, clock: ManualClock, rng: np.random.Generator
) -> None:
    """Expiry is stored, not kept in memory: a face ID created before a restart still expires
    on time after it, and the reaper at start-up removes it."""
    kek = crypto.create_key_file(tmp_path / "kek")
    first = Store.open(state_dir, kek, clock)
    vector = template(rng)
    face_id = first.transient.add(vector, MODEL, 120).face_id
    secrets = transient_secrets(first, face_id, vector)
    first.close()

    clock.advance(60)
    second = Store.open(state_dir, kek, clock)
    try:
        assert second.transient.get(face_id).tobytes() == vector.tobytes()
        clock.advance(60)
        assert second.transient.reap() == 1
        with pytest.raises(FaceNotFound, match="expired"):
            second.transient.get(face_id)
    finally:
        second.close()
    assert found_on_disk(state_dir, secrets) == []
