"""The door daemon's directory upkeep (edged/app.py): the scheduled reaper deletes expired face IDs
while the daemon runs; audit records past their retention are pruned at start and once a day, the
chain still verifying; a person deleted (or enrolled) by another process, as the CLI does, stops
(or starts) matching without a restart; a training cut short by a kill does not keep the daemon
from starting.

Real models, the built-in demo camera, a real encrypted directory (a second ``Store`` connection
plays the CLI, with its own pipeline as the CLI process has), a real Mosquitto for the MQTT
``detect``. Waits are polls with a deadline, never assertions on speed."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import READY_TIMEOUT_S, Broker, Watcher

from edged.api.client import RequestClient
from edged.app import AUDIT_PRUNE_INTERVAL_S, REAP_INTERVAL_S, App
from edged.clock import ManualClock
from edged.config import Config
from edged.directory import crypto
from edged.directory.liveness import SESSION_LIFETIME_S
from edged.directory.store import Store
from edged.errors import ConfigError, FaceNotFound
from edged.mqtt.client import MqttSettings
from edged.mqtt.settings import BrokerAddress
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.service.policy import Caller
from edged.types import Face, ImageRGB

MANAGER = Caller("cli", "manager")

DEVICE = "t1"
WAIT_S = 30.0  # deadlines for things that must happen; the daemon checks every second


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cli_pipeline() -> FacePipeline:
    """The CLI's own interpreters (another process in real life; TFLite interpreters are not
    thread-safe, and the daemon's worker runs the session pipeline)."""
    return FacePipeline.load()


def open_service(state_dir: Path, kek: crypto.Kek, pipeline: FacePipeline) -> FaceService:
    """A second connection to the directory with the face operations on it: what the CLI opens."""
    store = Store.open(state_dir, kek)
    return FaceService(pipeline, store, Config().directory, pipeline.embedder.model.path.name)


def enrolled(
    state_dir: Path, kek: crypto.Kek, pipeline: FacePipeline, astronaut: ImageRGB, train: bool = True
) -> str:
    """The astronaut in the group ``staff`` (trained unless told not to); returns the person ID."""
    service = open_service(state_dir, kek, pipeline)
    try:
        service.changes.create_group(MANAGER, "staff", "Staff")
        person_id = service.changes.create_person(MANAGER, "staff", "Eileen Collins")
        service.changes.add_person_face(MANAGER, "staff", person_id, astronaut)
        if train:
            service.changes.train(MANAGER, "staff")
    finally:
        service.store.close()
    return person_id


def test_face_ids_from_detect_are_deleted_once_expired_while_the_daemon_runs(
    broker: Broker,
    tmp_path: Path,
    kek: crypto.Kek,
    pipeline: FacePipeline,
    astronaut: ImageRGB,
    encode_image: Callable[..., bytes],
) -> None:
    state_dir = tmp_path / "state"
    clock = ManualClock()
    config = Config.model_validate({"device_id": DEVICE, "mqtt": {"stats_interval_s": 0}})
    address = BrokerAddress("127.0.0.1", broker.port)
    app = App(config, state_dir, kek, address, threading.Event(), None, pipeline=pipeline, clock=clock)
    watcher = Watcher(broker.port, f"edged/{DEVICE}/status")
    other = None
    try:
        app.start()
        watcher.wait_for(lambda ms: any(p.get("state") == "online" for _, p, _ in ms))
        image = base64.b64encode(encode_image(astronaut, ".jpg")).decode()
        reply: dict[str, Any] = {}
        with RequestClient(MqttSettings(port=broker.port), DEVICE) as client:
            for _ in range(6):  # the request server's subscription may still be on its way
                try:
                    reply = client.request("detect", {"image": image}, timeout=READY_TIMEOUT_S)
                    break
                except TimeoutError:
                    continue
            assert reply.get("ok"), reply
            (face,) = reply["result"]["faces"]
            face_id = face["faceId"]
            assert face["expires"] == pytest.approx(clock.now() + config.directory.transient_ttl_s)

            other = Store.open(state_dir, kek)  # reads what is on disk, beside the daemon
            assert other.transient.count() >= 1
            clock.advance(config.directory.transient_ttl_s + REAP_INTERVAL_S + 1)
            # no request touches the face ID: only the scheduled reaper can delete it
            scheduler = app.scheduler
            assert scheduler is not None
            # the job's count is added just after its deletion commits: wait for both
            wait_until(
                lambda: (
                    other is not None
                    and other.transient.count() == 0
                    and scheduler.done["expired face IDs"] >= 1
                ),
                "the reaper ran",
            )
            with pytest.raises(FaceNotFound):
                other.transient.get(face_id)
            gone = client.request("verify", {"faceId1": face_id, "faceId2": face_id}, timeout=WAIT_S)
            assert not gone["ok"] and gone["error"]["code"] == "FaceNotFound", gone
    finally:
        if other is not None:
            other.close()
        watcher.close()
        app.stop()
    assert app.error is None
    assert app.scheduler is not None and not app.scheduler.is_alive(), "stop() stops the maintenance thread"


