"""The scheduled reaper: at start-up, then every interval, until stopped; a failing sweep does not
stop retention."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edged.clock import ManualClock
from edged.directory.crypto import create_key_file
from edged.directory.retention import Reaper
from edged.directory.store import Store


def test_the_reaper_deletes_expired_face_ids_at_start_and_on_schedule(tmp_path: Path) -> None:
    clock = ManualClock()
    store = Store.open(tmp_path, create_key_file(tmp_path / "k"), clock)
    template = np.ones(128, np.float32)
    store.add_transient(template, "m", 60)
    clock.advance(61)
    stop = threading.Event()
    swept = threading.Event()
    calls = {"n": 0}

    def sweep() -> int:
        count = store.reap_transient()
        calls["n"] += 1
        if calls["n"] >= 3:
            swept.set()
        return count

    reaper = Reaper({"face_ids": sweep}, interval_s=0.01, stop=stop)
    reaper.start()
    assert reaper.deleted["face_ids"] == 1, "the start-up pass runs before start() returns"
    assert store.count_transient() == 0
    store.add_transient(template, "m", 60)
    clock.advance(61)
    assert swept.wait(10), "the scheduled passes did not run"
    stop.set()
    reaper.join(10)
    assert store.count_transient() == 0
    assert reaper.deleted["face_ids"] == 2
    assert reaper.passes >= 3


def test_a_failing_sweep_is_retried_not_fatal() -> None:
    results = iter([RuntimeError("database is locked"), 4])

    def flaky() -> int:
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    reaper = Reaper({"flaky": flaky}, interval_s=60, stop=threading.Event())
    assert reaper.sweep() == {"flaky": 0}
    assert reaper.sweep() == {"flaky": 4}
    assert reaper.deleted == {"flaky": 4}


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Reaper({}, interval_s=0, stop=threading.Event())
