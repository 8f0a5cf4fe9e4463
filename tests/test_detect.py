"""BlazeFace detection (edged.pipeline.detect): anchors, weighted NMS, letterboxing, and the real
short- and full-range models on the astronaut portrait and on frames without a face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edged.pipeline.detect import (
    FULL_RANGE,
    SHORT_RANGE,
    DetectorVariant,
    FaceDetector,
    letterbox,
    make_anchors,
    weighted_nms,
)
from edged.pipeline.pipeline import FacePipeline
from edged.types import Box, ImageRGB

# ---------------------------------------------------------------------------------------------
# anchors


@pytest.mark.parametrize(
    ("variant", "count", "first", "last"),
    [
        # short range: 16×16 grid × 2 anchors (stride 8) then 8×8 × 6 (stride 16)
        (
            SHORT_RANGE,
            896,
            [(0.5 / 16, 0.5 / 16), (0.5 / 16, 0.5 / 16), (1.5 / 16, 0.5 / 16)],
            (7.5 / 8, 7.5 / 8),
        ),
        # full range: 48×48 grid × 1 anchor (stride 4)
        (
            FULL_RANGE,
            2304,
            [(0.5 / 48, 0.5 / 48), (1.5 / 48, 0.5 / 48), (2.5 / 48, 0.5 / 48)],
            (47.5 / 48, 47.5 / 48),
        ),
    ],
)
def test_make_anchors(
    variant: DetectorVariant, count: int, first: list[tuple[float, float]], last: tuple[float, float]
) -> None:
    anchors = make_anchors(variant)
    assert anchors.shape == (count, 2)
    assert anchors.dtype == np.float32
    np.testing.assert_allclose(anchors[: len(first)], first, atol=1e-7)
    np.testing.assert_allclose(anchors[-1], last, atol=1e-7)
    assert anchors.min() > 0 and anchors.max() < 1


def test_short_range_anchor_grids_are_row_major_finest_first() -> None:
    anchors = make_anchors(SHORT_RANGE)
    fine, coarse = anchors[:512], anchors[512:]
    # second row of the 16×16 grid starts after 16 cells × 2 anchors
    np.testing.assert_allclose(fine[32], (0.5 / 16, 1.5 / 16), atol=1e-7)
    np.testing.assert_allclose(coarse[:6], [(0.5 / 8, 0.5 / 8)] * 6, atol=1e-7)
    np.testing.assert_allclose(coarse[6], (1.5 / 8, 0.5 / 8), atol=1e-7)


# ---------------------------------------------------------------------------------------------
# weighted NMS


def test_weighted_nms_merges_overlapping_boxes_by_score_weighted_mean() -> None:
    boxes = np.array(
        [
            [10, 10, 50, 50, 20, 20],  # keypoint columns are averaged too
            [12, 12, 52, 52, 22, 22],
            [100, 100, 140, 140, 120, 120],  # disjoint: kept on its own
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    merged = weighted_nms(boxes, scores, iou_threshold=0.3)
    assert len(merged) == 2
    (first, first_score), (second, second_score) = merged
    assert first_score == pytest.approx(0.9)  # the best score of the cluster, best cluster first
    expected = (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5
    np.testing.assert_allclose(first, expected, rtol=1e-6)
    assert second_score == pytest.approx(0.7)
    np.testing.assert_allclose(second, boxes[2], rtol=1e-6)


@pytest.mark.parametrize(
    ("offset", "threshold", "clusters"),
    [
        (0.0, 0.3, 1),  # identical boxes: one cluster
        (5.0, 0.3, 1),  # IoU 0.78
        (20.0, 0.3, 1),  # IoU 1/3, just above 0.3
        (25.0, 0.3, 2),  # IoU 0.23 < 0.3
        (25.0, 0.2, 1),  # ... but above a lower threshold
        (50.0, 0.0, 2),  # no overlap at all
    ],
)
def test_weighted_nms_clusters_by_iou_threshold(offset: float, threshold: float, clusters: int) -> None:
    boxes = np.array([[0, 0, 40, 40], [offset, 0, 40 + offset, 40]], np.float32)
    merged = weighted_nms(boxes, np.array([0.8, 0.8], np.float32), threshold)
    assert len(merged) == clusters


def test_weighted_nms_keeps_every_disjoint_box_in_score_order() -> None:
    boxes = np.array([[i * 100, 0, i * 100 + 50, 50] for i in range(5)], np.float32)
    scores = np.array([0.2, 0.9, 0.5, 0.7, 0.6], np.float32)
    merged = weighted_nms(boxes, scores, 0.3)
    assert [s for _, s in merged] == pytest.approx([0.9, 0.7, 0.6, 0.5, 0.2])
    np.testing.assert_allclose(merged[0][0], boxes[1])


# ---------------------------------------------------------------------------------------------
# letterbox


@pytest.mark.parametrize(("width", "height", "size"), [(640, 480, 128), (1280, 720, 192), (300, 500, 128)])
def test_letterbox_round_trip(width: int, height: int, size: int) -> None:
    frame = np.full((height, width, 3), 40, np.uint8)
    x1, y1, x2, y2 = width // 4, height // 3, width // 2, (2 * height) // 3
    frame[y1:y2, x1:x2] = 220
    square, lb = letterbox(frame, size)
    assert square.shape == (size, size, 3)
    assert square.dtype == np.uint8
    # the padding is black and the frame is centred
    assert lb.scale == pytest.approx(size / max(width, height))
    ys, xs = np.nonzero(square[..., 0] > 0)
    content = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert content[0] == pytest.approx(lb.pad_x, abs=1)
    assert content[1] == pytest.approx(lb.pad_y, abs=1)
    # the bright rectangle, found in model pixels, maps back to frame pixels: frame = (px - pad) / scale
    ys, xs = np.nonzero(square[..., 0] > 130)
    back = [
        (xs.min() - lb.pad_x) / lb.scale,
        (ys.min() - lb.pad_y) / lb.scale,
        (xs.max() + 1 - lb.pad_x) / lb.scale,
        (ys.max() + 1 - lb.pad_y) / lb.scale,
    ]
    one_model_pixel = 1.0 / lb.scale
    np.testing.assert_allclose(back, [x1, y1, x2, y2], atol=1.5 * one_model_pixel)


# ---------------------------------------------------------------------------------------------
# the real models


def test_astronaut_detection(pipeline: FacePipeline, astronaut: ImageRGB, astronaut_box: Box) -> None:
    detections = pipeline.detect(astronaut)
    assert len(detections) == 1
    det = detections[0]
    assert det.box.iou(astronaut_box) > 0.95, det.box
    assert 0.5 <= det.score <= 1.0
    assert det.keypoints.shape == (6, 2)
    right_eye, left_eye, nose, mouth, right_ear, left_ear = det.keypoints
    # subject's right eye is on the image left; ears outside the eyes; nose between eyes and mouth
    assert right_eye[0] < nose[0] < left_eye[0]
    assert right_ear[0] < right_eye[0] and left_ear[0] > left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    for x, y in det.keypoints[:4]:
        assert det.box.x1 <= x <= det.box.x2 and det.box.y1 <= y <= det.box.y2


def test_full_range_detector_finds_the_astronaut(
    pipeline_full: FacePipeline, astronaut: ImageRGB, astronaut_box: Box
) -> None:
    detections = pipeline_full.detect(astronaut)
    assert len(detections) == 1
    assert detections[0].box.iou(astronaut_box) > 0.7, detections[0].box


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket", "grey"])
@pytest.mark.parametrize("detector", ["short", "full"])
def test_no_face_in_frames_without_a_face(
    pipeline: FacePipeline,
    pipeline_full: FacePipeline,
    no_face_images: dict[str, ImageRGB],
    name: str,
    detector: str,
) -> None:
    chosen = pipeline if detector == "short" else pipeline_full
    detections = chosen.detect(no_face_images[name])
    assert detections == [], [(d.box, d.score) for d in detections]


def test_detection_is_deterministic(pipeline: FacePipeline, astronaut: ImageRGB) -> None:
    a, b = pipeline.detect(astronaut), pipeline.detect(astronaut)
    assert [d.box for d in a] == [d.box for d in b]
    np.testing.assert_array_equal(a[0].keypoints, b[0].keypoints)


def test_two_faces_are_both_found(pipeline: FacePipeline, astronaut: ImageRGB) -> None:
    head = astronaut[20:250, 110:340]  # the face at (68, 61)-(162, 155) of this crop
    small = cv2.resize(head, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    frame = np.full((230, 230 + 20 + small.shape[1], 3), 90, np.uint8)
    frame[:, :230] = head
    frame[20 : 20 + small.shape[0], 250 : 250 + small.shape[1]] = small
    expected = [Box(68, 61, 162, 155), Box(250 + 68 * 0.6, 20 + 61 * 0.6, 250 + 162 * 0.6, 20 + 155 * 0.6)]
    faces = pipeline.faces(frame, embed=False)
    assert len(faces) == 2
    # largest first
    assert faces[0].detection.box.area > faces[1].detection.box.area
    for face, box in zip(faces, expected, strict=True):
        assert face.detection.box.iou(box) > 0.7, (face.detection.box, box)


def test_min_face_drops_smaller_boxes(pipeline: FacePipeline, astronaut: ImageRGB) -> None:
    strict = FaceDetector(pipeline.detector.model, SHORT_RANGE, min_face=120.0)
    assert strict.detect(astronaut) == []  # the face is ~94 px
    lenient = FaceDetector(pipeline.detector.model, SHORT_RANGE, min_face=60.0)
    assert len(lenient.detect(astronaut)) == 1
