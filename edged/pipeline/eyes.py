"""MediaPipe's iris landmark model on both eyes of a face mesh: how open the eyes are (the blink cue).

The face mesh under-reports closure (docs/liveness.md): on a real face with the eyes made closed
(lids painted over, a lash line drawn) its eye aspect ratio only falls to ~0.66 of the open value,
while an expressive face with open eyes dips to ~0.70 of it. The iris model, run on a crop of each
eye, follows the lids: the same closed eyes read ~0.41 of open, expression dips stay above ~0.77.

The crop follows MediaPipe's iris graph: a square 2.3 × the eye's corner distance around the corners'
midpoint, rotated so that the corners are level, 64 × 64, RGB / 255. The model knows one eye (the
image's left one, the subject's right, mesh corners 33 → 133); the crop of the other eye (362 → 263)
is mirrored, as MediaPipe's graph does.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edged.inference.manifest import Manifest
from edged.inference.runtime import TFLiteModel
from edged.pipeline.mesh import crop_matrix
from edged.types import FloatArray, ImageRGB

__all__ = ["EYE_SIZE", "EyeModel"]

EYE_SIZE = 64
EYE_SCALE = 2.3
# (corner on the image's left, corner on its right, mirror the crop) in mesh indices, per eye
_EYES = ((33, 133, False), (362, 263, True))
# the model's first 16 eye-contour points: 0 → 8 the lower lid from the outer to the inner corner,
# 9 → 15 the upper lid; the lid pairs above and below the pupil (mesh 160/144, 159/145, 158/153)
_LID_PAIRS = ((11, 3), (12, 4), (13, 5))
_OUTER, _INNER = 0, 8


class EyeModel:
    """Eye openness from the iris landmark model (manifest key ``iris_landmark``)."""

    def __init__(self, model: TFLiteModel) -> None:
        self.model = model
        if model.inputs[0].shape != (1, EYE_SIZE, EYE_SIZE, 3):
            raise ValueError(f"{model.path.name} does not look like the iris landmark model")

    @classmethod
    def load(cls, manifest: Manifest | None = None, threads: int = 1) -> EyeModel:
        manifest = manifest or Manifest.load()
        return cls(TFLiteModel(manifest.verified_path("iris_landmark"), threads))

    def contour(self, image: ImageRGB, left: FloatArray, right: FloatArray, mirror: bool) -> FloatArray:
        """The 71 eye points (x, y in crop pixels, 64 × 64, in the crop the model saw) of the eye
        whose corners are ``left`` and ``right`` (frame pixels, the image's left one first);
        ``mirror``: flip the crop (the eye the model does not know)."""
        (lx, ly), (rx, ry) = left[:2], right[:2]
        angle = math.atan2(float(ry - ly), float(rx - lx))
        side = EYE_SCALE * math.hypot(float(rx - lx), float(ry - ly))
        matrix = crop_matrix(((lx + rx) / 2.0, (ly + ry) / 2.0), max(side, 1.0), angle, EYE_SIZE)
        crop = cv2.warpAffine(
            image,
            matrix,
            (EYE_SIZE, EYE_SIZE),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if mirror:
            crop = crop[:, ::-1]
        tensor = (crop.astype(np.float32) * (1.0 / 255.0))[None]
        eye, _iris = self.model.run(tensor)
        points: FloatArray = eye.reshape(71, 3)[:, :2].astype(np.float32)
        return points

    def openness(self, image: ImageRGB, points: FloatArray) -> float:
        """Mean over both eyes of the lid gap (three pairs of points above and below the pupil)
        over the corner distance, from the iris model: ~0.3–0.47 open, ~0.1 closed."""
        values = []
        for left, right, mirror in _EYES:
            contour = self.contour(image, points[left], points[right], mirror)
            gaps = [float(np.linalg.norm(contour[up] - contour[low])) for up, low in _LID_PAIRS]
            width = float(np.linalg.norm(contour[_OUTER] - contour[_INNER]))
            values.append(float(np.mean(gaps)) / max(width, 1e-6))
        return float(np.mean(values))
