"""The one way the build tools write ``models/manifest.yaml`` (build_models.py, build_liveness.py,
build_mbf.py, calibrate.py): each tool replaces only its own entries, and the same style everywhere
keeps every other entry byte-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

WIDTH = 110
CALIBRATION_KEYS = ("calibration", "calibration_flip_average")
"""Written by tools/calibrate.py into an embedder's entry: a rebuild of the model keeps them."""


def write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=WIDTH))


def update(path: Path, entries: dict[str, dict[str, Any]], schema: int = 1) -> Path:
    """Replace (or append) ``entries`` in the manifest at ``path``; every other entry, and the
    calibrations of the replaced ones (``CALIBRATION_KEYS``), stay as they are."""
    document = yaml.safe_load(path.read_text()) if path.exists() else {"schema": schema, "models": {}}
    models = document["models"]
    for key, entry in entries.items():
        kept = {k: models[key][k] for k in CALIBRATION_KEYS if k in (models.get(key) or {})}
        models[key] = {**entry, **kept}
    write(path, document)
    return path
