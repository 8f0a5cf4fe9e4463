"""Requests the server must refuse without running them, each answered exactly once, against a real
Mosquitto, the real server and a real encrypted directory (issue 9): retained requests, lone UTF-16
surrogates, numbers no field can hold, and Response Topics that are not the requester's own. A
refused request on an operation beyond the recognizer role is also an audit record."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mqtt_broker import READY_TIMEOUT_S, Broker
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_api import DEVICE, TIMEOUT, Env, make_env, validate

from edged.api.auth import sign_request
from edged.api.refusals import RefusalAudit
from edged.errors import BadArgument, PersonGroupNotFound
from edged.mqtt.state import InboundMessage
from edged.mqtt.topics import Topics
from edged.pipeline.pipeline import FacePipeline
from edged.types import ImageRGB

TOPICS = Topics(DEVICE)
SETTLE_S = 0.7
"""How long to wait after a reply for a second one that must not come."""


class Requester:
    """A plain paho client (MQTT v5 or 3.1.1) that publishes raw payloads and records every message
    edged sends on ``res/#``, ``reply/#`` and ``unsigned/#`` (the test broker has no ACL)."""

    def __init__(self, port: int, protocol: str = "5", client_id: str = "raw-1") -> None:
        self.v5 = protocol == "5"
        self.got: list[tuple[str, bytes, bytes | None]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        base = f"edged/{DEVICE}"
        self.client.subscribe([(f"{base}/res/#", 1), (f"{base}/reply/#", 1), (f"{base}/unsigned/#", 1)])
        assert subscribed.wait(READY_TIMEOUT_S)

    def _on_message(self, c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        props = m.properties
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        with self._cond:
            self.got.append((m.topic, bytes(m.payload), correlation))
            self._cond.notify_all()

    def send(
        self,
        op: str,
        payload: bytes,
        response_topic: str | None = None,
        correlation: bytes = b"c-1",
        retain: bool = False,
    ) -> None:
        properties = None
        if response_topic is not None:
            assert self.v5
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = response_topic
            properties.CorrelationData = correlation
        self.client.publish(
            TOPICS.request(op), payload, qos=1, retain=retain, properties=properties
        ).wait_for_publish(5)

    def wait(self, count: int, timeout: float = TIMEOUT) -> list[tuple[str, dict[str, Any], bytes | None]]:
        """The messages once at least ``count`` arrived (decoded), after ``SETTLE_S`` more for extras."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.got) >= count, timeout), f"got {self.got}"
        time.sleep(SETTLE_S)
        with self._cond:
            return [(topic, json.loads(payload), corr) for topic, payload, corr in self.got]

    def clear(self) -> None:
        with self._cond:
            self.got.clear()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def requester5(broker: Broker) -> Iterator[Requester]:
    requester = Requester(broker.port, "5")
    yield requester
    requester.close()


@pytest.fixture(params=["5", "3.1.1"])
def requester(request: pytest.FixtureRequest, broker: Broker) -> Iterator[Requester]:
    requester = Requester(broker.port, request.param)
    yield requester
    requester.close()


@pytest.fixture
def env(tmp_path: Path, broker: Broker, pipeline: FacePipeline) -> Iterator[Env]:
    with make_env(tmp_path, broker, pipeline, "5", set()) as e:
        yield e


def refusals(env: Env, operation: str) -> list[str]:
    """The results of the audit records of refused ``operation`` requests."""
    with env.service.access.lock:  # the daemon's threads share the store's connection
        records = list(env.store.audit.records())
    return [r.result for r in records if r.operation == operation and "refused" in r.result]


def refusals_written(env: Env, operation: str, count: int) -> list[str]:
    """``refusals`` once ``count`` are written (those decided on paho's thread are written by the
    server's ``api-audit`` thread, soon after the reply)."""
    deadline = time.monotonic() + TIMEOUT
    while len(found := refusals(env, operation)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def staff_group_request(env: Env, key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
    """``create_person_group`` of the group ``staff``, signed now as client ``manager`` (by default
    with its key)."""
    body = {"personGroupId": "staff", "name": "Staff"}
    return sign_request(body, "create_person_group", DEVICE, "manager", key or env.manager, time.time())


def one_reply(requester: Requester, op: str, payload: bytes) -> tuple[str, dict[str, Any]]:
    """Send ``payload`` (v5: with a Response Topic of its own) and return its one and only reply."""
    response_topic = TOPICS.unsigned_reply("raw-1") if requester.v5 else None
    requester.send(op, payload, response_topic)
    got = requester.wait(1)
    assert len(got) == 1, got  # exactly one reply
    topic, reply, _ = got[0]
    assert topic == (response_topic or TOPICS.response(op))
    validate(op, reply)
    return topic, reply


# -- defect 2: retained requests ---------------------------------------------------------------------


def test_a_retained_request_is_refused_at_every_connect_and_never_run(
    tmp_path: Path,
    broker: Broker,
    pipeline: FacePipeline,
    requester5: Requester,
    astronaut: ImageRGB,
    encode_image: Callable[..., bytes],
) -> None:
    image = base64.b64encode(encode_image(astronaut, ".jpg")).decode()
    detect = json.dumps({"image": image, "transaction": "kept"}).encode()
    requester5.send("detect", detect, retain=True)  # stored by the broker before edged subscribes
    with make_env(tmp_path, broker, pipeline, "5", set()) as env:
        ((topic, reply, _),) = requester5.wait(1)
        assert topic == TOPICS.response("detect") and reply["transaction"] == "kept"
        assert reply["error"]["code"] == "BadArgument" and "retained" in reply["error"]["message"]
        assert env.server.served == 0

        # a signed directory change, retained while edged is connected: refused now and at every
        # reconnect (the broker hands it over again), audited each time, never run
        requester5.clear()
        signed = staff_group_request(env)
        requester5.send("create_person_group", json.dumps(signed).encode(), retain=True)
        ((_, live, _),) = requester5.wait(1)
        assert live["error"]["code"] == "BadArgument" and "retained" in live["error"]["message"]
        requester5.clear()
        taken_over = threading.Event()
        intruder = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edged-{DEVICE}", protocol=paho.MQTTv5)
        intruder.on_connect = lambda *a: taken_over.set()
        intruder.connect("127.0.0.1", broker.port)  # same client id: the broker drops edged's session
        intruder.loop_start()
        assert taken_over.wait(READY_TIMEOUT_S)
        intruder.disconnect()
        intruder.loop_stop()
        again = requester5.wait(2)  # edged reconnected: both retained requests came again
        assert sorted(r["op"] for _, r, _ in again) == ["create_person_group", "detect"], again
        assert all(r["error"]["code"] == "BadArgument" for _, r, _ in again)
        with pytest.raises(PersonGroupNotFound):
            env.service.get_group("staff")
        assert env.server.served == 0
        audited = refusals_written(env, "create_person_group", 2)
        assert len(audited) == 2 and all("retained" in r for r in audited), audited
        assert env.store.audit.verify().intact


# -- defect 5: lone UTF-16 surrogates ----------------------------------------------------------------

SURROGATES = {
    "escaped-transaction": (b'{"transaction": "\\ud800", %s}', None),
    "raw-bytes": (b'{"transaction": "\xed\xa0\x80", %s}', None),
    "auth-key": (b'{"transaction": "t5", "auth": {"\\udfff": 1}, %s}', "t5"),
    "auth-value": (
        b'{"transaction": "t6", "auth": {"client": "m\\ud800", "ts": 1, "nonce": "%s", "sig": "AA=="}, %%s}'
        % (b"n" * 22),
        "t6",
    ),
}


@pytest.mark.parametrize("case", sorted(SURROGATES))
@pytest.mark.parametrize(
    ("op", "fields"),
    [("detect", b'"image": "aGVsbG8="'), ("create_person_group", b'"personGroupId": "x", "name": "y"')],
)
def test_a_lone_surrogate_gets_exactly_one_reply(
    env: Env, requester: Requester, case: str, op: str, fields: bytes
) -> None:
    template, transaction = SURROGATES[case]
    _, reply = one_reply(requester, op, template % fields)
    assert reply["ok"] is False and reply["error"]["code"] == "BadArgument", reply
    assert "surrogate" in reply["error"]["message"]
    assert reply["transaction"] == transaction  # a transaction that is not valid text is never echoed
    if op == "create_person_group":
        (record,) = refusals(env, op)
        assert "BadArgument" in record and "surrogate" in record
        assert env.store.audit.verify().intact
    # the server keeps serving
    assert env.error("get_person_group", {"personGroupId": "x"}, "manager")["code"] == "PersonGroupNotFound"


# -- defect 6: numbers no field can hold -------------------------------------------------------------

HUGE = b"1" * 5000


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"image": "aGVsbG8=", "faceIdTimeToLive": %s}' % HUGE, "faceIdTimeToLive"),
        (b'{"image": "aGVsbG8=", "x": [0, {"y": -%s}]}' % HUGE, "x.1.y"),
        (b'{"image": "aGVsbG8=", "faceIdTimeToLive": %s}' % str(10**400).encode(), "faceIdTimeToLive"),
        (b'{"image": "aGVsbG8=", "faceIdTimeToLive": 1e400}', "faceIdTimeToLive"),
        (b'{"image": "aGVsbG8=", "faceIdTimeToLive": NaN}', "faceIdTimeToLive"),
        (b'{"image": "aGVsbG8=", "x": [0, 0, -Infinity]}', "x.2"),
    ],
    ids=["5000-digits", "nested-5000-digits", "10**400", "1e400", "NaN", "Infinity"],
)
def test_numbers_no_field_can_hold_are_bad_arguments_naming_the_field(
    env: Env, requester: Requester, payload: bytes, field: str
) -> None:
    _, reply = one_reply(requester, "detect", payload)
    assert reply["error"]["code"] == "BadArgument", reply
    assert reply["error"]["message"].startswith(f"{field}: "), reply


def test_a_signed_request_with_a_malformed_number_is_refused_and_audited(
    env: Env, requester5: Requester
) -> None:
    signed = sign_request(
        {"personGroupId": "x", "name": "y"}, "create_person_group", DEVICE, "manager", env.manager, 10**400
    )
    _, reply = one_reply(requester5, "create_person_group", json.dumps(signed).encode())
    assert reply["error"]["code"] == "BadArgument" and reply["error"]["message"].startswith("auth.ts: ")
    requester5.clear()
    signed = sign_request({"top": 1}, "list_person_groups", DEVICE, "manager", env.manager, time.time())
    payload = json.dumps(signed).encode().replace(b'"top": 1', b'"top": ' + HUGE)
    _, reply = one_reply(requester5, "list_person_groups", payload)
    assert reply["error"]["code"] == "BadArgument" and reply["error"]["message"].startswith("top: ")
    ((who, result),) = [
        (r.actor, r.result) for r in env.store.audit.records() if r.operation == "create_person_group"
    ]
    assert who == "mqtt:unverified:manager" and "refused: BadArgument: auth.ts" in result
    (listed,) = refusals(env, "list_person_groups")
    assert "top" in listed
    assert env.store.audit.verify().intact


# -- defect 10: replies only under the requester's own identity --------------------------------------


def test_a_reply_goes_only_to_the_requesters_own_reply_topic(env: Env, requester5: Requester) -> None:
    """Replies of a request signed by client C go to ``reply/C/…`` only; unsigned ones to
    ``unsigned/…``; any other Response Topic is refused on ``res/<op>`` and nothing is published
    there, also when the request fails before its signature is checked."""
    foreign = TOPICS.reply("manager", "victim")

    def reply_to(op: str, body: dict[str, Any], response_topic: str, signer: str | None) -> tuple[str, Any]:
        keys = {"manager": env.manager, "reception": env.recognizer}
        if signer is not None:
            body = sign_request(body, op, DEVICE, signer, keys[signer], time.time())
        requester5.clear()
        requester5.send(op, json.dumps(body).encode(), response_topic)
        ((topic, reply, _),) = requester5.wait(1)
        return topic, reply

    listing = ("list_person_groups", {"transaction": "t1"})
    topic, reply = reply_to(*listing, foreign, None)  # unsigned, into the manager's topic
    assert topic == TOPICS.response("list_person_groups") and reply["transaction"] == "t1"
    assert reply["error"]["code"] == "BadArgument" and "not allowed" in reply["error"]["message"]
    topic, reply = reply_to("group", {"faceIds": ["a", "b"]}, foreign, "reception")  # signed by another
    assert topic == TOPICS.response("group") and "reception" in reply["error"]["message"]
    topic, reply = reply_to("group", {"faceIds": ["a", "b"]}, foreign, None)  # a recognizer operation
    assert topic == TOPICS.response("group") and reply["error"]["code"] == "BadArgument"
    requester5.clear()  # a request that fails before its signature is checked: not JSON
    requester5.send("list_person_groups", b"{not json", foreign)
    ((topic, reply, _),) = requester5.wait(1)
    assert topic == TOPICS.response("list_person_groups")

    # the owner itself, and unsigned requests on unsigned/…
    topic, reply = reply_to(*listing, foreign, "manager")
    assert topic == foreign and reply["ok"], reply
    topic, reply = reply_to("group", {"faceIds": ["a", "b"]}, TOPICS.unsigned_reply("anyone"), None)
    assert topic == TOPICS.unsigned_reply("anyone") and reply["error"]["code"] == "FaceNotFound"
    assert len(refusals(env, "list_person_groups")) == 2  # the unsigned one and the unparsable one


def test_a_guessed_transaction_cannot_answer_a_signed_request_in_its_place(broker: Broker) -> None:
    """A signed MQTT v5 request with the caller's own (guessable) transaction is answered on its
    reply/C/… topic alone: a refusal another client publishes on res/<op> with that transaction
    (edged would send one for a retained or oversized request carrying it) is not taken as its
    reply. (No edged runs here: the forged refusal is the only message there is.)"""
    from edged.api.auth import generate_private_key
    from edged.api.client import RequestClient
    from edged.mqtt.settings import MqttSettings

    forger = Requester(broker.port, "5", client_id="forger")
    forged = json.dumps(
        {
            "schema": 1,
            "op": "delete_person_group",
            "transaction": "t-1",
            "ok": False,
            "error": {"code": "BadArgument", "message": "forged"},
        }
    ).encode()
    stop = threading.Event()

    def keep_forging() -> None:
        while not stop.wait(0.05):
            forger.client.publish(TOPICS.response("delete_person_group"), forged, qos=1)

    thread = threading.Thread(target=keep_forging)
    with RequestClient(MqttSettings(port=broker.port), DEVICE) as client:
        thread.start()
        try:
            with pytest.raises(TimeoutError):
                client.request(
                    "delete_person_group",
                    {"personGroupId": "staff", "transaction": "t-1"},
                    timeout=1.5,
                    sign_with=("ops", generate_private_key()),
                )
        finally:
            stop.set()
            thread.join(5)
    forger.client.loop_stop()
    forger.client.disconnect()


def test_the_actor_of_a_refusal_before_a_signature_verified_is_marked_unverified(
    env: Env, requester5: Requester
) -> None:
    """Anyone may name a client in ``auth.client``: until its signature verified, the refusal's actor
    says it was claimed (``mqtt:unverified:<client>``), never ``mqtt:<client>``."""
    forged = staff_group_request(env, Ed25519PrivateKey.generate())  # not the manager's key
    _, reply = one_reply(requester5, "create_person_group", json.dumps(forged).encode())
    assert reply["error"]["code"] == "Unauthorized" and "signature" in reply["error"]["message"]
    requester5.clear()
    # the manager's own signature, with a Response Topic of another client's: refused once verified
    signed = staff_group_request(env)
    requester5.send("create_person_group", json.dumps(signed).encode(), TOPICS.reply("reception", "x"))
    ((topic, reply, _),) = requester5.wait(1)
    assert topic == TOPICS.response("create_person_group") and reply["error"]["code"] == "BadArgument"
    with env.service.access.lock:
        actors = [r.actor for r in env.store.audit.records() if "refused" in r.result]
    assert actors == ["mqtt:unverified:manager", "mqtt:manager"]
    with pytest.raises(PersonGroupNotFound):
        env.service.get_group("staff")


# -- review: a refusal on paho's network thread never waits for the directory ------------------------


def test_a_refusal_on_pahos_thread_never_waits_for_the_service_lock(env: Env) -> None:
    """A retained or too large request on a manager operation is refused on paho's network thread:
    ``submit`` answers it and queues its audit record for the server's writer thread, so it returns
    while another thread holds the service lock (a train, an identify, a pruning batch: while paho's
    thread waits, nothing is sent or received and the broker drops the connection), and the records
    are written once the lock is let go."""
    signed = staff_group_request(env)
    topic = TOPICS.request("create_person_group")
    retained = InboundMessage(topic, json.dumps(signed).encode(), 1, retain=True)
    too_large = InboundMessage(topic, b" " * (env.server.max_bytes + 1), 1, retain=False)
    written = env.store.audit.last_seq()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with env.service.access.lock:
            held.set()
            release.wait(TIMEOUT)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(TIMEOUT)
        for message in (retained, too_large):
            submit = threading.Thread(target=env.server.submit, args=(message,))
            submit.start()
            submit.join(TIMEOUT)
            assert not submit.is_alive(), "submit waited for the service lock"
        assert holder.is_alive(), "the lock was held all along"
        assert env.store.audit.last_seq() == written, "nothing is written while the lock is held"
    finally:
        release.set()
        holder.join()
    audited = refusals_written(env, "create_person_group", 2)
    assert len(audited) == 2, audited
    assert "retained" in audited[0] and "bytes; the limit is" in audited[1]
    with env.service.access.lock:
        actors = [r.actor for r in env.store.audit.records() if "refused" in r.result]
    assert actors == ["mqtt:unverified:manager", "mqtt:(unsigned or malformed)"], "claimed, not verified"
    assert env.server.counters()["refusals_unaudited"] == 0
    assert env.store.audit.verify().intact


def test_refusals_waiting_for_the_writer_are_bounded_dropped_and_counted(env: Env) -> None:
    """The queue between paho's thread and the writer is bounded: a refusal that finds it full (the
    writer behind, e.g. waiting for the service lock), or comes once the writer stopped, is dropped
    and counted; the queued ones are written, in order, before ``stop`` returns."""
    audit = RefusalAudit(env.service, depth=2)  # its writer not started yet: nothing leaves the queue
    error = BadArgument("a retained request is never run")
    written = env.store.audit.last_seq()
    for i in range(5):
        audit.refused("create_person_group", f"mqtt:unverified:c{i}", "?", error, queued=True)
    assert audit.unaudited == 3
    audit.start()
    audit.stop()
    audit.refused("create_person_group", "mqtt:unverified:late", "?", error, queued=True)
    assert audit.unaudited == 4
    with env.service.access.lock:
        records = [r for r in env.store.audit.records() if r.seq > written]
    assert [r.actor for r in records] == ["mqtt:unverified:c0", "mqtt:unverified:c1"]
    assert records[0].result == "refused: BadArgument: a retained request is never run"
