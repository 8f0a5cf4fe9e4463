"""The MQTT connection: a thin wrapper over paho-mqtt 2.x (callback API version 2).

- The last will (retained ``offline`` on the status topic) is set before connecting; a successful
  CONNACK publishes the retained birth ``online`` with the versions and (re)subscribes every handler,
  so a reconnect resubscribes; a refused CONNACK is a failure (logged, recorded, ``connected`` stays
  clear) and paho retries with backoff; so is a failed TCP connect or TLS handshake (untrusted or
  misnamed broker certificate) and a connection the broker closes before its CONNACK (with TLS 1.3,
  a missing or untrusted client certificate), each with its reason in ``state.last_failure``.
  After each successful connect the hooks added with ``on_connected`` run (e.g. the Home Assistant
  discovery, re-published on every connect).
- ``stop()`` publishes a retained ``stopped``, waits (bounded) for the broker's acknowledgement and
  disconnects cleanly, so the broker discards the last will.
- ``publish`` returns a ``Delivery`` that completes when the broker acknowledged the message (QoS 1)
  or it was written (QoS 0). paho keeps QoS 1 messages queued in memory across reconnects; anything
  that must survive the process goes through ``edged.mqtt.outbox`` first.

Secrets come from files only (``password_file``, ``tls.key_file``); they are never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edged.clock import Clock, SystemClock
from edged.mqtt.settings import MqttSettings, TlsSettings
from edged.mqtt.topics import Topics

__all__ = [
    "Delivery",
    "InboundMessage",
    "MqttClient",
    "MqttSettings",
    "MqttState",
    "MqttStats",
    "TlsSettings",
]

logger = logging.getLogger(__name__)

SCHEMA = 1


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A received message. ``response_topic``/``correlation_data`` are MQTT v5 request properties."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


Handler = Callable[[InboundMessage], None]


@dataclass(frozen=True, slots=True)
class MqttStats:
    connected: bool
    connects: int
    disconnects: int
    refusals: int
    last_failure: str | None
    published: int
    received: int
    handler_errors: int


class MqttState:
    """Counters for the stats topic; updated from paho's network thread, read from anywhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connected = False
        self.connects = 0
        self.disconnects = 0
        self.refusals = 0
        self.last_failure: str | None = None
        self.published = 0
        self.received = 0
        self.handler_errors = 0

    def update(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def bump(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def snapshot(self) -> MqttStats:
        with self._lock:
            return MqttStats(
                connected=self.connected,
                connects=self.connects,
                disconnects=self.disconnects,
                refusals=self.refusals,
                last_failure=self.last_failure,
                published=self.published,
                received=self.received,
                handler_errors=self.handler_errors,
            )


class Delivery:
    """Completes when the broker acknowledged a message (QoS 1) or paho wrote it (QoS 0)."""

    def __init__(self, mid: int, qos: int) -> None:
        self.mid = mid
        self.qos = qos
        self._done = threading.Event()
        self.reason: str | None = None
        self.refused = False  # the broker answered with a failure reason code
        self.lost = False  # QoS 0 and the connection dropped before it was written

    def _complete(self, reason: ReasonCode | None, lost: bool = False) -> None:
        if reason is not None and reason.is_failure:
            self.refused = True
            self.reason = str(reason)
        if lost:
            self.lost = True
            self.reason = "connection lost before the message was written"
        self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


def encode(payload: Mapping[str, object]) -> bytes:
    """Compact JSON; every payload carries its ``schema`` version."""
    if "schema" not in payload:
        raise ValueError("an MQTT payload must carry a 'schema' version")
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class MqttClient:
    """One broker connection of one device. ``start()`` returns at once; ``connected`` tells when
    the broker accepted the connection, ``refused`` when it last refused it."""

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        versions: Mapping[str, str],
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.versions = dict(versions)
        self.clock = clock or SystemClock()
        self.connected = threading.Event()
        self.refused = threading.Event()
        self.state = MqttState()
        self._v5 = settings.protocol == "5"
        self._handlers: dict[str, tuple[Handler, int]] = {}
        self._lock = threading.Lock()
        self._waiting: dict[int, Delivery] = {}
        self._early: dict[int, ReasonCode | None] = {}
        self._connect_hooks: list[Callable[[], None]] = []
        self._started = False
        self._answered = False  # a CONNACK arrived on the current connection
        self._socket_error: str | None = None  # paho's last error log line (e.g. a TLS alert)
        self._client = paho_client(settings, settings.client_id or f"edged-{topics.device_id}")
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_unrouted
        self._client.on_log = self._on_log

    # lifecycle

    def start(self) -> None:
        """Set the last will, connect in the background and start paho's network thread."""
        will = encode({"schema": SCHEMA, "state": "offline", "versions": self.versions})
        self._client.will_set(self.topics.status(), will, qos=1, retain=True)
        self._client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive_s)
        self._client.loop_start()
        self._started = True
        logger.info(
            "MQTT connecting to %s:%s (MQTT %s)",
            self.settings.host,
            self.settings.port,
            self.settings.protocol,
        )

    def stop(self) -> bool:
        """Publish the retained ``stopped`` (when connected), disconnect cleanly (the last will is
        discarded) and stop the network thread. True when ``stopped`` was acknowledged."""
        if not self._started:
            return False
        acknowledged = False
        if self.connected.is_set():
            delivery = self.publish(self.topics.status(), self._status("stopped"), qos=1, retain=True)
            acknowledged = delivery.wait(self.settings.stop_timeout_s)
            if not acknowledged:
                logger.warning("MQTT: 'stopped' not acknowledged within %.1f s", self.settings.stop_timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False
        self.connected.clear()
        self.state.update(connected=False)
        return acknowledged

    # publish / subscribe

    def publish(
        self,
        topic: str,
        payload: Mapping[str, object],
        qos: Literal[0, 1] = 0,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> Delivery:
        return self.publish_bytes(topic, encode(payload), qos=qos, retain=retain, expiry_s=expiry_s)

    def publish_bytes(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        expiry_s: float | None = None,
        correlation_data: bytes | None = None,
    ) -> Delivery:
        """Publish encoded bytes. ``expiry_s`` becomes the MQTT v5 message expiry interval (whole
        seconds, at least 1); MQTT 3.1.1 has none, so payloads carry their own expiry time too.
        ``correlation_data`` (v5 only) answers a request that carried it."""
        properties = None
        if self._v5 and (expiry_s is not None or correlation_data is not None):
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if expiry_s is not None:
                properties.MessageExpiryInterval = max(1, math.ceil(expiry_s))
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        delivery = Delivery(info.mid, qos)
        with self._lock:
            if info.mid in self._early:
                delivery._complete(self._early.pop(info.mid))
            else:
                self._waiting[info.mid] = delivery
        self.state.bump("published")
        return delivery

    def on_connected(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` after every successful (re)connect, once the subscriptions are renewed and the
        birth is sent (on paho's network thread: keep it short; an exception is logged and counted in
        ``handler_errors``). A hook added while connected runs at the next connect."""
        with self._lock:
            self._connect_hooks.append(hook)

    def subscribe(self, topic_filter: str, handler: Handler, qos: Literal[0, 1] = 1) -> None:
        """Route messages matching ``topic_filter`` to ``handler`` (called on paho's network thread;
        keep it short). Subscriptions are renewed on every (re)connect."""
        with self._lock:
            self._handlers[topic_filter] = (handler, qos)
        self._client.message_callback_add(topic_filter, self._dispatcher(handler))
        if self.connected.is_set():
            self._client.subscribe(topic_filter, qos=qos)

    # paho callbacks (network thread)

    def _status(self, state: str) -> dict[str, object]:
        return {
            "schema": SCHEMA,
            "state": state,
            "versions": self.versions,
            "time": round(self.clock.now(), 3),
        }

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
            self.connected.clear()
            self.state.update(connected=False, last_failure=f"connection refused: {reason_code}")
            self.state.bump("refusals")
            self.refused.set()
            logger.error(
                "MQTT broker %s:%s refused the connection: %s",
                self.settings.host,
                self.settings.port,
                reason_code,
            )
            return
        with self._lock:
            subscriptions = [(topic, qos) for topic, (_, qos) in self._handlers.items()]
        for topic, qos in subscriptions:
            client.subscribe(topic, qos=qos)
        self.publish(self.topics.status(), self._status("online"), qos=1, retain=True)
        self.state.update(connected=True)
        self.state.bump("connects")
        self.refused.clear()
        self.connected.set()
        logger.info("MQTT connected to %s:%s", self.settings.host, self.settings.port)
        with self._lock:
            hooks = list(self._connect_hooks)
        for hook in hooks:
            try:
                hook()
            except Exception:  # a hook bug must not kill paho's network thread
                self.state.bump("handler_errors")
                logger.exception("MQTT on-connect hook %s failed", getattr(hook, "__name__", hook))

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        # paho passes no exception, but calls this while handling it (TCP or TLS handshake failure)
        failure = _connect_failure(sys.exc_info()[1])
        self.state.update(connected=False, last_failure=failure)
        logger.warning("MQTT broker %s:%s: %s; retrying", self.settings.host, self.settings.port, failure)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self.connected.is_set()
        answered, self._answered = self._answered, False
        socket_error, self._socket_error = self._socket_error, None
        self.connected.clear()
        self.state.update(connected=False)
        if not answered and reason_code.is_failure:
            # closed before any CONNACK: with TLS 1.3 the broker checks the client certificate
            # only after the handshake, so a missing or untrusted one ends up here
            failure = f"connection closed before the broker answered: {socket_error or reason_code}"
            self.state.update(last_failure=failure)
            logger.warning("MQTT broker %s:%s: %s; retrying", self.settings.host, self.settings.port, failure)
        # paho drops unwritten QoS 0 packets on reconnect (QoS 1 ones stay queued and are re-sent)
        with self._lock:
            lost = [d for d in self._waiting.values() if d.qos == 0]
            for delivery in lost:
                del self._waiting[delivery.mid]
        for delivery in lost:
            delivery._complete(None, lost=True)
        if was_connected:
            self.state.bump("disconnects")
            if reason_code.is_failure:
                self.state.update(last_failure=f"disconnected: {reason_code}")
                logger.warning("MQTT disconnected (%s); reconnecting", reason_code)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        with self._lock:
            delivery = self._waiting.pop(mid, None)
            if delivery is None:
                self._early[mid] = reason_code
                return
        delivery._complete(reason_code)
        if delivery.refused:
            logger.warning("MQTT broker refused message %s: %s", mid, delivery.reason)

    def _dispatcher(self, handler: Handler) -> Callable[[paho.Client, object, paho.MQTTMessage], None]:
        def dispatch(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
            self.state.bump("received")
            response_topic = correlation = None
            props = message.properties
            if props is not None:
                response_topic = getattr(props, "ResponseTopic", None)
                correlation = getattr(props, "CorrelationData", None)
            inbound = InboundMessage(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                retain=bool(message.retain),
                response_topic=response_topic,
                correlation_data=correlation,
            )
            try:
                handler(inbound)
            except Exception:  # a handler bug must not kill paho's network thread
                self.state.bump("handler_errors")
                logger.exception("MQTT handler for %s failed", message.topic)

        return dispatch

    def _on_unrouted(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        logger.debug("MQTT message on %s matched no handler", message.topic)

    def _on_log(self, client: paho.Client, userdata: object, level: int, buf: str) -> None:
        """Keep paho's last error line (e.g. ``failed to receive on socket: [SSL: …] … alert …``):
        paho reports a connection closed during the handshake with no reason of its own."""
        if level == paho.MQTT_LOG_ERR:
            self._socket_error = buf


def paho_client(settings: MqttSettings, client_id: str) -> paho.Client:
    """A paho 2.x client for ``settings``: protocol (v5, or 3.1.1 with a clean session), user name and
    password (from its file), TLS, reconnect backoff, and TCP_NODELAY on every socket it opens."""
    if settings.protocol == "5":
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    else:
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311, clean_session=True
        )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password())
    if settings.tls is not None:
        tls = settings.tls
        client.tls_set(
            ca_certs=_path(tls.ca_file), certfile=_path(tls.cert_file), keyfile=_path(tls.key_file)
        )
        client.tls_insecure_set(tls.insecure)
    client.reconnect_delay_set(settings.reconnect_min_delay_s, settings.reconnect_max_delay_s)
    client.on_socket_open = no_delay
    return client


def no_delay(client: paho.Client, userdata: object, sock: Any) -> None:
    """TCP_NODELAY on the broker socket: a decision is one small packet that must leave now. Without
    it, Nagle's algorithm holds it behind the unacknowledged session message sent just before, until
    the broker's delayed ACK (~40 ms on Linux) — docs/BENCHMARKS.md, "daemon"."""
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket: nothing to do
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _connect_failure(exc: BaseException | None) -> str:
    """Why a connection attempt failed (``last_failure``), from the exception paho was handling."""
    if isinstance(exc, ssl.SSLCertVerificationError):  # wrong CA, expired, another host name
        reason = (exc.verify_message or str(exc)).rstrip(".")
        return f"TLS: the broker's certificate was not accepted: {reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return f"broker unreachable: {exc.strerror or exc}"
    return "broker unreachable"


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)
