"""The shipped Mosquitto template and ACL (config/mosquitto/) on a real broker: password logins, and
roles refused by the broker itself (a recognizer cannot delete, a door controller cannot forge a
decision)."""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from string import Template
from typing import Any

import paho.mqtt.client as paho
import pytest
from mqtt_broker import READY_TIMEOUT_S, Broker, Brokers
from paho.mqtt.enums import CallbackAPIVersion

from edged.api.auth import Authenticator
from edged.api.client import RequestClient
from edged.api.server import ApiServer
from edged.api.settings import ApiSettings
from edged.clock import SystemClock
from edged.directory.crypto import create_key_file
from edged.directory.store import Store
from edged.mqtt.client import MqttClient, MqttSettings
from edged.mqtt.topics import Topics
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.service.settings import DirectorySettings
from edged.types import ImageRGB

CONFIG = Path(__file__).resolve().parents[1] / "config" / "mosquitto"
TOPICS = Topics("pi-01")
USERS = {"edged-pi-01": "dev-pw", "recognizer": "rec-pw", "door-controller": "door-pw", "admin": "adm-pw"}


@pytest.fixture
def site_broker(tmp_path: Path, brokers: Brokers) -> Broker:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (it comes with the mosquitto package)")
    passwords = tmp_path / "passwd"
    for user, password in USERS.items():
        flags = ["-c"] if not passwords.exists() else []
        subprocess.run(
            ["mosquitto_passwd", *flags, "-b", str(passwords), user, password], check=True, timeout=10
        )
    acl = tmp_path / "acl"
    acl.write_text(Template((CONFIG / "acl.template").read_text()).substitute(DEVICE="pi-01"))
    broker = brokers(start=False)
    conf = Template((CONFIG / "edged.conf.template").read_text()).substitute(
        PORT=broker.port, BIND="127.0.0.1", PASSWORD_FILE=passwords, ACL_FILE=acl, STATE_DIR=tmp_path
    )
    broker.conf.write_text(conf + f"log_dest file {broker.log}\n{broker.run_as()}")
    broker.start()
    return broker


def login(broker: Broker, user: str) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=paho.MQTTv5)
    client.username_pw_set(user, USERS[user])
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    assert connected.wait(READY_TIMEOUT_S), f"{user} could not log in"
    return client


def test_roles_are_enforced_by_the_broker(site_broker: Broker, tmp_path: Path) -> None:
    secret = tmp_path / "device-password"
    secret.write_text("dev-pw\n")
    device = MqttClient(
        MqttSettings(port=site_broker.port, username="edged-pi-01", password_file=secret), TOPICS, {}
    )
    seen: list[str] = []
    cond = threading.Condition()
    admin = login(site_broker, "admin")

    def on_message(c: paho.Client, u: object, message: paho.MQTTMessage) -> None:
        with cond:
            seen.append(message.topic)
            cond.notify_all()

    subscribed = threading.Event()
    admin.on_message = on_message
    admin.on_subscribe = lambda *a: subscribed.set()
    admin.subscribe("edged/#", qos=1)
    assert subscribed.wait(READY_TIMEOUT_S)
    device.start()
    recognizer = login(site_broker, "recognizer")
    door = login(site_broker, "door-controller")
    try:
        assert device.connected.wait(READY_TIMEOUT_S)  # the password came from a file
        recognizer.publish(TOPICS.request("persons_delete"), b"{}", qos=1).wait_for_publish(5)
        recognizer.publish(TOPICS.request("identify"), b"{}", qos=1).wait_for_publish(5)
        door.publish(TOPICS.decision("front"), b'{"outcome":"granted"}', qos=1).wait_for_publish(5)
        door.publish(TOPICS.claim("front"), b"{}", qos=1).wait_for_publish(5)
        expected = {TOPICS.status(), TOPICS.request("identify"), TOPICS.claim("front")}
        with cond:  # each sender's allowed message follows its refused one: order proves the refusal
            assert cond.wait_for(lambda: expected <= set(seen), READY_TIMEOUT_S), seen
        assert TOPICS.request("persons_delete") not in seen
        assert TOPICS.decision("front") not in seen
    finally:
        device.stop()
        for client in (admin, recognizer, door):
            client.disconnect()
            client.loop_stop()


