"""The scheduled reaper (a job of ``edged.scheduler.Scheduler``): at start-up, then every interval,
until stopped; a failing sweep does not stop retention; checks that run at every tick."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from edged.clock import ManualClock
from edged.directory.crypto import create_key_file
from edged.directory.store import Store
from edged.scheduler import Job, Scheduler


def test_the_reaper_deletes_expired_face_ids_at_start_and_on_schedule(tmp_path: Path) -> None:
    clock = ManualClock()
    store = Store.open(tmp_path, create_key_file(tmp_path / "k"), clock)
    template = np.ones(128, np.float32)
    store.transient.add(template, "m", 60)
    clock.advance(61)
    stop = threading.Event()
    swept = threading.Event()
    calls = {"n": 0}

    def sweep() -> int:
        count = store.transient.reap()
        calls["n"] += 1
        if calls["n"] >= 3:
            swept.set()
        return count

    reaper = Scheduler([Job("face_ids", sweep, interval_s=0.01, at_start=True)], stop, tick_s=0.01)
    reaper.start()
    assert reaper.done["face_ids"] == 1, "the start-up pass runs before start() returns"
    assert store.transient.count() == 0
    store.transient.add(template, "m", 60)
    clock.advance(61)
    assert swept.wait(10), "the scheduled passes did not run"
    stop.set()
    reaper.join(10)
    assert store.transient.count() == 0
    assert reaper.done["face_ids"] == 2
    assert reaper.runs["face_ids"] >= 3


def test_the_schedule_follows_the_clock_and_checks_run_every_tick() -> None:
    """With a clock (the daemon's: 60 s passes, 1 s ticks), a pass runs when the clock has moved an
    interval, however often the thread wakes; a ManualClock moves it without waiting."""
    clock = ManualClock()
    stop = threading.Event()
    ticked = threading.Condition()
    counts = {"sweeps": 0, "ticks": 0}

    def sweep() -> int:
        counts["sweeps"] += 1
        return 0

    def check() -> None:
        with ticked:
            counts["ticks"] += 1
            ticked.notify_all()

    def wait_ticks(n: int) -> None:
        with ticked:
            assert ticked.wait_for(lambda: counts["ticks"] >= n, 10), "the thread stopped ticking"

    jobs = [Job("s", sweep, interval_s=60, at_start=True), Job("check", check)]
    reaper = Scheduler(jobs, stop, clock=clock, tick_s=0.005)
    reaper.start()
    try:
        assert counts["sweeps"] == 1, "the start-up pass"
        wait_ticks(20)
        assert counts["sweeps"] == 1, "the clock has not moved: no pass is due"
        clock.advance(59)
        wait_ticks(counts["ticks"] + 5)
        assert counts["sweeps"] == 1
        clock.advance(1)
        wait_ticks(counts["ticks"] + 5)  # the tick that saw the clock ran its pass before these
        assert counts["sweeps"] == 2
    finally:
        stop.set()
        reaper.join(10)
    assert not reaper.is_alive()


def test_a_failing_check_is_logged_once_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edged.scheduler")
    results = iter([RuntimeError("database is locked")] * 3 + [None])

    def check() -> None:
        item = next(results)
        if item is not None:
            raise item

    reaper = Scheduler([Job("directory changes", check)], threading.Event())
    for _ in range(4):
        reaper.tick()
    failures = [r for r in caplog.records if "directory changes failed" in r.getMessage()]
    assert len(failures) == 1 and reaper.ticks == 4
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_every_failed_run_of_an_interval_job_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The reaper runs once a minute: a reaper stuck on a locked database says so every time, while
    expired face IDs wait (a job of every tick logs once: the test above)."""
    caplog.set_level(logging.INFO, logger="edged.scheduler")

    def locked() -> int:
        raise RuntimeError("database is locked")

    reaper = Scheduler([Job("expired face IDs", locked, interval_s=60)], threading.Event())
    for _ in range(3):
        assert reaper.run("expired face IDs") == 0
    failures = [r for r in caplog.records if "expired face IDs failed; retrying in 60 s" in r.getMessage()]
    assert len(failures) == 3 and reaper.failures == {"expired face IDs": 3}


def test_a_failing_sweep_is_retried_not_fatal() -> None:
    results = iter([RuntimeError("database is locked"), 4])

    def flaky() -> int:
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    reaper = Scheduler([Job("flaky", flaky, interval_s=60)], threading.Event())
    assert reaper.run("flaky") == 0
    assert reaper.run("flaky") == 4
    assert reaper.done == {"flaky": 4} and reaper.failures == {"flaky": 1}


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Job("s", lambda: 0, interval_s=0)
    with pytest.raises(ValueError, match="positive"):
        Scheduler([], threading.Event(), tick_s=0)
    with pytest.raises(ValueError, match="unique"):
        Scheduler([Job("s", lambda: 0), Job("s", lambda: 1)], threading.Event())
    with pytest.raises(KeyError, match="no job"):
        Scheduler([], threading.Event()).run("s")


def test_a_job_without_at_start_first_runs_an_interval_after_start_and_stop_ends_the_thread() -> None:
    clock = ManualClock()
    stop = threading.Event()
    ran = threading.Event()
    scheduler = Scheduler(
        [Job("later", lambda: ran.set() or 1, interval_s=60)], stop, clock=clock, tick_s=0.005
    )
    scheduler.start()
    try:
        assert scheduler.runs["later"] == 0, "not at start"
        assert not ran.wait(0.1), "nor before the clock moved an interval"
        clock.advance(60)
        assert ran.wait(10)
    finally:
        stop.set()
        scheduler.join(10)
    assert not scheduler.is_alive() and scheduler.done["later"] >= 1 and scheduler.ticks >= 1
