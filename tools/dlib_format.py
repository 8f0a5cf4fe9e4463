"""Reader for dlib's DNN serialization (as used by ``dlib_face_recognition_resnet_model_v1.dat``).

dlib writes a network recursively, outermost layer first::

    add_loss_layer: int version (1), loss details, subnetwork
    add_layer:      int version (2; 3 for the layer sitting on the input layer),
                    subnetwork (or the input layer), layer details, 3 bools, 3 tensors
                    (+ one int for version 3)
    add_tag_layer / add_skip_layer: int version (1), subnetwork

so the file starts with the chain of wrapper versions (2 = real layer, 1 = tag or skip),
then the input layer, then the details of every real layer from the input outwards.

Primitive encodings (``dlib/serialize.h``, ``dlib/float_details.h``, ``dlib/dnn/tensor.h``):

- integer: one control byte (low nibble = number of little-endian bytes that follow,
  bit 7 = negative) then the magnitude bytes;
- float/double: an integer mantissa and an integer exponent, ``value = mantissa * 2**exponent``
  (exponent 32000/32001/32002 encode +inf/-inf/nan);
- bool: one ASCII character ``'0'`` or ``'1'``;
- string: integer length, then the bytes;
- tensor: integer version (2), then n, k, nr, nc, then ``n*k*nr*nc`` little-endian float32;
- alias_tensor: integer version (1), then n, k, nr, nc.

Every layer's details start with a version string (``con_4``, ``affine_``, ``relu_``, ...).
Only the layer types found in dlib's face recognition ResNet are supported.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_INF_EXPONENT = 32000
_NINF_EXPONENT = 32001
_NAN_EXPONENT = 32002
_TENSOR_VERSION = 2
_ALIAS_TENSOR_VERSION = 1
_BOTTOM_LAYER_VERSION = 3
_LAYER_VERSION = 2
_WRAPPER_VERSION = 1


class DlibFormatError(ValueError):
    """The byte stream is not a dlib network of the supported shape."""


@dataclass(frozen=True, slots=True)
class DlibLayer:
    """One computational layer, in input-to-output order.

    ``kind`` is the layer's version string without its numeric suffix (``con``, ``affine``,
    ``relu``, ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``); ``attrs`` holds its scalar
    settings; ``weights`` its parameters as float32 arrays (conv filters as
    ``(out, in, rows, cols)``, dlib's ``n, k, nr, nc``).
    """

    kind: str
    version: str
    attrs: dict[str, int | float | bool] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DlibInput:
    """``input_rgb_image_sized``: per-channel means (R, G, B) and the fixed chip size."""

    mean_rgb: tuple[float, float, float]
    rows: int
    cols: int


@dataclass(frozen=True, slots=True)
class DlibNetwork:
    """A parsed network: loss settings, input layer, the wrapper chain and the layers."""

    loss: str
    loss_params: tuple[float, ...]
    wrapper_versions: tuple[int, ...]
    input: DlibInput
    layers: tuple[DlibLayer, ...]

    @property
    def num_params(self) -> int:
        return sum(w.size for layer in self.layers for w in layer.weights.values())


class DlibReader:
    """Sequential decoder for dlib's primitive encodings over an in-memory buffer."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def _take(self, count: int) -> memoryview:
        if count > self.remaining:
            raise DlibFormatError(f"unexpected end of data at offset {self.pos}")
        chunk = self._data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def read_int(self) -> int:
        control = int(self._take(1)[0])
        if control & 0x70:
            raise DlibFormatError(f"bad integer control byte {control:#x} at {self.pos - 1}")
        value = int.from_bytes(self._take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        mantissa = self.read_int()
        exponent = self.read_int()
        if exponent == _INF_EXPONENT:
            return math.inf
        if exponent == _NINF_EXPONENT:
            return -math.inf
        if exponent == _NAN_EXPONENT:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def read_bool(self) -> bool:
        char = bytes(self._take(1))
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {char!r} at {self.pos - 1}")
        return char == b"1"

    def read_string(self) -> str:
        return bytes(self._take(self.read_int())).decode("ascii")

    def read_tensor(self) -> np.ndarray:
        version = self.read_int()
        if version != _TENSOR_VERSION:
            raise DlibFormatError(f"unsupported tensor version {version} at {self.pos}")
        shape = tuple(self.read_int() for _ in range(4))
        count = math.prod(shape)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.read_int()
        if version != _ALIAS_TENSOR_VERSION:
            raise DlibFormatError(f"unsupported alias_tensor version {version} at {self.pos}")
        n, k, nr, nc = (self.read_int() for _ in range(4))
        return n, k, nr, nc


def _split_version(version: str) -> str:
    """``con_4`` -> ``con``; ``max_pool_2`` -> ``max_pool``; ``affine_`` -> ``affine``."""
    return version.rstrip("0123456789").rstrip("_")


def _read_window(reader: DlibReader) -> dict[str, int | float | bool]:
    keys = ("rows", "cols", "stride_y", "stride_x", "padding_y", "padding_x")
    return {key: reader.read_int() for key in keys}


def _read_con(reader: DlibReader, version: str) -> DlibLayer:
    params = reader.read_tensor().ravel()
    attrs: dict[str, int | float | bool] = {"num_filters": reader.read_int()}
    attrs.update(_read_window(reader))
    filters_shape = reader.read_alias_tensor()
    biases_shape = reader.read_alias_tensor()
    for key in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        attrs[key] = reader.read_float()
    attrs["use_bias"] = reader.read_bool() if version == "con_5" else True
    n_filter = math.prod(filters_shape)
    weights = {"filters": params[:n_filter].reshape(filters_shape)}
    if attrs["use_bias"]:
        weights["biases"] = params[n_filter : n_filter + math.prod(biases_shape)].copy()
    if params.size != n_filter + (weights["biases"].size if attrs["use_bias"] else 0):
        raise DlibFormatError(f"con_ parameter count mismatch at {reader.pos}")
    return DlibLayer("con", version, attrs, weights)


def _read_affine(reader: DlibReader, version: str) -> DlibLayer:
    params = reader.read_tensor().ravel()
    gamma_size = math.prod(reader.read_alias_tensor())
    beta_size = math.prod(reader.read_alias_tensor())
    mode = reader.read_int()
    if gamma_size + beta_size != params.size:
        raise DlibFormatError(f"affine_ parameter count mismatch at {reader.pos}")
    weights = {"gamma": params[:gamma_size].copy(), "beta": params[gamma_size:].copy()}
    return DlibLayer("affine", version, {"mode": mode}, weights)


def _read_pool(reader: DlibReader, version: str) -> DlibLayer:
    return DlibLayer(_split_version(version), version, _read_window(reader))


def _read_fc(reader: DlibReader, version: str) -> DlibLayer:
    attrs: dict[str, int | float | bool] = {
        "num_outputs": reader.read_int(),
        "num_inputs": reader.read_int(),
    }
    params = reader.read_tensor().ravel()
    weights_shape = reader.read_alias_tensor()
    biases_shape = reader.read_alias_tensor()
    attrs["bias_mode"] = reader.read_int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
    for key in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        attrs[key] = reader.read_float()
    n_weight = math.prod(weights_shape)
    # dlib's fc_ weights are (num_inputs, num_outputs): output = input @ W (+ b).
    weights = {"weights": params[:n_weight].reshape(int(attrs["num_inputs"]), -1).copy()}
    if attrs["bias_mode"] == 0:
        weights["biases"] = params[n_weight : n_weight + math.prod(biases_shape)].copy()
    return DlibLayer("fc", version, attrs, weights)


def _read_plain(_reader: DlibReader, version: str) -> DlibLayer:
    return DlibLayer(_split_version(version), version)


_DETAIL_READERS = {
    "con_4": _read_con,
    "con_5": _read_con,
    "affine_": _read_affine,
    "affine_2": _read_affine,
    "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool,
    "fc_2": _read_fc,
    "relu_": _read_plain,
    "add_prev_": _read_plain,
}


def _read_layer_details(reader: DlibReader) -> DlibLayer:
    version = reader.read_string()
    try:
        detail_reader = _DETAIL_READERS[version]
    except KeyError:
        raise DlibFormatError(f"unsupported layer '{version}' at offset {reader.pos}") from None
    return detail_reader(reader, version)


def _read_layer_trailer(reader: DlibReader, wrapper_version: int) -> None:
    """Skip add_layer's bookkeeping: 3 bools, 3 (normally empty) tensors, [+1 int]."""
    for _ in range(3):
        reader.read_bool()
    for _ in range(3):
        reader.read_tensor()
    if wrapper_version == _BOTTOM_LAYER_VERSION:
        reader.read_int()  # sample expansion factor of the input layer


def _read_input(reader: DlibReader) -> DlibInput:
    version = reader.read_string()
    if version != "input_rgb_image_sized":
        raise DlibFormatError(f"unsupported input layer '{version}'")
    mean = (reader.read_float(), reader.read_float(), reader.read_float())
    return DlibInput(mean_rgb=mean, rows=reader.read_int(), cols=reader.read_int())


def _read_wrapper_chain(reader: DlibReader) -> list[int]:
    versions: list[int] = []
    while True:
        version = reader.read_int()
        versions.append(version)
        if version == _BOTTOM_LAYER_VERSION:
            return versions
        if version not in (_LAYER_VERSION, _WRAPPER_VERSION):
            raise DlibFormatError(f"unexpected layer wrapper version {version}")


def parse_network(data: bytes) -> DlibNetwork:
    """Parse a serialized ``add_loss_layer<loss_metric_, ...>`` network."""
    reader = DlibReader(data)
    loss_version = reader.read_int()
    if loss_version != 1:
        raise DlibFormatError(f"unsupported add_loss_layer version {loss_version}")
    loss = reader.read_string()
    loss_params = (reader.read_float(), reader.read_float()) if loss == "loss_metric_2" else ()
    wrappers = _read_wrapper_chain(reader)
    net_input = _read_input(reader)
    real_layers = [v for v in wrappers if v != _WRAPPER_VERSION]
    layers: list[DlibLayer] = []
    for wrapper_version in reversed(real_layers):
        layers.append(_read_layer_details(reader))
        _read_layer_trailer(reader, wrapper_version)
    if reader.remaining:
        raise DlibFormatError(f"{reader.remaining} trailing bytes after the network")
    return DlibNetwork(loss, loss_params, tuple(wrappers), net_input, tuple(layers))


def load_network(path: Path) -> DlibNetwork:
    """Read and parse a dlib ``.dat`` network file."""
    return parse_network(path.read_bytes())


def _main() -> None:
    parser = argparse.ArgumentParser(description="Print the layers of a dlib DNN file.")
    parser.add_argument("path", type=Path)
    net = load_network(parser.parse_args().path)
    print(f"loss={net.loss} {net.loss_params} input={net.input}")
    for index, layer in enumerate(net.layers):
        shapes = {name: w.shape for name, w in layer.weights.items()}
        print(f"{index:3d} {layer.version:10s} {layer.attrs} {shapes}")
    print(f"{len(net.layers)} layers, {net.num_params} parameters")


if __name__ == "__main__":
    _main()
