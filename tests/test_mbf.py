"""The MBF embedder of models/ (built by tools/build_mbf.py from ESP-DL's ``.espdl`` file).

Always run (models/ only): the manifest entries (provenance, licence, tensors) and int8 against
float32 on the astronaut's 112×112 ArcFace chip. Run when the shared data sit beside the checkout
(``<checkout>/../shared``; CI has neither, they are skipped there with the reason): the float32
TFLite against the dequantized numpy graph of the ``.espdl`` file (tools/mbf_reference.py) and
int8 against float32, on ArcFace chips of 50 lfw-dev images — the build's check set (the images
halfway between its calibration images, so none of them calibrated the int8 model).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edged.inference.manifest import MANIFEST_NAME, Manifest
from edged.inference.runtime import TFLiteModel
from edged.pipeline.align import ARCFACE_SIZE, align_arcface, arcface_points
from edged.pipeline.pipeline import FacePipeline
from edged.types import Detection, ImageRGB

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
SHARED = REPO.parent / "shared"
ESPDL = SHARED / "models-src" / "esp-dl" / "human_face_feat_mbf_s8_v1.espdl"
LFW_IMAGES = SHARED / "faces" / "lfw-dev" / "images"
ESPDL_SHA256 = "764610814b63924c61ca6029f47c5f775ceb6acaf501bd39591e178d89415c33"
KEYS = {"mbf_embedder": "int8", "mbf_embedder_float32": "float32"}

CHECK_CHIPS = 50
CALIBRATION_STRIDE_OF = 300
"""tools/build_mbf.py calibrates on every (n // 300)-th image and checks on the images halfway between."""
FLOAT_MIN_COSINE = 0.99
"""float32 TFLite vs the dequantized graph, every chip (the issue's bar; measured 1 − 3e-12)."""
INT8_MIN_COSINE = 0.95
INT8_MEDIAN_COSINE = 0.97
"""int8 vs float32 TFLite over the 50 check chips: measured min 0.956, median 0.975 (docs/models.md)."""

needs_lfw = pytest.mark.skipif(not LFW_IMAGES.is_dir(), reason=f"lfw-dev images not found at {LFW_IMAGES}")
needs_espdl = pytest.mark.skipif(not ESPDL.is_file(), reason=f"the ESP-DL source model not found at {ESPDL}")


@pytest.fixture(scope="module")
def int8() -> TFLiteModel:
    return TFLiteModel(Manifest.load(MODELS).verified_path("mbf_embedder"))


@pytest.fixture(scope="module")
def float32() -> TFLiteModel:
    return TFLiteModel(Manifest.load(MODELS).verified_path("mbf_embedder_float32"))


def central_face(detections: list[Detection], image: ImageRGB) -> Detection:
    """The largest face whose box holds the image centre, else the largest (edged bench's rule)."""
    cx, cy = image.shape[1] / 2, image.shape[0] / 2
    inside = [d for d in detections if d.box.x1 <= cx <= d.box.x2 and d.box.y1 <= cy <= d.box.y2]
    return max(inside or detections, key=lambda d: d.box.area)


def chip_of(pipeline: FacePipeline, image: ImageRGB) -> ImageRGB | None:
    detections = pipeline.detect(image)
    if not detections:
        return None
    mesh = pipeline.mesher.mesh(image, central_face(detections, image))
    return align_arcface(image, arcface_points(mesh))


def embed(model: TFLiteModel, chip: ImageRGB) -> np.ndarray:
    spec = model.inputs[0]
    (out,) = model.run(chip[None].astype(spec.dtype))
    vector = out[0].astype(np.float64)
    return vector / np.linalg.norm(vector)


def read_rgb(path: Path) -> ImageRGB:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])


