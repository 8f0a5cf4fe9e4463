"""Face tracks across frames: a greedy IoU tracker on the monotonic clock.

Each face box in a frame is matched to the live track it overlaps most (pairs taken greedily by IoU,
highest first, each track and each box used once, pairs under ``min_iou`` never); boxes left over start
new tracks with fresh IDs; a track that has not been matched for more than ``max_missed_s`` seconds
ends, and a face seen again after that gets a new ID. Every face in the frame is tracked: the doors'
capture zones are applied per door by the door worker (``edged.door.zone``).

Pure computation: no I/O, no threads, no clock of its own (``now`` is given by the caller).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pydantic import Field

from edged.errors import BadArgument
from edged.strict import Strict
from edged.types import Box

__all__ = ["FaceTracker", "Track", "TrackerSettings"]


class TrackerSettings(Strict):
    """The face tracker that follows faces across frames (edged/tracker.py)."""

    min_iou: float = Field(0.3, gt=0, le=1, description="smallest box overlap that continues a track")
    max_missed_s: float = Field(
        1.0, ge=0, le=60, description="a track unseen for longer than this ends (its session closes)"
    )


@dataclass(frozen=True, slots=True)
class Track:
    """One face followed across frames (a snapshot; the tracker keeps the live state).

    ``index`` is the position of this frame's box in the ``boxes`` given to ``update`` (-1 for an ended
    track); ``first_seen``/``last_seen`` are monotonic seconds; ``hits`` counts the frames matched."""

    track_id: int
    box: Box
    index: int
    first_seen: float
    last_seen: float
    hits: int


class FaceTracker:
    """Stable track IDs for face boxes across frames (module doc). Not thread-safe: one worker calls it.

    ``update(boxes, now)`` returns the tracks seen in this frame, in the order of their boxes;
    ``ended`` then lists the tracks that ended during that call (timed out), so the decider can close
    their sessions. IDs are positive integers, increasing, never reused by one tracker."""

    def __init__(self, min_iou: float = 0.3, max_missed_s: float = 1.0) -> None:
        if not 0 < min_iou <= 1:
            raise BadArgument(f"min_iou must be in (0, 1], not {min_iou!r}")
        if not max_missed_s >= 0:
            raise BadArgument(f"max_missed_s must be ≥ 0, not {max_missed_s!r}")
        self.min_iou = min_iou
        self.max_missed_s = max_missed_s
        self._live: dict[int, Track] = {}
        self._ended: list[Track] = []
        self._ids = itertools.count(1)
        self._now: float | None = None

    @property
    def ended(self) -> list[Track]:
        """The tracks that ended during the latest ``update`` (or ``end_all``)."""
        return list(self._ended)

    @property
    def live(self) -> list[Track]:
        """Every live track (seen in this frame or missed for at most ``max_missed_s``)."""
        return list(self._live.values())

    def update(self, boxes: Sequence[Box], now: float) -> list[Track]:
        """Match this frame's face boxes to the live tracks at monotonic time ``now``."""
        if self._now is not None and now < self._now:
            raise BadArgument(f"time went backwards: {now} after {self._now} (use a monotonic clock)")
        self._now = now
        self._ended = [
            replace(t, index=-1) for t in self._live.values() if now - t.last_seen > self.max_missed_s
        ]
        for track in self._ended:
            del self._live[track.track_id]
        pairs = sorted(
            (-box.iou(track.box), track.track_id, i)
            for track in self._live.values()
            for i, box in enumerate(boxes)
        )
        assigned: dict[int, int] = {}  # box index → track ID
        used: set[int] = set()
        for negative_iou, track_id, i in pairs:
            if -negative_iou < self.min_iou:
                break
            if track_id in used or i in assigned:
                continue
            assigned[i] = track_id
            used.add(track_id)
        seen = []
        for i in range(len(boxes)):
            matched = assigned.get(i)
            if matched is None:
                track = Track(next(self._ids), boxes[i], i, now, now, 1)
            else:
                old = self._live[matched]
                track = Track(matched, boxes[i], i, old.first_seen, now, old.hits + 1)
            self._live[track.track_id] = track
            seen.append(track)
        for track_id, track in self._live.items():
            if track.last_seen < now:  # missed in this frame: no box of it in ``boxes``
                self._live[track_id] = replace(track, index=-1)
        return seen

    def end_all(self) -> list[Track]:
        """End every live track (shutdown, camera change); returns them (also in ``ended``)."""
        self._ended = [replace(t, index=-1) for t in self._live.values()]
        self._live.clear()
        return self.ended
