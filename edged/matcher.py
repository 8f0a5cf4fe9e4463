"""The in-memory matching index: the decrypted templates of one person group or face list.

Never persisted: the service builds one from the encrypted store on train (``add_many``) and keeps it
consistent with enrolments and deletions (``add`` / ``remove_face`` / ``remove_owner``), all under one
lock, so the worker thread can search while the API thread enrols.

How a search stays exact and fast (docs/matching.md has the measurements):

- **Frame.** When an empty index is filled with at least ``FIT_MIN`` templates at once, it fits a
  frame to them: their mean and principal axes. Templates are stored centred and rotated into that
  frame. A rotation preserves Euclidean distances, and real templates put ≈ 78 % of their variance in
  the first 32 axes (LFW, docs/matching.md). Smaller or incrementally built indexes use the identity
  frame: the same results, only less pruning.
- **Storage.** ``float32`` (exact), ``float16`` (distance error ≲ 1e-4) or ``int8`` (one scale per
  template and per-axis weights; distance error ≲ 3e-3, 4× smaller than float32: the choice for
  groups of 100k–1M). Each template is split into a *head* (the first ``head_dim`` axes) and a *tail*.
- **Two stages, no approximation.** Stage 1 computes, for every stored template, the distance over the
  head axes only, a lower bound of the full distance (a chunked float32 GEMV; int8 and float16 chunks
  are widened in cache). Stage 2 takes the few templates with the smallest bounds, computes their full
  distances, and derives the bound ``B`` of the k-th best owner (and ``max_distance``); every template
  whose lower bound is ≤ ``B`` (plus a rounding margin) then gets its full distance (when there are
  many, a second lower bound over the next ``MID_DIM`` axes narrows them first). Any template that
  could be in the answer has a lower bound ≤ ``B``, so the result is the brute-force result over the
  stored values. When the bound prunes little, a plain full scan is used instead.

IDs are kept compactly (UTF-8 bytes in one fixed-width array, binary search plus a small dict of
recent additions) because at a million faces Python string objects and dict entries would cost more
memory than the templates themselves.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edged.errors import BadArgument

Storage = Literal["float32", "float16", "int8"]
STORAGES: tuple[Storage, ...] = ("float32", "float16", "int8")

HEAD_DIM = 32
"""Axes in the stage-1 head (for 128-d templates; smaller dims use a quarter of their axes)."""
CHUNK = 4096
"""Rows per stage-1 block: a block of widened head values stays in the L2 cache."""
SMALL = 2048
"""At or below this many rows, every distance is computed directly."""
PROBE = 64
"""Templates with the smallest lower bounds whose full distances give the first bound."""
ENCODE_BLOCK = 8192
"""Templates encoded at a time (bounded temporaries)."""
FIT_MIN = 256
"""An empty index filled with at least this many templates at once fits its frame to them."""
FIT_SAMPLE = 65_536
"""Templates (a fixed-seed sample) the frame is fitted on."""
MERGE_MIN = 4096
"""ID tables re-sort when additions since the last sort plus dead entries exceed this or 1/8 of the
live entries."""
MID_DIM = 32
"""Axes after the head that narrow a large candidate set before full distances."""
MID_MIN = 1024
"""Candidate sets larger than this are narrowed with the mid axes."""
BATCH_DICT = 1024
"""Batches up to this size go into the ID tables' dict; larger ones trigger a re-sort."""
DIFF_CHUNK = 65_536
"""IDs looked up per hold of the lock when an index is compared with the store (``diff_faces``)."""

IntArray = npt.NDArray[np.intp]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Match:
    """One candidate: the owner (a person ID; for face lists the face ID itself), the persisted face
    that matched best, and its Euclidean distance to the query."""

    owner_id: str
    face_id: str
    distance: float


class _IdTable:
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


