"""Rebuild the anti-spoofing models (MiniFASNet pair) from their upstream ``.pth`` files.

Run with the tools venv (see tools/README.md), from the repository root::

    /work/venv-tools/bin/python tools/build_liveness.py --src ../shared/models-src/silent-face --out models/

Steps:

1. check the sha256 of both ``.pth`` files against the pinned values (upstream commit below);
2. load each into the PyTorch definition of ``tools/minifasnet.py`` (``strict=True``: the file must
   have exactly its layers and shapes) — the float reference;
3. rebuild it in TensorFlow from the same state dict (batch-norms folded) and convert it to a
   float32 TFLite model; check it against PyTorch (class probabilities within 1e-4);
4. quantize to int8: MiniFASNetV2 as static int8, every layer but the 40×40 ones, which stay
   float32 (``convert_int8``), calibrated on crops of real faces: lfw-dev images, faces found by
   this checkout's BlazeFace, cropped exactly as ``edged.pipeline.antispoof`` crops them
   (``model_input``); MiniFASNetV1SE as dynamic-range int8 (``convert_dynamic``: int8 weights,
   activations quantized per input at run time). Both take float32 raw BGR input and give float32
   logits;
5. check int8 against float32 on the crops of the three upstream sample images and of
   scikit-image's astronaut: every class probability of the ensemble must agree within 0.03, else
   the build fails (``check_ensemble``);
6. update the ``antispoof_*`` entries of ``models/manifest.yaml`` (the others are kept as they are).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import manifest_yaml
import numpy as np
import tensorflow as tf
import torch
from ai_edge_litert.interpreter import Interpreter
from build_models import _converter, convert_float32, sha256, tensor_specs
from minifasnet import (
    MINIFASNET_V1SE,
    MINIFASNET_V2,
    STEM_SCOPE,
    MiniFASNetTF,
    Variant,
    fold_network,
    load_reference,
    numpy_state,
)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edged.inference.runtime import TFLiteModel  # noqa: E402
from edged.pipeline.antispoof import model_input  # noqa: E402
from edged.pipeline.detect import FaceDetector  # noqa: E402
from edged.types import Box, ImageRGB  # noqa: E402

logger = logging.getLogger("build_liveness")

REPOSITORY = "https://github.com/minivision-ai/Silent-Face-Anti-Spoofing"
COMMIT = "b6d5f04ad78778917853b25c778acef6d5626d15"
LICENCE = "Apache-2.0 (LICENSE of the upstream repository, copied beside the weights)"
SAMPLES = ("image_T1.jpg", "image_F1.jpg", "image_F2.jpg")
INT8_TOLERANCE = 0.03
"""int8 vs float32: largest |difference| of any of the ensemble's class probabilities on each
parity image (the build fails above it)."""
FLOAT_TOLERANCE = 1e-4
DEFAULT_CALIB_COUNT = 300
DETECTOR_FILE = "face_detection_short_range.tflite"


@dataclass(frozen=True, slots=True)
class Source:
    """One upstream network and the two files built from it."""

    key: str
    file: str
    upstream_path: str
    sha256: str
    variant: Variant
    scale: float
    dynamic: bool
    """int8 with activations quantized per input at run time (no calibration), not calibrated
    static int8: V1SE's attack classes do not survive fixed activation ranges (docs/models.md)."""

    @property
    def int8_file(self) -> str:
        return f"{self.key}_int8.tflite"

    @property
    def float32_file(self) -> str:
        return f"{self.key}_float32.tflite"


SOURCES = (
    Source(
        "antispoof_v2",
        "2.7_80x80_MiniFASNetV2.pth",
        "resources/anti_spoof_models/2.7_80x80_MiniFASNetV2.pth",
        "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
        MINIFASNET_V2,
        2.7,
        dynamic=False,
    ),
    Source(
        "antispoof_v1se",
        "4_0_0_80x80_MiniFASNetV1SE.pth",
        "resources/anti_spoof_models/4_0_0_80x80_MiniFASNetV1SE.pth",
        "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
        MINIFASNET_V1SE,
        4.0,
        dynamic=True,
    ),
)


def check_sources(src: Path) -> None:
    for source in SOURCES:
        path = src / source.file
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != source.sha256:
            raise RuntimeError(f"{path} has sha256 {digest}, expected {source.sha256}")


# --------------------------------------------------------------------------- faces


class Faces:
    """The largest BlazeFace (short-range) face of an image, as edged finds it."""

    def __init__(self, model_dir: Path) -> None:
        self._detector = FaceDetector(TFLiteModel(model_dir / DETECTOR_FILE))

    def box(self, image: ImageRGB) -> Box | None:
        detections = self._detector.detect(image)
        return max(detections, key=lambda d: d.box.area).box if detections else None


