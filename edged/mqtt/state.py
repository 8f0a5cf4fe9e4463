"""What a broker connection (``edged.mqtt.connection``) hands its users: received messages, the
``Delivery`` of a published one, the ``Subscription`` of a topic filter, and the counters of the stats
topic. Completed on paho's network thread, read from anywhere."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["Delivery", "Handler", "InboundMessage", "MqttState", "MqttStats", "Subscription"]


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

    def __init__(self, mid: int, qos: int, unsent: str | None = None) -> None:
        self.mid = mid
        self.qos = qos
        self._done = threading.Event()
        self.reason: str | None = None
        self.refused = False  # the broker answered with a failure reason code (``reason``)
        self.lost = False  # QoS 0 and the connection dropped before it was written
        self.unsent = unsent  # paho did not take the message (its error); it never completes

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


class Subscription:
    """One topic filter, its handler and QoS, and the broker's answer in the current session:
    ``wait`` until its SUBACK arrived, then ``refusal`` names the failure reason codes (or is None)."""

    def __init__(
        self, topic_filter: str, handler: Handler, qos: int, retain_as_published: bool = False
    ) -> None:
        self.topic_filter = topic_filter
        self.handler = handler
        self.qos = qos
        self.retain_as_published = retain_as_published
        self.refusal: str | None = None
        self._acked = threading.Event()

    def wait(self, timeout: float) -> bool:
        return self._acked.wait(timeout)
