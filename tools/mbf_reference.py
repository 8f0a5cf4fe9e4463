"""ESP-DL's MBF face embedder (``human_face_feat_mbf_s8_v1.espdl``) as a dequantized float graph.

``load_mbf`` reads the ``.espdl`` file (``tools/espdl_format.py``) and turns its 98 nodes into a
list of float64 layers — every int8 weight times 2^exponent, every int32 bias times 2^exponent,
PReLU slopes likewise — and ``MbfReference`` runs them in numpy (NHWC). No activation is
quantized: this is the graph the int8 file approximates, and the reference the TFLite builds of
``tools/build_mbf.py`` are checked against.

Weight layout of the file (verified by the accuracy it gives, see docs/models.md): a convolution
of O output channels, C input channels (1 for depthwise) and an H×W kernel stores
``value(o, c, kh, kw)`` at ``(((o // 16)·H + kh)·W + kw)·C + c)·16 + o % 16`` ("N16HWC16"); the
final Gemm is stored the same way with H = W = 1 (O = 512, C = 3136).

The graph: Conv(3×3/2) PReLU, depthwise 3×3 PReLU, inverted-residual blocks of
1×1 PReLU → depthwise 3×3 PReLU → 1×1 (+ input), a 1×1 conv to 512 PReLU, a 1×1 conv to 64 PReLU,
then Transpose to NCHW, Flatten (3136 = 64·7·7) and Gemm (3136 → 512). Input 112×112×3 NHWC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from espdl_format import Graph, Initializer, Node, load

BLOCK = 16
INPUT_SIZE = 112
EMBEDDING_SIZE = 512


class GraphError(ValueError):
    """The graph has a node this reference does not implement."""


@dataclass(frozen=True, slots=True)
class ConvLayer:
    """A convolution, ``kernel`` HWIO (HW C 1 for depthwise), symmetric ``pad``."""

    kernel: np.ndarray
    bias: np.ndarray
    stride: int
    pad: int
    depthwise: bool


@dataclass(frozen=True, slots=True)
class PReluLayer:
    alpha: np.ndarray  # (C,)


@dataclass(frozen=True, slots=True)
class AddLayer:
    other: int  # index of the earlier layer whose output is added (-1: the graph input)


@dataclass(frozen=True, slots=True)
class DenseLayer:
    """Transpose to NCHW, flatten, ``x @ weight + bias``."""

    weight: np.ndarray  # (C·H·W, O), rows in NCHW flatten order
    bias: np.ndarray


Layer = ConvLayer | PReluLayer | AddLayer | DenseLayer


def unpack_n16hwc16(values: np.ndarray, out: int, height: int, width: int, channels: int) -> np.ndarray:
    """int8 weights stored N16HWC16 → ``(H, W, C, O)`` (HWIO)."""
    if out % BLOCK:
        raise GraphError(f"{out} output channels: not a multiple of {BLOCK}")
    blocks = values.reshape(out // BLOCK, height, width, channels, BLOCK)
    # (O/16, H, W, C, 16) → (H, W, C, O/16, 16) → (H, W, C, O)
    return blocks.transpose(1, 2, 3, 0, 4).reshape(height, width, channels, out)


def _weight(init: Initializer, out: int, height: int, width: int, channels: int) -> np.ndarray:
    if init.values.size != out * height * width * channels:
        raise GraphError(
            f"{init.name}: {init.values.size} values, expected {out}x{height}x{width}x{channels}"
        )
    scale = 2.0 ** (init.exponent or 0)
    return unpack_n16hwc16(init.values.astype(np.float64), out, height, width, channels) * scale


def _conv(graph: Graph, node: Node) -> ConvLayer:
    weight, bias = graph.initializers[node.inputs[1]], graph.initializers[node.inputs[2]]
    kh, kw = node.ints("kernel_shape")
    group, pads, strides = node.integer("group", 1), node.ints("pads"), node.ints("strides")
    if len(set(pads)) != 1 or strides[0] != strides[1] or node.ints("dilations") != (1, 1):
        raise GraphError(f"{node.name}: pads {pads}, strides {strides}: not implemented")
    if node.text("activation", "Linear") != "Linear":
        raise GraphError(f"{node.name}: fused activation {node.text('activation')}: not implemented")
    out = int(bias.values.size)
    depthwise = group > 1
    if depthwise and group != out:
        raise GraphError(f"{node.name}: {group} groups: not implemented")
    channels = 1 if depthwise else weight.values.size // (out * kh * kw)
    kernel = _weight(weight, out, kh, kw, channels)
    if depthwise:
        kernel = kernel.transpose(0, 1, 3, 2)  # (H, W, 1, O) → (H, W, O, 1)
    return ConvLayer(kernel, bias.dequantized(), strides[0], pads[0], depthwise)


def layers_of(graph: Graph) -> list[Layer]:
    """The graph as a list of layers, each taking the previous layer's output."""
    producer = {graph.inputs[0].name: -1}
    layers: list[Layer] = []
    nodes = list(graph.nodes)
    index = 0
    while index < len(nodes):
        node = nodes[index]
        previous = len(layers) - 1
        data = [name for name in node.inputs if name not in graph.initializers]
        if node.op_type not in ("Transpose", "Add") and producer.get(data[0]) != previous:
            raise GraphError(f"{node.name}: not a chain (input {data[0]})")
        if node.op_type == "Conv":
            layers.append(_conv(graph, node))
        elif node.op_type == "PRelu":
            layers.append(PReluLayer(graph.initializers[node.inputs[1]].dequantized().reshape(-1)))
        elif node.op_type == "Add":
            sources = sorted(producer[name] for name in data)
            if len(sources) != 2 or sources[1] != previous:
                raise GraphError(f"{node.name}: not a residual add")
            layers.append(AddLayer(sources[0]))
        elif node.op_type == "Transpose":
            layers.append(_dense(graph, nodes[index : index + 3]))
            index += 2
            node = nodes[index]
        else:
            raise GraphError(f"{node.name}: op {node.op_type} not implemented")
        producer[node.outputs[0]] = len(layers) - 1
        index += 1
    return layers


