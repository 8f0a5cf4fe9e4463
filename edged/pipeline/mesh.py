"""MediaPipe face mesh: 468 points with depth from a rotated, eye-aligned crop around a detection."""

from __future__ import annotations

import math

import cv2
import numpy as np

from edged.inference.runtime import TFLiteModel
from edged.types import Detection, FloatArray, ImageRGB, Mesh

MESH_SIZE = 192
ROI_SCALE = 1.5


def roi_transform(detection: Detection, scale: float = ROI_SCALE) -> tuple[FloatArray, float]:
    """The 2×3 affine map from crop pixels to frame pixels, and the ROI side in frame pixels.

    The ROI is centred on the box, ``scale`` × its longer side, rotated so that the eye line
    (keypoints 0 and 1) is horizontal."""
    cx, cy = detection.box.center
    side = scale * max(detection.box.width, detection.box.height)
    (rx, ry), (lx, ly) = detection.keypoints[0], detection.keypoints[1]
    angle = math.atan2(float(ly - ry), float(lx - rx))
    return crop_matrix((cx, cy), side, angle, MESH_SIZE), side


def crop_matrix(centre: tuple[float, float], side: float, angle: float, size: int) -> FloatArray:
    """The 2×3 affine map from the pixels of a ``size`` × ``size`` crop to frame pixels: a square of
    ``side`` frame pixels around ``centre``, rotated by ``angle`` (radians)."""
    cx, cy = centre
    k = side / size
    cos, sin = math.cos(angle) * k, math.sin(angle) * k
    half = size / 2
    # frame = centre + R(angle)·k·(crop − half)
    return np.array(
        [[cos, -sin, cx - cos * half + sin * half], [sin, cos, cy - sin * half - cos * half]], np.float32
    )


class FaceMesher:
    """Runs the landmark model on the ROI of a detection; points come back in frame pixels."""

    def __init__(self, model: TFLiteModel) -> None:
        self.model = model
        if model.inputs[0].shape != (1, MESH_SIZE, MESH_SIZE, 3):
            raise ValueError(f"{model.path.name} does not look like the face mesh model")

    def mesh(self, image: ImageRGB, detection: Detection) -> Mesh:
        matrix, side = roi_transform(detection)
        crop = cv2.warpAffine(
            image,
            matrix,
            (MESH_SIZE, MESH_SIZE),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
        )
        tensor = (crop.astype(np.float32) * (1.0 / 255.0))[None]
        landmarks, flag = self.model.run(tensor)
        crop_points = landmarks.reshape(468, 3)
        points = np.empty((468, 3), np.float32)
        points[:, :2] = crop_points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
        points[:, 2] = crop_points[:, 2] * (side / MESH_SIZE)
        face_score = 1.0 / (1.0 + math.exp(-max(-80.0, min(80.0, float(flag.ravel()[0])))))
        return Mesh(points, face_score)
