"""BlazeFace face detection (MediaPipe short-range 128×128 and full-range 192×192 models).

The frame is letterboxed to a square, resized and normalised to [-1, 1]; the anchor regressions are
decoded, scored with a clipped sigmoid, merged with weighted non-maximum suppression and mapped back
to frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edged.inference.runtime import TFLiteModel
from edged.types import Box, Detection, FloatArray, ImageRGB


@dataclass(frozen=True, slots=True)
class DetectorVariant:
    model_key: str
    size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]
    score_threshold: float


SHORT_RANGE = DetectorVariant("face_detector_short", 128, (8, 16), (2, 6), 0.5)
FULL_RANGE = DetectorVariant("face_detector_full", 192, (4,), (1,), 0.6)
VARIANTS = {"short": SHORT_RANGE, "full": FULL_RANGE}


def make_anchors(variant: DetectorVariant) -> FloatArray:
    """Anchor centres (N×2, normalised) in the models' order: row-major per grid, finest first."""
    centres = []
    for stride, per_cell in zip(variant.strides, variant.anchors_per_cell, strict=True):
        grid = variant.size // stride
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        cells = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the model's square input: frame = (model_px - pad) / scale."""

    scale: float
    pad_x: float
    pad_y: float


def letterbox(image: ImageRGB, size: int) -> tuple[np.ndarray, Letterbox]:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = resized
    return canvas, Letterbox(scale, float(pad_x), float(pad_y))


def weighted_nms(
    boxes: FloatArray, scores: FloatArray, iou_threshold: float
) -> list[tuple[FloatArray, float]]:
    """MediaPipe's weighted NMS: each cluster (IoU above the threshold with its best member) is
    replaced by the score-weighted mean of its members' coordinates, keeping the best score.
    ``boxes`` rows are [x1, y1, x2, y2, keypoints...]."""
    order = np.argsort(-scores)
    remaining = order
    merged: list[tuple[FloatArray, float]] = []
    while remaining.size:
        best = remaining[0]
        b = boxes[remaining]
        ix = np.clip(np.minimum(b[:, 2], boxes[best, 2]) - np.maximum(b[:, 0], boxes[best, 0]), 0, None)
        iy = np.clip(np.minimum(b[:, 3], boxes[best, 3]) - np.maximum(b[:, 1], boxes[best, 1]), 0, None)
        inter = ix * iy
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        best_area = (boxes[best, 2] - boxes[best, 0]) * (boxes[best, 3] - boxes[best, 1])
        iou = inter / np.maximum(area + best_area - inter, 1e-9)
        cluster = remaining[iou > iou_threshold]
        weights = scores[cluster]
        merged.append(((boxes[cluster] * weights[:, None]).sum(0) / weights.sum(), float(scores[best])))
        remaining = remaining[iou <= iou_threshold]
    return merged


class FaceDetector:
    """Finds faces in an RGB frame. ``min_face`` is the smallest box side, in frame pixels, kept."""

    def __init__(
        self,
        model: TFLiteModel,
        variant: DetectorVariant = SHORT_RANGE,
        score_threshold: float | None = None,
        min_face: float = 20.0,
        iou_threshold: float = 0.3,
    ) -> None:
        self.model = model
        self.variant = variant
        self.score_threshold = variant.score_threshold if score_threshold is None else score_threshold
        self.min_face = min_face
        self.iou_threshold = iou_threshold
        self.anchors = make_anchors(variant)
        expected = (1, variant.size, variant.size, 3)
        if model.inputs[0].shape != expected or model.outputs[0].shape[1] != len(self.anchors):
            raise ValueError(f"{model.path.name} does not look like the {variant.model_key} BlazeFace model")

    def detect(self, image: ImageRGB) -> list[Detection]:
        size = self.variant.size
        square, lb = letterbox(image, size)
        tensor = (square.astype(np.float32) / 127.5 - 1.0)[None]
        regressors, logits = self.model.run(tensor)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0], -80.0, 80.0)))
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        raw = regressors[0, keep].astype(np.float32) / size
        anchors = self.anchors[keep]
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        rows = np.concatenate(
            [
                np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1),
                keypoints.reshape(-1, 12),
            ],
            axis=1,
        )
        # normalised letterbox coordinates → frame pixels
        rows = rows * size
        rows[:, 0::2] = (rows[:, 0::2] - lb.pad_x) / lb.scale
        rows[:, 1::2] = (rows[:, 1::2] - lb.pad_y) / lb.scale
        h, w = image.shape[:2]
        detections = []
        for row, score in weighted_nms(rows, scores[keep], self.iou_threshold):
            box = Box(float(row[0]), float(row[1]), float(row[2]), float(row[3]))
            if max(box.width, box.height) < self.min_face:
                continue
            if box.x2 <= 0 or box.y2 <= 0 or box.x1 >= w or box.y1 >= h:
                continue
            detections.append(Detection(box, score, row[4:16].reshape(6, 2).astype(np.float32)))
        return detections
