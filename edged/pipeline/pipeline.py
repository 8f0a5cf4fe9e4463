"""The face pipeline assembled from its stages, loaded from the model manifest."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import Field

from edged.inference.manifest import Calibration, Manifest
from edged.inference.runtime import TFLiteModel
from edged.pipeline.align import chip_for
from edged.pipeline.detect import VARIANTS, FaceDetector
from edged.pipeline.embed import FAMILIES, FaceEmbedder, FamilyName
from edged.pipeline.mesh import FaceMesher
from edged.pipeline.quality import QualityThresholds, assess
from edged.strict import Strict
from edged.types import Detection, Face, ImageRGB, Mesh

EMBEDDER_KEYS = FAMILIES["dlib"].keys
"""The dlib family's manifest keys per precision (``FAMILIES`` has every family's)."""

__all__ = ["EMBEDDER_KEYS", "FacePipeline", "PipelineSettings"]


class PipelineSettings(Strict):
    """The face pipeline: which models, how many threads, which limits."""

    detector: Literal["short", "full"] = Field(
        "short", description="BlazeFace short-range (faces ≥ ~10 % of frame width) or full-range (≥ ~6 %)"
    )
    detection_threshold: float | None = Field(
        None, gt=0, lt=1, description="detector score threshold (default: the model's, 0.5 short / 0.6 full)"
    )
    min_face_px: float = Field(20.0, ge=0, description="detections smaller than this (pixels) are ignored")
    recognition_model: FamilyName = Field(
        "dlib",
        description="the embedder family: dlib (128-d, 150×150 chip) or mbf (512-d, 112×112 ArcFace "
        "chip); templates of one never compare with the other's (docs/models.md)",
    )
    embedder: Literal["int8", "float32"] = Field(
        "int8", description="int8 is the daemon's model; float32 is the reference"
    )
    flip_average: bool = Field(
        False,
        description="template = mean of the chip's and its mirror's embeddings (slower; see docs/models.md)",
    )
    threads: int = Field(1, ge=1, le=16, description="inference threads per model")
    model_threads: dict[Literal["detector", "mesh", "embedder"], Annotated[int, Field(ge=1, le=16)]] = Field(
        default_factory=dict, description="per-model overrides of threads, e.g. {embedder: 2}"
    )

    def threads_for(self, stage: Literal["detector", "mesh", "embedder"]) -> int:
        return self.model_threads.get(stage, self.threads)

    quality: QualityThresholds = Field(default_factory=QualityThresholds)


class FacePipeline:
    """detect → mesh → align → quality → embed over one in-memory RGB frame."""

    def __init__(
        self,
        detector: FaceDetector,
        mesher: FaceMesher,
        embedder: FaceEmbedder,
        calibration: Calibration | None,
        quality: QualityThresholds,
    ) -> None:
        self.detector = detector
        self.mesher = mesher
        self.embedder = embedder
        self.calibration = calibration
        self.quality_limits = quality

    @classmethod
    def load(cls, manifest: Manifest | None = None, settings: PipelineSettings | None = None) -> FacePipeline:
        manifest = manifest or Manifest.load()
        settings = settings or PipelineSettings()
        variant = VARIANTS[settings.detector]
        family = FAMILIES[settings.recognition_model]
        embedder_key = family.keys[settings.embedder]
        detector = FaceDetector(
            TFLiteModel(manifest.verified_path(variant.model_key), settings.threads_for("detector")),
            variant,
            settings.detection_threshold,
            settings.min_face_px,
        )
        mesher = FaceMesher(TFLiteModel(manifest.verified_path("face_mesh"), settings.threads_for("mesh")))
        embedder = FaceEmbedder(
            TFLiteModel(manifest.verified_path(embedder_key), settings.threads_for("embedder")),
            settings.flip_average,
            family,
        )
        flip = settings.flip_average
        # each model (family and precision) by its own calibration: never another's thresholds
        calibration = manifest.entry(embedder_key).calibration_for(flip)
        return cls(detector, mesher, embedder, calibration, settings.quality)

    def detect(self, image: ImageRGB) -> list[Detection]:
        return self.detector.detect(image)

    def analyze(self, image: ImageRGB, detection: Detection, embed: bool = True) -> Face:
        """Mesh, align and assess one detection; embed it when asked (even if the gate fails:
        the caller decides what a failed gate means)."""
        mesh = self.mesher.mesh(image, detection)
        return self._finish(image, detection, mesh, embed)

    def _finish(self, image: ImageRGB, detection: Detection, mesh: Mesh, embed: bool) -> Face:
        chip = chip_for(image, detection, mesh)  # the quality gate's chip, whatever the embedder
        quality = assess(image, detection, mesh, chip, self.quality_limits)
        face = Face(detection, mesh, quality, chip=chip)
        return self.embed(image, face) if embed else face

    def embed(self, image: ImageRGB, face: Face) -> Face:
        """``face`` with its template (for faces found with ``embed=False``): its quality stands,
        only the embedder's chip is made (none for dlib when the face kept the gate's chip)."""
        if face.embedding is not None:
            return face
        if face.mesh is None or face.chip is None:  # not from this pipeline's faces()/analyze()
            return self._finish(
                image, face.detection, face.mesh or self.mesher.mesh(image, face.detection), True
            )
        dlib = self.embedder.family.name == "dlib"  # it reads the gate's chip
        own = face.chip if dlib else self.embedder.chip(image, face.detection, face.mesh)
        return dataclasses.replace(face, embedding=self.embedder.embed(own))

    def faces(self, image: ImageRGB, embed: bool = True) -> list[Face]:
        """Every face in the frame, largest first. Detections that the face mesh does not confirm
        as a face (its face flag below the quality limit) are dropped: they are not faces."""
        detections = sorted(self.detect(image), key=lambda d: d.box.area, reverse=True)
        found = []
        for detection in detections:
            mesh = self.mesher.mesh(image, detection)
            if mesh.face_score < self.quality_limits.min_face_score:
                continue
            found.append(self._finish(image, detection, mesh, embed))
        return found
