"""Real inputs for the liveness cue tests: the dev video decoded in memory, a track of liveness frames
from real images through the real pipeline, and a real face with its eyes closed (for the blink)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edged.pipeline.eyes import EyeModel
from edged.pipeline.liveness import FacePatch, LivenessFrame
from edged.pipeline.pipeline import FacePipeline
from edged.types import FloatArray, ImageRGB

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HAMILTON = SHARED / "faces" / "dev" / "face_recognition" / "examples" / "short_hamilton_clip.mp4"
"""A performer on stage turning his head (640×360, 29.97 fps): real head motion."""
SILENT_FACE_SAMPLES = SHARED / "models-src" / "silent-face" / "sample"
"""The three sample images beside the anti-spoofing weights: T1 real, F1 a print, F2 a screen."""

# the mesh's eye contours (subject's right, left) and lower lids, outer corner → inner corner
RIGHT_EYE = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
LOWER_LIDS = ((33, 7, 163, 144, 145, 153, 154, 155, 133), (263, 249, 390, 373, 374, 380, 381, 382, 362))


def video(path: Path, step: int = 3) -> list[ImageRGB]:
    """Every ``step``-th frame of a video as RGB, decoded in memory with cv2.VideoCapture."""
    capture = cv2.VideoCapture(str(path))
    frames: list[ImageRGB] = []
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            index += 1
    finally:
        capture.release()
    return frames


def track(
    pipeline: FacePipeline,
    images: Sequence[ImageRGB],
    fps: float = 10.0,
    eyes: EyeModel | None = None,
    scores: Sequence[float | None] | None = None,
) -> list[LivenessFrame]:
    """The liveness frames of the largest face of each image (images without a face are skipped),
    ``1 / fps`` apart, with their face patches, the eyes' openness when ``eyes`` is given and the
    model scores given (None: not run)."""
    frames = []
    for index, image in enumerate(images):
        faces = pipeline.faces(image, embed=False)
        if not faces:
            continue
        face = faces[0]
        assert face.mesh is not None
        points, box = face.mesh.points, face.detection.box
        openness = eyes.openness(image, points) if eyes is not None else None
        score = scores[index] if scores is not None else None
        frames.append(
            LivenessFrame(
                index / fps, box, points, face.quality.ok, score, openness, FacePatch.of(image, box)
            )
        )
    return frames


def closed_eyes(image: ImageRGB, points: FloatArray) -> ImageRGB:
    """``image`` with the face's eyes closed: each eye (its mesh contour, grown by 40 %) painted over
    from the skin around it, and a dark lash line drawn along the lower lid, lightly blurred."""
    mask = np.zeros(image.shape[:2], np.uint8)
    for eye in (RIGHT_EYE, LEFT_EYE):
        contour = points[list(eye), :2].astype(np.float64)
        centre = contour.mean(axis=0)
        cv2.fillPoly(mask, [np.round((contour - centre) * 1.4 + centre).astype(np.int32)], 255)
    closed = cv2.inpaint(np.ascontiguousarray(image), mask, 5, cv2.INPAINT_TELEA)
    for lid in LOWER_LIDS:
        line = np.round(points[list(lid), :2] * 4).astype(np.int32)
        cv2.polylines(closed, [line], False, (60, 40, 35), 2, cv2.LINE_AA, shift=2)
    return np.ascontiguousarray(cv2.GaussianBlur(closed, (3, 3), 0))
