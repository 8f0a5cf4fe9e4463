"""What ``edged`` does before a command runs: ``--help`` and ``--version`` without the heavy modules
(numpy, OpenCV, the TFLite runtime, paho, cryptography, pydantic), every subcommand's frozen
settings, ``edged bench`` where the benchmarks are not installed, and a runtime wheel without them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from edged import __version__
from edged.cli import build_parser
from edged.cli_directory import FaceListAdd
from edged.cli_options import GlobalOptions, command_of, settings_from

REPO = Path(__file__).resolve().parents[1]
HEAVY = ["numpy", "cv2", "ai_edge_litert", "tflite_runtime", "paho", "cryptography", "pydantic"]
HEAVY += ["pydantic_core", "edged.pipeline", "edged.directory", "edged.service", "edged.config"]

PROBE = """
import json, runpy, sys
sys.argv = ["edged", *sys.argv[1:]]
code = None
try:
    runpy.run_module("edged", run_name="__main__")
except SystemExit as exc:
    code = exc.code
heavy = sorted(n for n in sys.modules if any(n == h or n.startswith(h + ".") for h in __HEAVY__))
print(json.dumps({"exit": code, "heavy": heavy}), file=sys.stderr)
"""


def probe(*args: str) -> tuple[str, dict[str, object]]:
    """``python -m edged ARGS`` in a fresh interpreter: its stdout, its exit code and the heavy
    modules it loaded."""
    code = PROBE.replace("__HEAVY__", repr(HEAVY))
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )
    report: dict[str, object] = json.loads(result.stderr.strip().splitlines()[-1])
    return result.stdout, report


@pytest.mark.parametrize(
    ("args", "shows"),
    [
        (["--version"], f"edged {__version__}\n"),
        (["--help"], "usage: edged"),
        (["persons", "--help"], "usage: edged persons"),
        (["request", "--help"], "usage: edged request"),
        (["bench", "--help"], "usage: edged bench"),
    ],
)
def test_version_and_help_load_no_heavy_module(args: list[str], shows: str) -> None:
    stdout, report = probe(*args)
    assert report == {"exit": 0, "heavy": []}, (args, report)
    assert stdout.startswith(shows), stdout


def test_version_names_the_package_models_and_runtimes() -> None:
    stdout, report = probe("--version")
    assert report["exit"] == 0
    lines = stdout.splitlines()
    assert lines[0] == f"edged {__version__}"
    manifest = yaml.safe_load((REPO / "models" / "manifest.yaml").read_text(encoding="utf-8"))
    assert manifest["models"], "the manifest names the models"
    words = [line.split() for line in lines]
    for name, model in manifest["models"].items():
        assert [name, model["file"], "sha256", model["sha256"][:16]] in words, (name, stdout)
    assert ["Python", platform.python_version()] in words
    for package in ("ai-edge-litert", "numpy", "opencv-python-headless"):
        assert [package, metadata.version(package)] in words, (package, stdout)


def test_version_without_a_manifest_still_answers(tmp_path: Path) -> None:
    stdout, report = probe("--model-dir", str(tmp_path), "--version")
    assert report["exit"] == 0
    assert stdout.splitlines()[0] == f"edged {__version__}"
    assert f"models: cannot read {tmp_path / 'manifest.yaml'}" in stdout
    assert f"Python {platform.python_version()}" in stdout


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("deep", lambda p: p.write_text("models: " + "[" * 10_000 + "]" * 10_000)),
        ("not-utf8", lambda p: p.write_bytes(b"models: {a: \xff}\n")),
        ("bad-timestamp", lambda p: p.write_text("models: !!timestamp x\n")),
        ("fifo", os.mkfifo),
        (
            "merge-bomb",
            lambda p: p.write_text(
                "l0: &l0 {a: 1}\n"
                + "".join(f"l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * 9)}]}}\n" for i in range(1, 9))
            ),
        ),
    ],
)
def test_version_with_a_malformed_manifest_still_answers(
    tmp_path: Path, name: str, make: Callable[[Path], object]
) -> None:
    """A traceback (RecursionError, AttributeError inside PyYAML) or a hang (a FIFO) before."""
    make(tmp_path / "manifest.yaml")
    stdout, report = probe("--model-dir", str(tmp_path), "--version")
    assert report == {"exit": 0, "heavy": []}, (name, report)
    assert f"models: {tmp_path / 'manifest.yaml'} is not " in stdout, stdout


def leaf_parsers(
    parser: argparse.ArgumentParser, path: str = "edged"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the tree that runs a command (argparse keeps its subparsers in ``_actions``)."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path, parser
    for action in subparsers:
        for name, child in action.choices.items():
            yield from leaf_parsers(child, f"{path} {name}")


def test_every_command_gets_frozen_settings_of_its_own_options() -> None:
    """Each command's settings are a frozen dataclass whose fields are exactly its options' names, and
    the global options are the top-level ones (a renamed option fails here, not at a user's prompt)."""
    parser = build_parser()
    top = {a.dest for a in parser._actions} - {"help", "command", argparse.SUPPRESS}  # --version
    assert top == {f.name for f in dataclasses.fields(GlobalOptions)}
    leaves = dict(leaf_parsers(parser))
    assert len(leaves) > 30, sorted(leaves)
    for path, leaf in leaves.items():
        command = leaf.get_default("_command")
        assert command is not None, f"{path} has no command"
        params = getattr(command.settings, "__dataclass_params__", None)
        assert params is not None and params.frozen, f"{path}: {command.settings} is not a frozen dataclass"
        dests = {a.dest for a in leaf._actions} - {"help"}
        fields = {f.name for f in dataclasses.fields(command.settings)}
        assert fields == dests, (path, fields, dests)


def test_parsed_arguments_become_frozen_settings() -> None:
    namespace = build_parser().parse_args(["--threads", "2", "facelists", "add", "guests", "a.jpg", "b.png"])
    settings = settings_from(command_of(namespace).settings, namespace)
    assert settings == FaceListAdd(list_id="guests", images=(Path("a.jpg"), Path("b.png")), json=False)
    assert isinstance(settings, FaceListAdd)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.json = True  # type: ignore[misc]
    assert settings_from(GlobalOptions, namespace).threads == 2


def test_bench_without_the_benchmarks_says_how_to_install_them() -> None:
    """Where edged_bench is not installed (a terminal), ``edged bench`` is one line naming the command."""
    code = (
        "import sys\n"
        "sys.modules['edged_bench'] = None  # as if not installed\n"
        "from edged.cli import main\n"
        "sys.exit(main(['bench', 'speed']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "edged: BadArgument: edged bench: the benchmarks are not installed; "
        "from the edged source tree: python3 -m pip install -e tools/bench"
    ]


def test_the_runtime_wheel_holds_no_benchmark(tmp_path: Path) -> None:
    """``pip wheel .`` (on a copy of the sources: a build writes into its tree) packs edged without
    edged/bench, tools/bench or the broker launcher."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "edged", src / "edged", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    (src / "models").mkdir()
    shutil.copy(REPO / "models" / "manifest.yaml", src / "models")  # the .tflite files change nothing here
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp_path / "wheels")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("edged-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    packages = {name.rsplit("/", 1)[0] for name in names if name.endswith("/__init__.py")}
    assert {"edged", "edged/pipeline", "edged/directory", "edged/mqtt"} <= packages, sorted(packages)
    assert [name for name in names if "bench" in name or "broker" in name] == []
