"""Retention: the reaper that deletes expired transient face IDs (and, with liveness, expired
liveness sessions) at start-up and then on a schedule, until the stop event is set."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

Sweep = Callable[[], int]


class Reaper:
    """Runs ``sweeps`` now and every ``interval_s`` seconds on its own thread.

    A failing sweep is logged and retried at the next tick: retention must not stop because one
    pass hit a locked database."""

    def __init__(self, sweeps: dict[str, Sweep], interval_s: float, stop: threading.Event) -> None:
        if interval_s <= 0:
            raise ValueError(f"the reaper's interval must be positive, not {interval_s}")
        self.sweeps = dict(sweeps)
        self.interval_s = interval_s
        self.stop = stop
        self.passes = 0
        self.deleted: dict[str, int] = dict.fromkeys(sweeps, 0)
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

    def start(self) -> None:
        self.sweep()  # at start-up, before anything is served
        self._thread = threading.Thread(target=self._run, name="edged-reaper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.sweep()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
