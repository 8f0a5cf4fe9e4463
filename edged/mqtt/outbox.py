"""The durable outbox: decision and audit messages are committed to disk before they are published.

``Outbox`` is a bounded FIFO in its own SQLite file (WAL, ``synchronous=FULL``, mode 0600 like the
directory: decisions name persons; ``edged.directory.db.private``): ``put`` returns only
after the commit, so a message survives a broker outage, a crash or ``kill -9``. ``OutboxPublisher``
(one thread) drains it oldest first while the client is connected, one message in flight at a time
(order is kept), and deletes a message only after the broker acknowledged it. Delivery is at least
once: a crash between the acknowledgement and the delete re-sends that message after the restart, so
payloads carry an ``event_id`` for de-duplication.

Messages past ``expires_at`` (wall clock) are dropped and counted, never sent; when the outbox is full
the oldest messages are dropped and counted, with a warning.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edged.clock import Clock, SystemClock
from edged.directory.db import private
from edged.mqtt.client import Delivery, encode

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    delivered: int
    dropped_expired: int
    dropped_overflow: int
    rejected: int


class Outbox:
    """A bounded, durable FIFO of MQTT messages in its own SQLite file. Thread-safe."""

    def __init__(self, path: Path, max_messages: int = 10_000, clock: Clock | None = None) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.path = path
        self.max_messages = max_messages
        self.clock = clock or SystemClock()
        self.changed = threading.Event()
        self._lock = threading.Lock()
        private(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        if self.depth():
            self.changed.set()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(
        self, topic: str, payload: Mapping[str, object] | bytes, qos: int = 1, expires_at: float | None = None
    ) -> int:
        """Append a message; durable on disk when this returns. Returns its id."""
        data = payload if isinstance(payload, bytes) else encode(payload)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, expires_at) VALUES (?, ?, ?, ?)",
                (topic, data, qos, expires_at),
            )
            row_id = int(cursor.lastrowid or 0)
            excess = self._trim()
        if excess > 0:
            logger.warning("outbox full (%d messages): dropped the %d oldest", self.max_messages, excess)
        self.changed.set()
        return row_id

    def _trim(self) -> int:
        """Inside a transaction: drop the oldest messages beyond ``max_messages`` (counted)."""
        (depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        excess = int(depth) - self.max_messages
        if excess > 0:
            self._db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
            )
            self._count("dropped_overflow", excess)
        return excess

    def cursor(self, name: str) -> int | None:
        """A producer's position (e.g. the last audit record queued), None before its first batch."""
        with self._lock:
            row = self._db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def put_batch(
        self, topic: str, payloads: Sequence[Mapping[str, object]], cursor: tuple[str, int]
    ) -> None:
        """Append messages (QoS 1, no expiry) and move a producer's cursor in the same transaction:
        each produced item is queued exactly once, across crashes and restarts."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO outbox (topic, payload, qos, expires_at) VALUES (?, ?, 1, NULL)",
                [(topic, encode(p)) for p in payloads],
            )
            self._db.execute("INSERT OR REPLACE INTO cursors (name, value) VALUES (?, ?)", cursor)
            excess = self._trim()
        if excess > 0:
            logger.warning("outbox full (%d messages): dropped the %d oldest", self.max_messages, excess)
        if payloads:
            self.changed.set()

    def peek(self) -> OutboxMessage | None:
        """The oldest message that has not expired; expired ones on the way are dropped and counted."""
        now = self.clock.now()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )
            if cursor.rowcount > 0:
                self._count("dropped_expired", cursor.rowcount)
                logger.info("outbox: dropped %d expired messages", cursor.rowcount)
            row = self._db.execute(
                "SELECT id, topic, payload, qos, expires_at FROM outbox ORDER BY id LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return OutboxMessage(int(row[0]), str(row[1]), bytes(row[2]), int(row[3]), row[4])

    def remove(self, message_id: int, counter: str = "delivered") -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))
            if cursor.rowcount:
                self._count(counter, 1)

    def depth(self) -> int:
        with self._lock:
            (depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(depth)

    def stats(self) -> OutboxStats:
        with self._lock:
            (depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            counts = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return OutboxStats(
            depth=int(depth),
            delivered=int(counts.get("delivered", 0)),
            dropped_expired=int(counts.get("dropped_expired", 0)),
            dropped_overflow=int(counts.get("dropped_overflow", 0)),
            rejected=int(counts.get("rejected", 0)),
        )

    def _count(self, name: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )


class Publisher(Protocol):
    """What the outbox needs of a connection (``MqttClient`` is one)."""

    connected: threading.Event

    def publish_bytes(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, expiry_s: float | None = None
    ) -> Delivery: ...


class OutboxPublisher:
    """Drains an outbox through a connection, oldest first, one message in flight at a time."""

    def __init__(self, outbox: Outbox, client: Publisher, poll_s: float = 0.5) -> None:
        self.outbox = outbox
        self.client = client
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop draining; undelivered messages stay on disk for the next start."""
        self._stop.set()
        self.outbox.changed.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.client.connected.wait(self.poll_s):
                continue
            self.outbox.changed.clear()
            message = self.outbox.peek()
            if message is None:
                self.outbox.changed.wait(self.poll_s)
                continue
            self._deliver(message)

    def _deliver(self, message: OutboxMessage) -> None:
        expiry_s = None
        if message.expires_at is not None:
            expiry_s = max(1.0, message.expires_at - self.outbox.clock.now())
        delivery = self.client.publish_bytes(
            message.topic, message.payload, qos=message.qos, expiry_s=expiry_s
        )
        # paho keeps the message queued across reconnects and re-sends it, so wait on this delivery
        # rather than publishing again (that would duplicate it)
        while not delivery.wait(self.poll_s):
            if self._stop.is_set():
                return
        if delivery.lost:
            return  # still in the outbox: sent again after the reconnect
        if delivery.refused:
            logger.warning("broker refused outbox message on %s: %s; dropped", message.topic, delivery.reason)
            self.outbox.remove(message.id, counter="rejected")
        else:
            self.outbox.remove(message.id)
