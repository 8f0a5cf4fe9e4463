"""The one way the build tools write ``models/manifest.yaml`` (build_models.py, build_liveness.py,
calibrate.py): each tool replaces only its own entries, and the same style everywhere keeps every
other entry byte-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

WIDTH = 110


def write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=WIDTH))
