"""The database layer under the directory (``edged.directory.db``): re-entrant transactions
(savepoints), checkpoints and actions that wait for the commit, private (0600) files, migrations
tracked with ``PRAGMA user_version``, a directory written before ``user_version`` (a
``schema_version`` table, versions 1 and 2) carried over in one transaction, the directory version,
and the request nonces in a database of their own.

Real SQLite files in ``tmp_path``, real key files and AES-GCM; the legacy files are written with the
DDL of the code that wrote them."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest
from directory_helpers import MODEL, template

from edged.clock import ManualClock
from edged.directory import crypto
from edged.directory import store as store_module
from edged.directory.db import Db
from edged.directory.nonces import Nonces
from edged.directory.schema import MIGRATIONS
from edged.directory.scope import GroupScope
from edged.directory.store import DB_NAME, Store
from edged.errors import ConfigError, PersonGroupExists


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def tables(db: Db | sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# -- transactions -----------------------------------------------------------------------------------


def test_a_transaction_inside_another_is_one_transaction(tmp_path: Path) -> None:
    db = Db.open(tmp_path / "t.sqlite3")
    try:
        db.migrate((("CREATE TABLE t (x INTEGER PRIMARY KEY)",),))
        with pytest.raises(RuntimeError), db.tx():
            with db.tx():
                db.execute("INSERT INTO t VALUES (1)")
            db.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("the outer part fails")
        assert db.execute("SELECT x FROM t").fetchall() == [], "the inner part was rolled back too"

        with db.tx():
            db.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(sqlite3.IntegrityError), db.tx():
                db.execute("INSERT INTO t VALUES (3)")
                db.execute("INSERT INTO t VALUES (1)")  # fails: only this inner part is undone
            db.execute("INSERT INTO t VALUES (2)")
        assert db.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
        assert not db.in_transaction
    finally:
        db.close()


def test_repository_calls_can_share_one_transaction(store: Store) -> None:
    """What a directory change and its audit record will need: both or neither."""
    with pytest.raises(PersonGroupExists), store.db.tx():
        store.groups.create("staff", "Staff", None, "group", MODEL)
        store.audit.append("create_person_group", "cli", "manager", {"personGroupId": "staff"}, "ok")
        store.groups.create("staff", "Again", None, "group", MODEL)
    assert store.groups.page() == []
    assert list(store.audit.records()) == []
    with store.db.tx():
        store.groups.create("staff", "Staff", None, "group", MODEL)
        store.audit.append("create_person_group", "cli", "manager", {"personGroupId": "staff"}, "ok")
    assert [g.group_id for g in store.groups.page()] == ["staff"]
    assert store.audit.verify().intact


def test_a_checkpoint_in_a_transaction_waits_for_the_commit(
    store: Store, state_dir: Path, rng: np.random.Generator
) -> None:
    store.groups.create("staff", "Staff", None, "group", MODEL)
    person_id = store.persons.create("staff", "Ada", None)
    store.persons.add_face("staff", person_id, template(rng), MODEL, None, {})
    wal = state_dir / (DB_NAME + "-wal")
    with store.db.tx():
        store.persons.delete("staff", person_id)  # checkpoints after its deletion
        assert wal.stat().st_size > 0, "nothing is checkpointed before the commit"
    assert wal.stat().st_size == 0, "the commit truncated the WAL"


def test_what_waits_for_the_commit_runs_after_it_and_never_after_a_rollback(tmp_path: Path) -> None:
    db = Db.open(tmp_path / "t.sqlite3")
    done: list[str] = []
    try:
        db.migrate((("CREATE TABLE t (x INTEGER PRIMARY KEY)",),))
        db.on_commit(lambda: done.append("no transaction: at once"))
        with db.tx():
            db.on_commit(lambda: done.append("outer"))
            with db.tx():
                db.on_commit(lambda: done.append("released savepoint"))
            with pytest.raises(RuntimeError), db.tx():
                db.on_commit(lambda: done.append("rolled-back savepoint"))
                raise RuntimeError("this part fails")
            assert done == ["no transaction: at once"], "nothing runs before the commit"
        assert done == ["no transaction: at once", "outer", "released savepoint"]
        with pytest.raises(RuntimeError), db.tx():
            db.on_commit(lambda: done.append("rolled-back transaction"))
            raise RuntimeError("the whole transaction fails")
        with db.tx():
            db.on_commit(lambda: done.append("the next one"))
        assert done[-1] == "the next one" and "rolled-back transaction" not in done
    finally:
        db.close()


def test_changes_counts_rows_written_also_when_rolled_back(tmp_path: Path) -> None:
    db = Db.open(tmp_path / "t.sqlite3")
    try:
        db.migrate((("CREATE TABLE t (x INTEGER PRIMARY KEY)",),))
        before = db.changes()
        with pytest.raises(RuntimeError), db.tx():
            db.execute("INSERT INTO t VALUES (1)")
            raise RuntimeError("rolled back")
        assert db.changes() == before + 1
        assert db.scalar("SELECT COUNT(*) FROM t") == 0
    finally:
        db.close()


# -- private files ----------------------------------------------------------------------------------


def file_modes(folder: Path, name: str) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.name.startswith(name)}


def test_a_nonce_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        nonces = Nonces.open(tmp_path / "nonces.sqlite3")
        assert nonces.add("ops", "n1", ts=100.0, seen=100.0, forget_before=40.0)
    finally:
        os.umask(old_umask)
    try:
        assert file_modes(tmp_path, "nonces.sqlite3") == {
            "nonces.sqlite3": 0o600,
            "nonces.sqlite3-wal": 0o600,
            "nonces.sqlite3-shm": 0o600,
        }
    finally:
        nonces.close()


@pytest.mark.parametrize("name", ["nonces.sqlite3", DB_NAME])
def test_a_file_made_0644_by_an_older_edged_is_made_private(
    tmp_path: Path, kek: crypto.Kek, name: str
) -> None:
    """A nonce file from before migrations were tracked was created with the umask (0644); so was
    a directory file copied without its mode. Opening them takes the group's and others' bits off."""
    path = tmp_path / name
    if name == DB_NAME:
        Store.open(tmp_path, kek).close()
    else:
        Nonces.open(path).close()
    for side in ("", "-wal", "-shm"):
        if (tmp_path / (name + side)).exists():
            (tmp_path / (name + side)).chmod(0o644)
    opened = Store.open(tmp_path, kek) if name == DB_NAME else Nonces.open(path)
    try:
        assert set(file_modes(tmp_path, name).values()) == {0o600}
    finally:
        opened.close()


# -- migrations -------------------------------------------------------------------------------------


def test_migrations_are_tracked_with_user_version(tmp_path: Path) -> None:
    steps = (("CREATE TABLE a (x)",), ("CREATE TABLE b (x)", "CREATE INDEX b_x ON b (x)"))
    db = Db.open(tmp_path / "m.sqlite3")
    try:
        assert db.migrate(steps[:1]) == 0
        assert (db.user_version(), tables(db)) == (1, {"a"})
        assert db.migrate(steps) == 1
        assert (db.user_version(), tables(db)) == (2, {"a", "b"})
        assert db.migrate(steps) == 2, "nothing to do"
        with pytest.raises(ConfigError, match="schema version 2; this edged knows up to 1"):
            db.migrate(steps[:1])
    finally:
        db.close()


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    db = Db.open(tmp_path / "m.sqlite3")
    try:
        db.migrate((("CREATE TABLE a (x)",),))
        broken = (("CREATE TABLE a (x)",), ("CREATE TABLE b (x)", "CREATE TABLE a (y)"))
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            db.migrate(broken)
        assert (db.user_version(), tables(db)) == (1, {"a"})
    finally:
        db.close()


# A directory as the code before user_version wrote it: the statements of its migrations 1 and 2 (one
# string each, split at ";"), a ``schema_version`` table, and the key material in ``meta``.
LEGACY_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE data_keys (key_id TEXT PRIMARY KEY, owner TEXT NOT NULL UNIQUE, wrapped BLOB NOT NULL);
CREATE TABLE person_groups (
    group_id TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('group', 'large')), name TEXT NOT NULL,
    user_data TEXT, recognition_model TEXT NOT NULL, train_status TEXT NOT NULL DEFAULT 'notstarted',
    train_message TEXT, trained_at REAL, created REAL NOT NULL, modified REAL NOT NULL);
CREATE TABLE persons (
    person_id TEXT PRIMARY KEY, group_id TEXT REFERENCES person_groups (group_id) ON DELETE CASCADE,
    key_id TEXT NOT NULL REFERENCES data_keys (key_id), name BLOB NOT NULL, user_data BLOB,
    created REAL NOT NULL);
CREATE INDEX persons_by_group ON persons (group_id, person_id);
CREATE TABLE face_lists (
    list_id TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('list', 'large')), name TEXT NOT NULL,
    user_data TEXT, recognition_model TEXT NOT NULL, key_id TEXT NOT NULL REFERENCES data_keys (key_id),
    created REAL NOT NULL);
CREATE TABLE faces (
    face_id TEXT PRIMARY KEY, person_id TEXT REFERENCES persons (person_id) ON DELETE CASCADE,
    list_id TEXT REFERENCES face_lists (list_id) ON DELETE CASCADE, template BLOB NOT NULL,
    model_id TEXT NOT NULL, user_data BLOB, quality TEXT, created REAL NOT NULL,
    CHECK ((person_id IS NULL) != (list_id IS NULL)));
CREATE INDEX faces_by_person ON faces (person_id);
CREATE INDEX faces_by_list ON faces (list_id);
CREATE TABLE dynamic_groups (dgroup_id TEXT PRIMARY KEY, name TEXT NOT NULL, user_data TEXT,
    created REAL NOT NULL);
CREATE TABLE dynamic_members (
    dgroup_id TEXT NOT NULL REFERENCES dynamic_groups (dgroup_id) ON DELETE CASCADE,
    person_id TEXT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    PRIMARY KEY (dgroup_id, person_id));
CREATE TABLE transient_faces (face_id TEXT PRIMARY KEY, key_id TEXT NOT NULL REFERENCES data_keys (key_id),
    template BLOB NOT NULL, model_id TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL);
CREATE INDEX transient_by_expiry ON transient_faces (expires);
CREATE TABLE audit (seq INTEGER PRIMARY KEY, time REAL NOT NULL, operation TEXT NOT NULL,
    actor TEXT NOT NULL, role TEXT NOT NULL, targets TEXT NOT NULL, result TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
"""
LEGACY_V2 = """
CREATE TABLE cards (card_hash BLOB PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE, created REAL NOT NULL);
CREATE INDEX cards_by_person ON cards (person_id);
"""
KEK_CHECK = b"edged directory key check v1"
PERSON_ID = "3f1c6a52-9d0e-4b7a-8c11-5e2f0a9b7d44"
FACE_ID = "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"


