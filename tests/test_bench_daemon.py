"""``edged bench daemon`` in miniature: the real App, models, directory and a real Mosquitto, for about
a second per run. It checks the shape and sense of what the benchmark reports, never its speed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from edged.config import Config
from edged.pipeline.pipeline import FacePipeline
from edged_bench.broker import find_mosquitto
from edged_bench.daemon import bench_daemon, scene_frames

RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


def test_the_scenes_hold_one_and_three_faces_that_pass_the_gate(pipeline: FacePipeline) -> None:
    for faces in (1, 3):
        frames = scene_frames(faces, count=4)
        assert all(frame.shape == (480, 640, 3) for frame in frames)
        assert frames[0].tobytes() != frames[1].tobytes(), "the heads sway from frame to frame"
        for frame in frames:
            found = pipeline.faces(frame, embed=False)
            assert len(found) == faces and all(face.quality.ok for face in found)


def test_a_short_run_reports_sane_counts_and_latencies(pipeline: FacePipeline) -> None:
    results = bench_daemon(
        pipeline, Config(), faces=(1, 3), duration_s=1.0, latency_decisions=3, warmup_s=0.5
    )
    assert [r.faces for r in results] == [1, 3]
    for r in results:
        t = r.throughput
        assert t.seconds >= 1.0 and t.frames > 0 and t.fps > 0
        assert t.received >= t.frames and t.dropped >= 0
        embedded = t.stages_ms["embed"]["n"] or 0
        assert abs(embedded / t.frames - r.faces) < 0.25, "every face is embedded in every frame"
        lat = r.latency
        assert lat.source_fps == 15.0 and lat.missing_captured_at == 0
        assert len(lat.latencies_ms) >= 3 and lat.decisions >= 3
        assert all(0 < ms < 10_000 for ms in lat.latencies_ms), lat.latencies_ms
        summary = lat.latency()
        assert summary is not None
        assert summary["median_ms"] <= summary["p95_ms"] <= summary["max_ms"]


def test_the_command_prints_json_and_records_a_section(run_edged: RunEdged, tmp_path: Path) -> None:
    record = tmp_path / "BENCHMARKS.md"
    result = run_edged(
        [
            "bench",
            "daemon",
            "--faces",
            "1",
            "--duration",
            "1",
            "--latency-decisions",
            "2",
            "--json",
            "--record",
            record,
        ]
    )
    assert result.returncode == 0, result.stderr
    (layout,) = json.loads(result.stdout.splitlines()[-1])
    assert layout["faces"] == 1
    assert layout["throughput"]["frames"] > 0 and layout["throughput"]["fps"] > 0
    assert layout["latency"]["latency"]["n"] >= 2
    text = record.read_text()
    assert "<!-- bench:daemon -->" in text and "Reproduce: `edged bench daemon --faces 1" in text
    assert "| 1 |" in text
