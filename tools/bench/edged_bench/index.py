"""``edged bench index``: the matching index at 1k–1M synthetic templates: build time, memory, query
latency on one thread, and recall@1 against an exact float32 brute-force search."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from edged import environment
from edged.errors import BadArgument
from edged.matcher import STORAGES, Storage, TemplateIndex
from edged_bench.record import markdown_table, record
from edged_bench.settings import IndexOptions
from edged_bench.synthetic import (
    DLIB,
    EMBEDDERS,
    SyntheticSet,
    TemplateModel,
    synthetic_set,
    synthetic_threshold,
)

__all__ = ["SyntheticSet", "run_index", "synthetic_set"]

F32 = npt.NDArray[np.float32]

DEFAULT_THRESHOLD = 0.4739
"""The FAR 1e-4 threshold of the shipped calibration, used when the manifest cannot be read."""


def parse_sizes(text: str) -> list[int]:
    """``"1k,10k,100k,1M"`` or ``"1000,50000"`` → sizes."""
    sizes = []
    for part in text.split(","):
        item = part.strip().lower()
        factor = {"k": 1_000, "m": 1_000_000}.get(item[-1:], 1)
        try:
            value = int(float(item[:-1] if factor > 1 else item) * factor)
        except ValueError:
            raise BadArgument(f"--sizes: {part.strip()!r} is not a size such as 1000, 10k or 1M") from None
        if value < 1:
            raise BadArgument(f"--sizes: sizes must be ≥ 1, not {part.strip()!r}")
        sizes.append(value)
    return sizes


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc's malloc_trim), so that an RSS
    delta measures what is held, not what the allocator kept for reuse."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
        if trim is not None:
            trim(0)


@contextmanager
def one_thread() -> Iterator[str]:
    """Limit BLAS (and OpenMP) to one thread; yields a description for the report."""
    try:
        from threadpoolctl import (
            threadpool_info,
            threadpool_limits,
        )
    except ImportError:
        env = environment.blas_threads()
        yield f"threadpoolctl not installed: BLAS threads {env or 'unlimited (set OPENBLAS_NUM_THREADS=1)'}"
        return
    with threadpool_limits(limits=1):
        blas = [
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})" for i in threadpool_info()
        ]
        core = environment.openblas_coretype()
        yield (
            "1 thread (threadpoolctl); BLAS: "
            + ", ".join(blas)
            + (f"; OPENBLAS_CORETYPE={core}" if core else "")
        )


def face_ids(n: int, salt: int) -> list[str]:
    """UUID-formatted IDs (the store's format; 36 characters) without consuming randomness."""
    return [str(uuid.UUID(int=(salt << 96) | i)) for i in range(n)]


class Exact:
    """The reference: a float32 brute-force search over the original templates (one GEMV)."""

    def __init__(self, templates: F32) -> None:
        self.templates = templates
        self.norms = np.einsum("ij,ij->i", templates, templates)

    def nearest(self, query: F32) -> tuple[int, float]:
        d2 = self.norms - 2 * (self.templates @ query)
        row = int(np.argmin(d2))
        return row, float(np.linalg.norm(self.templates[row] - query))


Search = Callable[[F32, float | None], tuple[int, float] | None]
"""A backend's query: (template, max distance) → (row of the best face, distance) or None."""


def row_of(face_id: str) -> int:
    """The row a ``face_ids`` ID was made for."""
    return uuid.UUID(face_id).int & ((1 << 96) - 1)


def index_backend(
    storage: Storage, data: SyntheticSet, ids: list[str], owners: list[str]
) -> tuple[Search, Callable[[], int]]:
    index = TemplateIndex(data.templates.shape[1], storage)
    index.add_many(ids, owners, data.templates)

    def search(query: F32, max_distance: float | None) -> tuple[int, float] | None:
        found = index.search(query, 1, max_distance)
        return (row_of(found[0].face_id), found[0].distance) if found else None

    return search, index.memory_bytes


def faiss_backend(data: SyntheticSet) -> tuple[Search, Callable[[], int]] | None:
    """faiss IVF + 8-bit scalar quantizer, the ANN comparison (only when faiss is installed)."""
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    n, dim = data.templates.shape
    nlist = max(1, min(4096, n // 64))  # ≥ 39 training points per list, as faiss asks
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit)
    sample = np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)
    index.train(data.templates[np.sort(sample)])
    index.add(data.templates)
    index.nprobe = min(nlist, 32)

    def search(query: F32, max_distance: float | None) -> tuple[int, float] | None:
        d2, rows = index.search(query[None, :], 1)
        if rows[0, 0] < 0:
            return None
        distance = float(np.sqrt(max(0.0, float(d2[0, 0]))))
        return None if max_distance is not None and distance > max_distance else (int(rows[0, 0]), distance)

    return search, lambda: 0


@dataclass(slots=True)
class Result:
    backend: str
    build_s: float
    index_bytes: int
    rss_bytes: int
    latency_ms: list[float]
    threshold_latency_ms: list[float]
    recall_mated: float
    recall_all: float
    decisions_agree: float

    def as_json(self) -> dict[str, Any]:
        return {
            "build_s": round(self.build_s, 3),
            "index_mb": round(self.index_bytes / 1e6, 1) if self.index_bytes else None,
            "rss_delta_mb": round(self.rss_bytes / 1e6, 1),
            "rank1_ms": {"median": _median(self.latency_ms), "p95": _p95(self.latency_ms)},
            "threshold_ms": {
                "median": _median(self.threshold_latency_ms),
                "p95": _p95(self.threshold_latency_ms),
            },
            "recall_at_1_mated": round(self.recall_mated, 4),
            "recall_at_1_all": round(self.recall_all, 4),
            "threshold_decisions_agree": round(self.decisions_agree, 4),
        }


def _ms(values: list[float]) -> dict[str, float]:
    return {"median": _median(values), "p95": _p95(values)}


def _cell(values: list[float]) -> str:
    return f"{_median(values):.2f} / {_p95(values):.2f}"


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 3)


