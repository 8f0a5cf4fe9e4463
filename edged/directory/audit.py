"""The append-only audit log's records and their hash chain.

Each record's hash covers its content and the previous record's hash, so changing, removing or
reordering any record breaks every hash after it. Records hold operation, actor, role, target IDs
(UUIDs and group IDs), result and time: never names, images or templates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    time: float
    operation: str
    actor: str
    role: str
    targets: dict[str, str]
    result: str
    prev_hash: str
    hash: str

    def content(self) -> bytes:
        body = {
            "seq": self.seq,
            "time": repr(float(self.time)),
            "operation": self.operation,
            "actor": self.actor,
            "role": self.role,
            "targets": self.targets,
            "result": self.result,
            "prev_hash": self.prev_hash,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def with_hash(self, value: str) -> AuditRecord:
        return replace(self, hash=value)

    def row(self) -> tuple[Any, ...]:
        return (
            self.seq,
            self.time,
            self.operation,
            self.actor,
            self.role,
            json.dumps(self.targets, sort_keys=True),
            self.result,
            self.prev_hash,
            self.hash,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> AuditRecord:
        seq, time, operation, actor, role, targets, result, prev_hash, digest = row
        return cls(
            int(seq), float(time), operation, actor, role, json.loads(targets), result, prev_hash, digest
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "operation": self.operation,
            "actor": self.actor,
            "role": self.role,
            "targets": self.targets,
            "result": self.result,
            "hash": self.hash,
        }


def chain_hash(record: AuditRecord) -> str:
    return hashlib.sha256(record.content()).hexdigest()


def verify_chain(records: Iterable[AuditRecord]) -> tuple[bool, int, str]:
    """(ok, records checked, what is wrong). Detects edits, deletions, insertions and reordering."""
    prev, expected_seq, count = GENESIS, 1, 0
    for record in records:
        count += 1
        if record.seq != expected_seq:
            return False, count, f"record {expected_seq} is missing (found {record.seq} next)"
        if record.prev_hash != prev:
            return False, count, f"record {record.seq} does not follow record {record.seq - 1}"
        if chain_hash(record) != record.hash:
            return False, count, f"record {record.seq} was changed after it was written"
        prev, expected_seq = record.hash, expected_seq + 1
    return True, count, "ok"
