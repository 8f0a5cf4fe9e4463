"""How the matching index stores templates: the frame they are rotated into (mean and principal axes,
fitted on a first large batch) and their quantisation (``float32``, ``float16`` or ``int8`` codes with
one scale per template and per-axis weights), split into a head and a tail, row by row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edged.errors import BadArgument
from edged.matcher.ids import IntArray

__all__ = ["ENCODE_BLOCK", "F32", "FIT_SAMPLE", "STORAGES", "Encoded", "Frame", "Rows", "Storage"]

Storage = Literal["float32", "float16", "int8"]
STORAGES: tuple[Storage, ...] = ("float32", "float16", "int8")

ENCODE_BLOCK = 8192
"""Templates encoded at a time (bounded temporaries)."""
FIT_SAMPLE = 65_536
"""Templates (a fixed-seed sample) the frame is fitted on."""

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Frame:
    """Stored coordinates are ``((x - mean) @ basis)`` (an orthonormal basis: distances unchanged);
    int8 codes are those coordinates divided by ``weight`` and by a per-template scale."""

    mean: F32
    basis: F32
    weight: F32

    @staticmethod
    def identity(dim: int) -> Frame:
        return Frame(np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32), np.ones(dim, np.float32))

    @staticmethod
    def fit(x: F32, weighted: bool) -> Frame:
        if x.shape[0] > FIT_SAMPLE:
            x = x[np.sort(np.random.default_rng(0).choice(x.shape[0], FIT_SAMPLE, replace=False))]
        sample = x.astype(np.float64)
        mean = sample.mean(axis=0)
        centred = sample - mean
        values, vectors = np.linalg.eigh(centred.T @ centred / max(1, sample.shape[0] - 1))
        order = np.argsort(values)[::-1]
        spread = np.sqrt(np.maximum(values[order], 0.0))
        # Axes with almost no variance get a floor weight, so a template that does vary along them
        # cannot blow up its per-template int8 scale.
        weight = np.maximum(spread, max(float(spread[0]) / 16, 1e-6)) if weighted else np.ones_like(spread)
        return Frame(mean.astype(np.float32), vectors[:, order].astype(np.float32), weight.astype(np.float32))

    def project(self, x: F32) -> F32:
        out: F32 = np.matmul(np.subtract(x, self.mean, dtype=np.float32), self.basis, dtype=np.float32)
        return out

    @property
    def nbytes(self) -> int:
        return int(self.mean.nbytes + self.basis.nbytes + self.weight.nbytes)


@dataclass(frozen=True, slots=True)
class Encoded:
    """Templates as stored: head and tail codes, head and full squared norms, (int8) -2·scale."""

    head: np.ndarray[Any, Any]
    tail: np.ndarray[Any, Any]
    hn: F32
    fn: F32
    m2s: F32 | None


class Rows:
    """The stored templates, one row a face (a row is a face table code): ``head`` and ``tail`` codes
    in the storage type, ``hn`` the squared norm of the stored head (+inf: no template), ``fn`` that of
    the whole stored template, ``m2s`` (int8 only) -2·scale, ``owner`` the owner code (-1: none), and
    ``scratch``, the stage-1 bounds of the current search. Not locked: the index holds its lock."""

    def __init__(self, dim: int, head_dim: int, mid_dim: int, storage: Storage) -> None:
        self.dim = dim
        self.head_dim = head_dim
        self.mid_dim = mid_dim
        self.storage: Storage = storage
        self.dtype = np.dtype(np.int8 if storage == "int8" else storage)
        self.frame = Frame.identity(dim)
        self.head = np.zeros((0, head_dim), self.dtype)
        self.tail = np.zeros((0, dim - head_dim), self.dtype)
        self.hn: F32 = np.zeros(0, np.float32)
        self.fn: F32 = np.zeros(0, np.float32)
        self.m2s: F32 | None = np.zeros(0, np.float32) if storage == "int8" else None
        self.owner: npt.NDArray[np.int32] = np.zeros(0, np.int32)
        self.scratch: F32 = np.zeros(0, np.float32)

    def arrays(self) -> list[np.ndarray[Any, Any]]:
        arrays: list[np.ndarray[Any, Any]] = [self.head, self.tail, self.hn, self.fn, self.owner]
        return arrays if self.m2s is None else [*arrays, self.m2s]

    def _set_arrays(self, arrays: list[np.ndarray[Any, Any]]) -> None:
        self.head, self.tail, self.hn, self.fn, self.owner = arrays[:5]
        if self.m2s is not None:
            self.m2s = arrays[5]

    def resize(self, cap: int, perm: IntArray | None = None) -> None:
        """Resize the per-row arrays to ``cap`` rows (keeping ``perm`` rows, in order)."""
        keep = perm if perm is not None else np.arange(min(self.hn.size, cap), dtype=np.intp)
        fresh = []
        for old in self.arrays():
            new = np.zeros((cap, *old.shape[1:]), old.dtype)
            if old is self.hn:
                new[:] = np.inf
            elif old is self.owner:
                new[:] = -1
            new[: keep.size] = old[keep] if perm is not None else old[: keep.size]
            fresh.append(new)
        self._set_arrays(fresh)

    def encode(self, x: F32) -> Encoded:
        """Stored head and tail, head and full squared norms and (int8) -2·scale for templates ``x``."""
        h = self.head_dim
        n = x.shape[0]
        head = np.empty((n, h), self.dtype)
        tail = np.empty((n, self.dim - h), self.dtype)
        hn = np.empty(n, np.float32)
        fn = np.empty(n, np.float32)
        m2s = np.empty(n, np.float32) if self.m2s is not None else None
        for i in range(0, n, ENCODE_BLOCK):
            y = self.frame.project(x[i : i + ENCODE_BLOCK])
            if m2s is not None:
                z = y / self.frame.weight
                scale = np.abs(z).max(axis=1) / np.float32(127)
                scale[scale == 0] = 1
                codes = np.clip(np.rint(z / scale[:, None]), -127, 127).astype(np.int8)
                stored = codes * (scale[:, None] * self.frame.weight)
                m2s[i : i + ENCODE_BLOCK] = -2 * scale
            else:
                with np.errstate(over="ignore"):
                    codes = y.astype(self.dtype)
                if not np.isfinite(codes).all():
                    raise BadArgument(f"templates have values beyond the range of {self.storage} storage")
                stored = codes.astype(np.float32)
            head[i : i + ENCODE_BLOCK] = codes[:, :h]
            tail[i : i + ENCODE_BLOCK] = codes[:, h:]
            squares = stored * stored
            hn[i : i + ENCODE_BLOCK] = squares[:, :h].sum(axis=1)
            fn[i : i + ENCODE_BLOCK] = squares.sum(axis=1)
        return Encoded(head, tail, hn, fn, m2s)

    def put(self, start: int, stop: int, encoded: Encoded, owners: npt.NDArray[np.int32]) -> None:
        """Store encoded templates in rows ``[start, stop)``."""
        self.head[start:stop] = encoded.head
        self.tail[start:stop] = encoded.tail
        self.hn[start:stop] = encoded.hn
        self.fn[start:stop] = encoded.fn
        self.owner[start:stop] = owners
        if self.m2s is not None and encoded.m2s is not None:
            self.m2s[start:stop] = encoded.m2s

    def clear(self, rows: IntArray) -> None:
        """Mark ``rows`` empty (no template, no owner)."""
        self.hn[rows] = np.inf
        self.owner[rows] = -1
        if self.m2s is not None:
            self.m2s[rows] = 0

    @property
    def nbytes(self) -> int:
        """Templates, per-row data, the scratch buffer and the frame."""
        return int(sum(a.nbytes for a in self.arrays()) + self.scratch.nbytes + self.frame.nbytes)
