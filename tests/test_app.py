"""The door daemon end to end (edged/app.py): ``edged demo`` as a subprocess on the built-in camera
scene, with and without a real Mosquitto broker, plus the start-up checks of ``App``.

The demo scene (edged/capture/demo.py) shows the enrolled astronaut, then a stranger in profile; the
demo opens the pose limit so the stranger is matched (and unknown) rather than low_quality."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import Broker, Watcher

from edged.app import App
from edged.config import Config
from edged.directory import crypto
from edged.errors import ConfigError
from edged.mqtt.settings import BrokerAddress
from edged.pipeline.pipeline import FacePipeline

REPO = Path(__file__).resolve().parents[1]
DEMO_TIMEOUT_S = 120.0


FORBIDDEN_KEYS = {"image", "images", "embedding", "embeddings", "template", "templates", "chip", "pixels"}


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", "demo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )


def all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(all_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(all_keys(v) for v in value))
    return set()


def check_decisions(decisions: list[dict[str, Any]]) -> None:
    """≥ 1 granted (a person, reason match) and ≥ 1 unknown; well-formed, nothing biometric."""
    for decision in decisions:
        assert {"schema", "event_id", "outcome"} <= set(decision), decision
        assert decision["door"] == "front"
        assert not all_keys(decision) & FORBIDDEN_KEYS, decision
    granted = [d for d in decisions if d["outcome"] == "granted"]
    unknown = [d for d in decisions if d["outcome"] == "unknown"]
    assert granted, decisions
    assert all(d["person_id"] and d["reasons"] == ["match"] for d in granted), granted
    assert len({d["person_id"] for d in granted}) == 1, "the astronaut is one person"
    assert unknown, f"the stranger was not decided unknown: {decisions}"
    assert all(d["person_id"] is None for d in unknown), unknown
    assert len({d["event_id"] for d in decisions}) == len(decisions), "event IDs are unique"
    # the directory the matches came from: the demo enrolled one person in a trained group
    assert {type(d["directory_version"]) for d in decisions} == {int}, decisions
    assert min(d["directory_version"] for d in decisions) > 0


def test_demo_prints_granted_and_unknown_decisions() -> None:
    result = run_demo("--duration", "15")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    check_decisions([json.loads(line) for line in lines])


def test_demo_publishes_birth_decisions_discovery_and_stopped(broker: Broker) -> None:
    watcher = Watcher(broker.port, "edged/t1/#", "homeassistant/device/edged_t1/config")
    try:
        result = run_demo(
            "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--device-id", "t1", "--duration", "15"
        )
        assert result.returncode == 0, result.stderr
        messages = watcher.wait_for(
            lambda ms: any(t == "edged/t1/status" and p["state"] == "stopped" for t, p, _ in ms)
        )
    finally:
        watcher.close()
    states = [p["state"] for t, p, _ in messages if t == "edged/t1/status"]
    assert states[0] == "online" and states[-1] == "stopped", states
    decisions = [p for t, p, _ in messages if t == "edged/t1/door/front/decision"]
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert decisions, messages
    assert {d["event_id"] for d in decisions} <= {d["event_id"] for d in printed}
    check_decisions(decisions)
    (payload,) = [p for t, p, _ in messages if t.startswith("homeassistant/")]  # retained: test_door_mqtt
    assert payload["device"]["identifiers"]
    assert {c["platform"] for c in payload["components"].values()} == {"event", "sensor"}
    assert any(c.get("state_topic") == "edged/t1/door/front/decision" for c in payload["components"].values())
    sessions = [p for t, p, _ in messages if t == "edged/t1/door/front/session"]
    assert {"new", "end"} <= {s["type"] for s in sessions}, sessions


def test_mqtt_urls() -> None:
    assert BrokerAddress.parse("mqtt://127.0.0.1:1884") == BrokerAddress("127.0.0.1", 1884)
    assert BrokerAddress.parse("mqtt://broker.local") == BrokerAddress("broker.local", 1883)
    for bad in ("http://127.0.0.1:1883", "mqtt://", "mqtt://host:99999", "mqtt://host/path", "mqtts://h"):
        with pytest.raises(ConfigError):
            BrokerAddress.parse(bad)  # the daemon's demo speaks plain MQTT only
    both = ("mqtt", "mqtts")  # edged request: TLS too, on 8883 unless the URL says otherwise
    assert BrokerAddress.parse("mqtts://broker.local", schemes=both) == BrokerAddress(
        "broker.local", 8883, True
    )
    assert BrokerAddress.parse("mqtt://broker.local", schemes=both) == BrokerAddress(
        "broker.local", 1883, False
    )
    assert str(BrokerAddress("b", 8884, tls=True)) == "mqtts://b:8884"


@pytest.mark.parametrize(
    ("host", "port", "message"),
    [
        ("", 1883, "host"),
        ("a b", 1883, "host"),
        ("h/x", 1883, "host"),
        ("h", 0, "port"),
        ("h", 65536, "port"),
    ],
)
def test_a_broker_address_is_checked_when_it_is_made(host: str, port: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BrokerAddress(host, port)


def test_a_broker_address_gives_the_connection_settings() -> None:
    address = BrokerAddress.parse("mqtt://broker.local:8884")
    settings = address.settings(Config().mqtt.model_copy(update={"keepalive_s": 45}))
    assert (settings.host, settings.port, settings.keepalive_s) == ("broker.local", 8884, 45)
    assert str(address) == "mqtt://broker.local:8884"
    with pytest.raises(ConfigError, match="not a number"):
        BrokerAddress.parse("mqtt://broker.local:0")


def test_a_bad_demo_broker_url_is_one_line_exit_2_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edged.cli import main

    # no models in this folder: loading the pipeline first would fail otherwise (ModelError, exit 3)
    code = main(["--model-dir", str(tmp_path), "demo", "--mqtt", "http://127.0.0.1:1883", "--duration", "1"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.splitlines() == [
        "edged: BadConfig: MQTT URL 'http://127.0.0.1:1883': expected mqtt://HOST[:PORT]"
    ]
    assert captured.out == ""


def test_config_validates_device_and_door_ids() -> None:
    assert Config().device_id == "edged-1" and Config().doors == {}
    Config.model_validate({"device_id": "door_2", "doors": {"front": {"group": "staff"}}})
    for bad in ({"device_id": "a/b"}, {"device_id": "#"}, {"doors": {"front door": {"group": "staff"}}}):
        with pytest.raises(ValueError, match="not a valid MQTT identifier"):
            Config.model_validate(bad)


@pytest.mark.parametrize("case", ["untrained", "missing", "other model"])
def test_a_door_needs_a_trained_group_of_its_model(
    pipeline: FacePipeline, tmp_path: Path, kek: crypto.Kek, case: str
) -> None:
    from edged.directory.store import Store
    from edged.service.faces import FaceService
    from edged.service.policy import Caller

    MANAGER = Caller("cli", "manager")

    state = tmp_path / "state"
    if case != "missing":  # the group exists: never trained, or enrolled by a terminal of another model
        model = pipeline.embedder.model_id if case == "untrained" else "dlib_resnet_v1_float32.tflite"
        store = Store.open(state, kek)
        FaceService(pipeline, store, Config().directory, model).changes.create_group(
            MANAGER, "staff", "Staff"
        )
        store.close()
    group = "nobody" if case == "missing" else "staff"
    config = Config.model_validate({"doors": {"front": {"group": group}}})
    stop = threading.Event()
    app = App(config, state, kek, None, stop, None, pipeline=pipeline)
    expected = {
        "untrained": "person group 'staff' is not trained",
        "missing": "person group 'nobody' does not",
        "other model": "person group 'staff' uses recognition model dlib_resnet_v1_float32.tflite; this "
        "terminal matches with dlib_resnet_v1_int8.tflite",
    }[case]
    with pytest.raises(ConfigError, match=re.escape(f"door 'front': {expected}")):
        app.start()
    assert stop.is_set() and app.capture is None and app.worker is None
    assert threading.active_count() >= 1
