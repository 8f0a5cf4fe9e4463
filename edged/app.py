"""The door daemon's composition layer: the only place that sees the whole configuration.

``App.start()`` runs an ordered list of steps, each with its undo; ``App.stop()`` undoes the steps
that ran, in reverse, and joins every thread. One ``threading.Event`` stops everything.

    pipeline → store + service (interrupted trainings recovered) → maintenance thread (reaper:
    expired face IDs at start and every 60 s; directory changes by other processes every 1 s)
    → per-door index (trained group) → decider per door
    → MQTT client + outbox (retained birth; optional) → request server (edged.api.server)
    → capture thread + LatestFrame → worker thread → stats thread (with MQTT)

MQTT comes up before the camera (and goes down after the worker), so no decision is made while
there is nowhere to put it, and the last decisions are in the outbox before ``stopped`` is sent.

The worker (module doc of ``edged.door.decider``) never touches the network: decisions go to the durable
outbox (drained by its own thread), session events to paho's queue (QoS 0). It searches through
``FaceService.search_door`` (the group's cached index under that index's own lock, never the service
lock: a train of a large group or a re-sync does not stall the door), applies the
verify-mode claims that paho's thread queued for it (bounded; ``decider.claim`` runs on the worker
only), and times its stages into ``StatsCollector``; the stats thread publishes them every
``mqtt.stats_interval_s`` (docs/mqtt.md). On every (re)connect, and whenever Home Assistant says it
is ``online``, the retained Home Assistant discovery message is published (``edged.mqtt.ha``).

The maintenance thread (``edged.directory.retention.Reaper``) deletes expired face IDs (``detect``
stores one per face, and unsigned clients may call it) every ``REAP_INTERVAL_S`` of the App's clock,
and every ``MAINTENANCE_TICK_S`` asks ``FaceService.refresh`` whether another process (the CLI)
committed to the directory, re-syncing the cached indexes when it did: a person deleted with
``edged persons delete`` while the daemon runs stops matching within about a second.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from edged import __version__
from edged.api.auth import Authenticator
from edged.api.server import ApiServer
from edged.capture import CaptureThread, Frame, FrameSource, LatestFrame, make_source
from edged.clock import Clock, SystemClock
from edged.config import Config
from edged.directory.crypto import Kek
from edged.directory.retention import Reaper
from edged.directory.store import Store
from edged.door.decider import Decider
from edged.door.events import Events, FaceObservation, MatchRequest
from edged.door.zone import CaptureZone
from edged.errors import ConfigError, EdgedError
from edged.inference.manifest import Manifest
from edged.matcher import Match
from edged.mqtt.claims import QUEUE_FULL, UNKNOWN_CARD, UNKNOWN_PERSON, Claim, ClaimRejected, parse_claim
from edged.mqtt.client import InboundMessage, MqttClient
from edged.mqtt.ha import discovery_bytes
from edged.mqtt.outbox import Outbox, OutboxPublisher
from edged.mqtt.topics import Topics
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.stats import StatsCollector, stats_payload
from edged.systemd import Notifier
from edged.tracker import FaceTracker
from edged.types import Face, FloatArray

__all__ = ["App", "mqtt_target"]

logger = logging.getLogger(__name__)

FRAME_WAIT_S = 0.5
"""How long the worker waits for a frame before it looks at the stop event again."""
JOIN_TIMEOUT_S = 10.0
OUTBOX_DRAIN_S = 3.0
"""At stop, how long to let the outbox publisher deliver what is left (while connected)."""
OUTBOX_FILE = "outbox.sqlite3"
CLAIM_QUEUE = 32
"""Claims waiting for the worker; more are rejected (``queue_full``), logged and counted."""
NONCE_FILE = "nonces.sqlite3"
AUDIT_CURSOR = "audit_seq"
AUDIT_BATCH = 200
AUDIT_SCHEMA = 1
REAP_INTERVAL_S = 60.0
"""Expired face IDs are deleted this often (by the App's clock), and at start-up."""
MAINTENANCE_TICK_S = 1.0
"""The maintenance thread wakes this often (real time): directory changes by other processes are
picked up within about this long, and the clock is looked at for a due reaper pass."""


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
    group: str
    zone: CaptureZone | None


@dataclass(frozen=True, slots=True)
class _PendingClaim:
    """A well-formed claim from paho's thread, for the worker."""

    door: _Door
    claim: Claim


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
        service_pipeline: FacePipeline | None = None,
        clock: Clock | None = None,
        source: FrameSource | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.kek = kek
        self.mqtt_url = mqtt_url
        self.stop_event = stop
        self.out = out
        self.clock = clock or SystemClock()
        self.pipeline = pipeline
        self.service_pipeline = service_pipeline
        self.source = source  # None: built from config.camera at start (a given one: benchmarks, tests)
        self.topics = Topics(config.device_id)
        if mqtt_url is not None:
            mqtt_target(mqtt_url)  # a bad URL fails before anything starts
        self.store: Store | None = None
        self.service: FaceService | None = None
        self.reaper: Reaper | None = None
        self.doors: list[_Door] = []
        self.client: MqttClient | None = None
        self.outbox: Outbox | None = None
        self.publisher: OutboxPublisher | None = None
        self.api: ApiServer | None = None
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
        self.stats = StatsCollector()
        self.stats_thread: threading.Thread | None = None
        self._dropped_reported = 0
        self._claims: queue.Queue[_PendingClaim] = queue.Queue(CLAIM_QUEUE)
        self._search_failed: set[str] = set()  # doors whose group cannot be searched (logged once)

    # -- lifecycle -----------------------------------------------------------------------------------

    def steps(self) -> list[tuple[str, Callable[[], Callable[[], None] | None]]]:
        """The start-up steps in order; each returns its undo (or None)."""
        return [
            ("pipeline", self._start_pipeline),
            ("directory", self._start_directory),
            ("maintenance", self._start_maintenance),
            ("indexes and deciders", self._start_doors),
            ("mqtt", self._start_mqtt),
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
    def frames_dropped(self) -> int:
        return 0 if self.buffer is None else self.buffer.dropped

    @property
    def camera_restarts(self) -> int:
        """Times the camera was re-opened after a failure (``CaptureThread.restarts``)."""
        return 0 if self.capture is None else self.capture.restarts

    # -- steps ---------------------------------------------------------------------------------------

    def _start_pipeline(self) -> None:
        if self.pipeline is None:
            self.pipeline = FacePipeline.load(Manifest.load(self.config.model_dir), self.config.pipeline)

    @property
    def serves_api(self) -> bool:
        return self.mqtt_url is not None and self.config.api.enabled

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
        store = self.store = Store.open(self.state_dir, self.kek, self.clock)
        try:
            self.service = FaceService(
                pipeline, store, self.config.directory, pipeline.embedder.model.path.name
            )
            self.service.recover_interrupted_training()  # a train cut short by a kill or power loss
        except BaseException:
            store.close()
            raise
        return store.close

    def _start_maintenance(self) -> Callable[[], None]:
        """The reaper (expired face IDs now, then every ``REAP_INTERVAL_S`` of the clock) and, every
        ``MAINTENANCE_TICK_S``, the look for directory changes by other processes; on one thread."""
        service = self.service
        assert service is not None
        stop = threading.Event()
        reaper = self.reaper = Reaper(
            {"face_ids": service.reap},
            REAP_INTERVAL_S,
            stop,
            clock=self.clock,
            tick_s=MAINTENANCE_TICK_S,
            every_tick={"directory changes": service.refresh, "audit to MQTT": self.forward_audit},
        )
        reaper.start()

        def undo() -> None:
            stop.set()
            reaper.join(JOIN_TIMEOUT_S)
            if reaper.is_alive():
                logger.error("maintenance thread did not stop within %.0f s", JOIN_TIMEOUT_S)

        return undo

    def forward_audit(self) -> None:
        """Queue the audit records written since the last call (by this daemon or by the CLI) on
        ``edged/<device>/audit`` through the durable outbox, each exactly once: the outbox keeps the
        position in the same transaction. The first run starts at the newest record (history stays
        in the directory: ``edged audit show``)."""
        outbox, service = self.outbox, self.service
        if outbox is None or service is None:
            return
        position = outbox.cursor(AUDIT_CURSOR)
        while True:
            after, records = service.audit_after(position, AUDIT_BATCH)
            if position is not None and after == position:
                return
            payloads = [
                {"schema": AUDIT_SCHEMA, "device": self.config.device_id, **r.as_json()} for r in records
            ]
            outbox.put_batch(self.topics.audit(), payloads, (AUDIT_CURSOR, after))
            if len(records) < AUDIT_BATCH:
                return
            position = after

    def _start_doors(self) -> None:
        assert self.service is not None and self.pipeline is not None
        calibration = self.service.calibration
        model = self.service.model_id
        for name, settings in self.config.doors.items():
            try:
                self.service.trained_index(settings.group)  # loaded now; searched via search_door
            except EdgedError as exc:
                raise ConfigError(f"door {name!r}: {exc.message}") from None
            decider = Decider(name, settings, calibration, self.clock, model=model)
            zone = None if settings.capture_zone is None else settings.capture_zone.zone()
            self.doors.append(_Door(name, decider, settings.group, zone))

    def _start_mqtt(self) -> Callable[[], None] | None:
        if self.mqtt_url is None:
            return None
        host, port = mqtt_target(self.mqtt_url)
        settings = self.config.mqtt.model_copy(update={"host": host, "port": port})
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
        self.client.subscribe(self.topics.request_wildcard(), server.submit, qos=1)

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
                if not self._claims.empty():
                    self._take_claims()
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
        """One frame: detect, track, and per door ask, embed, search, decide and emit; each stage
        timed (``time.perf_counter``) into ``self.stats``."""
        pipeline = self.pipeline
        assert pipeline is not None
        started = time.perf_counter()
        faces = pipeline.faces(frame.image, embed=False)
        detect_s = time.perf_counter() - started
        now = self.clock.monotonic()
        captured_at = self.clock.now() - (time.monotonic() - frame.timestamp)  # wall clock of the capture
        tracks = self.tracker.update([f.detection.box for f in faces], now)
        ended = [t.track_id for t in self.tracker.ended]
        embedded: dict[int, Face] = {}
        embed_s: list[float] = []
        search_s: list[float] = []
        decide_s = 0.0
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
                        started = time.perf_counter()
                        embedded[track.index] = pipeline.embed(frame.image, face)
                        embed_s.append(time.perf_counter() - started)
                    template = embedded[track.index].embedding
                    assert template is not None
                    started = time.perf_counter()
                    group, claimed = self._search(door, template, request)
                    search_s.append(time.perf_counter() - started)
                observations.append(FaceObservation.of(track.track_id, face, group=group, claimed=claimed))
            started = time.perf_counter()
            events = door.decider.update(observations, ended=ended, captured_at=captured_at)
            decide_s += time.perf_counter() - started
            self._emit(door.name, events, frame.timestamp)
        self.frames_processed += 1
        self.stats.add_frame(detect_s, decide_s, embed_s, search_s)

    def _search(
        self, door: _Door, template: FloatArray, request: MatchRequest
    ) -> tuple[list[Match] | None, list[Match] | None]:
        """The matcher's answers to ``request`` (None, None: the group cannot be searched, so this
        frame is no evidence; logged once until it can be searched again)."""
        service = self.service
        assert service is not None
        group: list[Match] | None = None
        claimed: list[Match] | None = None
        try:
            if request.k:
                group = service.search_door(door.group, template, request.k, request.max_distance)
            if request.person_id is not None:
                claimed = service.search_door(
                    door.group, template, 1, request.max_distance, owners={request.person_id}
                )
        except EdgedError as exc:  # the group was deleted or is being retrained: decide nothing
            if door.name not in self._search_failed:
                self._search_failed.add(door.name)
                logger.error("door %s: cannot search person group %r: %s", door.name, door.group, exc)
            return None, None
        if self._search_failed and door.name in self._search_failed:
            self._search_failed.discard(door.name)
            logger.info("door %s: person group %r searchable again", door.name, door.group)
        return group, claimed

    def _emit(self, door: str, events: Events, captured: float | None = None) -> None:
        """Decisions to stdout and the outbox, sessions to paho. ``captured`` is the frame's
        ``Frame.timestamp`` (monotonic), for the frame-to-outbox latency."""
        for decision in events.decisions:
            payload = decision.to_payload()
            # MQTT 3.1.1 has no message expiry: the payload says until when it may be acted on
            expires_at = decision.time + self.config.mqtt.decision_expiry_s
            payload["expires_at"] = round(expires_at, 3)
            self.decisions += 1
            if self.out is not None:
                self.out.write(json.dumps(payload) + "\n")
                self.out.flush()
            if self.outbox is not None:  # a local SQLite commit: never waits on the network
                self.outbox.put(self.topics.decision(door), payload, qos=1, expires_at=expires_at)
                if captured is not None:
                    self.stats.add("frame_to_outbox", time.monotonic() - captured)
        client = self.client
        if client is not None and client.connected.is_set():
            for session in events.sessions:
                client.publish(self.topics.session(door), session.to_payload(), qos=0)

    # -- MQTT: Home Assistant discovery and claims ---------------------------------------------------

    def _wire_mqtt(self, client: MqttClient) -> None:
        """Before connecting: the discovery hook, and the subscriptions (renewed on every connect)."""
        ha = self.config.ha
        if ha.enabled:
            client.on_connected(self.publish_discovery)
            client.subscribe(self.topics.ha_status(ha.discovery_prefix), self._on_ha_status, qos=1)
        for door in self.doors:
            if door.decider.mode != "identify":
                client.subscribe(self.topics.claim(door.name), self._claim_handler(door), qos=1)

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

    def _claim_handler(self, door: _Door) -> Callable[[InboundMessage], None]:
        """On paho's thread: parse, then queue for the worker (never blocks; a full queue rejects)."""

        def handle(message: InboundMessage) -> None:
            try:
                claim = parse_claim(message.payload, retained=message.retain)
            except ClaimRejected as exc:
                self._reject_claim(door.name, exc.reason, exc.message, None)
                return
            try:
                self._claims.put_nowait(_PendingClaim(door, claim))
            except queue.Full:
                self._reject_claim(
                    door.name, QUEUE_FULL, f"{CLAIM_QUEUE} claims are already waiting", claim.event_id
                )

        return handle

    def _reject_claim(self, door: str, reason: str, message: str, event_id: str | None) -> None:
        self.stats.count(f"claims_rejected.{reason}")
        logger.warning(
            "door %s: claim rejected (%s): %s%s",
            door,
            reason,
            message,
            f" [event {event_id}]" if event_id else "",
        )

    def _take_claims(self) -> None:
        """On the worker: apply every queued claim (card → person, membership check, decider.claim)."""
        while True:
            try:
                pending = self._claims.get_nowait()
            except queue.Empty:
                return
            try:
                self._apply_claim(pending)
            except EdgedError as exc:  # e.g. the directory refused a lookup: one claim lost, logged
                self._reject_claim(pending.door.name, "error", exc.message, pending.claim.event_id)

    def _apply_claim(self, pending: _PendingClaim) -> None:
        door, claim = pending.door, pending.claim
        service = self.service
        assert service is not None
        if claim.card_id is not None:
            person_id = service.person_for_card(claim.card_id)
            if person_id is None:
                self._reject_claim(door.name, UNKNOWN_CARD, "no person has this card", claim.event_id)
                self._emit(door.name, Events(decisions=(door.decider.refuse_claim(UNKNOWN_CARD),)))
                return
            how = "card"
        else:
            assert claim.person_id is not None
            person_id, how = claim.person_id, "person ID"
        if not service.has_person(door.group, person_id):
            self._reject_claim(
                door.name,
                UNKNOWN_PERSON,
                f"person {person_id!r} (by {how}) is not in the door's group {door.group!r}",
                claim.event_id,
            )
            self._emit(door.name, Events(decisions=(door.decider.refuse_claim(UNKNOWN_PERSON),)))
            return
        door.decider.claim(person_id)
        self.stats.count("claims_accepted")
        logger.info(
            "door %s: claim for person %s (by %s)%s",
            door.name,
            person_id,
            how,
            f" [event {claim.event_id}]" if claim.event_id else "",
        )

    # -- stats -----------------------------------------------------------------------------------------

    def _start_stats(self) -> Callable[[], None] | None:
        """The stats thread: every ``mqtt.stats_interval_s`` one message on edged/<device>/stats."""
        interval = self.config.mqtt.stats_interval_s
        if self.client is None or interval <= 0:
            return None
        stop = threading.Event()
        thread = self.stats_thread = threading.Thread(
            target=self._stats_loop, args=(stop, interval), name="stats", daemon=True
        )
        thread.start()

        def undo() -> None:
            stop.set()
            thread.join(JOIN_TIMEOUT_S)

        return undo

    def _stats_loop(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.publish_stats()
            except Exception:  # stats must never take the daemon down
                logger.exception("stats: publishing failed")

    def stats_message(self) -> dict[str, object]:
        """The stats payload for the interval since the previous call (which it closes)."""
        dropped = self.frames_dropped
        interval = self.stats.take()
        counters = self.stats.counters()
        rejected_prefix = "claims_rejected."
        claims = {
            "accepted": counters.get("claims_accepted", 0),
            "rejected": {
                name[len(rejected_prefix) :]: n
                for name, n in counters.items()
                if name.startswith(rejected_prefix)
            },
            "waiting": self._claims.qsize(),
        }
        groups = sorted({d.group for d in self.doors})
        directory = {} if self.service is None else self.service.door_sizes(groups)
        payload = stats_payload(
            interval,
            device=self.config.device_id,
            now=self.clock.now(),
            uptime_s=self.stats.uptime(),
            frames_processed=self.frames_processed,
            frames_dropped=dropped,
            frames_dropped_interval=dropped - self._dropped_reported,
            decisions=self.decisions,
            directory=directory,
            outbox=None if self.outbox is None else asdict(self.outbox.stats()),
            mqtt=None if self.client is None else asdict(self.client.state.snapshot()),
            claims=claims,
            camera=None
            if self.capture is None
            else {
                "source": self.capture.source.name,
                "down": self.capture.down,
                "restarts": self.capture.restarts,
                "failures": self.capture.failures,
            },
            api=None if self.api is None else self.api.counters(),
        )
        self._dropped_reported = dropped
        return payload

    def publish_stats(self) -> None:
        """One stats message (QoS 0, not retained) when connected; the interval is closed either way."""
        payload = self.stats_message()
        client = self.client
        if client is not None and client.connected.is_set():
            client.publish(self.topics.stats(), payload, qos=0)
