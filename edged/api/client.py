"""A small synchronous client of the request/response API, for integrators, tests and benchmarks.

    with RequestClient(MqttSettings(host="door.local"), "front") as client:
        reply = client.request("create_person_group", {"personGroupId": "staff", "name": "Staff"},
                               sign_with=("ops", load_private_key(Path("ops.pem"))))

A request is published (QoS 1) to ``edged/<device>/req/<op>``. Over MQTT v5 it carries a Response
Topic under the requester's own identity and a random Correlation Data: for an unsigned request
``edged/<device>/unsigned/<client id>`` (subscribed at connect); for one signed as API client
``signer``, ``edged/<device>/reply/<signer>/<client id>`` (subscribed before the first such request;
edged answers a signed request only under its signer's name, docs/mqtt-api.md). Over MQTT 3.1.1 the client
subscribes to ``edged/<device>/res/<op>`` (before the first request for ``op``) and matches the echoed
``transaction``, which it generates when the body has none; a signed MQTT v5 request listens there
too, for the refusals edged sends before it verified the signature (Busy, too large).
``request`` blocks until the matching reply arrives (TimeoutError otherwise) and returns it parsed:
``{"schema", "op", "transaction", "ok", "result" | "error"}``. Any number of threads may call
``request`` at once; each gets its own reply.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.api.auth import sign_request
from edged.clock import Clock, SystemClock
from edged.errors import BadArgument
from edged.mqtt.connection import Connection
from edged.mqtt.settings import MqttSettings
from edged.mqtt.state import InboundMessage
from edged.mqtt.topics import Topics

__all__ = ["RequestClient"]

TRANSACTION_MAX = 128


@dataclass(slots=True)
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None
    problem: str | None = None


class RequestClient:
    """One broker connection that sends requests to one device and waits for the replies.
    ``connect()`` (or ``with``) before ``request``; ``close()`` after. Thread-safe."""

    def __init__(
        self, settings: MqttSettings, device_id: str, prefix: str = "edged", clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.topics = Topics(device_id, prefix)
        self.clock = clock or SystemClock()
        self.v5 = settings.protocol == "5"
        self.client_id = settings.client_id or f"edged-request-{secrets.token_hex(6)}"
        # the shipped ACL lets only the connection with this client id read unsigned/<client id>
        self.reply_topic: str | None = self.topics.unsigned_reply(self.client_id) if self.v5 else None
        self.connection = Connection(settings, self.client_id)
        self._lock = threading.Lock()
        self._pending: dict[object, _Pending] = {}  # v5: correlation bytes; res/<op>: (op, transaction)
        self._response_ops: dict[str, str] = {}  # res/<op> topic → op
        self._reply_topics: set[str] = set()  # v5: the Response Topics subscribed to

    def reply_topic_for(self, signer: str | None) -> str | None:
        """The MQTT v5 Response Topic of a request signed as API client ``signer`` (None: unsigned):
        ``reply/<signer>/<client id>``, which the broker must let this account read (the shipped ACL:
        the account whose user name is ``signer``); None over MQTT 3.1.1."""
        if not self.v5 or signer is None:
            return self.reply_topic
        return self.topics.reply(signer, self.client_id)

    @property
    def where(self) -> str:
        return self.connection.where

    # lifecycle

    def connect(self, timeout: float = 10.0) -> RequestClient:
        """Connect and (MQTT v5) subscribe to the reply topic; ConnectionError when the broker is
        unreachable or refuses, TimeoutError when it does not answer within ``timeout``."""
        self.connection.connect(timeout)
        if self.reply_topic is not None:
            try:
                self._subscribe_reply(self.reply_topic, timeout)
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> RequestClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # requests

    def request(
        self,
        op: str,
        body: Mapping[str, Any],
        timeout: float = 10.0,
        sign_with: tuple[str, Ed25519PrivateKey] | None = None,
    ) -> dict[str, Any]:
        """Send ``body`` (the operation's fields, optionally ``transaction``) as operation ``op``,
        signed as client ``sign_with[0]`` when given, and return the parsed reply. TimeoutError
        when no reply arrives within ``timeout`` seconds."""
        topic = self.topics.request(op)
        request = {k: v for k, v in body.items() if k != "auth"}
        transaction = request.get("transaction")
        if transaction is not None and (
            not isinstance(transaction, str) or not 1 <= len(transaction) <= TRANSACTION_MAX
        ):
            raise BadArgument(f"transaction must be a string of 1-{TRANSACTION_MAX} characters")
        correlation: bytes | None = None
        signer = None if sign_with is None else sign_with[0]
        reply_topic = self.reply_topic_for(signer)
        keys: list[object] = []
        if self.v5:
            correlation = secrets.token_bytes(16)
            keys.append(correlation)
            if reply_topic is not None and reply_topic not in self._reply_topics:
                self._subscribe_reply(reply_topic, timeout)
        # over 3.1.1 every reply, over v5 a signed request's early refusals, arrive on res/<op>, matched
        # by transaction: over v5 only by a transaction this client drew itself (random), so nobody who
        # can publish on req/<op> can answer in its place with a refusal of a transaction it guessed
        early_refusals = self.v5 and signer is not None and transaction is None
        if not self.v5 or early_refusals:
            if transaction is None:
                transaction = request["transaction"] = secrets.token_hex(16)
            keys.append((op, transaction))
            response_topic = self.topics.response(op)
            with self._lock:
                self._response_ops[response_topic] = op
            self._subscribe(response_topic, timeout)
        if sign_with is not None:
            client, private_key = sign_with
            request = sign_request(request, op, self.topics.device_id, client, private_key, self.clock.now())
        payload = json.dumps(request, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

        pending = _Pending()
        with self._lock:
            if any(key in self._pending for key in keys):
                raise BadArgument(f"a {op} request with transaction {transaction!r} is already waiting")
            for key in keys:
                self._pending[key] = pending
        try:
            delivery = self.connection.publish_bytes(
                topic, payload, qos=1, correlation_data=correlation, response_topic=reply_topic
            )
            if delivery.unsent is not None:
                raise ConnectionError(f"cannot publish {op} to {self.where}: {delivery.unsent}")
            if not pending.done.wait(timeout):
                connection = "" if self.connection.connected.is_set() else "; the broker connection is down"
                reply_on = reply_topic or self.topics.response(op)
                readable = "" if signer is None else ", which this broker account must be allowed to read"
                raise TimeoutError(
                    f"no reply to {op} from device {self.topics.device_id!r} within {timeout:g} s "
                    f"(is edged running and connected to {self.where}? replies expected on "
                    f"{reply_on}{readable}){connection}"
                )
        finally:
            with self._lock:
                for key in keys:
                    self._pending.pop(key, None)
        if pending.reply is None:
            raise ValueError(f"the reply to {op} is not a JSON object: {pending.problem}")
        return pending.reply

    def _subscribe_reply(self, topic: str, timeout: float) -> None:
        self._subscribe(topic, timeout)
        with self._lock:
            self._reply_topics.add(topic)

    def _subscribe(self, topic: str, timeout: float) -> None:
        """Subscribe (once per session) and wait for the broker's SUBACK."""
        subscription = self.connection.subscribe(topic, self._on_reply, qos=1)
        if not subscription.wait(timeout):
            raise TimeoutError(
                f"the MQTT broker at {self.where} did not acknowledge the subscription to {topic}"
            )
        if subscription.refusal is not None:
            raise PermissionError(
                f"the MQTT broker at {self.where} refused the subscription to {topic}: {subscription.refusal}"
            )

    def _on_reply(self, message: InboundMessage) -> None:
        """A message on the reply topic (v5) or a ``res/<op>`` topic (3.1.1), on paho's thread."""
        reply: Any = None
        problem: str | None = None
        try:
            reply = json.loads(message.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            problem = str(exc)
        if not isinstance(reply, dict):
            problem = problem or f"a JSON {type(reply).__name__}"
            reply = None
        key: object = None
        with self._lock:
            if message.topic in self._reply_topics:  # MQTT v5: routed by the correlation data
                key = message.correlation_data
            op = self._response_ops.get(message.topic)
            if op is not None and reply is not None and isinstance(reply.get("transaction"), str):
                key = (op, reply["transaction"])  # 3.1.1: routed by the echoed transaction
            pending = self._pending.get(key) if key is not None else None
        if pending is None or pending.done.is_set():
            return  # not ours, a late reply, or a duplicate (QoS 1)
        pending.reply, pending.problem = reply, problem
        pending.done.set()
