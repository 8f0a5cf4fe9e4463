"""The append-only audit log: its records, their hash chain, and the ``audit`` table.

Each record's hash covers its content and the previous record's hash, so changing, removing or
reordering any record breaks every hash after it. The device key signs the chain's *head* (the
newest record's seq and hash, ``meta.audit_head``) in the transaction that appends the record, so
removing the newest records shows too; and a record is appended after the signed head, not after
whatever row is last, so a tail cut off (or a record added or rewritten behind the head) leaves a
gap or a break that the next record does not cover up.

Records hold operation, actor, role, target IDs (UUIDs and group IDs), result and time: never
names, images or templates. A directory change writes its record in its own transaction
(``edged.service.access``): both commit, or neither.

Retention (``prune``): the oldest records go (by age, by count; never the newest few), and the
device key signs the chain's *anchor* (the seq and hash of the last record deleted,
``meta.audit_anchor``), which ``verify`` starts from; the pruning is itself recorded. Only the
records deleted are verified first: the anchor moves over records that verified. Head and anchor
are signed with different prefixes, so neither passes for the other. An older anchor put back does
not verify (the records after it are gone). What no check inside the file can show is the whole
file put back from a backup, or the whole log wiped with its head and anchor: the records forwarded
to MQTT are the copy outside the device.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from edged.clock import Clock
from edged.directory.crypto import canonical, verify_signature
from edged.directory.db import Db
from edged.directory.keys import Keys
from edged.errors import EdgedError

GENESIS = "0" * 64

Mark = Literal["head", "anchor"]
"""A signed position of the chain in ``meta.audit_<mark>``: its newest record, or the last pruned."""


class AuditBroken(EdgedError):
    """The audit chain does not verify (``edged audit verify`` exits with this code too)."""

    code = "AuditBroken"
    exit_code = 9


class _Unverified(Exception):
    """A signed mark whose signature does not verify, or that is not one."""


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


def verify_chain(records: Iterable[AuditRecord], after: tuple[int, str] = (0, GENESIS)) -> ChainCheck:
    """Detects edits, deletions, insertions and reordering. ``after``: the seq and hash the first
    record follows (the anchor of a pruned log)."""
    (last_seq, prev), count = after, 0
    expected_seq = last_seq + 1
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
    """The ``audit`` table, and the signed head and anchor in ``meta``."""

    def __init__(self, db: Db, keys: Keys, clock: Clock) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock

    def append(
        self, operation: str, actor: str, role: str, targets: dict[str, str], result: str
    ) -> AuditRecord:
        """Append a record: IDs and outcomes only, never names, images or templates. Inside a
        change's transaction it commits with the change (the head with it)."""
        with self.db.tx() as db:
            seq, prev = self._next()
            record = AuditRecord(
                seq, self.clock.now(), operation, actor, role, dict(targets), result, prev, ""
            )
            record = record.with_hash(chain_hash(record))
            db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", record.row())
            self._sign("head", record.seq, record.hash)
        return record

    def _next(self) -> tuple[int, str]:
        """The seq and previous hash of the next record: after the signed head, so records cut off
        the end leave a gap, and a record added or rewritten behind its back a break (``verify``
        reports both; an append after the last row would sign them over). Without a valid head:
        the first record (after a pruning, ``verify`` then misses the records after the anchor), or,
        when records exist (the head was removed or forged), a record that follows none of them."""
        last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        try:
            head = self._mark("head")
        except _Unverified:
            head = None
        if head is not None:
            return max(head[0], int(last[0]) if last else 0) + 1, head[1]
        return (int(last[0]) + 1 if last else 1), GENESIS

    def _sign(self, mark: Mark, seq: int, digest: str) -> None:
        position = canonical({"seq": seq, "hash": digest})
        signature = self.keys.sign(f"audit-{mark}|".encode() + position)
        self.db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            (f"audit_{mark}", canonical({mark: position.decode(), "signature": signature})),
        )

    def _mark(self, mark: Mark) -> tuple[int, str] | None:
        """The signed (seq, hash) in ``meta.audit_<mark>``; None when there is none. ``_Unverified``
        when its signature does not verify with the device key."""
        stored = self.db.scalar("SELECT value FROM meta WHERE key = ?", (f"audit_{mark}",))
        if stored is None:
            return None
        try:
            signed = json.loads(bytes(stored))
            position = str(signed[mark]).encode()
            if not verify_signature(
                self.keys.device_public_key, f"audit-{mark}|".encode() + position, str(signed["signature"])
            ):
                raise _Unverified(f"the signature of the chain's {mark} does not verify")
            value = json.loads(position)
            return int(value["seq"]), str(value["hash"])
        except (ValueError, KeyError, TypeError):
            raise _Unverified(f"the chain's {mark} is not a signed position") from None

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
        """The chain must hold from its anchor (the last pruned record; none: the start), and end at
        the head that the device key signed with the newest record: so removing the newest
        records, or rewriting the chain with fresh hashes, shows."""
        try:
            anchor = self._mark("anchor")
            head = self._mark("head")
        except _Unverified as exc:
            return ChainCheck(False, 0, str(exc))
        chain = verify_chain(self.records(), anchor or (0, GENESIS))
        if not chain.intact:
            return chain
        count = chain.records
        if head is None:
            if count == 0 and anchor is None:
                return chain
            return ChainCheck(False, count, "the signed head record is missing")
        last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if last is None or (int(last[0]), last[1]) != head:
            return ChainCheck(
                False,
                count,
                f"the chain should end at record {head[0]}; records were removed or rewritten",
            )
        return chain

    def prune(
        self,
        before: float | None,
        *,
        keep: int = 0,
        max_records: int | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete the oldest records, in one transaction with the anchor signed at the last one
        deleted and a record of the pruning (``prune_audit``, actor ``edged``, role ``system``). A
        record goes when it is beyond the newest ``max_records`` (by seq), or when it and every
        record before it were written before ``before`` (None: age prunes nothing): the chain
        stays one piece. The newest ``keep`` records never go, whatever the clock says (a clock
        stepped forward makes every record look old). At most ``limit`` go (None: no limit): the
        caller prunes a large log in batches, each a short transaction. Records are counted by seq
        (an intact chain has no gap); a log at the bound is left alone, so a pruning by count leaves
        exactly ``max_records``, its own record included.

        Only what is deleted is verified, from the signed anchor on (O(deleted), not O(chain)):
        the new anchor is signed over records that verified, so pruning never seals a change; a
        break in the records it keeps stays for ``verify`` to report. Returns how many were deleted
        (0: nothing changed). ``AuditBroken`` when the anchor or the records to delete do not
        verify: nothing is pruned."""
        with self.db.tx() as db:
            newest = self.last_seq()
            first = int(db.scalar("SELECT COALESCE(MIN(seq), 1) FROM audit"))
            overflow = 0  # beyond the bound: down to max_records with the pruning's own record
            if max_records is not None and newest - first + 1 > max_records:
                overflow = newest + 1 - max_records
            rows = db.execute(
                "SELECT * FROM audit WHERE seq <= ? ORDER BY seq LIMIT ?",
                (newest - keep, -1 if limit is None else limit),
            )
            doomed: list[AuditRecord] = []
            for row in rows:
                record = AuditRecord.from_row(tuple(row))
                if record.seq > overflow and (before is None or record.time >= before):
                    break
                doomed.append(record)
            if not doomed:
                return 0
            try:
                start = self._mark("anchor") or (0, GENESIS)
            except _Unverified as exc:
                raise AuditBroken(f"the audit chain is broken ({exc}); nothing was pruned") from None
            check = verify_chain(doomed, start)
            if not check.intact:
                raise AuditBroken(f"the audit chain is broken ({check.reason}); nothing was pruned")
            last = doomed[-1]
            db.execute("DELETE FROM audit WHERE seq <= ?", (last.seq,))
            self._sign("anchor", last.seq, last.hash)
            self.append(
                "prune_audit",
                "edged",
                "system",
                {"auditSeq": str(last.seq)},
                f"ok; {len(doomed)} record(s) {_why(before, max_records)} deleted",
            )
        return len(doomed)


def _why(before: float | None, max_records: int | None) -> str:
    """Which records a pruning deleted, for its record: ``written before <time>``, ``beyond the
    newest <n>``, or both (``… or …``)."""
    reasons = []
    if before is not None:
        reasons.append("written before " + datetime.fromtimestamp(before, UTC).isoformat(timespec="seconds"))
    if max_records is not None:
        reasons.append(f"beyond the newest {max_records:,}")
    return " or ".join(reasons)
