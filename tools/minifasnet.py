"""MiniFASNet (Silent-Face-Anti-Spoofing's anti-spoofing networks) in PyTorch and in TensorFlow.

Both are built from the upstream ``.pth`` state dict: the PyTorch module is the float reference
(loaded with ``strict=True``, so every name and shape of the file must match this definition), the
TensorFlow module is what is converted to TFLite (batch-norms folded into the convolutions, the
three final linear layers folded into one).

The network, for an 80×80 BGR input (raw 0..255 pixels, no normalisation)::

    stem      conv 3x3/2 3→32, BN, PReLU · depthwise 3x3/1 32, BN, PReLU           → 40×40
    block     1x1 c_in→e, BN, PReLU · depthwise 3x3/s e, BN, PReLU · 1x1 e→c_out, BN
              (+ input when residual; with SE: x * sigmoid(BN(1x1(ReLU(BN(1x1(mean(x)))))))
               on the block output before the add)
    down      block s=2 32→64 (e 103)                                              → 20×20
    stage 3   4 residual blocks at 64                                              (20×20)
    down      block s=2 64→128 (e 231)                                             → 10×10
    stage 4   6 residual blocks at 128                                             (10×10)
    down      block s=2 128→128 (e 308)                                            →  5×5
    stage 5   2 residual blocks at 128                                             ( 5×5)
    head      1x1 128→512, BN, PReLU · depthwise 5x5 valid 512, BN → 512
              → linear 512→128 (no bias) → BN1d → linear 128→3 (no bias) = logits

The two released models differ in the expansion widths of the residual blocks (the pruned
"keep" lists of upstream) and in SE: MiniFASNetV1SE has a squeeze-excitation (reduction 4) in
the last block of each residual stage. Convolutions have no bias; PyTorch pads 1 on every side
for the 3×3 convolutions (also at stride 2, which TensorFlow's SAME would pad only at the end:
the port pads explicitly).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import torch
from torch import nn

BN_EPS = 1e-5
INPUT_SIZE = 80
CLASSES = 3


@dataclass(frozen=True, slots=True)
class Variant:
    """The widths of one released network: expansion width of every residual block per stage."""

    name: str
    stage3: tuple[int, ...]
    stage4: tuple[int, ...]
    stage5: tuple[int, ...]
    se: bool


MINIFASNET_V2 = Variant("MiniFASNetV2", (13, 13, 13, 13), (231, 52, 26, 77, 26, 26), (26, 26), se=False)
MINIFASNET_V1SE = Variant("MiniFASNetV1SE", (13, 26, 13, 52), (154, 52, 26, 52, 26, 26), (26, 26), se=True)
SE_REDUCTION = 4


# --------------------------------------------------------------------------- PyTorch reference


class ConvBN(nn.Module):
    """conv (no bias) → BN → PReLU (unless ``act`` is False)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        padding = 1 if kernel == 3 else 0
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.prelu = nn.PReLU(c_out) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.prelu is not None else x


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = channels // SE_REDUCTION
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3), keepdim=True)
        w = torch.relu(self.bn1(self.fc1(w)))
        return x * torch.sigmoid(self.bn2(self.fc2(w)))


class Block(nn.Module):
    """Inverted bottleneck: expand 1x1, depthwise 3x3, project 1x1 (linear)."""

    def __init__(self, c_in: int, expand: int, c_out: int, stride: int, residual: bool, se: bool) -> None:
        super().__init__()
        self.conv = ConvBN(c_in, expand)
        self.conv_dw = ConvBN(expand, expand, kernel=3, stride=stride, groups=expand)
        self.project = ConvBN(expand, c_out, act=False)
        self.se_module = SqueezeExcite(c_out) if se else None
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y if self.residual else y


