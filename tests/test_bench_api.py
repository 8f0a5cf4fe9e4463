"""``edged bench api`` in miniature: the real request server, FaceService, models, directory and a
real Mosquitto, a few requests per measurement. It checks the shape and sense of what the benchmark
reports (counts, every reply ok, positive rates, p50 ≤ p95), never its speed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged.config import Config
from edged.pipeline.pipeline import FacePipeline
from edged_bench.api import KINDS, PROTOCOLS, ApiBenchResult, bench_api, table
from edged_bench.broker import find_mosquitto

RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

REQUESTS = 5
CLIENTS = 2


def check_summary(summary: dict[str, Any] | None, n: int) -> None:
    assert summary is not None
    assert summary["n"] == n
    assert 0 < summary["p50_ms"] <= summary["p95_ms"]
    assert summary["mean_ms"] > 0


@pytest.fixture(scope="module")
def result(pipeline: FacePipeline) -> ApiBenchResult:
    return bench_api(pipeline, Config(), seconds=None, requests=REQUESTS, clients=CLIENTS, progress=False)


def test_every_reference_ran_the_asked_number_of_calls(result: ApiBenchResult) -> None:
    assert set(result.references) == set(KINDS)
    for ref in result.references.values():
        assert ref.calls == REQUESTS and len(ref.times_ms) == REQUESTS
        assert ref.seconds > 0 and ref.rate > 0
        check_summary(ref.as_json()["latency"], REQUESTS)
    for part in ("sign", "check"):
        check_summary(result.signature_ms[part], REQUESTS)


def test_every_cell_sent_its_requests_and_every_reply_was_ok(result: ApiBenchResult) -> None:
    plain = [c for c in result.cells if not c.nodelay_by_hand]
    assert sorted((c.kind, c.protocol, c.clients) for c in plain) == sorted(
        (k, p, n) for k in KINDS for p in PROTOCOLS for n in (1, CLIENTS)
    )
    by_hand = [c for c in result.cells if c.nodelay_by_hand]
    if result.setup["client_nodelay"]:
        assert by_hand == [], "no TCP_NODELAY-by-hand runs when the client sets it itself"
    else:
        assert sorted((c.kind, c.protocol, c.clients) for c in by_hand) == sorted(
            (k, "5", n) for k in KINDS for n in (1, CLIENTS)
        )
    for cell in result.cells:
        where = (cell.kind, cell.protocol, cell.clients, cell.nodelay_by_hand)
        assert cell.not_ok == 0 and cell.errors == [], (where, cell.errors)
        assert cell.requests == REQUESTS and len(cell.latencies_ms) == REQUESTS, where
        assert cell.seconds > 0 and cell.rate > 0, where
        check_summary(cell.latency(), REQUESTS)
        # every request the server handled in this cell was timed (the warm-up ones too)
        assert len(cell.server_ms) >= REQUESTS, where
        ratio = result.ratio(cell)
        assert ratio is not None and ratio > 0, where
        if cell.clients == 1:
            assert result.overhead_ms(cell.kind, cell.protocol, cell.nodelay_by_hand) is not None
    setup = result.setup
    assert setup["failed"] == 0 and setup["busy"] == 0
    assert setup["served"] >= sum(c.requests for c in result.cells) + 2  # + the two setup detects
    assert setup["jpeg_bytes"] > 0 and setup["client_process"] is True


def test_the_table_and_the_json_hold_every_cell(result: ApiBenchResult) -> None:
    text = table(result)
    lines = text.splitlines()
    rows = lines[2:]
    by_hand = 0 if result.setup["client_nodelay"] else len(KINDS)
    assert len(rows) == len(KINDS) * len(PROTOCOLS) + by_hand
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert f"{CLIENTS} clients: req/s" in lines[0]
    data = json.loads(json.dumps(result.as_json()))
    assert len(data["cells"]) == len(result.cells)
    assert all(c["ratio_to_in_process"] > 0 for c in data["cells"])
    assert all("overhead_ms" in c for c in data["cells"] if c["clients"] == 1)


def test_the_command_prints_json_and_records_a_section(run_edged: RunEdged, tmp_path: Path) -> None:
    record = tmp_path / "BENCHMARKS.md"
    result = run_edged(["bench", "api", "--requests", "3", "--clients", "2", "--json", "--record", record])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.splitlines()[-1])
    assert {c["kind"] for c in data["cells"]} == set(KINDS)
    assert all(c["requests"] == 3 and c["not_ok"] == 0 for c in data["cells"])
    text = record.read_text()
    assert "<!-- bench:api -->" in text and "<!-- /bench:api -->" in text
    assert "Reproduce: `edged bench api --requests 3 --clients 2`" in text
    assert "| verify face ↔ face | " in text
