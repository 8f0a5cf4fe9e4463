"""Key-encryption-key rotation: every data key (and the device key) is re-wrapped under the new key
in one transaction, templates are not re-encrypted, and afterwards only the new key opens the
directory. A process killed (SIGKILL) at any step of the rotation leaves a directory that opens with
exactly one of the two keys: the old one before the commit, the new one after it.

Real key files, real SQLite files; the crash runs are real processes killed by a real signal."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from directory_helpers import MODEL, disk_files, template

from edged.directory import crypto
from edged.directory.scope import DirectoryScope, GroupScope, ListScope
from edged.directory.store import DB_NAME, Store
from edged.errors import WrongKey

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Contents:
    """What was put into the directory, to check that every byte of it still decrypts."""

    group_names: dict[str, str]
    directory_names: dict[str, str]
    group_templates: dict[str, bytes]
    directory_templates: dict[str, bytes]
    list_templates: dict[str, bytes]
    transient: dict[str, bytes]
    device_public_key: str
    data_keys: int


def fill(store: Store, rng: np.random.Generator) -> Contents:
    """3 persons in a group, 2 in the directory, a face list and a transient face: 7 data keys."""
    store.groups.create("staff", "Staff", None, "group", MODEL)
    group_names, directory_names = {}, {}
    group_templates, directory_templates, list_templates, transient = {}, {}, {}, {}
    for i in range(3):
        person_id = store.persons.create("staff", f"Staff member {i}", f"desk {i}")
        group_names[person_id] = f"Staff member {i}"
        for _ in range(2):
            vector = template(rng)
            group_templates[store.persons.add_face("staff", person_id, vector, MODEL, None, {})] = (
                vector.tobytes()
            )
    for i in range(2):
        person_id = store.persons.create(None, f"Visitor {i}", None)
        directory_names[person_id] = f"Visitor {i}"
        vector = template(rng)
        directory_templates[store.persons.add_face(None, person_id, vector, MODEL, "badge", {})] = (
            vector.tobytes()
        )
    store.face_lists.create("lobby", "Lobby", None, "list", MODEL)
    for _ in range(2):
        vector = template(rng)
        list_templates[store.face_lists.add_face("lobby", vector, MODEL, None, {})] = vector.tobytes()
    vector = template(rng)
    transient[store.transient.add(vector, MODEL, 86_400).face_id] = vector.tobytes()
    data_keys = int(store.db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0])
    assert data_keys == 7
    return Contents(
        group_names,
        directory_names,
        group_templates,
        directory_templates,
        list_templates,
        transient,
        store.device_public_key,
        data_keys,
    )


def as_dict(face_ids: tuple[str, ...], matrix: np.ndarray) -> dict[str, bytes]:
    return {face_id: row.tobytes() for face_id, row in zip(face_ids, matrix, strict=True)}


def assert_everything_decrypts(store: Store, contents: Contents) -> None:
    assert {p.person_id: p.name for p in store.persons.page("staff")} == contents.group_names
    assert {p.person_id: p.name for p in store.persons.page(None)} == contents.directory_names
    for person_id in contents.group_names:
        assert store.persons.get("staff", person_id).user_data is not None
    for person_id in contents.directory_names:
        for face_id in store.persons.get(None, person_id).face_ids:
            assert store.persons.faces.get(face_id, person_id).user_data == "badge"
    group = store.faces.templates(GroupScope("staff"))
    assert as_dict(group.face_ids, group.matrix) == contents.group_templates
    directory = store.faces.templates(DirectoryScope())
    assert as_dict(directory.face_ids, directory.matrix) == contents.directory_templates
    lobby = store.faces.templates(ListScope("lobby"))
    assert as_dict(lobby.face_ids, lobby.matrix) == contents.list_templates
    for face_id, vector in contents.transient.items():
        assert store.transient.get(face_id).tobytes() == vector
    assert store.device_public_key == contents.device_public_key
    assert store.db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0] == contents.data_keys


def assert_refused(state_dir: Path, kek: crypto.Kek) -> None:
    with pytest.raises(WrongKey) as excinfo:
        Store.open(state_dir, kek)
    assert kek.source in str(excinfo.value)
    del excinfo
    gc.collect()


def reopen_and_check(state_dir: Path, kek: crypto.Kek, contents: Contents) -> None:
    store = Store.open(state_dir, kek)
    try:
        assert_everything_decrypts(store, contents)
        assert store.db.execute("SELECT value FROM meta WHERE key = 'kek_id'").fetchone()[0] == kek.key_id
    finally:
        store.close()


def blobs(store: Store) -> dict[str, dict[str, bytes]]:
    db = store.db
    return {
        "wrapped": {k: bytes(w) for k, w in db.execute("SELECT key_id, wrapped FROM data_keys")},
        "templates": {f: bytes(t) for f, t in db.execute("SELECT face_id, template FROM faces")},
        "names": {p: bytes(n) for p, n in db.execute("SELECT person_id, name FROM persons")},
        "transient": {f: bytes(t) for f, t in db.execute("SELECT face_id, template FROM transient_faces")},
        "meta": {k: bytes(v) for k, v in db.execute("SELECT key, value FROM meta WHERE key != 'kek_id'")},
    }


def disk(state_dir: Path) -> bytes:
    return b"".join(disk_files(state_dir).values())


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def old_kek(tmp_path: Path) -> crypto.Kek:
    return crypto.create_key_file(tmp_path / "old.kek")


@pytest.fixture
def new_kek(tmp_path: Path) -> crypto.Kek:
    return crypto.create_key_file(tmp_path / "new.kek")


@pytest.fixture
def kek(old_kek: crypto.Kek) -> crypto.Kek:
    """The shared ``store`` fixture (conftest.py) opens the directory with the old key."""
    return old_kek


@pytest.fixture
def contents(store: Store) -> Contents:
    return fill(store, np.random.default_rng(99))


# -- rotation in process ----------------------------------------------------------------------------


def test_rotation_rewraps_every_data_key(
    store: Store, contents: Contents, state_dir: Path, old_kek: crypto.Kek, new_kek: crypto.Kek
) -> None:
    before = blobs(store)
    steps: list[int] = []
    count = store.keys.rotate(new_kek, on_step=steps.append)
    assert count == contents.data_keys
    assert steps == list(range(1, contents.data_keys + 1))
    after = blobs(store)
    # every wrapped key (and the device key and key check) changed; no template or name was re-encrypted
    assert after["wrapped"].keys() == before["wrapped"].keys()
    assert all(after["wrapped"][k] != before["wrapped"][k] for k in before["wrapped"])
    assert after["meta"].keys() == before["meta"].keys()
    assert all(after["meta"][k] != before["meta"][k] for k in before["meta"])
    for kind in ("templates", "names", "transient"):
        assert after[kind] == before[kind], kind
    # the open store goes on working with the new key
    assert_everything_decrypts(store, contents)
    person_id = store.persons.create("staff", "After rotation", "desk 9")
    contents.group_names[person_id] = "After rotation"
    contents.data_keys += 1
    store.close()

    reopen_and_check(state_dir, new_kek, contents)
    assert_refused(state_dir, old_kek)


def test_the_old_wrapped_keys_are_gone_from_the_files(
    store: Store, contents: Contents, state_dir: Path, new_kek: crypto.Kek
) -> None:
    """What the old key could unwrap must not stay behind in the database or the WAL (a leaked
    old key is the usual reason to rotate)."""
    old = blobs(store)
    old_wrapped = {**old["wrapped"], **{f"meta {k}": v for k, v in old["meta"].items()}}
    assert all(blob in disk(state_dir) for blob in old_wrapped.values())
    store.keys.rotate(new_kek)
    on_disk = disk(state_dir)
    assert [k for k, blob in old_wrapped.items() if blob in on_disk] == []
    store.close()
    on_disk = disk(state_dir)
    assert [k for k, blob in old_wrapped.items() if blob in on_disk] == []


def test_rotating_twice(
    store: Store,
    contents: Contents,
    state_dir: Path,
    tmp_path: Path,
    old_kek: crypto.Kek,
    new_kek: crypto.Kek,
) -> None:
    third = crypto.create_key_file(tmp_path / "third.kek")
    assert store.keys.rotate(new_kek) == contents.data_keys
    assert store.keys.rotate(third) == contents.data_keys
    store.close()
    reopen_and_check(state_dir, third, contents)
    assert_refused(state_dir, old_kek)
    assert_refused(state_dir, new_kek)


def test_a_failed_rotation_changes_nothing(
    store: Store, contents: Contents, state_dir: Path, old_kek: crypto.Kek, new_kek: crypto.Kek
) -> None:
    """An error midway (here raised by the step callback) rolls the whole rotation back; the open
    store keeps the old key."""
    before = blobs(store)

    def fail_at_three(step: int) -> None:
        if step == 3:
            raise RuntimeError("disk unplugged")

    with pytest.raises(RuntimeError, match="disk unplugged"):
        store.keys.rotate(new_kek, on_step=fail_at_three)
    assert blobs(store) == before
    assert_everything_decrypts(store, contents)
    store.close()
    reopen_and_check(state_dir, old_kek, contents)
    assert_refused(state_dir, new_kek)


# -- rotation killed at each step (real processes, SIGKILL) -------------------------------------------

ROTATE = """
import os, signal, sys
from pathlib import Path
from edged.directory import crypto
from edged.directory.store import Store

