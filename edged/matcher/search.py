"""The exact search of the matching index: a lower bound over the head axes for every row (a chunked
float32 GEMV), full distances for the few rows with the smallest bounds, and then for every row whose
bound could still beat the k-th best owner (narrowed by a second bound over the next ``MID_DIM`` axes
when many; for templates wider than ``WIDE``, by successive parts of a quarter of their axes). The
answer is the brute-force answer over the stored values (``edged.matcher``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edged.matcher.ids import IntArray
from edged.matcher.storage import F32, Rows

__all__ = ["CHUNK", "MID_DIM", "MID_MIN", "PROBE", "SMALL", "WIDE", "Query", "Scan"]

CHUNK = 4096
"""Rows per stage-1 block: a block of widened head values stays in the L2 cache."""
SMALL = 2048
"""At or below this many rows, every distance is computed directly."""
PROBE = 64
"""Templates with the smallest lower bounds whose full distances give the first bound."""
MID_DIM = 32
"""Axes after the head that narrow a large candidate set before full distances (templates of more
than 128 axes use a quarter of their axes: ``Rows.mid_dim``)."""
MID_MIN = 1024
"""Candidate sets larger than this are narrowed with the mid axes."""
WIDE = 128
"""Templates of more axes (512-d unit vectors spread their variance over many more axes than 128-d
ones) use a quarter of them for the head and another quarter for the mid bound (docs/matching.md),
and with a threshold start from the first bound, not from the threshold: at a million such templates
a stranger has many rows within a FAR 1e-4 threshold."""


class Query:
    """A query in the index's frame: ``y``, its squared norm, and ``weighted`` (y·weight for int8
    codes, else y) that stored values are multiplied with."""

    __slots__ = ("norm2", "weighted", "y")

    def __init__(self, y: F32, weight: F32 | None) -> None:
        self.y = y
        self.weighted: F32 = y * weight if weight is not None else y
        self.norm2 = float(y @ y)

    def head_norm2(self, h: int) -> np.float32:
        return np.float32(self.y[:h] @ self.y[:h])


class Scan:
    """Searches over ``rows`` (codes ``[0, n)``), under the index's lock."""

    def __init__(self, rows: Rows, n: int) -> None:
        self.rows = rows
        self.n = n

    def nearest(
        self, y: F32, live: int, k: int, max_d2: float, allowed: npt.NDArray[np.bool_] | None, by_owner: bool
    ) -> tuple[IntArray, F32]:
        """Rows and squared distances of the answer to ``y`` (in the frame) among the ``live`` rows
        (sorted, at most k; not yet cut at max_d2)."""
        n = self.n
        if allowed is not None:
            allowed = allowed & np.isfinite(self.rows.hn[:n])
        count = live if allowed is None else int(allowed.sum())
        q = Query(y, self.rows.frame.weight if self.rows.m2s is not None else None)
        if n <= SMALL or count <= SMALL:
            cand = np.flatnonzero(np.isfinite(self.rows.hn[:n]) if allowed is None else allowed)
            return self._best(cand, self._exact(cand, q), k, by_owner, q)
        bounds = self._lower_bounds(q)  # +inf on removed rows
        if allowed is not None:
            bounds[~allowed] = np.inf
        if np.isfinite(max_d2) and self.rows.dim <= WIDE:
            # identify with a threshold: usually few rows can be within it
            cand = self._within(bounds, max_d2, q)
            if cand.size <= SMALL:
                return self._best(cand, self._exact(cand, q), k, by_owner, q)
        probe_size = min(count, max(PROBE, 4 * k))
        while True:
            cut = float(np.partition(bounds, probe_size - 1)[probe_size - 1])
            probe = np.flatnonzero(bounds <= cut)
            kth = self._kth(self._exact(probe, q), self.rows.owner[probe] if by_owner else None, k)
            if np.isfinite(kth) or probe_size >= count:
                break
            probe_size = min(count, probe_size * 8)
        bound = min(kth, max_d2)
        # fewer than k owners in all: every remaining row is in the answer
        cand = self._within(bounds, bound, q) if np.isfinite(bound) else np.flatnonzero(np.isfinite(bounds))
        if cand.size > n // 4:
            return self._best(cand, self._full_scan(q)[cand], k, by_owner, q)
        return self._best(cand, self._exact(cand, q), k, by_owner, q)

    def _within(self, bounds: F32, bound: float, q: Query) -> IntArray:
        """Rows whose lower bound is within ``bound`` (plus a margin far above float32 rounding);
        many rows are narrowed with a second bound over the next ``MID_DIM`` axes (wide templates:
        over successive parts of ``mid_dim`` axes while many remain)."""
        margin = 1e-4 * (bound + q.norm2) + 1e-6
        cand = np.flatnonzero(bounds <= bound + margin)
        dim, start = self.rows.dim, self.rows.head_dim
        mid = min(self.rows.mid_dim, dim - start)
        if cand.size <= MID_MIN or mid == 0 or (cand.size > bounds.size // 4 and dim <= WIDE):
            return cand
        partial = bounds[cand]
        while True:
            # the head part plus the parts read so far: a tighter lower bound of the full distance
            partial += self._part(cand, start, mid, q)
            keep = partial <= bound + margin
            cand, partial = cand[keep], partial[keep]
            start += mid
            mid = min(mid, dim - start)
            if dim <= WIDE or cand.size <= MID_MIN or mid == 0:
                return cand

    def _part(self, rows: IntArray, start: int, width: int, q: Query) -> F32:
        """Squared distances over the axes ``[start, start + width)`` (in the tail) of ``rows``."""
        h = self.rows.head_dim
        qm = q.weighted[start : start + width].copy()
        ym2 = np.float32(q.y[start : start + width] @ q.y[start : start + width])
        out = np.empty(rows.size, np.float32)
        block = np.empty((min(CHUNK, rows.size), width), np.float32)
        for i in range(0, rows.size, CHUNK):
            part = rows[i : i + CHUNK]
            codes = block[: part.size]
            codes[:] = self.rows.tail[part, start - h : start - h + width]
            dots = codes @ qm
            if self.rows.m2s is not None:
                scale = self.rows.m2s[part] * np.float32(-0.5)
                codes *= self.rows.frame.weight[start : start + width]
                stored2 = np.einsum("ij,ij->i", codes, codes) * (scale * scale)
                dots *= scale
            else:
                stored2 = np.einsum("ij,ij->i", codes, codes)
            out[i : i + CHUNK] = stored2 - 2 * dots + ym2
        return out

    def _lower_bounds(self, q: Query) -> F32:
        """Squared distance over the head axes for every row: a lower bound of the full one."""
        n = self.n
        h = self.rows.head_dim
        qh = q.weighted[:h].copy()
        if self.rows.scratch.size < n:
            self.rows.scratch = np.empty(self.rows.hn.size, np.float32)
        out = self.rows.scratch[:n]  # reused (under the lock): no page faults per query
        block = np.empty((min(CHUNK, n), h), np.float32) if self.rows.storage != "float32" else None
        for i in range(0, n, CHUNK):
            j = min(n, i + CHUNK)
            part = out[i:j]
            if block is None:
                np.matmul(self.rows.head[i:j], qh, out=part)
            else:
                widened = block[: j - i]
                np.copyto(widened, self.rows.head[i:j], casting="unsafe")
                np.matmul(widened, qh, out=part)
            if self.rows.m2s is not None:
                part *= self.rows.m2s[i:j]
            else:
                part *= np.float32(-2)
            part += self.rows.hn[i:j]
        out += q.head_norm2(h)
        return out

    def _distances(
        self, head: np.ndarray[Any, Any], tail: np.ndarray[Any, Any], rows: IntArray | slice, q: Query
    ) -> F32:
        """Full squared distances as ‖y‖² + ‖ŷ‖² − 2·y·ŷ (float32 accumulate) for stored rows."""
        block = np.empty((head.shape[0], self.rows.dim), np.float32)
        block[:, : self.rows.head_dim] = head
        block[:, self.rows.head_dim :] = tail
        d2: F32 = block @ q.weighted
        if self.rows.m2s is not None:
            d2 *= self.rows.m2s[rows]
        else:
            d2 *= np.float32(-2)
        d2 += self.rows.fn[rows]
        d2 += np.float32(q.norm2)
        return d2

    def _exact(self, rows: IntArray, q: Query) -> F32:
        if rows.size <= CHUNK:
            return self._distances(self.rows.head[rows], self.rows.tail[rows], rows, q)
        out = np.empty(rows.size, np.float32)
        for i in range(0, rows.size, CHUNK):  # blocks that stay in cache
            part = rows[i : i + CHUNK]
            out[i : i + CHUNK] = self._distances(self.rows.head[part], self.rows.tail[part], part, q)
        return out

    def _full_scan(self, q: Query) -> F32:
        n = self.n
        out = np.empty(n, np.float32)
        for i in range(0, n, CHUNK):
            j = min(n, i + CHUNK)
            out[i:j] = self._distances(self.rows.head[i:j], self.rows.tail[i:j], slice(i, j), q)
        out[~np.isfinite(self.rows.hn[:n])] = np.inf
        return out

    def _direct(self, rows: IntArray, q: Query) -> F32:
        """Full squared distances from the difference (the most precise form) for a few rows."""
        y = np.empty((rows.size, self.rows.dim), np.float32)
        y[:, : self.rows.head_dim] = self.rows.head[rows]
        y[:, self.rows.head_dim :] = self.rows.tail[rows]
        if self.rows.m2s is not None:
            y *= (self.rows.m2s[rows] * np.float32(-0.5))[:, None]
            y *= self.rows.frame.weight
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

    def _best(self, rows: IntArray, d2: F32, k: int, by_owner: bool, q: Query) -> tuple[IntArray, F32]:
        """The k best (owners' best) rows, their distances recomputed from the difference."""
        order = np.lexsort((rows, d2))
        if by_owner:
            _, first = np.unique(self.rows.owner[rows[order]], return_index=True)
            order = order[np.sort(first)]
        best = rows[order[:k]]
        precise = self._direct(best, q)
        again = np.lexsort((best, precise))
        return best[again], precise[again]
