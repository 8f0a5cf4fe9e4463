"""The quota of face IDs (edged/service/quota.py): live face IDs per client and in all, expiry freeing
them, the disk-space floor read with the real ``statvfs`` (and through the injectable reading), and
what the stats say; over the real pipeline, a real encrypted SQLite directory and a manual clock.
The quota over MQTT (the error code in the reply) is in tests/test_api.py."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from edged.clock import ManualClock
from edged.directory import store as store_module
from edged.directory.crypto import Kek, create_key_file
from edged.directory.schema import MIGRATIONS
from edged.directory.store import Store
from edged.door.claims import ClaimCounts
from edged.errors import QuotaExceeded
from edged.mqtt.stats import FrameCounts, StatsMessage
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.service.policy import Caller
from edged.service.quota import MB, FaceIdUsage, FreeBytes, free_bytes
from edged.service.settings import DirectorySettings
from edged.stats import StatsCollector
from edged.types import ImageRGB

ALICE = Caller("mqtt:alice", "recognizer")
BOB = Caller("mqtt:bob", "recognizer")
UNSIGNED = Caller("mqtt:(unsigned)", "recognizer")
RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]


def make(store: Store, pipeline: FacePipeline, free: FreeBytes | None = None, **settings: int) -> FaceService:
    return FaceService(
        pipeline, store, DirectorySettings(**settings), pipeline.embedder.model.path.name, free=free
    )


def face_ids(service: FaceService, caller: Caller, image: ImageRGB, ttl_s: int | None = None) -> list[str]:
    return [d.face_id for d in service.recognition.detect(caller, image, ttl_s=ttl_s) if d.face_id]


def test_a_client_over_its_cap_is_refused_while_another_client_is_not(
    store: Store, pipeline: FacePipeline, astronaut: ImageRGB, clock: ManualClock
) -> None:
    service = make(store, pipeline, face_ids_per_client=2, face_ids_max=100)
    first = face_ids(service, ALICE, astronaut, ttl_s=600)
    clock.advance(30)
    face_ids(service, ALICE, astronaut)
    with pytest.raises(QuotaExceeded) as refused:
        face_ids(service, ALICE, astronaut)
    message = refused.value.message
    assert "client 'mqtt:alice' holds 2 live face IDs; 1 more would pass 2" in message
    assert "directory.face_ids_per_client" in message
    assert "the next of them expires in 570 s (" in message  # the first one: 600 s, 30 s ago
    assert "returnFaceId=false" in message and "faceIdTimeToLive" in message
    assert store.transient.count() == 2  # the refusal stored nothing
    assert len(face_ids(service, BOB, astronaut)) == 1  # another client still gets face IDs
    assert len(face_ids(service, UNSIGNED, astronaut)) == 1
    # detect without face IDs stores nothing and needs no quota
    detected = service.recognition.detect(ALICE, astronaut, return_face_id=False)
    assert len(detected) == 1 and detected[0].face_id is None
    # the refused client's face IDs still work
    assert service.recognition.verify_faces(first[0], first[0]).is_identical


def test_an_image_with_more_faces_than_are_left_stores_none_of_them(
    store: Store, pipeline: FacePipeline, astronaut: ImageRGB
) -> None:
    head = astronaut[0:300, 75:375]
    two = np.ascontiguousarray(np.concatenate([head, head], axis=1))  # two faces
    service = make(store, pipeline, face_ids_per_client=2)
    assert len(face_ids(service, ALICE, astronaut)) == 1
    with pytest.raises(QuotaExceeded, match="holds 1 live face IDs; 2 more would pass 2"):
        face_ids(service, ALICE, two)
    assert store.transient.count() == 1
    assert len(face_ids(service, BOB, two)) == 2


def test_the_global_cap_holds_across_clients(
    store: Store, pipeline: FacePipeline, astronaut: ImageRGB
) -> None:
    service = make(store, pipeline, face_ids_per_client=10, face_ids_max=3)
    for caller in (ALICE, ALICE, BOB):
        face_ids(service, caller, astronaut)
    for caller in (UNSIGNED, ALICE):
        with pytest.raises(QuotaExceeded, match=r"this device holds 3 live face IDs; 1 more would pass 3"):
            face_ids(service, caller, astronaut)
    with pytest.raises(QuotaExceeded, match=r"directory\.face_ids_max"):
        face_ids(service, BOB, astronaut)
    assert service.face_id_usage().refusing == "face_ids_max"


def test_expiry_frees_quota_before_the_reaper_runs(
    store: Store, pipeline: FacePipeline, astronaut: ImageRGB, clock: ManualClock
) -> None:
    service = make(store, pipeline, face_ids_per_client=1, face_ids_max=2)
    face_ids(service, ALICE, astronaut, ttl_s=60)
    face_ids(service, BOB, astronaut, ttl_s=600)
    with pytest.raises(QuotaExceeded, match=r"client 'mqtt:alice'.* expires in 60 s"):
        face_ids(service, ALICE, astronaut)
    clock.advance(60)  # alice's face ID expires: hers is free again, and so is the device's
    assert len(face_ids(service, ALICE, astronaut, ttl_s=60)) == 1
    assert store.transient.count() == 3  # the expired one is still there (no reap yet)
    assert store.transient.live().count == 2
    clock.advance(60)
    assert service.reap() == 2
    assert store.transient.live().count == store.transient.count() == 1  # bob's
    assert len(face_ids(service, ALICE, astronaut)) == 1


def test_migration_4_keeps_the_face_ids_of_an_older_directory(
    state_dir: Path, kek: Kek, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory at version 3 gets the owner column and its index; its face IDs stay, ownerless."""
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:3])
    with closing(Store.open(state_dir, kek, clock)) as old, old.db.tx() as db:
        assert old.db.user_version() == 3
        key = old.keys.create("transient:f1")
        db.execute(  # as edged before migration 4 wrote a face ID
            "INSERT INTO transient_faces VALUES ('f1', ?, x'00', 'm', ?, ?)",
            (key.key_id, clock.now(), clock.now() + 600),
        )
    monkeypatch.undo()
    with closing(Store.open(state_dir, kek, clock)) as store:
        assert store.db.user_version() == len(MIGRATIONS)  # 4, and those after it
        assert store.db.execute("SELECT face_id, client FROM transient_faces").fetchall() == [("f1", None)]
        assert (store.transient.live().count, store.transient.live("cli").count) == (1, 0)


