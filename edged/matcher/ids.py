"""Strings ↔ dense integer codes for the matching index (face IDs, owner IDs), compactly: at a million
faces Python string objects and dict entries would cost more memory than the templates themselves."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from edged.errors import BadArgument

__all__ = ["BATCH_DICT", "MERGE_MIN", "IdTable", "IntArray"]

MERGE_MIN = 4096
"""ID tables re-sort when additions since the last sort plus dead entries exceed this or 1/8 of the
live entries."""
BATCH_DICT = 1024
"""Batches up to this size go into the ID tables' dict; larger ones trigger a re-sort."""

IntArray = npt.NDArray[np.intp]


class IdTable:
    """Strings ↔ dense integer codes, compactly: UTF-8 keys in one fixed-width bytes array.

    Codes ``[0, base)`` hold the keys sorted at the last merge (found by binary search); codes
    ``[base, high)`` were added since and are found through a dict (or, right after a bulk add, not at
    all until the owner merges: ``needs_merge``). Removing marks a code dead. ``merge`` drops the dead,
    sorts and renumbers, and returns the permutation for the owner's per-code arrays. Keys are
    non-empty and contain no NUL (a fixed-width bytes array cannot keep trailing NULs)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.keys: npt.NDArray[np.bytes_] = np.zeros(0, "S1")
        self.alive: npt.NDArray[np.bool_] = np.zeros(0, bool)
        self.high = 0
        self.base = 0
        self.live = 0
        self.recent: dict[bytes, int] = {}
        self.unindexed = False

    @property
    def capacity(self) -> int:
        return int(self.alive.size)

    def encode(self, key: object) -> bytes:
        if not isinstance(key, str) or not key or "\0" in key:
            raise BadArgument(f"{self.what} must be a non-empty string without NUL characters, not {key!r}")
        try:
            return key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadArgument(f"{self.what} {key!r} is not valid Unicode: {exc.reason}") from None

    def encode_all(self, keys: Iterable[object]) -> npt.NDArray[np.bytes_]:
        raw = [self.encode(k) for k in keys]
        width = max((len(r) for r in raw), default=1)
        return np.array(raw, dtype=f"S{width}")

    def _reserve(self, n: int, width: int) -> None:
        if width > self.keys.dtype.itemsize:
            self.keys = self.keys.astype(f"S{width}")
        if n > self.capacity:
            cap = max(n, 1024, self.capacity * 5 // 4)
            keys = np.zeros(cap, self.keys.dtype)
            keys[: self.high] = self.keys[: self.high]
            alive = np.zeros(cap, bool)
            alive[: self.high] = self.alive[: self.high]
            self.keys, self.alive = keys, alive

    def find(self, raw: bytes) -> int:
        code = self.recent.get(raw)
        if code is not None:
            return code
        if self.base == 0 or len(raw) > self.keys.dtype.itemsize:
            return -1
        base = self.keys[: self.base]
        pos = int(np.searchsorted(base, raw))
        if pos < self.base and base[pos] == raw and self.alive[pos]:
            return pos
        return -1

    def find_many(self, raws: npt.NDArray[np.bytes_]) -> IntArray:
        out = np.full(raws.size, -1, np.intp)
        if self.base:
            base = self.keys[: self.base]
            pos = np.minimum(np.searchsorted(base, raws), self.base - 1)
            hit = (base[pos] == raws) & self.alive[pos]
            out[hit] = pos[hit]
        if self.recent:
            for i, raw in enumerate(raws.tolist()):
                code = self.recent.get(raw)
                if code is not None:
                    out[i] = code
        return out

    def add_many(self, raws: npt.NDArray[np.bytes_]) -> IntArray:
        """Append keys that are absent and distinct; returns their codes (a contiguous range)."""
        n = raws.size
        self._reserve(self.high + n, raws.dtype.itemsize)
        codes = np.arange(self.high, self.high + n, dtype=np.intp)
        self.keys[self.high : self.high + n] = raws
        self.alive[self.high : self.high + n] = True
        if n <= BATCH_DICT and not self.unindexed:
            for code, raw in zip(codes.tolist(), raws.tolist(), strict=True):
                self.recent[raw] = code
        else:
            self.unindexed = True
        self.high += n
        self.live += n
        return codes

    def remove_many(self, codes: IntArray) -> None:
        self.alive[codes] = False
        self.live -= int(codes.size)
        if self.recent:
            for code in codes[codes >= self.base].tolist():
                self.recent.pop(bytes(self.keys[code]), None)

    def key(self, code: int) -> str:
        return bytes(self.keys[code]).decode("utf-8")

    def live_codes(self) -> IntArray:
        return np.flatnonzero(self.alive[: self.high])

    def needs_merge(self) -> bool:
        garbage = self.high - self.live
        return self.unindexed or (self.high - self.base) + garbage > max(MERGE_MIN, self.live // 8)

    def merge(self) -> IntArray:
        """Drop dead codes, sort by key, renumber; returns ``perm`` (new code i was old code perm[i])."""
        live = self.live_codes()
        perm = live[np.argsort(self.keys[live], kind="stable")]
        n = int(perm.size)
        keys = np.zeros(max(n, 1024), self.keys.dtype)
        keys[:n] = self.keys[perm]
        if n > 1 and bool(np.any(keys[1:n] == keys[: n - 1])):
            raise AssertionError(f"duplicate {self.what} in the index")  # an internal invariant
        alive = np.zeros(keys.size, bool)
        alive[:n] = True
        self.keys, self.alive = keys, alive
        self.high = self.base = self.live = n
        self.recent = {}
        self.unindexed = False
        return perm

    def memory_bytes(self) -> int:
        extra = sys.getsizeof(self.recent) + sum(sys.getsizeof(k) + 32 for k in self.recent)
        return int(self.keys.nbytes + self.alive.nbytes) + (extra if self.recent else 0)
