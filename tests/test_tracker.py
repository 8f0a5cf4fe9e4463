"""The IoU face tracker: stable IDs under jitter, greedy assignment, the timeout on the monotonic clock
(ended tracks reported once, new IDs afterwards); and the capture zone (``edged.door.zone``), which
the door worker applies per door to the tracked faces (tests/test_door_worker.py runs it on real
frames). Pure: no models, no camera."""

from __future__ import annotations

import pytest

from edged.door.zone import CaptureZone
from edged.errors import BadArgument
from edged.tracker import FaceTracker, Track
from edged.types import Box

FPS = 25.0
DT = 1 / FPS


def box(x: float, y: float, side: float = 100.0) -> Box:
    return Box(x, y, x + side, y + side)


def ids(tracks: list[Track]) -> list[int]:
    return [t.track_id for t in tracks]


@pytest.mark.parametrize(
    "jitter",
    [
        [(0, 0), (3, -2), (-2, 4), (5, 1), (1, -3), (-4, -4), (2, 2)],  # a few pixels of detector noise
        [(0, 0), (8, 0), (16, 0), (24, 0), (32, 0), (40, 0), (48, 0)],  # walking across: 8 px a frame
        [(0, 0), (0, 10), (0, 20), (0, 30), (0, 40), (0, 50), (0, 60)],  # approaching the camera
    ],
    ids=["noise", "walking", "approaching"],
)
def test_ids_are_stable_across_frames_with_jitter(jitter: list[tuple[int, int]]) -> None:
    tracker = FaceTracker()
    seen = []
    for i, (dx, dy) in enumerate(jitter):
        tracks = tracker.update([box(200 + dx, 100 + dy)], i * DT)
        assert tracker.ended == []
        seen += ids(tracks)
    assert seen == [1] * len(jitter)
    only = tracker.live[0]
    assert (only.hits, only.first_seen, only.last_seen) == (len(jitter), 0.0, (len(jitter) - 1) * DT)


def test_two_faces_keep_their_ids_whatever_the_box_order() -> None:
    tracker = FaceTracker()
    first = tracker.update([box(50, 100), box(400, 100)], 0.0)
    assert ids(first) == [1, 2]
    # the pipeline orders faces by size, so the order of boxes can change from frame to frame
    swapped = tracker.update([box(404, 98), box(52, 103)], DT)
    assert ids(swapped) == [2, 1]
    assert [t.index for t in swapped] == [0, 1], "index points into this frame's box list"


def test_greedy_assignment_prefers_the_highest_iou() -> None:
    tracker = FaceTracker(min_iou=0.1)
    tracker.update([box(100, 100)], 0.0)
    # both boxes overlap track 1; the closer one keeps the ID, the other starts a track
    tracks = tracker.update([box(150, 100), box(110, 100)], DT)
    assert [(t.track_id, t.index) for t in tracks] == [(2, 0), (1, 1)]


def test_a_jump_below_min_iou_starts_a_new_track_and_the_old_one_ends_after_the_timeout() -> None:
    tracker = FaceTracker(min_iou=0.3, max_missed_s=0.5)
    assert ids(tracker.update([box(100, 100)], 0.0)) == [1]
    assert ids(tracker.update([box(300, 100)], 0.1)) == [2]
    assert tracker.ended == []
    assert ids(tracker.update([box(302, 100)], 0.6)) == [2]
    assert ids(tracker.ended) == [1]
    assert tracker.ended[0].index == -1


@pytest.mark.parametrize(
    ("gap_s", "same_id"),
    [(0.2, True), (1.0, True), (1.01, False), (3.0, False)],
)
def test_timeout_on_the_monotonic_clock(gap_s: float, same_id: bool) -> None:
    tracker = FaceTracker(max_missed_s=1.0)
    for i in range(3):
        tracker.update([box(200, 100)], i * DT)
    last = 2 * DT
    for t in (last + 0.1, last + min(gap_s, 1.0) * 0.9):  # frames without the face: still live
        assert tracker.update([], t) == []
        assert tracker.ended == []
        assert [(tr.track_id, tr.index) for tr in tracker.live] == [(1, -1)]
    again = tracker.update([box(203, 101)], last + gap_s)
    if same_id:
        assert ids(again) == [1]
        assert tracker.ended == []
        assert again[0].hits == 4
    else:
        assert ids(again) == [2], "a face seen after the timeout gets a new ID"
        assert [(t.track_id, t.hits, t.last_seen) for t in tracker.ended] == [(1, 3, last)]
        tracker.update([box(203, 101)], last + gap_s + DT)
        assert tracker.ended == [], "an ended track is reported once"


def test_ended_is_reported_by_an_empty_frame_and_by_end_all() -> None:
    tracker = FaceTracker(max_missed_s=0.5)
    tracker.update([box(0, 0), box(300, 0)], 0.0)
    tracker.update([box(300, 0)], 0.4)
    assert ids(tracker.update([], 0.6)) == []
    assert ids(tracker.ended) == [1]
    assert ids(tracker.end_all()) == [2]
    assert tracker.live == []
    assert ids(tracker.update([box(300, 0)], 0.7)) == [3], "IDs are never reused"


# the zone is the left half of a 640×480 frame (pixels) or the same in fractions
ZONES = {
    "pixels": (CaptureZone(Box(0, 0, 320, 480)), None),
    "normalised": (CaptureZone(Box(0, 0, 0.5, 1.0), normalized=True), (640, 480)),
}


@pytest.mark.parametrize("kind", sorted(ZONES))
def test_capture_zone_ignores_faces_whose_centre_is_outside(kind: str) -> None:
    zone, frame_size = ZONES[kind]
    inside, straddling, outside = box(100, 100), box(250, 100), box(400, 100)  # centres 150, 300, 450
    boxes = [outside, inside, straddling]
    assert [i for i, b in enumerate(boxes) if zone.contains(b, frame_size)] == [1, 2]
    # the inside face walks out of the zone (centre 350): it is no longer in it; the other stays
    assert [zone.contains(b, frame_size) for b in (box(300, 100), box(250, 100))] == [False, True]
    assert not zone.contains(box(400, 100), frame_size)


def test_capture_zone_validation() -> None:
    with pytest.raises(BadArgument, match="empty"):
        CaptureZone(Box(10, 10, 5, 20))
    with pytest.raises(BadArgument, match=r"within 0\.\.1"):
        CaptureZone(Box(0, 0, 1.5, 1), normalized=True)
    zone = CaptureZone(Box(0, 0, 0.5, 0.5), normalized=True)
    with pytest.raises(BadArgument, match="frame size"):
        zone.contains(box(0, 0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"min_iou": 0.0}, "min_iou"), ({"min_iou": 1.5}, "min_iou"), ({"max_missed_s": -1.0}, "max_missed_s")],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(BadArgument, match=message):
        FaceTracker(**kwargs)  # type: ignore[arg-type]


def test_time_must_not_go_backwards() -> None:
    tracker = FaceTracker()
    tracker.update([box(0, 0)], 5.0)
    with pytest.raises(BadArgument, match="backwards"):
        tracker.update([box(0, 0)], 4.0)
