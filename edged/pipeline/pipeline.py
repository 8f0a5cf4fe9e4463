"""The face pipeline assembled from its stages, loaded from the model manifest."""

from __future__ import annotations

from edged.config import PipelineSettings
from edged.inference.manifest import Calibration, Manifest
from edged.inference.runtime import TFLiteModel
from edged.pipeline.align import chip_for
from edged.pipeline.detect import VARIANTS, FaceDetector
from edged.pipeline.embed import FaceEmbedder
from edged.pipeline.mesh import FaceMesher
from edged.pipeline.quality import QualityThresholds, assess
from edged.types import Detection, Face, ImageRGB, Mesh

EMBEDDER_KEYS = {"int8": "face_embedder", "float32": "face_embedder_float32"}

__all__ = ["EMBEDDER_KEYS", "FacePipeline", "PipelineSettings"]


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
        embedder_key = EMBEDDER_KEYS[settings.embedder]
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
        )
        flip = settings.flip_average
        calibration = manifest.entry(embedder_key).calibration_for(flip) or manifest.entry(
            "face_embedder"
        ).calibration_for(flip)
        return cls(detector, mesher, embedder, calibration, settings.quality)

    def detect(self, image: ImageRGB) -> list[Detection]:
        return self.detector.detect(image)

    def analyze(self, image: ImageRGB, detection: Detection, embed: bool = True) -> Face:
        """Mesh, align and assess one detection; embed it when asked (even if the gate fails:
        the caller decides what a failed gate means)."""
        mesh = self.mesher.mesh(image, detection)
        return self._finish(image, detection, mesh, embed)

    def _finish(self, image: ImageRGB, detection: Detection, mesh: Mesh, embed: bool) -> Face:
        chip = chip_for(image, detection, mesh)
        quality = assess(image, detection, mesh, chip, self.quality_limits)
        embedding = self.embedder.embed(chip) if embed else None
        return Face(detection, mesh, quality, embedding)

    def embed(self, image: ImageRGB, face: Face) -> Face:
        """``face`` with its template (for faces found with ``embed=False``)."""
        if face.embedding is not None:
            return face
        return self._finish(image, face.detection, face.mesh or self.mesher.mesh(image, face.detection), True)

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
