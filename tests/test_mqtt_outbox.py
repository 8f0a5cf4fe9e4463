"""The durable outbox: on-disk FIFO (its own SQLite file), ordered at-least-once delivery through a real
Mosquitto after an outage and after a kill -9, expiry and overflow drops counted; the file is
private (0600)."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from mqtt_broker import READY_TIMEOUT_S, Broker, Watcher

from edged.clock import ManualClock
from edged.mqtt.client import MqttClient, MqttSettings
from edged.mqtt.outbox import Outbox, OutboxPublisher
from edged.mqtt.topics import Topics

TOPICS = Topics("pi-01")
DECISIONS = TOPICS.decision("front")


def payload(n: int) -> dict[str, object]:
    return {"schema": 1, "event_id": f"e{n}", "outcome": "granted"}


def event_ids(messages: list[tuple[str, dict, bool]]) -> list[str]:
    return [m["event_id"] for t, m, _ in messages if t == DECISIONS]


class Daemon:
    """The publishing side: a real MqttClient and an OutboxPublisher over an outbox file."""

    def __init__(self, port: int, outbox: Outbox) -> None:
        self.outbox = outbox
        settings = MqttSettings(port=port, reconnect_min_delay_s=1, reconnect_max_delay_s=2)
        self.client = MqttClient(settings, TOPICS, {"edged": "test"}, clock=outbox.clock)
        self.publisher = OutboxPublisher(outbox, self.client, poll_s=0.2)
        self.client.start()
        self.publisher.start()

    def close(self) -> None:
        self.publisher.stop()
        self.client.stop()
        self.outbox.close()


def persistent_watcher(broker: Broker) -> Watcher:
    return Watcher(broker.port, DECISIONS, client_id="door-controller", persistent=True)


def test_messages_put_while_the_broker_is_down_arrive_in_order_once(
    tmp_path: Path, persistent_broker: Broker
) -> None:
    watcher = persistent_watcher(persistent_broker)
    persistent_broker.stop()
    daemon = Daemon(persistent_broker.port, Outbox(tmp_path / "outbox.sqlite3"))
    try:
        for n in range(5):
            daemon.outbox.put(DECISIONS, payload(n), qos=1)
        assert daemon.outbox.depth() == 5
        assert not daemon.client.connected.is_set()
        persistent_broker.start()
        got = watcher.wait_for(lambda m: len(event_ids(m)) >= 5)
        ids = event_ids(got)
        assert ids[:5] == [f"e{n}" for n in range(5)]
        assert ids == [f"e{n}" for n in range(5)]  # exactly once in this setup
        _wait_until(lambda: daemon.outbox.depth() == 0)
        assert daemon.outbox.stats().delivered == 5
    finally:
        daemon.close()
        watcher.close()


CHILD = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from edged.mqtt.outbox import Outbox
    outbox = Outbox(Path(sys.argv[1]))
    for n in range(4):
        outbox.put("edged/pi-01/door/front/decision", {"schema": 1, "event_id": f"k{n}"}, qos=1)
    print("put", flush=True)
    threading.Event().wait(60)
    """
)


