"""The MQTT client against a real Mosquitto: birth, last will, clean stop, handlers, refusal,
resubscription after a broker restart, MQTT 3.1.1. Every wait is bounded."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import READY_TIMEOUT_S, Broker, Brokers, Watcher
from pydantic import ValidationError

from edged.api.client import RequestClient
from edged.errors import ConfigError
from edged.mqtt.client import InboundMessage, MqttClient, MqttSettings
from edged.mqtt.topics import Topics

VERSIONS = {"edged": "0.1.0", "embedder": "int8"}
TOPICS = Topics("pi-01")


def settings(port: int, **extra: object) -> MqttSettings:
    return MqttSettings.model_validate(
        {"port": port, "reconnect_min_delay_s": 1, "reconnect_max_delay_s": 2, **extra}
    )


@pytest.fixture
def watcher(broker: Broker) -> Iterator[Watcher]:
    w = Watcher(broker.port, TOPICS.status())
    yield w
    w.close()


def states(messages: list[tuple[str, dict, bool]]) -> list[str]:
    return [m["state"] for t, m, _ in messages if t == TOPICS.status()]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_birth_is_retained_and_clean_stop_says_stopped(broker: Broker, protocol: str) -> None:
    client = MqttClient(settings(broker.port, protocol=protocol), TOPICS, VERSIONS)
    client.start()
    try:
        assert client.connected.wait(READY_TIMEOUT_S)
        # `connected` is set once the birth is *sent*; wait until the broker has it (a first watcher sees
        # it, live or retained) before a late subscriber checks that it was kept as retained
        early = Watcher(broker.port, TOPICS.status(), client_id="early")
        try:
            early.wait_for(lambda m: "online" in states(m))
        finally:
            early.close()
        late = Watcher(broker.port, TOPICS.status(), client_id="late")  # subscribes after the birth
        try:
            (_, birth, retained), *_ = late.wait_for(lambda m: "online" in states(m))
            assert retained
            assert birth["schema"] == 1 and birth["versions"] == VERSIONS and birth["time"] > 0
        finally:
            late.close()
    finally:
        assert client.stop()
    after = Watcher(broker.port, TOPICS.status(), client_id="after")
    try:
        got = after.wait_for(lambda m: bool(states(m)))
        assert states(got) == ["stopped"]  # retained "stopped", and the will did not fire
        assert got[0][2]
    finally:
        after.close()
    snapshot = client.state.snapshot()
    assert snapshot.connects == 1 and not snapshot.connected


CHILD = textwrap.dedent(
    """
    import sys, threading
    from edged.mqtt.client import MqttClient, MqttSettings
    from edged.mqtt.topics import Topics
    settings = MqttSettings(port=int(sys.argv[1]), protocol=sys.argv[2])
    client = MqttClient(settings, Topics("pi-01"), {"edged": "t"})
    client.start()
    if not client.connected.wait(10):
        sys.exit(3)
    print("connected", flush=True)
    threading.Event().wait(60)
    """
)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_last_will_fires_offline_when_the_process_is_killed(
    broker: Broker, watcher: Watcher, protocol: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(broker.port), protocol], stdout=subprocess.PIPE, text=True
    )
    try:
        line = _readline(child, READY_TIMEOUT_S)
        assert line.strip() == "connected"
        watcher.wait_for(lambda m: "online" in states(m))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(READY_TIMEOUT_S)
        got = watcher.wait_for(lambda m: "offline" in states(m))
        assert states(got)[-1] == "offline"
        assert [r for t, m, r in got if m["state"] == "offline"] == [False]  # live delivery of the will
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(READY_TIMEOUT_S)
        if child.stdout:
            child.stdout.close()
    late = Watcher(broker.port, TOPICS.status(), client_id="late")
    try:
        assert states(late.wait_for(lambda m: bool(states(m)))) == ["offline"]  # the will is retained
    finally:
        late.close()


def _readline(child: subprocess.Popen[str], timeout: float) -> str:
    result: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        result.append(child.stdout.readline())
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout), "child did not report"
    return result[0]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_handlers_receive_and_resubscribe_after_a_broker_restart(broker: Broker, protocol: str) -> None:
    received: list[InboundMessage] = []
    got = threading.Condition()

    def handler(message: InboundMessage) -> None:
        with got:
            received.append(message)
            got.notify_all()

    def wait_for(payload: bytes) -> None:
        with got:
            assert got.wait_for(lambda: any(m.payload == payload for m in received), READY_TIMEOUT_S)

    client = MqttClient(settings(broker.port, protocol=protocol), TOPICS, VERSIONS)
    claims = client.subscribe(TOPICS.claim("front"), handler)
    assert client.subscribe(TOPICS.claim("front"), handler) is claims  # the same: nothing is sent
    client.start()
    try:
        assert client.connected.wait(READY_TIMEOUT_S)
        requests = client.subscribe(TOPICS.request_wildcard(), handler)  # added while connected
        for subscription in (claims, requests):  # the broker's SUBACK, with no failure code
            assert subscription.wait(READY_TIMEOUT_S) and subscription.refusal is None
        sender = Watcher(broker.port, "unused/topic", client_id="sender")
        sender.client.publish(TOPICS.claim("front"), b"one", qos=1, retain=True).wait_for_publish(5)
        sender.client.publish(TOPICS.request("identify"), b"req", qos=1, retain=True).wait_for_publish(5)
        wait_for(b"one")
        wait_for(b"req")
        sender.close()

        broker.stop()
        assert client.state.snapshot().connects == 1
        broker.start()  # same port; retained state is gone (persistence false)
        sender = Watcher(broker.port, "unused/topic", client_id="sender")
        # retained, so the client gets it whenever its resubscription lands
        sender.client.publish(TOPICS.claim("front"), b"two", qos=1, retain=True).wait_for_publish(5)
        sender.client.publish(TOPICS.request("verify"), b"req2", qos=1, retain=True).wait_for_publish(5)
        wait_for(b"two")
        wait_for(b"req2")
        sender.close()
        assert claims.wait(READY_TIMEOUT_S) and requests.wait(READY_TIMEOUT_S)  # acknowledged again
        assert client.state.snapshot().connects == 2
        assert client.state.snapshot().disconnects == 1
    finally:
        client.stop()
    assert {m.topic for m in received} >= {TOPICS.claim("front"), TOPICS.request("identify")}


def test_a_failing_handler_does_not_stop_the_client(broker: Broker) -> None:
    ok = threading.Event()

    def bad(message: InboundMessage) -> None:
        raise ValueError("handler bug")

    client = MqttClient(settings(broker.port), TOPICS, VERSIONS)
    client.subscribe(TOPICS.claim("a"), bad)
    client.subscribe(TOPICS.claim("b"), lambda m: ok.set())
    client.start()
    try:
        assert client.connected.wait(READY_TIMEOUT_S)
        client.publish_bytes(TOPICS.claim("a"), b"x", qos=1, retain=True).wait(5)
        client.publish_bytes(TOPICS.claim("b"), b"y", qos=1, retain=True).wait(5)
        assert ok.wait(READY_TIMEOUT_S)
        assert client.state.snapshot().handler_errors == 1
    finally:
        client.stop()


def test_v5_request_properties_and_message_expiry(broker: Broker) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got: list[InboundMessage] = []
    seen = threading.Event()
    client = MqttClient(settings(broker.port), TOPICS, VERSIONS)
    client.subscribe(TOPICS.request("detect"), lambda m: (got.append(m), seen.set()))
    client.start()
    expiry_seen = threading.Event()
    expiry: list[int] = []
    try:
        assert client.connected.wait(READY_TIMEOUT_S)
        watcher = Watcher(broker.port, TOPICS.decision("front"), client_id="decisions")

        def on_message(c: paho.Client, u: object, message: paho.MQTTMessage) -> None:
            expiry.append(getattr(message.properties, "MessageExpiryInterval", -1))
            expiry_seen.set()

        watcher.client.on_message = on_message
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "app/replies"
        props.CorrelationData = b"\x01\x02"
        watcher.client.publish(TOPICS.request("detect"), b"{}", qos=1, properties=props)
        assert seen.wait(READY_TIMEOUT_S)
        assert got[0].response_topic == "app/replies" and got[0].correlation_data == b"\x01\x02"
        delivery = client.publish(
            TOPICS.decision("front"), {"schema": 1, "outcome": "granted"}, qos=1, expiry_s=9.2
        )
        assert delivery.wait(READY_TIMEOUT_S) and not delivery.refused
        assert expiry_seen.wait(READY_TIMEOUT_S)
        assert 1 <= expiry[0] <= 10
        watcher.close()
    finally:
        client.stop()


@pytest.fixture
def strict_broker(brokers: Brokers) -> Broker:
    """A broker that refuses anonymous clients."""
    strict = brokers(start=False)
    strict.conf.write_text(strict.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    strict.start()
    return strict


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_refused_connection_is_a_failure_not_connected(strict_broker: Broker, protocol: str) -> None:
    client = MqttClient(settings(strict_broker.port, protocol=protocol), TOPICS, VERSIONS)
    client.start()
    try:
        assert client.refused.wait(READY_TIMEOUT_S)
        assert not client.connected.is_set()
        snapshot = client.state.snapshot()
        assert not snapshot.connected and snapshot.connects == 0 and snapshot.refusals >= 1
        assert snapshot.last_failure is not None and "refused" in snapshot.last_failure
        assert "authori" in snapshot.last_failure.lower()
    finally:
        assert client.stop() is False


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_the_request_client_raises_a_refusal_instead_of_logging_it(
    strict_broker: Broker, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same connection code, in ``connect()`` mode: the refusal is the exception (with the broker's
    reason), not also a log line, and no retries are left running."""
    caplog.set_level(logging.DEBUG, logger="edged.mqtt")
    client = RequestClient(settings(strict_broker.port, protocol=protocol), TOPICS.device_id)
    with pytest.raises(ConnectionError, match=r"refused the connection: Not authori[sz]ed"):
        client.connect(timeout=READY_TIMEOUT_S)
    assert not client.connection.running and not client.connection.connected.is_set()
    assert client.connection.state.snapshot().refusals == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_password_comes_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    s = MqttSettings(username="door", password_file=secret)
    assert s.password() == "s3cret"
    with pytest.raises(ConfigError, match="missing"):
        MqttSettings(username="door", password_file=tmp_path / "missing").password()


@pytest.mark.parametrize(
    "bad",
    [
        {"password": "inline"},
        {"protocol": "3"},
        {"port": 0},
        {"password_file": "/x"},
        {"tls": {"cert_file": "/c.pem"}},
        {"tls": {"ca": "/x"}},
        {"reconnect_min_delay_s": 10, "reconnect_max_delay_s": 5},
    ],
)
def test_settings_reject_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MqttSettings.model_validate(bad)


def test_every_setting_is_documented() -> None:
    from edged.mqtt.client import TlsSettings

    for model in (MqttSettings, TlsSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_payloads_carry_a_schema(broker: Broker) -> None:
    client = MqttClient(settings(broker.port), TOPICS, VERSIONS)
    with pytest.raises(ValueError, match="schema"):
        client.publish(TOPICS.stats(), {"fps": 1.0})
