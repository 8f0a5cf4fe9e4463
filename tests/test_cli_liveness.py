"""``edged liveness`` as a user runs it (a subprocess, the real models): one image → the model cue
alone; several images or ``--video`` → every cue; the JSON result, the exit code of each decision,
the errors; the sample images beside the anti-spoofing weights (skipped when absent); and nothing
written anywhere."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import RunEdged
from test_privacy import files_under

from edged.cli_liveness import EXIT_CODES, video_frames
from edged.service.liveness import INTERVAL_RANGE
from edged.types import ImageRGB

SAMPLES = Path("/work/shared/models-src/silent-face/sample")
KEYS = {"livenessDecision", "score", "cues", "decidedBy", "frames"}


def shifted(image: ImageRGB, dx: int) -> ImageRGB:
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, 0.0]])
    return np.ascontiguousarray(cv2.warpAffine(image, matrix, (512, 512), borderMode=cv2.BORDER_REPLICATE))


@pytest.fixture
def frames(tmp_path: Path, astronaut: ImageRGB, encode_image: Callable[..., bytes]) -> list[Path]:
    paths = []
    for i, dx in enumerate((0, 5, 10, 15)):
        path = tmp_path / f"f{i}.png"
        path.write_bytes(encode_image(shifted(astronaut, dx), ".png"))
        paths.append(path)
    return paths


def result_of(completed: object) -> dict[str, object]:
    stdout = completed.stdout  # type: ignore[attr-defined]
    out: dict[str, object] = json.loads(stdout)
    assert set(out) == KEYS, out
    assert completed.returncode == EXIT_CODES[str(out["livenessDecision"])], completed  # type: ignore[attr-defined]
    return out


def test_one_image_is_the_model_cue_alone(run_edged: RunEdged, frames: list[Path]) -> None:
    out = result_of(run_edged(["liveness", frames[0], "--json"]))
    assert out["frames"] == 1
    assert [c["name"] for c in out["cues"]] == ["model"]  # type: ignore[attr-defined]
    assert 0.0 <= float(out["score"]) <= 1.0  # type: ignore[arg-type]


def test_several_images_and_a_video_use_every_cue(
    run_edged: RunEdged, frames: list[Path], tmp_path: Path, astronaut: ImageRGB
) -> None:
    out = result_of(run_edged(["liveness", *frames, "--interval", "0.2", "--json"]))
    assert out["frames"] == 4
    names = {c["name"] for c in out["cues"]}  # type: ignore[attr-defined]
    assert "model" in names and len(names) > 1, names
    video = tmp_path / "approach.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (512, 512))
    for dx in range(0, 40, 2):
        writer.write(cv2.cvtColor(shifted(astronaut, dx), cv2.COLOR_RGB2BGR))
    writer.release()
    out = result_of(run_edged(["liveness", "--video", video, "--json"]))
    assert out["frames"] == 20
    text = run_edged(["liveness", "--video", video])
    assert text.stdout.startswith(f"{video}: {out['livenessDecision']} (score"), text.stdout


def test_errors_name_what_is_wrong(
    run_edged: RunEdged,
    frames: list[Path],
    tmp_path: Path,
    no_face_images: dict[str, ImageRGB],
    encode_image: Callable[..., bytes],
) -> None:
    neither = run_edged(["liveness"])
    assert neither.returncode == 2 and "IMAGE … or --video" in neither.stderr
    both = run_edged(["liveness", frames[0], "--video", frames[1]])
    assert both.returncode == 2
    empty = tmp_path / "cup.png"
    empty.write_bytes(encode_image(no_face_images["coffee"], ".png"))
    no_face = run_edged(["liveness", empty])
    assert no_face.returncode == 5 and "NoFaceDetected" in no_face.stderr
    not_a_video = run_edged(["liveness", "--video", tmp_path / "missing.mp4"])
    assert not_a_video.returncode == 4 and "InvalidImage" in not_a_video.stderr


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} is not here")
def test_the_sample_images_beside_the_weights(run_edged: RunEdged) -> None:
    """Upstream's samples: ``image_F*`` are presentation attacks, ``image_T1`` a live face."""
    decisions = {}
    for path in sorted(SAMPLES.glob("image_*.jpg")):
        decisions[path.name] = result_of(run_edged(["liveness", path, "--json"]))["livenessDecision"]
    assert decisions, "no sample images"
    attacks = {name: d for name, d in decisions.items() if name.startswith("image_F")}
    assert attacks and all(d != "realface" for d in attacks.values()), decisions
    assert decisions.get("image_T1.jpg", "realface") == "realface", decisions


def test_nothing_is_written_anywhere(run_edged: RunEdged, frames: list[Path], tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("cwd", "home", "tmp")}
    for folder in dirs.values():
        folder.mkdir()
    env = {**os.environ, "HOME": str(dirs["home"]), "TMPDIR": str(dirs["tmp"]), "TMP": str(dirs["tmp"])}
    env.pop("XDG_CACHE_HOME", None)
    before = files_under(tmp_path)
    result_of(run_edged(["liveness", *frames, "--json"], cwd=dirs["cwd"], env=env))
    assert files_under(tmp_path) == before


def write_video(path: Path, frames: list[ImageRGB], fps: float) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_a_video_must_be_a_regular_file(run_edged: RunEdged, tmp_path: Path) -> None:
    """A FIFO (OpenCV would block on it), a device or a URL is never handed to the video decoder."""
    fifo = tmp_path / "approach.mp4"
    os.mkfifo(fifo)
    for source in (fifo, Path("/dev/zero"), tmp_path):
        refused = run_edged(["liveness", "--video", source], timeout=60)
        assert refused.returncode == 4 and "not a regular file" in refused.stderr, refused.stderr
    url = run_edged(["liveness", "--video", "http://127.0.0.1:9/approach.mp4"], timeout=60)
    assert url.returncode == 4 and "No such file" in url.stderr, url.stderr


def test_a_videos_frame_size_is_capped_like_an_image(
    run_edged: RunEdged, tmp_path: Path, astronaut: ImageRGB
) -> None:
    video = write_video(tmp_path / "big.avi", [shifted(astronaut, dx) for dx in range(0, 8, 2)], 10.0)
    refused = run_edged(["--max-pixels", "100000", "liveness", "--video", video], timeout=60)
    assert refused.returncode == 4 and "InvalidImageSize" in refused.stderr, refused.stderr
    assert "512×512" in refused.stderr and "100,000" in refused.stderr, refused.stderr


def test_the_interval_from_a_videos_frame_rate_stays_in_the_allowed_range(
    tmp_path: Path, astronaut: ImageRGB
) -> None:
    small = np.ascontiguousarray(cv2.resize(astronaut, (128, 128)))
    slow = write_video(tmp_path / "slow.avi", [small] * 100, 1.0)  # every 4th frame: 4 s apart
    frames, interval = video_frames(slow, None)
    assert len(frames) == 25 and interval == INTERVAL_RANGE[1]
    fast = write_video(tmp_path / "fast.avi", [small] * 10, 1000.0)  # 1 ms apart
    frames, interval = video_frames(fast, None)
    assert len(frames) == 10 and interval == INTERVAL_RANGE[0]
    frames, interval = video_frames(fast, 0.5)  # --interval, as given
    assert interval == 0.5
