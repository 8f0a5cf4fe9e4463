"""A small synchronous client of the request/response API, for integrators, tests and benchmarks.

    with RequestClient(MqttSettings(host="door.local"), "front") as client:
        reply = client.request("create_person_group", {"personGroupId": "staff", "name": "Staff"},
                               sign_with=("ops", load_private_key(Path("ops.pem"))))

A request is published (QoS 1) to ``edged/<device>/req/<op>``. Over MQTT v5 it carries this client's
Response Topic ``edged/<device>/reply/<client id>`` (subscribed once, at connect) and a random
Correlation Data; over MQTT 3.1.1 the client subscribes to ``edged/<device>/res/<op>`` (before the
first request for ``op``) and matches the echoed ``transaction``, which it generates when the body
has none. ``request`` blocks until the matching reply arrives (TimeoutError otherwise) and returns it
parsed: ``{"schema", "op", "transaction", "ok", "result" | "error"}``. Any number of threads may call
``request`` at once; each gets its own reply.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edged.api.auth import sign_request
from edged.clock import Clock, SystemClock
from edged.errors import BadArgument
from edged.mqtt.client import paho_client
from edged.mqtt.settings import MqttSettings
from edged.mqtt.topics import Topics

__all__ = ["RequestClient"]

logger = logging.getLogger(__name__)

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
        # under the broker user name: the shipped ACL lets each user read only reply/<user>/#
        levels = (self.client_id,) if settings.username is None else (settings.username, self.client_id)
        self.reply_topic: str | None = self.topics.reply(*levels) if self.v5 else None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._answered = False  # the broker answered a CONNECT at least once
        self._socket_error: str | None = None
        self._closed = False
        self._pending: dict[object, _Pending] = {}  # v5: correlation bytes; 3.1.1: (op, transaction)
        self._subscriptions: dict[str, threading.Event] = {}  # topic → SUBACK received (this session)
        self._sub_mids: dict[int, str] = {}
        self._sub_refused: dict[str, str] = {}
        self._response_ops: dict[str, str] = {}  # 3.1.1: res/<op> topic → op
        self._client = paho_client(settings, self.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_log = self._on_log

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    # lifecycle

    def connect(self, timeout: float = 10.0) -> RequestClient:
        """Connect and (MQTT v5) subscribe to the reply topic; ConnectionError when the broker is
        unreachable or refuses, TimeoutError when it does not answer within ``timeout``."""
        try:
            self._client.connect(self.settings.host, self.settings.port, self.settings.keepalive_s)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the MQTT broker at {self.where}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout) or self._refused is not None:
            reason = self._refused
            self.close()
            if reason is not None:
                raise ConnectionError(f"the MQTT broker at {self.where} refused the connection: {reason}")
            raise TimeoutError(
                f"the MQTT broker at {self.where} did not accept the connection in {timeout:g} s"
            )
        if self.reply_topic is not None:
            try:
                self._subscribe(self.reply_topic, timeout)
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._client.disconnect()
        self._client.loop_stop()

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
        properties: Properties | None = None
        if self.v5:
            key: object = secrets.token_bytes(16)
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = self.reply_topic
            properties.CorrelationData = key
        else:
            if transaction is None:
                transaction = request["transaction"] = secrets.token_hex(16)
            key = (op, transaction)
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
            if key in self._pending:
                raise BadArgument(f"a {op} request with transaction {transaction!r} is already waiting")
            self._pending[key] = pending
        try:
            info = self._client.publish(topic, payload, qos=1, properties=properties)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise ConnectionError(f"cannot publish {op} to {self.where}: {paho.error_string(info.rc)}")
            if not pending.done.wait(timeout):
                connection = "" if self._connected.is_set() else "; the broker connection is down"
                reply_on = self.reply_topic or self.topics.response(op)
                raise TimeoutError(
                    f"no reply to {op} from device {self.topics.device_id!r} within {timeout:g} s "
                    f"(is edged running and connected to {self.where}? replies expected on "
                    f"{reply_on}){connection}"
                )
        finally:
            with self._lock:
                self._pending.pop(key, None)
        if pending.reply is None:
            raise ValueError(f"the reply to {op} is not a JSON object: {pending.problem}")
        return pending.reply

    # subscriptions

    def _subscribe(self, topic: str, timeout: float) -> None:
        """Subscribe (once per session) and wait for the broker's SUBACK."""
        with self._lock:
            acked = self._subscriptions.get(topic)
            if acked is None:
                acked = self._subscriptions[topic] = threading.Event()
                self._send_subscribe(topic)
        if not acked.wait(timeout):
            raise TimeoutError(
                f"the MQTT broker at {self.where} did not acknowledge the subscription to {topic}"
            )
        with self._lock:
            refused = self._sub_refused.get(topic)
        if refused is not None:
            raise PermissionError(
                f"the MQTT broker at {self.where} refused the subscription to {topic}: {refused}"
            )

    def _send_subscribe(self, topic: str) -> None:
        """Called with ``_lock`` held, so the SUBACK callback finds the mid."""
        rc, mid = self._client.subscribe(topic, qos=1)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._sub_mids[mid] = topic
        # not connected: _on_connect subscribes again

    # paho callbacks (network thread)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._answered = True
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._connected.set()  # wakes connect(), which reports the refusal
            return
        with self._lock:
            self._sub_mids.clear()
            for topic, acked in self._subscriptions.items():  # a clean session: subscribe again
                if acked.is_set():
                    self._subscriptions[topic] = threading.Event()
                self._send_subscribe(topic)
        self._connected.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._answered and self._refused is None:
            # closed before any CONNACK: e.g. TLS 1.3, where the broker rejects a missing or untrusted
            # client certificate only after the handshake; paho's last error line says why
            self._refused = (
                f"connection closed before the broker answered ({self._socket_error or reason_code})"
            )
            self._connected.set()  # wakes connect(), which reports it
            return
        if self._refused is None:
            self._connected.clear()
        if not self._closed:
            logger.warning("MQTT connection to %s lost (%s); reconnecting", self.where, reason_code)

    def _on_log(self, client: paho.Client, userdata: object, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._socket_error = buf

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._lock:
            topic = self._sub_mids.pop(mid, None)
            if topic is None:
                return
            failures = [str(code) for code in reason_codes if code.is_failure]
            if failures:
                self._sub_refused[topic] = ", ".join(failures)
            else:
                self._sub_refused.pop(topic, None)
            acked = self._subscriptions.get(topic)
        if acked is not None:
            acked.set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
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
        if self.v5 and message.topic == self.reply_topic:  # routed by the correlation data
            props = message.properties
            correlation = getattr(props, "CorrelationData", None) if props is not None else None
            key = bytes(correlation) if correlation is not None else None
        with self._lock:
            op = self._response_ops.get(message.topic)
            if op is not None and reply is not None and isinstance(reply.get("transaction"), str):
                key = (op, reply["transaction"])  # 3.1.1: routed by the echoed transaction
            pending = self._pending.get(key) if key is not None else None
        if pending is None or pending.done.is_set():
            return  # not ours, a late reply, or a duplicate (QoS 1)
        pending.reply, pending.problem = reply, problem
        pending.done.set()