@pytest.fixture(scope="module")
def lfw_chips(pipeline: FacePipeline) -> list[ImageRGB]:
    paths = sorted(p for p in LFW_IMAGES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    step = max(1, len(paths) // CALIBRATION_STRIDE_OF)
    chips: list[ImageRGB] = []
    for path in paths[step // 2 :: step]:
        chip = chip_of(pipeline, read_rgb(path))
        if chip is not None:
            chips.append(chip)
        if len(chips) == CHECK_CHIPS:
            break
    assert len(chips) == CHECK_CHIPS
    return chips


# ---------------------------------------------------------------------------------------------
# always (models/ only)


@pytest.mark.parametrize("key", sorted(KEYS))
def test_manifest_entry_names_the_source_and_matches_the_file(key: str) -> None:
    entry = yaml.safe_load((MODELS / MANIFEST_NAME).read_text())["models"][key]
    path = MODELS / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert path.stat().st_size == entry["bytes"]
    assert entry["source"]["repository"] == "https://github.com/espressif/esp-dl"
    assert len(entry["source"]["commit"]) == 40
    assert entry["source"]["path"].endswith("human_face_feat_mbf_s8_v1.espdl")
    assert entry["source"]["sha256"] == ESPDL_SHA256
    assert entry["licence"].startswith("MIT")
    Manifest.load(MODELS).entry(key).verify()


@pytest.mark.parametrize("key", sorted(KEYS))
def test_tensors_are_a_112_chip_in_and_512_floats_out(key: str) -> None:
    model = TFLiteModel(Manifest.load(MODELS).verified_path(key))
    (spec,) = model.inputs
    (out,) = model.outputs
    assert spec.shape == (1, ARCFACE_SIZE, ARCFACE_SIZE, 3)
    assert out.shape == (1, 512) and out.dtype == np.float32
    if KEYS[key] == "int8":  # the chip's bytes as they are
        assert spec.dtype == np.uint8 and (spec.scale, spec.zero_point) == (1.0, 0)
    else:
        assert spec.dtype == np.float32


def test_int8_follows_float32_on_the_astronaut(
    pipeline: FacePipeline, astronaut: ImageRGB, int8: TFLiteModel, float32: TFLiteModel
) -> None:
    chip = chip_of(pipeline, astronaut)
    assert chip is not None
    assert float(embed(int8, chip) @ embed(float32, chip)) >= INT8_MIN_COSINE


def test_the_mirrored_face_stays_close_and_noise_does_not(
    pipeline: FacePipeline, astronaut: ImageRGB, float32: TFLiteModel
) -> None:
    """A sanity check that the model sees faces (a wrong weight layout or channel order fails it)."""
    chip = chip_of(pipeline, astronaut)
    assert chip is not None
    noise = np.random.default_rng(0).integers(0, 256, chip.shape, dtype=np.uint8)
    face = embed(float32, chip)
    assert float(face @ embed(float32, np.ascontiguousarray(chip[:, ::-1]))) > 0.7
    assert float(face @ embed(float32, noise)) < 0.3


# ---------------------------------------------------------------------------------------------
# with the shared data


@pytest.fixture(scope="module")
def reference() -> object:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import mbf_reference
    finally:
        sys.path.remove(str(REPO / "tools"))
    return mbf_reference


@needs_espdl
@needs_lfw
def test_float32_tflite_is_the_dequantized_graph(
    reference: object, lfw_chips: list[ImageRGB], float32: TFLiteModel
) -> None:
    assert hashlib.sha256(ESPDL.read_bytes()).hexdigest() == ESPDL_SHA256
    graph = reference.MbfReference.from_file(ESPDL)  # type: ignore[attr-defined]
    expected = reference.unit(graph(reference.normalise(np.stack(lfw_chips))))  # type: ignore[attr-defined]
    got = np.stack([embed(float32, chip) for chip in lfw_chips])
    cosines = (expected * got).sum(axis=1)
    assert cosines.min() >= FLOAT_MIN_COSINE, cosines.min()


@needs_lfw
def test_int8_follows_float32_on_real_chips(
    lfw_chips: list[ImageRGB], int8: TFLiteModel, float32: TFLiteModel
) -> None:
    cosines = np.array([float(embed(int8, c) @ embed(float32, c)) for c in lfw_chips])
    assert cosines.min() >= INT8_MIN_COSINE, cosines.min()
    assert float(np.median(cosines)) >= INT8_MEDIAN_COSINE, np.median(cosines)
