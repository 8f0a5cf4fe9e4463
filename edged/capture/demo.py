"""The built-in demo camera: a door scene rendered from two public-domain photographs that ship
inside scikit-image, so the daemon runs on a fresh machine with no camera and no data.

The scene repeats a fixed schedule (at the source's frame rate; at 10 fps when unpaced):

    astronaut  4 s   the astronaut portrait (Eileen Collins, NASA) walks in from one side and
                     approaches the camera, then steps out of the frame
    empty      2 s   the wall alone
    stranger   4 s   the same approach by the "cameraman" (another real man, greyscale, turned to his
                     left: not the astronaut; expect the quality gate to call his pose extreme)
    empty      2 s

Each subject is a feathered oval cut-out of its photograph, scaled and moved with smooth easing
over a gently textured wall. Everything is a function of the frame index and the seed: the same
seed gives the same frames, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edged.capture.source import Frame, PacedSource, Pacer
from edged.errors import CameraError, ConfigError
from edged.types import ImageRGB

__all__ = ["ASTRONAUT", "EMPTY", "SCHEDULE", "STRANGER", "DemoSource"]

ASTRONAUT = "astronaut"
EMPTY = "empty"
STRANGER = "stranger"

SCHEDULE: tuple[tuple[str, float], ...] = ((ASTRONAUT, 4.0), (EMPTY, 2.0), (STRANGER, 4.0), (EMPTY, 2.0))
"""(segment, seconds): one cycle of the scene."""

_UNPACED_RATE = 10.0  # frames per second of scene time when the source runs as fast as it can

FloatImage = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class _Subject:
    """A cut-out: its RGB pixels, a feathered alpha, and where its face is in those pixels."""

    rgb: FloatImage
    alpha: FloatImage
    face_center: tuple[float, float]
    face_px: float


def _cutout(
    image: npt.NDArray[Any],
    face_box: tuple[float, float, float, float],
    oval: tuple[float, float, float, float],
) -> _Subject:
    """``oval`` is (centre x, centre y, half width, half height) in image pixels."""
    h, w = image.shape[:2]
    cx, cy, ax, ay = oval
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = (((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0).astype(np.float32)
    alpha = cv2.GaussianBlur(inside, (0, 0), sigmaX=12.0)
    x1, y1, x2, y2 = face_box
    return _Subject(
        rgb=image.astype(np.float32),
        alpha=np.asarray(alpha, dtype=np.float32),
        face_center=((x1 + x2) / 2.0, (y1 + y2) / 2.0),
        face_px=max(x2 - x1, y2 - y1),
    )


def _load_subjects() -> dict[str, _Subject]:
    try:
        from skimage import data
    except ImportError as exc:
        raise CameraError(
            "the demo source draws its people from scikit-image's public-domain photographs: "
            "pip install 'edged[demo]'"
        ) from exc
    astronaut = np.ascontiguousarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    camera = np.ascontiguousarray(data.camera(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    cameraman = cv2.cvtColor(camera, cv2.COLOR_GRAY2RGB)
    # face boxes as the short-range detector reports them in the 512×512 photographs
    return {
        ASTRONAUT: _cutout(astronaut, (178.0, 81.0, 272.0, 175.0), (225.0, 300.0, 175.0, 290.0)),
        STRANGER: _cutout(cameraman, (180.0, 121.0, 264.0, 205.0), (215.0, 300.0, 190.0, 280.0)),
    }


def _wall(width: int, height: int, seed: int) -> FloatImage:
    """A warm off-white wall: light falling from the upper left, and a faint plaster texture."""
    rng = np.random.default_rng(seed)
    base = np.array([208.0, 201.0, 189.0], np.float32) + rng.uniform(-6.0, 6.0, 3).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 1.0 - 0.10 * (0.6 * yy / height + 0.4 * xx / width)
    coarse = rng.normal(0.0, 1.0, (height // 16 + 2, width // 16 + 2)).astype(np.float32)
    blotches = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 1.0)
    texture = 3.0 * blotches + 2.0 * fine
    wall = base[None, None, :] * light[:, :, None] + texture[:, :, None]
    return np.asarray(wall, dtype=np.float32)


def _smooth(x: float) -> float:
    """Smoothstep on [0, 1]: eases in and out."""
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


class DemoSource(PacedSource):
    """The built-in door scene. ``frames=None`` plays forever; ``fps=0`` renders as fast as it can
    (the schedule then counts frames at 10 per second of scene time)."""

    def __init__(
        self,
        fps: float = 10.0,
        frames: int | None = None,
        size: tuple[int, int] = (640, 480),
        seed: int = 0,
    ) -> None:
        super().__init__()
        width, height = size
        if width < 64 or height < 64:
            raise ConfigError(f"demo frame size must be at least 64×64, got {width}×{height}")
        if frames is not None and frames < 0:
            raise ConfigError(f"demo frames must be None (endless) or ≥ 0, got {frames}")
        self._pacer = Pacer(fps)
        self.name = "demo"
        self.size = (int(width), int(height))
        self.frames = frames
        self.seed = seed
        rate = fps if fps > 0 else _UNPACED_RATE
        self._schedule = [(segment, max(1, round(seconds * rate))) for segment, seconds in SCHEDULE]
        self._cycle = sum(length for _, length in self._schedule)
        self._subjects: dict[str, _Subject] | None = None
        self._wall: FloatImage | None = None

    def segment_of(self, index: int) -> str:
        """Which part of the schedule frame ``index`` shows: "astronaut", "empty" or "stranger"."""
        segment, _ = self._position(index)
        return segment

    def _position(self, index: int) -> tuple[str, float]:
        """(segment, progress through it in [0, 1)) of frame ``index``."""
        if index < 0:
            raise ValueError(f"frame index must be ≥ 0, got {index}")
        offset = index % self._cycle
        for segment, length in self._schedule:
            if offset < length:
                return segment, offset / length
            offset -= length
        raise AssertionError("unreachable: offset is within the cycle")

    def open(self) -> None:
        if self._subjects is None:
            self._subjects = _load_subjects()
        if self._wall is None:
            self._wall = _wall(self.size[0], self.size[1], self.seed)
        self._count = 0
        self._pacer.reset()

    def close(self) -> None:
        self._subjects = None
        self._wall = None

    def render(self, index: int) -> ImageRGB:
        """Frame ``index`` of the scene (the source must be open)."""
        if self._subjects is None or self._wall is None:
            raise CameraError("the demo source is not open")
        segment, progress = self._position(index)
        if segment == EMPTY:
            return np.asarray(np.clip(self._wall + 0.5, 0, 255), dtype=np.uint8)
        subject = self._subjects[segment]
        cycle = index // self._cycle
        from_left = (cycle + self.seed) % 2 == 0
        return self._composite(subject, self._pose(index, progress, from_left))

    def _pose(self, index: int, progress: float, from_left: bool) -> tuple[float, float, float]:
        """(face centre x, face centre y, face size) in frame pixels for this moment of an approach:
        walk in from one side while coming closer (the first 80 %), stand still with a slight sway,
        then step out of the frame on the other side (the last 12 %)."""
        width, height = self.size
        side = -1.0 if from_left else 1.0
        approach = _smooth(progress / 0.8)
        leave = _smooth((progress - 0.88) / 0.12)
        scale = min(width, height) / 480.0
        face = (60.0 + 115.0 * approach) * scale
        t = index / self._pacer.fps if self._pacer.fps > 0 else index / _UNPACED_RATE
        sway = 6.0 * scale * math.sin(2.0 * math.pi * 0.4 * t + self.seed)
        bob = 3.0 * scale * math.sin(2.0 * math.pi * 0.9 * t)
        x = width / 2.0 + side * 0.28 * width * (1.0 - approach) - side * 0.9 * width * leave + sway
        y = height * (0.46 - 0.06 * approach) + bob
        return x, y, face

    def _composite(self, subject: _Subject, pose: tuple[float, float, float]) -> ImageRGB:
        assert self._wall is not None
        x, y, face = pose
        s = face / subject.face_px
        fx, fy = subject.face_center
        matrix = np.array([[s, 0.0, x - s * fx], [0.0, s, y - s * fy]], dtype=np.float64)
        size = self.size
        rgb = cv2.warpAffine(subject.rgb, matrix, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        alpha = cv2.warpAffine(subject.alpha, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
        blended = self._wall + (rgb - self._wall) * alpha[:, :, None]
        return np.asarray(np.clip(blended + 0.5, 0, 255), dtype=np.uint8)

    def read(self) -> Frame | None:
        if self._subjects is None:
            raise CameraError("the demo source is not open")
        if self.frames is not None and self._count >= self.frames:
            return None
        image = self.render(self._count)
        self._pacer.wait()
        return self._frame(image)