def read_rgb(path: Path) -> ImageRGB:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def calibration_faces(faces: Faces, folder: Path, count: int) -> list[tuple[ImageRGB, Box]]:
    """``count`` faces from images spread evenly over the sorted image list of ``folder``."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise FileNotFoundError(f"no images under {folder}")
    step = max(1, len(paths) // count)
    found: list[tuple[ImageRGB, Box]] = []
    for path in paths[::step]:
        image = read_rgb(path)
        box = faces.box(image)
        if box is not None:
            found.append((image, box))
        if len(found) == count:
            break
    return found


def astronaut() -> ImageRGB:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def check_faces(faces: Faces, src: Path) -> dict[str, tuple[ImageRGB, Box]]:
    """The sample images' faces and the astronaut's (the parity set)."""
    images = {name: read_rgb(src / "sample" / name) for name in SAMPLES}
    images["astronaut"] = astronaut()
    out = {}
    for name, image in images.items():
        box = faces.box(image)
        if box is None:
            raise RuntimeError(f"no face found in {name}")
        out[name] = (image, box)
    return out


# --------------------------------------------------------------------------- checks


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run_tflite(path: Path, patch: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    spec = interpreter.get_input_details()[0]
    interpreter.set_tensor(spec["index"], patch[None].astype(spec["dtype"]))
    interpreter.invoke()
    return softmax(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])


def run_torch(model: torch.nn.Module, patch: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(patch.astype(np.float32).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        return softmax(model(tensor).numpy()[0].astype(np.float64))


def check_parity(
    out: Path, source: Source, reference: torch.nn.Module, patches: dict[str, np.ndarray]
) -> None:
    """Per network: float32 TFLite vs PyTorch must agree within 1e-4 on every class (else the
    port is wrong); int8 vs float32 is logged per class (see ``check_ensemble`` for its gate)."""
    for name, patch in patches.items():
        torch_p = run_torch(reference, patch)
        float_p = run_tflite(out / source.float32_file, patch)
        int8_p = run_tflite(out / source.int8_file, patch)
        port = float(np.abs(float_p - torch_p).max())
        quant = float(np.abs(int8_p - float_p).max())
        logger.info(
            "%s %-12s P(real) %.4f float32, %.4f int8; max |float32-torch| %.1e, max |int8-float32| %.4f",
            source.key,
            name,
            float_p[1],
            int8_p[1],
            port,
            quant,
        )
        if port > FLOAT_TOLERANCE:
            raise RuntimeError(f"{source.key}: float32 TFLite differs from PyTorch by {port:.2e} on {name}")


# --------------------------------------------------------------------------- conversion


def convert_dynamic(module: Any) -> bytes:
    """int8 weights (per output channel) with the activations quantized to int8 per input at run
    time (TFLite's dynamic-range quantization; XNNPACK runs the convolutions in int8): no fixed
    activation ranges, so no calibration. Float32 raw BGR input, float32 logits."""
    conv = _converter(module)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return bytes(conv.convert())


def convert_int8(module: Any, patches: list[np.ndarray]) -> bytes:
    """int8 everywhere except the layers at 40×40 (``STEM_SCOPE``), which stay float32.

    Why: the networks read print and screen texture from the first layers, and they are very
    sensitive there (the float model's output moves by up to 0.4 under +-2 grey levels of input
    noise); full int8 put the ensemble's P(real) 0.04 and single classes up to 0.4 away from float32
    on the samples. With the stem in float32 the rest quantizes within a few thousandths on
    average (docs/models.md). The model then takes float32 raw BGR pixels (0..255 values)."""

    def representative() -> Iterator[list[np.ndarray]]:
        for patch in patches:
            yield [patch[None].astype(np.float32)]

    def debug_set() -> Iterator[list[np.ndarray]]:
        yield [patches[0][None].astype(np.float32)]

    def converter() -> Any:
        conv = _converter(module)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        return conv

    full = tf.lite.experimental.QuantizationDebugger(converter=converter(), debug_dataset=debug_set)
    interpreter = Interpreter(model_content=full.get_nondebug_quantized_model())
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    stem = sorted(
        {
            names[op["outputs"][0]]
            for op in interpreter._get_ops_details()
            if STEM_SCOPE in names[op["outputs"][0]] and op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
        }
    )
    if not stem:
        raise RuntimeError(f"no {STEM_SCOPE} ops found in the quantized graph")
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=stem)
    mixed = tf.lite.experimental.QuantizationDebugger(
        converter=converter(), debug_dataset=debug_set, debug_options=options
    )
    return bytes(mixed.get_nondebug_quantized_model())


# --------------------------------------------------------------------------- build


def build_one(
    source: Source,
    src: Path,
    out: Path,
    calibration: list[tuple[ImageRGB, Box]],
    parity: dict[str, tuple[ImageRGB, Box]],
) -> None:
    reference = load_reference(str(src / source.file), source.variant)
    module = MiniFASNetTF(fold_network(numpy_state(reference), source.variant), source.key)
    (out / source.float32_file).write_bytes(convert_float32(module))
    if source.dynamic:
        logger.info("%s: int8 weights, activations quantized at run time", source.key)
        (out / source.int8_file).write_bytes(convert_dynamic(module))
    else:
        patches = [model_input(image, box, source.scale) for image, box in calibration]
        logger.info("%s: calibrating int8 on %d crops (scale %.1f)", source.key, len(patches), source.scale)
        (out / source.int8_file).write_bytes(convert_int8(module, patches))
    parity_patches = {name: model_input(image, box, source.scale) for name, (image, box) in parity.items()}
    check_parity(out, source, reference, parity_patches)


def check_ensemble(out: Path, parity: dict[str, tuple[ImageRGB, Box]]) -> None:
    """The gate on int8: every class probability of the ensemble (what edged uses) within
    ``INT8_TOLERANCE`` of float32 on the three upstream samples and the astronaut."""
    for name, (image, box) in parity.items():
        float_p = np.mean(
            [run_tflite(out / s.float32_file, model_input(image, box, s.scale)) for s in SOURCES], axis=0
        )
        int8_p = np.mean(
            [run_tflite(out / s.int8_file, model_input(image, box, s.scale)) for s in SOURCES], axis=0
        )
        worst = float(np.abs(int8_p - float_p).max())
        logger.info(
            "ensemble %-12s P(real) %.4f float32, %.4f int8: max class |diff| %.4f",
            name,
            float_p[1],
            int8_p[1],
            worst,
        )
        if worst > INT8_TOLERANCE:
            raise RuntimeError(
                f"int8 class probabilities differ from float32 by {worst:.4f} on {name} "
                f"(limit {INT8_TOLERANCE})"
            )


def manifest_entries(out: Path, count: int, calib_name: str) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for source in SOURCES:
        for key, file, precision in (
            (source.key, source.int8_file, "int8"),
            (f"{source.key}_float32", source.float32_file, "float32"),
        ):
            path = out / file
            inputs, outputs = tensor_specs(path)
            transform = (
                "PyTorch state dict -> TensorFlow (tools/minifasnet.py: batch-norms folded into the "
                "convolutions, linear+BN1d+prob folded into one dense) -> TFLite"
            )
            if precision == "int8" and source.dynamic:
                transform += "; post-training dynamic-range int8 quantization"
                quantization = (
                    "int8 weights (per output channel); activations quantized to int8 per input at "
                    "run time (dynamic range, no calibration set); float32 input and output"
                )
            elif precision == "int8":
                transform += "; post-training int8 quantization of all but the 40x40 layers"
                quantization = (
                    "int8 weights and activations except the 40x40 layers (stem + first down-sampling "
                    "block: float32); float32 input and output; representative "
                    f"set: {count} crops (scale {source.scale}) of faces found by edged's BlazeFace "
                    f"in {calib_name}"
                )
            else:
                quantization = "none (float32)"
            purpose = (
                f"{source.variant.name} anti-spoofing (Silent-Face-Anti-Spoofing): face box x{source.scale} "
                "crop, 80x80 BGR -> 3 logits (class 1 = real face; 0, 2 = attacks)"
            )
            if precision == "float32":
                purpose += " (float32 reference)"
            entries[key] = {
                "file": file,
                "sha256": sha256(path),
                "bytes": path.stat().st_size,
                "purpose": purpose,
                "source": {
                    "repository": REPOSITORY,
                    "commit": COMMIT,
                    "path": source.upstream_path,
                    "sha256": source.sha256,
                    "transform": transform,
                },
                "licence": LICENCE,
                "inputs": inputs,
                "outputs": outputs,
                "normalisation": "raw BGR 0..255 as float32, no normalisation (upstream's convention)",
                "output": "logits; softmax over the 3 classes is applied by edged (class 1 = real)",
                "crop": {
                    "scale": source.scale,
                    "size": [80, 80],
                    "layout": "BGR",
                    "box": "BlazeFace box -> upstream detector box: width x1.03, height x1.055, centre up "
                    "0.037 box heights (edged.pipeline.antispoof.to_upstream_box)",
                    "rule": "box scaled around its centre; shrunk to the frame if larger, else shifted "
                    "inside it; resized (bilinear)",
                },
                "quantization": quantization,
            }
    return entries


def build(src: Path, out: Path, calib_dir: Path, count: int) -> Path:
    check_sources(src)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="edged-liveness-") as tmp:
        work = Path(tmp)
        faces = Faces(out)
        calibration = calibration_faces(faces, calib_dir, count)
        parity = check_faces(faces, src)
        for source in SOURCES:
            build_one(source, src, work, calibration, parity)
        check_ensemble(work, parity)
        for source in SOURCES:
            for file in (source.int8_file, source.float32_file):
                (out / file).write_bytes((work / file).read_bytes())
    entries = manifest_entries(
        out, len(calibration), f"{calib_dir.name} ({calib_dir.parent.name}/{calib_dir.name})"
    )
    return manifest_yaml.update(out / "manifest.yaml", entries)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = REPO.parent / "shared"
    parser.add_argument(
        "--src", type=Path, default=shared / "models-src" / "silent-face", help="the .pth folder"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "models", help="models folder (with manifest.yaml)"
    )
    parser.add_argument(
        "--calib-dir",
        type=Path,
        default=shared / "faces" / "lfw-dev",
        help="real face images for int8 calibration",
    )
    parser.add_argument("--calib-count", type=int, default=DEFAULT_CALIB_COUNT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = _parse_args(argv)
    manifest = build(args.src, args.out, args.calib_dir, args.calib_count)
    logger.info("wrote %s", manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
