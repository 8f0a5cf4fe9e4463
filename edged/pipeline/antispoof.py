"""The passive anti-spoofing model: Silent-Face-Anti-Spoofing's MiniFASNet pair as TFLite models
(int8 — MiniFASNetV2 static with its 40×40 layers in float32, MiniFASNetV1SE dynamic-range —
with float32 references beside them; docs/models.md).

Two networks look at the same face at two crop scales — MiniFASNetV2 at 2.7× the face box,
MiniFASNetV1SE at 4.0× — and their softmaxes over three classes (0 and 2: presentation attacks,
1: a real face) are averaged, as upstream does. Each crop is the box scaled around its centre,
shifted (not shrunk) back into the frame when it crosses an edge, and shrunk only when it is
larger than the frame; then resized to 80×80 and fed as raw BGR 0..255 (upstream's convention).

Upstream's face box comes from its own detector (a RetinaFace trained on WIDER FACE), whose boxes
are a little larger than BlazeFace's and centred higher (they reach further up the forehead):
``to_upstream_box`` maps a BlazeFace box onto that convention (measured factors below), so that
the networks see the context they were trained with. See docs/models.md for the models, the
measurements, the parity with the float reference and the cost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edged.errors import BadArgument, ModelError
from edged.inference.manifest import Manifest
from edged.inference.runtime import TFLiteModel
from edged.types import Box, FloatArray, ImageRGB

logger = logging.getLogger(__name__)

__all__ = [
    "ANTISPOOF_MODELS",
    "INPUT_SIZE",
    "REAL_CLASS",
    "AntiSpoof",
    "AntiSpoofModel",
    "CropSpec",
    "Precision",
    "crop_face",
    "crop_window",
    "model_input",
    "to_upstream_box",
]

INPUT_SIZE = 80
CLASSES = 3
REAL_CLASS = 1
"""Index of the "real face" class of the three (0 and 2 are attacks)."""

Precision = Literal["int8", "float32"]


@dataclass(frozen=True, slots=True)
class CropSpec:
    """One network of the ensemble: its manifest keys and the crop scale it was trained on."""

    key: str
    float32_key: str
    scale: float


ANTISPOOF_MODELS = (
    CropSpec("antispoof_v2", "antispoof_v2_float32", 2.7),
    CropSpec("antispoof_v1se", "antispoof_v1se_float32", 4.0),
)


UPSTREAM_WIDTH = 1.03
UPSTREAM_HEIGHT = 1.055
UPSTREAM_SHIFT_Y = -0.037
"""BlazeFace box → upstream detector box: width ×1.03, height ×1.055, centre moved up by 3.7 % of
the box height. Medians over 99 lfw-dev faces of upstream's RetinaFace box against edged's
BlazeFace box (BlazeFace/upstream: width 0.973, height 0.948, centre 0.037 box heights lower;
horizontal offset 0.014, not corrected). With it the ensemble's P(real) moves closer to what
upstream's own box gives: mean |difference| over those faces 0.034 → 0.019."""


