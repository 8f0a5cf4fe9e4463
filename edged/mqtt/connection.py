"""One broker connection over paho-mqtt 2.x (callback API version 2): what the daemon's device
connection (``edged.mqtt.client.MqttClient``) and the request client (``edged.api.client.RequestClient``)
have in common, written once.

- ``start()`` connects in the background: paho retries with backoff and reconnects after a loss, and
  each failure is logged and recorded. ``connect(timeout)`` connects now and raises instead:
  ConnectionError when the broker is unreachable, refuses, or closes the connection before it
  answered; TimeoutError when it does not answer in time. Afterwards paho reconnects by itself (and
  logs); a refused message or subscription is then the caller's to report (``Delivery``,
  ``Subscription``), not logged.
- A CONNACK with a failure reason code is a refusal (``refused`` set, ``connected`` stays clear,
  counted in ``state.refusals``); so, without a CONNACK, is a failed TCP connect or TLS handshake
  (untrusted or misnamed broker certificate) and a connection the broker closes before its CONNACK
  (with TLS 1.3, a missing or untrusted client certificate), whose reason is paho's last error line.
  Each failure's reason is ``state.last_failure``.
- A successful CONNACK renews every subscription (a reconnect resubscribes), runs ``_on_session``
  (the daemon's birth message), sets ``connected``, then runs the hooks added with ``on_connected``.
- ``subscribe`` routes a topic filter to a handler (an ``InboundMessage`` on paho's network thread; an
  exception is logged and counted, never kills the thread) and returns its ``Subscription``, which
  tracks the broker's SUBACK for the current session and the failure reason codes it carried.
- ``publish_bytes`` returns a ``Delivery`` that completes when the broker acknowledged the message
  (QoS 1: PUBACK, ``refused`` with the reason when it carried a failure code) or paho wrote it
  (QoS 0; ``lost`` when the connection dropped first). paho keeps QoS 1 messages queued in memory
  across reconnects; anything that must survive the process goes through ``edged.mqtt.outbox`` first.

Secrets come from files only (``password_file``, ``tls.key_file``); they are never logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edged.mqtt.settings import MqttSettings
from edged.mqtt.state import Delivery, Handler, InboundMessage, MqttState, Subscription

__all__ = ["Connection", "connect_failure", "no_delay", "paho_client"]

logger = logging.getLogger(__name__)


class Connection:
    """One broker connection. ``start()`` (background) or ``connect()`` (now), ``close()`` after.
    ``connected`` is set while the broker has accepted the connection, ``refused`` since it last
    refused it. Thread-safe."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.v5 = settings.protocol == "5"
        self.connected = threading.Event()
        self.refused = threading.Event()
        self.state = MqttState()
        self._lock = threading.Lock()
        self._running = False
        self._background = False  # start(): failures are logged; connect(): the caller reports them
        self._waiting_first = False  # connect() waits for the first answer: it raises, nothing is logged
        self._first_answer = threading.Event()  # a CONNACK, or the connection closed before one
        self._refusal: str | None = None  # why the broker refused the last attempt
        self._online = False  # a CONNACK accepted the current connection (subscriptions were renewed)
        self._answered = False  # a CONNACK arrived on the current connection
        self._socket_error: str | None = None  # paho's last error log line (e.g. a TLS alert)
        self._subscriptions: dict[str, Subscription] = {}
        self._suback: dict[int, Subscription] = {}  # SUBSCRIBE mid → its subscription
        self._waiting: dict[int, Delivery] = {}
        self._early: dict[int, ReasonCode | None] = {}
        self._connect_hooks: list[Callable[[], None]] = []
        self._client = paho_client(settings, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_unrouted
        self._client.on_log = self._on_log

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def running(self) -> bool:
        return self._running

    # lifecycle

    def start(self) -> None:
        """Connect in the background and start paho's network thread (it retries with backoff)."""
        self._background = True
        self._client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive_s)
        self._client.loop_start()
        self._running = True
        logger.info("MQTT connecting to %s (MQTT %s)", self.where, self.settings.protocol)

    def connect(self, timeout: float = 10.0) -> None:
        """Connect now and wait (bounded) for the broker's answer. ConnectionError when the broker is
        unreachable, refuses, or closes the connection before it answered; TimeoutError when it does
        not answer within ``timeout``. Once connected, paho reconnects by itself after a loss."""
        self._waiting_first = True
        try:
            try:
                self._client.connect(self.settings.host, self.settings.port, self.settings.keepalive_s)
            except OSError as exc:
                raise ConnectionError(f"cannot reach the MQTT broker at {self.where}: {exc}") from exc
            self._client.loop_start()
            self._running = True
            answered = self._first_answer.wait(timeout)
            refusal = self._refusal
        finally:
            self._waiting_first = False
        if answered and self.connected.is_set():
            return
        self.close()
        if refusal is not None:
            raise ConnectionError(f"the MQTT broker at {self.where} refused the connection: {refusal}")
        raise TimeoutError(f"the MQTT broker at {self.where} did not accept the connection in {timeout:g} s")

    def close(self) -> None:
        """Disconnect (cleanly: the broker discards a last will) and stop the network thread."""
        with self._lock:
            if not self._running:
                return
            self._running = False
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        self.state.update(connected=False)

    def socket(self) -> object:
        """The socket paho made for the current connection (None while there is none)."""
        return self._client.socket()

    # publish / subscribe

    def publish_bytes(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        expiry_s: float | None = None,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> Delivery:
        """Publish encoded bytes. MQTT v5 only: ``expiry_s`` becomes the message expiry interval (whole
        seconds, at least 1; 3.1.1 has none, so payloads carry their own expiry time too);
        ``correlation_data`` and ``response_topic`` are the request/reply properties."""
        properties = None
        if self.v5 and (expiry_s is not None or correlation_data is not None or response_topic is not None):
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if expiry_s is not None:
                properties.MessageExpiryInterval = max(1, math.ceil(expiry_s))
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
            if response_topic is not None:
                properties.ResponseTopic = response_topic
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        unsent = None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            unsent = paho.error_string(info.rc)
        delivery = Delivery(info.mid, qos, unsent)
        with self._lock:
            if info.mid in self._early:
                delivery._complete(self._early.pop(info.mid))
            else:
                self._waiting[info.mid] = delivery
        self.state.bump("published")
        return delivery

    def subscribe(
        self, topic_filter: str, handler: Handler, qos: int = 1, retain_as_published: bool = False
    ) -> Subscription:
        """Route messages matching ``topic_filter`` to ``handler`` (called on paho's network thread;
        keep it short) and subscribe: now when connected, and again on every (re)connect. The same
        filter, handler and options again is the same subscription (nothing is sent).
        ``retain_as_published`` (MQTT v5; ignored by 3.1.1): a message published retained while
        subscribed arrives with its retain flag set too, not only one stored before the subscription."""
        with self._lock:
            known = self._subscriptions.get(topic_filter)
            if (
                known is not None
                and known.handler == handler
                and known.qos == qos
                and known.retain_as_published == retain_as_published
            ):
                return known
            subscription = Subscription(topic_filter, handler, qos, retain_as_published)
            self._subscriptions[topic_filter] = subscription
            self._client.message_callback_add(topic_filter, self._dispatcher(handler))
            if self._online:
                self._send_subscribe(subscription)
        return subscription

    def on_connected(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` after every successful (re)connect, once the subscriptions are renewed (on
        paho's network thread: keep it short; an exception is logged and counted in
        ``handler_errors``). A hook added while connected runs at the next connect."""
        with self._lock:
            self._connect_hooks.append(hook)

    def _send_subscribe(self, subscription: Subscription) -> None:
        """Called with ``_lock`` held, so the SUBACK callback finds the mid."""
        subscription._acked.clear()
        subscription.refusal = None
        if self.v5 and subscription.retain_as_published:
            options = SubscribeOptions(qos=subscription.qos, retainAsPublished=True)
            rc, mid = self._client.subscribe(subscription.topic_filter, options=options)
        else:
            rc, mid = self._client.subscribe(subscription.topic_filter, qos=subscription.qos)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._suback[mid] = subscription
        # not connected after all: the next connect subscribes again

    def _on_session(self) -> None:
        """Called on every successful connect, after the subscriptions are renewed and before
        ``connected`` is set (the daemon publishes its birth here)."""

    # paho callbacks (network thread)

    def _report(self, level: int, message: str, *args: object) -> None:
        """Log a connection failure, unless ``connect()`` is waiting for it (it raises instead)."""
        if not self._waiting_first:
            logger.log(level, message, *args)

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
            self._refusal = str(reason_code)
            self.connected.clear()
            self.state.update(connected=False, last_failure=f"connection refused: {reason_code}")
            self.state.bump("refusals")
            self.refused.set()
            self._report(logging.ERROR, "MQTT broker %s refused the connection: %s", self.where, reason_code)
            self._first_answer.set()
            return
        with self._lock:
            self._online = True
            self._suback.clear()
            for subscription in self._subscriptions.values():  # a clean session: subscribe again
                self._send_subscribe(subscription)
        self._on_session()
        self._refusal = None
        self.state.update(connected=True)
        self.state.bump("connects")
        self.refused.clear()
        self.connected.set()
        self._first_answer.set()
        logger.info("MQTT connected to %s", self.where)
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
        failure = connect_failure(sys.exc_info()[1])
        self.state.update(connected=False, last_failure=failure)
        self._report(logging.WARNING, "MQTT broker %s: %s; retrying", self.where, failure)

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
        with self._lock:
            self._online = False
        self.connected.clear()
        self.state.update(connected=False)
        if not answered and reason_code.is_failure:
            # closed before any CONNACK: with TLS 1.3 the broker checks the client certificate
            # only after the handshake, so a missing or untrusted one ends up here
            failure = f"connection closed before the broker answered: {socket_error or reason_code}"
            self._refusal = failure
            self.state.update(last_failure=failure)
            self._report(logging.WARNING, "MQTT broker %s: %s; retrying", self.where, failure)
            self._first_answer.set()
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
                logger.warning("MQTT disconnected from %s (%s); reconnecting", self.where, reason_code)

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
        if delivery.refused and self._background:  # else the caller reports it
            logger.warning("MQTT broker refused message %s: %s", mid, delivery.reason)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._lock:
            subscription = self._suback.pop(mid, None)
        if subscription is None:
            return
        failures = [str(code) for code in reason_codes if code.is_failure]
        subscription.refusal = ", ".join(failures) or None
        subscription._acked.set()
        if subscription.refusal is not None and self._background:  # else the caller reports it
            logger.warning(
                "MQTT broker %s refused the subscription to %s: %s",
                self.where,
                subscription.topic_filter,
                subscription.refusal,
            )

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
                correlation_data=None if correlation is None else bytes(correlation),
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


def connect_failure(exc: BaseException | None) -> str:
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
