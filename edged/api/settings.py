"""Settings of the request/response API and of the clients allowed to use it (pydantic, strict).

Only pydantic and the roles (``edged.service.policy``) are imported here, so ``edged.config`` can
nest ``ApiSettings`` without a cycle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edged.service.policy import Role
from edged.strict import Strict

__all__ = ["ApiSettings", "ClientSettings", "Role"]


class ClientSettings(Strict):
    """One API client: its role and the Ed25519 public key its requests are signed with."""

    role: Role = Field(
        description="recognizer: detect/verify/identify/group/find similar; manager: also "
        "groups, lists, persons, faces; admin: also keys, config, sync"
    )
    public_key: str | None = Field(
        None, description="Ed25519 public key: 32 raw bytes in base64 (or a PEM in public_key_file)"
    )
    public_key_file: Path | None = Field(None, description="file with the public key (PEM or base64)")

    @model_validator(mode="after")
    def _one_key(self) -> ClientSettings:
        if (self.public_key is None) == (self.public_key_file is None):
            raise ValueError("give exactly one of public_key and public_key_file")
        return self


class ApiSettings(Strict):
    """The request/response API on edged/<device>/req/<operation> (docs/mqtt-api.md)."""

    enabled: bool = Field(True, description="serve the face operations over MQTT (needs mqtt)")
    workers: int = Field(1, ge=1, le=8, description="threads that execute requests")
    queue_depth: int = Field(
        8, ge=1, le=1024, description="requests waiting beyond the workers; more are answered Busy"
    )
    unsigned_role: Literal["recognizer", "none"] = Field(
        "recognizer",
        description="role of unsigned requests: recognizer (read-only operations) or none (all refused)",
    )
    signature_window_s: float = Field(
        60.0, gt=0, le=3600, description="largest difference between a request's timestamp and the clock"
    )
    clients: dict[str, ClientSettings] = Field(
        default_factory=dict,
        description="signing clients by client ID (1-64 characters of A-Z a-z 0-9 _ . -): role and "
        "Ed25519 public key",
    )

    @field_validator("clients")
    @classmethod
    def _client_ids(cls, value: dict[str, ClientSettings]) -> dict[str, ClientSettings]:
        bad = [client for client in value if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", client)]
        if bad:
            raise ValueError(f"client IDs must be 1-64 characters of A-Z a-z 0-9 _ . -, not {bad!r}")
        return value
