"""The door's events out of the daemon: the door worker's ``EventSink`` (``edged.door.worker``).

Decisions are written as JSON lines to ``out`` (``edged run`` and ``edged demo``: stdout) and committed
to the durable outbox for ``edged/<device>/door/<door>/decision`` (QoS 1, with an expiry: MQTT 3.1.1
has no message expiry, so the payload says until when it may be acted on, ``expires_at``). Session
events go to paho's queue for ``…/session`` (QoS 0) while connected, liveness challenges for
``…/challenge`` (QoS 1, the MQTT v5 expiry at the challenge's own ``expires_at``: a challenge is
useless later, so it is never queued in the outbox). Nothing here waits on the network: an outbox
put is a local SQLite commit, drained by the outbox's own thread.
"""

from __future__ import annotations

import json
import time
from typing import TextIO

from edged.door.events import Events
from edged.mqtt.client import MqttClient
from edged.mqtt.outbox import Outbox
from edged.mqtt.topics import Topics
from edged.stats import StatsCollector

__all__ = ["DoorPublisher"]


class DoorPublisher:
    """Decisions to ``out`` and the outbox, sessions to ``client`` (module doc); either may be None
    (no MQTT: ``edged run --no-mqtt``). ``stats`` gets each decision's ``frame_to_outbox`` time."""

    def __init__(
        self,
        topics: Topics,
        decision_expiry_s: float,
        stats: StatsCollector | None = None,
        *,
        out: TextIO | None = None,
        outbox: Outbox | None = None,
        client: MqttClient | None = None,
    ) -> None:
        self.topics = topics
        self.decision_expiry_s = decision_expiry_s
        self.stats = stats
        self.out = out
        self.outbox = outbox
        self.client = client

    def emit(self, door: str, events: Events, captured: float | None = None) -> None:
        """``captured`` is the frame's ``Frame.timestamp`` (monotonic), for the frame-to-outbox time."""
        for decision in events.decisions:
            payload = decision.to_payload()
            expires_at = decision.time + self.decision_expiry_s
            payload["expires_at"] = round(expires_at, 3)
            if self.out is not None:
                self.out.write(json.dumps(payload) + "\n")
                self.out.flush()
            if self.outbox is not None:
                self.outbox.put(self.topics.decision(door), payload, qos=1, expires_at=expires_at)
                if captured is not None and self.stats is not None:
                    self.stats.add("frame_to_outbox", time.monotonic() - captured)
        client = self.client
        if client is not None and client.connected.is_set():
            for session in events.sessions:
                client.publish(self.topics.session(door), session.to_payload(), qos=0)
            for challenge in events.challenges:
                expiry_s = max(1.0, challenge.expires_at - challenge.time)
                client.publish(self.topics.challenge(door), challenge.to_payload(), qos=1, expiry_s=expiry_s)
