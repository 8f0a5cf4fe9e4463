"""The test broker, as a pytest plugin (registered once, in ``tests/conftest.py``): a real Mosquitto on
a free loopback port for the MQTT tests (no mocks). Every broker is ``edged_bench.broker.Broker``, the
launcher ``edged bench daemon`` uses too: it writes a minimal mosquitto.conf into its own directory,
starts ``mosquitto -c``, waits (bounded) until the port accepts connections, and is stopped in teardown;
``stop()`` and ``start()`` restart it on the same port (broker outage tests). Without ``mosquitto``
installed (CI installs it) the tests that ask for a broker are skipped.

Fixtures:

- ``broker``: a running broker for one test (anonymous clients, no persistence);
- ``module_broker``: the same, shared by the tests of one module (mind retained messages);
- ``persistent_broker``: a running broker that keeps sessions and queued messages across its restarts;
- ``brokers``: a factory, ``brokers(extra_conf="", persistent=False, start=True)``, for a broker whose
  configuration a test writes itself (``start=False``: rewrite ``broker.conf``, then ``start()``).

Also ``Watcher``, a plain paho client that records what it receives, with bounded waits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged_bench.broker import READY_TIMEOUT_S, Broker, find_mosquitto, free_port

__all__ = [
    "READY_TIMEOUT_S",
    "Broker",
    "Brokers",
    "Watcher",
    "broker",
    "brokers",
    "free_port",
    "module_broker",
    "mosquitto",
    "persistent_broker",
]


class Brokers(Protocol):
    """The ``brokers`` fixture: makes a broker in a fresh directory, stopped at teardown."""

    def __call__(self, extra_conf: str = "", persistent: bool = False, start: bool = True) -> Broker: ...


@pytest.fixture(scope="session")
def mosquitto() -> str:
    """The ``mosquitto`` executable; skips the test when it is not installed."""
    found = find_mosquitto()
    if found is None:
        pytest.skip(
            "mosquitto is not installed (apt-get install mosquitto); the MQTT tests need a real broker"
        )
    return found


def _factory(mosquitto: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    made: list[Broker] = []

    def make(extra_conf: str = "", persistent: bool = False, start: bool = True) -> Broker:
        broker = Broker(mosquitto, tmp_path_factory.mktemp("broker"), extra_conf, persistent)
        made.append(broker)
        if start:
            broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in made:
            broker.stop()


@pytest.fixture
def brokers(mosquitto: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    yield from _factory(mosquitto, tmp_path_factory)


@pytest.fixture
def broker(brokers: Brokers) -> Broker:
    return brokers()


@pytest.fixture
def persistent_broker(brokers: Brokers) -> Broker:
    return brokers(persistent=True)


@pytest.fixture(scope="module")
def module_broker(mosquitto: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    for make in _factory(mosquitto, tmp_path_factory):
        yield make()


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

    def wait_for(
        self, predicate: Callable[[list[tuple[str, dict, bool]]], bool], timeout: float = READY_TIMEOUT_S
    ) -> list[tuple[str, dict, bool]]:
        """Wait until ``predicate(decoded messages)`` is true; returns the decoded messages."""
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