def test_messages_survive_a_kill_9_and_are_delivered_after_the_restart(
    tmp_path: Path, persistent_broker: Broker
) -> None:
    watcher = persistent_watcher(persistent_broker)
    path = tmp_path / "outbox.sqlite3"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line: list[str] = []
        done = threading.Event()
        threading.Thread(
            target=lambda: (line.append(child.stdout.readline()), done.set()), daemon=True
        ).start()
        assert done.wait(READY_TIMEOUT_S) and line[0].strip() == "put"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(READY_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(READY_TIMEOUT_S)
        if child.stdout:
            child.stdout.close()
    daemon = Daemon(persistent_broker.port, Outbox(path))  # the restarted daemon reopens the file
    try:
        got = watcher.wait_for(lambda m: len(event_ids(m)) >= 4)
        assert event_ids(got) == ["k0", "k1", "k2", "k3"]
    finally:
        daemon.close()
        watcher.close()


def test_reopening_the_file_keeps_pending_messages_in_order(
    tmp_path: Path, persistent_broker: Broker
) -> None:
    watcher = persistent_watcher(persistent_broker)
    path = tmp_path / "outbox.sqlite3"
    first = Outbox(path)
    for n in range(3):
        first.put(DECISIONS, payload(n))
    first.close()
    second = Outbox(path)
    second.put(DECISIONS, payload(3))
    daemon = Daemon(persistent_broker.port, second)
    try:
        got = watcher.wait_for(lambda m: len(event_ids(m)) >= 4)
        assert event_ids(got) == ["e0", "e1", "e2", "e3"]
    finally:
        daemon.close()
        watcher.close()


def test_expired_messages_are_dropped_and_counted_never_sent(
    tmp_path: Path, persistent_broker: Broker
) -> None:
    watcher = persistent_watcher(persistent_broker)
    clock = ManualClock()
    outbox = Outbox(tmp_path / "outbox.sqlite3", clock=clock)
    outbox.put(DECISIONS, payload(0), expires_at=clock.now() + 100)
    outbox.put(DECISIONS, payload(1), expires_at=clock.now() + 5)
    outbox.put(DECISIONS, payload(2), expires_at=clock.now() + 8)
    outbox.put(DECISIONS, payload(3))
    clock.advance(10)  # e1 and e2 are stale: a door must never act on them
    daemon = Daemon(persistent_broker.port, outbox)
    try:
        got = watcher.wait_for(lambda m: "e3" in event_ids(m))
        assert event_ids(got) == ["e0", "e3"]
        stats = outbox.stats()
        assert stats.dropped_expired == 2
        _wait_until(lambda: outbox.stats().delivered == 2)
    finally:
        daemon.close()
        watcher.close()


def test_overflow_drops_the_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_messages=3)
    with caplog.at_level(logging.WARNING, logger="edged.mqtt.outbox"):
        for n in range(5):
            outbox.put(DECISIONS, payload(n))
    stats = outbox.stats()
    assert (stats.depth, stats.dropped_overflow) == (3, 2)
    assert any("outbox full" in r.getMessage() for r in caplog.records)
    first = outbox.peek()
    assert first is not None and b'"e2"' in first.payload
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite3", max_messages=3)
    assert reopened.stats().dropped_overflow == 2  # counters live in the file too
    reopened.close()


def test_the_outbox_is_its_own_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    outbox.put(DECISIONS, b'{"schema":1}', qos=0)
    with sqlite3.connect(path) as other:  # committed and visible to another connection at once
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert other.execute("SELECT COUNT(*) FROM outbox").fetchone() == (1,)
    assert outbox._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    outbox.close()


def modes(folder: Path, name: str) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.name.startswith(name)}


def test_the_outbox_file_is_private(tmp_path: Path) -> None:
    """Decisions name persons: the file is its owner's only, like the directory, whatever the umask."""
    old_umask = os.umask(0o022)
    try:
        outbox = Outbox(tmp_path / "outbox.sqlite3")
        outbox.put(DECISIONS, payload(1))
    finally:
        os.umask(old_umask)
    assert modes(tmp_path, "outbox.sqlite3") == {
        "outbox.sqlite3": 0o600,
        "outbox.sqlite3-wal": 0o600,
        "outbox.sqlite3-shm": 0o600,
    }
    outbox.close()


def test_an_outbox_file_made_0644_by_an_older_edged_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    outbox.put(DECISIONS, payload(1))
    outbox._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    for file in tmp_path.iterdir():
        file.chmod(0o644)
    reopened = Outbox(path)
    assert set(modes(tmp_path, "outbox.sqlite3").values()) == {0o600}
    assert reopened.depth() == 1
    reopened.close()
    outbox.close()


def test_peek_and_remove_without_a_broker(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    assert outbox.peek() is None
    ids = [outbox.put(DECISIONS, payload(n)) for n in range(3)]
    message = outbox.peek()
    assert message is not None and message.id == ids[0] and message.qos == 1
    outbox.remove(ids[0])
    outbox.remove(ids[0])  # idempotent: counted once
    assert outbox.stats().delivered == 1 and outbox.depth() == 2
    with pytest.raises(ValueError, match="schema"):
        outbox.put(DECISIONS, {"no": "schema"})
    outbox.close()


def _wait_until(predicate: object, timeout: float = READY_TIMEOUT_S) -> None:
    """Bounded polling for state with no event of its own (an SQLite count)."""
    assert callable(predicate)
    stop = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        stop.wait(0.05)
    raise AssertionError("condition not reached in time")
