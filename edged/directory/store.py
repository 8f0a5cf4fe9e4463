"""The directory: one encrypted SQLite file under the state directory, and its repositories.

``Store.open`` opens the file (``Db``: WAL, ``synchronous=FULL``, foreign keys and ``secure_delete``
on, the key checked before anything is written), migrates it, and composes one repository per kind
of record::

    store.groups          person groups and their training state      (groups.py)
    store.persons         persons, and their faces (persons.faces)     (persons.py)
    store.face_lists      face lists, and their faces                  (lists.py)
    store.faces           the faces of a scope: IDs, templates, pages  (faces.py)
    store.dynamic_groups  dynamic person groups                        (dynamic.py)
    store.transient       face IDs (transient faces)                   (transient.py)
    store.cards           cards for verify-mode claims                 (cards.py)
    store.liveness        liveness sessions and their attempts         (liveness.py)
    store.audit           the audit log                                (audit.py)
    store.keys            the key material: KEK check, device key, card key, data keys (keys.py)

Everything about a person (name, userData, templates, face userData) is sealed with that person's
data key; face lists have their own key; every transient face and every liveness session has its
own key. Deleting an owner deletes its rows and its wrapped data key, then checkpoints the WAL
(TRUNCATE), so neither the database nor the WAL keeps a byte of it. The repositories hand out
decrypted values and take plaintext values; they never log them. All SQL of the directory side
lives in ``edged.directory``.

Sync state will be one more repository beside these: a module with a class over the ``Db``, a
migration for its tables, and an attribute here.

``Store`` (not ``Directory``): "the person directory" already names the persons in no group.
"""

from __future__ import annotations

from pathlib import Path

from edged.clock import Clock, SystemClock
from edged.directory.audit import AuditLog
from edged.directory.cards import Cards
from edged.directory.crypto import Kek
from edged.directory.db import Db
from edged.directory.dynamic import DynamicGroups
from edged.directory.faces import Faces
from edged.directory.groups import Groups
from edged.directory.keys import Keys, key_check
from edged.directory.lists import FaceLists
from edged.directory.liveness import LivenessSessions
from edged.directory.persons import Persons
from edged.directory.schema import MIGRATIONS
from edged.directory.transient import TransientFaces

DB_NAME = "directory.sqlite3"


class Store:
    """The directory database and its repositories. One instance per process; the repositories
    share one SQLite connection (``check_same_thread=False``): the service layer owns the instance
    and serialises its use."""

    def __init__(self, db: Db, keys: Keys, path: Path, clock: Clock) -> None:
        self.db = db
        self.keys = keys
        self.path = path
        self.clock = clock
        self.groups = Groups(db, keys, clock)
        self.persons = Persons(db, keys, clock, self.groups)
        self.face_lists = FaceLists(db, keys, clock)
        self.faces = Faces(db, keys, self.groups, self.face_lists)
        self.dynamic_groups = DynamicGroups(db, clock, self.persons)
        self.transient = TransientFaces(db, keys, clock)
        self.cards = Cards(db, keys, clock, self.persons)
        self.audit = AuditLog(db, keys, clock)
        self.liveness = LivenessSessions(db, keys, clock)

    @classmethod
    def open(cls, state_dir: Path, kek: Kek, clock: Clock | None = None) -> Store:
        """Open (create, migrate) the directory in ``state_dir`` with ``kek``: ``WrongKey`` when the
        key does not open it (nothing changed), ``ConfigError`` when it is not a usable directory."""
        path = state_dir / DB_NAME
        db = Db.open(path, key_check(kek))
        try:
            with db.tx():
                before = db.migrate(MIGRATIONS)
                Keys.seed(db, kek, before, len(MIGRATIONS))
            return cls(db, Keys(db, kek), path, clock or SystemClock())
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def checkpoint(self) -> None:
        """Move the WAL into the database and truncate it."""
        self.db.checkpoint()

    def version(self) -> int:
        """The directory version: raised by every change to groups, persons, faces, face lists,
        dynamic groups and cards, in the changing transaction (also by another process); never by
        reads, face IDs, keys or the audit log. It survives restarts and never goes down."""
        return int(self.db.scalar("SELECT version FROM directory_version WHERE id = 1"))

    def data_version(self) -> int:
        """Changes when another connection (another process) commits; see ``Db.data_version``."""
        return self.db.data_version()

    @property
    def device_public_key(self) -> str:
        return self.keys.device_public_key
