"""Measure where the face-mesh points used for alignment fall in dlib's face chip.

For each face of a folder of photographs: BlazeFace + face mesh (edged's own stages) give the mesh
points; dlib's five-point shape predictor (face_recognition_models==0.3.0) gives the landmarks that
``dlib.get_face_chip`` aligns on. The similarity that maps dlib's chip template onto those landmarks
is inverted to carry the mesh points into chip coordinates; their mean over all faces is the
template printed here (``edged.pipeline.align.MESH_TEMPLATE``). Only averaged geometry leaves this
script: no image, no per-face data.

    python tools/fit_mesh_template.py --images ../shared/faces/lfw-dev/images --count 500

Needs dlib (the tools venv, or ``pip install ../shared/wheels/dlib-*.whl face_recognition_models``).
The shipped template was measured on 500 randomly chosen LFW-dev images (seed 1).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from edged.pipeline.align import CHIP_TEMPLATE, MESH_INDICES, fit_similarity
from edged.pipeline.image import read_image
from edged.pipeline.pipeline import FacePipeline


def to_chip(points: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Frame points → dlib chip coordinates, through the chip that ``landmarks`` align."""
    scale, angle, t = fit_similarity(CHIP_TEMPLATE, landmarks)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.asarray(((points - t) @ rot) / scale)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import dlib
    import face_recognition_models

    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    pipeline = FacePipeline.load()
    files = sorted(args.images.rglob("*.jpg"))
    random.seed(args.seed)
    chosen = random.sample(files, min(args.count, len(files)))
    samples = []
    for path in chosen:
        image = read_image(path)
        faces = pipeline.faces(image, embed=False)
        if not faces or faces[0].mesh is None:
            continue
        box = faces[0].detection.box
        shape = predictor(image, dlib.rectangle(int(box.x1), int(box.y1), int(box.x2), int(box.y2)))
        landmarks = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], np.float64)
        samples.append(to_chip(faces[0].mesh.points[list(MESH_INDICES), :2].astype(np.float64), landmarks))
    template = np.mean(samples, axis=0)
    spread = np.std(samples, axis=0).mean()
    print(f"# {len(samples)} faces; mean per-point standard deviation {spread:.2f} chip px", file=sys.stderr)
    for index, (x, y) in zip(MESH_INDICES, template, strict=True):
        print(f"        [{x:.3f}, {y:.3f}],  # {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
