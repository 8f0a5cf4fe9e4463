"""A real Mosquitto broker on a free loopback port, for the MQTT tests (no mocks).

``broker`` (a pytest fixture) writes a minimal mosquitto.conf into ``tmp_path``, starts
``mosquitto -c`` as a subprocess, waits (bounded) until the port accepts connections, and terminates
it in teardown. It skips the test when ``mosquitto`` is not installed (CI installs it). ``stop()`` and
``start()`` restart it on the same port (broker outage tests). Also: ``Watcher``, a plain paho client
that records what it receives, with bounded waits.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

READY_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    def __init__(
        self, executable: str, directory: Path, extra_conf: str = "", persistent: bool = False
    ) -> None:
        self.executable = executable
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        persistence = (
            f"persistence true\npersistence_location {directory}/\n" if persistent else "persistence false\n"
        )
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persistence}"
            f"log_dest file {self.log}\nlog_type all\n{self.run_as()}{extra_conf}"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def run_as() -> str:
        """Started as root, mosquitto switches to the ``mosquitto`` user, which cannot read tmp_path."""
        return f"user {getpass.getuser()}\n" if os.geteuid() == 0 else ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.executable, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)  # polling a port: no event to wait on
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {READY_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=READY_TIMEOUT_S)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None


def mosquitto_executable() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
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
