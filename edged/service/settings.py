"""The face service's settings: where the directory lives and its policies (config key ``directory``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edged.strict import Strict

__all__ = ["DirectorySettings"]


class DirectorySettings(Strict):
    """The person directory: where it lives and its policies."""

    state_dir: Path | None = Field(
        None,
        description="directory of the SQLite file (default: $STATE_DIRECTORY under systemd, else ./state)",
    )
    transient_ttl_s: int = Field(
        86_400, ge=60, le=86_400, description="lifetime of face IDs from detect (60 s to 24 h)"
    )
    identify_far: float = Field(
        1e-4, gt=0, lt=1, description="target false-accept rate of identify (1:N): stricter than verify"
    )
    duplicate_policy: Literal["refuse", "warn", "off"] = Field(
        "refuse", description="enrolling a face that matches a different person: refuse, warn, or allow"
    )
    duplicate_far: float = Field(
        1e-3, gt=0, lt=1, description="FAR threshold of the duplicate-identity check"
    )
    enroll_requires_quality: bool = Field(
        True, description="refuse enrolment of faces that fail the quality gate"
    )
    audit_retention_days: int = Field(
        400,
        ge=0,
        description="audit records older than this are deleted (the chain stays verifiable); 0 keeps all",
    )
