"""Broker connection settings (pydantic, unknown keys rejected, every field described).

Only pydantic (and the topic identifier check) is imported here, so ``edged.config`` can nest
``MqttSettings`` and ``HaSettings`` without importing paho (and without an import cycle: this module
does not import ``edged.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edged.errors import ConfigError
from edged.mqtt.topics import check_id
from edged.strict import Strict


class TlsSettings(Strict):
    """TLS towards the broker (server verification with a CA, optional client certificate)."""

    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (PEM), with key_file")
    key_file: Path | None = Field(None, description="client private key (PEM), with cert_file")
    insecure: bool = Field(
        False, description="skip the broker host name check (testing only; never in production)"
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together")
        return self


class MqttSettings(Strict):
    """The broker connection."""

    host: str = Field("127.0.0.1", min_length=1, description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is the usual TLS port)")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version")
    client_id: str | None = Field(
        None, min_length=1, max_length=128, description="MQTT client id (default: edged-<device id>)"
    )
    username: str | None = Field(None, min_length=1, description="user name for the broker")
    password_file: Path | None = Field(
        None,
        description="file holding the password (e.g. $CREDENTIALS_DIRECTORY/mqtt-password); "
        "passwords are never written inline in the config",
    )
    tls: TlsSettings | None = Field(None, description="TLS settings; absent means plain TCP")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval, seconds")
    reconnect_min_delay_s: int = Field(1, ge=1, le=300, description="first reconnect delay, seconds")
    reconnect_max_delay_s: int = Field(
        60, ge=1, le=3600, description="reconnect delay cap (doubling from the minimum), seconds"
    )
    stop_timeout_s: float = Field(
        5.0, gt=0, le=60, description="how long stop() waits for the broker to acknowledge 'stopped'"
    )
    decision_expiry_s: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="a decision not delivered within this many seconds is dropped (and counted): the "
        "MQTT v5 message expiry and the outbox's; door controllers also check captured_at",
    )
    stats_interval_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="how often the daemon publishes edged/<device>/stats (fps, drops, latency, outbox, "
        "MQTT counters), seconds; 0: never",
    )

    @model_validator(mode="after")
    def _checks(self) -> MqttSettings:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise ValueError("reconnect_max_delay_s is below reconnect_min_delay_s")
        return self

    def password(self) -> str | None:
        """The password read from ``password_file`` (trailing newline removed)."""
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"mqtt.password_file {str(self.password_file)!r}: {exc.strerror}") from exc


DEFAULT_PORT = 1883
DEFAULT_PORTS = {"mqtt": DEFAULT_PORT, "mqtts": 8883}
"""The port of each URL scheme when the URL names none (mqtts: MQTT over TLS)."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker is, and whether the URL asked for TLS. Built at the edge, once: from the
    configuration's ``mqtt.host`` and ``mqtt.port`` (``edged run``) or parsed from a URL
    (``edged demo --mqtt mqtt://HOST[:PORT]``, ``edged request --mqtt mqtt[s]://HOST[:PORT]``); a bad
    one is a ``ConfigError`` before anything starts."""

    host: str
    port: int = DEFAULT_PORT
    tls: bool = False

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in "/ "):
            raise ConfigError(f"MQTT broker host {self.host!r}: expected a host name or address")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"MQTT broker port {self.port}: the port is not a number from 1 to 65535")

    @classmethod
    def parse(cls, url: str, *, schemes: tuple[str, ...] = ("mqtt",)) -> BrokerAddress:
        """``mqtt://HOST[:PORT]`` (or another of ``schemes``: ``mqtts`` is TLS) → the address; the
        scheme's port (1883, 8883) when the URL names none."""
        expected = " or ".join(f"{scheme}://HOST[:PORT]" for scheme in schemes)
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"MQTT URL {url!r}: the port is not a number from 1 to 65535") from None
        if parts.scheme not in schemes or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(f"MQTT URL {url!r}: expected {expected}")
        if port == 0:
            raise ConfigError(f"MQTT URL {url!r}: the port is not a number from 1 to 65535")
        return cls(
            parts.hostname, DEFAULT_PORTS[parts.scheme] if port is None else port, parts.scheme == "mqtts"
        )

    def settings(self, base: MqttSettings) -> MqttSettings:
        """``base`` (the rest of the connection settings) towards this address."""
        return base.model_copy(update={"host": self.host, "port": self.port})

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class HaSettings(Strict):
    """Home Assistant MQTT device discovery (docs/mqtt.md, "Home Assistant")."""

    enabled: bool = Field(
        True,
        description="publish the retained device discovery message when connected (and again whenever "
        "Home Assistant announces itself online)",
    )
    discovery_prefix: str = Field(
        "homeassistant", description="Home Assistant's MQTT discovery prefix (its MQTT integration option)"
    )
    expose_identity: bool = Field(
        False,
        description="add a 'last identity' sensor per door (the person ID of the latest decision); off by "
        "default, as Home Assistant keeps sensor states in its history",
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        try:
            return check_id("Home Assistant discovery prefix", value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
