"""Home Assistant MQTT device discovery: one retained message describes the whole terminal.

Topic ``<discovery_prefix>/device/edged_<device>/config`` (``Topics.ha_discovery``), Home Assistant's
device-based discovery format: a ``device`` block, an ``origin`` block, and the entities under
``components``, each with its ``platform`` and a ``unique_id``:

- per door, an ``event`` entity on the door's decision topic, with the event types ``granted``,
  ``denied``, ``unknown``, ``low_quality`` and ``spoof`` (the decision outcomes; ``spoof``: a
  presentation attack at a door with liveness on); its value template maps the decision's
  ``outcome`` to ``event_type`` and passes the reason codes on (never a person);
- a ``status`` sensor (diagnostic) on the status topic: ``online``, ``offline`` or ``stopped``;
- per door, only with ``ha.expose_identity``, a "last identity" sensor: the person ID of the door's
  latest decision (Home Assistant shows ``unknown`` for a decision without one). Off by default,
  because Home Assistant keeps every sensor state in its history.

Every entity but the status sensor is available while the status topic's JSON ``state`` is ``online``.
The payload follows Home Assistant's format, not edged's: it has no ``schema`` field (Home Assistant
validates the keys of the messages it reads), so it is published with ``MqttClient.publish_bytes``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edged.door.events import OUTCOMES
from edged.mqtt.settings import HaSettings
from edged.mqtt.topics import Topics

__all__ = ["EVENT_TYPES", "MODEL", "discovery_bytes", "discovery_payload", "node_id"]

EVENT_TYPES: tuple[str, ...] = OUTCOMES
"""The door event entity's event types: the decision outcomes (granted, denied, unknown, low_quality,
spoof)."""
MODEL = "door terminal"

EVENT_TEMPLATE = (
    '{"event_type":"{{ value_json.outcome }}","reasons":"{{ value_json.reasons | join(\',\') }}"}'
)
"""Decision JSON → Home Assistant event: the outcome is the event type, the reason codes an attribute."""
AVAILABILITY_TEMPLATE = "{{ 'online' if value_json.state == 'online' else 'offline' }}"
"""Status JSON → online/offline (``stopped`` is offline too)."""
STATUS_STATES = ["online", "offline", "stopped"]


def node_id(topics: Topics) -> str:
    """``edged_<device>``: the device's identifier in Home Assistant and its discovery topic level."""
    return f"edged_{topics.device_id}"


def discovery_payload(
    topics: Topics, doors: Sequence[str], settings: HaSettings, version: str
) -> dict[str, Any]:
    """The device discovery message of one terminal with ``doors``."""
    node = node_id(topics)
    availability = [
        {
            "topic": topics.status(),
            "value_template": AVAILABILITY_TEMPLATE,
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]
    components: dict[str, dict[str, Any]] = {}
    for door in doors:
        decision = topics.decision(door)  # also validates the door ID
        components[f"{node}_{door}_decision"] = {
            "platform": "event",
            "name": f"Door {door}",
            "unique_id": f"{node}_{door}_decision",
            "state_topic": decision,
            "event_types": list(EVENT_TYPES),
            "value_template": EVENT_TEMPLATE,
            "availability": availability,
            "icon": "mdi:door",
        }
        if settings.expose_identity:
            components[f"{node}_{door}_identity"] = {
                "platform": "sensor",
                "name": f"Door {door} last identity",
                "unique_id": f"{node}_{door}_identity",
                "state_topic": decision,
                "value_template": "{{ value_json.person_id }}",
                "availability": availability,
                "icon": "mdi:account",
            }
    components[f"{node}_status"] = {
        "platform": "sensor",
        "name": "Status",
        "unique_id": f"{node}_status",
        "state_topic": topics.status(),
        "value_template": "{{ value_json.state }}",
        "device_class": "enum",
        "options": STATUS_STATES,
        "entity_category": "diagnostic",
    }
    return {
        "device": {
            "identifiers": [node],
            "name": f"edged {topics.device_id}",
            "manufacturer": "edged",
            "model": MODEL,
            "sw_version": version,
        },
        "origin": {"name": "edged", "sw_version": version},
        "components": components,
        "qos": 1,
    }


def discovery_bytes(topics: Topics, doors: Sequence[str], settings: HaSettings, version: str) -> bytes:
    """``discovery_payload`` as compact JSON."""
    payload = discovery_payload(topics, doors, settings, version)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
