"""Aligned 150x150 face chips for int8 calibration and for evaluation.

Chip sources:

- ``astronaut_chips``: the public-domain NASA portrait shipped inside scikit-image
  (``skimage.data.astronaut()``, Eileen Collins), re-aligned and re-rendered many times with
  strong synthetic augmentation. Redistributable, so it may go into a shipped model.
  (scikit-image also ships ``lfw_subset.npy``: that is LFW and is deliberately not used.)
- ``folder_chips``: one chip per face image found under a folder (for experiments, e.g. LFW;
  such chips must never calibrate a shipped model).

Alignment uses dlib: HOG face detector + ``shape_predictor_5_face_landmarks.dat`` (from the same
face_recognition_models sdist as the embedder) + ``dlib.get_face_chip(size=150, padding=0.25)``,
which is exactly how dlib prepares the input of its face recognition ResNet.
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage
from skimage import data

CHIP_SIZE = 150
CHIP_PADDING = 0.25
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class DlibAligner:
    """dlib's own chip pipeline: HOG detector, 5-point landmarks, ``get_face_chip``."""

    def __init__(self, shape_predictor: Path) -> None:
        import dlib

        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(shape_predictor))

    def find_points(self, image: np.ndarray, upsample: int = 1) -> list[np.ndarray]:
        """5 landmarks ``(5, 2)`` (x, y) of every face, largest face first."""
        rects = sorted(self._detector(image, upsample), key=lambda r: -r.area())
        shapes = [self._predictor(image, rect) for rect in rects]
        return [np.array([(p.x, p.y) for p in s.parts()], dtype=np.float64) for s in shapes]

    def align(self, image: np.ndarray, points5: np.ndarray) -> np.ndarray:
        """A ``150x150x3`` uint8 chip for the face with these 5 landmarks."""
        dlib = self._dlib
        parts = [dlib.point(round(float(x)), round(float(y))) for x, y in points5]
        left, top = np.floor(points5.min(axis=0)).astype(int)
        right, bottom = np.ceil(points5.max(axis=0)).astype(int)
        shape = dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), parts)
        chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        return np.ascontiguousarray(chip, dtype=np.uint8)


class EdgedAligner:
    """edged's own pipeline: BlazeFace short-range + face mesh for the 5 points, and
    ``edged.pipeline.align.align_chip`` (a reimplementation of ``get_face_chip``).

    Needs the mediapipe models (``model_dir``) and the edged package of this checkout, but no
    dlib; the chips are exactly what the daemon feeds the embedder.
    """

    def __init__(self, model_dir: Path) -> None:
        repo = str(Path(__file__).resolve().parents[1])
        if repo not in sys.path:
            sys.path.insert(0, repo)
        from edged.inference.runtime import TFLiteModel
        from edged.pipeline import align, detect, mesh

        self._align = align
        self._detector = detect.FaceDetector(
            TFLiteModel(model_dir / "face_detection_short_range.tflite"), detect.SHORT_RANGE
        )
        self._mesher = mesh.FaceMesher(TFLiteModel(model_dir / "face_landmark.tflite"))

    def find_points(self, image: np.ndarray) -> list[np.ndarray]:
        """5 landmarks ``(5, 2)`` in dlib's order, from the face mesh, largest face first."""
        detections = sorted(self._detector.detect(image), key=lambda d: -d.box.area)
        return [self._align.five_points(self._mesher.mesh(image, d)) for d in detections]

    def align(self, image: np.ndarray, points5: np.ndarray) -> np.ndarray:
        chip: np.ndarray = self._align.align_chip(image, points5)
        return chip


class ArcFaceAligner(EdgedAligner):
    """edged's BlazeFace + face mesh, five points (``align.arcface_points``) and the 112×112
    ArcFace chip (``align.align_arcface``): the input of the MBF embedder."""

    def find_points(self, image: np.ndarray) -> list[np.ndarray]:
        """The five ArcFace points ``(5, 2)`` of every face: the faces whose box contains the image
        centre first (the face a pair means, as ``edged bench accuracy`` picks it), each group
        largest first."""
        cx, cy = image.shape[1] / 2, image.shape[0] / 2

        def rank(d: Any) -> tuple[bool, float]:
            box = d.box
            return (not (box.x1 <= cx <= box.x2 and box.y1 <= cy <= box.y2), -box.area)

        detections = sorted(self._detector.detect(image), key=rank)
        return [self._align.arcface_points(self._mesher.mesh(image, d)) for d in detections]

    def align(self, image: np.ndarray, points5: np.ndarray) -> np.ndarray:
        chip: np.ndarray = self._align.align_arcface(image, points5)
        return chip


Aligner = DlibAligner | EdgedAligner


@dataclass(frozen=True, slots=True)
class Augmentation:
    """Ranges of the synthetic augmentation: geometry of the alignment, face shape, photometry.

    The defaults were chosen on LFW (see tools/README.md): photometric changes alone leave the
    deep 256-channel activations of a single identity too narrow (large int8 errors on faces
    unlike the astronaut); changing the face's proportions (stretch, smooth warps) widens them.
    """

    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    max_shift: float = 0.08  # fraction of the landmark spread
    point_jitter: float = 0.015  # fraction of the landmark spread, per point
    source_scale_range: tuple[float, float] = (0.2, 1.0)  # re-render the source smaller
    stretch_range: tuple[float, float] = (0.75, 1.25)  # anisotropic chip stretch (face shape)
    warp_pixels: float = 4.0  # amplitude of a smooth random displacement field (face shape)
    gamma_range: tuple[float, float] = (0.5, 3.0)
    contrast_range: tuple[float, float] = (0.4, 1.5)
    brightness_range: tuple[float, float] = (-90.0, 50.0)
    colour_gain_range: tuple[float, float] = (0.6, 1.3)
    grey_probability: float = 0.1
    blur_probability: float = 0.3
    noise_probability: float = 0.4
    jpeg_probability: float = 0.5