@dataclass(frozen=True, slots=True)
class _Frame:
    """Stored coordinates are ``((x - mean) @ basis)`` (an orthonormal basis: distances unchanged);
    int8 codes are those coordinates divided by ``weight`` and by a per-template scale."""

    mean: F32
    basis: F32
    weight: F32

    @staticmethod
    def identity(dim: int) -> _Frame:
        return _Frame(np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32), np.ones(dim, np.float32))

    @staticmethod
    def fit(x: F32, weighted: bool) -> _Frame:
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
        return _Frame(
            mean.astype(np.float32), vectors[:, order].astype(np.float32), weight.astype(np.float32)
        )

    def project(self, x: F32) -> F32:
        out: F32 = np.matmul(np.subtract(x, self.mean, dtype=np.float32), self.basis, dtype=np.float32)
        return out


class TemplateIndex:
    """Decrypted templates of one person group / face list, in memory only (never persisted).

    ``storage``: ``float32`` (exact; 512 B of template a face), ``float16`` (default; 256 B) or
    ``int8`` (128 B; for large groups). Each face also costs 16 B of per-row data plus its IDs.
    Searches are exhaustive over the stored values (module doc)."""

    def __init__(self, dim: int = 128, storage: Storage = "float16") -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise BadArgument(f"dim must be a positive integer, not {dim!r}")
        if storage not in STORAGES:
            raise BadArgument(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
        self.dim = dim
        self.storage: Storage = storage
        self.head_dim = min(dim, HEAD_DIM) if dim >= 2 * HEAD_DIM else max(1, dim // 4)
        self._dtype = np.dtype(np.int8 if storage == "int8" else storage)
        self._lock = threading.Lock()
        self._changes = 0  # bumped by every change (diff_faces compares in chunks, between changes)
        self._reset()

    # ---- state -------------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._changes += 1
        self._frame = _Frame.identity(self.dim)
        self._faces = _IdTable("face_id")
        self._owners = _IdTable("owner_id")
        self._head = np.zeros((0, self.head_dim), self._dtype)
        self._tail = np.zeros((0, self.dim - self.head_dim), self._dtype)
        self._hn: F32 = np.zeros(0, np.float32)  # squared norm of the stored head; +inf: no template
        self._fn: F32 = np.zeros(0, np.float32)  # squared norm of the stored template
        self._m2s: F32 | None = np.zeros(0, np.float32) if self.storage == "int8" else None  # -2·scale
        self._owner: npt.NDArray[np.int32] = np.zeros(0, np.int32)  # owner code per row; -1: none
        self._owner_count: npt.NDArray[np.int32] = np.zeros(0, np.int32)
        self._scratch: F32 = np.zeros(0, np.float32)  # stage-1 bounds of the current search

    def _row_arrays(self) -> list[np.ndarray[Any, Any]]:
        arrays: list[np.ndarray[Any, Any]] = [self._head, self._tail, self._hn, self._fn, self._owner]
        return arrays if self._m2s is None else [*arrays, self._m2s]

    def _set_row_arrays(self, arrays: list[np.ndarray[Any, Any]]) -> None:
        self._head, self._tail, self._hn, self._fn, self._owner = arrays[:5]
        if self._m2s is not None:
            self._m2s = arrays[5]

    def _fit_rows(self, perm: IntArray | None = None) -> None:
        """Resize the per-row arrays to the face table's capacity (keeping ``perm`` rows, in order)."""
        cap = self._faces.capacity
        keep = perm if perm is not None else np.arange(min(self._hn.size, cap), dtype=np.intp)
        fresh = []
        for old in self._row_arrays():
            new = np.zeros((cap, *old.shape[1:]), old.dtype)
            if old is self._hn:
                new[:] = np.inf
            elif old is self._owner:
                new[:] = -1
            new[: keep.size] = old[keep] if perm is not None else old[: keep.size]
            fresh.append(new)
        self._set_row_arrays(fresh)

    def _settle(self) -> None:
        """Re-sort the ID tables when they ask for it (renumbering rows and owner codes)."""
        if self._faces.needs_merge():
            self._fit_rows(self._faces.merge())
        if self._owners.needs_merge():
            old_high = self._owners.high
            perm = self._owners.merge()
            remap = np.full(old_high + 1, -1, np.int32)
            remap[perm] = np.arange(perm.size, dtype=np.int32)
            self._owner = remap[self._owner]  # -1 indexes the extra last element: stays -1
            counts = np.zeros(self._owners.capacity, np.int32)
            counts[: perm.size] = self._owner_count[perm]
            self._owner_count = counts

    # ---- validation --------------------------------------------------------------------------------

    def _matrix(self, templates: object, what: str) -> F32:
        array = np.asarray(templates)
        if array.dtype.kind not in "fiu":
            raise BadArgument(f"{what} must be numeric, not of dtype {array.dtype}")
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise BadArgument(f"{what} must have shape (n, {self.dim}), got {array.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(array, dtype=np.float32)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise BadArgument(
                f"{what} row {int(np.flatnonzero(bad)[0])} has NaN or infinite values "
                "(or values beyond float32)"
            )
        return out

    def _vector(self, query: object, what: str = "query") -> F32:
        array = np.asarray(query)
        if array.dtype.kind not in "fiu":
            raise BadArgument(f"{what} must be numeric, not of dtype {array.dtype}")
        if array.shape != (self.dim,):
            raise BadArgument(f"{what} must have shape ({self.dim},), got {array.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            out = array.astype(np.float32)
        if not np.isfinite(out).all():
            raise BadArgument(f"{what} has NaN or infinite values (or values beyond float32)")
        return out

    @staticmethod
    def _k(k: object) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise BadArgument(f"k must be an integer ≥ 1, not {k!r}")
        return int(k)

    @staticmethod
    def _max_d2(max_distance: object) -> float:
        if max_distance is None:
            return float("inf")
        if isinstance(max_distance, bool) or not isinstance(max_distance, (int, float, np.floating)):
            raise BadArgument(f"max_distance must be a number or None, not {max_distance!r}")
        value = float(max_distance)
        if not np.isfinite(value) or value < 0:
            raise BadArgument(f"max_distance must be finite and ≥ 0, not {max_distance!r}")
        return value * value

    # ---- encoding ----------------------------------------------------------------------------------

    def _encode(self, x: F32) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], F32, F32, F32 | None]:
        """Stored head and tail, head and full squared norms and (int8) -2·scale for templates ``x``."""
        h = self.head_dim
        n = x.shape[0]
        head = np.empty((n, h), self._dtype)
        tail = np.empty((n, self.dim - h), self._dtype)
        hn = np.empty(n, np.float32)
        fn = np.empty(n, np.float32)
        m2s = np.empty(n, np.float32) if self._m2s is not None else None
        for i in range(0, n, ENCODE_BLOCK):
            y = self._frame.project(x[i : i + ENCODE_BLOCK])
            if m2s is not None:
                z = y / self._frame.weight
                scale = np.abs(z).max(axis=1) / np.float32(127)
                scale[scale == 0] = 1
                codes = np.clip(np.rint(z / scale[:, None]), -127, 127).astype(np.int8)
                stored = codes * (scale[:, None] * self._frame.weight)
                m2s[i : i + ENCODE_BLOCK] = -2 * scale
            else:
                with np.errstate(over="ignore"):
                    codes = y.astype(self._dtype)
                if not np.isfinite(codes).all():
                    raise BadArgument(f"templates have values beyond the range of {self.storage} storage")
                stored = codes.astype(np.float32)
            head[i : i + ENCODE_BLOCK] = codes[:, :h]
            tail[i : i + ENCODE_BLOCK] = codes[:, h:]
            squares = stored * stored
            hn[i : i + ENCODE_BLOCK] = squares[:, :h].sum(axis=1)
            fn[i : i + ENCODE_BLOCK] = squares.sum(axis=1)
        return head, tail, hn, fn, m2s

    # ---- mutation ----------------------------------------------------------------------------------

    def add(self, face_id: str, owner_id: str, template: np.ndarray[Any, Any]) -> None:
        """Add (or replace) one face."""
        self.add_many([face_id], [owner_id], self._vector(template, "template").reshape(1, -1))

    def add_many(
        self, face_ids: Sequence[str], owner_ids: Sequence[str], templates: np.ndarray[Any, Any]
    ) -> None:
        """Add (or replace) faces: the same as ``add`` for each, in order (a face ID repeated in the
        batch keeps its last template). An empty index filled with ≥ FIT_MIN templates fits its frame."""
        x = self._matrix(templates, "templates")
        if not (len(face_ids) == len(owner_ids) == x.shape[0]):
            raise BadArgument(
                f"add_many got {len(face_ids)} face IDs, {len(owner_ids)} owner IDs and "
                f"{x.shape[0]} templates; they must be as many"
            )
        faces = self._faces.encode_all(face_ids)
        owners = self._owners.encode_all(owner_ids)
        if faces.size == 0:
            return
        _, last = np.unique(faces[::-1], return_index=True)
        if last.size < faces.size:
            keep = np.sort(faces.size - 1 - last)
            faces, owners, x = faces[keep], owners[keep], x[keep]
        with self._lock:
            if self._faces.live:
                existing = self._faces.find_many(faces)
                self._remove_rows(existing[existing >= 0])
            if self._faces.live == 0:
                self._reset()
                if x.shape[0] >= FIT_MIN:
                    self._frame = _Frame.fit(x, weighted=self.storage == "int8")
            head, tail, hn, fn, m2s = self._encode(x)
            unique_owners, inverse = np.unique(owners, return_inverse=True)
            owner_codes = self._owners.find_many(unique_owners)
            missing = owner_codes < 0
            if missing.any():
                owner_codes[missing] = self._owners.add_many(unique_owners[missing])
            if self._owner_count.size < self._owners.capacity:
                counts = np.zeros(self._owners.capacity, np.int32)
                counts[: self._owner_count.size] = self._owner_count
                self._owner_count = counts
            self._changes += 1
            per_row = owner_codes[inverse.reshape(-1)].astype(np.int32)
            self._owner_count += np.bincount(per_row, minlength=self._owner_count.size).astype(np.int32)
            rows = self._faces.add_many(faces)
            if self._hn.size < self._faces.capacity:
                self._fit_rows()
            start, stop = int(rows[0]), int(rows[-1]) + 1
            self._head[start:stop] = head
            self._tail[start:stop] = tail
            self._hn[start:stop] = hn
            self._fn[start:stop] = fn
            self._owner[start:stop] = per_row
            if self._m2s is not None and m2s is not None:
                self._m2s[start:stop] = m2s
            self._settle()

    def _remove_rows(self, rows: IntArray) -> None:
        if rows.size == 0:
            return
        self._changes += 1
        owners = self._owner[rows]
        self._hn[rows] = np.inf
        self._owner[rows] = -1
        if self._m2s is not None:
            self._m2s[rows] = 0
        self._faces.remove_many(rows)
        self._owner_count -= np.bincount(owners, minlength=self._owner_count.size).astype(np.int32)
        gone = np.unique(owners)
        gone = gone[self._owner_count[gone] == 0].astype(np.intp)
        self._owners.remove_many(gone)

    def remove_face(self, face_id: str) -> bool:
        """Remove one face; False when it is not in the index."""
        raw = self._faces.encode(face_id)
        with self._lock:
            row = self._faces.find(raw)
            if row < 0:
                return False
            self._remove_rows(np.array([row], np.intp))
            self._settle()
            return True

    def remove_faces(self, face_ids: Iterable[str]) -> int:
        """Remove faces (those absent are ignored); returns how many were removed."""
        raws = self._faces.encode_all(face_ids)
        with self._lock:
            if raws.size == 0 or self._faces.live == 0:
                return 0
            rows = self._faces.find_many(raws)
            rows = np.unique(rows[rows >= 0])
            self._remove_rows(rows)
            self._settle()
            return int(rows.size)

    def clear(self) -> None:
        """Remove everything (the group or list was deleted): a search from now on finds nothing,
        also one through a reference taken before."""
        with self._lock:
            self._reset()

    def diff_faces(self, face_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Compare the index with the faces it should hold: ``(missing, extra)``, the IDs of
        ``face_ids`` that are not in the index and the index's faces that are not in ``face_ids``
        (vectorised: ≈ a binary search per ID). The lock is held for ``DIFF_CHUNK`` IDs at a time
        (a search waits tens of ms at most, not ≈ 0.5 s for a million); a change in between
        starts the comparison again."""
        raws = self._faces.encode_all(face_ids)
        while True:
            with self._lock:
                changes, high = self._changes, self._faces.high
            seen = np.zeros(high, bool)
            missing: list[npt.NDArray[np.bytes_]] = []
            for start in range(0, raws.size, DIFF_CHUNK):
                chunk = raws[start : start + DIFF_CHUNK]
                with self._lock:
                    if self._changes != changes:
                        break
                    rows = self._faces.find_many(chunk)
                missing.append(chunk[rows < 0])
                seen[rows[rows >= 0]] = True
            with self._lock:
                if self._changes != changes:
                    continue
                extra = [self._faces.key(int(c)) for c in np.flatnonzero(self._faces.alive[:high] & ~seen)]
            return [bytes(r).decode("utf-8") for part in missing for r in part.tolist()], extra

    def remove_owner(self, owner_id: str) -> int:
        """Remove every face of one owner (a person); returns how many."""
        raw = self._owners.encode(owner_id)
        with self._lock:
            code = self._owners.find(raw)
            if code < 0:
                return 0
            rows = np.flatnonzero(self._owner[: self._faces.high] == code)
            self._remove_rows(rows)
            self._settle()
            return int(rows.size)

    # ---- inspection --------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return self._faces.live

    def owners(self) -> set[str]:
        with self._lock:
            return {self._owners.key(int(c)) for c in self._owners.live_codes()}

    @property
    def owner_count(self) -> int:
        """Owners (persons) with at least one face in the index; O(1)."""
        with self._lock:
            return self._owners.live

    def memory_bytes(self) -> int:
        """Bytes held: templates, per-row data and ID tables (allocated capacity included)."""
        with self._lock:
            arrays = (
                sum(a.nbytes for a in self._row_arrays()) + self._owner_count.nbytes + self._scratch.nbytes
            )
            frame = self._frame.mean.nbytes + self._frame.basis.nbytes + self._frame.weight.nbytes
            return int(arrays + frame + self._faces.memory_bytes() + self._owners.memory_bytes())

    # ---- search ------------------------------------------------------------------------------------

    def search(
        self,
        query: np.ndarray[Any, Any],
        k: int,
        max_distance: float | None = None,
        owners: Collection[str] | None = None,
    ) -> list[Match]:
        """The best face of each owner, owners by distance ascending: at most ``k`` owners, only
        distances ≤ ``max_distance`` when given, only ``owners`` when given."""
        return self._search(query, k, max_distance, owners, by_owner=True)

    def search_faces(
        self, query: np.ndarray[Any, Any], k: int, max_distance: float | None = None
    ) -> list[Match]:
        """The ``k`` nearest faces, each on its own (not grouped by owner)."""
        return self._search(query, k, max_distance, None, by_owner=False)

    def _search(
        self,
        query: np.ndarray[Any, Any],
        k: int,
        max_distance: float | None,
        owners: Collection[str] | None,
        by_owner: bool,
    ) -> list[Match]:
        x = self._vector(query)
        k = self._k(k)
        max_d2 = self._max_d2(max_distance)
        if isinstance(owners, (str, bytes)):
            raise BadArgument(f"owners must be a collection of owner IDs, not the single value {owners!r}")
        wanted = None if owners is None else np.unique(self._owners.encode_all(owners))
        with self._lock:
            if self._faces.live == 0:
                return []
            n = self._faces.high
            allowed = None
            if wanted is not None:
                codes = self._owners.find_many(wanted)
                codes = codes[codes >= 0]
                if codes.size == 0:
                    return []
                mask = np.zeros(self._owners.high + 1, bool)
                mask[codes] = True
                allowed = mask[self._owner[:n]]
            y = self._frame.project(x.reshape(1, -1))[0]
            rows, d2 = self._nearest(y, k, max_d2, allowed, by_owner)
            distances = np.sqrt(d2)
            if max_distance is not None:
                inside = distances <= max_distance
                rows, distances = rows[inside], distances[inside]
            return [
                Match(self._owners.key(int(self._owner[r])), self._faces.key(int(r)), d)
                for r, d in zip(rows.tolist(), distances.tolist(), strict=True)
            ]

    def _nearest(
        self, y: F32, k: int, max_d2: float, allowed: npt.NDArray[np.bool_] | None, by_owner: bool
    ) -> tuple[IntArray, F32]:
        """Rows and squared distances of the answer (sorted, at most k; not yet cut at max_d2)."""
        n = self._faces.high
        if allowed is not None:
            allowed = allowed & np.isfinite(self._hn[:n])
        count = self._faces.live if allowed is None else int(allowed.sum())
        q = _Query(y, self._frame.weight if self._m2s is not None else None)
        if n <= SMALL or count <= SMALL:
            cand = np.flatnonzero(np.isfinite(self._hn[:n]) if allowed is None else allowed)
            return self._best(cand, self._exact(cand, q), k, by_owner, q)
        bounds = self._lower_bounds(q)  # +inf on removed rows
        if allowed is not None:
            bounds[~allowed] = np.inf
        if np.isfinite(max_d2):
            # identify with a threshold: usually few rows can be within it
            cand = self._within(bounds, max_d2, q)
            if cand.size <= SMALL:
                return self._best(cand, self._exact(cand, q), k, by_owner, q)
        probe_size = min(count, max(PROBE, 4 * k))
        while True:
            cut = float(np.partition(bounds, probe_size - 1)[probe_size - 1])
            probe = np.flatnonzero(bounds <= cut)
            kth = self._kth(self._exact(probe, q), self._owner[probe] if by_owner else None, k)
            if np.isfinite(kth) or probe_size >= count:
                break
            probe_size = min(count, probe_size * 8)
        bound = min(kth, max_d2)
        # fewer than k owners in all: every remaining row is in the answer
        cand = self._within(bounds, bound, q) if np.isfinite(bound) else np.flatnonzero(np.isfinite(bounds))
        if cand.size > n // 4:
            return self._best(cand, self._full_scan(q)[cand], k, by_owner, q)
        return self._best(cand, self._exact(cand, q), k, by_owner, q)

    def _within(self, bounds: F32, bound: float, q: _Query) -> IntArray:
        """Rows whose lower bound is within ``bound`` (plus a margin far above float32 rounding);
        many rows are narrowed with a second bound over the next ``MID_DIM`` axes."""
        margin = 1e-4 * (bound + q.norm2) + 1e-6
        cand = np.flatnonzero(bounds <= bound + margin)
        mid = min(MID_DIM, self.dim - self.head_dim)
        if cand.size <= MID_MIN or mid == 0 or cand.size > bounds.size // 4:
            return cand
        h = self.head_dim
        qm = q.weighted[h : h + mid].copy()
        ym2 = np.float32(q.y[h : h + mid] @ q.y[h : h + mid])
        keep = np.empty(cand.size, bool)
        block = np.empty((min(CHUNK, cand.size), mid), np.float32)
        for i in range(0, cand.size, CHUNK):
            rows = cand[i : i + CHUNK]
            codes = block[: rows.size]
            codes[:] = self._tail[rows, :mid]
            dots = codes @ qm
            if self._m2s is not None:
                scale = self._m2s[rows] * np.float32(-0.5)
                codes *= self._frame.weight[h : h + mid]
                stored2 = np.einsum("ij,ij->i", codes, codes) * (scale * scale)
                dots *= scale
            else:
                stored2 = np.einsum("ij,ij->i", codes, codes)
            # the head part plus the mid part: a tighter lower bound of the full distance
            keep[i : i + CHUNK] = bounds[rows] + (stored2 - 2 * dots + ym2) <= bound + margin
        return cand[keep]

    def _lower_bounds(self, q: _Query) -> F32:
        """Squared distance over the head axes for every row: a lower bound of the full one."""
        n = self._faces.high
        h = self.head_dim
        qh = q.weighted[:h].copy()
        if self._scratch.size < n:
            self._scratch = np.empty(self._faces.capacity, np.float32)
        out = self._scratch[:n]  # reused (under the lock): no page faults per query
        block = np.empty((min(CHUNK, n), h), np.float32) if self.storage != "float32" else None
        for i in range(0, n, CHUNK):
            j = min(n, i + CHUNK)
            part = out[i:j]
            if block is None:
                np.matmul(self._head[i:j], qh, out=part)
            else:
                widened = block[: j - i]
                np.copyto(widened, self._head[i:j], casting="unsafe")
                np.matmul(widened, qh, out=part)
            if self._m2s is not None:
                part *= self._m2s[i:j]
            else:
                part *= np.float32(-2)
            part += self._hn[i:j]
        out += q.head_norm2(h)
        return out

    def _distances(
        self, head: np.ndarray[Any, Any], tail: np.ndarray[Any, Any], rows: IntArray | slice, q: _Query
    ) -> F32:
        """Full squared distances as ‖y‖² + ‖ŷ‖² − 2·y·ŷ (float32 accumulate) for stored rows."""
        block = np.empty((head.shape[0], self.dim), np.float32)
        block[:, : self.head_dim] = head
        block[:, self.head_dim :] = tail
        d2: F32 = block @ q.weighted
        if self._m2s is not None:
            d2 *= self._m2s[rows]
        else:
            d2 *= np.float32(-2)
        d2 += self._fn[rows]
        d2 += np.float32(q.norm2)
        return d2

    def _exact(self, rows: IntArray, q: _Query) -> F32:
        if rows.size <= CHUNK:
            return self._distances(self._head[rows], self._tail[rows], rows, q)
        out = np.empty(rows.size, np.float32)
        for i in range(0, rows.size, CHUNK):  # blocks that stay in cache
            part = rows[i : i + CHUNK]
            out[i : i + CHUNK] = self._distances(self._head[part], self._tail[part], part, q)
        return out

    def _full_scan(self, q: _Query) -> F32:
        n = self._faces.high
        out = np.empty(n, np.float32)
        for i in range(0, n, CHUNK):
            j = min(n, i + CHUNK)
            out[i:j] = self._distances(self._head[i:j], self._tail[i:j], slice(i, j), q)
        out[~np.isfinite(self._hn[:n])] = np.inf
        return out

    def _direct(self, rows: IntArray, q: _Query) -> F32:
        """Full squared distances from the difference (the most precise form) for a few rows."""
        y = np.empty((rows.size, self.dim), np.float32)
        y[:, : self.head_dim] = self._head[rows]
        y[:, self.head_dim :] = self._tail[rows]
        if self._m2s is not None:
            y *= (self._m2s[rows] * np.float32(-0.5))[:, None]
            y *= self._frame.weight
        y -= q.y
        d2: F32 = np.einsum("ij,ij->i", y, y)
        return d2

    def _kth(self, d2: F32, groups: npt.NDArray[np.int32] | None, k: int) -> float:
        """The k-th smallest distance (per group minimum when grouped); inf when fewer than k."""
        if groups is not None:
            order = np.argsort(d2, kind="stable")
            _, first = np.unique(groups[order], return_index=True)
            d2 = d2[order[first]]
        return float(np.partition(d2, k - 1)[k - 1]) if d2.size >= k else float("inf")

    def _best(self, rows: IntArray, d2: F32, k: int, by_owner: bool, q: _Query) -> tuple[IntArray, F32]:
        """The k best (owners' best) rows, their distances recomputed from the difference."""
        order = np.lexsort((rows, d2))
        if by_owner:
            _, first = np.unique(self._owner[rows[order]], return_index=True)
            order = order[np.sort(first)]
        best = rows[order[:k]]
        precise = self._direct(best, q)
        again = np.lexsort((best, precise))
        return best[again], precise[again]


class _Query:
    """A query in the index's frame: ``y``, its squared norm, and ``weighted`` (y·weight for int8
    codes, else y) that stored values are multiplied with."""

    __slots__ = ("norm2", "weighted", "y")

    def __init__(self, y: F32, weight: F32 | None) -> None:
        self.y = y
        self.weighted: F32 = y * weight if weight is not None else y
        self.norm2 = float(y @ y)

    def head_norm2(self, h: int) -> np.float32:
        return np.float32(self.y[:h] @ self.y[:h])
