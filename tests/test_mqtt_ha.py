"""Home Assistant device discovery (edged/mqtt/ha.py) and the client's on-connect hooks.

The discovery payload is checked against Home Assistant's device-discovery format (device and origin
blocks, components with a platform and a unique_id), and its templates are rendered with Jinja2, the
engine Home Assistant renders them with, on real decision and status payloads. The on-connect hooks
run against a real Mosquitto, across a broker restart."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from mqtt_broker import READY_TIMEOUT_S, Broker, Watcher

from edged.clock import ManualClock
from edged.door.decider import Decider
from edged.door.events import OUTCOMES, FaceObservation
from edged.door.settings import DoorSettings
from edged.errors import ConfigError
from edged.inference.manifest import Calibration, FarThreshold
from edged.matcher import Match
from edged.mqtt.client import MqttClient, MqttSettings
from edged.mqtt.ha import EVENT_TYPES, discovery_bytes, discovery_payload
from edged.mqtt.settings import HaSettings
from edged.mqtt.topics import Topics

TOPICS = Topics("pi-01")
DOORS = ["front", "garage"]
CAL = Calibration(
    default_far=1e-3,
    default_threshold=0.54,
    thresholds=(FarThreshold(1e-2, 0.61, 1_000_000), FarThreshold(1e-4, 0.47, 1_000_000)),
    points=((0.0, 1.0), (0.54, 0.5), (1.0, 0.0)),
)


def render(template: str, value: dict[str, Any]) -> str:
    import jinja2  # the test extra installs it: these tests never skip in CI

    return str(jinja2.Environment().from_string(template).render(value_json=value))


def payload(**settings: Any) -> dict[str, Any]:
    return discovery_payload(TOPICS, DOORS, HaSettings(**settings), "0.1.0")


def test_the_device_origin_and_components_follow_the_device_discovery_format() -> None:
    message = payload()
    assert TOPICS.ha_discovery() == "homeassistant/device/edged_pi-01/config"
    assert message["device"] == {
        "identifiers": ["edged_pi-01"],
        "name": "edged pi-01",
        "manufacturer": "edged",
        "model": "door terminal",
        "sw_version": "0.1.0",
    }
    assert message["origin"]["name"] == "edged" and message["origin"]["sw_version"] == "0.1.0"
    components = message["components"]
    assert all({"platform", "unique_id"} <= set(c) for c in components.values())
    unique_ids = [c["unique_id"] for c in components.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    assert all("pi-01" in u for u in unique_ids), "unique IDs must not collide between terminals"
    events = {c["state_topic"]: c for c in components.values() if c["platform"] == "event"}
    assert set(events) == {TOPICS.decision(d) for d in DOORS}
    assert all(c["event_types"] == list(EVENT_TYPES) for c in events.values())
    (status,) = [c for c in components.values() if c["state_topic"] == TOPICS.status()]
    assert status["platform"] == "sensor" and status["entity_category"] == "diagnostic"
    assert "availability" not in status, "the status sensor shows offline/stopped instead of unavailable"
    assert all(c["availability"][0]["topic"] == TOPICS.status() for c in events.values())
    assert json.loads(discovery_bytes(TOPICS, DOORS, HaSettings(), "0.1.0")) == message


def test_every_decision_outcome_is_an_event_type() -> None:
    assert set(OUTCOMES) <= set(EVENT_TYPES)


def decision_payloads() -> list[dict[str, Any]]:
    """Real decision payloads: a granted one and an unknown one from the decider."""
    clock = ManualClock()
    decider = Decider("front", DoorSettings(group="staff", trigger_frames=1), CAL, clock)
    out = []
    for track, distance in ((1, 0.2), (2, 0.9)):
        match = [Match("ada", "f", distance)] if distance < decider.cap else []
        face = FaceObservation(track, (), 120.0, group=tuple(match))
        events = decider.update([face], captured_at=clock.now() - 0.05)
        out += [d.to_payload() for d in events.decisions]
        decider.update([], ended=[track])
        clock.advance(10)
    assert [p["outcome"] for p in out] == ["granted", "unknown"]
    return out


def test_the_event_template_maps_the_outcome_to_the_event_type() -> None:
    (event,) = [c for c in payload()["components"].values() if c["platform"] == "event"][:1]
    for decision in decision_payloads():
        rendered = json.loads(render(event["value_template"], decision))
        assert rendered["event_type"] == decision["outcome"] and rendered["event_type"] in EVENT_TYPES
        assert rendered["reasons"] == ",".join(decision["reasons"])
        assert decision["person_id"] is None or decision["person_id"] not in json.dumps(rendered)


def test_availability_and_status_templates() -> None:
    components = payload()["components"]
    (event, *_) = [c for c in components.values() if c["platform"] == "event"]
    (status,) = [c for c in components.values() if c["state_topic"] == TOPICS.status()]
    availability = event["availability"][0]
    for state, available in (("online", "online"), ("offline", "offline"), ("stopped", "offline")):
        value = {"schema": 1, "state": state, "versions": {}, "time": 1.0}
        assert render(availability["value_template"], value) == available
        assert render(status["value_template"], value) == state
        assert state in status["options"]
    assert availability["payload_available"] == "online"


def test_the_identity_sensor_exists_only_when_exposed() -> None:
    hidden = payload()
    assert "person_id" not in json.dumps(hidden), "no entity may read the person by default"
    shown = payload(expose_identity=True)
    sensors = [c for c in shown["components"].values() if c["unique_id"].endswith("_identity")]
    assert [c["state_topic"] for c in sensors] == [TOPICS.decision(d) for d in DOORS]
    granted, unknown = decision_payloads()
    assert render(sensors[0]["value_template"], granted) == "ada"
    assert render(sensors[0]["value_template"], unknown) == "None"  # Home Assistant: state unknown


def test_prefix_and_door_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="not a valid MQTT identifier"):
        HaSettings(discovery_prefix="home/assistant")
    assert Topics("pi-01").ha_discovery("ha") == "ha/device/edged_pi-01/config"
    with pytest.raises(ConfigError, match="door id"):
        discovery_payload(TOPICS, ["front door"], HaSettings(), "0.1.0")


# -- on-connect hooks, against a real broker ----------------------------------------------------------


def test_hooks_run_on_every_connect_and_a_failing_one_is_contained(broker: Broker) -> None:
    calls: list[int] = []
    called = threading.Condition()

    def hook() -> None:
        with called:
            calls.append(1)
            called.notify_all()

    def bad() -> None:
        raise RuntimeError("hook bug")

    settings = MqttSettings(port=broker.port, reconnect_min_delay_s=1, reconnect_max_delay_s=2)
    client = MqttClient(settings, TOPICS, {"edged": "t"})
    client.on_connected(bad)
    client.on_connected(hook)
    client.start()
    try:
        with called:
            assert called.wait_for(lambda: len(calls) == 1, READY_TIMEOUT_S)
        assert client.state.snapshot().handler_errors == 1
        watcher = Watcher(broker.port, TOPICS.status())
        try:
            watcher.wait_for(lambda m: any(p["state"] == "online" for _, p, _ in m))  # birth still sent
        finally:
            watcher.close()
        broker.stop()
        broker.start()
        with called:
            assert called.wait_for(lambda: len(calls) == 2, 3 * READY_TIMEOUT_S), "not run on reconnect"
        assert client.state.snapshot().handler_errors == 2
    finally:
        client.stop()