def _perturb_points(points: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    centre = points.mean(axis=0)
    spread = float(np.ptp(points, axis=0).max())
    angle = math.radians(rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg))
    scale = rng.uniform(*aug.scale_range)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    shift = rng.uniform(-aug.max_shift, aug.max_shift, size=2) * spread
    jitter = rng.normal(0.0, aug.point_jitter * spread, size=points.shape)
    moved: np.ndarray = (points - centre) @ rotation.T + centre + shift + jitter
    return moved


def _resample(image: np.ndarray, factor: float) -> np.ndarray:
    """Downscale and upscale back: the face keeps its place but loses resolution."""
    height, width = image.shape[:2]
    size = (max(8, round(width * factor)), max(8, round(height * factor)))
    small = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))


def _stretch(chip: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Stretch the chip about its centre, differently along x and y (changes face proportions)."""
    sx, sy = rng.uniform(*aug.stretch_range, size=2)
    if sx == 1.0 and sy == 1.0:
        return chip
    half = CHIP_SIZE / 2.0
    # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f).
    coeffs = (1 / sx, 0.0, half - half / sx, 0.0, 1 / sy, half - half / sy)
    size = (chip.shape[1], chip.shape[0])
    image = Image.fromarray(chip).transform(size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _warp(chip: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Bend the chip with a smooth random displacement field (a 4x4 grid of random shifts,
    bicubically interpolated), changing the proportions of the face non-rigidly."""
    if aug.warp_pixels <= 0:
        return chip
    grid = rng.normal(0.0, aug.warp_pixels, size=(2, 4, 4))
    field = np.stack([ndimage.zoom(g, CHIP_SIZE / 4, order=3) for g in grid])
    rows, cols = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE].astype(np.float64)
    coords = [rows + field[0], cols + field[1]]
    channels = [ndimage.map_coordinates(chip[..., c], coords, order=1, mode="nearest") for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def _photometric(chip: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    x = chip.astype(np.float64) / 255.0
    if rng.random() < 0.5:
        x = x[:, ::-1]
    x = x ** rng.uniform(*aug.gamma_range)
    x = (x - 0.5) * rng.uniform(*aug.contrast_range) + 0.5 + rng.uniform(*aug.brightness_range) / 255.0
    x = x * rng.uniform(*aug.colour_gain_range, size=3)
    if rng.random() < aug.grey_probability:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < aug.noise_probability:
        x = x + rng.normal(0.0, rng.uniform(0.005, 0.04), size=x.shape)
    image = Image.fromarray(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if rng.random() < aug.blur_probability:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    if rng.random() < aug.jpeg_probability:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(20, 90)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def augmented_chips(
    aligner: Aligner,
    image: np.ndarray,
    count: int,
    seed: int,
    aug: Augmentation | None = None,
) -> list[np.ndarray]:
    """``count`` augmented chips of the largest face in ``image`` (the first one unaugmented)."""
    aug = aug or Augmentation()
    rng = np.random.default_rng(seed)
    faces = aligner.find_points(image)
    if not faces:
        raise RuntimeError("no face found in the calibration source image")
    points = faces[0]
    chips = [aligner.align(image, points)]
    while len(chips) < count:
        source = _resample(image, rng.uniform(*aug.source_scale_range))
        chip = aligner.align(source, _perturb_points(points, aug, rng))
        chips.append(_photometric(_warp(_stretch(chip, aug, rng), aug, rng), aug, rng))
    return chips


def astronaut_chips(aligner: Aligner, count: int, seed: int = 0) -> list[np.ndarray]:
    """Calibration chips from scikit-image's public-domain ``astronaut()`` portrait."""
    portrait = np.ascontiguousarray(data.astronaut()[..., :3])  # type: ignore[no-untyped-call]
    return augmented_chips(aligner, portrait, count, seed)


def iter_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, recursively (following symlinks), in sorted order."""
    paths = [Path(root) / name for root, _, names in os.walk(folder, followlinks=True) for name in names]
    return (p for p in sorted(paths) if p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def folder_chips(aligner: Aligner, folder: Path, count: int, stride: int = 1) -> list[np.ndarray]:
    """One chip (largest face) per image under ``folder``, every ``stride``-th image."""
    chips: list[np.ndarray] = []
    for index, path in enumerate(iter_images(folder)):
        if len(chips) >= count:
            break
        if index % stride:
            continue
        image = load_rgb(path)
        faces = aligner.find_points(image)
        if faces:
            chips.append(aligner.align(image, faces[0]))
    return chips


def save_preview(chips: list[np.ndarray], path: Path, columns: int = 16) -> None:
    """A contact sheet of chips (for eyeballing the calibration set; never shipped)."""
    rows = math.ceil(len(chips) / columns)
    sheet = np.zeros((rows * CHIP_SIZE, columns * CHIP_SIZE, 3), dtype=np.uint8)
    for i, chip in enumerate(chips):
        r, c = divmod(i, columns)
        sheet[r * CHIP_SIZE : (r + 1) * CHIP_SIZE, c * CHIP_SIZE : (c + 1) * CHIP_SIZE] = chip
    Image.fromarray(sheet).save(path)
