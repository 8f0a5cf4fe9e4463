"""Compare TFLite embedders with dlib's own descriptor on real face chips, and time them.

Chips are made by dlib (HOG detector, 5-point landmarks, ``get_face_chip(size=150,
padding=0.25)``); the reference is ``face_recognition_model_v1.compute_face_descriptor(chip)``.
Every model is run under ai-edge-litert, single-threaded, the way the daemon runs it: the uint8
model gets the chip bytes as they are, a float32 model gets the same pixels as float.

Example (test images must not overlap the calibration images)::

    python tools/evaluate_embedder.py --images /path/to/lfw-test --count 300 \\
        --dlib-models /path/to/face_recognition_models/models \\
        --reference models/dlib_resnet_v1_float32.tflite models/dlib_resnet_v1_int8.tflite
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import dlib
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from chips import DlibAligner, folder_chips


class TfliteEmbedder:
    """One ``.tflite`` embedder under ai-edge-litert."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = path
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    def __call__(self, chip: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input["index"], chip[None].astype(self._input["dtype"]))
        self._interpreter.invoke()
        out: np.ndarray = self._interpreter.get_tensor(self._output["index"])[0].astype(np.float64)
        scale, zero_point = self._output["quantization"]
        return (out - zero_point) * scale if scale else out

    def median_latency_ms(self, chip: np.ndarray, runs: int) -> float:
        self(chip)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self(chip)
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times)


@dataclass(frozen=True, slots=True)
class Distances:
    """Euclidean distances between two sets of descriptors (and the max |difference|)."""

    mean: float
    median: float
    p95: float
    max: float
    max_abs: float

    @classmethod
    def between(cls, a: np.ndarray, b: np.ndarray) -> Distances:
        d = np.linalg.norm(a - b, axis=1)
        return cls(
            float(d.mean()),
            float(np.median(d)),
            float(np.percentile(d, 95)),
            float(d.max()),
            float(np.abs(a - b).max()),
        )


@dataclass(frozen=True, slots=True)
class ModelReport:
    model: str
    bytes: int
    vs_dlib: Distances
    vs_reference: Distances | None
    latency_ms: float


def dlib_descriptors(recognizer_path: Path, chips: list[np.ndarray]) -> np.ndarray:
    recognizer = dlib.face_recognition_model_v1(str(recognizer_path))
    return np.array([np.array(recognizer.compute_face_descriptor(chip)) for chip in chips])


def evaluate(
    models: list[Path], reference: Path | None, chips: list[np.ndarray], dlib_ref: np.ndarray, runs: int
) -> list[ModelReport]:
    ref_out = np.array([TfliteEmbedder(reference)(c) for c in chips]) if reference else None
    reports = []
    for path in models:
        embedder = TfliteEmbedder(path)
        out = np.array([embedder(c) for c in chips])
        vs_ref = Distances.between(out, ref_out) if ref_out is not None and path != reference else None
        latency = embedder.median_latency_ms(chips[0], runs) if runs else float("nan")
        reports.append(
            ModelReport(str(path), path.stat().st_size, Distances.between(out, dlib_ref), vs_ref, latency)
        )
    return reports


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare TFLite embedders with dlib.")
    parser.add_argument("models", type=Path, nargs="+", help=".tflite embedders to evaluate")
    parser.add_argument("--images", type=Path, required=True, help="folder of face images (recursive)")
    parser.add_argument("--dlib-models", type=Path, required=True, help="face_recognition_models/models")
    parser.add_argument("--reference", type=Path, help="model whose outputs the others are compared to")
    parser.add_argument("--count", type=int, default=300, help="number of chips")
    parser.add_argument("--stride", type=int, default=1, help="use every n-th image")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    aligner = DlibAligner(args.dlib_models / "shape_predictor_5_face_landmarks.dat")
    chips = folder_chips(aligner, args.images, args.count, args.stride)
    dlib_ref = dlib_descriptors(args.dlib_models / "dlib_face_recognition_resnet_model_v1.dat", chips)
    reports = evaluate(args.models, args.reference, chips, dlib_ref, args.runs)
    document = {"chips": len(chips), "images": str(args.images), "models": [asdict(r) for r in reports]}
    text = json.dumps(document, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
