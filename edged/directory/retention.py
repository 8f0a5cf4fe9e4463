"""Retention: the reaper that deletes expired transient face IDs (and, with liveness, expired
liveness sessions) at start-up and then on a schedule, until the stop event is set.

The schedule follows a ``Clock``: the thread wakes every ``tick_s`` seconds of real time and runs a
pass when ``clock.monotonic()`` has moved ``interval_s`` past the previous one, so a test with a
``ManualClock`` advances time instead of waiting for it. Checks that must run more often (the
daemon's look for directory changes by other processes, ``FaceService.refresh``) run on the same
thread at every tick."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edged.clock import Clock, SystemClock

logger = logging.getLogger(__name__)

Sweep = Callable[[], int]
Check = Callable[[], object]


class Reaper:
    """Runs ``sweeps`` now and every ``interval_s`` seconds (of ``clock``) on its own thread, and
    ``every_tick`` checks every ``tick_s`` seconds (default: ``interval_s``).

    A failing sweep or check is logged and retried at the next pass or tick: retention must not
    stop because one pass hit a locked database. A check that keeps failing is logged once until it
    succeeds again."""

    def __init__(
        self,
        sweeps: dict[str, Sweep],
        interval_s: float,
        stop: threading.Event,
        *,
        clock: Clock | None = None,
        tick_s: float | None = None,
        every_tick: dict[str, Check] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"the reaper's interval must be positive, not {interval_s}")
        if tick_s is not None and tick_s <= 0:
            raise ValueError(f"the reaper's tick must be positive, not {tick_s}")
        self.sweeps = dict(sweeps)
        self.interval_s = interval_s
        self.tick_s = interval_s if tick_s is None else tick_s
        self.stop = stop
        self.clock: Clock = clock or SystemClock()
        self.every_tick = dict(every_tick or {})
        self.passes = 0
        self.ticks = 0
        self.deleted: dict[str, int] = dict.fromkeys(sweeps, 0)
        self._failing: set[str] = set()
        self._thread: threading.Thread | None = None

    def sweep(self) -> dict[str, int]:
        """One pass over every sweep; returns what each deleted."""
        counts = {}
        for name, sweep in self.sweeps.items():
            try:
                counts[name] = sweep()
            except Exception:
                logger.exception("retention: the %s sweep failed; retrying next pass", name)
                counts[name] = 0
            self.deleted[name] += counts[name]
            if counts[name]:
                logger.info("retention: %s deleted %d", name, counts[name])
        self.passes += 1
        return counts

    def tick(self) -> None:
        """Run every ``every_tick`` check once."""
        for name, check in self.every_tick.items():
            try:
                check()
            except Exception:
                if name not in self._failing:
                    self._failing.add(name)
                    logger.exception("maintenance: %s failed; retrying every %g s", name, self.tick_s)
            else:
                if name in self._failing:
                    self._failing.discard(name)
                    logger.info("maintenance: %s works again", name)
        self.ticks += 1

    def start(self) -> None:
        self.sweep()  # at start-up, before anything is served
        self._thread = threading.Thread(target=self._run, name="edged-reaper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = self.clock.monotonic() + self.interval_s
        while not self.stop.wait(self.tick_s):
            self.tick()
            if self.clock.monotonic() >= due:
                self.sweep()
                due = self.clock.monotonic() + self.interval_s

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
