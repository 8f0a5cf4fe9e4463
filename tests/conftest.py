"""Shared fixtures: the real models (loaded once per session), the public-domain astronaut portrait
and frames without a face, an in-memory encoder, a runner for the ``edged`` command line, and an
encrypted directory store (a manual clock, a real key file, real SQLite files in ``tmp_path``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from edged.app import load_liveness_checker
from edged.clock import ManualClock
from edged.config import Config
from edged.directory import crypto
from edged.directory.store import Store
from edged.pipeline.fusion import LivenessChecker
from edged.pipeline.pipeline import FacePipeline, PipelineSettings
from edged.types import Box, Face, ImageRGB

pytest_plugins = ["mqtt_broker"]  # the test broker: broker, module_broker, persistent_broker, brokers


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    """The default pipeline: short-range detector, face mesh, int8 embedder."""
    return FacePipeline.load()


@pytest.fixture(scope="session")
def checker(pipeline: FacePipeline) -> LivenessChecker:
    """The liveness checker on the default pipeline: the anti-spoofing models, the iris model and
    the cues with the default thresholds (as the daemon's request API builds it)."""
    return load_liveness_checker(Config(), pipeline)


@pytest.fixture(scope="session")
def pipeline_full() -> FacePipeline:
    """The same pipeline with the full-range detector (faces farther from the camera)."""
    return FacePipeline.load(settings=PipelineSettings(detector="full"))


@pytest.fixture(scope="session")
def pipeline_float32() -> FacePipeline:
    """The same pipeline with the float32 reference embedder."""
    return FacePipeline.load(settings=PipelineSettings(embedder="float32"))


def _frozen(image: np.ndarray) -> ImageRGB:
    image = np.ascontiguousarray(image)
    image.setflags(write=False)
    return image


@pytest.fixture(scope="session")
def astronaut() -> ImageRGB:
    """scikit-image's public-domain astronaut portrait, 512×512 RGB, one face (read-only)."""
    return _frozen(data.astronaut())


@pytest.fixture(scope="session")
def astronaut_box() -> Box:
    """The astronaut's face box (x1, y1, x2, y2), as the short-range detector reports it, rounded."""
    return Box(178.0, 81.0, 272.0, 175.0)


@pytest.fixture(scope="session")
def no_face_images() -> dict[str, ImageRGB]:
    """Frames without a face: a coffee cup, a cat, a rocket, flat grey."""
    return {
        "coffee": _frozen(data.coffee()),
        "chelsea": _frozen(data.chelsea()),
        "rocket": _frozen(data.rocket()),
        "grey": _frozen(np.full((480, 640, 3), 128, np.uint8)),
    }


@pytest.fixture(scope="session")
def astronaut_face(pipeline: FacePipeline, astronaut: ImageRGB) -> Face:
    """The reference face of the original portrait, embedded."""
    faces = pipeline.faces(astronaut)
    assert len(faces) == 1, f"the astronaut portrait should have exactly one face, got {len(faces)}"
    assert faces[0].embedding is not None
    return faces[0]


def encode(image: ImageRGB, ext: str, *params: int) -> bytes:
    """RGB (or grey, or RGBA) array → encoded bytes, in memory."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, buffer = cv2.imencode(ext, image, list(params))
    assert ok, f"OpenCV could not encode {ext}"
    return buffer.tobytes()


@pytest.fixture(scope="session")
def encode_image() -> Callable[..., bytes]:
    """``encode_image(rgb, ".png")`` / ``encode_image(rgb, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 50)``."""
    return encode


RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def run_edged() -> RunEdged:
    """Run ``python -m edged ARGS`` as a subprocess; returns the completed process (text mode)."""

    def run(
        args: Sequence[str | os.PathLike[str]],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 180.0,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edged", *(str(a) for a in args)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


# -- the encrypted directory store ------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kek(tmp_path: Path) -> crypto.Kek:
    return crypto.create_key_file(tmp_path / "kek")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path, kek: crypto.Kek, clock: ManualClock) -> Iterator[Store]:
    opened = Store.open(state_dir, kek, clock)
    yield opened
    opened.close()
