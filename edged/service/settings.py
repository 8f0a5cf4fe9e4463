"""The face service's settings: where the directory lives and its policies (config key ``directory``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edged.strict import Strict

__all__ = ["DirectorySettings"]

MIN_RETENTION_DAYS = 30
"""A shorter retention would erase the history an investigation needs (0 keeps every record)."""
MAX_RETENTION_DAYS = 3650


class DirectorySettings(Strict):
    """The person directory: where it lives and its policies."""

    state_dir: Path | None = Field(
        None,
        description="directory of the SQLite file (default: $STATE_DIRECTORY under systemd, else ./state)",
    )
    transient_ttl_s: int = Field(
        86_400, ge=60, le=86_400, description="lifetime of face IDs from detect (60 s to 24 h)"
    )
    face_ids_max: int = Field(
        100_000,
        ge=1,
        description="live face IDs (from detect, not yet expired) kept at most, of all clients together;"
        " detect answers QuotaExceeded beyond (each ≈ 1.2 KB on disk: 100,000 ≈ 120 MB)",
    )
    face_ids_per_client: int = Field(
        10_000,
        ge=1,
        description="live face IDs one client may hold: a signed client, all unsigned requests together,"
        " the CLI; detect answers QuotaExceeded beyond",
    )
    face_ids_min_free_mb: int = Field(
        256,
        ge=0,
        description="no new face IDs while the state directory's filesystem has less free space than"
        " this (MB; 0: no floor); the stats say so",
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
        le=MAX_RETENTION_DAYS,
        description="audit records older than this are deleted (the chain stays verifiable): 0 keeps"
        f" them (up to audit_max_records), else {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days",
    )
    audit_max_records: int = Field(
        250_000,
        ge=1,
        le=100_000_000,
        description="the audit log keeps at most this many records, the oldest go first (≈ 340 to 460"
        " bytes each on disk: 250,000 ≤ 115 MB)",
    )
    audit_min_records: int = Field(
        10_000,
        ge=0,
        description="the newest this many audit records are never deleted for their age, whatever the"
        " clock says (a clock stepped forward makes every record look old); at most audit_max_records",
    )

    @model_validator(mode="after")
    def _audit(self) -> DirectorySettings:
        days = self.audit_retention_days
        if 0 < days < MIN_RETENTION_DAYS:
            raise ValueError(
                f"audit_retention_days is {days}: 0 (keep them) or at least {MIN_RETENTION_DAYS} days"
            )
        if self.audit_min_records > self.audit_max_records:
            raise ValueError(
                f"audit_min_records ({self.audit_min_records:,}) is above audit_max_records"
                f" ({self.audit_max_records:,})"
            )
        return self
