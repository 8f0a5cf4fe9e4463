"""The nonces of signed requests: (client, nonce) pairs seen within the signature window, in a
database of their own (``nonces.sqlite3``: a used nonce must survive a power cut) or in memory.

Pruning forgets nonces; the *watermark* remembers how far: the latest ``forget_before`` ever applied
(kept in the database). A request whose timestamp is at or before it might be a replay of a forgotten
one and is refused — also after the clock stepped back or the window was widened.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

from edged.directory.db import Db, Migration
from edged.errors import ConfigError

MIGRATIONS: tuple[Migration, ...] = (
    # IF NOT EXISTS: a nonce file written before migrations were tracked has these already
    (
        "CREATE TABLE IF NOT EXISTS nonces (client TEXT NOT NULL, nonce TEXT NOT NULL, "
        "seen REAL NOT NULL, PRIMARY KEY (client, nonce)) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS nonces_seen ON nonces (seen)",
        "CREATE TABLE IF NOT EXISTS watermark (id INTEGER PRIMARY KEY CHECK (id = 1), t REAL)",
    ),
)


class Nonces:
    """The ``nonces`` and ``watermark`` tables. Thread-safe; ``close()`` it."""

    def __init__(self, db: Db) -> None:
        self._lock = threading.Lock()
        self._closed = False
        db.migrate(MIGRATIONS)
        self.db = db
        stored = db.scalar("SELECT t FROM watermark WHERE id = 1")
        self.watermark = -math.inf if stored is None else float(stored)

    @classmethod
    def open(cls, path: Path | None) -> Nonces:
        """The nonces in the file at ``path`` (created if need be), or in memory for None."""
        if path is None:
            return cls(Db.memory())
        try:
            db = Db.open(path)
        except OSError as exc:
            raise ConfigError(f"cannot open the nonce file {path}: {exc}") from exc
        try:
            return cls(db)
        except BaseException:
            db.close()
            raise

    def add(self, client: str, nonce: str, ts: float, seen: float, forget_before: float) -> bool:
        """Record the pair; False when it is already there or ``ts`` is at or before the watermark
        (it could be a forgotten one). Entries older than ``forget_before`` are pruned first."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the nonce store is closed")
            if ts <= self.watermark:
                return False
            with self.db.tx() as db:
                if forget_before > self.watermark:
                    db.execute("DELETE FROM nonces WHERE seen < ?", (forget_before,))
                    db.execute("INSERT OR REPLACE INTO watermark (id, t) VALUES (1, ?)", (forget_before,))
                added = db.execute(
                    "INSERT OR IGNORE INTO nonces (client, nonce, seen) VALUES (?, ?, ?)",
                    (client, nonce, seen),
                ).rowcount
            self.watermark = max(self.watermark, forget_before)
            return added == 1

    def __len__(self) -> int:
        with self._lock:
            return 0 if self._closed else int(self.db.scalar("SELECT COUNT(*) FROM nonces"))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.db.close()
