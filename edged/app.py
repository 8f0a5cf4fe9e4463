"""The door daemon's composition layer: the only place that sees the whole configuration.

``App.start()`` runs an ordered list of steps, each with its undo; ``App.stop()`` undoes the steps
that ran, in reverse, and joins every thread. One ``threading.Event`` stops everything.

    pipeline → store + service (reap) → per-door index (trained group) → decider per door
    → MQTT client + outbox (retained birth; optional) → capture thread + LatestFrame → worker thread

MQTT comes up before the camera (and goes down after the worker), so no decision is made while
there is nowhere to put it, and the last decisions are in the outbox before ``stopped`` is sent.

The worker (module doc of ``edged.decider``) never touches the network: decisions go to the durable
outbox (drained by its own thread), session events to paho's queue (QoS 0).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from edged import __version__
from edged.capture import CaptureThread, Frame, LatestFrame, make_source
from edged.clock import Clock, SystemClock
from edged.config import Config
from edged.decider import Decider, Events, FaceObservation
from edged.directory.crypto import Kek
from edged.directory.store import Store
from edged.errors import ConfigError, EdgedError
from edged.inference.manifest import Manifest
from edged.matcher import Match, TemplateIndex
from edged.mqtt.client import MqttClient
from edged.mqtt.outbox import Outbox, OutboxPublisher
from edged.mqtt.topics import Topics
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.systemd import Notifier
from edged.tracker import CaptureZone, FaceTracker
from edged.types import Face

__all__ = ["DECISION_EXPIRY_S", "App", "mqtt_target"]

logger = logging.getLogger(__name__)

DECISION_EXPIRY_S = 30.0
"""A decision not delivered within this long is dropped (MQTT message expiry and the outbox's)."""
FRAME_WAIT_S = 0.5
"""How long the worker waits for a frame before it looks at the stop event again."""
JOIN_TIMEOUT_S = 10.0
OUTBOX_DRAIN_S = 3.0
"""At stop, how long to let the outbox publisher deliver what is left (while connected)."""
OUTBOX_FILE = "outbox.sqlite3"


def mqtt_target(url: str) -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` → (host, port); port 1883 by default."""
    parts = urlsplit(url)
    try:
        port = parts.port or 1883
    except ValueError:
        raise ConfigError(f"MQTT URL {url!r}: the port is not a number from 1 to 65535") from None
    if parts.scheme != "mqtt" or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"MQTT URL {url!r}: expected mqtt://HOST:PORT")
    return parts.hostname, port


@dataclass(frozen=True, slots=True)
class _Door:
    name: str
    decider: Decider
    index: TemplateIndex
    zone: CaptureZone | None


class App:
    """The door daemon: ``start()``, then ``stop()`` (which also undoes a half-finished start)."""

    def __init__(
        self,
        config: Config,
        state_dir: Path,
        kek: Kek,
        mqtt_url: str | None,
        stop: threading.Event,
        out: TextIO | None = None,
        *,
        pipeline: FacePipeline | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.kek = kek
        self.mqtt_url = mqtt_url
        self.stop_event = stop
        self.out = out
        self.clock = clock or SystemClock()
        self.pipeline = pipeline
        self.topics = Topics(config.device_id)
        if mqtt_url is not None:
            mqtt_target(mqtt_url)  # a bad URL fails before anything starts
        self.store: Store | None = None
        self.service: FaceService | None = None
        self.doors: list[_Door] = []
        self.client: MqttClient | None = None
        self.outbox: Outbox | None = None
        self.publisher: OutboxPublisher | None = None
        self.buffer: LatestFrame | None = None
        self.capture: CaptureThread | None = None
        self.worker: threading.Thread | None = None
        self.tracker = FaceTracker(config.tracker.min_iou, config.tracker.max_missed_s)
        self.frames_processed = 0
        self.decisions = 0
        self.error: BaseException | None = None
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self.notifier = Notifier()
        self._watchdog_s = Notifier.watchdog_interval_s()
        self._last_ping = 0.0

    # -- lifecycle -----------------------------------------------------------------------------------

    def steps(self) -> list[tuple[str, Callable[[], Callable[[], None] | None]]]:
        """The start-up steps in order; each returns its undo (or None)."""
        return [
            ("pipeline", self._start_pipeline),
            ("directory", self._start_directory),
            ("indexes and deciders", self._start_doors),
            ("mqtt", self._start_mqtt),
            ("capture", self._start_capture),
            ("worker", self._start_worker),
        ]

    def start(self) -> None:
        """Run every step; on a failure undo the ones that ran and re-raise."""
        try:
            for name, step in self.steps():
                logger.debug("start: %s", name)
                undo = step()
                if undo is not None:
                    self._undo.append((name, undo))
        except BaseException:
            self.stop()
            raise
        logger.info("started: %d door(s), device %s", len(self.doors), self.config.device_id)
        self.notifier.ready(f"running: {len(self.doors)} door(s), camera {self.config.camera.source}")

    def stop(self) -> None:
        """Set the stop event and undo the steps that ran, in reverse. Idempotent."""
        if self._undo:
            self.notifier.stopping()
        self.stop_event.set()
        while self._undo:
            name, undo = self._undo.pop()
            logger.debug("stop: %s", name)
            try:
                undo()
            except Exception:
                logger.exception("stop: %s failed", name)
        logger.info(
            "stopped: %d frames processed, %d dropped, %d decisions",
            self.frames_processed,
            self.frames_dropped,
            self.decisions,
        )

    @property
    def frames_dropped(self) -> int:
        return 0 if self.buffer is None else self.buffer.dropped

    # -- steps ---------------------------------------------------------------------------------------

    def _start_pipeline(self) -> None:
        if self.pipeline is None:
            self.pipeline = FacePipeline.load(Manifest.load(self.config.model_dir), self.config.pipeline)

    def _start_directory(self) -> Callable[[], None]:
        assert self.pipeline is not None
        store = self.store = Store.open(self.state_dir, self.kek, self.clock)
        try:
            self.service = FaceService(
                self.pipeline, store, self.config.directory, self.pipeline.embedder.model.path.name
            )
            self.service.reap()
        except BaseException:
            store.close()
            raise
        return store.close

    def _start_doors(self) -> None:
        assert self.service is not None and self.pipeline is not None
        calibration = self.service.calibration
        model = self.service.model_id
        for name, settings in self.config.doors.items():
            try:
                index = self.service.trained_index(settings.group)
            except EdgedError as exc:
                raise ConfigError(f"door {name!r}: {exc.message}") from None
            decider = Decider(name, settings, calibration, self.clock, model=model)
            zone = None if settings.capture_zone is None else settings.capture_zone.zone()
            self.doors.append(_Door(name, decider, index, zone))

    def _start_mqtt(self) -> Callable[[], None] | None:
        if self.mqtt_url is None:
            return None
        host, port = mqtt_target(self.mqtt_url)
        settings = self.config.mqtt.model_copy(update={"host": host, "port": port})
        outbox = self.outbox = Outbox(self.state_dir / OUTBOX_FILE, clock=self.clock)
        client = self.client = MqttClient(settings, self.topics, {"edged": __version__}, self.clock)
        publisher = self.publisher = OutboxPublisher(outbox, client)
        client.start()  # the retained birth is published on CONNACK
        publisher.start()

        def undo() -> None:
            deadline = time.monotonic() + OUTBOX_DRAIN_S
            while client.connected.is_set() and outbox.depth() and time.monotonic() < deadline:
                time.sleep(0.05)
            publisher.stop(JOIN_TIMEOUT_S)
            client.stop()  # retained "stopped"
            outbox.close()

        return undo

    def _start_capture(self) -> Callable[[], None]:
        camera = self.config.camera
        options = {} if camera.fps is None else {"fps": camera.fps}
        source = make_source(camera.source, **options)
        buffer = self.buffer = LatestFrame()
        capture = self.capture = CaptureThread(source, buffer, self.stop_event)
        capture.start()

        def undo() -> None:
            self.stop_event.set()
            buffer.close()
            capture.join(JOIN_TIMEOUT_S)
            if capture.is_alive():
                logger.error("capture thread did not stop within %.0f s", JOIN_TIMEOUT_S)

        return undo

    def _start_worker(self) -> Callable[[], None]:
        worker = self.worker = threading.Thread(target=self._work, name="worker", daemon=True)
        worker.start()

        def undo() -> None:
            self.stop_event.set()
            if self.buffer is not None:
                self.buffer.close()
            worker.join(JOIN_TIMEOUT_S)
            if worker.is_alive():
                logger.error("worker thread did not stop within %.0f s", JOIN_TIMEOUT_S)

        return undo

    # -- the worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        assert self.buffer is not None
        try:
            while not self.stop_event.is_set():
                frame = self.buffer.get(FRAME_WAIT_S)
                if frame is None:
                    if self.capture is not None and not self.capture.is_alive():
                        logger.warning("the camera stopped; stopping")
                        self.stop_event.set()
                    continue
                self.process(frame)
                self._ping_watchdog()
            ended = [t.track_id for t in self.tracker.end_all()]
            for door in self.doors:
                self._emit(door.name, door.decider.update([], ended=ended))
        except BaseException as exc:
            self.error = exc
            logger.exception("worker failed; stopping")
            self.stop_event.set()

    def _ping_watchdog(self) -> None:
        """WATCHDOG=1 from the frame loop only: a camera or worker that stops delivering frames stops
        the pings, and systemd (WatchdogSec=) restarts the service."""
        if self._watchdog_s is None:
            return
        now = self.clock.monotonic()
        if now - self._last_ping >= self._watchdog_s:
            self._last_ping = now
            self.notifier.watchdog()

    def process(self, frame: Frame) -> None:
        """One frame: detect, track, and per door ask, embed, search, decide and emit."""
        pipeline = self.pipeline
        assert pipeline is not None
        faces = pipeline.faces(frame.image, embed=False)
        now = self.clock.monotonic()
        tracks = self.tracker.update([f.detection.box for f in faces], now, frame.size)
        ended = [t.track_id for t in self.tracker.ended]
        embedded: dict[int, Face] = {}
        for door in self.doors:
            observations = []
            for track in tracks:
                face = faces[track.index]
                if door.zone is not None and not door.zone.contains(face.detection.box, frame.size):
                    continue
                request = door.decider.request(track.track_id)
                group: list[Match] | None = None
                claimed: list[Match] | None = None
                if request is not None and face.quality.ok:
                    if track.index not in embedded:
                        embedded[track.index] = pipeline.embed(frame.image, face)
                    template = embedded[track.index].embedding
                    assert template is not None
                    if request.k:
                        group = door.index.search(template, request.k, request.max_distance)
                    if request.person_id is not None:
                        claimed = door.index.search(
                            template, 1, request.max_distance, owners={request.person_id}
                        )
                observations.append(FaceObservation.of(track.track_id, face, group=group, claimed=claimed))
            self._emit(door.name, door.decider.update(observations, ended=ended))
        self.frames_processed += 1

    def _emit(self, door: str, events: Events) -> None:
        for decision in events.decisions:
            payload = decision.to_payload()
            self.decisions += 1
            if self.out is not None:
                self.out.write(json.dumps(payload) + "\n")
                self.out.flush()
            if self.outbox is not None:  # a local SQLite commit: never waits on the network
                expires_at = self.clock.now() + DECISION_EXPIRY_S
                self.outbox.put(self.topics.decision(door), payload, qos=1, expires_at=expires_at)
        client = self.client
        if client is not None and client.connected.is_set():
            for session in events.sessions:
                client.publish(self.topics.session(door), session.to_payload(), qos=0)
