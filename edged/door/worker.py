"""The door worker: the daemon's frame loop, on its own thread (``edged.app`` starts and stops it).

Per frame (``process``): detect (``FacePipeline.faces`` without embedding) → track (``FaceTracker``,
every face in the frame) → per door: the tracked faces in the door's capture zone (``Door.sees``, the
one place faces are filtered by position), the decider's ``request`` for each, the embedding of a
face that passes the gate (once per frame, shared by the doors), the search of the door's group
(``DoorDirectory.search_door``: the group's cached index under that index's own lock, never the
service lock, so a train of a large group or a re-sync does not stall the door), ``decider.update``,
and the events out through the ``EventSink``. Each stage is timed (``time.perf_counter``) into the
``StatsCollector``. ``directory_version()`` is asked once per frame; every decision made on that
frame carries the value.

Liveness (doors with ``liveness`` on, docs/decisions.md): every track in view of such a door has one
liveness tracker per such door (``liveness()``, the app's ``LivenessTrack`` of
``edged.pipeline.fusion``; per door because each door asks its own challenges), fed a
``LivenessFrame`` each frame (box, mesh points, the gate's verdict, the grey face patch for the
parallax cue, the iris model's eye openness for the blink cue, and on frames that pass the gate the
passive model's ``real_probability``: built once per frame and track, shared by the doors); its
``result`` goes to that door's decider on the ``FaceObservation``. A challenge a decider asks is
told to the door's tracker of the track (``ask``); a challenge answers one decision: that tracker
starts afresh after it (another door's tracker of the track is left alone); a track that ends drops
its trackers.

Between frames it applies the verify-mode claims that the network thread queued in the
``ClaimInbox`` (card → person, the person's membership in the door's group, ``decider.claim``): the
decider is only ever touched by this thread. It never touches the network: the sink commits
decisions to the durable outbox and hands sessions to paho's queue (``edged.mqtt.door``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from edged.capture.buffer import LatestFrame
from edged.capture.source import Frame
from edged.clock import Clock, SystemClock
from edged.door.claims import ClaimInbox, PendingClaim
from edged.door.decider import Decider
from edged.door.events import UNKNOWN_CARD, UNKNOWN_PERSON, Events, FaceObservation, MatchRequest
from edged.door.settings import DoorSettings
from edged.door.zone import CaptureZone
from edged.errors import EdgedError
from edged.inference.manifest import Calibration
from edged.matcher import Match
from edged.pipeline.eyes import EyeModel
from edged.pipeline.fusion import LivenessSettings
from edged.pipeline.liveness import Challenge, FacePatch, LivenessFrame, LivenessResult, PassiveModel
from edged.pipeline.pipeline import FacePipeline
from edged.stats import StatsCollector
from edged.tracker import FaceTracker
from edged.types import Face, FloatArray

__all__ = [
    "FRAME_WAIT_S",
    "Door",
    "DoorDirectory",
    "DoorWorker",
    "EventSink",
    "LivenessTracker",
    "no_version",
]

logger = logging.getLogger(__name__)

FRAME_WAIT_S = 0.5
"""How long the worker waits for a frame before it looks at the stop event (and the claims) again."""


class DoorDirectory(Protocol):
    """What the worker asks of the person directory (``edged.service.faces.FaceService``)."""

    def search_door(
        self,
        group_id: str,
        template: FloatArray,
        k: int,
        max_distance: float | None,
        owners: Collection[str] | None = None,
    ) -> list[Match]: ...

    def person_for_card(self, card_id: str) -> str | None: ...

    def has_person(self, group_id: str | None, person_id: str) -> bool: ...


class EventSink(Protocol):
    """Where a door's events go (``edged.mqtt.door.DoorPublisher``). ``captured`` is the frame's
    ``Frame.timestamp`` (monotonic) when the events were decided on a frame."""

    def emit(self, door: str, events: Events, captured: float | None = None) -> None: ...


class LivenessTracker(Protocol):
    """The liveness of one track at one door (``edged.pipeline.fusion.LivenessTrack``): frames in,
    a result out; ``ask``: a challenge was shown at ``t`` (monotonic)."""

    def add(self, frame: LivenessFrame) -> None: ...

    def ask(self, challenge: Challenge, t: float) -> None: ...

    def result(self, now: float) -> LivenessResult: ...


def no_version() -> int | None:
    """The directory version when none is known: decisions carry null."""
    return None


@dataclass(frozen=True, slots=True)
class Door:
    """One door of the worker: its decider, the person group it matches against, its capture zone."""

    name: str
    decider: Decider
    group: str
    zone: CaptureZone | None = None

    @classmethod
    def build(
        cls,
        name: str,
        settings: DoorSettings,
        calibration: Calibration,
        clock: Clock,
        model: str | None,
        liveness: LivenessSettings | None = None,
    ) -> Door:
        zone = None if settings.capture_zone is None else settings.capture_zone.zone()
        decider = Decider(name, settings, calibration, clock, model=model, liveness=liveness)
        return cls(name, decider, settings.group, zone)

    def sees(self, face: Face, frame_size: tuple[int, int]) -> bool:
        """Whether ``face`` is in this door's capture zone (the whole frame without one)."""
        return self.zone is None or self.zone.contains(face.detection.box, frame_size)


