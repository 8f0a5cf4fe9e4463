"""The stats topic ``edged/<device>/stats`` (docs/mqtt.md): the typed ``StatsMessage`` and the
``StatsReporter`` thread that gathers one from the daemon's components every
``mqtt.stats_interval_s`` and publishes it (QoS 0, never retained) while connected.

A message holds the interval since the previous one (frames, fps and per-stage latency from the
``StatsCollector``, ``edged.stats``) and cumulative counters: frames dropped by the one-slot buffer,
decisions, the door groups' sizes, the live face IDs and the disk's free space against their floor
(``face_ids.refusing`` says when detect gives no new face IDs), the outbox, the MQTT connection,
claims, the camera and the request API. Nothing in it is biometric: times, counts and IDs of groups.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from edged.capture.buffer import CaptureThread, LatestFrame
from edged.clock import Clock
from edged.door.claims import ClaimCounts
from edged.door.worker import DoorWorker
from edged.mqtt.client import MqttClient, MqttStats
from edged.mqtt.outbox import Outbox, OutboxStats
from edged.mqtt.topics import Topics
from edged.service.quota import FaceIdUsage
from edged.stats import STAGES, Interval, StatsCollector

__all__ = ["SCHEMA", "CameraState", "FrameCounts", "GroupSize", "StatsMessage", "StatsReporter"]

logger = logging.getLogger(__name__)

SCHEMA = 1


@dataclass(frozen=True, slots=True)
class FrameCounts:
    """Frames processed and dropped since the start, and dropped in this interval."""

    processed_total: int
    dropped_total: int
    dropped_interval: int


@dataclass(frozen=True, slots=True)
class GroupSize:
    """Persons (with a face) and faces in a door group's index; None: the group is gone or untrained."""

    persons: int | None
    faces: int | None


@dataclass(frozen=True, slots=True)
class CameraState:
    """The capture thread's view of the camera (``CaptureThread``)."""

    source: str
    down: bool
    restarts: int
    failures: int


@dataclass(frozen=True, slots=True)
class StatsMessage:
    """One stats message: ``interval`` (from ``StatsCollector.take``) and cumulative counters."""

    device: str
    time: float
    uptime_s: float
    interval: Interval
    frames: FrameCounts
    decisions_total: int
    directory: Mapping[str, GroupSize]
    claims: ClaimCounts
    outbox: OutboxStats | None = None
    mqtt: MqttStats | None = None
    camera: CameraState | None = None
    api: Mapping[str, int] | None = None
    face_ids: FaceIdUsage | None = None

    def to_payload(self) -> dict[str, Any]:
        face_ids = self.face_ids
        sizes = self.directory.values()
        return {
            "schema": SCHEMA,
            "device": self.device,
            "time": round(self.time, 3),
            "uptime_s": round(self.uptime_s, 3),
            "interval_s": round(self.interval.seconds, 3),
            "frames": {
                "processed": self.interval.frames,
                "fps": round(self.interval.fps, 2),
                "dropped": self.frames.dropped_interval,
                "processed_total": self.frames.processed_total,
                "dropped_total": self.frames.dropped_total,
            },
            "latency_ms": {stage: self.interval.latency[stage].to_payload() for stage in STAGES},
            "decisions_total": self.decisions_total,
            "directory": {
                "persons": sum(s.persons or 0 for s in sizes),
                "faces": sum(s.faces or 0 for s in sizes),
                "groups": {group: asdict(size) for group, size in self.directory.items()},
            },
            "outbox": None if self.outbox is None else asdict(self.outbox),
            "mqtt": None if self.mqtt is None else asdict(self.mqtt),
            "claims": self.claims.to_payload(),
            "camera": None if self.camera is None else asdict(self.camera),
            "api": None if self.api is None else dict(self.api),
            "face_ids": None
            if face_ids is None
            else {
                "live": face_ids.live,
                "max": face_ids.limit,
                "disk_free_bytes": face_ids.disk_free_bytes,
                "disk_floor_bytes": face_ids.disk_floor_bytes,
                "refusing": face_ids.refusing,
            },
        }


class DirectoryStats(Protocol):
    """The door groups' sizes and the face IDs' usage (``FaceService``)."""

    def door_sizes(self, group_ids: list[str]) -> Mapping[str, Mapping[str, int | None]]: ...

    def face_id_usage(self) -> FaceIdUsage: ...


class ApiCounters(Protocol):
    """The request server's counters (``ApiServer.counters``)."""

    def counters(self) -> dict[str, int]: ...


class StatsReporter:
    """Gathers a ``StatsMessage`` from the components (each but the worker optional) and publishes it
    every ``interval_s`` on its own thread (``start``/``stop``). Stats never take the daemon down: a
    failure is logged and the next interval tries again."""

    def __init__(
        self,
        topics: Topics,
        client: MqttClient,
        collector: StatsCollector,
        worker: DoorWorker,
        clock: Clock,
        *,
        buffer: LatestFrame | None = None,
        capture: CaptureThread | None = None,
        directory: DirectoryStats | None = None,
        outbox: Outbox | None = None,
        api: ApiCounters | None = None,
    ) -> None:
        self.topics = topics
        self.client = client
        self.collector = collector
        self.worker = worker
        self.clock = clock
        self.buffer = buffer
        self.capture = capture
        self.directory = directory
        self.outbox = outbox
        self.api = api
        self._dropped_reported = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def message(self) -> StatsMessage:
        """The message for the interval since the previous call (which it closes)."""
        dropped = 0 if self.buffer is None else self.buffer.dropped
        interval = self.collector.take()
        capture = self.capture
        sizes = {} if self.directory is None else self.directory.door_sizes(self.worker.groups)
        message = StatsMessage(
            device=self.topics.device_id,
            time=self.clock.now(),
            uptime_s=self.collector.uptime(),
            interval=interval,
            frames=FrameCounts(self.worker.frames, dropped, dropped - self._dropped_reported),
            decisions_total=self.worker.decisions,
            directory={g: GroupSize(s.get("persons"), s.get("faces")) for g, s in sizes.items()},
            claims=self.worker.claims.counts(),
            outbox=None if self.outbox is None else self.outbox.stats(),
            mqtt=self.client.state.snapshot(),
            camera=None
            if capture is None
            else CameraState(capture.source.name, capture.down, capture.restarts, capture.failures),
            api=None if self.api is None else self.api.counters(),
            face_ids=None if self.directory is None else self.directory.face_id_usage(),
        )
        self._dropped_reported = dropped
        return message

    def publish(self) -> None:
        """One message (QoS 0, not retained) when connected; the interval is closed either way."""
        payload = self.message().to_payload()
        if self.client.connected.is_set():
            self.client.publish(self.topics.stats(), payload, qos=0)

    def start(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"the stats interval must be positive, not {interval_s}")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(interval_s,), name="stats", daemon=True)
        self._thread.start()

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.publish()
            except Exception:  # stats must never take the daemon down
                logger.exception("stats: publishing failed")

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
