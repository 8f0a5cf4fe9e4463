"""Every MQTT topic string of edged, built here and nowhere else.

    edged/<device>/status                        retained birth/LWT/stopped
    edged/<device>/door/<door>/decision          decisions (QoS 1, message expiry)
    edged/<device>/door/<door>/session           approach lifecycle new | update | end
    edged/<device>/door/<door>/claim             verify-mode claims (inbound)
    edged/<device>/door/<door>/challenge         liveness challenges for the terminal's display
    edged/<device>/stats                         fps, drops, latency, outbox depth
    edged/<device>/audit                         audit records (no biometric data)
    edged/<device>/req/<operation>               request/response API (inbound)
    edged/<device>/res/<operation>               replies for MQTT 3.1.1 clients
    edged/<device>/reply/<signer>/<client>       MQTT v5 Response Topics of signed requests
    edged/<device>/unsigned/<client>             MQTT v5 Response Topics of unsigned requests
    edged/sync/<site>/<part>/...                 directory snapshots and deltas
    homeassistant/device/edged_<device>/config   Home Assistant device discovery
    homeassistant/status                         Home Assistant birth/will

Identifiers (device, door, site, operation, parts) are 1–64 characters of ``[A-Za-z0-9_-]``, so no
identifier can inject a level separator or a wildcard. The levels of a reply topic may also hold
``.`` (a signing client's ID, ``edged.api.auth.CLIENT_RE``, names ``reply/<signer>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edged.errors import ConfigError

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REPLY_LEVEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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

    def challenge(self, door: str) -> str:
        return self._door(door, "challenge")

    def stats(self) -> str:
        return f"{self._base}/stats"

    def audit(self) -> str:
        return f"{self._base}/audit"

    def request(self, op: str) -> str:
        return f"{self._base}/req/{check_id('operation', op)}"

    def response(self, op: str) -> str:
        return f"{self._base}/res/{check_id('operation', op)}"

    def reply(self, *levels: str) -> str:
        """The MQTT v5 Response Topic of a request signed by API client ``levels[0]``:
        ``reply/<signer>/<client id>`` (edged answers a signed request only under its signer's name,
        and the shipped ACL lets each broker user read only its own ``reply/<user>/#``)."""
        return self._reply_topic("reply", levels)

    def unsigned_reply(self, *levels: str) -> str:
        """The MQTT v5 Response Topic of an unsigned request: ``unsigned/<client id>`` (the shipped
        ACL lets only the connection with that MQTT client id read it)."""
        return self._reply_topic("unsigned", levels)

    def _reply_topic(self, tree: str, levels: tuple[str, ...]) -> str:
        if not levels:
            raise ConfigError("a reply topic needs at least one level (the signer or the client id)")
        for level in levels:
            if not isinstance(level, str) or not _REPLY_LEVEL.fullmatch(level):
                raise ConfigError(
                    f"reply topic level {level!r} is not valid: 1-64 characters of A-Z a-z 0-9 _ . -"
                )
        return "/".join([f"{self._base}/{tree}", *levels])

    def _reply_levels(self, tree: str, topic: str) -> list[str] | None:
        head = f"{self._base}/{tree}/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head) :].split("/")
        return levels if all(_REPLY_LEVEL.fullmatch(p) for p in levels) else None

    def reply_signer(self, topic: str) -> str | None:
        """The signer of ``reply/<signer>[/…]`` (the only client whose signed requests edged answers
        there), or None for any other topic."""
        levels = self._reply_levels("reply", topic)
        return None if levels is None else levels[0]

    def is_unsigned_reply(self, topic: str) -> bool:
        """True for ``unsigned/<client>[/…]``, where edged answers any request."""
        return self._reply_levels("unsigned", topic) is not None

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
