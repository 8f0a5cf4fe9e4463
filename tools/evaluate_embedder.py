"""Compare TFLite embedders with dlib's own descriptor on real face chips, and time them.

Chips are made by dlib (HOG detector, 5-point landmarks, ``get_face_chip(size=150,
padding=0.25)``); the reference is ``face_recognition_model_v1.compute_face_descriptor(chip)``.
Every model is run under ai-edge-litert, single-threaded, the way the daemon runs it: the uint8
model gets the chip bytes as they are, a float32 model gets the same pixels as float.

Example (test images must not overlap the calibration images)::

    python tools/evaluate_embedder.py --images /path/to/lfw-test --count 300 \\
        --dlib-models /path/to/face_recognition_models/models \\
        --reference models/dlib_resnet_v1_float32.tflite models/dlib_resnet_v1_int8.tflite

``--lfw DIR`` instead scores 112×112 (ArcFace-chip) embedders on a folder laid out like
``shared/faces/lfw-dev`` (``pairs.csv``, ``identities.csv``, ``images/``), with chips made by this
checkout's edged (BlazeFace + face mesh + ``align_arcface``): 5-fold accuracy on the pairs and TAR
at FAR 1e-3…1e-5 over all genuine and all impostor pairs of its images (cosine distance), for
each ``--order`` (channel order fed to the model) and ``--scale`` (see ``lfw_report``);
``--speed`` times every model given (dlib's 150×150 ones too) in the same run, one thread::

    python tools/evaluate_embedder.py models/mbf_s8_v1_int8.tflite --lfw ../shared/faces/lfw-dev
    python tools/evaluate_embedder.py models/*embedder*.tflite models/mbf*.tflite --speed
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from chips import ArcFaceAligner, DlibAligner, folder_chips, load_rgb


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

    @property
    def input_size(self) -> int:
        return int(self._input["shape"][1])

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
    import dlib

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


# --------------------------------------------------------------------------- --lfw, --speed

FARS = ("1e-3", "1e-4", "1e-5")


def lfw_chips(folder: Path, model_dir: Path) -> tuple[list[str], list[np.ndarray | None]]:
    """The images of ``identities.csv`` and the ArcFace chip of each one's largest face (None: no face)."""
    aligner = ArcFaceAligner(model_dir)
    with (folder / "identities.csv").open() as handle:
        names = [row["image"] for row in csv.DictReader(handle)]
    chips: list[np.ndarray | None] = []
    for name in names:
        image = load_rgb(folder / name)
        faces = aligner.find_points(image)
        chips.append(aligner.align(image, faces[0]) if faces else None)
    return names, chips


def all_pairs_tar(embeddings: np.ndarray, identities: list[str]) -> dict[str, float]:
    """TAR at each FAR of ``FARS`` over every genuine and every impostor pair of the images
    (cosine similarity of unit vectors; images without a face are left out)."""
    labels = np.unique(np.array(identities), return_inverse=True)[1]
    similarity = embeddings.astype(np.float32) @ embeddings.astype(np.float32).T
    upper = np.triu_indices(len(embeddings), k=1)
    scores, same = similarity[upper], labels[upper[0]] == labels[upper[1]]
    impostor = np.sort(scores[~same])[::-1]
    genuine = scores[same]
    tars = {"genuine_pairs": float(genuine.size), "impostor_pairs": float(impostor.size)}
    for far in FARS:
        allowed = int(np.floor(float(far) * impostor.size))
        tars[far] = float((genuine > impostor[allowed]).mean())
    return tars