def _p95(values: list[float]) -> float:
    return round(float(np.percentile(values, 95)), 3)


def measure(
    name: str,
    make: Callable[[], tuple[Search, Callable[[], int]] | None],
    data: SyntheticSet,
    truth: list[tuple[int, float]],
    threshold: float,
) -> Result | None:
    release_free_memory()
    before = rss_bytes()
    start = time.perf_counter()
    made = make()
    if made is None:
        return None
    search, size = made
    build = time.perf_counter() - start
    release_free_memory()
    held = rss_bytes() - before
    probes = np.concatenate([data.mated, data.non_mated])
    for query in probes[:10]:  # warm-up
        search(query, None)
    latency, threshold_latency, found, decided = [], [], [], []
    clock = time.perf_counter
    for query in probes:
        t0 = clock()
        best = search(query, None)
        t1 = clock()
        inside = search(query, threshold)
        t2 = clock()
        latency.append((t1 - t0) * 1000)
        threshold_latency.append((t2 - t1) * 1000)
        found.append(best[0] if best else -1)
        decided.append(inside[0] if inside else -1)
    identity = data.identity
    same = [f >= 0 and identity[f] == identity[t[0]] for f, t in zip(found, truth, strict=True)]
    expected = [t[0] if t[1] <= threshold else -1 for t in truth]
    agree = [
        (d < 0 and e < 0) or (d >= 0 and e >= 0 and identity[d] == identity[e])
        for d, e in zip(decided, expected, strict=True)
    ]
    mated = data.mated.shape[0]
    return Result(
        name,
        build,
        size(),
        held,
        latency,
        threshold_latency,
        float(np.mean(same[:mated])) if mated else float("nan"),
        float(np.mean(same)),
        float(np.mean(agree)),
    )


def _describe(model: TemplateModel) -> str:
    if model is DLIB:
        return (
            f"128-d, a common mean of norm {model.mean_norm} plus identity offsets and per-face noise "
            "with decaying spectra fitted to LFW's statistics"
        )
    return (
        f"{model.dim}-d unit vectors, a common mean of norm {model.mean_norm} plus identity offsets "
        f"(decay {model.between[0]:g} axes, variance {model.between[1]:g}) and per-face noise (decay "
        f"{model.within[0]:g}, variance {model.within[1]:g}), normalised; the statistics of "
        "the int8 MBF embedder's templates of lfw-dev (synthetic.fit_model)"
    )


def calibrated_threshold(far: float = 1e-4) -> float:
    """The FAR 1e-4 threshold from the model manifest (no model is loaded)."""
    from edged.errors import EdgedError
    from edged.inference.manifest import Manifest

    try:
        calibration = Manifest.load().entry("face_embedder").calibration
    except EdgedError:
        return DEFAULT_THRESHOLD
    return calibration.threshold_for(far) if calibration else DEFAULT_THRESHOLD


