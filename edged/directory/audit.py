"""The append-only audit log: its records, their hash chain, and the ``audit`` table.

Each record's hash covers its content and the previous record's hash, so changing, removing or
reordering any record breaks every hash after it; the device key signs the chain's head with every
record, so removing the newest records shows too. Records hold operation, actor, role, target IDs
(UUIDs and group IDs), result and time: never names, images or templates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from edged.clock import Clock
from edged.directory.crypto import canonical, verify_signature
from edged.directory.db import Db
from edged.directory.keys import Keys

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


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The audit chain's state: intact or not, how many records were checked, and why not."""

    intact: bool
    records: int
    reason: str


def chain_hash(record: AuditRecord) -> str:
    return hashlib.sha256(record.content()).hexdigest()


def verify_chain(records: Iterable[AuditRecord]) -> ChainCheck:
    """Detects edits, deletions, insertions and reordering."""
    prev, expected_seq, count = GENESIS, 1, 0
    for record in records:
        count += 1
        if record.seq != expected_seq:
            return ChainCheck(False, count, f"record {expected_seq} is missing (found {record.seq} next)")
        if record.prev_hash != prev:
            return ChainCheck(False, count, f"record {record.seq} does not follow record {record.seq - 1}")
        if chain_hash(record) != record.hash:
            return ChainCheck(False, count, f"record {record.seq} was changed after it was written")
        prev, expected_seq = record.hash, expected_seq + 1
    return ChainCheck(True, count, "ok")


class AuditLog:
    """The ``audit`` table, and the signed head in ``meta.audit_head``."""

    def __init__(self, db: Db, keys: Keys, clock: Clock) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock

    def append(
        self, operation: str, actor: str, role: str, targets: dict[str, str], result: str
    ) -> AuditRecord:
        """Append a record: IDs and outcomes only, never names, images or templates."""
        with self.db.tx() as db:
            last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            record = AuditRecord(
                seq, self.clock.now(), operation, actor, role, dict(targets), result, prev, ""
            )
            record = record.with_hash(chain_hash(record))
            db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", record.row())
            head = canonical({"seq": record.seq, "hash": record.hash})
            signed = canonical({"head": head.decode(), "signature": self.keys.sign(b"audit-head|" + head)})
            db.execute("INSERT OR REPLACE INTO meta VALUES ('audit_head', ?)", (signed,))
        return record

    def after(self, seq: int, limit: int) -> list[AuditRecord]:
        """Up to ``limit`` records after ``seq``, oldest first (the daemon forwards them to MQTT)."""
        rows = self.db.execute("SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [AuditRecord.from_row(tuple(row)) for row in rows]

    def last_seq(self) -> int:
        return int(self.db.scalar("SELECT COALESCE(MAX(seq), 0) FROM audit"))

    def records(self) -> Iterator[AuditRecord]:
        for row in self.db.execute("SELECT * FROM audit ORDER BY seq"):
            yield AuditRecord.from_row(tuple(row))

    def verify(self) -> ChainCheck:
        """The chain must hold, and end at the head that the device key signed with the newest
        record: so removing the newest records, or rewriting the chain with fresh hashes, shows."""
        chain = verify_chain(self.records())
        if not chain.intact:
            return chain
        count = chain.records
        head_row = self.db.scalar("SELECT value FROM meta WHERE key = 'audit_head'")
        if head_row is None:
            return chain if count == 0 else ChainCheck(False, count, "the signed head record is missing")
        signed = json.loads(bytes(head_row))
        head = signed["head"].encode()
        if not verify_signature(self.keys.device_public_key, b"audit-head|" + head, signed["signature"]):
            return ChainCheck(False, count, "the signature of the chain's head does not verify")
        expected = json.loads(head)
        last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if last is None or (int(last[0]), last[1]) != (expected["seq"], expected["hash"]):
            return ChainCheck(
                False,
                count,
                f"the chain should end at record {expected['seq']}; records were removed or rewritten",
            )
        return chain