def lfw_report(
    model: Path, folder: Path, names: list[str], chips: list[np.ndarray | None], order: str, scale: str
) -> dict[str, Any]:
    """5-fold accuracy on ``pairs.csv`` and all-pairs TAR for one model, one channel order and one
    input scale. The model takes raw pixels and normalises them as (x − 127.5)/127.5 itself;
    ``scale`` "unit" feeds x/2 + 127.5 instead, i.e. the model sees x/255 (0..1) — the alternative
    normalisation that the measurement rules out (or not)."""
    from edged_bench.metrics import evaluate

    embedder = TfliteEmbedder(model)
    found = [i for i, chip in enumerate(chips) if chip is not None]
    vectors = np.zeros((len(chips), 512))
    for i in found:
        chip = chips[i]
        assert chip is not None
        pixels = chip[..., ::-1] if order == "BGR" else chip
        if scale == "unit":
            pixels = pixels.astype(np.float32) / 2 + 127.5
        vectors[i] = embedder(np.ascontiguousarray(pixels))
    vectors[found] /= np.linalg.norm(vectors[found], axis=1, keepdims=True)
    index = {name: i for i, name in enumerate(names)}
    with (folder / "pairs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    distances, same, folds = [], [], []
    for row in rows:
        a, b = index[row["image_a"]], index[row["image_b"]]
        missing = chips[a] is None or chips[b] is None
        distances.append(float("inf") if missing else 1.0 - float(vectors[a] @ vectors[b]))
        same.append(int(row["same_person"]))
        folds.append(int(row["fold"]))
    failures = sum(1 for d in distances if not np.isfinite(d))
    report = evaluate(np.array(distances), np.array(same), np.array(folds), 0.0, failures)
    identities = [names[i].split("/")[1] for i in found]
    return {
        "model": str(model),
        "order": order,
        "scale": scale,
        "no_face": len(chips) - len(found),
        "pairs": report.as_json(),
        "all_pairs_tar": all_pairs_tar(vectors[found], identities),
    }


def speed_report(models: list[Path], runs: int, rounds: int = 5) -> dict[str, float]:
    """Median latency (ms, one thread) of each model, the models interleaved over ``rounds``
    rounds of ``runs`` runs so that a load change on the machine hits them all alike."""
    rng = np.random.default_rng(0)
    embedders = [TfliteEmbedder(path) for path in models]
    times: dict[str, list[float]] = {str(path): [] for path in models}
    for _ in range(rounds):
        for path, embedder in zip(models, embedders, strict=True):
            chip = rng.integers(0, 256, (embedder.input_size, embedder.input_size, 3), dtype=np.uint8)
            times[str(path)].append(embedder.median_latency_ms(chip, runs))
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare TFLite embedders with dlib.")
    parser.add_argument("models", type=Path, nargs="+", help=".tflite embedders to evaluate")
    parser.add_argument("--images", type=Path, help="folder of face images (recursive)")
    parser.add_argument("--dlib-models", type=Path, help="face_recognition_models/models")
    parser.add_argument("--lfw", type=Path, help="score 112x112 embedders on this lfw-dev-like folder")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="BlazeFace + mesh (--lfw)")
    parser.add_argument("--order", nargs="+", default=["RGB"], choices=("RGB", "BGR"), help="--lfw")
    parser.add_argument("--scale", nargs="+", default=["signed"], choices=("signed", "unit"), help="--lfw")
    parser.add_argument("--speed", action="store_true", help="only time the models (same run, 1 thread)")
    parser.add_argument("--reference", type=Path, help="model whose outputs the others are compared to")
    parser.add_argument("--count", type=int, default=300, help="number of chips")
    parser.add_argument("--stride", type=int, default=1, help="use every n-th image")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.speed or args.lfw:
        return _lfw_or_speed(args)
    if args.images is None or args.dlib_models is None:
        raise SystemExit("--images and --dlib-models are required (or --lfw / --speed)")
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


def _lfw_or_speed(args: argparse.Namespace) -> int:
    document: dict[str, Any] = {}
    if args.speed:
        document["speed_ms"] = speed_report(args.models, args.runs or 200)
    if args.lfw:
        names, chips = lfw_chips(args.lfw, args.model_dir)
        document["lfw"] = [
            lfw_report(model, args.lfw, names, chips, order, scale)
            for model in args.models
            for order in args.order
            for scale in args.scale
        ]
    text = json.dumps(document, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
