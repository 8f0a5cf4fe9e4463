"""The shipped Mosquitto template and ACL (config/mosquitto/) on a real broker: password logins, and
roles refused by the broker itself (a recognizer cannot delete, a door controller cannot forge a
decision)."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mqtt_broker import READY_TIMEOUT_S, Broker, Brokers
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.api.auth import Authenticator, public_key_b64, sign_request
from edged.api.client import RequestClient
from edged.api.server import ApiServer
from edged.api.settings import ApiSettings, ClientSettings
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
USERS = {
    "edged-pi-01": "dev-pw",
    "recognizer": "rec-pw",
    "manager": "man-pw",
    "door-controller": "door-pw",
    "admin": "adm-pw",
}


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


@dataclass
class SiteApi:
    """The request server of terminal pi-01 on the site broker, logged in as edged-pi-01."""

    server: ApiServer
    device: MqttClient
    port: int
    secrets: dict[str, Path]
    keys: dict[str, Ed25519PrivateKey]

    def as_user(self, user: str, client_id: str) -> RequestClient:
        settings = MqttSettings(
            port=self.port, username=user, password_file=self.secrets[user], client_id=client_id
        )
        return RequestClient(settings, TOPICS.device_id).connect()


@pytest.fixture
def site(site_broker: Broker, tmp_path: Path, pipeline: FacePipeline) -> Iterator[SiteApi]:
    """The request server of pi-01 on the site broker; API clients ``manager`` and ``recognizer``
    (each the name of the broker account that holds its key, as docs/mqtt-api.md asks)."""
    secrets = {user: tmp_path / f"{user}.pw" for user in USERS}
    for user, path in secrets.items():
        path.write_text(USERS[user] + "\n")
    keys = {client: Ed25519PrivateKey.generate() for client in ("manager", "recognizer")}
    settings = ApiSettings(
        clients={
            client: ClientSettings(role=client, public_key=public_key_b64(key))  # type: ignore[arg-type]
            for client, key in keys.items()
        }
    )
    clock = SystemClock()
    store = Store.open(tmp_path / "state", create_key_file(tmp_path / "kek"), clock)
    service = FaceService(pipeline, store, DirectorySettings(), pipeline.embedder.model.path.name)
    device = MqttClient(
        MqttSettings(port=site_broker.port, username="edged-pi-01", password_file=secrets["edged-pi-01"]),
        TOPICS,
        {},
    )
    auth = Authenticator(settings, TOPICS.device_id, clock, None)
    server = ApiServer(service, settings, TOPICS, device, auth)
    server.start()
    server.listen(device)
    device.start()
    try:
        yield SiteApi(server, device, site_broker.port, secrets, keys)
    finally:
        server.stop()
        device.stop()
        auth.close()
        store.close()


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
        door.publish(TOPICS.challenge("front"), b'{"challenge":"blink"}', qos=1).wait_for_publish(5)
        door.publish(TOPICS.claim("front"), b"{}", qos=1).wait_for_publish(5)
        device.publish(TOPICS.challenge("back"), {"schema": 1, "challenge": "blink"}, qos=1).wait(5)
        expected = {
            TOPICS.status(),
            TOPICS.request("identify"),
            TOPICS.claim("front"),
            TOPICS.challenge("back"),
        }
        with cond:  # each sender's allowed message follows its refused one: order proves the refusal
            assert cond.wait_for(lambda: expected <= set(seen), READY_TIMEOUT_S), seen
        assert TOPICS.request("persons_delete") not in seen
        assert TOPICS.decision("front") not in seen
        assert TOPICS.challenge("front") not in seen, "only the terminal asks challenges"
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
    site: SiteApi,
    site_broker: Broker,
    astronaut: ImageRGB,
    encode_image: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The shipped ACL and the API's reply tree fit together: a recognizer gets its detect reply on
    its own reply topic (MQTT v5), its delete request never reaches edged (the broker drops it), and
    another client cannot read the recognizer's replies."""
    server, device = site.server, site.device
    recognizer = site.as_user("recognizer", "reception-1")
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
        assert recognizer.reply_topic == TOPICS.unsigned_reply("reception-1")
        spy.subscribe(f"{TOPICS.reply('recognizer')}/#", qos=1)
        spy.subscribe(TOPICS.unsigned_reply("reception-1"), qos=1)  # read only by client id reception-1
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


