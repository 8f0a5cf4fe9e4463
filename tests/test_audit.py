"""The append-only audit log: hash-chained records (seq 1..n, each linked to the previous hash)
that verify, and any edit, removal, insertion or reordering made behind the store's back (raw SQL
on the real file) is detected and named, also after more records were appended. Records hold IDs
and outcomes, never names. Retention prunes the oldest records behind a signed anchor: the chain
still verifies, tampering still shows, and the anchor cannot be removed or moved."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from directory_helpers import MODEL, NAME

from edged.clock import ManualClock
from edged.directory import crypto
from edged.directory.audit import GENESIS, AuditBroken, AuditRecord, ChainCheck, chain_hash, verify_chain
from edged.directory.store import Store


def write_records(store: Store, clock: ManualClock, count: int = 5) -> list[AuditRecord]:
    records = []
    for i in range(count):
        clock.advance(1.5)
        records.append(
            store.audit.append(
                ["identify", "enroll", "delete_person", "verify", "train"][i % 5],
                f"door-{i % 2}",
                "terminal" if i % 2 else "admin",
                {"personGroupId": "staff", "faceId": f"{i:08d}-0000-4000-8000-000000000000"},
                "ok" if i % 3 else "denied",
            )
        )
    return records


def broken(store: Store) -> ChainCheck:
    chain = store.audit.verify()
    assert not chain.intact, "verification should fail"
    return chain


def test_records_form_a_chain(store: Store, clock: ManualClock) -> None:
    records = write_records(store, clock, 6)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0].prev_hash == GENESIS
    for previous, record in itertools.pairwise(records):
        assert record.prev_hash == previous.hash
    for record in records:
        assert record.hash == chain_hash(record)
        assert len(record.hash) == 64
    assert len({r.hash for r in records}) == 6
    assert records[-1].time == clock.now()
    assert store.audit.verify() == ChainCheck(True, 6, "ok")


def test_records_read_back_as_written(store: Store, clock: ManualClock) -> None:
    written = write_records(store, clock, 4)
    assert list(store.audit.records()) == written
    as_json = written[1].as_json()
    assert as_json["operation"] == "enroll"
    assert as_json["targets"] == {"personGroupId": "staff", "faceId": "00000001-0000-4000-8000-000000000000"}
    assert as_json["hash"] == written[1].hash


def test_an_empty_log_verifies(store: Store) -> None:
    assert store.audit.verify() == ChainCheck(True, 0, "ok")


def test_the_chain_survives_reopening(
    tmp_path: Path, store: Store, kek: crypto.Kek, clock: ManualClock
) -> None:
    write_records(store, clock, 3)
    store.close()
    reopened = Store.open(tmp_path / "state", kek, clock)
    try:
        record = reopened.audit.append("identify", "door-1", "terminal", {"personGroupId": "staff"}, "ok")
        assert record.seq == 4
        assert reopened.audit.verify() == ChainCheck(True, 4, "ok")
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("result", "'denied'"),
        ("result", "'ok '"),
        ("operation", "'verify'"),
        ("actor", "'door-1'"),
        ("role", "'terminal'"),
        ("targets", """'{"faceId": "99999999-0000-4000-8000-000000000000", "personGroupId": "staff"}'"""),
        ("targets", """'{"faceId": "00000002-0000-4000-8000-000000000000"}'"""),
        ("time", "time - 3600"),
        ("time", "time + 0.001"),
    ],
)
def test_editing_one_record_breaks_verification(
    store: Store, clock: ManualClock, column: str, value: str
) -> None:
    records = write_records(store, clock, 6)
    assert store.audit.verify() == ChainCheck(True, 6, "ok")
    before = store.db.execute(f"SELECT {column} FROM audit WHERE seq = 3").fetchone()[0]
    store.db.execute(f"UPDATE audit SET {column} = {value} WHERE seq = 3")
    assert store.db.execute(f"SELECT {column} FROM audit WHERE seq = 3").fetchone()[0] != before
    broken_chain = broken(store)
    checked, reason = broken_chain.records, broken_chain.reason
    assert checked == 3
    assert reason == "record 3 was changed after it was written"
    assert records[2].hash == store.db.execute("SELECT hash FROM audit WHERE seq = 3").fetchone()[0]


def test_editing_a_hash_breaks_verification(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 4)
    store.db.execute("UPDATE audit SET hash = ? WHERE seq = 2", ("f" * 64,))
    reason = broken(store).reason
    assert "record 2" in reason


def test_editing_a_prev_hash_breaks_verification(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 4)
    store.db.execute("UPDATE audit SET prev_hash = ? WHERE seq = 3", ("0" * 64,))
    reason = broken(store).reason
    assert reason == "record 3 does not follow record 2"


@pytest.mark.parametrize("seq", [1, 3])
def test_deleting_a_record_breaks_verification(store: Store, clock: ManualClock, seq: int) -> None:
    write_records(store, clock, 5)
    store.db.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    reason = broken(store).reason
    assert reason == f"record {seq} is missing (found {seq + 1} next)"


def test_deleting_and_renumbering_breaks_verification(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 5)
    store.db.execute("DELETE FROM audit WHERE seq = 2")
    store.db.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 2")
    assert [r.seq for r in store.audit.records()] == [1, 2, 3, 4]
    broken_chain = broken(store)
    checked, reason = broken_chain.records, broken_chain.reason
    assert checked == 2
    assert reason == "record 2 does not follow record 1"


def test_swapping_two_records_breaks_verification(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 5)
    db = store.db
    db.execute("UPDATE audit SET seq = -1 WHERE seq = 2")
    db.execute("UPDATE audit SET seq = 2 WHERE seq = 3")
    db.execute("UPDATE audit SET seq = 3 WHERE seq = -1")
    reason = broken(store).reason
    assert reason == "record 2 does not follow record 1"


def test_renumbering_all_records_breaks_verification(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 3)
    store.db.execute("UPDATE audit SET seq = seq + 10")
    reason = broken(store).reason
    assert reason == "record 1 is missing (found 11 next)"


def test_inserting_a_copied_record_breaks_verification(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 4)
    db = store.db
    db.execute("UPDATE audit SET seq = -(seq + 1) WHERE seq >= 3")  # make room for a new record 3
    db.execute("UPDATE audit SET seq = -seq WHERE seq < 0")
    db.execute(
        "INSERT INTO audit SELECT 3, time, operation, actor, role, targets, result, prev_hash, hash"
        " FROM audit WHERE seq = 2"
    )
    assert [r.seq for r in store.audit.records()] == [1, 2, 3, 4, 5]
    reason = broken(store).reason
    assert reason == "record 3 does not follow record 2"


def test_removing_the_newest_record_is_detected(store: Store, clock: ManualClock) -> None:
    """Cutting records off the end (hiding the latest actions) is a removal too: the chain alone
    cannot show it, so the log must be anchored (e.g. a head signed with the device key)."""
    write_records(store, clock, 5)
    store.db.execute("DELETE FROM audit WHERE seq = 5")
    chain = store.audit.verify()
    assert not chain.intact, "removing the newest record went unnoticed"
    assert "5" in chain.reason
    store.db.execute("DELETE FROM audit")
    assert not store.audit.verify().intact, "removing every record went unnoticed"


def test_a_rewritten_chain_is_detected(store: Store, clock: ManualClock) -> None:
    """Editing a record and recomputing the plain SHA-256 chain after it needs no secret: anyone
    with write access to the file can do it. Verification must still notice (a keyed chain or
    a signed head)."""
    write_records(store, clock, 5)
    records = list(store.audit.records())
    forged: list[AuditRecord] = records[:2]
    for record in records[2:]:
        changed = AuditRecord(
            record.seq,
            record.time,
            record.operation,
            record.actor,
            record.role,
            record.targets,
            "denied" if record.seq == 3 else record.result,
            forged[-1].hash,
            "",
        )
        forged.append(changed.with_hash(chain_hash(changed)))
    assert (records[2].result, forged[2].result) == ("ok", "denied")
    assert verify_chain(forged) == ChainCheck(True, 5, "ok")  # the forgery is a well-formed chain
    store.db.execute("DELETE FROM audit WHERE seq >= 3")
    store.db.executemany(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [r.row() for r in forged[2:]]
    )
    assert not store.audit.verify().intact, "a record edited with a recomputed chain went unnoticed"


def test_verify_chain_directly() -> None:
    first = AuditRecord(1, 10.0, "enroll", "cli", "admin", {"personId": "p"}, "ok", GENESIS, "")
    first = first.with_hash(chain_hash(first))
    second = AuditRecord(2, 11.0, "identify", "door", "terminal", {}, "ok", first.hash, "")
    second = second.with_hash(chain_hash(second))
    assert verify_chain([first, second]) == ChainCheck(True, 2, "ok")
    assert verify_chain([second, first]).intact is False
    assert verify_chain([second]).reason == "record 1 is missing (found 2 next)"
    assert verify_chain([first, AuditRecord.from_row(second.row())]) == ChainCheck(True, 2, "ok")


def test_records_hold_no_names(store: Store, clock: ManualClock, tmp_path: Path) -> None:
    """Enrol a named person and audit what happened to it by ID: the name appears nowhere in the
    audit table (read through a separate connection, as a reader of the file would)."""
    store.groups.create("staff", "Staff", None, "group", MODEL)
    person_id = store.persons.create("staff", NAME, '{"badge": "ZQM-774312"}')
    face_id = store.persons.add_face(
        "staff", person_id, np.random.default_rng(3).standard_normal(128).astype(np.float32), MODEL, None, {}
    )
    store.audit.append(
        "create_person", "cli", "admin", {"personGroupId": "staff", "personId": person_id}, "ok"
    )
    store.audit.append(
        "add_face", "cli", "admin", {"personGroupId": "staff", "personId": person_id, "faceId": face_id}, "ok"
    )
    store.audit.append(
        "identify", "door-1", "terminal", {"personGroupId": "staff", "candidate": person_id}, "match"
    )
    store.audit.append(
        "delete_person", "cli", "admin", {"personGroupId": "staff", "personId": person_id}, "ok"
    )
    store.persons.delete("staff", person_id)

    reader = sqlite3.connect(tmp_path / "state" / "directory.sqlite3")
    try:
        rows = reader.execute("SELECT * FROM audit ORDER BY seq").fetchall()
    finally:
        reader.close()
    assert len(rows) == 4
    text = json.dumps(rows)
    assert person_id in text  # IDs are what the log is for
    for fragment in (NAME, "Zebulon", "Quixotic", "Marchbanks", "ZQM-774312"):
        assert fragment not in text
        assert fragment.lower() not in text.lower()
    assert store.audit.verify() == ChainCheck(True, 4, "ok")


# -- a record is appended after the signed head: a cut or a rewrite stays visible ---------------------


def test_a_tail_cut_off_stays_visible_after_the_next_record(store: Store, clock: ManualClock) -> None:
    """Records 4 and 5 removed, then a change is recorded: it must not seal the shorter chain."""
    write_records(store, clock, 5)
    store.db.execute("DELETE FROM audit WHERE seq >= 4")
    record = store.audit.append("delete_person", "cli", "manager", {"personId": "p"}, "ok")
    assert record.seq == 6
    assert store.audit.verify() == ChainCheck(False, 4, "record 4 is missing (found 6 next)")


def test_a_rewritten_chain_stays_visible_after_the_next_record(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 4)
    records = list(store.audit.records())
    forged = [records[0]]
    for record in records[1:]:
        changed = AuditRecord(
            record.seq, record.time, record.operation, record.actor, record.role, record.targets,
            "denied", forged[-1].hash, "",
        )  # fmt: skip
        forged.append(changed.with_hash(chain_hash(changed)))
    store.db.execute("DELETE FROM audit WHERE seq >= 2")
    store.db.executemany(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [r.row() for r in forged[1:]]
    )
    store.audit.append("delete_person", "cli", "manager", {"personId": "p"}, "ok")
    assert store.audit.verify() == ChainCheck(False, 5, "record 5 does not follow record 4")


def test_a_record_added_behind_the_heads_back_stays_visible(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 3)
    last = list(store.audit.records())[-1]
    extra = AuditRecord(4, last.time, "train", "cli", "manager", {}, "ok", last.hash, "")
    store.db.execute(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", extra.with_hash(chain_hash(extra)).row()
    )
    assert store.audit.append("identify", "door-1", "terminal", {}, "ok").seq == 5
    assert store.audit.verify() == ChainCheck(False, 5, "record 5 does not follow record 4")


def test_a_removed_head_stays_visible_after_the_next_record(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 3)
    store.db.execute("DELETE FROM meta WHERE key = 'audit_head'")
    assert store.audit.verify() == ChainCheck(False, 3, "the signed head record is missing")
    store.audit.append("identify", "door-1", "terminal", {}, "ok")
    assert store.audit.verify() == ChainCheck(False, 4, "record 4 does not follow record 3")


# -- retention: pruning with a signed anchor ------------------------------------------------------------


def anchor(store: Store) -> bytes:
    return bytes(store.db.scalar("SELECT value FROM meta WHERE key = 'audit_anchor'"))


def test_pruning_keeps_the_chain_verifiable_and_is_recorded(store: Store, clock: ManualClock) -> None:
    records = write_records(store, clock, 6)
    assert store.audit.prune(records[3].time + 0.1) == 4
    kept = list(store.audit.records())
    assert [r.seq for r in kept] == [5, 6, 7]
    assert kept[:2] == records[4:]
    note = kept[-1]
    assert (note.operation, note.actor, note.role, note.targets) == (
        "prune_audit", "edged", "system", {"auditSeq": "4"},
    )  # fmt: skip
    assert note.result.startswith("ok; 4 record(s) written before ")
    assert store.audit.verify() == ChainCheck(True, 3, "ok")
    assert store.audit.prune(records[3].time + 0.1) == 0, "nothing older is left"
    assert [r.seq for r in store.audit.records()] == [5, 6, 7], (
        "a pruning that deletes nothing is not recorded"
    )


def test_pruning_everything_keeps_its_own_record(store: Store, clock: ManualClock) -> None:
    write_records(store, clock, 3)
    assert store.audit.prune(clock.now() + 1) == 3
    assert [r.operation for r in store.audit.records()] == ["prune_audit"]
    assert store.audit.verify() == ChainCheck(True, 1, "ok")
    clock.advance(1)
    assert store.audit.append("identify", "door-1", "terminal", {}, "ok").seq == 5
    assert store.audit.verify() == ChainCheck(True, 2, "ok")


def test_pruning_stops_at_the_first_newer_record(store: Store, clock: ManualClock) -> None:
    """A clock stepped back writes an older time after a newer one: the chain is cut at the first
    record that is not old enough, never in the middle."""
    write_records(store, clock, 2)
    clock.advance(1000)
    store.audit.append("identify", "door-1", "terminal", {}, "ok")
    clock.advance(-2000)
    store.audit.append("identify", "door-1", "terminal", {}, "ok")
    assert store.audit.prune(clock.now() + 1500) == 2
    assert [r.seq for r in store.audit.records()] == [3, 4, 5]
    assert store.audit.verify().intact


def test_tampering_after_pruning_is_still_detected(store: Store, clock: ManualClock) -> None:
    records = write_records(store, clock, 6)
    store.audit.prune(records[2].time + 0.1)
    store.db.execute("UPDATE audit SET result = 'denied' WHERE seq = 5")
    assert broken(store).reason == "record 5 was changed after it was written"
    store.db.execute("UPDATE audit SET result = ? WHERE seq = 5", (records[4].result,))
    store.db.execute("DELETE FROM audit WHERE seq = 4")
    assert broken(store).reason == "record 4 is missing (found 5 next)", "the oldest kept record removed"


def test_a_broken_chain_is_not_pruned(store: Store, clock: ManualClock) -> None:
    """Pruning signs an anchor: over a tampered record it would seal what was done. It verifies what
    it would delete (not the whole chain): a break there refuses the pruning; a break in what it
    keeps stays for ``verify`` to report, and stops the pruning that reaches it."""
    records = write_records(store, clock, 5)
    store.db.execute("UPDATE audit SET result = 'changed' WHERE seq = 4")
    with pytest.raises(AuditBroken, match="record 4 was changed"):
        store.audit.prune(records[3].time + 0.1)
    assert [r.seq for r in store.audit.records()] == [1, 2, 3, 4, 5]
    assert store.audit.prune(records[1].time + 0.1) == 2  # records 1 and 2 verified
    assert broken(store).reason == "record 4 was changed after it was written"
    with pytest.raises(AuditBroken, match="record 4 was changed"):
        store.audit.prune(records[4].time + 0.1)
    assert [r.seq for r in store.audit.records()] == [3, 4, 5, 6]

    # an anchor that is not the device key's: nothing is pruned after it
    store.db.execute("UPDATE meta SET value = ? WHERE key = 'audit_anchor'", (b"not json",))
    with pytest.raises(AuditBroken, match="anchor is not a signed position"):
        store.audit.prune(None, max_records=1)
    assert [r.seq for r in store.audit.records()] == [3, 4, 5, 6]


def test_a_clock_stepped_forward_never_prunes_the_newest_records(store: Store, clock: ManualClock) -> None:
    """Every record looks old to a clock stepped forward ten years: ``keep`` newest stay, whatever
    the clock says, and the chain still verifies."""
    records = write_records(store, clock, 8)
    clock.advance(3650 * 86_400)
    assert store.audit.prune(clock.now() - 30 * 86_400, keep=3) == 5
    kept = list(store.audit.records())
    assert kept[:3] == records[5:] and kept[3].operation == "prune_audit"
    assert store.audit.verify() == ChainCheck(True, 4, "ok")
    assert store.audit.prune(clock.now() - 30 * 86_400, keep=4) == 0, "the newest 4 stay"
    assert store.audit.prune(clock.now() - 30 * 86_400, keep=1) == 3


def test_the_log_keeps_at_most_max_records_whatever_their_age(store: Store, clock: ManualClock) -> None:
    records = write_records(store, clock, 10)
    assert store.audit.prune(None, max_records=4) == 7, "none is old: the count bound alone"
    kept = list(store.audit.records())
    assert kept[:3] == records[7:]
    assert kept[3].result == "ok; 7 record(s) beyond the newest 4 deleted"
    assert store.audit.verify() == ChainCheck(True, 4, "ok")
    assert store.audit.prune(None, max_records=4) == 0, "a log at its bound is left alone"
    # with an age too: a record goes when it is either; never one of the newest ``keep``
    clock.advance(1)
    store.audit.append("identify", "door-1", "terminal", {}, "ok")
    assert store.audit.prune(records[9].time + 0.1, max_records=4, keep=2) == 3  # 2 by count, 3 by age
    assert [r.seq for r in store.audit.records()] == [11, 12, 13]
    assert "written before " in list(store.audit.records())[-1].result
    assert store.audit.prune(None, max_records=1, keep=2) == 1, "keep wins over the count bound"
    assert [r.seq for r in store.audit.records()] == [12, 13, 14]


def test_a_batch_verifies_and_deletes_only_what_it_may(store: Store, clock: ManualClock) -> None:
    """``limit``: at most that many go in one transaction; the next batch goes on from its anchor."""
    write_records(store, clock, 9)
    assert store.audit.prune(None, max_records=2, limit=4) == 4
    assert store.audit.prune(None, max_records=2, limit=4) == 4
    assert store.audit.prune(None, max_records=2, limit=4) == 2
    assert store.audit.prune(None, max_records=2, limit=4) == 0
    assert store.audit.verify() == ChainCheck(True, 2, "ok")
    assert [r.operation for r in store.audit.records()] == ["prune_audit"] * 2


def test_the_anchor_cannot_be_removed_or_moved_without_the_device_key(
    store: Store, clock: ManualClock
) -> None:
    records = write_records(store, clock, 8)
    store.audit.prune(records[1].time + 0.1)  # anchor at record 2
    first = anchor(store)
    store.audit.prune(records[4].time + 0.1)  # anchor at record 5
    second = anchor(store)
    assert store.audit.verify().intact

    store.db.execute("DELETE FROM meta WHERE key = 'audit_anchor'")
    assert broken(store).reason == "record 1 is missing (found 6 next)", "the anchor removed"

    store.db.execute("INSERT INTO meta VALUES ('audit_anchor', ?)", (first,))
    assert broken(store).reason == "record 3 is missing (found 6 next)", "an older anchor put back"

    # forwards: records 6 and 7 removed, and an anchor at 7 made up: the signature does not verify
    seventh = records[6]
    store.db.execute("DELETE FROM audit WHERE seq <= 7")
    value = json.loads(second)
    position = crypto.canonical({"seq": 7, "hash": seventh.hash}).decode()
    forged = crypto.canonical({"anchor": position, "signature": value["signature"]})
    store.db.execute("UPDATE meta SET value = ? WHERE key = 'audit_anchor'", (forged,))
    assert broken(store).reason == "the signature of the chain's anchor does not verify"

    # nor does the head's signature pass for the anchor's (it signs the same kind of position)
    head = json.loads(bytes(store.db.scalar("SELECT value FROM meta WHERE key = 'audit_head'")))
    borrowed = crypto.canonical({"anchor": head["head"], "signature": head["signature"]})
    store.db.execute("UPDATE meta SET value = ? WHERE key = 'audit_anchor'", (borrowed,))
    assert broken(store).reason == "the signature of the chain's anchor does not verify"
    store.db.execute("UPDATE meta SET value = ? WHERE key = 'audit_anchor'", (b"not json",))
    assert broken(store).reason == "the chain's anchor is not a signed position"


def test_the_pruned_chain_survives_reopening(
    tmp_path: Path, store: Store, kek: crypto.Kek, clock: ManualClock
) -> None:
    records = write_records(store, clock, 5)
    store.audit.prune(records[2].time + 0.1)
    store.close()
    reopened = Store.open(tmp_path / "state", kek, clock)
    try:
        assert reopened.audit.append("identify", "door-1", "terminal", {}, "ok").seq == 7
        assert reopened.audit.verify() == ChainCheck(True, 4, "ok")
    finally:
        reopened.close()


def test_records_and_head_removed_after_a_pruning_stay_visible(store: Store, clock: ManualClock) -> None:
    records = write_records(store, clock, 4)
    store.audit.prune(records[1].time + 0.1)  # anchor at record 2; records 3, 4 and the pruning's 5
    store.db.execute("DELETE FROM audit")
    store.db.execute("DELETE FROM meta WHERE key = 'audit_head'")
    store.audit.append("identify", "door-1", "terminal", {}, "ok")
    assert store.audit.verify() == ChainCheck(False, 1, "record 3 is missing (found 1 next)")
