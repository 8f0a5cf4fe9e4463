"""The layer contract checker (tools/layers.py) on small package trees, and on edged itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import layers  # noqa: E402


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = {
    "edged/__init__.py": "",
    "edged/errors.py": "class EdgedError(Exception): ...\n",
    "edged/config.py": "from edged.errors import EdgedError\n",
    "edged/pipeline/__init__.py": "",
    "edged/mqtt/__init__.py": "",
    "edged/mqtt/topics.py": "from edged.errors import EdgedError\n",
}


def messages(root: Path) -> list[str]:
    return [v.message for v in layers.check(root)]


def test_downward_imports_pass(tmp_path: Path) -> None:
    root = tree(tmp_path, {**BASE, "edged/pipeline/quality.py": "from edged.errors import EdgedError\n"})
    assert messages(root) == []


@pytest.mark.parametrize(
    "source",
    [
        "from edged.config import x\n",
        "import edged.config\n",
        "from edged import config\n",
        "def f():\n    from edged.config import x\n",  # lazy
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edged.config import x\n",
        "from .. import config\n",  # relative
    ],
)
def test_an_upward_import_fails_however_it_is_written(tmp_path: Path, source: str) -> None:
    root = tree(tmp_path, {**BASE, "edged/pipeline/quality.py": source})
    found = messages(root)
    assert found == ["edged.pipeline.quality (domain) imports edged.config (composition): an upward import"]


def test_a_module_without_a_layer_fails(tmp_path: Path) -> None:
    root = tree(tmp_path, {**BASE, "edged/newthing.py": ""})
    layers_before = dict(layers.LAYERS)
    try:
        del layers.LAYERS["edged"]  # the base catch-all gone: newthing has no layer
        assert "edged.newthing has no layer in tools/layers.py LAYERS" in messages(root)
    finally:
        layers.LAYERS.clear()
        layers.LAYERS.update(layers_before)


def test_size_limits(tmp_path: Path) -> None:
    big = "\n".join(f"x{i} = {i}" for i in range(layers.MAX_LINES + 1)) + "\n"
    methods = "".join(f"    def m{i}(self) -> None: ...\n" for i in range(layers.MAX_PUBLIC_METHODS + 1))
    root = tree(
        tmp_path,
        {**BASE, "edged/pipeline/big.py": big, "edged/pipeline/wide.py": f"class Wide:\n{methods}"},
    )
    assert messages(root) == [
        f"edged.pipeline.big has {layers.MAX_LINES + 1} lines (limit {layers.MAX_LINES})",
        f"class Wide has {layers.MAX_PUBLIC_METHODS + 1} public methods (limit {layers.MAX_PUBLIC_METHODS})",
    ]


def test_edged_has_no_upward_import() -> None:
    upward = [str(v) for v in layers.check(ROOT) if "upward import" in v.message or "no layer" in v.message]
    assert upward == []