class Stage(nn.Module):
    def __init__(self, channels: int, expansions: tuple[int, ...], se: bool) -> None:
        super().__init__()
        last = len(expansions) - 1
        self.model = nn.Sequential(
            *(Block(channels, e, channels, 1, True, se and i == last) for i, e in enumerate(expansions))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # type: ignore[no-any-return]


class MiniFASNet(nn.Module):
    """The float reference: ``[N, 3, 80, 80]`` BGR 0..255 → ``[N, 3]`` logits."""

    def __init__(self, variant: Variant) -> None:
        super().__init__()
        self.conv1 = ConvBN(3, 32, kernel=3, stride=2)
        self.conv2_dw = ConvBN(32, 32, kernel=3, groups=32)
        self.conv_23 = Block(32, 103, 64, 2, residual=False, se=False)
        self.conv_3 = Stage(64, variant.stage3, variant.se)
        self.conv_34 = Block(64, 231, 128, 2, residual=False, se=False)
        self.conv_4 = Stage(128, variant.stage4, variant.se)
        self.conv_45 = Block(128, 308, 128, 2, residual=False, se=False)
        self.conv_5 = Stage(128, variant.stage5, variant.se)
        self.conv_6_sep = ConvBN(128, 512)
        self.conv_6_dw = nn.Module()
        self.conv_6_dw.conv = nn.Conv2d(512, 512, 5, groups=512, bias=False)
        self.conv_6_dw.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, 128, bias=False)
        self.bn = nn.BatchNorm1d(128)
        self.prob = nn.Linear(128, CLASSES, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (
            self.conv1,
            self.conv2_dw,
            self.conv_23,
            self.conv_3,
            self.conv_34,
            self.conv_4,
            self.conv_45,
            self.conv_5,
            self.conv_6_sep,
        ):
            x = stage(x)
        x = self.conv_6_dw.bn(self.conv_6_dw.conv(x)).flatten(1)
        return self.prob(self.bn(self.linear(x)))  # type: ignore[no-any-return]


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without DataParallel's ``module.`` prefix."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_reference(path: str, variant: Variant) -> MiniFASNet:
    state = strip_prefix(torch.load(path, map_location="cpu", weights_only=True))
    model = MiniFASNet(variant)
    model.load_state_dict(state, strict=True)
    return model.eval()


# --------------------------------------------------------------------------- TensorFlow port

Weights = Mapping[str, np.ndarray]


def numpy_state(model: MiniFASNet) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in model.state_dict().items()}


