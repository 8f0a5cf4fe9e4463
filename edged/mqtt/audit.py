"""Audit records to ``edged/<device>/audit`` through the durable outbox (docs/mqtt.md): those written
by this daemon and by another process (the CLI) alike, in order, each exactly once — the outbox keeps
the position (``AUDIT_CURSOR``) in the same transaction as the messages. The first run starts at the
newest record: the history stays in the directory (``edged audit show``). IDs and outcomes only,
never names or biometric data (``AuditRecord.as_json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from edged.mqtt.outbox import Outbox
from edged.mqtt.topics import Topics

__all__ = ["AUDIT_BATCH", "AUDIT_CURSOR", "AUDIT_SCHEMA", "AuditForwarder", "AuditLog"]

AUDIT_CURSOR = "audit_seq"
AUDIT_BATCH = 200
AUDIT_SCHEMA = 1


class AuditEntry(Protocol):
    def as_json(self) -> Mapping[str, Any]: ...


class AuditLog(Protocol):
    """Where the records are read (``FaceService.audit_after``): those after ``seq`` (None: none, and
    the position of the newest) and the position after them."""

    def audit_after(self, seq: int | None, limit: int) -> tuple[int, Sequence[AuditEntry]]: ...


class AuditForwarder:
    """``forward()`` queues the records written since its previous call (the daemon calls it every
    second, ``edged.scheduler``)."""

    def __init__(
        self, log: AuditLog, outbox: Outbox, topics: Topics, device: str, batch: int = AUDIT_BATCH
    ) -> None:
        if batch < 1:
            raise ValueError(f"the audit batch needs at least one record, not {batch}")
        self.log = log
        self.outbox = outbox
        self.topics = topics
        self.device = device
        self.batch = batch

    def forward(self) -> int:
        """Queue the new records; returns how many."""
        position = self.outbox.cursor(AUDIT_CURSOR)
        queued = 0
        while True:
            after, records = self.log.audit_after(position, self.batch)
            if position is not None and after == position:
                return queued
            payloads = [{"schema": AUDIT_SCHEMA, "device": self.device, **r.as_json()} for r in records]
            self.outbox.put_batch(self.topics.audit(), payloads, (AUDIT_CURSOR, after))
            queued += len(payloads)
            if len(records) < self.batch:
                return queued
            position = after
