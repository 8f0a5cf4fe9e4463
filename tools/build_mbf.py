"""Rebuild the MBF face embedder (ESP-DL's ``human_face_feat_mbf_s8_v1``) as TFLite models.

Run with the tools venv (see tools/README.md), from the repository root::

    /work/venv-tools/bin/python tools/build_mbf.py \\
        --src ../shared/models-src/esp-dl --out models/ --calib-dir ../shared/faces/lfw-dev

Steps:

1. check the sha256 of the ``.espdl`` file against the pinned value (upstream commit below);
2. read it (``tools/espdl_format.py``) and dequantize the graph (``tools/mbf_reference.py``: every
   weight int8 × 2^exponent) — the numpy float reference;
3. rebuild it in TensorFlow from the same weights and convert it to a float32 TFLite model
   (input: raw RGB pixels 0..255 as float32; the (x − 127.5)/127.5 normalisation is the graph's
   first op; output: the raw 512-d embedding, L2-normalised by the caller);
4. quantize it to full int8 (uint8 raw-pixel input with scale 1 and zero point 0, float32
   output), calibrated on 112×112 ArcFace chips of real faces: lfw-dev images, aligned by this
   checkout's edged (BlazeFace + face mesh + ``edged.pipeline.align.align_arcface``);
5. check on other chips of the same folder: float32 TFLite against the numpy reference (cosine
   ≥ ``FLOAT_MIN_COSINE`` on every chip) and int8 against float32 (cosine ≥ ``INT8_MIN_COSINE`` on
   every chip), else the build fails;
6. write both files and update only the ``mbf_*`` entries of ``models/manifest.yaml``.

PReLU is written ``max(2z, 2αz)`` with z = y/2 folded into the convolution by ``minifasnet.apply``,
as for the anti-spoofing models (its docstring explains the split); that is exact only for
slopes α ≤ 1, and 19 channels in 9 of the 34 PReLU layers of this network have α up to 1.30. For
those the convolution's output channel is negated (``max(−y, −αy) = −PReLU(y)`` when α > 1) and the
sign is folded back into the input channel of the next convolution (or the rows of the final dense
layer), so no extra op is needed. Measured alternatives (int8, one thread, same runs): TFLite's
PRELU op 22 ms against 4.7 ms (not delegated to XNNPACK); ``y + relu((α − 1)·y)`` (one delegate
partition instead of 35, int8 MAXIMUM not being delegated) 4.4 ms but int8-vs-float cosine median
0.945 instead of 0.975; plain ReLU in place of every PReLU (a lower bound, wrong outputs) 3.2 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import manifest_yaml
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from build_models import convert_float32, convert_int8, sha256, tensor_specs
from chips import ArcFaceAligner, load_rgb
from mbf_reference import (
    INPUT_SIZE,
    AddLayer,
    ConvLayer,
    DenseLayer,
    Layer,
    MbfReference,
    PReluLayer,
    load_mbf,
    normalise,
    unit,
)
from minifasnet import Conv, apply

logger = logging.getLogger("build_mbf")

REPOSITORY = "https://github.com/espressif/esp-dl"
COMMIT = "12c0616de145b704e1149c474b9a1e852e631d67"
UPSTREAM_PATH = "models/human_face_recognition/models/s3/human_face_feat_mbf_s8_v1.espdl"
SOURCE_FILE = "human_face_feat_mbf_s8_v1.espdl"
SOURCE_SHA256 = "764610814b63924c61ca6029f47c5f775ceb6acaf501bd39591e178d89415c33"
LICENCE = 'MIT ("Copyright (c) 2021 Espressif Systems (Shanghai) Co., Ltd."; LICENSE of esp-dl)'
FLOAT32_FILE = "mbf_s8_v1_float32.tflite"
INT8_FILE = "mbf_s8_v1_int8.tflite"
KEY_INT8, KEY_FLOAT32 = "mbf_embedder", "mbf_embedder_float32"
NORMALISATION = "raw RGB 0..255 (x/127.5 - 1 is the graph's first op)"

DEFAULT_CALIB_COUNT = 300
CHECK_COUNT = 50
FLOAT_MIN_COSINE = 0.99
"""float32 TFLite vs the dequantized numpy graph, every check chip (the issue's bar)."""
INT8_MIN_COSINE = 0.95
"""int8 vs float32 TFLite, every check chip (measured, see docs/models.md)."""


# --------------------------------------------------------------------------- TensorFlow graph


@dataclass(frozen=True, slots=True)
class FoldedDense:
    weight: np.ndarray  # (H·W·C, O), rows in NHWC flatten order
    bias: np.ndarray


Step = tuple[
    str, Any
]  # ("conv", minifasnet.Conv) | ("add", index of the earlier step) | ("dense", FoldedDense)


def _flip_inputs(conv: ConvLayer, sign: np.ndarray) -> ConvLayer:
    """Multiply the convolution's input channels by ``sign`` (±1): axis 2 of HWIO and of the
    depthwise HWC1 kernel alike."""
    return replace(conv, kernel=conv.kernel * sign[None, None, :, None])


def fold_layers(layers: list[Layer]) -> list[Step]:
    """Conv + PReLU pairs → ``minifasnet.Conv`` (PReLU slopes above 1 handled by sign flips, see
    the module docstring); residual adds and the dense tail as they are. A step's index is the
    index of the reference layer whose output it produces (PReLU layers merge into their conv)."""
    steps: list[Step] = []
    produced: dict[int, int] = {-1: -1}  # reference layer index -> step index
    sign: np.ndarray | None = None  # pending sign of the current activation's channels
    flipped: set[int] = set()  # reference layers whose output carries flipped channels
    channels = 0
    index = 0
    while index < len(layers):
        layer = layers[index]
        if isinstance(layer, ConvLayer):
            if layer.pad != layer.kernel.shape[0] // 2:
                raise ValueError(f"layer {index}: padding {layer.pad} is not 'same'")
            conv = _flip_inputs(layer, sign) if sign is not None else layer
            channels = conv.bias.size
            prelu = layers[index + 1] if index + 1 < len(layers) else None
            neg_alpha = None
            sign = None
            kernel, bias = conv.kernel, conv.bias
            if isinstance(prelu, PReluLayer):
                flip = np.where(prelu.alpha > 1.0, -1.0, 1.0)
                kernel = kernel * (flip[None, None, :, None] if conv.depthwise else flip)
                bias = bias * flip
                neg_alpha = -prelu.alpha
                sign = flip if (flip < 0).any() else None
                index += 1
            steps.append(("conv", Conv(kernel, bias, conv.stride, conv.depthwise, neg_alpha)))
            if sign is not None:
                flipped.add(index)
        elif isinstance(layer, AddLayer):
            if sign is not None or layer.other in flipped:  # either input: the add would mix signs
                raise ValueError(f"layer {index}: a sign-flipped activation feeds a residual add")
            steps.append(("add", produced[layer.other]))
        elif isinstance(layer, DenseLayer):
            weight = layer.weight
            side = math.isqrt(weight.shape[0] // channels)
            # rows: NCHW flatten order (c, h, w) -> NHWC order (h, w, c), signs folded in
            chw = weight.reshape(channels, side, side, -1)
            if sign is not None:
                chw = chw * sign[:, None, None, None]
            steps.append(("dense", FoldedDense(chw.transpose(1, 2, 0, 3).reshape(weight.shape), layer.bias)))
            sign = None
        else:
            raise ValueError(f"layer {index}: a PReLU without its convolution")
        produced[index] = len(steps) - 1
        index += 1
    return steps


def _const(a: np.ndarray) -> tf.Tensor:
    return tf.constant(a.astype(np.float32))


class MbfTF(tf.Module):  # type: ignore[misc]
    """The folded network in TensorFlow; input raw RGB pixels (float32, 0..255)."""

    def __init__(self, steps: list[Step]) -> None:
        super().__init__()
        self._steps = steps

    @tf.function(input_signature=[tf.TensorSpec([1, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)])  # type: ignore[misc]
    def serve(self, pixels: tf.Tensor) -> tf.Tensor:
        x = pixels * (1.0 / 127.5) - 1.0
        outputs: list[tf.Tensor] = []
        for kind, value in self._steps:
            if kind == "conv":
                x = apply(x, value)
            elif kind == "add":
                x = x + (outputs[value] if value >= 0 else pixels * (1.0 / 127.5) - 1.0)
            else:
                flat = tf.reshape(x, [1, -1])
                x = tf.matmul(flat, _const(value.weight)) + _const(value.bias)
            outputs.append(x)
        return x


# --------------------------------------------------------------------------- chips, conversion


def check_source(src: Path) -> Path:
    path = src / SOURCE_FILE
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {SOURCE_SHA256}")
    return path


def image_paths(folder: Path) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise FileNotFoundError(f"no images under {folder}")
    return paths


def arcface_chips(aligner: ArcFaceAligner, folder: Path, count: int, offset: float) -> list[np.ndarray]:
    """Chips of the largest face of ``count`` images spread evenly over ``folder``'s sorted image
    list, starting ``offset`` (a fraction of the stride) in: calibration uses offset 0, the checks
    offset 0.5, so the two sets share no image."""
    paths = image_paths(folder)
    step = max(1, len(paths) // count)
    chips: list[np.ndarray] = []
    for path in paths[int(offset * step) :: step]:
        image = load_rgb(path)
        faces = aligner.find_points(image)
        if faces:
            chips.append(aligner.align(image, faces[0]))
        if len(chips) == count:
            break
    return chips


def run_tflite(path: Path, chips: list[np.ndarray]) -> np.ndarray:
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    out = []
    for chip in chips:
        interpreter.set_tensor(source["index"], chip[None].astype(source["dtype"]))
        interpreter.invoke()
        out.append(interpreter.get_tensor(target["index"])[0].astype(np.float64))
    return np.array(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = (unit(a) * unit(b)).sum(axis=1)
    return result


def check(work: Path, reference: MbfReference, chips: list[np.ndarray]) -> dict[str, float]:
    """The build's gates; returns the measured min / median cosines."""
    expected = reference(normalise(np.stack(chips)))
    as_float = run_tflite(work / FLOAT32_FILE, chips)
    as_int8 = run_tflite(work / INT8_FILE, chips)
    float_cos, int8_cos = cosines(as_float, expected), cosines(as_int8, as_float)
    figures = {
        "float_min": float(float_cos.min()),
        "float_median": float(np.median(float_cos)),
        "int8_min": float(int8_cos.min()),
        "int8_median": float(np.median(int8_cos)),
        "int8_vs_reference_min": float(cosines(as_int8, expected).min()),
    }
    logger.info("checks on %d chips: %s", len(chips), figures)
    if figures["float_min"] < FLOAT_MIN_COSINE:
        raise RuntimeError(
            f"float32 TFLite vs reference: cosine {figures['float_min']:.5f} < {FLOAT_MIN_COSINE}"
        )
    if figures["int8_min"] < INT8_MIN_COSINE:
        raise RuntimeError(f"int8 vs float32: cosine {figures['int8_min']:.5f} < {INT8_MIN_COSINE}")
    return figures


# --------------------------------------------------------------------------- manifest


def manifest_entries(out: Path, count: int, calib_name: str) -> dict[str, dict[str, Any]]:
    converted = (
        "ESP-DL FlatBuffer (tools/espdl_format.py) -> dequantized graph (tools/mbf_reference.py: "
        "int8 x 2^exponent) -> TensorFlow (tools/build_mbf.py; PReLU as max(2z, 2az), slopes > 1 by "
        "sign flips folded into the next layer) -> TFLite"
    )
    purpose = (
        "MBF (MobileFaceNet-class, ESP-DL human_face_feat_mbf_s8_v1) face embedder: 112x112 ArcFace "
        "chip (five points) -> 512-d embedding (L2-normalise; cosine)"
    )
    entries: dict[str, dict[str, Any]] = {}
    for key, file, precision in ((KEY_INT8, INT8_FILE, "int8"), (KEY_FLOAT32, FLOAT32_FILE, "float32")):
        path = out / file
        inputs, outputs = tensor_specs(path)
        if precision == "int8":
            transform = converted + "; full-integer post-training quantization"
            quantization = (
                "full int8, uint8 input (scale 1, zero point 0), float32 output; representative set: "
                f"{count} edged-aligned 112x112 ArcFace chips of real faces in {calib_name}"
            )
        else:
            transform, quantization = converted, "none (float32; weights are upstream's int8 x 2^exponent)"
        entries[key] = {
            "file": file,
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "purpose": purpose if precision == "int8" else purpose + " (float32 reference)",
            "source": {
                "repository": REPOSITORY,
                "commit": COMMIT,
                "path": UPSTREAM_PATH,
                "sha256": SOURCE_SHA256,
                "transform": transform,
            },
            "licence": LICENCE,
            "inputs": inputs,
            "outputs": outputs,
            "normalisation": NORMALISATION,
            "output": "raw 512-d embedding; edged L2-normalises it",
            "crop": {
                "size": [INPUT_SIZE, INPUT_SIZE],
                "layout": "RGB",
                "alignment": "similarity of five face-mesh points (eye centres, nose tip, mouth "
                "corners) to the ArcFace template (edged.pipeline.align.align_arcface)",
            },
            "quantization": quantization,
        }
    return entries


def build(src: Path, out: Path, calib_dir: Path, count: int, work: Path) -> Path:
    source = check_source(src)
    layers = load_mbf(source)
    reference = MbfReference(layers)
    module = MbfTF(fold_layers(layers))
    (work / FLOAT32_FILE).write_bytes(convert_float32(module))
    aligner = ArcFaceAligner(out)
    calibration = arcface_chips(aligner, calib_dir, count, 0.0)
    logger.info("calibrating int8 on %d chips", len(calibration))
    (work / INT8_FILE).write_bytes(convert_int8(module, calibration))
    check(work, reference, arcface_chips(aligner, calib_dir, CHECK_COUNT, 0.5))
    for file in (FLOAT32_FILE, INT8_FILE):
        (out / file).write_bytes((work / file).read_bytes())
    entries = manifest_entries(out, len(calibration), f"{calib_dir.parent.name}/{calib_dir.name}")
    return manifest_yaml.update(out / "manifest.yaml", entries)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    repo = Path(__file__).resolve().parents[1]
    shared = repo.parent / "shared"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--src", type=Path, default=shared / "models-src" / "esp-dl", help="the .espdl folder"
    )
    parser.add_argument(
        "--out", type=Path, default=repo / "models", help="models folder (with manifest.yaml)"
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
    import tempfile

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = _parse_args(argv)
    tf.random.set_seed(0)
    with tempfile.TemporaryDirectory(prefix="edged-mbf-") as tmp:
        manifest = build(args.src, args.out, args.calib_dir, args.calib_count, Path(tmp))
    logger.info("wrote %s", manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
