"""The pipeline as the face operations use it: faces found, embedded, and the one face of an image
to enrol. TFLite interpreters are not thread-safe: inference holds the finder's own lock (never the
service lock, so the door keeps searching and the directory keeps answering meanwhile)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from edged.errors import BadArgument, NoFaceDetected, QualityTooLow
from edged.pipeline.pipeline import FacePipeline
from edged.types import Box, Face, FloatArray, ImageRGB

T = TypeVar("T")

MIN_TARGET_IOU = 0.3
"""How much a ``targetFace`` must overlap a detected face to choose it."""


class FaceFinder:
    def __init__(self, pipeline: FacePipeline, enroll_requires_quality: bool) -> None:
        self.pipeline = pipeline
        self.enroll_requires_quality = enroll_requires_quality
        self._infer = threading.Lock()

    def faces(self, image: ImageRGB) -> list[Face]:
        """Every face in ``image``, not embedded."""
        with self._infer:
            return self.pipeline.faces(image, embed=False)

    def exclusive(self, work: Callable[[], T]) -> T:
        """Run ``work`` (more inference on the pipeline's interpreters: a liveness check) holding
        the finder's inference lock."""
        with self._infer:
            return work()

    def embed(self, image: ImageRGB, face: Face) -> Face:
        with self._infer:
            return self.pipeline.embed(image, face)

    def one_face(self, image: ImageRGB, target: Box | None, what: str) -> Face:
        """The only face of ``what`` (or the one ``target`` points at), embedded."""
        faces = self.faces(image)
        if not faces:
            raise NoFaceDetected(f"no face found in {what}")
        if target is not None:
            best = max(faces, key=lambda f: f.detection.box.iou(target))
            if best.detection.box.iou(target) < MIN_TARGET_IOU:
                raise BadArgument(f"targetFace {target.as_list()} matches no detected face in {what}")
            chosen = best
        elif len(faces) > 1:
            raise BadArgument(f"{what} has {len(faces)} faces; give targetFace to choose one")
        else:
            chosen = faces[0]
        return self.embed(image, chosen)

    def enrollable(self, image: ImageRGB, target: Box | None) -> tuple[Face, FloatArray]:
        """The one face to enrol (or ``target``), embedded, past the quality gate when required."""
        face = self.one_face(image, target, "the image")
        assert face.embedding is not None
        if self.enroll_requires_quality and not face.quality.ok:
            raise QualityTooLow(f"the face fails the quality gate: {', '.join(face.quality.reasons)}")
        return face, face.embedding