def test_face_ids_from_before_the_owner_column_count_in_all(
    store: Store, pipeline: FacePipeline, astronaut: ImageRGB
) -> None:
    """Migration 4 adds the owner; a face ID of an older edged (owner NULL) counts for the device."""
    service = make(store, pipeline, face_ids_per_client=5, face_ids_max=2)
    face_ids(service, ALICE, astronaut)
    store.db.execute("UPDATE transient_faces SET client = NULL")
    assert store.transient.live("mqtt:alice").count == 0 and store.transient.live().count == 1
    face_ids(service, ALICE, astronaut)
    with pytest.raises(QuotaExceeded, match="this device holds 2"):
        face_ids(service, BOB, astronaut)


def test_live_face_ids_are_counted_on_the_indexes(store: Store) -> None:
    plans = [
        " ".join(str(row[-1]) for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        for sql, params in (
            ("SELECT COUNT(*), MIN(expires) FROM transient_faces WHERE client = ? AND expires > ?", ("a", 0)),
            ("SELECT COUNT(*), MIN(expires) FROM transient_faces WHERE expires > ?", (0,)),
        )
    ]
    assert "USING COVERING INDEX transient_by_client (client=? AND expires>?)" in plans[0], plans
    assert "USING COVERING INDEX transient_by_expiry (expires>?)" in plans[1], plans


# -- the disk floor: the real free space of the state directory's filesystem --------------------------


def test_under_the_disk_floor_no_face_id_is_given_and_the_stats_say_so(
    store: Store,
    pipeline: FacePipeline,
    astronaut: ImageRGB,
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The default reading (statvfs of the state directory), with a floor 1 GB above what is free."""
    real = free_bytes(state_dir)
    floor_mb = real // MB + 1024
    service = make(store, pipeline, face_ids_min_free_mb=floor_mb)
    with caplog.at_level(logging.INFO, logger="edged.service.quota"):
        with pytest.raises(QuotaExceeded) as refused:
            face_ids(service, ALICE, astronaut)
        with pytest.raises(QuotaExceeded):
            face_ids(service, BOB, astronaut)
    message = refused.value.message
    assert "no new face IDs: the state directory's filesystem has" in message
    assert f"under directory.face_ids_min_free_mb ({floor_mb} MB)" in message
    assert store.transient.count() == 0
    assert (
        len([r for r in caplog.records if "under the floor" in r.getMessage()]) == 1
    )  # once, not per request
    assert service.recognition.detect(ALICE, astronaut, return_face_id=False)[0].face_id is None
    usage = service.face_id_usage()
    assert usage.refusing == "disk_floor"
    assert usage.disk_floor_bytes == floor_mb * MB
    assert abs(usage.disk_free_bytes - real) < 512 * MB  # the same filesystem, read again
    payload = stats_message(usage).to_payload()["face_ids"]
    assert payload == {
        "live": 0,
        "max": 100_000,
        "disk_free_bytes": usage.disk_free_bytes,
        "disk_floor_bytes": floor_mb * MB,
        "refusing": "disk_floor",
    }


def test_the_free_space_reading_is_injectable(
    store: Store, pipeline: FacePipeline, astronaut: ImageRGB, tmp_path: Path
) -> None:
    """The seam: a callable giving the free bytes (here real statvfs readings, then space freed)."""
    readings = [free_bytes(tmp_path)]
    floor_mb = readings[0] // MB + 512
    service = make(store, pipeline, free=lambda: readings[-1], face_ids_min_free_mb=floor_mb)
    with pytest.raises(QuotaExceeded, match="face_ids_min_free_mb"):
        face_ids(service, ALICE, astronaut)
    readings.append(free_bytes(tmp_path) + 1024 * MB)  # an operator freed a gigabyte
    assert len(face_ids(service, ALICE, astronaut)) == 1
    usage = service.face_id_usage()
    assert (usage.live, usage.refusing) == (1, None)
    assert stats_message(usage).to_payload()["face_ids"]["refusing"] is None


def test_the_default_floor_lets_a_healthy_disk_give_face_ids(
    store: Store, pipeline: FacePipeline, astronaut: ImageRGB
) -> None:
    service = make(store, pipeline)
    assert len(face_ids(service, ALICE, astronaut)) == 1
    assert service.face_id_usage().disk_floor_bytes == 256 * MB


def stats_message(usage: FaceIdUsage) -> StatsMessage:
    return StatsMessage(
        device="pi-01",
        time=1_800_000_000.0,
        uptime_s=1.0,
        interval=StatsCollector().take(),
        frames=FrameCounts(0, 0, 0),
        decisions_total=0,
        directory={},
        claims=ClaimCounts(),
        face_ids=usage,
    )


def test_the_cli_asks_as_its_own_client_under_the_same_floor(
    tmp_path: Path, run_edged: RunEdged, astronaut: ImageRGB, encode_image: Callable[..., bytes]
) -> None:
    """``edged find-similar`` detects as the client ``cli``: one line QuotaExceeded, exit 7, nothing
    stored, with the real free space of its state directory under the configured floor."""
    state = tmp_path / "state"
    state.mkdir()
    create_key_file(tmp_path / "kek")
    probe = tmp_path / "probe.png"
    probe.write_bytes(encode_image(astronaut, ".png"))
    config = tmp_path / "edged.yaml"
    floor_mb = free_bytes(state) // MB + 1024
    config.write_text(f"directory:\n  face_ids_min_free_mb: {floor_mb}\n")
    site = ["--config", config, "--state-dir", state, "--key-file", tmp_path / "kek"]
    result = run_edged([*site, "find-similar", probe, "--face-list", "visitors"])
    assert result.stderr.startswith("edged: QuotaExceeded: no new face IDs: the state directory's"), (
        result.stderr
    )
    assert f"({floor_mb} MB)" in result.stderr and len(result.stderr.splitlines()) == 1
    assert result.returncode == 7
