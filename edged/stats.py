"""Runtime statistics of the door daemon, for ``edged/<device>/stats`` (docs/mqtt.md).

``StatsCollector`` is fed by the worker at a tiny cost (one lock and a few list appends per frame)
and read by the stats thread: ``take()`` returns the interval since the previous ``take()`` — frames
processed, fps, and per-stage latency (count, median, p95, max, in milliseconds) — and starts a new
one. Named counters (``count``) are cumulative. ``edged.mqtt.stats`` turns an interval and the
daemon's cumulative counters into the typed stats message. Nothing here is biometric: times and
counts.

Stages:

    detect           detection + face mesh + quality gate of one frame (``pipeline.faces``)
    embed            one face's embedding
    search           one face's search(es) at one door (1:N and/or the claimed person)
    decide           every door's ``decider.update`` of one frame
    frame_to_outbox  from the frame's capture to its decision committed to the outbox
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["MAX_SAMPLES", "STAGES", "Interval", "Latency", "StatsCollector"]

STAGES = ("detect", "embed", "search", "decide", "frame_to_outbox")
MAX_SAMPLES = 10_000
"""Samples kept per stage and interval; later ones in the same interval are counted, not kept."""


@dataclass(frozen=True, slots=True)
class Latency:
    """One stage over one interval: ``n`` samples (``kept`` of them in the percentiles), in ms."""

    n: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, seconds: list[float], n: int) -> Latency:
        if not seconds:
            return cls(n, None, None, None)
        ordered = sorted(seconds)
        return cls(
            n,
            round(_percentile(ordered, 50) * 1000, 3),
            round(_percentile(ordered, 95) * 1000, 3),
            round(ordered[-1] * 1000, 3),
        )

    def to_payload(self) -> dict[str, int | float | None]:
        return {"n": self.n, "p50": self.p50_ms, "p95": self.p95_ms, "max": self.max_ms}


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) of a sorted, non-empty list."""
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Interval:
    """What happened between two ``take()`` calls."""

    seconds: float
    frames: int
    latency: dict[str, Latency]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class StatsCollector:
    """Per-interval frame and latency statistics plus cumulative counters. Thread-safe."""

    def __init__(
        self, monotonic: Callable[[], float] = time.monotonic, max_samples: int = MAX_SAMPLES
    ) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be ≥ 1, got {max_samples}")
        self._monotonic = monotonic
        self.max_samples = max_samples
        self._lock = threading.Lock()
        self._samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
        self._n: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._frames = 0
        self._counters: Counter[str] = Counter()
        self.started = monotonic()
        self._since = self.started

    def _add(self, stage: str, seconds: float) -> None:  # with the lock held
        self._n[stage] += 1
        samples = self._samples[stage]
        if len(samples) < self.max_samples:
            samples.append(seconds)

    def add_frame(
        self, detect_s: float, decide_s: float, embed_s: Iterable[float] = (), search_s: Iterable[float] = ()
    ) -> None:
        """One processed frame and its stage times, in seconds (one call per frame)."""
        with self._lock:
            self._frames += 1
            self._add("detect", detect_s)
            self._add("decide", decide_s)
            for seconds in embed_s:
                self._add("embed", seconds)
            for seconds in search_s:
                self._add("search", seconds)

    def add(self, stage: str, seconds: float) -> None:
        """One sample of ``stage`` (one of ``STAGES``), in seconds."""
        if stage not in self._n:
            raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
        with self._lock:
            self._add(stage, seconds)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the cumulative counter ``name``."""
        with self._lock:
            self._counters[name] += n

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def take(self) -> Interval:
        """The interval since the previous ``take()`` (or since the start); a new one begins."""
        now = self._monotonic()
        with self._lock:
            samples, self._samples = self._samples, {stage: [] for stage in STAGES}
            counts, self._n = self._n, dict.fromkeys(STAGES, 0)
            frames, self._frames = self._frames, 0
            since, self._since = self._since, now
        latency = {stage: Latency.of(samples[stage], counts[stage]) for stage in STAGES}
        return Interval(max(0.0, now - since), frames, latency)

    def uptime(self) -> float:
        return max(0.0, self._monotonic() - self.started)