class DoorWorker:
    """The frame loop of the doors (module doc). ``run`` on one thread; ``process`` one frame."""

    def __init__(
        self,
        pipeline: FacePipeline,
        directory: DoorDirectory,
        doors: Sequence[Door],
        sink: EventSink,
        *,
        claims: ClaimInbox | None = None,
        tracker: FaceTracker | None = None,
        clock: Clock | None = None,
        stats: StatsCollector | None = None,
        directory_version: Callable[[], int | None] = no_version,
        antispoof: PassiveModel | None = None,
        liveness: Callable[[], LivenessTracker] | None = None,
        eyes: EyeModel | None = None,
    ) -> None:
        names = [door.name for door in doors]
        if len(set(names)) != len(names):
            raise ValueError(f"door names must be unique: {names}")
        live_doors = tuple(door for door in doors if door.decider.liveness.on)
        if live_doors and (antispoof is None or liveness is None):
            raise ValueError(
                f"doors {[d.name for d in live_doors]} have liveness on: the worker needs the "
                "anti-spoofing model and a liveness tracker factory"
            )
        self.pipeline = pipeline
        self.directory = directory
        self.doors = tuple(doors)
        self.sink = sink
        self.claims = claims or ClaimInbox()
        self.tracker = tracker or FaceTracker()
        self.clock: Clock = clock or SystemClock()
        self.stats = stats or StatsCollector()
        self.directory_version = directory_version
        self.frames = 0
        """Frames processed."""
        self.decisions = 0
        """Decisions emitted (on frames, on claims, at the end)."""
        self.error: BaseException | None = None
        """What stopped ``run``, if it failed."""
        self._by_name = {door.name: door for door in self.doors}
        self._search_failed: set[str] = set()  # doors whose group cannot be searched (logged once)
        self.antispoof = antispoof
        self.liveness = liveness
        self.eyes = eyes
        """The iris model for the blink cue (None: the cue falls back to the mesh, docs/liveness.md)."""
        self._live_doors = live_doors
        self._live: dict[tuple[str, int], LivenessTracker] = {}  # (door, track ID) → its liveness

    @property
    def groups(self) -> list[str]:
        """The person groups of the doors, sorted, each once."""
        return sorted({door.group for door in self.doors})

    def run(
        self,
        frames: LatestFrame,
        stop: threading.Event,
        capture: threading.Thread | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        """Until ``stop`` is set: the claims waiting, then the latest frame (``heartbeat`` after each
        frame processed). When ``capture`` has ended (the camera stopped for good), sets ``stop``. At
        the end every track is ended (sessions ``end``). A failure is kept in ``error``, logged, and
        sets ``stop``: the daemon goes down rather than run without its doors."""
        try:
            while not stop.is_set():
                frame = frames.get(FRAME_WAIT_S)
                self.take_claims()
                if frame is None:
                    if capture is not None and not capture.is_alive():
                        logger.warning("the camera stopped; stopping")
                        stop.set()
                    continue
                self.process(frame)
                if heartbeat is not None:
                    heartbeat()
            self.finish()
        except BaseException as exc:
            self.error = exc
            logger.exception("worker failed; stopping")
            stop.set()

    def finish(self) -> None:
        """End every track: each door closes its sessions."""
        ended = [t.track_id for t in self.tracker.end_all()]
        self._live.clear()
        version = self.directory_version()
        for door in self.doors:
            self._emit(door.name, door.decider.update([], ended=ended, directory_version=version))

    def process(self, frame: Frame) -> None:
        """One frame (module doc)."""
        pipeline = self.pipeline
        started = time.perf_counter()
        faces = pipeline.faces(frame.image, embed=False)
        detect_s = time.perf_counter() - started
        now = self.clock.monotonic()
        captured_at = self.clock.now() - (time.monotonic() - frame.timestamp)  # wall clock of the capture
        version = self.directory_version()
        tracks = self.tracker.update([f.detection.box for f in faces], now)
        ended = [t.track_id for t in self.tracker.ended]
        for key in [key for key in self._live if key[1] in ended]:
            del self._live[key]
        liveness: dict[tuple[str, int], LivenessResult] = {}
        for track in tracks if self._live_doors else ():
            face = faces[track.index]
            seeing = [door.name for door in self._live_doors if door.sees(face, frame.size)]
            if seeing:
                seen = self._liveness_frame(frame, face, now)
                for name in seeing:
                    liveness[name, track.track_id] = self._assess(name, track.track_id, seen, now)
        embedded: dict[int, Face] = {}
        embed_s: list[float] = []
        search_s: list[float] = []
        decide_s = 0.0
        for door in self.doors:
            observations = []
            for track in tracks:
                face = faces[track.index]
                if not door.sees(face, frame.size):
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
                result = liveness.get((door.name, track.track_id))
                observations.append(
                    FaceObservation.of(track.track_id, face, group=group, claimed=claimed, liveness=result)
                )
            started = time.perf_counter()
            events = door.decider.update(
                observations, ended=ended, directory_version=version, captured_at=captured_at
            )
            decide_s += time.perf_counter() - started
            for asked in events.challenges:
                tracker = self._live.get((door.name, asked.track_id))
                if tracker is not None:
                    tracker.ask(asked.challenge, asked.asked_at)
            for decision in events.decisions:
                if decision.liveness is not None and decision.liveness.challenge is not None:
                    assert decision.track_id is not None
                    self._live.pop((door.name, decision.track_id), None)
            self._emit(door.name, events, frame.timestamp)
        self.frames += 1
        self.stats.add_frame(detect_s, decide_s, embed_s, search_s)

    def _liveness_frame(self, frame: Frame, face: Face, now: float) -> LivenessFrame:
        """The liveness frame of ``face`` (the passive model on a face that passes the gate; as
        ``LivenessChecker.frames`` builds them)."""
        assert self.antispoof is not None and face.mesh is not None
        image, box, points, good = frame.image, face.detection.box, face.mesh.points, face.quality.ok
        score = self.antispoof.real_probability(image, box) if good else None
        openness = None if self.eyes is None else self.eyes.openness(image, points)
        return LivenessFrame(now, box, points, good, score, openness, FacePatch.of(image, box))

    def _assess(self, door: str, track_id: int, seen: LivenessFrame, now: float) -> LivenessResult:
        """``seen`` into the door's liveness tracker of the track, and its result so far."""
        assert self.liveness is not None
        tracker = self._live.get((door, track_id))
        if tracker is None:
            tracker = self._live[door, track_id] = self.liveness()
        tracker.add(seen)
        return tracker.result(now)

    def _search(
        self, door: Door, template: FloatArray, request: MatchRequest
    ) -> tuple[list[Match] | None, list[Match] | None]:
        """The matcher's answers to ``request`` (None, None: the group cannot be searched, so this
        frame is no evidence; logged once until it can be searched again)."""
        group: list[Match] | None = None
        claimed: list[Match] | None = None
        try:
            if request.k:
                group = self.directory.search_door(door.group, template, request.k, request.max_distance)
            if request.person_id is not None:
                claimed = self.directory.search_door(
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
        self.decisions += len(events.decisions)
        self.sink.emit(door, events, captured)

    # -- claims --------------------------------------------------------------------------------------

    def take_claims(self) -> None:
        """Apply every waiting claim (card → person, membership check, ``decider.claim``)."""
        while (pending := self.claims.take()) is not None:
            try:
                self._apply(pending)
            except EdgedError as exc:  # e.g. the directory refused a lookup: one claim lost, logged
                self.claims.reject(pending.door, "error", exc.message, pending.claim.event_id)

    def _refuse(self, door: Door, reason: str) -> None:
        """Deny a claim that cannot be checked at once (``Decider.refuse_claim``)."""
        refusal = door.decider.refuse_claim(reason, directory_version=self.directory_version())
        self._emit(door.name, Events(decisions=(refusal,)))

    def _apply(self, pending: PendingClaim) -> None:
        claim = pending.claim
        door = self._by_name.get(pending.door)
        if door is None:
            self.claims.reject(pending.door, "error", "no such door", claim.event_id)
            return
        if claim.card_id is not None:
            person_id = self.directory.person_for_card(claim.card_id)
            if person_id is None:
                self.claims.reject(door.name, UNKNOWN_CARD, "no person has this card", claim.event_id)
                self._refuse(door, UNKNOWN_CARD)
                return
            how = "card"
        else:
            assert claim.person_id is not None
            person_id, how = claim.person_id, "person ID"
        if not self.directory.has_person(door.group, person_id):
            self.claims.reject(
                door.name,
                UNKNOWN_PERSON,
                f"person {person_id!r} (by {how}) is not in the door's group {door.group!r}",
                claim.event_id,
            )
            self._refuse(door, UNKNOWN_PERSON)
            return
        door.decider.claim(person_id)
        self.claims.accepted(door.name, person_id, how, claim.event_id)
