"""The stats aggregation (edged/stats.py): intervals, fps, percentiles, bounded samples, counters,
thread safety, and the typed message of the stats topic (edged/mqtt/stats.py: its payload is JSON,
versioned, nothing biometric). A manual monotonic clock makes every time exact."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from edged.door.claims import ClaimCounts
from edged.mqtt.client import MqttStats
from edged.mqtt.outbox import OutboxStats
from edged.mqtt.stats import FrameCounts, GroupSize, StatsMessage
from edged.stats import STAGES, Interval, StatsCollector

FORBIDDEN_KEYS = {"image", "embedding", "template", "templates", "chip", "pixels", "card_id", "name"}


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def all_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(all_keys(v) for v in value.values()))
    return set()


def test_an_interval_counts_frames_and_its_fps() -> None:
    clock = Ticker()
    stats = StatsCollector(clock)
    for _ in range(25):
        stats.add_frame(0.006, 0.0001)
    clock.now += 2.5
    interval = stats.take()
    assert interval.frames == 25
    assert interval.seconds == pytest.approx(2.5)
    assert interval.fps == pytest.approx(10.0)
    assert interval.latency["detect"].n == 25 and interval.latency["decide"].n == 25
    assert interval.latency["embed"].n == 0 and interval.latency["embed"].p50_ms is None


def test_take_starts_a_new_interval() -> None:
    clock = Ticker()
    stats = StatsCollector(clock)
    stats.add_frame(0.01, 0.001, embed_s=[0.003], search_s=[0.0002, 0.0003])
    clock.now += 1.0
    first = stats.take()
    clock.now += 4.0
    second = stats.take()
    assert (first.frames, first.latency["search"].n) == (1, 2)
    assert (second.frames, second.seconds, second.fps) == (0, pytest.approx(4.0), 0.0)
    assert all(second.latency[stage].n == 0 for stage in STAGES)


def test_percentiles_are_numpys_in_milliseconds() -> None:
    rng = np.random.default_rng(7)
    samples = rng.uniform(0.001, 0.050, 333)
    stats = StatsCollector(Ticker())
    for s in samples:
        stats.add("embed", float(s))
    latency = stats.take().latency["embed"]
    assert latency.n == 333
    assert latency.p50_ms == pytest.approx(np.percentile(samples, 50) * 1000, abs=1e-3)
    assert latency.p95_ms == pytest.approx(np.percentile(samples, 95) * 1000, abs=1e-3)
    assert latency.max_ms == pytest.approx(samples.max() * 1000, abs=1e-3)


def test_one_sample_is_its_own_median_and_p95() -> None:
    stats = StatsCollector(Ticker())
    stats.add("frame_to_outbox", 0.0421)
    latency = stats.take().latency["frame_to_outbox"]
    assert (latency.n, latency.p50_ms, latency.p95_ms, latency.max_ms) == (1, 42.1, 42.1, 42.1)


def test_samples_beyond_the_cap_are_counted_not_kept() -> None:
    stats = StatsCollector(Ticker(), max_samples=10)
    for i in range(25):
        stats.add("search", 0.001 * (i + 1))
    latency = stats.take().latency["search"]
    assert latency.n == 25
    assert latency.max_ms == pytest.approx(10.0), "only the first 10 samples are kept"


def test_bad_stage_and_cap_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown stage 'dettect'"):
        StatsCollector().add("dettect", 0.1)
    with pytest.raises(ValueError, match="max_samples"):
        StatsCollector(max_samples=0)


def test_counters_are_cumulative_across_intervals() -> None:
    stats = StatsCollector(Ticker())
    stats.count("claims_accepted")
    stats.count("claims_rejected.bad_json", 2)
    stats.take()
    stats.count("claims_accepted")
    assert stats.counters() == {"claims_accepted": 2, "claims_rejected.bad_json": 2}


def test_concurrent_writers_and_a_reader_lose_nothing() -> None:
    stats = StatsCollector()
    writers, per_writer = 4, 2000
    taken: list[Interval] = []
    done = threading.Event()

    def write() -> None:
        for _ in range(per_writer):
            stats.add_frame(0.001, 0.001, embed_s=[0.002])

    def read() -> None:
        while not done.is_set():
            taken.append(stats.take())

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    taken.append(stats.take())
    assert sum(i.frames for i in taken) == writers * per_writer
    assert sum(i.latency["embed"].n for i in taken) == writers * per_writer


def test_uptime_runs_from_creation() -> None:
    clock = Ticker()
    stats = StatsCollector(clock)
    clock.now += 12.5
    assert stats.uptime() == pytest.approx(12.5)


def test_the_payload_is_versioned_json_without_biometric_data() -> None:
    clock = Ticker()
    stats = StatsCollector(clock)
    for _ in range(10):
        stats.add_frame(0.0065, 0.0002, embed_s=[0.004], search_s=[0.0001])
    stats.add("frame_to_outbox", 0.030)
    clock.now += 1.0
    payload = StatsMessage(
        device="pi-01",
        time=1_800_000_000.0,
        uptime_s=stats.uptime(),
        interval=stats.take(),
        frames=FrameCounts(processed_total=110, dropped_total=7, dropped_interval=2),
        decisions_total=3,
        directory={
            "staff": GroupSize(persons=4, faces=9),
            "night": GroupSize(persons=1, faces=2),
            "gone": GroupSize(None, None),
        },
        outbox=OutboxStats(depth=0, delivered=3, dropped_expired=0, dropped_overflow=0, rejected=0),
        mqtt=MqttStats(True, 1, 0, 0, None, 5, 0, 0),
        claims=ClaimCounts(accepted=1, rejected={"bad_json": 1}),
    ).to_payload()
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    assert payload["schema"] == 1 and payload["device"] == "pi-01"
    assert payload["frames"] == {
        "processed": 10,
        "fps": 10.0,
        "dropped": 2,
        "processed_total": 110,
        "dropped_total": 7,
    }
    assert set(payload["latency_ms"]) == set(STAGES)
    assert payload["latency_ms"]["detect"] == {"n": 10, "p50": 6.5, "p95": 6.5, "max": 6.5}
    assert payload["latency_ms"]["frame_to_outbox"]["p50"] == pytest.approx(30.0)
    assert (payload["directory"]["persons"], payload["directory"]["faces"]) == (5, 11)
    assert payload["outbox"]["delivered"] == 3 and payload["mqtt"]["connected"] is True
    assert not all_keys(payload) & FORBIDDEN_KEYS


def test_the_message_carries_every_part_and_empty_ones_as_null() -> None:
    stats = StatsCollector(Ticker())
    message = StatsMessage(
        device="pi-01",
        time=1_800_000_000.1234,
        uptime_s=5.0,
        interval=stats.take(),
        frames=FrameCounts(0, 0, 0),
        decisions_total=0,
        directory={"gone": GroupSize(None, None)},
        claims=ClaimCounts(),
    )
    payload = message.to_payload()
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    assert payload["time"] == 1_800_000_000.123
    assert payload["directory"] == {
        "persons": 0,
        "faces": 0,
        "groups": {"gone": {"persons": None, "faces": None}},
    }
    assert (payload["outbox"], payload["mqtt"], payload["camera"], payload["api"]) == (None, None, None, None)
    assert payload["face_ids"] is None
    assert payload["claims"] == {"accepted": 0, "rejected": {}, "waiting": 0}
    assert payload["frames"]["fps"] == 0.0 and payload["latency_ms"]["detect"]["p50"] is None
