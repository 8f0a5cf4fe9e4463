"""Every MQTT topic string of edged, built here and nowhere else.

    edged/<device>/status                        retained birth/LWT/stopped
    edged/<device>/door/<door>/decision          decisions (QoS 1, message expiry)
    edged/<device>/door/<door>/session           approach lifecycle new | update | end
    edged/<device>/door/<door>/claim             verify-mode claims (inbound)
    edged/<device>/stats                         fps, drops, latency, outbox depth
    edged/<device>/audit                         audit records (no biometric data)
    edged/<device>/req/<operation>               request/response API (inbound)
    edged/<device>/res/<operation>               replies for MQTT 3.1.1 clients
    edged/<device>/reply/<user>/<client>         MQTT v5 Response Topics (the only ones answered)
    edged/sync/<site>/<part>/...                 directory snapshots and deltas
    homeassistant/device/edged_<device>/config   Home Assistant device discovery
    homeassistant/status                         Home Assistant birth/will

Identifiers (device, door, site, operation, parts) are 1–64 characters of ``[A-Za-z0-9_-]``, so no
identifier can inject a level separator or a wildcard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edged.errors import ConfigError

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_id(kind: str, value: str) -> str:
    """``value`` when it is a valid topic level identifier, else a ConfigError naming it."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ConfigError(
            f"{kind} {value!r} is not a valid MQTT identifier: 1-64 characters of A-Z a-z 0-9 _ - "
            "(no '/', '+', '#', spaces)"
        )
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic tree of one device under ``prefix`` (itself one identifier level)."""

    device_id: str
    prefix: str = "edged"

    def __post_init__(self) -> None:
        check_id("device id", self.device_id)
        check_id("topic prefix", self.prefix)

    @property
    def _base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    def status(self) -> str:
        return f"{self._base}/status"

    def _door(self, door: str, leaf: str) -> str:
        return f"{self._base}/door/{check_id('door id', door)}/{leaf}"

    def decision(self, door: str) -> str:
        return self._door(door, "decision")

    def session(self, door: str) -> str:
        return self._door(door, "session")

    def claim(self, door: str) -> str:
        return self._door(door, "claim")

    def stats(self) -> str:
        return f"{self._base}/stats"

    def audit(self) -> str:
        return f"{self._base}/audit"

    def request(self, op: str) -> str:
        return f"{self._base}/req/{check_id('operation', op)}"

    def response(self, op: str) -> str:
        return f"{self._base}/res/{check_id('operation', op)}"

    def reply(self, *levels: str) -> str:
        """Where an MQTT v5 request client asks for its replies (its Response Topic):
        ``reply/<broker user>/<client id>`` (the ACL lets each broker user read only its own
        ``reply/<user>/#``), or ``reply/<client id>`` on a broker without accounts."""
        if not levels:
            raise ConfigError("a reply topic needs at least the client id")
        return "/".join([f"{self._base}/reply", *(check_id("reply topic level", level) for level in levels)])

    def is_reply(self, topic: str) -> bool:
        """True for ``edged/<device>/reply/<client>[/<id>…]``: the only Response Topics edged answers
        on, so a request cannot make edged publish on its decision, status or sync topics."""
        head = f"{self._base}/reply/"
        return topic.startswith(head) and all(_ID.fullmatch(p) for p in topic[len(head) :].split("/"))

    def request_wildcard(self) -> str:
        return f"{self._base}/req/+"

    def operation_of(self, topic: str) -> str | None:
        """The operation of a request topic of this device, or None for any other topic."""
        head = f"{self._base}/req/"
        if not topic.startswith(head):
            return None
        op = topic[len(head) :]
        return op if _ID.fullmatch(op) else None

    def sync(self, site: str, *parts: str) -> str:
        levels = [check_id("site id", site), *(check_id("sync part", p) for p in parts)]
        return "/".join([self.prefix, "sync", *levels])

    def ha_discovery(self, ha_prefix: str = "homeassistant") -> str:
        return f"{check_id('Home Assistant prefix', ha_prefix)}/device/edged_{self.device_id}/config"

    def ha_status(self, ha_prefix: str = "homeassistant") -> str:
        return f"{check_id('Home Assistant prefix', ha_prefix)}/status"
