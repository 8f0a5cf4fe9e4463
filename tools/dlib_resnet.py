"""dlib's face recognition ResNet (``anet_type`` of ``dnn_face_recognition_ex.cpp``) in TensorFlow.

The network, as dlib declares it::

    block<N,stride>  = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,stride,stride, x>>>>>
    ares<N>          = relu<add_prev1<block<N,1, tag1<x>>>>
    ares_down<N>     = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,2, tag1<x>>>>>>>
    anet = fc_no_bias<128, avg_pool_everything<
             ares_down<256>, ares<256> x2, ares_down<256>, ares<128> x2, ares_down<128>,
             ares<64> x3, ares_down<64>, ares<32> x3,
             max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>

Conventions taken from dlib and reproduced here:

- ``con_`` pads ``rows/2`` when the stride is 1 and nothing when it is 2 (the serialized padding
  is used as-is); ``max_pool_``/``avg_pool_`` likewise (all pools here are unpadded);
  output size ``1 + (n + 2*pad - window) // stride``.
- ``con_`` is a cross-correlation (no kernel flip), filters stored ``(out, in, rows, cols)``.
- ``affine_`` is a folded batch-norm ``gamma * x + beta`` per channel; it is folded into the
  preceding convolution here.
- ``add_prev_`` adds tensors of different shapes: the output takes the larger size of every
  dimension and the smaller operand is zero-padded at the end (channels 32->64 etc., and
  3x3 + 4x4 -> 4x4, 1x1 + 2x2 -> 2x2 in the last two down-sampling blocks).
- the input layer computes ``(pixel - mean_rgb) / 256``; the first convolution has no padding,
  so this folds exactly into its weights and bias and the model takes raw RGB pixels.
- the descriptor is the fc output as-is (dlib does not L2-normalise it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from dlib_format import DlibLayer, DlibNetwork

_INPUT_SCALE = 256.0


@dataclass(frozen=True, slots=True)
class FoldedConv:
    """A convolution with its affine layer (and for the stem, input normalisation) folded in."""

    kernel: np.ndarray  # HWIO, float32
    bias: np.ndarray
    stride: int
    padding: int


def fold_conv(con: DlibLayer, affine: DlibLayer) -> FoldedConv:
    """``gamma * (W * x + b) + beta`` -> ``W' * x + b'``; the kernel is returned as HWIO."""
    if con.attrs["padding_y"] != con.attrs["padding_x"] or con.attrs["stride_y"] != con.attrs["stride_x"]:
        raise ValueError("only square strides and paddings are supported")
    gamma = affine.weights["gamma"].astype(np.float64)
    beta = affine.weights["beta"].astype(np.float64)
    filters = con.weights["filters"].astype(np.float64)  # (out, in, rows, cols)
    bias = con.weights.get("biases", np.zeros(filters.shape[0])).astype(np.float64)
    return FoldedConv(
        kernel=(filters * gamma[:, None, None, None]).transpose(2, 3, 1, 0),
        bias=gamma * bias + beta,
        stride=int(con.attrs["stride_y"]),
        padding=int(con.attrs["padding_y"]),
    )


def fold_input_normalisation(conv: FoldedConv, mean_rgb: tuple[float, ...]) -> FoldedConv:
    """Fold ``(x - mean) / 256`` into an unpadded first convolution."""
    if conv.padding != 0:
        raise ValueError("input normalisation folds exactly only into an unpadded convolution")
    mean = np.asarray(mean_rgb, dtype=np.float64)
    kernel = conv.kernel / _INPUT_SCALE
    bias = conv.bias - np.einsum("hwio,i->o", kernel, mean)
    return FoldedConv(kernel=kernel, bias=bias, stride=conv.stride, padding=0)


@dataclass(frozen=True, slots=True)
class Op:
    """One step of the flattened program: ``conv``, ``relu``, ``max_pool``, ``avg_pool``,
    ``tag`` (remember the block input), ``stash`` (remember the block output and continue
    from the block input) or ``add`` (add the remembered tensor, zero-padding the smaller)."""

    kind: str
    conv: FoldedConv | None = None
    window: int = 0
    stride: int = 0


def _block_starts(layers: tuple[DlibLayer, ...]) -> set[int]:
    """Indices of the first conv of each residual block (where dlib's ``tag1`` sits)."""
    kinds = [layer.kind for layer in layers]
    starts = set()
    for i in range(2, len(kinds)):
        after_pool = kinds[i - 1] == "max_pool"
        after_block = kinds[i - 1] == "relu" and kinds[i - 2] == "add_prev"
        if kinds[i] == "con" and (after_pool or after_block):
            starts.add(i)
    return starts


def compile_program(net: DlibNetwork) -> list[Op]:
    """Turn dlib's layer list into a flat program with the residual wiring made explicit."""
    layers = net.layers
    starts = _block_starts(layers)
    ops: list[Op] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer.kind == "con":
            if i in starts:
                ops.append(Op("tag"))
            conv = fold_conv(layer, layers[i + 1])
            if i == 0:
                conv = fold_input_normalisation(conv, net.input.mean_rgb)
            ops.append(Op("conv", conv=conv))
            i += 2
            continue
        if layer.kind == "relu":
            ops.append(Op("relu"))
        elif layer.kind == "max_pool":
            ops.append(Op("max_pool", window=int(layer.attrs["rows"]), stride=int(layer.attrs["stride_y"])))
        elif layer.kind == "avg_pool" and layer.attrs["rows"] == 0:
            ops.append(Op("global_avg_pool"))
        elif layer.kind == "avg_pool":
            ops.append(Op("stash"))
            ops.append(Op("avg_pool", window=int(layer.attrs["rows"]), stride=int(layer.attrs["stride_y"])))
        elif layer.kind == "add_prev":
            ops.append(Op("add"))
        elif layer.kind != "fc":
            raise ValueError(f"unexpected layer {layer.version} at {i}")
        i += 1
    _check_wiring(net, ops)
    return ops


def _check_wiring(net: DlibNetwork, ops: list[Op]) -> None:
    """Cross-check against the file: every tag1 / tag2 / skip1 is one wrapper of version 1."""
    expected = sum(op.kind == "tag" for op in ops) + 2 * sum(op.kind == "stash" for op in ops)
    found = sum(v == 1 for v in net.wrapper_versions)
    if expected != found:
        raise ValueError(f"residual wiring mismatch: {expected} tag/skip layers vs {found} in file")
    if sum(op.kind == "add" for op in ops) != sum(op.kind == "tag" for op in ops):
        raise ValueError("every residual block must end in add_prev")


def fc_weights(net: DlibNetwork) -> np.ndarray:
    fc = net.layers[-1]
    if fc.kind != "fc" or "biases" in fc.weights:
        raise ValueError("expected a final fc_no_bias layer")
    return fc.weights["weights"]


def _pad_to(x: tf.Tensor, shape: tuple[int, int, int]) -> tf.Tensor:
    """Zero-pad an NHWC tensor at the end of H, W and C up to ``shape`` (dlib's add_prev)."""
    h, w, c = (int(d) for d in x.shape[1:])
    if (h, w, c) == shape:
        return x
    return tf.pad(x, [[0, 0], [0, shape[0] - h], [0, shape[1] - w], [0, shape[2] - c]])


def _add_prev(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    shape = tuple(max(int(p), int(q)) for p, q in zip(a.shape[1:], b.shape[1:], strict=True))
    return _pad_to(a, shape) + _pad_to(b, shape)  # type: ignore[arg-type]


def _conv(x: tf.Tensor, conv: FoldedConv) -> tf.Tensor:
    size = conv.kernel.shape[0]
    if conv.stride == 1 and conv.padding == size // 2 and size % 2 == 1:
        padding = "SAME"  # identical to dlib's symmetric rows/2 padding at stride 1
    elif conv.padding == 0:
        padding = "VALID"
    else:
        raise ValueError(f"unsupported conv padding {conv.padding} at stride {conv.stride}")
    kernel = tf.constant(conv.kernel.astype(np.float32))
    y = tf.nn.conv2d(x, kernel, strides=conv.stride, padding=padding)
    return tf.nn.bias_add(y, tf.constant(conv.bias.astype(np.float32)))


def _pool(x: tf.Tensor, op: Op) -> tf.Tensor:
    pool = tf.nn.max_pool2d if op.kind == "max_pool" else tf.nn.avg_pool2d
    return pool(x, ksize=op.window, strides=op.stride, padding="VALID")


def run_program(ops: list[Op], fc: np.ndarray, x: tf.Tensor) -> tf.Tensor:
    """Evaluate the program on a float NHWC batch of raw RGB pixels."""
    block_input = x
    stashed: tf.Tensor | None = None
    for op in ops:
        if op.kind == "tag":
            block_input = x
        elif op.kind == "conv":
            assert op.conv is not None
            x = _conv(x, op.conv)
        elif op.kind == "relu":
            x = tf.nn.relu(x)
        elif op.kind in ("max_pool", "avg_pool"):
            x = _pool(x, op)
        elif op.kind == "stash":
            stashed, x = x, block_input
        elif op.kind == "add":
            x = _add_prev(x, stashed if stashed is not None else block_input)
            stashed = None
        elif op.kind == "global_avg_pool":
            x = tf.reduce_mean(x, axis=[1, 2])
    return tf.matmul(x, tf.constant(fc.astype(np.float32)))


class DlibResNet(tf.Module):  # type: ignore[misc]
    """The converted embedder: ``[1, 150, 150, 3]`` float raw RGB -> ``[1, 128]`` descriptor."""

    def __init__(self, net: DlibNetwork) -> None:
        super().__init__(name="dlib_resnet_v1")
        self._ops = compile_program(net)
        self._fc = fc_weights(net)
        size = (net.input.rows, net.input.cols)
        spec = tf.TensorSpec([1, *size, 3], tf.float32, name="image")
        self.serve = tf.function(self._forward, input_signature=[spec])

    def _forward(self, image: tf.Tensor) -> tf.Tensor:
        return tf.identity(run_program(self._ops, self._fc, image), name="descriptor")