def run_index(settings: IndexOptions) -> int:
    sizes = parse_sizes(settings.sizes)
    storages: list[Storage] = []
    for name in (s.strip() for s in settings.storages.split(",") if s.strip()):
        storage = next((s for s in STORAGES if s == name), None)
        if storage is None:
            raise BadArgument(f"--storages: {name!r} is not one of {', '.join(STORAGES)}")
        storages.append(storage)
    if settings.queries < 2:
        raise BadArgument(f"--queries must be ≥ 2, not {settings.queries}")
    if settings.faces_per_identity < 1:
        raise BadArgument(f"--faces-per-identity must be ≥ 1, not {settings.faces_per_identity}")
    model = EMBEDDERS.get(settings.recognition_model)
    if model is None:
        raise BadArgument(
            f"--recognition-model: {settings.recognition_model!r} is not one of {', '.join(EMBEDDERS)}"
        )
    threshold = calibrated_threshold() if model is DLIB else synthetic_threshold(model)
    out = sys.stderr if settings.json else sys.stdout
    rows: list[list[str]] = []
    results: dict[str, dict[str, Any]] = {}
    with one_thread() as threads:
        for n in sizes:
            print(f"{n:,} templates: generating …", file=sys.stderr)
            data = synthetic_set(n, settings.queries, settings.faces_per_identity, settings.seed, model)
            exact = Exact(data.templates)
            probes = np.concatenate([data.mated, data.non_mated])
            truth_ms = []
            truth = []
            for query in probes:
                t0 = time.perf_counter()
                truth.append(exact.nearest(query))
                truth_ms.append((time.perf_counter() - t0) * 1000)
            del exact
            ids = face_ids(n, 1)
            identity_ids = face_ids(int(data.identity.max()) + 1, 2)
            owners = [identity_ids[i] for i in data.identity.tolist()]
            backends: list[tuple[str, Callable[[], tuple[Search, Callable[[], int]] | None]]] = [
                (f"TemplateIndex {s}", partial(index_backend, s, data, ids, owners)) for s in storages
            ]
            if not settings.no_faiss:
                backends.append(("faiss IVF-SQ8 (ANN)", partial(faiss_backend, data)))
            results[str(n)] = {"brute_force_float32_ms": {"median": _median(truth_ms), "p95": _p95(truth_ms)}}
            rows.append(
                [
                    f"{n:,}",
                    "numpy brute force float32 (reference)",
                    "",
                    f"{n * model.dim * 4 / 1e6:.1f}",
                    "",
                    _cell(truth_ms),
                    "",
                    "1",
                    "1",
                    "1",
                    "1",
                ]
            )
            for name, make in backends:
                print(f"{n:,} templates: {name} …", file=sys.stderr)
                result = measure(name, make, data, truth, threshold)
                gc.collect()
                if result is None:
                    continue
                results[str(n)][name] = result.as_json()
                rows.append(
                    [
                        f"{n:,}",
                        name,
                        f"{result.build_s:.2f}",
                        f"{result.index_bytes / 1e6:.1f}" if result.index_bytes else "",
                        f"{result.rss_bytes / 1e6:.1f}",
                        _cell(result.latency_ms),
                        _cell(result.threshold_latency_ms),
                        f"{_median(truth_ms) / _median(result.latency_ms):.1f} / "
                        f"{_median(truth_ms) / _median(result.threshold_latency_ms):.1f}",
                        f"{result.recall_mated:.4f}",
                        f"{result.recall_all:.4f}",
                        f"{result.decisions_agree:.4f}",
                    ]
                )
            del data, ids, identity_ids, owners, backends
            release_free_memory()
    header = [
        "templates",
        "backend",
        "build s",
        "index MB",
        "RSS Δ MB",
        "rank-1 ms (median / p95)",
        f"d ≤ {threshold:.4f} ms (median / p95)",
        "× brute force",
        "recall@1 mated",
        "recall@1 all",
        "decisions agree",
    ]
    table = markdown_table(header, rows)
    print(table, file=out)
    print(f"threads: {threads}", file=sys.stderr)
    if settings.record:
        command = (
            f"edged bench index --sizes {settings.sizes} --queries {settings.queries} "
            f"--storages {settings.storages} --faces-per-identity {settings.faces_per_identity} "
            f"--seed {settings.seed}"
            + (" --no-faiss" if settings.no_faiss else "")
            + (f" --recognition-model {model.name}" if model is not DLIB else "")
        )
        source = (
            ""
            if model is DLIB
            else "; from the synthetic impostor pairs (synthetic templates, synthetic threshold)"
        )
        note = (
            f"Synthetic templates (`tools/bench/edged_bench/synthetic.py`: {_describe(model)}), "
            f"{settings.faces_per_identity} faces per identity, UUID face and person IDs. {settings.queries} "
            "queries: half fresh faces of enrolled identities (mated), half new identities. Latency is "
            f"one query at a time on {threads}. *rank-1*: best owner, no threshold (the worst case "
            f"for pruning); *d ≤ t*: best owner within the FAR 1e-4 threshold (the identify path{source}). "
            "*× brute force*: the brute force's median latency over the backend's (rank-1 / d ≤ t). "
            "*recall@1*: the top owner equals the exact float32 brute force's; *decisions agree*: "
            "same identify outcome (the same person, or nobody) at the threshold. *index MB*: "
            "`TemplateIndex.memory_bytes()` (templates, per-row data, ID tables); *RSS Δ*: the "
            "process's resident memory after the build minus before it, after `malloc_trim`. "
            "faiss is measured only when installed (an ANN comparison, not an edged backend)."
        )
        section = "index" if model is DLIB else f"index: {model.name} ({model.dim}-d)"
        record(settings.record, section, table + "\n\n" + note, command)
    if settings.json:
        print(
            json.dumps({"embedder": model.name, "threshold": threshold, "threads": threads, "sizes": results})
        )
    return 0
