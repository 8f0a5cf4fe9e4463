"""One SQLite database: the connection, its settings, transactions and schema migrations.

The directory and the request nonces each have one (``directory.sqlite3``, ``nonces.sqlite3``). A
file is created mode 0600 (ciphertext only, but nobody else's business; SQLite copies the mode to
its ``-wal``), opened in WAL mode with ``synchronous=FULL`` (a commit survives a power cut),
foreign keys on, ``secure_delete`` on (freed pages are zeroed) and a busy timeout. A ``check`` given
to ``Db.open`` runs first on a read-only connection, so a refused key does not even let SQLite
replay a WAL left by a power cut into the database, then again on the read-write connection.

Migrations are a tuple of migrations, each a tuple of SQL statements (so a trigger's body may hold
semicolons), tracked with ``PRAGMA user_version``. A database written before ``user_version`` was
used keeps its version in a ``schema_version`` table: it is carried over and the table dropped, in
the migrating transaction.

Transactions (``tx()``) are ``BEGIN IMMEDIATE`` and re-entrant: a ``tx()`` inside another is a
savepoint, so a caller can wrap several repository calls in one transaction (a directory change and
its audit record), and a failing inner part rolls back only itself. ``checkpoint()`` inside a
transaction waits for its commit; so does what ``on_commit`` is given (in-memory state that must
follow the commit, and only the commit: a cached index, the KEK after a rotation).

``private`` makes a database file (also one that ``Db`` does not open: the MQTT outbox) its owner's
only: created 0600, or, made by an older edged under a 0022 umask, its mode and its ``-wal`` and
``-shm`` files' tightened to 0600.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edged.errors import ConfigError

logger = logging.getLogger(__name__)

Migration = tuple[str, ...]
"""One schema step: SQL statements, run in order in the migrating transaction."""

Check = Callable[[sqlite3.Connection, Path], None]
"""Looks at a database before anything is written (the directory's key check); raises to refuse."""

LEGACY_VERSION_TABLE = "schema_version"
BUSY_TIMEOUT_MS = 5000
PRIVATE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database (it creates them with the database file's mode)."""


def new_id() -> str:
    """A new row ID: a random UUID."""
    return str(uuid.uuid4())


def private(path: Path) -> None:
    """Make the database file at ``path`` readable and writable by its owner only: create it mode
    0600 when it is missing (SQLite gives its ``-wal`` and ``-shm`` the same mode), else take the
    group's and others' bits off it and off the files beside it (an older edged created some 0644;
    a warning when that is not allowed). ``OSError`` when it cannot be created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    except FileExistsError:
        pass
    else:
        try:
            os.fchmod(fd, PRIVATE)  # the umask may have taken bits off the mode given to open
        finally:
            os.close(fd)
    for file in (path, *(path.with_name(path.name + side) for side in SIDE_FILES)):
        try:
            mode = file.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(file, mode & 0o700)
            except OSError as exc:  # not ours (another user's file we may still write)
                logger.warning("%s is mode %03o and could not be made private: %s", file, mode, exc)
            else:
                logger.info("%s was mode %03o; now %03o", file, mode, mode & 0o700)


class Db:
    """A SQLite connection shared by the repositories of one database (``check_same_thread=False``:
    the owner serialises its use; transactions also hold the database's own lock)."""

    def __init__(self, connection: sqlite3.Connection, name: str) -> None:
        self._sql = connection
        self.name = name
        self._lock = threading.RLock()
        self._depth = 0
        self._checkpoint_due = False
        self._on_commit: list[list[Callable[[], None]]] = []  # one list per open transaction level

    @classmethod
    def open(cls, path: Path, check: Check | None = None) -> Db:
        """Open (or create) the database file at ``path`` with the settings above. ``ConfigError``
        when it is not a usable SQLite database or cannot use WAL; whatever ``check`` raises."""
        if path.exists() and check is not None:
            cls._check_read_only(path, check)
        private(path)
        try:
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA secure_delete = ON")
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            connection.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path} is not a usable SQLite database: {exc}") from exc
        try:
            if str(mode).lower() != "wal":
                raise ConfigError(f"{path}: cannot switch to WAL mode (got {mode})")
            if check is not None:
                check(connection, path)
        except BaseException:
            connection.close()
            raise
        return cls(connection, str(path))

    @classmethod
    def memory(cls) -> Db:
        """A database in memory (gone with the process): for tests and a node that keeps nothing."""
        connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA foreign_keys = ON")
        return cls(connection, ":memory:")

    @staticmethod
    def _check_read_only(path: Path, check: Check) -> None:
        try:
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path} is not a usable SQLite database: {exc}") from exc
        try:
            check(connection, path)
        finally:
            connection.close()

    def close(self) -> None:
        self._sql.close()

    # -- statements ---------------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._sql.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._sql.executemany(sql, rows)

    def column(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The first column of every row."""
        return [row[0] for row in self._sql.execute(sql, params)]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = self._sql.execute(sql, params).fetchone()
        return None if row is None else row[0]

    # -- transactions -------------------------------------------------------------------------------

    @contextmanager
    def tx(self) -> Iterator[Db]:
        """A write transaction (``BEGIN IMMEDIATE``), or a savepoint inside one: commits (releases)
        when the block ends, rolls back when it raises."""
        with self._lock:
            outer = self._depth == 0
            savepoint = f"nested_{self._depth}"
            self._sql.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {savepoint}")
            self._depth += 1
            self._on_commit.append([])
            try:
                yield self
            except BaseException:
                self._depth -= 1
                self._on_commit.pop()  # rolled back: never run
                if outer:
                    self._sql.execute("ROLLBACK")
                else:
                    self._sql.execute(f"ROLLBACK TO {savepoint}")
                    self._sql.execute(f"RELEASE {savepoint}")
                raise
            self._depth -= 1
            done = self._on_commit.pop()
            if not outer:
                self._sql.execute(f"RELEASE {savepoint}")
                self._on_commit[-1].extend(done)  # they wait for the outer transaction
                return
            self._sql.execute("COMMIT")
            if self._checkpoint_due:
                self.checkpoint()
            for callback in done:
                try:
                    callback()
                except Exception:  # committed is committed: the caller must not think otherwise
                    logger.exception("%s: an action after the commit failed", self.name)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transaction that is open commits (right away when none is),
        never when it, or the savepoint it was given in, is rolled back."""
        with self._lock:
            if self._on_commit:
                self._on_commit[-1].append(callback)
                return
        callback()

    @contextmanager
    def creating(self, exists: Exception) -> Iterator[Db]:
        """A transaction that inserts a new row: a clash with an existing key raises ``exists``."""
        try:
            with self.tx() as db:
                yield db
        except sqlite3.IntegrityError:
            raise exists from None

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def changes(self) -> int:
        """Rows this connection has inserted, updated or deleted since it opened (also those rolled
        back since): a change of it tells that a transaction wrote something."""
        return self._sql.total_changes

    def checkpoint(self) -> None:
        """Move the WAL into the database and truncate it (after deletions: no old page stays); in a
        transaction, as soon as it commits."""
        with self._lock:
            if self._depth > 0:
                self._checkpoint_due = True
                return
            self._checkpoint_due = False
            self._sql.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` of this connection: it changes when another connection
        (another process: the CLI while the daemon runs) commits, never for this one's own commits."""
        return int(self._sql.execute("PRAGMA data_version").fetchone()[0])

    # -- migrations ---------------------------------------------------------------------------------

    def _version(self) -> tuple[int, bool]:
        """The schema version, and whether it is kept in the legacy ``schema_version`` table."""
        legacy = self._sql.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LEGACY_VERSION_TABLE,)
        ).fetchone()
        if legacy:
            row = self._sql.execute(f"SELECT version FROM {LEGACY_VERSION_TABLE}").fetchone()
            return (int(row[0]) if row else 0), True
        return int(self._sql.execute("PRAGMA user_version").fetchone()[0]), False

    def user_version(self) -> int:
        return int(self._sql.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, migrations: Sequence[Migration]) -> int:
        """Bring the schema to ``len(migrations)`` in one transaction (or savepoint); returns the
        version it had. ``ConfigError`` for a schema newer than this code knows."""
        latest = len(migrations)
        with self.tx():
            version, legacy = self._version()
            if version > latest:
                raise ConfigError(
                    f"{self.name} has schema version {version}; this edged knows up to {latest}"
                )
            if legacy:
                self._sql.execute(f"DROP TABLE {LEGACY_VERSION_TABLE}")
            for number in range(version + 1, latest + 1):
                for statement in migrations[number - 1]:
                    self._sql.execute(statement)
                logger.info("%s: schema migrated to version %d", self.name, number)
            if legacy or version < latest:
                self._sql.execute(f"PRAGMA user_version = {latest:d}")
        return version
