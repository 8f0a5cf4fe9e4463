"""The built-in demo: the pipeline on scikit-image's public-domain astronaut portrait (Eileen
Collins, NASA), so it runs on a fresh machine with no camera, no broker and no shared data."""

from __future__ import annotations

import json

import cv2
import numpy as np

from edged.errors import ConfigError, NoFaceDetected
from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.verify import verify
from edged.types import ImageRGB


def astronaut() -> ImageRGB:
    """The 512×512 RGB astronaut portrait that ships inside scikit-image (public domain)."""
    try:
        from skimage import data
    except ImportError as exc:
        raise ConfigError("the demo image comes from scikit-image: pip install 'edged[demo]'") from exc
    portrait: ImageRGB = np.ascontiguousarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    return portrait


def shifted(image: ImageRGB, dx: int, dy: int) -> ImageRGB:
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    size = (image.shape[1], image.shape[0])
    return np.asarray(cv2.warpAffine(image, matrix, size, borderMode=cv2.BORDER_REPLICATE), dtype=np.uint8)


def run_demo(pipeline: FacePipeline) -> int:
    original = astronaut()
    variants = {
        "shifted by (40, 25) px": shifted(original, 40, 25),
        "mirrored": np.ascontiguousarray(original[:, ::-1]),
    }
    faces = pipeline.faces(original)
    if not faces:
        raise NoFaceDetected("the demo found no face in the astronaut portrait: the models are broken")
    reference = faces[0]
    assert reference.embedding is not None
    print(f"astronaut portrait {original.shape[1]}×{original.shape[0]}: {len(faces)} face(s)")
    print(
        "  reference face:",
        json.dumps(
            {
                "box": reference.detection.box.as_list(),
                "score": round(reference.detection.score, 3),
                "quality": reference.quality.reasons or "ok",
            }
        ),
    )
    for name, image in variants.items():
        found = pipeline.faces(image)
        if not found or found[0].embedding is None:
            print(f"  {name}: no face found")
            continue
        result = verify(reference.embedding, found[0].embedding, pipeline.calibration)
        print(f"  verify against {name}: {json.dumps(result.as_json())}")
    return 0
