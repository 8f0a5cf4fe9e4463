"""What is installed, read without loading any of it: where the models are, each model of the
manifest by name with its file and sha256, and the versions of the runtime packages from their
metadata (``edged --version``). PyYAML and the standard library only: no numpy, no TFLite runtime,
no pydantic. ``manifest.py`` is the full reader that loads and checks the models.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from edged import environment
from edged.yamlfile import DuplicateKey, Unreadable, load_yaml, read_text

__all__ = [
    "MANIFEST_NAME",
    "RUNTIME_PACKAGES",
    "TFLITE_RUNTIMES",
    "ModelVersion",
    "default_model_dir",
    "model_versions",
    "package_version",
    "runtime_versions",
]

MANIFEST_NAME = "manifest.yaml"
TFLITE_RUNTIMES = ("ai-edge-litert", "tflite-runtime")
"""The TFLite runtime packages in the order ``runtime.py`` prefers them."""
RUNTIME_PACKAGES = ("numpy", "opencv-python-headless")


def default_model_dir() -> Path:
    """Where the models are: ``$EDGED_MODEL_DIR``, the source checkout's ``models/``, or the
    ``share/edged/models`` that a wheel install puts under the interpreter prefix."""
    env = environment.model_dir()
    if env is not None:
        return env
    candidates = [
        Path(__file__).resolve().parents[2] / "models",
        Path(sys.prefix) / "share" / "edged" / "models",
        Path("/usr/share/edged/models"),
    ]
    for candidate in candidates:
        if (candidate / MANIFEST_NAME).is_file():
            return candidate
    return candidates[0]


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One model of the manifest: its name (the manifest key), file and declared sha256."""

    name: str
    file: str
    sha256: str


def model_versions(model_dir: Path) -> list[ModelVersion]:
    """The models ``model_dir/manifest.yaml`` declares, in its order; ``OSError`` or
    ``ValueError`` when it cannot be read (the files themselves are not read: see ``Manifest``).
    Read within the same bounds as everything edged reads as YAML (``edged.yamlfile``, which loads
    no pydantic: ``edged --version`` stays light)."""
    path = model_dir / MANIFEST_NAME
    try:
        data, _ = load_yaml(read_text(path))
    except Unreadable as exc:
        raise ValueError(f"{path} is not a readable manifest: it {exc}") from exc
    except (yaml.YAMLError, DuplicateKey) as exc:
        raise ValueError(f"{path} is not valid YAML ({type(exc).__name__})") from exc
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ValueError(f"{path} has no 'models' mapping")
    return [
        ModelVersion(str(name), str(item.get("file", "?")), str(item.get("sha256", "?")))
        for name, item in models.items()
        if isinstance(item, dict)
    ]


def package_version(package: str) -> str | None:
    """The installed version of the distribution ``package`` (its metadata; never imported)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def runtime_versions() -> list[tuple[str, str]]:
    """(name, version) of Python, the TFLite runtime (the first installed of ``TFLITE_RUNTIMES``,
    else ``absent``) and ``RUNTIME_PACKAGES`` (``absent`` when not installed)."""
    versions = [("Python", platform.python_version())]
    tflite = next(((p, v) for p in TFLITE_RUNTIMES if (v := package_version(p)) is not None), None)
    versions.append(tflite or ("TFLite runtime", "absent"))
    versions += [(p, package_version(p) or "absent") for p in RUNTIME_PACKAGES]
    return versions
