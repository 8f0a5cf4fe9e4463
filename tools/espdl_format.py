"""Reader for ESP-DL's ``.espdl`` model files (the FlatBuffers schema ``espdl.fbs`` of esp-dl).

Only what an inference graph needs is read: the nodes (inputs, outputs, op type, attributes),
the initializers (dims, data type, raw bytes, power-of-two exponents) and the graph's inputs,
outputs and value infos (names, shapes, exponents). The file is::

    b"EDL2" | mode (uint32, 0 = not encrypted) | size of the FlatBuffer (uint32) | 4 bytes padding
    FlatBuffer (root table: Model)

FlatBuffers encoding (as the format defines it, little-endian): a table starts with a signed
32-bit offset back to its vtable; the vtable holds uint16 sizes and then one uint16 offset per
field in schema order (0 = absent). Offsets to sub-tables, strings and vectors are uint32,
relative to where they are stored; vectors and strings start with a uint32 length.

Run ``python tools/espdl_format.py FILE.espdl`` to print the graph.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"EDL2"
HEADER_BYTES = 16

DATA_TYPES: dict[int, np.dtype[np.generic]] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int8),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int16),
    6: np.dtype(np.int32),
    7: np.dtype(np.int64),
    9: np.dtype(np.bool_),
    10: np.dtype(np.float16),
    11: np.dtype(np.float64),
    12: np.dtype(np.uint32),
    13: np.dtype(np.uint64),
}

# field numbers (schema order) of the tables read here
MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO = 0, 2, 4, 5, 6
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP_TYPE, NODE_ATTRIBUTE = 0, 1, 2, 3, 5
ATTR_NAME, ATTR_TYPE, ATTR_F, ATTR_I, ATTR_S, ATTR_FLOATS, ATTR_INTS = 0, 3, 4, 5, 6, 10, 11
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_RAW_DATA, TENSOR_EXPONENTS = 0, 1, 6, 8, 13
VALUE_NAME, VALUE_TYPE, VALUE_EXPONENTS = 0, 1, 3
TYPEINFO_VALUE_TYPE, TYPEINFO_VALUE = 0, 1
TYPEINFO_TENSOR_TYPE = 1
TENSORTYPE_ELEM_TYPE, TENSORTYPE_SHAPE = 0, 1
SHAPE_DIM, DIM_VALUE, DIMVALUE_VALUE = 0, 0, 1

ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_FLOATS_TYPE, ATTR_INTS_TYPE = 1, 2, 3, 6, 7


class FormatError(ValueError):
    """The file is not an unencrypted ``.espdl`` model this reader understands."""


class _Table:
    """One FlatBuffers table at ``pos`` of ``buf``."""

    __slots__ = ("_vtable", "_vtable_size", "buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self._vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self._vtable_size = struct.unpack_from("<H", buf, self._vtable)[0]

    def _field(self, index: int) -> int:
        """Absolute position of field ``index``, or 0 when absent."""
        slot = 4 + 2 * index
        if slot >= self._vtable_size:
            return 0
        offset = struct.unpack_from("<H", self.buf, self._vtable + slot)[0]
        return self.pos + offset if offset else 0

    def _deref(self, at: int) -> int:
        return at + int(struct.unpack_from("<I", self.buf, at)[0])

    def scalar(self, index: int, fmt: str, default: int | float = 0) -> int | float:
        at = self._field(index)
        return struct.unpack_from("<" + fmt, self.buf, at)[0] if at else default

    def string(self, index: int) -> str:
        at = self._field(index)
        if not at:
            return ""
        start = self._deref(at)
        length = struct.unpack_from("<I", self.buf, start)[0]
        return self.buf[start + 4 : start + 4 + length].decode("utf-8")

    def table(self, index: int) -> _Table | None:
        at = self._field(index)
        return _Table(self.buf, self._deref(at)) if at else None

    def _vector(self, index: int) -> tuple[int, int]:
        """(start of the elements, count); (0, 0) when absent."""
        at = self._field(index)
        if not at:
            return 0, 0
        start = self._deref(at)
        return start + 4, int(struct.unpack_from("<I", self.buf, start)[0])

    def tables(self, index: int) -> list[_Table]:
        start, count = self._vector(index)
        return [_Table(self.buf, self._deref(start + 4 * i)) for i in range(count)]

    def strings(self, index: int) -> list[str]:
        start, count = self._vector(index)
        names = []
        for i in range(count):
            at = self._deref(start + 4 * i)
            length = struct.unpack_from("<I", self.buf, at)[0]
            names.append(self.buf[at + 4 : at + 4 + length].decode("utf-8"))
        return names

    def array(self, index: int, dtype: str, element_bytes: int = 0) -> np.ndarray:
        """A vector of scalars (or, with ``element_bytes``, of fixed-size structs, as bytes)."""
        start, count = self._vector(index)
        kind = np.dtype(dtype)
        size = count * (element_bytes or kind.itemsize)
        return np.frombuffer(self.buf, np.uint8, size, start).view(kind).copy()


@dataclass(frozen=True, slots=True)
class Initializer:
    """A constant tensor: ``values`` (as stored, e.g. int8) and its power-of-two exponent."""

    name: str
    dims: tuple[int, ...]
    values: np.ndarray
    exponent: int | None

    def dequantized(self) -> np.ndarray:
        """``values · 2^exponent`` as float64 (float data is returned as it is)."""
        if self.exponent is None or self.values.dtype.kind == "f":
            return self.values.astype(np.float64)
        return self.values.astype(np.float64) * 2.0**self.exponent


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, int | float | str | tuple[int, ...] | tuple[float, ...]]

    def ints(self, name: str) -> tuple[int, ...]:
        value = self.attributes[name]
        if not isinstance(value, tuple):
            raise FormatError(f"{self.name}: attribute {name} is not a list")
        return tuple(int(v) for v in value)

    def integer(self, name: str, default: int = 0) -> int:
        value = self.attributes.get(name, default)
        if not isinstance(value, int):
            raise FormatError(f"{self.name}: attribute {name} is not an integer")
        return value

    def text(self, name: str, default: str = "") -> str:
        return str(self.attributes.get(name, default))


@dataclass(frozen=True, slots=True)
class ValueInfo:
    name: str
    shape: tuple[int, ...]
    exponent: int | None


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: tuple[Node, ...]
    initializers: dict[str, Initializer]
    inputs: tuple[ValueInfo, ...]
    outputs: tuple[ValueInfo, ...]
    values: dict[str, ValueInfo]


def _initializer(table: _Table) -> Initializer:
    dims = tuple(int(d) for d in table.array(TENSOR_DIMS, "<i8"))
    data_type = int(table.scalar(TENSOR_DATA_TYPE, "i"))
    if data_type not in DATA_TYPES:
        raise FormatError(f"tensor {table.string(TENSOR_NAME)}: unsupported data type {data_type}")
    dtype = DATA_TYPES[data_type]
    raw = table.array(TENSOR_RAW_DATA, "u1", element_bytes=16)  # [AlignedBytes] of 16 bytes each
    count = int(np.prod(dims)) if dims else 1
    if raw.size < count * dtype.itemsize:
        raise FormatError(f"tensor {table.string(TENSOR_NAME)}: {raw.size} bytes for {count} values")
    values = raw[: count * dtype.itemsize].view(dtype.newbyteorder("<")).astype(dtype)
    exponents = table.array(TENSOR_EXPONENTS, "<i8")
    exponent = int(exponents[0]) if exponents.size else None
    if exponents.size > 1:
        raise FormatError(f"tensor {table.string(TENSOR_NAME)}: per-channel exponents are not supported")
    return Initializer(table.string(TENSOR_NAME), dims, values, exponent)


def _attribute(table: _Table) -> int | float | str | tuple[int, ...] | tuple[float, ...]:
    kind = int(table.scalar(ATTR_TYPE, "i"))
    if kind == ATTR_FLOAT:
        return float(table.scalar(ATTR_F, "f"))
    if kind == ATTR_INT:
        return int(table.scalar(ATTR_I, "q"))
    if kind == ATTR_STRING:
        return bytes(table.array(ATTR_S, "u1")).decode("utf-8")
    if kind == ATTR_FLOATS_TYPE:
        return tuple(float(v) for v in table.array(ATTR_FLOATS, "<f4"))
    if kind == ATTR_INTS_TYPE:
        return tuple(int(v) for v in table.array(ATTR_INTS, "<i8"))
    raise FormatError(f"attribute {table.string(ATTR_NAME)}: unsupported type {kind}")


def _node(table: _Table) -> Node:
    attributes = {a.string(ATTR_NAME): _attribute(a) for a in table.tables(NODE_ATTRIBUTE)}
    return Node(
        table.string(NODE_NAME),
        table.string(NODE_OP_TYPE),
        tuple(table.strings(NODE_INPUT)),
        tuple(table.strings(NODE_OUTPUT)),
        attributes,
    )


def _value_info(table: _Table) -> ValueInfo:
    shape: tuple[int, ...] = ()
    info = table.table(VALUE_TYPE)
    if info is not None and int(info.scalar(TYPEINFO_VALUE_TYPE, "B")) == TYPEINFO_TENSOR_TYPE:
        tensor_type = info.table(TYPEINFO_VALUE)
        shape_table = tensor_type.table(TENSORTYPE_SHAPE) if tensor_type is not None else None
        if shape_table is not None:
            dims = []
            for dim in shape_table.tables(SHAPE_DIM):
                value = dim.table(DIM_VALUE)
                dims.append(int(value.scalar(DIMVALUE_VALUE, "q")) if value is not None else 0)
            shape = tuple(dims)
    exponents = table.array(VALUE_EXPONENTS, "<i8")
    return ValueInfo(table.string(VALUE_NAME), shape, int(exponents[0]) if exponents.size else None)


def parse(data: bytes) -> Graph:
    """The graph of an unencrypted ``.espdl`` file's bytes."""
    if data[:4] != MAGIC:
        raise FormatError(f"not an .espdl file (magic {data[:4]!r})")
    mode, size = struct.unpack_from("<II", data, 4)
    if mode != 0:
        raise FormatError(f"encrypted .espdl file (mode {mode})")
    if HEADER_BYTES + size > len(data):
        raise FormatError(f"header says {size} bytes, file has {len(data) - HEADER_BYTES}")
    buf = bytes(data[HEADER_BYTES : HEADER_BYTES + size])
    model = _Table(buf, int(struct.unpack_from("<I", buf, 0)[0]))
    graph = model.table(MODEL_GRAPH)
    if graph is None:
        raise FormatError("model has no graph")
    initializers = {t.name: t for t in (_initializer(x) for x in graph.tables(GRAPH_INITIALIZER))}
    values = {v.name: v for v in (_value_info(x) for x in graph.tables(GRAPH_VALUE_INFO))}
    return Graph(
        tuple(_node(n) for n in graph.tables(GRAPH_NODE)),
        initializers,
        tuple(_value_info(x) for x in graph.tables(GRAPH_INPUT)),
        tuple(_value_info(x) for x in graph.tables(GRAPH_OUTPUT)),
        values,
    )


def load(path: Path) -> Graph:
    return parse(path.read_bytes())


def main(argv: list[str]) -> int:
    graph = load(Path(argv[1]))
    for info in graph.inputs:
        print(f"input  {info.name} {info.shape} exponent {info.exponent}")
    for node in graph.nodes:
        consts = [
            f"{n}{graph.initializers[n].dims}@{graph.initializers[n].exponent}"
            for n in node.inputs
            if n in graph.initializers
        ]
        out = graph.values.get(node.outputs[0])
        shape = f"{out.shape}@{out.exponent}" if out else "?"
        print(f"{node.op_type:10s} {node.name} -> {shape} {consts} {node.attributes}")
    for info in graph.outputs:
        print(f"output {info.name} {info.shape} exponent {info.exponent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
