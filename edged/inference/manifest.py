"""The model manifest (``models/manifest.yaml``): file integrity, tensor specs and the embedder's
calibration table. Loading a model whose sha256 differs from the manifest is refused."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edged.errors import BadArgument, ModelError, ModelIntegrityError
from edged.inference.catalog import MANIFEST_NAME, default_model_dir
from edged.yamlfile import DuplicateKey, Unreadable, load_yaml, read_text

logger = logging.getLogger(__name__)

__all__ = ["MANIFEST_NAME", "Calibration", "FarThreshold", "Manifest", "ModelEntry", "default_model_dir"]


@dataclass(frozen=True, slots=True)
class FarThreshold:
    """The distance threshold that gives ``far`` on the calibration impostor pairs."""

    far: float
    threshold: float
    impostor_pairs: int


@dataclass(frozen=True, slots=True)
class Calibration:
    """Distance thresholds per target false-accept rate and a monotone distance→confidence map
    (piecewise linear through ``points``; confidence 0.5 at ``default_threshold``)."""

    default_far: float
    default_threshold: float
    thresholds: tuple[FarThreshold, ...]
    points: tuple[tuple[float, float], ...]

    def threshold_for(self, far: float) -> float:
        """The calibrated threshold for the largest calibrated FAR not above ``far``."""
        usable = [t for t in self.thresholds if t.far <= far * (1 + 1e-9)]
        if not usable:
            smallest = min(t.far for t in self.thresholds)
            raise BadArgument(f"far={far:g} is below the smallest calibrated FAR, {smallest:g}")
        return max(usable, key=lambda t: t.far).threshold

    def confidence(self, distance: float) -> float:
        """Map a distance to [0, 1], decreasing; 0.5 at ``default_threshold``."""
        xs = [d for d, _ in self.points]
        ys = [c for _, c in self.points]
        return float(np.interp(distance, xs, ys))

    @staticmethod
    def from_mapping(data: Mapping[str, Any]) -> Calibration:
        try:
            thresholds = tuple(
                FarThreshold(float(t["far"]), float(t["threshold"]), int(t["impostor_pairs"]))
                for t in data["far_thresholds"]
            )
            points = tuple((float(d), float(c)) for d, c in data["confidence_points"])
            return Calibration(
                default_far=float(data["default_far"]),
                default_threshold=float(data["default_threshold"]),
                thresholds=thresholds,
                points=points,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed calibration in {MANIFEST_NAME}: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class ModelEntry:
    key: str
    path: Path
    sha256: str
    size: int
    calibration: Calibration | None
    """For templates of one embedding per chip."""
    calibration_flip_average: Calibration | None = None
    """For templates that average the chip's and its mirror's embeddings."""

    def calibration_for(self, flip_average: bool) -> Calibration | None:
        return self.calibration_flip_average if flip_average else self.calibration

    def verify(self) -> None:
        """Raise ``ModelIntegrityError`` unless the file's bytes hash to the manifest's sha256."""
        if not self.path.is_file():
            raise ModelError(f"model file {self.path} (manifest key {self.key!r}) does not exist")
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise ModelIntegrityError(
                f"{self.path} has sha256 {digest[:16]}…, the manifest says {self.sha256[:16]}…: "
                "the file was changed or corrupted; rebuild it with tools/build_models.py"
            )


class Manifest:
    """The parsed manifest of one model directory."""

    def __init__(self, model_dir: Path, entries: Mapping[str, ModelEntry]) -> None:
        self.model_dir = model_dir
        self._entries = dict(entries)

    @classmethod
    def load(cls, model_dir: Path | None = None) -> Manifest:
        model_dir = model_dir or default_model_dir()
        path = model_dir / MANIFEST_NAME
        try:
            data, _ = load_yaml(read_text(path))
        except FileNotFoundError as exc:
            raise ModelError(f"no model manifest at {path} (set EDGED_MODEL_DIR)") from exc
        except OSError as exc:
            raise ModelError(f"cannot read the model manifest {path}: {exc.strerror or exc}") from exc
        except Unreadable as exc:
            raise ModelError(f"model manifest {path} {exc}") from exc
        except yaml.YAMLError as exc:
            raise ModelError(f"{path} is not valid YAML: {exc}") from exc
        except DuplicateKey as exc:
            raise ModelError(f"{path}:{exc.line}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ModelError(f"{path} has no 'models' mapping")
        entries: dict[str, ModelEntry] = {}
        for key, item in data["models"].items():
            try:
                calibration = item.get("calibration")
                flipped = item.get("calibration_flip_average")
                entries[key] = ModelEntry(
                    key=key,
                    path=model_dir / str(item["file"]),
                    sha256=str(item["sha256"]).lower(),
                    size=int(item["bytes"]),
                    calibration=Calibration.from_mapping(calibration) if calibration else None,
                    calibration_flip_average=Calibration.from_mapping(flipped) if flipped else None,
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ModelError(f"{path}: entry {key!r} is malformed: {exc!r}") from exc
        return cls(model_dir, entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def entry(self, key: str) -> ModelEntry:
        try:
            return self._entries[key]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise ModelError(
                f"model {key!r} is not in {self.model_dir / MANIFEST_NAME} (has: {known})"
            ) from None

    def verified_path(self, key: str) -> Path:
        entry = self.entry(key)
        entry.verify()
        return entry.path
