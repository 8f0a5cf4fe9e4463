"""The daemon's MQTT connection: ``edged.mqtt.connection.Connection`` plus the device's presence.

- The last will (retained ``offline`` on the status topic) is set before connecting; every successful
  CONNACK publishes the retained birth ``online`` with the versions, after the subscriptions are
  renewed and before ``connected`` is set. Refusals, failed TCP/TLS connects and connections closed
  before the CONNACK are failures (logged, with their reason in ``state.last_failure``) and paho retries
  with backoff; see ``edged.mqtt.connection``. After each successful connect the hooks added with
  ``on_connected`` run (e.g. the Home Assistant discovery, re-published on every connect).
- ``stop()`` publishes a retained ``stopped``, waits (bounded) for the broker's acknowledgement and
  disconnects cleanly, so the broker discards the last will.
- ``publish`` sends a JSON payload (it must carry its ``schema``) and returns a ``Delivery``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Literal

from edged.clock import Clock, SystemClock
from edged.mqtt.connection import Connection
from edged.mqtt.settings import MqttSettings, TlsSettings
from edged.mqtt.state import Delivery, Handler, InboundMessage, MqttState, MqttStats, Subscription
from edged.mqtt.topics import Topics

__all__ = [
    "Delivery",
    "Handler",
    "InboundMessage",
    "MqttClient",
    "MqttSettings",
    "MqttState",
    "MqttStats",
    "Subscription",
    "TlsSettings",
    "encode",
]

logger = logging.getLogger(__name__)

SCHEMA = 1


def encode(payload: Mapping[str, object]) -> bytes:
    """Compact JSON; every payload carries its ``schema`` version."""
    if "schema" not in payload:
        raise ValueError("an MQTT payload must carry a 'schema' version")
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class MqttClient(Connection):
    """One broker connection of one device. ``start()`` returns at once; ``connected`` tells when
    the broker accepted the connection, ``refused`` when it last refused it."""

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        versions: Mapping[str, str],
        clock: Clock | None = None,
    ) -> None:
        super().__init__(settings, settings.client_id or f"edged-{topics.device_id}")
        self.topics = topics
        self.versions = dict(versions)
        self.clock = clock or SystemClock()

    def start(self) -> None:
        """Set the last will, connect in the background and start paho's network thread."""
        will = encode({"schema": SCHEMA, "state": "offline", "versions": self.versions})
        self._client.will_set(self.topics.status(), will, qos=1, retain=True)
        super().start()

    def stop(self) -> bool:
        """Publish the retained ``stopped`` (when connected), disconnect cleanly (the last will is
        discarded) and stop the network thread. True when ``stopped`` was acknowledged."""
        if not self.running:
            return False
        acknowledged = False
        if self.connected.is_set():
            delivery = self.publish(self.topics.status(), self._status("stopped"), qos=1, retain=True)
            acknowledged = delivery.wait(self.settings.stop_timeout_s)
            if not acknowledged:
                logger.warning("MQTT: 'stopped' not acknowledged within %.1f s", self.settings.stop_timeout_s)
        self.close()
        return acknowledged

    def publish(
        self,
        topic: str,
        payload: Mapping[str, object],
        qos: Literal[0, 1] = 0,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> Delivery:
        return self.publish_bytes(topic, encode(payload), qos=qos, retain=retain, expiry_s=expiry_s)

    def _on_session(self) -> None:
        self.publish(self.topics.status(), self._status("online"), qos=1, retain=True)

    def _status(self, state: str) -> dict[str, object]:
        return {
            "schema": SCHEMA,
            "state": state,
            "versions": self.versions,
            "time": round(self.clock.now(), 3),
        }
