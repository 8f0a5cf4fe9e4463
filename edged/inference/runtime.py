"""One small wrapper around the TFLite interpreter.

ai-edge-litert (the maintained runtime) is preferred; tflite-runtime 2.14 is the fallback (it needs
numpy<2 and cannot run every op version: see docs/models.md). XNNPACK is the default CPU delegate in
both, so nothing needs enabling. Tensor specs are read once at load time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edged.errors import ModelError
from edged.log import native_stderr_silenced

logger = logging.getLogger(__name__)


def _interpreter_class() -> tuple[Any, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError as exc:
        raise ModelError("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)") from exc


def runtime_name() -> str:
    return _interpreter_class()[1]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float
    zero_point: int


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=str(detail["name"]),
        index=int(detail["index"]),
        shape=tuple(int(v) for v in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


class TFLiteModel:
    """A loaded model. ``run`` feeds inputs in order and returns the outputs (copies) in order.

    Not thread-safe: one instance per worker thread.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        interpreter_class, self.runtime = _interpreter_class()
        self.path = path
        try:
            with native_stderr_silenced():
                self._interpreter = interpreter_class(model_path=str(path), num_threads=max(1, threads))
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.runtime} cannot load {path.name}: {exc}") from exc
        self.inputs = tuple(_spec(d) for d in self._interpreter.get_input_details())
        self.outputs = tuple(_spec(d) for d in self._interpreter.get_output_details())

    def run(self, *arrays: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
        if len(arrays) != len(self.inputs):
            raise ModelError(f"{self.path.name} takes {len(self.inputs)} inputs, got {len(arrays)}")
        for spec, array in zip(self.inputs, arrays, strict=True):
            if array.shape != spec.shape or array.dtype != spec.dtype:
                raise ModelError(
                    f"{self.path.name} input {spec.name!r} wants {spec.shape} {spec.dtype}, "
                    f"got {array.shape} {array.dtype}"
                )
            self._interpreter.set_tensor(spec.index, array)
        try:
            self._interpreter.invoke()
        except RuntimeError as exc:
            raise ModelError(f"{self.path.name} failed to run: {exc}") from exc
        return [self._interpreter.get_tensor(spec.index) for spec in self.outputs]
