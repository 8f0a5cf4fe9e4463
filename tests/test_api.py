"""The face operations over MQTT, end to end: a real mosquitto on a loopback port, edged's MQTT
client and request server, the real pipeline, a real encrypted SQLite directory, real Ed25519 keys;
the caller is ``edged.api.client.RequestClient`` in MQTT v5 (response topic + correlation data) and
3.1.1 (``res/<op>`` + transaction). Every reply is validated against the shipped JSON Schema.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mqtt_broker import READY_TIMEOUT_S, Broker
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from skimage import data

from edged.api import catalog
from edged.api.auth import Authenticator, public_key_b64, sign_request
from edged.api.client import RequestClient
from edged.api.operations import OPERATIONS
from edged.api.server import ApiServer
from edged.api.settings import ApiSettings, ClientSettings
from edged.clock import SystemClock
from edged.directory.crypto import create_key_file
from edged.directory.store import Store
from edged.mqtt.client import MqttClient, MqttSettings
from edged.mqtt.topics import Topics
from edged.pipeline.fusion import LivenessChecker
from edged.pipeline.liveness import LivenessAssessor
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.service.settings import DirectorySettings
from edged.types import ImageRGB

DEVICE = "door-1"
TIMEOUT = 30.0


@dataclass
class Env:
    server: ApiServer
    service: FaceService
    store: Store
    port: int
    manager: Ed25519PrivateKey
    recognizer: Ed25519PrivateKey
    admin: Ed25519PrivateKey
    exercised: set[str]
    protocol: str
    client: RequestClient

    def call(self, op: str, body: dict[str, Any], signer: str | None = None, **kw: Any) -> dict[str, Any]:
        keys = {"manager": self.manager, "reception": self.recognizer, "root": self.admin}
        sign_with = None if signer is None else (signer, keys[signer])
        reply = self.client.request(op, body, timeout=TIMEOUT, sign_with=sign_with, **kw)
        validate(op, reply)
        if reply["ok"]:
            self.exercised.add(op)
        return reply

    def ok(self, op: str, body: dict[str, Any], signer: str | None = "manager") -> dict[str, Any]:
        reply = self.call(op, body, signer)
        assert reply["ok"], reply
        result: dict[str, Any] = reply["result"]
        return result

    def error(self, op: str, body: dict[str, Any], signer: str | None = None) -> dict[str, str]:
        reply = self.call(op, body, signer)
        assert not reply["ok"], reply
        error: dict[str, str] = reply["error"]
        return error


def validate(op: str, reply: dict[str, Any]) -> None:
    schema = catalog.shipped(f"{op}.response.json") if op in OPERATIONS else None
    if schema is not None:
        jsonschema.validate(reply, schema)
    assert reply["schema"] == 1 and reply["op"] == op


def b64(image_bytes: bytes) -> str:
    return base64.b64encode(image_bytes).decode("ascii")


@pytest.fixture(scope="module")
def cameraman() -> ImageRGB:
    return np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))


@contextmanager
def make_env(
    tmp_path: Path,
    broker: Broker,
    pipeline: FacePipeline,
    protocol: str,
    exercised: set[str],
    directory: DirectorySettings | None = None,
    liveness: LivenessAssessor | None = None,
    **api: Any,
) -> Iterator[Env]:
    manager, recognizer, admin = (Ed25519PrivateKey.generate() for _ in range(3))
    settings = ApiSettings(
        clients={
            "manager": ClientSettings(role="manager", public_key=public_key_b64(manager.public_key())),
            "reception": ClientSettings(
                role="recognizer", public_key=public_key_b64(recognizer.public_key())
            ),
            "root": ClientSettings(role="admin", public_key=public_key_b64(admin.public_key())),
        },
        **api,
    )
    clock = SystemClock()
    store = Store.open(tmp_path / "state", create_key_file(tmp_path / "kek"), clock)
    service = FaceService(
        pipeline,
        store,
        directory or DirectorySettings(),
        pipeline.embedder.model.path.name,
        liveness=liveness,
    )
    topics = Topics(DEVICE)
    mqtt = MqttClient(MqttSettings(port=broker.port, protocol="5"), topics, {"edged": "test"}, clock)
    auth = Authenticator(settings, DEVICE, clock, tmp_path / "state" / "nonces.sqlite3")
    server = ApiServer(service, settings, topics, mqtt, auth)
    server.start()
    server.listen(mqtt)
    mqtt.start()
    assert mqtt.connected.wait(READY_TIMEOUT_S)
    client = RequestClient(MqttSettings(port=broker.port, protocol=protocol), DEVICE).connect()  # type: ignore[arg-type]
    try:
        yield Env(
            server, service, store, broker.port, manager, recognizer, admin, exercised, protocol, client
        )
    finally:
        client.close()
        server.stop()
        mqtt.stop()
        auth.close()
        store.close()


@pytest.fixture(params=["5", "3.1.1"])
def env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    broker: Broker,
    pipeline: FacePipeline,
    checker: LivenessChecker,
) -> Iterator[Env]:
    with make_env(tmp_path, broker, pipeline, request.param, set(), liveness=checker) as e:
        yield e


# -- every operation, in both protocols --------------------------------------------------------------


def test_every_operation_round_trips(
    env: Env, astronaut: ImageRGB, cameraman: ImageRGB, encode_image: Callable[..., bytes]
) -> None:
    astro = b64(encode_image(astronaut, ".jpg"))
    other = b64(encode_image(cameraman, ".png"))

    group = env.ok("create_person_group", {"personGroupId": "staff", "name": "Staff", "userData": "hq"})
    assert group["trainStatus"] == "notstarted" or group["trainStatus"]
    assert env.ok("update_person_group", {"personGroupId": "staff", "name": "Staff HQ"})["name"] == "Staff HQ"
    assert env.ok("get_person_group", {"personGroupId": "staff"})["name"] == "Staff HQ"
    listed = env.ok("list_person_groups", {})
    assert [g["personGroupId"] for g in listed["personGroups"]] == ["staff"]

    person = env.ok("create_person", {"personGroupId": "staff", "name": "Eileen"})["personId"]
    added = env.ok("add_person_face", {"personGroupId": "staff", "personId": person, "image": astro})
    assert added["personId"] == person and added["persistedFaceId"]
    got = env.ok("get_person", {"personGroupId": "staff", "personId": person})
    assert got["persistedFaceIds"] == [added["persistedFaceId"]]
    assert [p["name"] for p in env.ok("list_persons", {"personGroupId": "staff"})["persons"]] == ["Eileen"]
    assert env.ok("train", {"personGroupId": "staff"})["trainStatus"] == "succeeded"
    card = env.ok("set_person_card", {"personGroupId": "staff", "personId": person, "cardId": "04A1B2C3"})
    assert card["personId"] == person and "04A1B2C3" not in json.dumps(card)
    assert env.service.person_for_card("04a1b2c3") == person
    assert env.ok("delete_person_card", {"cardId": "04A1B2C3"})["card"] == card["card"]
    assert env.error("delete_person_card", {"cardId": "04A1B2C3"}, "manager")["code"] == "CardNotFound"

    # recognizer operations, unsigned (the default unsigned role is recognizer)
    faces = env.ok("detect", {"image": astro}, signer=None)["faces"]
    assert len(faces) == 1 and faces[0]["quality"]["ok"]
    probe = faces[0]["faceId"]
    stranger = env.ok("detect", {"image": other}, signer=None)["faces"][0]["faceId"]
    same = env.ok("verify", {"faceId": probe, "personId": person, "personGroupId": "staff"}, signer=None)
    assert same["isIdentical"] and same["distance"] < same["threshold"]
    assert not env.ok("verify", {"faceId1": probe, "faceId2": stranger}, signer=None)["isIdentical"]
    identified = env.ok("identify", {"faceIds": [probe, stranger], "personGroupId": "staff"}, signer=None)
    by_face = {r["faceId"]: r["candidates"] for r in identified["results"]}
    assert [c["personId"] for c in by_face[probe]] == [person]
    assert by_face[stranger] == []  # never a best guess
    similar = env.ok("find_similar", {"faceId": probe, "faceIds": [stranger, probe]}, signer=None)
    assert [f["faceId"] for f in similar["faces"]] == [probe]
    grouped = env.ok("group", {"faceIds": [probe, stranger]}, signer="reception")  # signed recognizer
    assert grouped == {"groups": [], "messyGroup": [probe, stranger]}

    # face lists
    env.ok("create_face_list", {"faceListId": "visitors", "name": "Visitors"})
    listed_face = env.ok("add_face_list_face", {"faceListId": "visitors", "image": astro})["persistedFaceId"]
    assert env.ok("get_face_list", {"faceListId": "visitors"})["persistedFaceIds"] == [listed_face]
    assert [f["faceListId"] for f in env.ok("list_face_lists", {})["faceLists"]] == ["visitors"]
    similar = env.ok("find_similar", {"faceId": probe, "faceListId": "visitors"}, signer=None)
    assert [f["persistedFaceId"] for f in similar["faces"]] == [listed_face]
    receipt = env.ok("delete_face_list_face", {"faceListId": "visitors", "persistedFaceId": listed_face})
    assert receipt["deleted"] and receipt["signature"]
    env.ok("delete_face_list", {"faceListId": "visitors"})

    # deletions are real: the person is no longer found
    second = env.ok("add_person_face", {"personGroupId": "staff", "personId": person, "image": astro})
    env.ok(
        "delete_person_face",
        {"personGroupId": "staff", "personId": person, "persistedFaceId": second["persistedFaceId"]},
    )
    env.ok("delete_person", {"personGroupId": "staff", "personId": person})
    again = env.ok("identify", {"faceIds": [probe], "personGroupId": "staff"}, signer=None)
    assert again["results"][0]["candidates"] == []
    assert env.error("get_person", {"personGroupId": "staff", "personId": person}, "manager")["code"] == (
        "PersonNotFound"
    )
    env.ok("delete_person_group", {"personGroupId": "staff"})
    assert env.ok("list_person_groups", {})["personGroups"] == []
    # liveness: a one-shot check (unsigned recognizer), and a session with verify (test_liveness_api.py)
    checked = env.ok("detect_liveness", {"images": [astro]}, signer=None)
    assert checked["livenessDecision"] in ("realface", "spoofface", "uncertain") and checked["frames"] == 1
    session = env.ok("create_liveness_session", {"deviceCorrelationId": "kiosk-1", "verifyImage": astro})
    attempt = {"sessionId": session["sessionId"], "authToken": session["authToken"], "images": [astro]}
    tried = env.ok("liveness_session_attempt", attempt, signer=None)
    assert tried["attemptId"] == 1 and tried["verifyResult"]["isIdentical"]
    got = env.ok("get_liveness_session", {"sessionId": session["sessionId"]})
    assert got["status"] == "ResultAvailable" and got["attempts"][0]["result"]["livenessDecision"]
    assert [s["sessionId"] for s in env.ok("list_liveness_sessions", {})["sessions"]] == [
        session["sessionId"]
    ]
    assert env.ok("delete_liveness_session", {"sessionId": session["sessionId"]})["signature"]
    # admin: the audit chain of everything above is intact; a manager may not ask
    assert env.error("verify_audit", {}, "manager")["code"] == "Forbidden"
    audit = env.ok("verify_audit", {}, signer="root")
    assert audit["intact"] and audit["records"] >= 15 and audit["reason"] == ""
    assert env.exercised == set(OPERATIONS), sorted(set(OPERATIONS) - env.exercised)


def test_the_shipped_schemas_are_the_models() -> None:
    files = catalog.generated()
    assert len(files) == 2 * len(OPERATIONS)
    for name, text in files.items():
        assert catalog.shipped(name) == json.loads(text), f"{name} is stale: run tools/export_schemas.py"
    documented = (Path(__file__).resolve().parents[1] / "docs" / "mqtt-api.md").read_text(encoding="utf-8")
    missing = [op for op in OPERATIONS if f"| `{op}` |" not in documented]
    assert not missing, f"docs/mqtt-api.md does not document {missing}"


# -- roles and signatures ----------------------------------------------------------------------------


def test_changes_need_a_manager_signature_and_refusals_are_audited(env: Env) -> None:
    body = {"personGroupId": "staff", "name": "Staff"}
    unsigned = env.error("create_person_group", body)
    assert unsigned["code"] == "Unauthorized" and "manager" in unsigned["message"]
    as_recognizer = env.error("create_person_group", body, signer="reception")
    assert as_recognizer["code"] == "Forbidden" and "reception" in as_recognizer["message"]
    # nothing was created, and both refusals are in the audit chain
    assert env.error("get_person_group", {"personGroupId": "staff"}, "manager")["code"] == (
        "PersonGroupNotFound"
    )
    refused = [r for r in env.store.audit.records() if r.result.startswith("refused")]
    assert [(r.operation, r.actor) for r in refused] == [
        ("create_person_group", "mqtt:(unsigned)"),
        ("create_person_group", "mqtt:reception"),
    ]
    assert env.store.audit.verify().intact


def test_replayed_tampered_and_stale_requests_are_refused(env: Env) -> None:
    def send(op: str, body: dict[str, Any]) -> dict[str, Any]:  # already signed: sent as it is
        reply = raw_request(env.port, op, json.dumps(body).encode())
        validate(op, reply)
        return reply

    signed = sign_request(
        {"personGroupId": "staff", "name": "Staff"},
        "create_person_group",
        DEVICE,
        "manager",
        env.manager,
        time.time(),
    )
    assert send("create_person_group", signed)["ok"]
    replay = send("create_person_group", signed)
    assert replay["error"]["code"] == "Unauthorized" and "replayed" in replay["error"]["message"]

    tampered = sign_request(
        {"personGroupId": "other", "name": "X"},
        "create_person_group",
        DEVICE,
        "manager",
        env.manager,
        time.time(),
    )
    tampered["name"] = "Y"
    assert "bad signature" in send("create_person_group", tampered)["error"]["message"]

    # signed for another operation: the topic's operation is part of the signed message
    other_op = sign_request({"personGroupId": "staff"}, "train", DEVICE, "manager", env.manager, time.time())
    assert send("delete_person_group", other_op)["error"]["code"] == "Unauthorized"

    stale = sign_request(
        {"personGroupId": "old", "name": "Old"}, "create_person_group", DEVICE, "manager", env.manager, 1e9
    )
    assert "timestamp" in send("create_person_group", stale)["error"]["message"]
    assert env.ok("get_person_group", {"personGroupId": "staff"})["name"] == "Staff"  # the first one only
    assert (
        env.error("get_person_group", {"personGroupId": "other"}, "manager")["code"] == "PersonGroupNotFound"
    )


def test_unsigned_requests_can_be_refused_entirely(
    tmp_path: Path,
    broker: Broker,
    pipeline: FacePipeline,
    astronaut: ImageRGB,
    encode_image: Callable[..., bytes],
) -> None:
    with make_env(tmp_path, broker, pipeline, "5", set(), unsigned_role="none") as env:
        image = b64(encode_image(astronaut, ".jpg"))
        assert env.error("detect", {"image": image})["code"] == "Unauthorized"
        assert len(env.ok("detect", {"image": image}, signer="reception")["faces"]) == 1


# -- malformed input ---------------------------------------------------------------------------------


def raw_request(port: int, op: str, payload: bytes, response_topic: str | None = None) -> dict[str, Any]:
    """Publish raw bytes (not JSON, perhaps) and wait for the reply on res/<op> or the response topic."""
    topics = Topics(DEVICE)
    reply_topic = response_topic or topics.response(op)
    got: list[dict[str, Any]] = []
    done = threading.Event()
    subscribed = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"raw-{time.monotonic_ns()}", protocol=paho.MQTTv5
    )

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        got.append(json.loads(m.payload))
        done.set()

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe(topics.response(op), qos=1)
        assert subscribed.wait(READY_TIMEOUT_S)
        properties = None
        if response_topic is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = response_topic
            properties.CorrelationData = b"x"
        client.publish(topics.request(op), payload, qos=1, properties=properties).wait_for_publish(5)
        assert done.wait(TIMEOUT), f"no reply on {reply_topic}"
        return got[0]
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.fixture
def env5(tmp_path: Path, broker: Broker, pipeline: FacePipeline) -> Iterator[Env]:
    with make_env(tmp_path, broker, pipeline, "5", set()) as e:
        yield e


@pytest.mark.parametrize(
    ("op", "payload", "code", "words"),
    [
        ("detect", b"{not json", "BadArgument", "not valid JSON"),
        ("detect", b"\xff\xfe", "BadArgument", "not valid JSON"),
        ("detect", b"[1, 2]", "BadArgument", "JSON object, not list"),
        ("detect", b'{"image": "aGVsbG8=", "colour": 1}', "BadArgument", "colour: unknown field"),
        ("detect", b'{"image": "aGVsbG8=", "returnFaceId": "yes"}', "BadArgument", "returnFaceId"),
        ("detect", b'{"image": "not base64!!"}', "BadArgument", "image is not valid base64"),
        ("detect", b'{"image": "aGVsbG8gd29ybGQ="}', "InvalidImage", "not a JPEG, PNG"),
        ("detect", b"{}", "BadArgument", "image: Field required"),
        ("verify", b'{"faceId1": "a"}', "BadArgument", "faceId1 and faceId2"),
        ("identify", b'{"faceIds": [], "personGroupId": "x"}', "BadArgument", "faceIds"),
        ("unknown_op", b"{}", "BadArgument", "unknown operation"),
        ("verify", b'{"faceId1": "nope", "faceId2": "nope"}', "FaceNotFound", "nope"),
        pytest.param(
            "detect", b"[" * 100_000 + b"]" * 100_000, "BadArgument", "nested too deeply", id="nested"
        ),
    ],
)
def test_malformed_requests_get_error_codes_and_the_server_keeps_serving(
    env5: Env, op: str, payload: bytes, code: str, words: str, astronaut: ImageRGB, encode_image: Any
) -> None:
    reply = raw_request(env5.port, op, payload)
    assert reply["ok"] is False and reply["error"]["code"] == code, reply
    assert words in reply["error"]["message"]
    assert len(env5.ok("detect", {"image": b64(encode_image(astronaut, ".jpg"))}, signer=None)["faces"]) == 1


def test_corrupt_and_oversized_images(
    env5: Env, astronaut: ImageRGB, encode_image: Callable[..., bytes]
) -> None:
    jpeg = encode_image(astronaut, ".jpg")
    truncated = env5.error("detect", {"image": b64(jpeg[: len(jpeg) // 2])})
    assert truncated["code"] == "InvalidImage" and "truncated" in truncated["message"]
    padded = jpeg + bytes(6 * 1024 * 1024 + 1 - len(jpeg))  # one byte over the image cap
    too_big = env5.error("detect", {"image": b64(padded)})  # the request itself is under its cap
    assert too_big["code"] == "InvalidImageSize" and "limit" in too_big["message"]
    huge = b'{"image": "' + b"A" * (env5.server.max_bytes + 10) + b'"}'
    reply = raw_request(env5.port, "detect", huge)
    assert reply["error"]["code"] == "BadArgument" and "the limit is" in reply["error"]["message"]
    assert len(env5.ok("detect", {"image": b64(jpeg)}, signer=None)["faces"]) == 1


def test_response_topics_outside_the_reply_tree_are_refused(env5: Env) -> None:
    forged = Topics(DEVICE).decision("front")
    reply = raw_request(env5.port, "detect", b'{"image": "x", "transaction": "t1"}', response_topic=forged)
    assert reply["error"]["code"] == "BadArgument" and "not allowed" in reply["error"]["message"]
    assert reply["transaction"] == "t1"  # answered on res/detect instead, matched by the transaction


def test_a_full_queue_answers_busy_and_loses_nothing(
    tmp_path: Path,
    broker: Broker,
    pipeline: FacePipeline,
    astronaut: ImageRGB,
    encode_image: Callable[..., bytes],
) -> None:
    image = b64(encode_image(astronaut, ".jpg"))
    with make_env(tmp_path, broker, pipeline, "3.1.1", set(), workers=1, queue_depth=1) as env:
        replies: list[dict[str, Any]] = []
        lock = threading.Lock()

        def send(i: int) -> None:
            reply = env.call("detect", {"image": image, "transaction": f"t{i}"})
            with lock:
                replies.append(reply)

        def wait_until(condition: Callable[[], bool]) -> None:
            deadline = time.monotonic() + TIMEOUT
            while not condition() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert condition()

        # the worker blocks inside its first request's inference
        env.service.recognition.finder._infer.acquire()
        try:
            threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
            threads[0].start()
            wait_until(lambda: env.server.running == 1)
            for t in threads[1:]:
                t.start()
            wait_until(lambda: len(replies) == 4)  # 1 running, 1 queued, 4 refused at once
        finally:
            env.service.recognition.finder._infer.release()
        for t in threads:
            t.join(TIMEOUT)
        assert len(replies) == 6  # every request was answered
        busy = [r for r in replies if not r["ok"]]
        assert len(busy) == 4 and {r["error"]["code"] for r in busy} == {"Busy"}
        assert sorted(r["transaction"] for r in replies) == sorted(f"t{i}" for i in range(6))
        assert env.server.busy == 4 and env.server.served == 2
        assert env.server.counters() == {
            "served": 2,
            "failed": 0,
            "busy": 4,
            "queued": 0,
            "running": 0,
            "refusals_unaudited": 0,
        }


def test_refusals_are_audited_bounded_and_rate_limited(env5: Env) -> None:
    """A refused request writes one short audit record whatever it carried, and at most 60 a minute:
    a flood of refusals must not fill the audit log (and push its other records out)."""
    huge = {"personGroupId": "x", "name": "y"}
    huge["auth"] = {"client": "A" * 100_000, "ts": time.time(), "nonce": "n" * 22, "sig": "AAAA"}
    reply = raw_request(env5.port, "create_person_group", json.dumps(huge).encode())
    assert (
        reply["error"]["code"] == "Unauthorized"
        and "auth.client must be a client ID" in reply["error"]["message"]
    )
    assert len(json.dumps(reply)) < 1000
    (record,) = [r for r in env5.store.audit.records() if r.result.startswith("refused")]
    assert record.actor == "mqtt:(unsigned or malformed)" and len(record.result) < 250
    for _ in range(70):
        assert (
            env5.error("create_person_group", {"personGroupId": "x", "name": "y"})["code"] == "Unauthorized"
        )
    refused = [r for r in env5.store.audit.records() if r.result.startswith("refused")]
    assert len(refused) == 60  # the first minute's budget (the huge one included)
    assert env5.server.counters()["refusals_unaudited"] == 11
    assert env5.store.audit.verify().intact


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_detect_over_the_face_id_quota_answers_quota_exceeded(
    tmp_path: Path,
    broker: Broker,
    pipeline: FacePipeline,
    astronaut: ImageRGB,
    encode_image: Callable[..., bytes],
    protocol: str,
) -> None:
    """All unsigned requests are one client for the quota of live face IDs; a signed client has its
    own; detect without face IDs needs none."""
    directory = DirectorySettings(face_ids_per_client=1)
    with make_env(tmp_path, broker, pipeline, protocol, set(), directory=directory) as env:
        image = b64(encode_image(astronaut, ".jpg"))
        assert env.ok("detect", {"image": image}, signer=None)["faces"][0]["faceId"]
        error = env.error("detect", {"image": image, "transaction": "t-over"})
        assert error["code"] == "QuotaExceeded"
        assert "client 'mqtt:(unsigned)' holds 1 live face IDs" in error["message"]
        assert "directory.face_ids_per_client" in error["message"]
        without = env.ok("detect", {"image": image, "returnFaceId": False}, signer=None)["faces"]
        assert len(without) == 1 and without[0]["faceId"] is None
        assert env.ok("detect", {"image": image}, signer="reception")["faces"][0]["faceId"]
        assert env.error("detect", {"image": image}, signer="reception")["code"] == "QuotaExceeded"
        assert env.store.transient.live().count == 2
