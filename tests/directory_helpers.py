"""Plain helpers shared by the directory tests (store, retention, audit, key rotation): the model
name and a person's name, synthetic templates, their int8 form, and a scan of the database files for
bytes that must not be there. Imported as ``from directory_helpers import ...`` (pytest puts
``tests/`` on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edged.directory.sealed import TEMPLATE_DIM
from edged.directory.store import DB_NAME

MODEL = "dlib_resnet_v1_int8.tflite"
"""The default terminal's model ID (templates made here are random: the store does not look at them)."""
NAME = "Zebulon Quixotic-Marchbanks"


def template(rng: np.random.Generator) -> np.ndarray:
    """A synthetic unit-length 128-d float32 template."""
    vector = rng.standard_normal(TEMPLATE_DIM).astype(np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def int8_bytes(vector: np.ndarray) -> bytes:
    return np.clip(np.round(vector * 127), -128, 127).astype(np.int8).tobytes()


def windows(blob: bytes, size: int = 16) -> list[bytes]:
    """16-byte windows covering the whole blob (the last one flush with its end)."""
    if len(blob) <= size:
        return [blob]
    return [blob[i : i + size] for i in range(0, len(blob) - size + 1, size)] + [blob[-size:]]


def disk_files(state_dir: Path) -> dict[str, bytes]:
    """The database, its WAL, its shared-memory index and any rollback journal."""
    return {p.name: p.read_bytes() for p in sorted(state_dir.iterdir()) if p.name.startswith(DB_NAME)}


def found_on_disk(state_dir: Path, needles: dict[str, bytes]) -> list[str]:
    """Which needles (or any 16-byte window of one) occur in which file."""
    hits = []
    for file_name, data in disk_files(state_dir).items():
        for what, needle in needles.items():
            if any(w in data for w in windows(needle)):
                hits.append(f"{what} in {file_name}")
    return hits
