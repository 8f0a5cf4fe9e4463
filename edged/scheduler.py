"""A small scheduler of named jobs on one thread: the daemon's upkeep (expired face IDs every 60 s,
directory changes by other processes and audit forwarding every second; ``edged.app``).

The thread wakes every ``tick_s`` seconds of real time. A job with an ``interval_s`` runs when the
``Clock``'s monotonic time has moved that far past its previous run, so a test with a ``ManualClock``
advances time instead of waiting for it; a job without one runs at every tick. ``at_start`` jobs run
once in ``start()``, before the thread starts (and before anything is served).

A failing job is logged and retried at its next turn: upkeep must not stop because one run hit a
locked database. A job with an interval logs every failed run; a job that runs every tick logs its
first failure only, until it works again (a line a second would drown the journal).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edged.clock import Clock, SystemClock

__all__ = ["Job", "Scheduler"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    """``run`` returns how much it did (records deleted, forwarded, indexes re-synced), or None."""

    name: str
    run: Callable[[], int | None]
    interval_s: float | None = None
    """Seconds of the scheduler's clock between runs; None: at every tick."""
    at_start: bool = False

    def __post_init__(self) -> None:
        if self.interval_s is not None and not self.interval_s > 0:
            raise ValueError(f"job {self.name!r}: the interval must be positive, not {self.interval_s}")


class Scheduler:
    """Runs ``jobs`` on its own thread until ``stop`` is set (module doc). Counts per job name: ``runs``
    (attempts), ``done`` (the sum of what the runs returned) and ``failures``."""

    def __init__(
        self,
        jobs: Sequence[Job],
        stop: threading.Event,
        *,
        clock: Clock | None = None,
        tick_s: float = 1.0,
    ) -> None:
        if not tick_s > 0:
            raise ValueError(f"the scheduler's tick must be positive, not {tick_s}")
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        self.jobs = tuple(jobs)
        self.stop = stop
        self.clock: Clock = clock or SystemClock()
        self.tick_s = tick_s
        self.ticks = 0
        self.runs: dict[str, int] = dict.fromkeys(names, 0)
        self.done: dict[str, int] = dict.fromkeys(names, 0)
        self.failures: dict[str, int] = dict.fromkeys(names, 0)
        self._due: dict[str, float] = {}
        self._failing: set[str] = set()
        self._thread: threading.Thread | None = None

    def run(self, name: str) -> int:
        """Run the job ``name`` now; returns what it did (0 when it failed: logged, retried later)."""
        job = next((j for j in self.jobs if j.name == name), None)
        if job is None:
            raise KeyError(f"no job {name!r}; the jobs are {', '.join(self.runs)}")
        return self._run(job)

    def _run(self, job: Job) -> int:
        self.runs[job.name] += 1
        try:
            count = job.run() or 0
        except Exception:
            self.failures[job.name] += 1
            if job.interval_s is not None:  # a pass a minute or so: each failure is worth a line
                logger.exception("maintenance: %s failed; retrying in %g s", job.name, job.interval_s)
            elif job.name not in self._failing:  # every tick: once, until it works again
                logger.exception("maintenance: %s failed; retrying every %g s", job.name, self.tick_s)
            self._failing.add(job.name)
            return 0
        if job.name in self._failing:
            self._failing.discard(job.name)
            logger.info("maintenance: %s works again", job.name)
        self.done[job.name] += count
        if count:
            logger.debug("maintenance: %s: %d", job.name, count)
        return count

    def tick(self) -> None:
        """One wake-up: run every job that is due."""
        for job in self.jobs:
            if job.interval_s is None:
                self._run(job)
            elif self.clock.monotonic() >= self._due.get(job.name, 0.0):
                self._run(job)
                self._due[job.name] = self.clock.monotonic() + job.interval_s
        self.ticks += 1

    def start(self) -> None:
        """Run the ``at_start`` jobs, then start the thread."""
        for job in self.jobs:
            if job.at_start:
                self._run(job)
            if job.interval_s is not None:
                self._due[job.name] = self.clock.monotonic() + job.interval_s
        self._thread = threading.Thread(target=self._loop, name="maintenance", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(self.tick_s):
            self.tick()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