def _bn(w: Weights, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """BN as ``gain * x + shift``."""
    gain = w[f"{prefix}.weight"] / np.sqrt(w[f"{prefix}.running_var"] + BN_EPS)
    return gain, w[f"{prefix}.bias"] - w[f"{prefix}.running_mean"] * gain


@dataclass(frozen=True, slots=True)
class Conv:
    """A convolution with its BN folded in; ``kernel`` HWIO (HW C 1 for depthwise)."""

    kernel: np.ndarray
    bias: np.ndarray
    stride: int
    depthwise: bool
    neg_alpha: np.ndarray | None  # -PReLU slope, or None for no activation


def fold(w: Weights, prefix: str, stride: int = 1, act: bool = True) -> Conv:
    weight = w[f"{prefix}.conv.weight"]  # (out, in/groups, kh, kw)
    gain, shift = _bn(w, f"{prefix}.bn")
    depthwise = weight.shape[1] == 1 and weight.shape[0] > 1 and weight.shape[2] > 1
    scaled = weight * gain[:, None, None, None]
    kernel = scaled.transpose(2, 3, 0, 1) if depthwise else scaled.transpose(2, 3, 1, 0)
    neg_alpha = -w[f"{prefix}.prelu.weight"] if act else None
    if neg_alpha is not None and (-neg_alpha).max() > 1:
        raise ValueError(f"{prefix}: a PReLU slope above 1 cannot be written as max(y, alpha * y)")
    return Conv(kernel, shift, stride, depthwise, neg_alpha)


def _const(a: np.ndarray) -> tf.Tensor:
    return tf.constant(a.astype(np.float32))


PRELU_SPLIT = 2.0
STEM_SCOPE = "float_stem"
"""Name scope of the layers that run at 40×40 (the stem and the first down-sampling block)."""


def apply(x: tf.Tensor, conv: Conv, fused: bool = False) -> tf.Tensor:
    """The convolution and its PReLU.

    PReLU is written ``max(2 z, 2 alpha z)`` with ``z = y / 2`` folded into the convolution
    (exact for every slope alpha <= 1, negative ones included). Why: TFLite's PRELU op is not
    delegated to XNNPACK in int8 (the int8 model ran 8x slower than float32 on x86-64), while MUL
    and MAXIMUM are; and int8 MAXIMUM forces one scale on its inputs and output, so a plain
    ``max(y, alpha y)`` clips the convolution's negative outputs to the PReLU output's range
    before they are multiplied by alpha. The two MULs give the convolution output its own scale.
    """
    size = conv.kernel.shape[0]
    if size == 3:  # PyTorch's padding=1 on every side
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    strides = [1, conv.stride, conv.stride, 1]
    split = 1.0 if conv.neg_alpha is None or fused else PRELU_SPLIT
    kernel, bias = _const(conv.kernel / split), _const(conv.bias / split)
    if conv.depthwise:
        y = tf.nn.depthwise_conv2d(x, kernel, strides=strides, padding="VALID")
    else:
        y = tf.nn.conv2d(x, kernel, strides=strides, padding="VALID")
    y = tf.nn.bias_add(y, bias)
    if conv.neg_alpha is None:
        return y
    if fused:  # Keras' PReLU pattern, which the converter fuses into one PRELU op
        return tf.nn.relu(y) + tf.nn.relu(-y) * _const(conv.neg_alpha.reshape(1, 1, -1))
    ones = np.full_like(conv.neg_alpha, split)
    return tf.maximum(y * _const(ones), y * _const(-conv.neg_alpha * split))


@dataclass(frozen=True, slots=True)
class SE:
    w1: np.ndarray  # (c, c/4)
    b1: np.ndarray
    w2: np.ndarray  # (c/4, c)
    b2: np.ndarray


@dataclass(frozen=True, slots=True)
class FoldedBlock:
    convs: tuple[Conv, Conv, Conv]
    se: SE | None
    residual: bool


def fold_block(w: Weights, prefix: str, stride: int, residual: bool) -> FoldedBlock:
    convs = (
        fold(w, f"{prefix}.conv"),
        fold(w, f"{prefix}.conv_dw", stride=stride),
        fold(w, f"{prefix}.project", act=False),
    )
    se = None
    if f"{prefix}.se_module.fc1.weight" in w:
        p = f"{prefix}.se_module"
        g1, s1 = _bn(w, f"{p}.bn1")
        g2, s2 = _bn(w, f"{p}.bn2")
        w1 = w[f"{p}.fc1.weight"][:, :, 0, 0] * g1[:, None]
        w2 = w[f"{p}.fc2.weight"][:, :, 0, 0] * g2[:, None]
        se = SE(w1.T, s1, w2.T, s2)
    return FoldedBlock(convs, se, residual)


def apply_block(x: tf.Tensor, block: FoldedBlock, fused: bool = False) -> tf.Tensor:
    y = x
    for conv in block.convs:
        y = apply(y, conv, fused)
    if block.se is not None:
        s = tf.reduce_mean(y, axis=[1, 2])
        s = tf.nn.relu(tf.matmul(s, _const(block.se.w1)) + _const(block.se.b1))
        s = tf.sigmoid(tf.matmul(s, _const(block.se.w2)) + _const(block.se.b2))
        y = y * s[:, None, None, :]
    return x + y if block.residual else y


@dataclass(frozen=True, slots=True)
class FoldedNet:
    """The whole network as folded layers: stem, blocks, head conv, head depthwise, one dense."""

    stem: tuple[Conv, ...]
    blocks: tuple[FoldedBlock, ...]
    head: tuple[Conv, Conv]
    dense: np.ndarray  # (512, 3)
    dense_bias: np.ndarray


def fold_network(w: Weights, variant: Variant) -> FoldedNet:
    blocks = [fold_block(w, "conv_23", 2, residual=False)]
    blocks += [fold_block(w, f"conv_3.model.{i}", 1, True) for i in range(len(variant.stage3))]
    blocks.append(fold_block(w, "conv_34", 2, residual=False))
    blocks += [fold_block(w, f"conv_4.model.{i}", 1, True) for i in range(len(variant.stage4))]
    blocks.append(fold_block(w, "conv_45", 2, residual=False))
    blocks += [fold_block(w, f"conv_5.model.{i}", 1, True) for i in range(len(variant.stage5))]
    # linear (no bias) → BN1d → prob (no bias): logits = P (g * (L x) + s) = (P diag(g) L) x + P s
    gain, shift = _bn(w, "bn")
    lin, prob = w["linear.weight"], w["prob.weight"]
    dense = (prob * gain[None, :]) @ lin
    return FoldedNet(
        stem=(fold(w, "conv1", stride=2), fold(w, "conv2_dw")),
        blocks=tuple(blocks),
        head=(fold(w, "conv_6_sep"), fold(w, "conv_6_dw", act=False)),
        dense=dense.T,
        dense_bias=prob @ shift,
    )


class MiniFASNetTF(tf.Module):  # type: ignore[misc]
    """The converted network: ``[1, 80, 80, 3]`` float BGR 0..255 → ``[1, 3]`` logits."""

    def __init__(self, net: FoldedNet, name: str) -> None:
        super().__init__(name=name)
        self._net = net
        spec = tf.TensorSpec([1, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, name="image")
        self.serve = tf.function(self._forward, input_signature=[spec])

    def _forward(self, image: tf.Tensor) -> tf.Tensor:
        x = image
        with tf.name_scope(STEM_SCOPE):  # the 40×40 layers: kept float32 in the int8 model
            for conv in self._net.stem:
                x = apply(x, conv, fused=True)
            x = apply_block(x, self._net.blocks[0], fused=True)
        for block in self._net.blocks[1:]:
            x = apply_block(x, block)
        for conv in self._net.head:
            x = apply(x, conv)
        x = tf.reshape(x, [1, 512])
        logits = tf.matmul(x, _const(self._net.dense)) + _const(self._net.dense_bias)
        return tf.identity(logits, name="logits")
