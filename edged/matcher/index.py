"""``TemplateIndex``: the matching index's public face (adding, replacing, removing and searching
templates under one lock, and checking what callers pass); ``edged.matcher`` describes how it works."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edged.errors import BadArgument
from edged.matcher.ids import IdTable, IntArray
from edged.matcher.search import MID_DIM, WIDE, Scan
from edged.matcher.storage import F32, STORAGES, Frame, Rows, Storage

__all__ = ["DIFF_CHUNK", "FIT_MIN", "HEAD_DIM", "Match", "TemplateIndex"]

HEAD_DIM = 32
"""Axes in the stage-1 head (for 64–128-d templates; others use a quarter of their axes)."""
FIT_MIN = 256
"""An empty index filled with at least this many templates at once fits its frame to them."""
DIFF_CHUNK = 65_536
"""IDs looked up per hold of the lock when an index is compared with the store (``diff_faces``)."""


@dataclass(frozen=True, slots=True)
class Match:
    """One candidate: the owner (a person ID; for face lists the face ID itself), the persisted face
    that matched best, and its Euclidean distance to the query."""

    owner_id: str
    face_id: str
    distance: float


class TemplateIndex:
    """Decrypted templates of one person group / face list, in memory only (never persisted).

    ``storage``: ``float32`` (exact; 4 B an axis: 512 B of template a 128-d face), ``float16``
    (default; 2 B) or ``int8`` (1 B; for large groups: 1M 512-d faces in ≈ 580 MB with UUID IDs).
    Each face also costs 16 B of per-row data and 4 B of search buffer plus its IDs.
    Searches are exhaustive over the stored values (module doc)."""

    def __init__(self, dim: int = 128, storage: Storage = "float16") -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise BadArgument(f"dim must be a positive integer, not {dim!r}")
        if storage not in STORAGES:
            raise BadArgument(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
        self.dim = dim
        self.storage: Storage = storage
        self.head_dim = HEAD_DIM if 2 * HEAD_DIM <= dim <= WIDE else max(1, dim // 4)
        self.mid_dim = MID_DIM if dim <= WIDE else dim // 4
        self._lock = threading.Lock()
        self._changes = 0  # bumped by every change (diff_faces compares in chunks, between changes)
        self._reset()

    # ---- state -------------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._changes += 1
        self._rows = Rows(self.dim, self.head_dim, self.mid_dim, self.storage)  # a row per face code
        self._faces = IdTable("face_id")
        self._owners = IdTable("owner_id")
        self._owner_count: npt.NDArray[np.int32] = np.zeros(0, np.int32)  # faces per owner code

    def _settle(self) -> None:
        """Re-sort the ID tables when they ask for it (renumbering rows and owner codes)."""
        if self._faces.needs_merge():
            perm = self._faces.merge()
            self._rows.resize(self._faces.capacity, perm)
        if self._owners.needs_merge():
            old_high = self._owners.high
            perm = self._owners.merge()
            remap = np.full(old_high + 1, -1, np.int32)
            remap[perm] = np.arange(perm.size, dtype=np.int32)
            self._rows.owner = remap[self._rows.owner]  # -1 indexes the extra last element: stays -1
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
                    self._rows.frame = Frame.fit(x, weighted=self.storage == "int8")
            encoded = self._rows.encode(x)
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
            if self._rows.hn.size < self._faces.capacity:
                self._rows.resize(self._faces.capacity)
            self._rows.put(int(rows[0]), int(rows[-1]) + 1, encoded, per_row)
            self._settle()

    def _remove_rows(self, rows: IntArray) -> None:
        if rows.size == 0:
            return
        self._changes += 1
        owners = self._rows.owner[rows]
        self._rows.clear(rows)
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
            rows = np.flatnonzero(self._rows.owner[: self._faces.high] == code)
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
            ids = self._faces.memory_bytes() + self._owners.memory_bytes()
            return int(self._rows.nbytes + self._owner_count.nbytes + ids)

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
                allowed = mask[self._rows.owner[:n]]
            y = self._rows.frame.project(x.reshape(1, -1))[0]
            rows, d2 = Scan(self._rows, n).nearest(y, self._faces.live, k, max_d2, allowed, by_owner)
            distances = np.sqrt(d2)
            if max_distance is not None:
                inside = distances <= max_distance
                rows, distances = rows[inside], distances[inside]
            return [
                Match(self._owners.key(int(self._rows.owner[r])), self._faces.key(int(r)), d)
                for r, d in zip(rows.tolist(), distances.tolist(), strict=True)
            ]
