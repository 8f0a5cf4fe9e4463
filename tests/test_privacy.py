"""Product requirement: no image is ever written to disk. ``edged detect``, ``verify`` and ``demo``
run with an empty working directory, HOME and TMPDIR; afterwards those stay empty, the input folder
holds only the inputs, and neither models/ nor the checkout changed."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.types import ImageRGB

REPO = Path(__file__).resolve().parents[1]
RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]
Encode = Callable[..., bytes]

# caches of tools (python, pytest, ruff, mypy) are not product output
IGNORED_PARTS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def repo_files() -> set[str]:
    """Every file of the checkout (ignored ones included, tool caches excluded), relative."""
    return {
        str(p.relative_to(REPO))
        for p in REPO.rglob("*")
        if p.is_file() and not IGNORED_PARTS.intersection(p.relative_to(REPO).parts)
    }


def git_status() -> str:
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def models_state() -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted((REPO / "models").iterdir())
    }


@pytest.fixture
def sandbox(tmp_path: Path, astronaut: ImageRGB, encode_image: Encode) -> dict[str, Path]:
    """Empty cwd/HOME/TMPDIR and an input folder with two images."""
    dirs = {name: tmp_path / name for name in ("cwd", "home", "tmp", "inputs")}
    for folder in dirs.values():
        folder.mkdir()
    (dirs["inputs"] / "a.png").write_bytes(encode_image(astronaut, ".png"))
    moved = cv2.warpAffine(astronaut, np.array([[1.0, 0, -30], [0, 1.0, 20]]), (512, 512))
    (dirs["inputs"] / "b.jpg").write_bytes(encode_image(moved, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 80))
    return dirs


@pytest.mark.parametrize(
    "args",
    [
        ["detect", "{inputs}/a.png", "--json"],
        ["verify", "{inputs}/a.png", "{inputs}/b.jpg", "--json"],
        ["demo", "--duration", "5"],  # the daemon: its directory lives under TMPDIR, deleted at exit
    ],
    ids=["detect", "verify", "demo"],
)
def test_no_image_is_written_to_disk(run_edged: RunEdged, sandbox: dict[str, Path], args: list[str]) -> None:
    env = {
        **os.environ,
        "HOME": str(sandbox["home"]),
        "TMPDIR": str(sandbox["tmp"]),
        "TMP": str(sandbox["tmp"]),
        "TEMP": str(sandbox["tmp"]),
    }
    env.pop("XDG_CACHE_HOME", None)
    env.pop("XDG_DATA_HOME", None)
    inputs_before = files_under(sandbox["inputs"])
    status_before, repo_before, models_before = git_status(), repo_files(), models_state()

    result = run_edged([a.format(inputs=sandbox["inputs"]) for a in args], cwd=sandbox["cwd"], env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the command printed nothing: it did not run"
    for name in ("cwd", "home", "tmp"):
        written = files_under(sandbox[name])
        assert written == [], f"{args[0]} wrote into {name}: {written}"
    assert files_under(sandbox["inputs"]) == inputs_before
    assert models_state() == models_before, "models/ changed"
    assert repo_files() - repo_before == set(), "new files in the checkout"
    assert git_status() == status_before, "the checkout changed"
