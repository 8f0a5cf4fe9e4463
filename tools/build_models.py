"""Rebuild every file in ``models/`` from its registry package, and write ``models/manifest.yaml``.

Run with the tools venv (see tools/README.md)::

    /work/venv-tools/bin/python tools/build_models.py --out models/

Steps:

1. ``pip download --no-deps`` the mediapipe 0.10.14 wheel and the face_recognition_models 0.3.0
   sdist into a temporary directory (or reuse them from ``--cache DIR``);
2. copy the BlazeFace detectors and the face mesh byte-for-byte out of the wheel;
3. parse dlib's ResNet (``tools/dlib_format.py``), rebuild it in TensorFlow
   (``tools/dlib_resnet.py``) and convert it to a float32 TFLite model;
4. quantize it to full int8 (uint8 raw-pixel input, float32 output), calibrated on augmented
   chips of scikit-image's public-domain astronaut portrait (``--calib``/``--calib-dir``),
   aligned by this checkout's edged pipeline (``--aligner edged``, default) or by dlib;
5. write the manifest (sha256, size, source, licence, tensor specs), keeping any
   ``calibration:`` entries of an existing manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import manifest_yaml
import numpy as np
import tensorflow as tf
import yaml
from ai_edge_litert.interpreter import Interpreter
from chips import Aligner, DlibAligner, EdgedAligner, astronaut_chips, folder_chips
from dlib_format import load_network
from dlib_resnet import DlibResNet

logger = logging.getLogger("build_models")

MANIFEST_SCHEMA = 1
DEFAULT_CALIB_COUNT = 300


@dataclass(frozen=True, slots=True)
class Package:
    """A registry artifact and how to fetch it with ``pip download``."""

    requirement: str
    artifact_glob: str
    pip_args: tuple[str, ...] = ()


MEDIAPIPE = Package(
    "mediapipe==0.10.14",
    "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64*.whl",
    ("--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_17_x86_64"),
)
FACE_RECOGNITION_MODELS = Package("face_recognition_models==0.3.0", "face_recognition_models-0.3.0.tar.gz")

MEDIAPIPE_LICENCE = "Apache-2.0"
DLIB_LICENCE = (
    "CC0-1.0 (public domain; released by Davis King; LICENSE file of face_recognition_models-0.3.0)"
)
DLIB_MODEL_PATH = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_PATH = "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
EMBEDDER_NORMALISATION = "raw RGB 0..255 (mean/256 folded into the first conv)"
EMBEDDER_FLOAT32 = "dlib_resnet_v1_float32.tflite"
EMBEDDER_INT8 = "dlib_resnet_v1_int8.tflite"


@dataclass(frozen=True, slots=True)
class CopiedModel:
    """A model taken byte-for-byte from the mediapipe wheel."""

    key: str
    file: str
    wheel_path: str
    purpose: str
    normalisation: str


COPIED_MODELS = (
    CopiedModel(
        "face_detector_short",
        "face_detection_short_range.tflite",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "BlazeFace short-range face detector (faces within ~2 m), 128x128 input, 896 anchors",
        "RGB, x/127.5 - 1",
    ),
    CopiedModel(
        "face_detector_full",
        "face_detection_full_range_sparse.tflite",
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "BlazeFace full-range face detector (faces up to ~5 m), 192x192 input, 2304 anchors",
        "RGB, x/127.5 - 1",
    ),
    CopiedModel(
        "face_mesh",
        "face_landmark.tflite",
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "MediaPipe face mesh: 468 3-D landmarks and a face score on a 192x192 face crop",
        "RGB, x/255",
    ),
    CopiedModel(
        "iris_landmark",
        "iris_landmark.tflite",
        "mediapipe/modules/iris_landmark/iris_landmark.tflite",
        "MediaPipe iris landmarks: 71 eye-contour and brow points and 5 iris points on a 64x64 crop of "
        "one eye (a left eye in the image; the other eye is mirrored); the liveness blink cue",
        "RGB, x/255",
    ),
)


# --------------------------------------------------------------------------- sources


def fetch(package: Package, dest: Path, cache: Path | None) -> Path:
    """The artifact from ``cache`` if present there, else ``pip download`` it into ``dest``."""
    for folder in (cache, dest):
        if folder is not None:
            found = sorted(folder.glob(package.artifact_glob))
            if found:
                logger.info("using %s", found[0])
                return found[0]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(dest)]
    command += [*package.pip_args, package.requirement]
    logger.info("running %s", " ".join(command))
    subprocess.run(command, check=True)
    found = sorted(dest.glob(package.artifact_glob))
    if not found:
        raise FileNotFoundError(f"pip download produced no {package.artifact_glob}")
    return found[0]


def read_from_wheel(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)


def extract_from_sdist(sdist: Path, member: str, dest: Path) -> Path:
    """Extract ``<top>/<member>`` of an sdist to ``dest/<basename>``."""
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        source = archive.extractfile(f"{top}/{member}")
        if source is None:
            raise FileNotFoundError(f"{member} not in {sdist.name}")
        target = dest / Path(member).name
        target.write_bytes(source.read())
    return target


# --------------------------------------------------------------------------- conversion


def _converter(module: Any) -> Any:
    function = module.serve.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([function], module)


def convert_float32(module: Any) -> bytes:
    return bytes(_converter(module).convert())


def _anchor_input_range(chips: list[np.ndarray]) -> list[np.ndarray]:
    """Make the calibrated input range exactly [0, 255] so that the uint8 input has scale 1
    and zero point 0 (the runtime then feeds the chip's bytes as they are): two corner pixels
    of the first chip are set to 0 and 255."""
    first = chips[0].copy()
    first[0, 0] = 0
    first[0, 1] = 255
    return [first, *chips[1:]]


def convert_int8(module: Any, chips: list[np.ndarray]) -> bytes:
    """Full-integer int8 model: uint8 raw-pixel input, int8 ops, float32 output."""
    samples = _anchor_input_range(chips)

    def representative() -> Iterator[list[np.ndarray]]:
        for chip in samples:
            yield [chip[None].astype(np.float32)]

    converter = _converter(module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    return bytes(converter.convert())


# --------------------------------------------------------------------------- manifest


def _interpreter(path: Path) -> Any:
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _tensor_specs(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = []
    for detail in details:
        scale, zero_point = detail["quantization"]
        specs.append(
            {
                "name": str(detail["name"]),
                "shape": [int(d) for d in detail["shape"]],
                "dtype": np.dtype(detail["dtype"]).name,
                "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
            }
        )
    return specs


def tensor_specs(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    interpreter = _interpreter(path)
    return _tensor_specs(interpreter.get_input_details()), _tensor_specs(interpreter.get_output_details())


def weight_types(path: Path) -> set[str]:
    """Dtypes of the constant tensors of a model (to describe its quantization)."""
    interpreter = _interpreter(path)
    runtime = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    return {
        np.dtype(d["dtype"]).name
        for d in interpreter.get_tensor_details()
        if d["index"] not in runtime and len(d["shape"]) > 1
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """What the manifest says about one model besides its hash, size and tensors."""

    key: str
    file: str
    purpose: str
    source: dict[str, str]
    licence: str
    normalisation: str
    quantization: str


def manifest_entry(folder: Path, entry: ModelEntry) -> dict[str, Any]:
    path = folder / entry.file
    inputs, outputs = tensor_specs(path)
    return {
        "file": entry.file,
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
        "purpose": entry.purpose,
        "source": entry.source,
        "licence": entry.licence,
        "inputs": inputs,
        "outputs": outputs,
        "normalisation": entry.normalisation,
        "quantization": entry.quantization,
    }


CALIBRATION_KEYS = manifest_yaml.CALIBRATION_KEYS


def write_manifest(folder: Path, entries: list[ModelEntry]) -> Path:
    """Write ``manifest.yaml``, carrying over the calibrations of models already listed and the
    entries of models this script does not build (the anti-spoofing models of build_liveness.py)."""
    path = folder / "manifest.yaml"
    previous: dict[str, Any] = {}
    if path.exists():
        previous = (yaml.safe_load(path.read_text()) or {}).get("models") or {}
    models: dict[str, Any] = {}
    for entry in entries:
        models[entry.key] = manifest_entry(folder, entry)
        for key in CALIBRATION_KEYS:
            calibration = (previous.get(entry.key) or {}).get(key)
            if calibration is not None:
                models[entry.key][key] = calibration
    for key, item in previous.items():
        models.setdefault(key, item)
    document = {"schema": MANIFEST_SCHEMA, "models": models}
    manifest_yaml.write(path, document)
    return path


def _describe_float_weights(path: Path) -> str:
    kinds = weight_types(path)
    if "float16" in kinds:
        return "float16 weights (as shipped)"
    return f"{'/'.join(sorted(kinds))} weights (as shipped)"


# --------------------------------------------------------------------------- steps


def copy_mediapipe_models(wheel: Path, out: Path) -> list[ModelEntry]:
    entries = []
    for model in COPIED_MODELS:
        target = out / model.file
        target.write_bytes(read_from_wheel(wheel, model.wheel_path))
        logger.info("copied %s (%d bytes)", model.file, target.stat().st_size)
        source = {
            "package": MEDIAPIPE.requirement,
            "artifact": wheel.name,
            "path": model.wheel_path,
            "transform": "copied byte-for-byte",
        }
        entries.append(
            ModelEntry(
                model.key,
                model.file,
                model.purpose,
                source,
                MEDIAPIPE_LICENCE,
                model.normalisation,
                _describe_float_weights(target),
            )
        )
    return entries


@dataclass(frozen=True, slots=True)
class Calibration:
    """Where the int8 representative chips come from and how they are aligned."""

    source: str  # "astronaut" or "dir"
    count: int
    seed: int
    aligner: str  # "edged" or "dlib"
    folder: Path | None = None

    def describe(self, produced: int) -> str:
        how = f"{self.aligner}-aligned"
        if self.source == "astronaut":
            return (
                f"{produced} augmented {how} chips of scikit-image's public-domain "
                f"astronaut() portrait (seed {self.seed})"
            )
        return f"{produced} {how} chips from {self.folder} (experiment; do not ship)"

    def make_aligner(self, model_dir: Path, sdist: Path, work: Path) -> Aligner:
        if self.aligner == "edged":
            return EdgedAligner(model_dir)
        return DlibAligner(extract_from_sdist(sdist, SHAPE_PREDICTOR_PATH, work))

    def chips(self, aligner: Aligner) -> list[np.ndarray]:
        if self.source == "astronaut":
            return astronaut_chips(aligner, self.count, seed=self.seed)
        assert self.folder is not None
        return folder_chips(aligner, self.folder, self.count)


def build_embedders(sdist: Path, out: Path, work: Path, calibration: Calibration) -> list[ModelEntry]:
    dat = extract_from_sdist(sdist, DLIB_MODEL_PATH, work)
    net = load_network(dat)
    logger.info("parsed %s: %d layers, %d parameters", dat.name, len(net.layers), net.num_params)
    module = DlibResNet(net)
    (out / EMBEDDER_FLOAT32).write_bytes(convert_float32(module))

    chips = calibration.chips(calibration.make_aligner(out, sdist, work))
    logger.info("calibrating int8 on %d chips", len(chips))
    (out / EMBEDDER_INT8).write_bytes(convert_int8(module, chips))
    _check_raw_pixel_input(out / EMBEDDER_INT8)

    def source(transform: str) -> dict[str, str]:
        return {
            "package": FACE_RECOGNITION_MODELS.requirement,
            "artifact": sdist.name,
            "path": DLIB_MODEL_PATH,
            "transform": transform,
        }

    converted = "dlib DNN -> TensorFlow (tools/dlib_resnet.py) -> TFLite, affine layers folded"
    purpose = (
        "dlib ResNet v1 face embedder: 150x150 aligned chip -> 128-d descriptor (euclidean, not normalised)"
    )
    return [
        ModelEntry(
            "face_embedder",
            EMBEDDER_INT8,
            purpose,
            source(f"{converted}; full-integer post-training quantization"),
            DLIB_LICENCE,
            EMBEDDER_NORMALISATION,
            "full int8, uint8 input (scale 1, zero point 0), float32 output; representative set: "
            + calibration.describe(len(chips)),
        ),
        ModelEntry(
            "face_embedder_float32",
            EMBEDDER_FLOAT32,
            purpose + " (float32 reference)",
            source(converted),
            DLIB_LICENCE,
            EMBEDDER_NORMALISATION,
            "none (float32)",
        ),
    ]


def _check_raw_pixel_input(path: Path) -> None:
    inputs, _ = tensor_specs(path)
    quant = inputs[0]["quantization"]
    if inputs[0]["dtype"] != "uint8" or quant != {"scale": 1.0, "zero_point": 0}:
        raise RuntimeError(f"int8 embedder input is {inputs[0]['dtype']} {quant}, not raw uint8 pixels")


def build(out: Path, cache: Path | None, calibration: Calibration) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edged-models-") as tmp:
        work = Path(tmp)
        wheel = fetch(MEDIAPIPE, work, cache)
        sdist = fetch(FACE_RECOGNITION_MODELS, work, cache)
        entries = copy_mediapipe_models(wheel, out)
        entries += build_embedders(sdist, out, work, calibration)
        return write_manifest(out, entries)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="output folder")
    parser.add_argument("--cache", type=Path, help="folder that may already hold the downloads")
    parser.add_argument(
        "--calib", choices=("astronaut",), default="astronaut", help="calibration chip source"
    )
    parser.add_argument(
        "--calib-dir", type=Path, help="calibrate on faces found under this folder instead (experiments)"
    )
    parser.add_argument("--calib-count", type=int, default=DEFAULT_CALIB_COUNT)
    parser.add_argument(
        "--aligner",
        choices=("edged", "dlib"),
        default="edged",
        help="make calibration chips with edged's detector+mesh+align_chip (default) or with dlib",
    )
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = _parse_args(argv)
    calibration = Calibration(
        source="dir" if args.calib_dir else args.calib,
        count=args.calib_count,
        seed=args.seed,
        aligner=args.aligner,
        folder=args.calib_dir,
    )
    manifest = build(args.out, args.cache, calibration)
    logger.info("wrote %s", manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