def write_legacy_directory(state_dir: Path, kek: crypto.Kek, version: int, vector: np.ndarray) -> None:
    """A directory at ``version`` (1 or 2) as the code before ``user_version`` left it: a person group
    "staff" with one person, "Ada", and one face."""
    state_dir.mkdir(parents=True)
    db = sqlite3.connect(state_dir / DB_NAME, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (?)", (version,))
    for script in (LEGACY_V1, LEGACY_V2)[:version]:
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
    if version >= 2:
        card_key = crypto.wrap_key(kek, crypto.new_data_key(), b"cards")
        db.execute("INSERT INTO meta VALUES ('card_key', ?)", (card_key,))
    db.execute("INSERT INTO meta VALUES ('kek_check', ?)", (crypto.seal(kek.key, KEK_CHECK, b"kek-check"),))
    db.execute("INSERT INTO meta VALUES ('kek_id', ?)", (kek.key_id,))
    device = crypto.DeviceSigner.generate().private_bytes()
    db.execute("INSERT INTO meta VALUES ('device_key', ?)", (crypto.wrap_key(kek, device, b"device"),))
    db.execute(
        "INSERT INTO person_groups VALUES ('staff', 'group', 'Staff', NULL, ?, 'notstarted',"
        " NULL, NULL, 1.0, 1.0)",
        (MODEL,),
    )
    key = crypto.new_data_key()
    owner = f"person:{PERSON_ID}"
    db.execute(
        "INSERT INTO data_keys VALUES ('k1', ?, ?)", (owner, crypto.wrap_key(kek, key, owner.encode()))
    )
    name = crypto.seal(key, b"Ada", f"name|{PERSON_ID}|staff".encode())
    db.execute("INSERT INTO persons VALUES (?, 'staff', 'k1', ?, NULL, 1.0)", (PERSON_ID, name))
    sealed = crypto.seal(key, vector.astype("<f4").tobytes(), f"face|{PERSON_ID}|{FACE_ID}|{MODEL}".encode())
    db.execute(
        "INSERT INTO faces (face_id, person_id, template, model_id, quality, created)"
        " VALUES (?, ?, ?, ?, '{}', 1)",
        (FACE_ID, PERSON_ID, sealed, MODEL),
    )
    db.execute("COMMIT")
    db.close()


@pytest.mark.parametrize("version", [1, 2])
def test_a_directory_with_a_schema_version_table_is_carried_over(
    state_dir: Path, kek: crypto.Kek, rng: np.random.Generator, version: int
) -> None:
    vector = template(rng)
    write_legacy_directory(state_dir, kek, version, vector)
    store = Store.open(state_dir, kek)
    try:
        assert store.db.user_version() == len(MIGRATIONS)
        assert "schema_version" not in tables(store.db)
        assert store.persons.get("staff", PERSON_ID).name == "Ada"
        assert store.faces.templates(GroupScope("staff")).matrix[0].tobytes() == vector.tobytes()
        assert store.cards.set("04a1b2", "staff", PERSON_ID)  # the card key: kept (2) or created (1)
        assert store.cards.person_for("04A1B2") == PERSON_ID
    finally:
        store.close()
    again = Store.open(state_dir, kek)  # and it opens as a current directory from now on
    try:
        assert again.db.user_version() == len(MIGRATIONS)
        assert again.cards.person_for("04a1b2") == PERSON_ID
    finally:
        again.close()


def test_a_legacy_directory_is_carried_over_in_one_transaction(
    state_dir: Path, kek: crypto.Kek, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails after the carry-over leaves the file as it was: still version 2 in its
    ``schema_version`` table, nothing added."""
    write_legacy_directory(state_dir, kek, 2, template(rng))
    broken = (*MIGRATIONS, ("CREATE TABLE extra (x)", "CREATE TABLE meta (x)"))
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        Store.open(state_dir, kek)
    with sqlite3.connect(state_dir / DB_NAME) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
        assert not {"extra", "directory_version"} & tables(db)
    db.close()
    monkeypatch.undo()
    store = Store.open(state_dir, kek)
    try:
        assert store.persons.get("staff", PERSON_ID).name == "Ada"
    finally:
        store.close()


# -- the directory version ----------------------------------------------------------------------------


def test_every_directory_change_raises_the_version(store: Store, rng: np.random.Generator) -> None:
    seen = [store.version()]

    def changed(what: str) -> None:
        now = store.version()
        assert now > seen[-1], f"{what} did not raise the directory version"
        seen.append(now)

    store.groups.create("staff", "Staff", None, "group", MODEL)
    changed("creating a group")
    store.groups.update("staff", "Staff (all)", None)
    changed("renaming a group")
    store.groups.set_training("staff", "succeeded")
    changed("a train")
    person_id = store.persons.create("staff", "Ada", None)
    changed("creating a person")
    store.persons.update("staff", person_id, "Ada L.", None)
    changed("renaming a person")
    face_id = store.persons.add_face("staff", person_id, template(rng), MODEL, None, {})
    changed("adding a face")
    store.persons.faces.update(face_id, person_id, "note")
    changed("a face's userData")
    store.cards.set("04a1", "staff", person_id)
    changed("setting a card")
    store.cards.delete("04a1")
    changed("deleting a card")
    store.persons.faces.delete(face_id, person_id)
    changed("deleting a face")
    store.face_lists.create("lobby", "Lobby", None, "list", MODEL)
    changed("creating a face list")
    list_face = store.face_lists.add_face("lobby", template(rng), MODEL, None, {})
    changed("adding a list face")
    store.face_lists.faces.delete(list_face, "lobby")
    changed("deleting a list face")
    member = store.persons.create(None, "Grace", None)
    changed("creating a directory person")
    store.dynamic_groups.create("night", "Night", None, [member])
    changed("creating a dynamic group")
    store.dynamic_groups.update_members("night", remove=[member])
    changed("removing a member")
    store.dynamic_groups.delete("night")
    changed("deleting a dynamic group")
    store.persons.delete("staff", person_id)
    changed("deleting a person")
    store.face_lists.delete("lobby")
    changed("deleting a face list")
    store.groups.delete("staff")
    changed("deleting a group")


def test_reads_face_ids_keys_and_audit_leave_the_version(
    store: Store, rng: np.random.Generator, clock: ManualClock, tmp_path: Path
) -> None:
    store.groups.create("staff", "Staff", None, "group", MODEL)
    person_id = store.persons.create("staff", "Ada", None)
    store.persons.add_face("staff", person_id, template(rng), MODEL, None, {})
    version = store.version()
    store.groups.get("staff")
    store.persons.page("staff")
    store.faces.templates(GroupScope("staff"))
    store.faces.ids(GroupScope("staff"))
    face = store.transient.add(template(rng), MODEL, 60)
    store.transient.get(face.face_id)
    clock.advance(61)
    assert store.transient.reap() == 1
    store.audit.append("identify", "door-1", "recognizer", {"personGroupId": "staff"}, "ok")
    store.audit.verify()
    store.keys.rotate(crypto.create_key_file(tmp_path / "new.kek"))
    assert store.version() == version


def test_the_version_survives_reopening_and_counts_other_processes(
    store: Store, state_dir: Path, kek: crypto.Kek
) -> None:
    store.groups.create("staff", "Staff", None, "group", MODEL)
    version = store.version()
    other = Store.open(state_dir, kek)  # the CLI, while the daemon runs
    try:
        assert other.version() == version
        other.persons.create("staff", "Ada", None)
        assert store.version() > version
        version = store.version()
    finally:
        other.close()
    store.close()
    reopened = Store.open(state_dir, kek)
    try:
        assert reopened.version() == version
    finally:
        reopened.close()


# -- the nonces' own database -------------------------------------------------------------------------


@pytest.mark.parametrize("on_disk", [True, False], ids=["file", "memory"])
def test_nonces(tmp_path: Path, on_disk: bool) -> None:
    nonces = Nonces.open(tmp_path / "nonces.sqlite3" if on_disk else None)
    try:
        assert nonces.add("ops", "n1", ts=100.0, seen=100.0, forget_before=40.0)
        assert not nonces.add("ops", "n1", ts=101.0, seen=101.0, forget_before=41.0), "a replay"
        assert nonces.add("boss", "n1", ts=101.0, seen=101.0, forget_before=41.0), "another client's"
        assert len(nonces) == 2
        assert nonces.add("ops", "n2", ts=200.0, seen=200.0, forget_before=140.0)  # prunes the others
        assert (len(nonces), nonces.watermark) == (1, 140.0)
        assert not nonces.add("ops", "n3", ts=140.0, seen=200.0, forget_before=140.0), "at the watermark"
    finally:
        nonces.close()
    with pytest.raises(RuntimeError, match="closed"):
        nonces.add("ops", "n9", ts=300.0, seen=300.0, forget_before=240.0)


def test_a_nonce_file_from_before_migrations_keeps_its_nonces(tmp_path: Path) -> None:
    path = tmp_path / "nonces.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "CREATE TABLE nonces (client TEXT NOT NULL, nonce TEXT NOT NULL, seen REAL NOT NULL, "
        "PRIMARY KEY (client, nonce)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX nonces_seen ON nonces (seen)")
    db.execute("CREATE TABLE watermark (id INTEGER PRIMARY KEY CHECK (id = 1), t REAL)")
    db.execute("INSERT INTO nonces VALUES ('ops', 'n1', 100.0)")
    db.execute("INSERT INTO watermark VALUES (1, 50.0)")
    db.close()
    nonces = Nonces.open(path)
    try:
        assert (len(nonces), nonces.watermark) == (1, 50.0)
        assert not nonces.add("ops", "n1", ts=100.0, seen=100.0, forget_before=50.0)
        assert nonces.db.user_version() == 1
    finally:
        nonces.close()
