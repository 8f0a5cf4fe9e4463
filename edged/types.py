"""Frozen value types shared by the pipeline, the CLI and (later) the service layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ImageRGB = npt.NDArray[np.uint8]
"""An H×W×3 uint8 RGB image, C-contiguous."""


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in frame pixels, (x1, y1) top-left, (x2, y2) bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[float]:
        return [round(self.x1, 1), round(self.y1, 1), round(self.x2, 1), round(self.y2, 1)]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected face. ``keypoints`` is 6×2 in frame pixels: subject's right eye, left eye,
    nose tip, mouth centre, right ear tragion, left ear tragion."""

    box: Box
    score: float
    keypoints: FloatArray = field(repr=False)


@dataclass(frozen=True, slots=True)
class Mesh:
    """468 face-mesh points (x, y in frame pixels; z in the same pixel scale) and the face-flag
    probability from the landmark model."""

    points: FloatArray = field(repr=False)
    face_score: float


@dataclass(frozen=True, slots=True)
class Quality:
    """The quality gate's verdict: ``reasons`` is empty when the face is usable for templates."""

    reasons: tuple[str, ...]
    measures: dict[str, float]

    @property
    def ok(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, slots=True)
class Face:
    """Everything the pipeline knows about one face in one frame."""

    detection: Detection
    mesh: Mesh | None
    quality: Quality
    embedding: FloatArray | None = field(default=None, repr=False)
    chip: ImageRGB | None = field(default=None, repr=False, compare=False)
    """The aligned 150×150 chip the quality gate judged (kept so that embedding the face later does
    not align it again); in memory only, like the frame."""
