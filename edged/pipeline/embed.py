"""Face embedders and template comparison.

Two families (``FAMILIES``), each a pair of TFLite files (int8, the daemon's; float32, the
reference) in the manifest:

- ``dlib``: dlib's ResNet v1 — a 150×150 chip aligned like ``dlib.get_face_chip`` → a 128-d
  descriptor, not normalised (Euclidean distance; 0.6 is dlib's classic threshold);
- ``mbf``: ESP-DL's MobileFaceNet-class ``human_face_feat_mbf_s8_v1`` — a 112×112 ArcFace chip
  (five points from the mesh) → 512-d, L2-normalised here (Euclidean distance on unit vectors).

A template's model identity is its file's name (``FaceEmbedder.model_id``): the family *and* the
precision, since int8 and float32 templates are calibrated separately and never compared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edged.inference.runtime import TFLiteModel
from edged.pipeline.align import ARCFACE_SIZE, CHIP_SIZE, align_arcface, arcface_points, chip_for
from edged.types import Detection, FloatArray, ImageRGB, Mesh

__all__ = [
    "EMBEDDING_SIZE",
    "FAMILIES",
    "EmbedderFamily",
    "FaceEmbedder",
    "FamilyName",
    "Precision",
    "distance",
]

FamilyName = Literal["dlib", "mbf"]
Precision = Literal["int8", "float32"]

EMBEDDING_SIZE = 128
"""The dlib family's template size (``FAMILIES["dlib"].dim``)."""


def _dlib_chip(image: ImageRGB, detection: Detection, mesh: Mesh | None) -> ImageRGB:
    return chip_for(image, detection, mesh)


def _arcface_chip(image: ImageRGB, detection: Detection, mesh: Mesh | None) -> ImageRGB:
    if mesh is None:
        raise ValueError("the mbf embedder aligns from the face mesh's five points: mesh the face first")
    return align_arcface(image, arcface_points(mesh))


@dataclass(frozen=True, slots=True)
class EmbedderFamily:
    """One embedder family: its manifest keys per precision, its chip and its template."""

    name: FamilyName
    keys: Mapping[Precision, str]
    chip_size: int
    dim: int
    normalise: bool
    chip: Callable[[ImageRGB, Detection, Mesh | None], ImageRGB]
    """The aligned uint8 RGB chip of a face (``chip_size`` square)."""


FAMILIES: Mapping[FamilyName, EmbedderFamily] = {
    "dlib": EmbedderFamily(
        "dlib",
        {"int8": "face_embedder", "float32": "face_embedder_float32"},
        CHIP_SIZE,
        128,
        False,
        _dlib_chip,
    ),
    "mbf": EmbedderFamily(
        "mbf",
        {"int8": "mbf_embedder", "float32": "mbf_embedder_float32"},
        ARCFACE_SIZE,
        512,
        True,
        _arcface_chip,
    ),
}


class FaceEmbedder:
    """Embeds a uint8 RGB chip of its family. Works with the full-int8 model (uint8 input) and the
    float32 reference (raw 0..255 float input); outputs are dequantized to float32 and, for a
    normalising family, scaled to unit length."""

    def __init__(
        self, model: TFLiteModel, flip_average: bool = False, family: EmbedderFamily | None = None
    ) -> None:
        self.model = model
        self.flip_average = flip_average
        self.family = family or FAMILIES["dlib"]
        size, dim = self.family.chip_size, self.family.dim
        spec = model.inputs[0]
        if spec.shape != (1, size, size, 3) or model.outputs[0].shape[-1] != dim:
            what = f"a {size}×{size} → {dim} {self.family.name} face embedder"
            raise ValueError(f"{model.path.name} does not look like {what}")
        self._input_dtype = spec.dtype
        out = model.outputs[0]
        self._dequantize = out.dtype != np.float32
        self._out_scale, self._out_zero = out.scale, out.zero_point

    @property
    def model_id(self) -> str:
        """The model identity its templates carry: the file's name (family and precision)."""
        return self.model.path.name

    @property
    def precision(self) -> Precision:
        """``int8`` for a quantized file (integer input), else ``float32``."""
        return "float32" if self._input_dtype == np.float32 else "int8"

    @property
    def dim(self) -> int:
        return self.family.dim

    def chip(self, image: ImageRGB, detection: Detection, mesh: Mesh | None) -> ImageRGB:
        """The aligned chip this embedder reads."""
        return self.family.chip(image, detection, mesh)

    def embed(self, chip: ImageRGB, flip_average: bool | None = None) -> FloatArray:
        """The template of a chip; with ``flip_average`` the mean of the chip's and its mirror
        image's embeddings, which removes some left/right alignment noise (dlib, LFW 5-fold: 99.17
        → 99.27 %) for a second pass through the embedder."""
        vector = self._embed_once(chip)
        if self.flip_average if flip_average is None else flip_average:
            vector = (vector + self._embed_once(np.ascontiguousarray(chip[:, ::-1]))) * 0.5
        if self.family.normalise:
            norm = float(np.linalg.norm(vector))
            if norm > 0:
                vector = (vector / norm).astype(np.float32)
        return vector

    def _embed_once(self, chip: ImageRGB) -> FloatArray:
        tensor = chip[None].astype(self._input_dtype, copy=False)
        (out,) = self.model.run(np.ascontiguousarray(tensor))
        vector = out.reshape(self.family.dim)
        if self._dequantize:
            return ((vector.astype(np.float32) - self._out_zero) * self._out_scale).astype(np.float32)
        return vector.astype(np.float32, copy=False)


def distance(a: FloatArray, b: FloatArray) -> float:
    """Euclidean distance between two templates of one model (a ``ValueError`` for two sizes)."""
    if a.shape != b.shape:
        raise ValueError(f"templates of two models cannot be compared ({a.size}-d and {b.size}-d)")
    return float(np.linalg.norm(a.astype(np.float32) - b.astype(np.float32)))
