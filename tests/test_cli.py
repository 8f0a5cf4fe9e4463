"""The ``edged`` command line, run as ``python -m edged`` subprocesses: output contracts of detect,
verify, demo and bench accuracy, and the one-line error for every kind of bad input.

Each start costs about a second, so the cases are few and each checks several things."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edged import __version__
from edged.inference.manifest import Manifest
from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.verify import verify
from edged.types import Box, Face, ImageRGB

REPO = Path(__file__).resolve().parents[1]
RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]
Encode = Callable[..., bytes]


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The error contract: non-zero exit, nothing on stdout, exactly one ``edged: …`` line on stderr."""
    lines = result.stderr.splitlines()
    report = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode != 0, report
    assert result.stdout == "", report
    assert len(lines) == 1, f"want exactly one line on stderr\n{report}"
    assert lines[0].startswith("edged: "), report
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing\n{report}"
    return lines[0]


def last_json_line(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def images(
    tmp_path_factory: pytest.TempPathFactory, astronaut: ImageRGB, encode_image: Encode
) -> dict[str, Path]:
    """Test images written once for this module (tests may write to tmp; the product may not)."""
    folder = tmp_path_factory.mktemp("cli-images")
    head = astronaut[20:250, 110:340]
    small = cv2.resize(head, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    two = np.full((230, 230 + 20 + small.shape[1], 3), 90, np.uint8)
    two[:, :230] = head
    two[20 : 20 + small.shape[0], 250 : 250 + small.shape[1]] = small
    shifted = cv2.warpAffine(astronaut, np.array([[1.0, 0, 40], [0, 1.0, 25]]), (512, 512))
    blobs = {
        "astronaut.png": encode_image(astronaut, ".png"),
        "mirrored.jpg": encode_image(
            np.ascontiguousarray(astronaut[:, ::-1]), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 85
        ),
        "shifted.png": encode_image(shifted, ".png"),
        "two_faces.png": encode_image(two, ".png"),
        "grey.png": encode_image(np.full((300, 400, 3), 128, np.uint8), ".png"),
    }
    paths = {}
    for name, blob in blobs.items():
        paths[name] = folder / name
        paths[name].write_bytes(blob)
    return paths


def test_version(run_edged: RunEdged) -> None:
    result = run_edged(["--version"])
    assert result.returncode == 0, result.stderr
    # the package first; then the models and the runtimes (tests/test_cli_entry.py)
    assert result.stdout.splitlines()[0] == f"edged {__version__}"


def test_detect_json_contract(run_edged: RunEdged, images: dict[str, Path], astronaut_box: Box) -> None:
    result = run_edged(["detect", images["astronaut.png"], "--json"])
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) == {"faces"}
    (face,) = payload["faces"]
    assert set(face) >= {"box", "score", "keypoints", "quality"}
    assert len(face["box"]) == 4
    assert Box(*face["box"]).iou(astronaut_box) > 0.9, face["box"]
    assert 0.5 <= face["score"] <= 1.0
    assert len(face["keypoints"]) == 6
    assert all(len(point) == 2 and all(isinstance(v, float) for v in point) for point in face["keypoints"])
    quality = face["quality"]
    assert quality["ok"] is True and quality["reasons"] == []
    assert {"face_px", "sharpness", "brightness", "yaw", "pitch", "roll"} <= set(quality)


def test_detect_without_a_face_reports_none(run_edged: RunEdged, images: dict[str, Path]) -> None:
    result = run_edged(["detect", images["grey.png"], "--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"faces": []}


def test_verify_json_contract(run_edged: RunEdged, images: dict[str, Path], pipeline: FacePipeline) -> None:
    result = run_edged(["verify", images["astronaut.png"], images["mirrored.jpg"], "--json"])
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert {"isIdentical", "confidence", "distance", "threshold"} <= set(payload)
    assert payload["isIdentical"] is True
    assert 0.5 < payload["confidence"] <= 1.0
    assert 0 < payload["distance"] <= payload["threshold"]
    assert pipeline.calibration is not None
    assert payload["threshold"] == pytest.approx(pipeline.calibration.default_threshold, abs=1e-4)


@pytest.mark.parametrize("far", ["1e-3", "1e-2"])
def test_verify_far_selects_the_calibrated_threshold(
    run_edged: RunEdged, images: dict[str, Path], pipeline: FacePipeline, far: str
) -> None:
    result = run_edged(["verify", images["astronaut.png"], images["shifted.png"], "--far", far, "--json"])
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert pipeline.calibration is not None
    assert payload["threshold"] == pytest.approx(pipeline.calibration.threshold_for(float(far)), abs=1e-4)
    assert payload["far"] == float(far)


def test_verify_with_two_faces_warns_and_uses_the_largest(
    run_edged: RunEdged, images: dict[str, Path], pipeline: FacePipeline, astronaut_face: Face
) -> None:
    faces = pipeline.faces(cv2.cvtColor(cv2.imread(str(images["two_faces.png"])), cv2.COLOR_BGR2RGB))
    assert len(faces) == 2
    assert astronaut_face.embedding is not None and faces[0].embedding is not None
    assert faces[1].embedding is not None
    large = verify(astronaut_face.embedding, faces[0].embedding, pipeline.calibration).distance
    small = verify(astronaut_face.embedding, faces[1].embedding, pipeline.calibration).distance
    assert abs(large - small) > 0.02, "the two faces must be told apart by their distances"

    result = run_edged(["verify", images["astronaut.png"], images["two_faces.png"], "--json"])
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("edged: warning:")]
    assert len(warnings) == 1, result.stderr
    assert str(images["two_faces.png"]) in warnings[0] and "2 faces" in warnings[0]
    payload = json.loads(result.stdout)
    assert payload["distance"] == pytest.approx(large, abs=2e-4), f"largest {large:.4f}, smaller {small:.4f}"


def test_verify_without_a_face_fails(run_edged: RunEdged, images: dict[str, Path]) -> None:
    result = run_edged(["verify", images["astronaut.png"], images["grey.png"]])
    assert_one_error_line(result, "NoFaceDetected", str(images["grey.png"]))


def test_demo_prints_verifications(run_edged: RunEdged) -> None:
    result = run_edged(["demo", "--pipeline-only"])
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "verify against" in line]
    assert len(lines) >= 2, result.stdout
    for line in lines:
        verdict = json.loads(line.split(": ", 1)[1])
        assert verdict["isIdentical"] is True, line


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr naming the file, nothing on stdout


def make_bad_file(kind: str, folder: Path, astronaut: ImageRGB, encode_image: Encode) -> Path:
    jpeg = encode_image(astronaut, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    png = encode_image(astronaut, ".png")
    path = folder / {"directory": "a-folder.jpg", "missing": "missing.jpg", "text": "notes.txt"}.get(
        kind, f"{kind}.img"
    )
    if kind == "directory":
        path.mkdir()
    elif kind == "corrupt":
        blob = bytearray(png)
        blob[200:20000] = bytes(19800)
        path.write_bytes(bytes(blob))
    elif kind == "truncated-jpeg":
        path.write_bytes(jpeg[: len(jpeg) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "huge-dimensions":
        blob = bytearray(png)
        blob[16:24] = struct.pack(">II", 100_000, 100_000)
        path.write_bytes(bytes(blob))
    elif kind == "over-6-MB":
        path.write_bytes(jpeg + bytes(6 * 1024 * 1024 + 1 - len(jpeg)))
    elif kind == "20x20":
        path.write_bytes(encode_image(cv2.resize(astronaut, (20, 20), interpolation=cv2.INTER_AREA), ".png"))
    elif kind == "text":
        path.write_text("this is not an image\n", encoding="utf-8")
    return path


BAD_FILES = {
    "corrupt": "InvalidImage",
    "truncated-jpeg": "InvalidImage",
    "empty": "InvalidImage",
    "directory": "InvalidImage",
    "missing": "InvalidImage",
    "huge-dimensions": "InvalidImageSize",
    "over-6-MB": "InvalidImageSize",
    "20x20": "InvalidImageSize",
    "text": "InvalidImage",
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_detect_bad_input_fails_with_one_line(
    run_edged: RunEdged, tmp_path: Path, astronaut: ImageRGB, encode_image: Encode, kind: str
) -> None:
    path = make_bad_file(kind, tmp_path, astronaut, encode_image)
    result = run_edged(["detect", path, "--json"])
    assert_one_error_line(result, f"edged: {BAD_FILES[kind]}: ", str(path))


def test_verify_names_the_bad_image(
    run_edged: RunEdged, tmp_path: Path, images: dict[str, Path], astronaut: ImageRGB, encode_image: Encode
) -> None:
    path = make_bad_file("truncated-jpeg", tmp_path, astronaut, encode_image)
    result = run_edged(["verify", images["astronaut.png"], path])
    line = assert_one_error_line(result, "InvalidImage", str(path))
    assert str(images["astronaut.png"]) not in line


def test_a_damaged_model_stops_the_cli_with_one_line(run_edged: RunEdged, tmp_path: Path) -> None:
    model_dir = Path(shutil.copytree(REPO / "models", tmp_path / "models"))
    target = Manifest.load(model_dir).entry("face_embedder").path
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))
    result = run_edged(["--model-dir", model_dir, "demo"])
    assert_one_error_line(result, "edged: ModelIntegrity: ", target.name)


# ---------------------------------------------------------------------------------------------
# bench accuracy


def test_bench_accuracy_json_counts_faceless_images_as_failures(
    *,
    run_edged: RunEdged,
    tmp_path: Path,
    images: dict[str, Path],
    pipeline: FacePipeline,
    encode_image: Encode,
    no_face_images: dict[str, ImageRGB],
) -> None:
    root = tmp_path / "set"
    root.mkdir()
    for name in ("astronaut.png", "mirrored.jpg", "shifted.png", "grey.png"):
        shutil.copyfile(images[name], root / name)
    (root / "cup.png").write_bytes(encode_image(no_face_images["coffee"], ".png"))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "image_a,image_b,same_person\n"
        "astronaut.png,mirrored.jpg,1\n"
        "astronaut.png,shifted.png,1\n"
        "astronaut.png,cup.png,0\n"  # no face: a failure, rightly a non-match
        "mirrored.jpg,grey.png,1\n",  # no face: a failure, wrongly a non-match
        encoding="utf-8",
    )
    result = run_edged(["bench", "accuracy", "--pairs", pairs, "--root", root, "--json"])
    assert result.returncode == 0, result.stderr
    report = last_json_line(result.stdout)
    assert set(report) >= {
        "pairs",
        "failures",
        "accuracy",
        "accuracy_std",
        "auc",
        "eer",
        "tar_at_far",
        "threshold",
    }
    assert set(report["tar_at_far"]) == {"1e-3", "1e-4"}
    assert report["pairs"] == 4, "pairs with a faceless image must not be dropped"
    assert report["failures"] == 2
    assert report["accuracy"] == pytest.approx(0.75)
    assert report["accuracy_std"] == 0.0
    assert pipeline.calibration is not None
    assert report["threshold"] == pytest.approx(pipeline.calibration.default_threshold, abs=1e-4)
    # genuine (d, d, inf) vs impostor (inf): two genuine pairs ranked first, the failures tie
    assert report["auc"] == pytest.approx(2.5 / 3, abs=1e-4)
    for far, tar in report["tar_at_far"].items():
        assert tar == pytest.approx(2 / 3, abs=1e-4), (
            f"TAR@FAR {far} = {tar}: the faceless genuine pair matched"
        )
    # nothing was written next to the images
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["astronaut.png", "mirrored.jpg", "shifted.png", "grey.png", "cup.png"]
    )
