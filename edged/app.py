"""The door daemon's composition layer: the only place that sees the whole configuration. ``App``
builds the components, starts and stops them in order, owns the one stop event and speaks sd_notify;
the work is done by the components.

``App.start()`` runs an ordered list of steps, each with its undo; ``App.stop()`` undoes the steps
that ran, in reverse, and joins every thread. One ``threading.Event`` stops everything.

    pipeline (+ the anti-spoofing and iris models when a door has liveness on) → store + service (interrupted
    trainings recovered) → per-door index (trained group),
    decider per door, the claim inbox → MQTT client + outbox (retained birth; optional)
    → maintenance thread (``edged.scheduler``: expired face IDs and liveness sessions 48 h old at
    start and every 60 s of the clock, audit retention at start and once a day; directory changes
    by other processes and audit forwarding every 1 s) → request server
    (``edged.api.server``) → capture thread + LatestFrame → worker thread (``edged.door.worker``)
    → stats thread (``edged.mqtt.stats``, with MQTT)

MQTT comes up before the camera (and goes down after the worker), so no decision is made while
there is nowhere to put it, and the last decisions are in the outbox before ``stopped`` is sent.

The worker never touches the network: its events go to ``edged.mqtt.door.DoorPublisher`` (decisions
to the durable outbox, drained by its own thread; sessions to paho's queue). The claims that paho's
thread parses (``edged.mqtt.claims``) wait in the ``ClaimInbox`` for the worker. On every
(re)connect, and whenever Home Assistant says it is ``online``, the retained Home Assistant discovery
message is published (``edged.mqtt.ha``). The worker pings systemd's watchdog after every frame, so a
camera or worker that stops delivering frames gets the service restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from edged import __version__
from edged.api.auth import Authenticator
from edged.api.server import ApiServer
from edged.capture import CaptureThread, FrameSource, LatestFrame, make_source
from edged.clock import Clock, SystemClock
from edged.config import Config
from edged.directory.crypto import Kek
from edged.directory.store import Store
from edged.door.claims import ClaimInbox
from edged.door.worker import Door, DoorWorker
from edged.errors import ConfigError, EdgedError
from edged.inference.manifest import Manifest
from edged.mqtt.audit import AuditForwarder
from edged.mqtt.claims import claim_handler
from edged.mqtt.client import InboundMessage, MqttClient
from edged.mqtt.door import DoorPublisher
from edged.mqtt.ha import discovery_bytes
from edged.mqtt.outbox import Outbox, OutboxPublisher
from edged.mqtt.settings import BrokerAddress
from edged.mqtt.stats import StatsReporter
from edged.mqtt.topics import Topics
from edged.pipeline.antispoof import AntiSpoof
from edged.pipeline.eyes import EyeModel
from edged.pipeline.fusion import LivenessChecker, LivenessTrack
from edged.pipeline.pipeline import FacePipeline
from edged.scheduler import Job, Scheduler
from edged.service.faces import FaceService
from edged.stats import StatsCollector
from edged.systemd import Notifier
from edged.tracker import FaceTracker

__all__ = ["App"]

logger = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0
OUTBOX_DRAIN_S = 3.0
"""At stop, how long to let the outbox publisher deliver what is left (while connected)."""
OUTBOX_FILE = "outbox.sqlite3"
NONCE_FILE = "nonces.sqlite3"
REAP_INTERVAL_S = 60.0
"""Expired face IDs are deleted this often (by the App's clock), and at start-up."""
AUDIT_PRUNE_INTERVAL_S = 86_400.0
"""Audit records past ``directory.audit_retention_days`` are deleted this often, and at start-up
(each pass verifies the whole chain first, holding the directory's write lock: not more often)."""
MAINTENANCE_TICK_S = 1.0
"""The maintenance thread wakes this often (real time): directory changes by other processes are
picked up within about this long, audit records forwarded, and the clock looked at for a due reaper
pass."""


def load_liveness_checker(config: Config, pipeline: FacePipeline) -> LivenessChecker:
    """The liveness checker of ``config`` over ``pipeline`` (``edged.pipeline.fusion``): the
    anti-spoofing models, the iris model for blinks, the cues' thresholds (``liveness:``); its own
    interpreters, as many threads as the pipeline's."""
    manifest = Manifest.load(config.model_dir)
    threads = config.pipeline.threads
    model = AntiSpoof.load(manifest, threads)
    return LivenessChecker(pipeline, model, config.liveness, EyeModel.load(manifest, threads))


class App:
    """The door daemon: ``start()``, then ``stop()`` (which also undoes a half-finished start).
    ``broker`` None: no MQTT (decisions on ``out`` only)."""

    def __init__(
        self,
        config: Config,
        state_dir: Path,
        kek: Kek,
        broker: BrokerAddress | None,
        stop: threading.Event,
        out: TextIO | None = None,
        *,
        pipeline: FacePipeline | None = None,
        service_pipeline: FacePipeline | None = None,
        clock: Clock | None = None,
        source: FrameSource | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.kek = kek
        self.broker = broker
        self.stop_event = stop
        self.out = out
        self.clock = clock or SystemClock()
        self.pipeline = pipeline
        self.service_pipeline = service_pipeline
        self.source = source  # None: built from config.camera at start (a given one: benchmarks, tests)
        self.topics = Topics(config.device_id)
        self.stats = StatsCollector()
        self.claims = ClaimInbox()
        self.store: Store | None = None
        self.service: FaceService | None = None
        self.scheduler: Scheduler | None = None
        self.doors: list[Door] = []
        self.antispoof: AntiSpoof | None = None
        """The passive anti-spoofing model of the doors with liveness on (None: no such door)."""
        self.eyes: EyeModel | None = None
        """The iris model of the blink cue, with ``antispoof``."""
        self.client: MqttClient | None = None
        self.outbox: Outbox | None = None
        self.publisher: OutboxPublisher | None = None
        self.api: ApiServer | None = None
        self.buffer: LatestFrame | None = None
        self.capture: CaptureThread | None = None
        self.worker: DoorWorker | None = None
        self.reporter: StatsReporter | None = None
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
            ("maintenance", self._start_maintenance),
            ("api", self._start_api),
            ("capture", self._start_capture),
            ("worker", self._start_worker),
            ("stats", self._start_stats),
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
    def error(self) -> BaseException | None:
        """What made the worker stop the daemon (None: it did not fail)."""
        return None if self.worker is None else self.worker.error

    @property
    def frames_processed(self) -> int:
        return 0 if self.worker is None else self.worker.frames

    @property
    def decisions(self) -> int:
        return 0 if self.worker is None else self.worker.decisions

    @property
    def frames_dropped(self) -> int:
        return 0 if self.buffer is None else self.buffer.dropped

    @property
    def camera_restarts(self) -> int:
        """Times the camera was re-opened after a failure (``CaptureThread.restarts``)."""
        return 0 if self.capture is None else self.capture.restarts

    @property
    def serves_api(self) -> bool:
        return self.broker is not None and self.config.api.enabled

    # -- steps ---------------------------------------------------------------------------------------

    @property
    def liveness_on(self) -> bool:
        """Whether some door has liveness on (the anti-spoofing model is loaded only then)."""
        return any(door.liveness != "off" for door in self.config.doors.values())

    def _start_pipeline(self) -> None:
        if self.pipeline is None:
            self.pipeline = FacePipeline.load(Manifest.load(self.config.model_dir), self.config.pipeline)
        if self.liveness_on and self.antispoof is None:
            manifest = Manifest.load(self.config.model_dir)
            self.antispoof = AntiSpoof.load(manifest, threads=self.config.pipeline.threads)
            self.eyes = EyeModel.load(manifest, threads=self.config.pipeline.threads)

    def _start_directory(self) -> Callable[[], None]:
        assert self.pipeline is not None
        # The API's requests run on their own interpreters (TFLite interpreters are not thread-safe):
        # an enrolment never waits for, or delays, the door's frame loop.
        pipeline = self.pipeline
        if self.serves_api:
            if self.service_pipeline is None:
                self.service_pipeline = FacePipeline.load(
                    Manifest.load(self.config.model_dir), self.config.pipeline
                )
            pipeline = self.service_pipeline
        # the request API's liveness checks, on the same interpreters as its other operations
        liveness = load_liveness_checker(self.config, pipeline) if self.serves_api else None
        store = self.store = Store.open(self.state_dir, self.kek, self.clock)
        try:
            self.service = FaceService(
                pipeline, store, self.config.directory, pipeline.embedder.model.path.name, liveness=liveness
            )
            self.service.recover_interrupted_training()  # a train cut short by a kill or power loss
        except BaseException:
            store.close()
            raise
        return store.close

    def _start_doors(self) -> None:
        service = self.service
        assert service is not None
        for name, settings in self.config.doors.items():
            try:
                service.trained_index(settings.group)  # loaded now; searched via search_door
            except EdgedError as exc:
                raise ConfigError(f"door {name!r}: {exc.message}") from None
            self.doors.append(
                Door.build(
                    name, settings, service.calibration, self.clock, service.model_id, self.config.liveness
                )
            )

    def _start_mqtt(self) -> Callable[[], None] | None:
        if self.broker is None:
            return None
        settings = self.broker.settings(self.config.mqtt)
        outbox = self.outbox = Outbox(self.state_dir / OUTBOX_FILE, clock=self.clock)
        client = self.client = MqttClient(settings, self.topics, {"edged": __version__}, self.clock)
        publisher = self.publisher = OutboxPublisher(outbox, client)
        self._wire_mqtt(client)
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

    def _start_maintenance(self) -> Callable[[], None]:
        """One thread: expired face IDs and liveness sessions 48 h old now and every
        ``REAP_INTERVAL_S`` of the clock, audit retention now and every ``AUDIT_PRUNE_INTERVAL_S``;
        every ``MAINTENANCE_TICK_S`` directory changes by other processes and (with MQTT) the audit
        records to forward."""
        service = self.service
        assert service is not None
        jobs = [
            Job("expired face IDs", service.reap, REAP_INTERVAL_S, at_start=True),
            Job("expired liveness sessions", service.liveness.reap, REAP_INTERVAL_S, at_start=True),
            Job("audit retention", service.prune_audit, AUDIT_PRUNE_INTERVAL_S, at_start=True),
            Job("directory changes", service.refresh),
        ]
        if self.outbox is not None:
            audit = AuditForwarder(service, self.outbox, self.topics, self.config.device_id)
            jobs.append(Job("audit to MQTT", audit.forward))
        stop = threading.Event()
        scheduler = self.scheduler = Scheduler(jobs, stop, clock=self.clock, tick_s=MAINTENANCE_TICK_S)
        scheduler.start()

        def undo() -> None:
            stop.set()
            scheduler.join(JOIN_TIMEOUT_S)
            if scheduler.is_alive():
                logger.error("maintenance thread did not stop within %.0f s", JOIN_TIMEOUT_S)

        return undo

    def _start_api(self) -> Callable[[], None] | None:
        """The face operations on edged/<device>/req/+ (edged.api.server), when there is a broker."""
        if not self.serves_api:
            return None
        assert self.client is not None and self.service is not None
        auth = Authenticator(self.config.api, self.config.device_id, self.clock, self.state_dir / NONCE_FILE)
        server = self.api = ApiServer(
            self.service, self.config.api, self.topics, self.client, auth, limits=self.config.images
        )
        server.start()
        server.listen(self.client)

        def undo() -> None:
            server.stop(JOIN_TIMEOUT_S)
            auth.close()

        return undo

    def _start_capture(self) -> Callable[[], None]:
        camera = self.config.camera
        options = {} if camera.fps is None else {"fps": camera.fps}
        source = self.source or make_source(camera.source, **options)
        buffer = self.buffer = LatestFrame()
        restart = camera.restart_max_delay_s or None  # 0: a failed camera stops the daemon
        capture = self.capture = CaptureThread(source, buffer, self.stop_event, restart_max_delay_s=restart)
        capture.start()

        def undo() -> None:
            self.stop_event.set()
            buffer.close()
            capture.join(JOIN_TIMEOUT_S)
            if capture.is_alive():
                logger.error("capture thread did not stop within %.0f s", JOIN_TIMEOUT_S)

        return undo

    def _start_worker(self) -> Callable[[], None]:
        assert self.pipeline is not None and self.service is not None and self.buffer is not None
        sink = DoorPublisher(
            self.topics,
            self.config.mqtt.decision_expiry_s,
            self.stats,
            out=self.out,
            outbox=self.outbox,
            client=self.client,
        )
        tracker = FaceTracker(self.config.tracker.min_iou, self.config.tracker.max_missed_s)
        liveness = self.config.liveness
        worker = self.worker = DoorWorker(
            self.pipeline,
            self.service,
            self.doors,
            sink,
            claims=self.claims,
            tracker=tracker,
            clock=self.clock,
            stats=self.stats,
            directory_version=self.service.directory_version,
            antispoof=self.antispoof,
            liveness=(lambda: LivenessTrack(liveness)) if self.antispoof is not None else None,
            eyes=self.eyes,
        )
        buffer = self.buffer
        thread = threading.Thread(
            target=worker.run,
            args=(buffer, self.stop_event, self.capture, self._ping_watchdog),
            name="worker",
            daemon=True,
        )
        thread.start()

        def undo() -> None:
            self.stop_event.set()
            buffer.close()
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.error("worker thread did not stop within %.0f s", JOIN_TIMEOUT_S)

        return undo

    def _start_stats(self) -> Callable[[], None] | None:
        """The stats thread: every ``mqtt.stats_interval_s`` one message on edged/<device>/stats."""
        interval = self.config.mqtt.stats_interval_s
        if self.client is None or self.worker is None or interval <= 0:
            return None
        reporter = self.reporter = StatsReporter(
            self.topics,
            self.client,
            self.stats,
            self.worker,
            self.clock,
            buffer=self.buffer,
            capture=self.capture,
            directory=self.service,
            outbox=self.outbox,
            api=self.api,
        )
        reporter.start(interval)
        return lambda: reporter.stop(JOIN_TIMEOUT_S)

    # -- supervision ---------------------------------------------------------------------------------

    def _ping_watchdog(self) -> None:
        """WATCHDOG=1 from the frame loop only (the worker calls it after each frame): a camera or
        worker that stops delivering frames stops the pings, and systemd (WatchdogSec=) restarts the
        service."""
        if self._watchdog_s is None:
            return
        now = self.clock.monotonic()
        if now - self._last_ping >= self._watchdog_s:
            self._last_ping = now
            self.notifier.watchdog()

    # -- MQTT: claims and Home Assistant discovery ---------------------------------------------------

    def _wire_mqtt(self, client: MqttClient) -> None:
        """Before connecting: the discovery hook, and the subscriptions (renewed on every connect)."""
        ha = self.config.ha
        if ha.enabled:
            client.on_connected(self.publish_discovery)
            client.subscribe(self.topics.ha_status(ha.discovery_prefix), self._on_ha_status, qos=1)
        for door in self.doors:
            if door.decider.mode != "identify":
                client.subscribe(self.topics.claim(door.name), claim_handler(self.claims, door.name), qos=1)

    def publish_discovery(self) -> None:
        """Publish the retained Home Assistant device discovery message (docs/mqtt.md)."""
        client = self.client
        ha = self.config.ha
        if client is None or not ha.enabled:
            return
        payload = discovery_bytes(self.topics, [d.name for d in self.doors], ha, __version__)
        client.publish_bytes(self.topics.ha_discovery(ha.discovery_prefix), payload, qos=1, retain=True)
        logger.debug("published the Home Assistant discovery message")

    def _on_ha_status(self, message: InboundMessage) -> None:
        """Home Assistant's birth (``online``) on its status topic: it may have lost the discovery
        (a restart with a broker that does not keep retained messages), so publish it again."""
        if message.payload.strip() == b"online":
            logger.info("Home Assistant is online: re-publishing the discovery message")
            self.publish_discovery()
