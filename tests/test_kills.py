"""``edged`` killed with SIGKILL in the middle of a directory change (issue 9, defects 3 and 4): after
any kill the database is intact, the change is applied exactly when its audit record exists, the
audit chain verifies, and an enrolment of a person is there completely or not at all.

Each command runs in a subprocess that counts the SQL statements the directory executes from the
operation's first write on, and kills itself (SIGKILL, nothing flushed or closed) at a chosen one:
right before it, or a few milliseconds after it started (so also during a commit's fsync). A dry run
counts the statements; the kill points are seeded and spread over all of them (one in each eighth),
so the window between a change's commit and its record's, where the defect lived, is always hit."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from directory_helpers import MODEL, template

from edged.directory import crypto
from edged.directory.store import DB_NAME, Store
from edged.errors import WrongKey
from edged.types import ImageRGB

TRIALS = 8
REPO = Path(__file__).resolve().parents[1]

KILLER = r"""
import os, re, signal, sqlite3, sys, threading

pattern, kill_at, delay_s = re.compile(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
argv = sys.argv[4:]
counted = -1  # statements since the first one matching the pattern (that one is 0)
previous = None

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

def trace(statement):
    global counted, previous
    if statement == previous or (counted < 0 and not pattern.search(statement)):
        return  # the triggers of one statement (cascades, the directory version) report it again
    counted, previous = counted + 1, statement
    if counted == kill_at:
        if delay_s > 0:
            threading.Timer(delay_s, kill).start()  # lands inside this statement or a later one
        else:
            kill()  # before this statement runs

connect = sqlite3.connect

def traced(*args, **kwargs):
    connection = connect(*args, **kwargs)
    if str(args[0]).endswith("directory.sqlite3"):
        connection.set_trace_callback(trace)
    return connection

sqlite3.connect = traced
from edged.cli import main
code = main(argv)
print(f"statements {counted + 1}", file=sys.stderr)
sys.exit(code)
"""


@dataclass(frozen=True, slots=True)
class Site:
    state: Path
    key: Path
    new_key: Path
    people: Path
    person: str  # the person ``persons delete`` deletes


def run_killed(site: Site, first_write: str, kill_at: int, delay_s: float, *args: str) -> tuple[int, str]:
    env = {**os.environ, "EDGED_STATE_DIR": str(site.state), "EDGED_KEY_FILE": str(site.key)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [sys.executable, "-c", KILLER, first_write, str(kill_at), str(delay_s), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stderr


def shifted(image: ImageRGB, dx: int, dy: int) -> ImageRGB:
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    size = (image.shape[1], image.shape[0])
    return np.ascontiguousarray(cv2.warpAffine(image, matrix, size, borderMode=cv2.BORDER_REPLICATE))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, astronaut: ImageRGB) -> Site:
    """A directory: the group ``staff`` (never trained) of 4 persons with 2 synthetic faces each, and
    a folder of 3 photos of one new person to enrol."""
    root = tmp_path_factory.mktemp("kills")
    key, new_key = root / "edged.key", root / "new.key"
    kek = crypto.create_key_file(key)
    crypto.create_key_file(new_key)
    rng = np.random.default_rng(9)
    store = Store.open(root / "state", kek)
    try:
        store.groups.create("staff", "Staff", None, "group", MODEL)
        persons = [store.persons.create("staff", f"Person {i}", None) for i in range(4)]
        for person in persons:
            for _ in range(2):
                store.persons.add_face("staff", person, template(rng), MODEL, None, {})
    finally:
        store.close()
    folder = root / "people" / "Eileen Collins"
    folder.mkdir(parents=True)
    for i, dx in enumerate((0, 15, -15)):
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(shifted(astronaut, dx, 5), cv2.COLOR_RGB2BGR))
        assert ok
        (folder / f"{i}.png").write_bytes(encoded.tobytes())
    return Site(root / "state", key, new_key, folder.parent, persons[1])


def records(db: sqlite3.Connection, operation: str) -> list[tuple[str, dict[str, str]]]:
    rows = db.execute("SELECT result, targets FROM audit WHERE operation = ? ORDER BY seq", (operation,))
    return [(str(result), json.loads(targets)) for result, targets in rows]


def check_delete_person(db: sqlite3.Connection, site: Site) -> None:
    gone = db.execute("SELECT 1 FROM persons WHERE person_id = ?", (site.person,)).fetchone() is None
    recorded = [t for _, t in records(db, "delete_person") if t.get("personId") == site.person]
    assert gone == bool(recorded), f"deleted: {gone}, recorded: {recorded}"


def check_delete_group(db: sqlite3.Connection, site: Site) -> None:
    gone = db.execute("SELECT 1 FROM person_groups WHERE group_id = 'staff'").fetchone() is None
    assert gone == bool(records(db, "delete_person_group")), f"deleted: {gone}"


def check_rotate(db: sqlite3.Connection, site: Site) -> None:
    rotated = db.execute("SELECT value FROM meta WHERE key = 'kek_id'").fetchone()[0] == (
        crypto.read_kek(site.new_key).key_id
    )
    assert rotated == bool(records(db, "rotate_key")), f"rotated: {rotated}"


def check_train(db: sqlite3.Connection, site: Site) -> None:
    status, trained_at = db.execute(
        "SELECT train_status, trained_at FROM person_groups WHERE group_id = 'staff'"
    ).fetchone()
    results = [result for result, _ in records(db, "train")]
    assert (status == "succeeded") == (results == ["ok"]), f"status {status}, records {results}"
    assert (trained_at is not None) == (status == "succeeded")
    assert status in ("notstarted", "running", "succeeded"), status  # running: recovered at start


def check_enroll(db: sqlite3.Connection, site: Site) -> None:
    persons = db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
    faces = db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
    created, added = len(records(db, "create_person")), len(records(db, "add_person_face"))
    assert (persons, faces, created, added) in ((4, 8, 0, 0), (5, 11, 1, 3)), (persons, faces, created, added)


@dataclass(frozen=True, slots=True)
class Operation:
    args: tuple[str, ...]
    first_write: str
    check: Callable[[sqlite3.Connection, Site], None]


OPERATIONS = {
    "persons-delete": Operation(
        ("persons", "delete", "staff", "{person}"), r"DELETE FROM persons", check_delete_person
    ),
    "groups-delete": Operation(
        ("groups", "delete", "staff"), r"DELETE FROM person_groups", check_delete_group
    ),
    "keys-rotate": Operation(
        ("keys", "rotate", "--new-key-file", "{new_key}"), r"UPDATE data_keys", check_rotate
    ),
    "train": Operation(("train", "staff"), r"UPDATE person_groups SET train_status", check_train),
    "enroll": Operation(
        ("enroll", "staff", "--from-dir", "{people}"), r"INSERT INTO data_keys", check_enroll
    ),
}


def reopened(site: Site) -> Store:
    """The directory as the next process opens it, with whichever of the two keys opens it."""
    try:
        return Store.open(site.state, crypto.read_kek(site.key))
    except WrongKey:
        return Store.open(site.state, crypto.read_kek(site.new_key))


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_kill_leaves_no_change_without_its_audit_record(prepared: Site, tmp_path: Path, name: str) -> None:
    operation = OPERATIONS[name]
    site = Site(tmp_path / "state", prepared.key, prepared.new_key, prepared.people, prepared.person)
    fields = {"person": site.person, "new_key": str(site.new_key), "people": str(site.people)}
    args = [a.format(**fields) for a in operation.args]

    shutil.copytree(prepared.state, site.state)
    code, stderr = run_killed(site, operation.first_write, -1, 0.0, *args)  # the dry run: no kill
    assert code == 0, stderr
    count = int(stderr.rsplit("statements ", 1)[1])
    assert count > 3, f"the operation's first write ({operation.first_write!r}) was not seen"

    rng = random.Random(f"kill {name}")
    for trial in range(TRIALS):
        kill_at = int((trial + rng.random()) * count / TRIALS)  # one in each eighth of the statements
        delay_s = 0.0 if trial % 2 == 0 else rng.uniform(0.0, 0.004)
        shutil.rmtree(site.state)
        shutil.copytree(prepared.state, site.state)
        code, stderr = run_killed(site, operation.first_write, kill_at, delay_s, *args)
        assert code in (-signal.SIGKILL, 0), stderr
        where = f"{name}, killed at statement {kill_at} of {count} (+{delay_s * 1000:.1f} ms)"

        db = sqlite3.connect(site.state / DB_NAME)
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], where
            try:
                operation.check(db, site)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}") from None
        finally:
            db.close()
        store = reopened(site)
        try:
            chain = store.audit.verify()
            assert chain.intact, f"{where}: {chain.reason}"
        finally:
            store.close()