def test_anonymous_clients_are_refused(site_broker: Broker) -> None:
    client = MqttClient(MqttSettings(port=site_broker.port), TOPICS, {})
    client.start()
    try:
        assert client.refused.wait(READY_TIMEOUT_S)
        assert not client.connected.is_set()
    finally:
        client.stop()


def test_the_request_api_through_the_site_acl(
    site_broker: Broker,
    tmp_path: Path,
    pipeline: FacePipeline,
    astronaut: ImageRGB,
    encode_image: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The shipped ACL and the API's reply tree fit together: a recognizer gets its detect reply on
    its own reply topic (MQTT v5), its delete request never reaches edged (the broker drops it), and
    another client cannot read the recognizer's replies."""
    secrets = {user: tmp_path / f"{user}.pw" for user in USERS}
    for user, path in secrets.items():
        path.write_text(USERS[user] + "\n")
    clock = SystemClock()
    store = Store.open(tmp_path / "state", create_key_file(tmp_path / "kek"), clock)
    service = FaceService(pipeline, store, DirectorySettings(), pipeline.embedder.model.path.name)
    device = MqttClient(
        MqttSettings(port=site_broker.port, username="edged-pi-01", password_file=secrets["edged-pi-01"]),
        TOPICS,
        {},
    )
    auth = Authenticator(ApiSettings(), TOPICS.device_id, clock, None)
    server = ApiServer(service, ApiSettings(), TOPICS, device, auth)
    server.start()
    device.subscribe(TOPICS.request_wildcard(), server.submit, qos=1)
    device.start()

    def as_user(user: str, client_id: str) -> RequestClient:
        settings = MqttSettings(
            port=site_broker.port, username=user, password_file=secrets[user], client_id=client_id
        )
        return RequestClient(settings, TOPICS.device_id).connect()

    recognizer = as_user("recognizer", "reception-1")
    try:
        assert device.connected.wait(READY_TIMEOUT_S)
        image = base64.b64encode(encode_image(astronaut, ".jpg")).decode()
        reply = recognizer.request("detect", {"image": image}, timeout=30)
        assert reply["ok"] and len(reply["result"]["faces"]) == 1
        # the largest request edged takes passes the shipped broker's packet limit and gets its answer
        big = bytes(6 * 1024 * 1024 + 1)  # one byte over the image cap
        too_big = recognizer.request("detect", {"image": base64.b64encode(big).decode()}, timeout=30)
        assert too_big["error"]["code"] == "InvalidImageSize", too_big
        caplog.set_level(logging.WARNING, logger="edged.mqtt")
        with pytest.raises(TimeoutError):  # dropped by the broker: edged never sees it
            recognizer.request("delete_person_group", {"personGroupId": "staff"}, timeout=2)
        assert [r.getMessage() for r in caplog.records] == []  # the caller reports it, nothing is logged
        assert server.served == 1 and server.failed == 1
        # another account cannot read the recognizer's replies: it may subscribe, the broker delivers nothing
        spy = login(site_broker, "door-controller")
        leaked: list[str] = []
        spy.on_message = lambda c, u, m: leaked.append(m.topic)
        subscribed = threading.Event()
        spy.on_subscribe = lambda *a: subscribed.set()
        assert recognizer.reply_topic == TOPICS.reply("recognizer", "reception-1")
        spy.subscribe(f"{TOPICS.reply('recognizer')}/#", qos=1)
        spy.subscribe(TOPICS.reply("reception-1"), qos=1)  # the client id alone proves nothing
        assert subscribed.wait(READY_TIMEOUT_S)
        try:
            assert recognizer.request("detect", {"image": image}, timeout=30)["ok"]
            time.sleep(0.5)  # the same broker would have delivered to the spy by now
            assert leaked == []
        finally:
            spy.disconnect()
            spy.loop_stop()
    finally:
        recognizer.close()
        server.stop()
        device.stop()
        auth.close()
        store.close()