state, old, new, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
store = Store.open(state, crypto.read_kek(old))

def on_step(step):
    print("step", step, flush=True)
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

count = store.keys.rotate(crypto.read_kek(new), on_step=on_step)
print("rotated", count, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # die without closing: the commit is all there is
"""


def rotate_and_die(state_dir: Path, old_kek: crypto.Kek, new_kek: crypto.Kek, kill_at: int) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", ROTATE, str(state_dir), old_kek.source, new_kek.source, str(kill_at)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_rotation_killed_midway_opens_with_the_old_key_only(
    store: Store, contents: Contents, state_dir: Path, old_kek: crypto.Kek, new_kek: crypto.Kek, where: str
) -> None:
    store.close()
    kill_at = {"first": 1, "middle": (contents.data_keys + 1) // 2, "last": contents.data_keys}[where]
    output = rotate_and_die(state_dir, old_kek, new_kek, kill_at)
    assert output == [f"step {k}" for k in range(1, kill_at + 1)]  # died at that step, not later
    assert (state_dir / (DB_NAME + "-wal")).exists()  # nobody closed the database

    assert_refused(state_dir, new_kek)
    reopen_and_check(state_dir, old_kek, contents)
    assert_refused(state_dir, new_kek)
    if where == "middle":  # and the rotation can simply be run again
        again = Store.open(state_dir, old_kek)
        try:
            assert again.keys.rotate(new_kek) == contents.data_keys
        finally:
            again.close()
        reopen_and_check(state_dir, new_kek, contents)
        assert_refused(state_dir, old_kek)


def test_killed_after_the_commit_opens_with_the_new_key_only(
    store: Store, contents: Contents, state_dir: Path, old_kek: crypto.Kek, new_kek: crypto.Kek
) -> None:
    store.close()
    output = rotate_and_die(state_dir, old_kek, new_kek, kill_at=0)
    assert output[-1] == f"rotated {contents.data_keys}"
    assert len(output) == contents.data_keys + 1
    assert (state_dir / (DB_NAME + "-wal")).exists()  # nobody closed the database

    assert_refused(state_dir, old_kek)
    reopen_and_check(state_dir, new_kek, contents)
    assert_refused(state_dir, old_kek)
