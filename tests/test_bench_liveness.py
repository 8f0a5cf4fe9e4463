"""``edged bench liveness`` on a tiny run (``--limit 1``, short sequences): the real pipeline, the
real anti-spoofing models and the real fusion; its decisions are ``LivenessChecker.assess``'s, its
rates count as ISO/IEC 30107-3 does, and ``--record`` writes the section with the machine line and
what the synthetic attacks do not cover."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from edged.pipeline.antispoof import AntiSpoof
from edged.pipeline.fusion import LivenessChecker, LivenessSettings
from edged.pipeline.liveness import Cue, LivenessDecision
from edged.pipeline.pipeline import FacePipeline
from edged.types import Face, ImageRGB
from edged_bench.attacks import head_turn, portrait, print_attack
from edged_bench.liveness import (
    CALIBRATION_COUNT,
    CATEGORIES,
    Category,
    Outcome,
    Presentation,
    cue_decision,
    judge,
    lfw_paths,
    tally,
    targets,
)

RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]
SAMPLES = Path(__file__).resolve().parents[1] / "../shared/models-src/silent-face/sample"


@pytest.fixture(scope="module")
def model() -> AntiSpoof:
    return AntiSpoof.load()


@pytest.mark.parametrize(
    ("verdicts", "decision"),
    [
        ((), "uncertain"),
        (("none", "none"), "uncertain"),
        (("real", "none"), "realface"),
        (("real", "spoof"), "spoofface"),
        (("none", "spoof"), "spoofface"),
    ],
)
def test_the_cues_alone_decide_spoof_first_then_real(
    verdicts: tuple[str, ...], decision: LivenessDecision
) -> None:
    cues = [Cue(f"cue{i}", 0.0, 0.5, v) for i, v in enumerate(verdicts)]  # type: ignore[arg-type]
    assert cue_decision(cues) == decision


def test_attacks_count_when_accepted_bona_fide_when_not_accepted() -> None:
    attack = Category("a", "attack", True, False, 1)
    bona_fide = Category("b", "bona fide", False, False, 1)
    outcomes = [
        Outcome("a", "1", ("realface", "uncertain", "spoofface"), 0.9, None),
        Outcome("a", "2", ("uncertain", "uncertain", "realface"), 0.5, None),
        Outcome("a", "3", None, None, None),  # no face: outside the rate
        Outcome("b", "1", ("realface", "uncertain", "realface"), 0.9, None),
        Outcome("b", "2", ("spoofface", "uncertain", "uncertain"), 0.1, None),
    ]
    a, b = tally(attack, outcomes), tally(bona_fide, outcomes)
    assert (a.judged, a.no_face, a.errors) == (2, 1, (1, 0, 1))
    assert a.fusion == {"realface": 1, "uncertain": 0, "spoofface": 1}
    assert (b.judged, b.no_face, b.errors) == (2, 0, (1, 2, 1))
    assert b.rate(1) == 1.0


def test_the_targets_show_bona_fide_stills_the_quality_gate_refused_apart() -> None:
    stills = Category("lfw_still", "LFW stills", False, False, 4)
    refused = ("uncertain", "uncertain", "uncertain")
    outcomes = [
        Outcome("lfw_still", "1", ("realface", "uncertain", "realface"), 0.95, None),
        Outcome("lfw_still", "2", ("uncertain", "uncertain", "uncertain"), 0.6, None),
        Outcome("lfw_still", "3", refused, None, None, refused=True),
        Outcome("lfw_still", "4", refused, None, None, refused=True),
    ]
    line = next(t for t in targets([tally(stills, outcomes)]) if "stills" in t)
    # the refused ones stay in the rate (3/4); over the 2 acquired, 1 was not realface
    assert "75.0 % (3/4)" in line and "NOT met" in line
    assert "2 of them with every frame refused by the quality gate" in line
    assert "over the 2 acquired: 50.0 %" in line


def test_the_bench_decides_as_the_liveness_checker(
    pipeline: FacePipeline, model: AntiSpoof, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    settings = LivenessSettings()
    checker = LivenessChecker(pipeline, model, settings)
    assert astronaut_face.mesh is not None
    photo = portrait(astronaut, astronaut_face.detection.box)
    for name, frames in (
        ("print", print_attack(photo, 3, frames=5)),
        ("turn", head_turn(astronaut, astronaut_face.mesh.points, 3, frames=5)),
        ("still", [astronaut]),
    ):
        outcome = judge(checker, settings, Presentation("x", name, frames))
        assert outcome.decisions is not None
        assert outcome.decisions[2] == checker.assess(frames).decision, name
        assert outcome.decisions[0] == checker.assess(frames[:1]).decision or len(frames) > 1


def test_a_presentation_without_a_face_is_not_judged(
    pipeline: FacePipeline, model: AntiSpoof, no_face_images: dict[str, ImageRGB]
) -> None:
    settings = LivenessSettings()
    checker = LivenessChecker(pipeline, model, settings)
    outcome = judge(checker, settings, Presentation("x", "cup", [no_face_images["coffee"]]))
    assert outcome.decisions is None


def write_set(root: Path) -> Path:
    """A two-image stand-in for lfw-dev: the astronaut and the cameraman."""
    rows = ["image,identity"]
    for name, image in (("astronaut", data.astronaut()), ("cameraman", np.stack([data.camera()] * 3, -1))):
        (root / "images" / name).mkdir(parents=True)
        path = f"images/{name}/{name}_0001.png"
        assert cv2.imwrite(str(root / path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rows.append(f"{path},{name}")
    (root / "identities.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_bench_liveness_tiny_run_reports_and_records(run_edged: RunEdged, tmp_path: Path) -> None:
    lfw = write_set(tmp_path / "lfw")
    record = tmp_path / "BENCHMARKS.md"
    samples = SAMPLES if SAMPLES.is_dir() else tmp_path / "no-samples"
    result = run_edged(
        [
            "bench",
            "liveness",
            "--limit",
            "1",
            "--frames",
            "4",
            "--lfw",
            lfw,
            "--dev",
            tmp_path / "no-dev",
            "--samples",
            samples,
            "--json",
            "--record",
            record,
        ],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    keys = {c.key for c in CATEGORIES}
    assert set(report) <= keys
    for key in ("print_still", "print_sequence", "screen_still", "screen_sequence", "lfw_still", "head_turn"):
        entry = report[key]
        assert entry["judged"] + entry["no_face"] == 1, key
        assert entry["measure"] == ("BPCER" if key in ("lfw_still", "head_turn") else "APCER")
        assert set(entry["errors"]) == {"model", "cues", "fusion"}
        assert sum(entry["fusion_decisions"].values()) == entry["judged"]
    # a still has no motion: the cues alone never accept it
    assert report["lfw_still"]["cues"] in (1.0, None)
    assert report["print_still"]["cues"] in (0.0, None)
    if SAMPLES.is_dir():
        assert {"sample_f1", "sample_f2", "sample_t1"} <= set(report)
    assert "the dev set not found" in result.stderr
    text = record.read_text(encoding="utf-8")
    assert "<!-- bench:liveness -->" in text and "<!-- /bench:liveness -->" in text
    assert "Run " in text and " on: " in text and "cores" in text  # the machine line
    assert "APCER" in text and "BPCER" in text and "masks" in text and "video replays" in text
    assert f"Reproduce: `edged bench liveness --limit 1 --frames 4 --seed 0 --lfw {lfw}" in text


LFW_DEV = Path(__file__).resolve().parents[1] / "../shared/faces/lfw-dev"


@pytest.mark.skipif(not (LFW_DEV / "identities.csv").is_file(), reason="../shared/faces/lfw-dev is absent")
def test_no_presentation_is_built_from_an_image_the_int8_models_were_calibrated_on() -> None:
    # tools/build_liveness.py's rule: faces of every (n // count)-th image of the sorted lfw-dev images
    images = sorted(p for p in LFW_DEV.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    calibration = set(images[:: len(images) // CALIBRATION_COUNT])
    held_out = lfw_paths(LFW_DEV)
    assert held_out and not calibration & set(held_out)
    assert len(held_out) >= len(images) - len(calibration)
