"""The 128-d face embedding (dlib's ResNet v1 converted to TFLite) and template comparison."""

from __future__ import annotations

import numpy as np

from edged.inference.runtime import TFLiteModel
from edged.pipeline.align import CHIP_SIZE
from edged.types import FloatArray, ImageRGB

EMBEDDING_SIZE = 128


class FaceEmbedder:
    """Embeds a 150×150 uint8 RGB chip. Works with the full-int8 model (uint8 input) and the
    float32 reference model (raw 0..255 float input); outputs are dequantized to float32."""

    def __init__(self, model: TFLiteModel, flip_average: bool = False) -> None:
        self.model = model
        self.flip_average = flip_average
        spec = model.inputs[0]
        if spec.shape != (1, CHIP_SIZE, CHIP_SIZE, 3) or model.outputs[0].shape[-1] != EMBEDDING_SIZE:
            raise ValueError(f"{model.path.name} does not look like a 150×150 → 128 face embedder")
        self._input_dtype = spec.dtype
        out = model.outputs[0]
        self._dequantize = out.dtype != np.float32
        self._out_scale, self._out_zero = out.scale, out.zero_point

    def embed(self, chip: ImageRGB, flip_average: bool | None = None) -> FloatArray:
        """The template of a chip; with ``flip_average`` the mean of the chip's and its mirror
        image's embeddings, which removes some left/right alignment noise (LFW 5-fold: 99.17 →
        99.27 %) for a second pass through the embedder."""
        vector = self._embed_once(chip)
        if self.flip_average if flip_average is None else flip_average:
            vector = (vector + self._embed_once(np.ascontiguousarray(chip[:, ::-1]))) * 0.5
        return vector

    def _embed_once(self, chip: ImageRGB) -> FloatArray:
        tensor = chip[None].astype(self._input_dtype, copy=False)
        (out,) = self.model.run(np.ascontiguousarray(tensor))
        vector = out.reshape(EMBEDDING_SIZE)
        if self._dequantize:
            return ((vector.astype(np.float32) - self._out_zero) * self._out_scale).astype(np.float32)
        return vector.astype(np.float32, copy=False)


def distance(a: FloatArray, b: FloatArray) -> float:
    """Euclidean distance between two templates (dlib's metric; 0.6 is its classic threshold)."""
    return float(np.linalg.norm(a.astype(np.float32) - b.astype(np.float32)))
