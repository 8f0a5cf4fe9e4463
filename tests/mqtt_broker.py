"""A real Mosquitto broker on a free loopback port, for the MQTT tests (no mocks).

``broker`` (a pytest fixture) runs ``edged_bench.broker.Broker`` (shared with ``edged bench daemon``):
it writes a minimal mosquitto.conf into ``tmp_path``, starts ``mosquitto -c`` as a subprocess, waits
(bounded) until the port accepts connections, and terminates it in teardown. It skips the test
when ``mosquitto`` is not installed (CI installs it). ``stop()`` and ``start()`` restart it on the
same port (broker outage tests). Also: ``Watcher``, a plain paho client
that records what it receives, with bounded waits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged_bench.broker import READY_TIMEOUT_S, Broker, find_mosquitto, free_port

__all__ = [
    "READY_TIMEOUT_S",
    "Broker",
    "Watcher",
    "broker",
    "free_port",
    "make_broker",
    "mosquitto_executable",
]


def mosquitto_executable() -> str:
    found = find_mosquitto()
    if found is None:
        pytest.skip(
            "mosquitto is not installed (apt-get install mosquitto); the MQTT tests need a real broker"
        )
    return found


def make_broker(
    tmp_path: Path, extra_conf: str = "", persistent: bool = False, start: bool = True
) -> Iterator[Broker]:
    """A broker in ``tmp_path``, stopped when the generator closes (``start=False``: the caller may
    rewrite ``broker.conf`` first and start it)."""
    broker = Broker(mosquitto_executable(), tmp_path, extra_conf, persistent)
    if start:
        broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from make_broker(tmp_path)


class Watcher:
    """A plain paho 2.x client (not edged's) that records every message on its subscriptions."""

    def __init__(self, port: int, *topics: str, client_id: str = "watcher", persistent: bool = False) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.topics = topics
        self.client.on_connect = lambda c, *args: c.subscribe([(t, 1) for t in topics])
        self.client.reconnect_delay_set(1, 2)
        if persistent:  # the broker keeps the subscription and queues QoS 1 messages while we are away
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
            self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        else:
            self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(READY_TIMEOUT_S), "watcher did not subscribe"

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    def wait_for(self, predicate: object, timeout: float = READY_TIMEOUT_S) -> list[tuple[str, dict, bool]]:
        """Wait until ``predicate(decoded messages)`` is true; returns the decoded messages."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                decoded = [(t, json.loads(p), r) for t, p, r in self.messages]
                if predicate(decoded):
                    return decoded
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout} s; received {decoded}")
                self._cond.wait(remaining)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
