"""Each benchmark's frozen settings: what ``edged bench BENCH …`` parsed (``edged_bench.cli``: the
defaults are there), or what a test or a script passes. Standard library only, so that
``edged bench --help`` loads no numpy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LIVENESS_SOURCES",
    "SHARED",
    "AccuracyOptions",
    "ApiOptions",
    "DaemonOptions",
    "IdentifyOptions",
    "IndexOptions",
    "LivenessOptions",
    "SpeedOptions",
]


@dataclass(frozen=True, slots=True)
class AccuracyOptions:
    pairs: Path
    root: Path
    embedder: str
    recognition_model: str
    compare: bool
    record: Path | None
    json: bool


@dataclass(frozen=True, slots=True)
class IdentifyOptions:
    root: Path
    identities: Path
    far: float
    recognition_model: str
    record: Path | None
    json: bool


@dataclass(frozen=True, slots=True)
class IndexOptions:
    sizes: str
    queries: int
    storages: str
    faces_per_identity: int
    seed: int
    no_faiss: bool
    record: Path | None
    json: bool
    recognition_model: str = "dlib"


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    faces: str
    duration: float
    source_fps: float
    latency_fps: float
    latency_decisions: int
    record: Path | None
    json: bool


@dataclass(frozen=True, slots=True)
class ApiOptions:
    seconds: float | None
    requests: int | None
    clients: int
    record: Path | None
    json: bool


@dataclass(frozen=True, slots=True)
class SpeedOptions:
    repeat: int
    image: Path | None
    compare: bool
    record: Path | None
    json: bool


SHARED = Path("../shared")
"""The shared data beside the checkout (faces, model sources), as the benchmarks' commands name it."""


@dataclass(frozen=True, slots=True)
class LivenessOptions:
    """``edged bench liveness``: ``limit`` presentations per kind at most (None: the full run),
    ``frames`` per sequence, the attacks' ``seed``, where the faces and the sample images are."""

    limit: int | None
    frames: int
    seed: int
    lfw: Path
    dev: Path
    samples: Path
    record: Path | None
    json: bool


LIVENESS_SOURCES = {
    "lfw": SHARED / "faces/lfw-dev",
    "dev": SHARED / "faces/dev",
    "samples": SHARED / "models-src/silent-face/sample",
}
"""``edged bench liveness``'s default ``--lfw``, ``--dev`` and ``--samples``."""
