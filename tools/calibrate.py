"""Calibrate the embedder's decision thresholds on LFW-dev and store them in models/manifest.yaml.

Method (docs/calibration.md): embed every image of the calibration set with the daemon's own
pipeline (the face nearest the image centre), form ALL genuine pairs (same identity) and ALL
impostor pairs (different identities), and for each target false-accept rate take the largest
distance threshold whose impostor acceptance rate is at most that FAR. The distance→confidence map
is a logistic curve fitted to the genuine/impostor labels, centred so that confidence 0.5 falls on
the default threshold, sampled into a monotone piecewise-linear table.

    python tools/calibrate.py --root ../shared/faces/lfw-dev [--family dlib|mbf]
        [--embedder int8|float32] [--write]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent / "bench"))  # edged_bench.accuracy

import manifest_yaml

from edged.inference.manifest import MANIFEST_NAME, default_model_dir
from edged.pipeline.embed import FAMILIES
from edged.pipeline.image import read_image
from edged.pipeline.pipeline import EMBEDDER_KEYS, FacePipeline, PipelineSettings
from edged_bench.accuracy import choose_face

FARS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_FAR = 1e-3


def embed_all(
    root: Path, embedder: str, flip_average: bool, family: str = "dlib"
) -> tuple[np.ndarray, list[str], list[str]]:
    settings = PipelineSettings(recognition_model=family, embedder=embedder, flip_average=flip_average)
    pipeline = FacePipeline.load(settings=settings)
    with (root / "identities.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    vectors, identities, missing = [], [], []
    start = time.perf_counter()
    for row in rows:
        image = read_image(root / row["image"])
        faces = pipeline.faces(image, embed=False)
        if not faces:
            missing.append(row["image"])
            continue
        h, w = image.shape[:2]
        face = pipeline.embed(image, faces[choose_face([f.detection.box for f in faces], w, h)])
        assert face.embedding is not None
        vectors.append(face.embedding)
        identities.append(row["identity"])
    print(
        f"embedded {len(vectors)} images in {time.perf_counter() - start:.1f} s; no face in {len(missing)}",
        file=sys.stderr,
    )
    return np.stack(vectors).astype(np.float32), identities, missing


def pair_distances(vectors: np.ndarray, identities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All genuine and all impostor distances (upper triangle of the distance matrix)."""
    labels = np.unique(identities, return_inverse=True)[1]
    sq = (vectors.astype(np.float64) ** 2).sum(1)
    genuine, impostor = [], []
    for i in range(len(vectors) - 1):
        d = np.sqrt(np.maximum(sq[i] + sq[i + 1 :] - 2 * vectors[i + 1 :] @ vectors[i], 0))
        same = labels[i + 1 :] == labels[i]
        genuine.append(d[same])
        impostor.append(d[~same].astype(np.float32))
    return np.concatenate(genuine), np.concatenate(impostor)


def threshold_at(impostor_sorted: np.ndarray, far: float) -> float:
    """Largest threshold t with #(impostor ≤ t) / n ≤ far: just below the (k+1)-th smallest."""
    allowed = math.floor(far * impostor_sorted.size)
    return float(np.nextafter(impostor_sorted[allowed], -np.inf))


def fit_slope(genuine: np.ndarray, impostor: np.ndarray, centre: float) -> float:
    """Logistic slope k for P(same | d) = 1 / (1 + exp(k (d - centre))), by Newton's method on a
    balanced sample (equal weight to both classes)."""
    rng = np.random.default_rng(0)
    imp = rng.choice(impostor, size=min(impostor.size, 200_000), replace=False)
    x = np.concatenate([genuine, imp]) - centre
    y = np.concatenate([np.ones(genuine.size), np.zeros(imp.size)])
    w = np.concatenate([np.full(genuine.size, 0.5 / genuine.size), np.full(imp.size, 0.5 / imp.size)])
    k = 10.0
    for _ in range(50):
        p = 1 / (1 + np.exp(np.clip(k * x, -50, 50)))
        grad = np.sum(w * (y - p) * -x)  # d/dk of the log-likelihood
        hess = -np.sum(w * p * (1 - p) * x * x)
        step = grad / hess
        k -= step
        if abs(step) < 1e-6:
            break
    return float(k)


def calibration_table(genuine: np.ndarray, impostor: np.ndarray, pairs_source: str) -> dict[str, object]:
    impostor_sorted = np.sort(impostor)
    thresholds = [
        {
            "far": far,
            "threshold": round(threshold_at(impostor_sorted, far), 4),
            "impostor_pairs": int(impostor.size),
            "tar": round(float((genuine <= threshold_at(impostor_sorted, far)).mean()), 4),
        }
        for far in FARS
    ]
    default = next(t["threshold"] for t in thresholds if t["far"] == DEFAULT_FAR)
    k = fit_slope(genuine, impostor, float(default))  # type: ignore[arg-type]
    grid = np.round(np.arange(0.0, 2.01, 0.05), 2)  # unit-length templates are at most 2 apart
    points = [[float(d), round(float(1 / (1 + math.exp(k * (d - float(default))))), 4)] for d in grid]  # type: ignore[arg-type]
    points.append([round(float(default), 4), 0.5])
    points.sort()
    return {
        "method": "all genuine and all impostor pairs of the calibration set; threshold = largest distance "
        "whose impostor acceptance rate is <= far; confidence = logistic fit centred on the default",
        "source": pairs_source,
        "genuine_pairs": int(genuine.size),
        "default_far": DEFAULT_FAR,
        "default_threshold": default,
        "logistic_slope": round(k, 4),
        "far_thresholds": thresholds,
        "confidence_points": points,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True, help="calibration set with identities.csv")
    parser.add_argument("--family", choices=tuple(FAMILIES), default="dlib", help="the embedder family")
    parser.add_argument("--embedder", choices=tuple(EMBEDDER_KEYS), default="int8", help="its precision")
    parser.add_argument("--flip-average", action="store_true", help="calibrate flip-averaged templates")
    parser.add_argument("--write", action="store_true", help="store the table in models/manifest.yaml")
    args = parser.parse_args()
    vectors, identities, missing = embed_all(args.root, args.embedder, args.flip_average, args.family)
    genuine, impostor = pair_distances(vectors, identities)
    table = calibration_table(
        genuine,
        impostor,
        f"{args.root.name}: {len(vectors)} images, "
        f"{len(set(identities))} identities ({len(missing)} without a detected face)",
    )
    print(json.dumps(table, indent=1))
    if args.write:
        path = default_model_dir() / MANIFEST_NAME
        data = yaml.safe_load(path.read_text())
        key = "calibration_flip_average" if args.flip_average else "calibration"
        model_key = FAMILIES[args.family].keys[args.embedder]
        data["models"][model_key][key] = table
        manifest_yaml.write(path, data)
        print(f"wrote the calibration of {model_key} to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