def test_liveness_sessions_are_deleted_48_hours_after_creation_while_the_daemon_runs(
    tmp_path: Path, kek: crypto.Kek, pipeline: FacePipeline
) -> None:
    state_dir = tmp_path / "state"
    clock = ManualClock()
    other = Store.open(state_dir, kek, clock)  # the session's creator, beside the daemon
    old = other.liveness.create("passive", "kiosk-1").session.session_id
    clock.advance(3600)
    young = other.liveness.create("passive").session.session_id
    config = Config.model_validate({"device_id": DEVICE})
    app = App(config, state_dir, kek, None, threading.Event(), None, pipeline=pipeline, clock=clock)
    try:
        app.start()
        scheduler = app.scheduler
        assert scheduler is not None
        job = "expired liveness sessions"
        assert scheduler.runs[job] == 1 and scheduler.done[job] == 0  # at start: none is 48 h old
        clock.advance(SESSION_LIFETIME_S - 3600 + REAP_INTERVAL_S)  # the old one is 48 h old
        wait_until(lambda: other.liveness.count() == 1 and scheduler.done[job] == 1, "the reaper ran")
        assert [s.session_id for s in other.liveness.page()] == [young]
        assert old not in {r[0] for r in other.db.execute("SELECT session_id FROM liveness_attempts")}
    finally:
        app.stop()
        other.close()
    assert app.error is None


def test_a_person_deleted_by_another_process_stops_matching_without_a_restart(
    tmp_path: Path,
    kek: crypto.Kek,
    pipeline: FacePipeline,
    cli_pipeline: FacePipeline,
    astronaut: ImageRGB,
    astronaut_face: Face,
) -> None:
    state_dir = tmp_path / "state"
    eileen = enrolled(state_dir, kek, cli_pipeline, astronaut)
    probe = astronaut_face.embedding
    assert probe is not None
    config = Config.model_validate({"doors": {"front": {"group": "staff", "mode": "identify"}}})
    app = App(config, state_dir, kek, None, threading.Event(), None, pipeline=pipeline)
    cli = None
    try:
        app.start()
        service = app.service
        assert service is not None

        def door_sees() -> list[str]:
            assert service is not None
            return [m.owner_id for m in service.search_door("staff", probe, 5, None)]

        assert door_sees() == [eileen]
        cli = open_service(state_dir, kek, cli_pipeline)  # `edged persons delete staff ...`
        receipt = cli.changes.delete_person(MANAGER, "staff", eileen)
        assert receipt.deleted["persons"] == 1
        wait_until(lambda: door_sees() == [], "the door stopped matching the deleted person")
        assert not service.has_person("staff", eileen)

        # an enrolment by the CLI (the group stays trained) becomes visible the same way
        again = cli.changes.create_person(MANAGER, "staff", "Eileen, re-enrolled")
        cli.changes.add_person_face(MANAGER, "staff", again, astronaut)
        wait_until(lambda: door_sees() == [again], "the door matched the person the CLI enrolled")
        assert app.error is None
    finally:
        if cli is not None:
            cli.store.close()
        app.stop()
    assert app.error is None


@pytest.mark.parametrize("trained_before", [True, False], ids=["trained-before", "never-trained"])
def test_a_training_interrupted_by_a_kill_is_recovered_at_start(
    tmp_path: Path,
    kek: crypto.Kek,
    pipeline: FacePipeline,
    cli_pipeline: FacePipeline,
    astronaut: ImageRGB,
    trained_before: bool,
) -> None:
    state_dir = tmp_path / "state"
    eileen = enrolled(state_dir, kek, cli_pipeline, astronaut, train=trained_before)
    killed = Store.open(state_dir, kek)
    killed.groups.set_training("staff", "running")  # what a train commits first; then the process died
    killed.close()
    config = Config.model_validate({"doors": {"front": {"group": "staff"}}})
    app = App(config, state_dir, kek, None, threading.Event(), None, pipeline=pipeline)
    try:
        if trained_before:
            app.start()  # the door starts: a restart loop (Restart=on-failure) it was before
            assert app.service is not None
            assert eileen in app.service.trained_index("staff").owners()
        else:
            with pytest.raises(ConfigError, match=r"not trained \(status failed\)"):
                app.start()
    finally:
        app.stop()
    check = Store.open(state_dir, kek)
    try:
        group = check.groups.get("staff")
    finally:
        check.close()
    if trained_before:
        assert (group.train_status, group.train_message) == ("succeeded", None)
    else:
        assert (group.train_status, group.train_message) == ("failed", "interrupted")


def test_audit_records_past_their_retention_are_pruned_at_start_and_every_day(
    tmp_path: Path, kek: crypto.Kek, pipeline: FacePipeline
) -> None:
    state_dir = tmp_path / "state"
    clock = ManualClock()
    cli = Store.open(state_dir, kek, clock)  # the CLI, beside the daemon
    try:
        cli.audit.append("create_person_group", "cli", "manager", {"personGroupId": "staff"}, "ok")
        clock.advance(31 * 86_400)
        config = Config.model_validate({"directory": {"audit_retention_days": 30, "audit_min_records": 0}})
        app = App(config, state_dir, kek, None, threading.Event(), None, pipeline=pipeline, clock=clock)
        try:
            app.start()
            assert [r.operation for r in cli.audit.records()] == ["prune_audit"], "pruned at start"
            cli.audit.append("delete_person_group", "cli", "manager", {"personGroupId": "staff"}, "ok")
            clock.advance(30 * 86_400 + AUDIT_PRUNE_INTERVAL_S)  # past the retention, and the next run is due
            wait_until(lambda: len(list(cli.audit.records())) == 1, "the daily pruning ran")
            assert app.scheduler is not None
            assert app.scheduler.runs["audit retention"] == 2
            assert app.scheduler.done["audit retention"] == 1 + 2  # the first run's record pruned too
            assert app.error is None
        finally:
            app.stop()
        assert [r.operation for r in cli.audit.records()] == ["prune_audit"]
        assert cli.audit.verify().intact
    finally:
        cli.close()