def to_upstream_box(box: Box) -> Box:
    """``box`` (edged's BlazeFace convention) as upstream's detector would have drawn it."""
    cx, cy = box.center
    half_w, half_h = box.width * UPSTREAM_WIDTH / 2, box.height * UPSTREAM_HEIGHT / 2
    cy += UPSTREAM_SHIFT_Y * box.height
    return Box(cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def crop_window(width: int, height: int, box: Box, scale: float) -> tuple[int, int, int, int]:
    """The crop, ``(x1, y1, x2, y2)`` inclusive frame pixels, of ``box`` scaled by ``scale``
    around its centre: shrunk to fit when larger than the frame, else shifted back inside it
    (upstream's rule, so the network sees the context it was trained with)."""
    if box.width <= 0 or box.height <= 0:
        raise BadArgument(f"face box {box.as_list()} is empty")
    if width < 2 or height < 2:
        raise BadArgument(f"image of {width}×{height} px is too small to crop")
    scale = min((height - 1) / box.height, (width - 1) / box.width, scale)
    half_w, half_h = box.width * scale / 2, box.height * scale / 2
    cx, cy = box.center
    x1, y1, x2, y2 = cx - half_w, cy - half_h, cx + half_w, cy + half_h
    if x1 < 0:
        x1, x2 = 0.0, x2 - x1
    if y1 < 0:
        y1, y2 = 0.0, y2 - y1
    if x2 > width - 1:
        x1, x2 = x1 - (x2 - width + 1), float(width - 1)
    if y2 > height - 1:
        y1, y2 = y1 - (y2 - height + 1), float(height - 1)
    return max(0, int(x1)), max(0, int(y1)), min(width - 1, int(x2)), min(height - 1, int(y2))


def crop_face(image: ImageRGB, box: Box, scale: float) -> npt.NDArray[np.uint8]:
    """The network input for ``box`` of an RGB image: the scaled crop resized to 80×80, **BGR**."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = crop_window(width, height, box, scale)
    patch = cv2.resize(image[y1 : y2 + 1, x1 : x2 + 1], (INPUT_SIZE, INPUT_SIZE))
    return np.asarray(cv2.cvtColor(patch, cv2.COLOR_RGB2BGR), dtype=np.uint8)  # faster than [..., ::-1]


def model_input(image: ImageRGB, box: Box, scale: float) -> npt.NDArray[np.uint8]:
    """What a network sees for edged's face ``box``: ``crop_face`` of the box mapped onto
    upstream's detector convention."""
    return crop_face(image, to_upstream_box(box), scale)


def softmax(logits: FloatArray) -> FloatArray:
    shifted = np.exp(logits - logits.max())
    probabilities: FloatArray = (shifted / shifted.sum()).astype(np.float32)
    return probabilities


class AntiSpoofModel:
    """One network: an 80×80 BGR crop → 3 logits. Takes the shipped int8 model or the float32
    reference (both read float32 input of raw 0..255 values; a uint8-input model works too if its
    input scale is 1 and zero point 0: the crop is cast, not quantized)."""

    def __init__(self, model: TFLiteModel, scale: float) -> None:
        spec = model.inputs[0]
        if spec.shape != (1, INPUT_SIZE, INPUT_SIZE, 3) or model.outputs[0].shape != (1, CLASSES):
            raise ModelError(f"{model.path.name} does not look like an 80×80 → 3 anti-spoofing model")
        if model.outputs[0].dtype != np.float32:
            raise ModelError(f"{model.path.name} must output float32 logits")
        self.model = model
        self.scale = scale
        self._dtype = spec.dtype

    def logits(self, patch: npt.NDArray[np.uint8]) -> FloatArray:
        (out,) = self.model.run(patch[None].astype(self._dtype, copy=False))
        return out.reshape(CLASSES).astype(np.float32, copy=False)

    def probabilities(self, image: ImageRGB, box: Box) -> FloatArray:
        return softmax(self.logits(model_input(image, box, self.scale)))


class AntiSpoof:
    """The ensemble (``PassiveModel``): the mean of both networks' softmaxes. Not thread-safe
    (one instance per worker thread, like every TFLite model)."""

    def __init__(self, models: Sequence[AntiSpoofModel]) -> None:
        if not models:
            raise ValueError("AntiSpoof needs at least one model")
        self.models = tuple(models)

    @classmethod
    def load(
        cls, manifest: Manifest | None = None, threads: int = 1, precision: Precision = "int8"
    ) -> AntiSpoof:
        """Both networks from the manifest (sha256-checked); ``precision="float32"`` loads the
        float references instead (parity checks and benchmarks)."""
        manifest = manifest or Manifest.load()
        models = []
        for spec in ANTISPOOF_MODELS:
            key = spec.key if precision == "int8" else spec.float32_key
            models.append(AntiSpoofModel(TFLiteModel(manifest.verified_path(key), threads), spec.scale))
        return cls(models)

    def probabilities(self, image: ImageRGB, box: Box) -> FloatArray:
        """The three class probabilities averaged over the networks (index 1 = real)."""
        total = np.zeros(CLASSES, np.float32)
        for model in self.models:
            total += model.probabilities(image, box)
        total /= len(self.models)
        return total

    def real_probability(self, image: ImageRGB, box: Box) -> float:
        """The probability, in [0, 1], that the face in ``box`` is real (class 1)."""
        return float(self.probabilities(image, box)[REAL_CLASS])