def _dense(graph: Graph, nodes: Sequence[Node]) -> DenseLayer:
    """Transpose(0, 3, 1, 2) → Flatten(axis 1) → Gemm(transB 0) as one layer."""
    ops = [n.op_type for n in nodes]
    if ops != ["Transpose", "Flatten", "Gemm"]:
        raise GraphError(f"tail {ops}: not implemented")
    transpose, _, gemm = nodes
    if transpose.ints("perm") != (0, 3, 1, 2) or gemm.integer("transB") != 0:
        raise GraphError("tail: unexpected Transpose perm or Gemm transB")
    weight, bias = graph.initializers[gemm.inputs[1]], graph.initializers[gemm.inputs[2]]
    out = int(bias.values.size)
    features = weight.values.size // out
    return DenseLayer(_weight(weight, out, 1, 1, features)[0, 0], bias.dequantized())


def load_mbf(path: Path) -> list[Layer]:
    return layers_of(load(path))


# --------------------------------------------------------------------------- numpy forward


def _pad(x: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x


def conv(x: np.ndarray, layer: ConvLayer) -> np.ndarray:
    """NHWC convolution (float64), im2col for full convolutions, tap sums for depthwise ones."""
    x = _pad(x, layer.pad)
    kh, kw = layer.kernel.shape[:2]
    s = layer.stride
    _, h, w, _ = x.shape
    oh, ow = (h - kh) // s + 1, (w - kw) // s + 1
    taps = [
        x[:, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s, :]
        for i in range(kh)
        for j in range(kw)
    ]
    if layer.depthwise:
        kernel = layer.kernel[..., 0].reshape(kh * kw, -1)
        y = sum(tap * kernel[t] for t, tap in enumerate(taps))
    else:
        patches = np.concatenate(taps, axis=-1)  # (n, oh, ow, kh·kw·C), (i, j, c) order = HWIO rows
        y = patches @ layer.kernel.reshape(-1, layer.kernel.shape[-1])
    result: np.ndarray = np.asarray(y) + layer.bias
    return result


class MbfReference:
    """The dequantized graph, run in float64 numpy. Input: ``(N, 112, 112, 3)`` already normalised
    (ESP-DL's convention: (pixel − 127.5) / 127.5); output: the raw 512-d embedding (not normalised)."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers

    @classmethod
    def from_file(cls, path: Path) -> MbfReference:
        return cls(load_mbf(path))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        outputs: list[np.ndarray] = []
        source = np.asarray(x, np.float64)
        y = source
        for layer in self.layers:
            if isinstance(layer, ConvLayer):
                y = conv(y, layer)
            elif isinstance(layer, PReluLayer):
                y = np.where(y >= 0, y, y * layer.alpha)
            elif isinstance(layer, AddLayer):
                y = y + (source if layer.other < 0 else outputs[layer.other])
            else:
                y = y.transpose(0, 3, 1, 2).reshape(len(y), -1) @ layer.weight + layer.bias
            outputs.append(y)
        return y


def normalise(chips: np.ndarray, order: str = "RGB") -> np.ndarray:
    """uint8 RGB chips ``(N, 112, 112, 3)`` → the reference's input: ``(x − 127.5) / 127.5`` in
    ``order`` (``"RGB"`` as given, ``"BGR"`` reversed)."""
    x = np.asarray(chips, np.float64)
    if order == "BGR":
        x = x[..., ::-1]
    return (x - 127.5) / 127.5


def unit(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    e = np.asarray(embeddings, np.float64)
    result: np.ndarray = e / np.linalg.norm(e, axis=-1, keepdims=True)
    return result