def test_a_user_cannot_make_edged_reply_into_another_users_reply_topic(
    site: SiteApi, site_broker: Broker
) -> None:
    """Two accounts under the shipped ACL: the manager (signing client ``manager``) and a recognizer.
    Whatever the recognizer names as its Response Topic, edged publishes nothing under the manager's
    ``reply/manager/…``; its own requests are answered on its own topics."""
    device, keys = site.device, site.keys
    received: dict[str, list[tuple[str, dict[str, Any]]]] = {"manager": [], "recognizer": []}
    cond = threading.Condition()

    def recorder(user: str) -> Callable[[paho.Client, object, paho.MQTTMessage], None]:
        def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
            with cond:
                received[user].append((m.topic, json.loads(m.payload)))
                cond.notify_all()

        return on_message

    watchers = {}
    for user, topic_filter in (
        ("manager", f"{TOPICS.reply('manager')}/#"),
        ("recognizer", "edged/pi-01/res/#"),
    ):
        watcher = watchers[user] = login(site_broker, user)
        watcher.on_message = recorder(user)
        subscribed = threading.Event()
        watcher.on_subscribe = lambda *a, done=subscribed: done.set()
        watcher.subscribe(topic_filter, qos=1)
        assert subscribed.wait(READY_TIMEOUT_S)
    manager = site.as_user("manager", "enrolment-1")
    intruder = watchers["recognizer"]  # the recognizer's account, speaking MQTT v5 itself
    try:
        assert device.connected.wait(READY_TIMEOUT_S)
        target = TOPICS.reply("manager", "enrolment-1")  # the manager's RequestClient reads exactly this
        for refused, signer in enumerate(
            (None, "recognizer", "manager"), start=1
        ):  # unsigned, its own key, a key it does not hold
            body: dict[str, Any] = {"faceIds": ["a", "b"], "transaction": f"by-{signer}"}
            if signer is not None:
                body = sign_request(body, "group", TOPICS.device_id, signer, keys["recognizer"], time.time())
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = target
            properties.CorrelationData = b"forged"
            intruder.publish(TOPICS.request("group"), json.dumps(body), qos=1, properties=properties)
            with cond:  # each is refused on res/group, which the recognizer may read
                assert cond.wait_for(lambda n=refused: len(received["recognizer"]) == n, READY_TIMEOUT_S)
            topic, reply = received["recognizer"][-1]
            assert topic == TOPICS.response("group") and reply["transaction"] == f"by-{signer}"
            assert reply["error"]["code"] in {"BadArgument", "Unauthorized"}, reply
        # the manager's own signed request is answered under its own name, and only it arrives there
        signed = manager.request(
            "group", {"faceIds": ["a", "b"]}, timeout=30, sign_with=("manager", keys["manager"])
        )
        assert signed["error"]["code"] == "FaceNotFound"
        with cond:
            assert cond.wait_for(lambda: received["manager"], READY_TIMEOUT_S)
        time.sleep(0.5)  # anything forged would have arrived by now
        assert [topic for topic, _ in received["manager"]] == [target]
        # the recognizer's own requests still get their replies: unsigned, and signed with its key
        recognizer = site.as_user("recognizer", "reception-2")
        try:
            assert recognizer.request("group", {"faceIds": ["a", "b"]}, timeout=30)["error"]["code"] == (
                "FaceNotFound"
            )
            own = recognizer.request(
                "group", {"faceIds": ["a", "b"]}, timeout=30, sign_with=("recognizer", keys["recognizer"])
            )
            assert own["error"]["code"] == "FaceNotFound"
        finally:
            recognizer.close()
    finally:
        manager.close()
        for watcher in watchers.values():
            watcher.disconnect()
            watcher.loop_stop()
