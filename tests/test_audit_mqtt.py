"""Audit records reach ``edged/<device>/audit`` through the durable outbox (issue 4: "decision and
audit messages are committed to an on-disk queue before publishing"): records written by the daemon
and by another process (the CLI) are forwarded, in order, each exactly once across a restart, with
IDs and outcomes only. A real broker on loopback, the real App, a real encrypted directory."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mqtt_broker import READY_TIMEOUT_S, Broker, Watcher

from edged.app import App
from edged.config import Config
from edged.directory import crypto
from edged.directory.store import Store
from edged.mqtt.settings import BrokerAddress
from edged.pipeline.pipeline import FacePipeline
from edged.service.policy import Caller

DEVICE = "audit-1"
TOPIC = f"edged/{DEVICE}/audit"


def make_app(broker: Broker, state_dir: Path, kek: crypto.Kek, pipeline: FacePipeline) -> App:
    config = Config.model_validate(
        {"device_id": DEVICE, "api": {"enabled": False}, "mqtt": {"stats_interval_s": 0}}
    )
    address = BrokerAddress("127.0.0.1", broker.port)
    return App(config, state_dir, kek, address, threading.Event(), None, pipeline=pipeline)


def wait_until(condition: Callable[[], bool], timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition()


def records(watcher: Watcher, n: int) -> list[dict[str, object]]:
    got = watcher.wait_for(lambda ms: len(ms) >= n)
    return [payload for _, payload, _ in got]


def test_audit_records_are_forwarded_once_in_order(
    broker: Broker, tmp_path: Path, kek: crypto.Kek, pipeline: FacePipeline
) -> None:
    state = tmp_path / "state"
    Store.open(state, kek).close()
    watcher = Watcher(broker.port, TOPIC, client_id="auditor", persistent=True)
    app = make_app(broker, state, kek, pipeline)
    try:
        app.start()
        assert app.outbox is not None and app.service is not None
        outbox = app.outbox
        wait_until(lambda: outbox.cursor("audit_seq") is not None)  # the first pass starts at the newest
        app.service.changes.create_group(
            Caller("test", "manager"), "staff", "Day staff"
        )  # written by the daemon
        other = Store.open(state, kek)  # written by another process, as the CLI does
        try:
            other.audit.append("rotate_key", "cli", "admin", {"keyId": "k2"}, "ok")
        finally:
            other.close()
        first = records(watcher, 2)
    finally:
        app.stop()
    assert [(r["operation"], r["actor"]) for r in first] == [
        ("create_person_group", "test"),
        ("rotate_key", "cli"),
    ]
    seqs = [r["seq"] for r in first]
    assert seqs[1] == seqs[0] + 1 and all(isinstance(r["hash"], str) and len(r["hash"]) == 64 for r in first)
    assert "Day staff" not in json.dumps(first)  # IDs and outcomes only, never names

    restarted = make_app(broker, state, kek, pipeline)  # same state directory, same outbox
    try:
        restarted.start()
        assert restarted.service is not None
        restarted.service.changes.create_group(Caller("test", "manager"), "night", "Night staff")
        later = records(watcher, 3)
        time.sleep(1.5)  # a duplicate would be forwarded within a tick or two
        later = records(watcher, 3)
    finally:
        restarted.stop()
        watcher.close()
    assert [r["seq"] for r in later] == [*seqs, seqs[1] + 1], "each record exactly once, in order"
    assert later[2]["targets"] == {"personGroupId": "night"}
