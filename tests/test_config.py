"""The YAML configuration: defaults, validation with the offending line, CLI overrides."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from edged.config import Config, check_config, config_errors, load_config
from edged.errors import ConfigError
from edged.yamlfile import DuplicateKey, Unreadable, load_yaml

RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]
SHIPPED = Path(__file__).resolve().parents[1] / "config" / "edged.yaml"


def test_the_shipped_config_is_valid_and_states_the_defaults() -> None:
    config, errors = check_config(SHIPPED)
    assert errors == []
    assert config == Config(), "config/edged.yaml must document exactly the built-in defaults"


def test_no_file_means_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGED_CONFIG", raising=False)
    assert load_config(None) == Config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pipeline:\n  detektor: short\n", ["x.yaml:2: pipeline.detektor: unknown key"]),
        (
            "pipeline:\n  threads: 0\n",
            ["x.yaml:2: pipeline.threads: Input should be greater than or equal to 1"],
        ),
        (
            "images:\n  max_bytes: 99999999\n",
            ["x.yaml:2: images.max_bytes: Input should be less than or equal"],
        ),
        (
            "pipeline:\n  quality:\n    max_yaw_deg: wide\n",
            ["x.yaml:3: pipeline.quality.max_yaw_deg: Input should"],
        ),
        ("pipeline:\n  model_threads: {gpu: 2}\n", ["x.yaml:2: pipeline.model_threads.gpu"]),
        ("schema_version: 2\n", ["x.yaml:1: schema_version: Input should be 1"]),
        ("- a\n- b\n", ["x.yaml: the top level must be a mapping, not list"]),
        ("pipeline: [\n", ["x.yaml:2: not valid YAML"]),
    ],
)
def test_errors_name_the_path_and_line(text: str, expected: list[str]) -> None:
    config, errors = config_errors(text, "x.yaml")
    assert config is None
    assert len(errors) == len(expected)
    for error, start in zip(errors, expected, strict=True):
        assert error.startswith(start), error


def test_every_error_is_reported_at_once() -> None:
    _, errors = config_errors("pipeline:\n  detektor: x\n  threads: -1\nverify:\n  far: 2\n", "c.yaml")
    assert {e.split(":")[1] for e in errors} == {"2", "3", "5"}


def test_a_liveness_door_needs_no_more_frames_than_the_window_keeps() -> None:
    text = "liveness:\n  window_frames: 4\ndoors:\n  front:\n    group: g\n    liveness: passive\n"
    config, errors = config_errors(text, "x.yaml")
    assert config is None and len(errors) == 1
    assert "doors.front.liveness_min_frames (5)" in errors[0] and "liveness.window_frames (4)" in errors[0]
    config, errors = config_errors(text.replace("passive", "'off'"), "x.yaml")  # not used: no error
    assert config is not None and errors == []
    config, errors = config_errors(text.replace("window_frames: 4", "window_frames: 5"), "x.yaml")
    assert config is not None and errors == []


def test_load_config_raises_one_error_with_a_count(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pipeline:\n  detektor: x\n  threads: -1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d: .* \(and 1 more: run edged check-config\)"):
        load_config(path)


def test_per_model_threads_override_the_default() -> None:
    config = Config.model_validate({"pipeline": {"threads": 2, "model_threads": {"embedder": 1}}})
    assert config.pipeline.threads_for("embedder") == 1
    assert config.pipeline.threads_for("detector") == 2


def test_check_config_cli(tmp_path: Path, run_edged: RunEdged) -> None:
    good = run_edged(["check-config", SHIPPED])
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip().endswith(": ok")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline:\n  detektor: x\nimages:\n  min_side: 0\n")
    result = run_edged(["check-config", bad])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"edged: {bad}: 2 error(s)"
    assert any(":2: pipeline.detektor: unknown key" in line for line in lines)
    assert any(":4: images.min_side" in line for line in lines)


def test_config_from_the_environment_and_cli_overrides(tmp_path: Path, run_edged: RunEdged) -> None:
    """EDGED_CONFIG is read; a bad file stops the command with one line; a bad override is BadArgument."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline:\n  detector: medium\n")
    env = {**os.environ, "EDGED_CONFIG": str(bad)}
    result = run_edged(["demo"], env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"edged: BadConfig: {bad}:2: pipeline.detector")

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"pipeline": {"threads": 1}}))
    override = run_edged(["--config", good, "--threads", "0", "demo"])
    assert override.returncode == 2
    assert override.stderr.startswith("edged: BadArgument: --threads")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "device_id: door-a\nmqtt:\n  port: 1884\ndevice_id: door-b\n",
            "x.yaml:4: device_id: key 'device_id' appears twice: lines 1 and 4",
        ),
        (
            "pipeline:\n  threads: 1\n  quality:\n    min_face_px: 30\n  threads: 2\n",
            "x.yaml:5: pipeline.threads: key 'threads' appears twice: lines 2 and 5",
        ),
        (
            "doors:\n  front:\n    group: staff\n  front:\n    group: visitors\n",
            "x.yaml:4: doors.front: key 'front' appears twice: lines 2 and 4",
        ),
    ],
)
def test_a_duplicate_key_is_an_error_with_both_lines(text: str, expected: str) -> None:
    """PyYAML keeps the last of two equal keys silently; a door terminal's config must not."""
    config, errors = config_errors(text, "x.yaml")
    assert config is None
    assert errors == [expected]


def laughs(levels: int = 8) -> str:
    """A "billion laughs": each level an anchored list of nine aliases of the one before."""
    return "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, levels + 1)
    )


def merges(levels: int = 8) -> str:
    """The same through merge keys, which PyYAML copies at every use (9**8 pairs: 44 s, 800 MB)."""
    return "l0: &l0 {a: 1}\n" + "".join(
        f"l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * 9)}]}}\n" for i in range(1, levels + 1)
    )


def test_aliases_are_not_duplicates_and_are_walked_once() -> None:
    """A merge key and an anchor used many times are legal (not duplicate keys)."""
    _, errors = config_errors("a: &a {x: 1}\nb:\n  <<: *a\n  y: 2\nc: [*a, *a]\n", "x.yaml")
    assert all("appears twice" not in e for e in errors), errors


@pytest.mark.parametrize("bomb", [laughs(), merges()], ids=["aliases", "merge-keys"])
def test_an_alias_or_merge_key_bomb_is_refused_before_it_expands(bomb: str) -> None:
    """Counted on the composed graph (each node once), refused before PyYAML copies a merge or
    pydantic walks the aliases: at once, whatever the expansion."""
    with pytest.raises(Unreadable, match=r"expands to more than 100,000 nodes"):
        config_errors(bomb, "x.yaml")


def test_check_config_cli_refuses_a_merge_key_bomb_in_one_line(tmp_path: Path, run_edged: RunEdged) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(merges())
    result = run_edged(["check-config", path])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"edged: BadConfig: config {path} expands to more than 100,000 nodes through its aliases or "
        "merge keys (from line 1)"
    ]


def test_check_config_cli_reports_a_duplicate_key(tmp_path: Path, run_edged: RunEdged) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("camera:\n  source: demo\n  source: /dev/video0\n")
    result = run_edged(["check-config", path])
    assert result.returncode == 2
    assert f"{path}:3: camera.source: key 'source' appears twice: lines 2 and 3" in result.stderr


# -- files that cannot be read as YAML at all: one BadConfig line, exit 2, never a traceback or a hang


def _deep(opening: str, closing: str, levels: int = 10_000) -> str:
    return opening * levels + "1" + closing * levels + "\n"


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # nobody ever writes: reading it would wait forever


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # the path stays after the socket is closed: open() fails with ENXIO
    server.close()


UNREADABLE: dict[str, tuple[Callable[[Path], object], str]] = {
    "not-utf8": (
        lambda p: p.write_bytes("device_id: t\xfcr-1\n".encode("latin-1")),
        "is not UTF-8 text: byte 0xfc at offset 12 (line 1)",
    ),
    "deep-sequence": (lambda p: p.write_text(_deep("[", "]")), "nests deeper than 64 levels (line 1)"),
    "deep-mapping": (lambda p: p.write_text("a: " + _deep("{a: ", "}")), "nests deeper than 64 levels"),
    "deep-block": (
        lambda p: p.write_text("".join(f"{' ' * i}- \n" for i in range(100)) + " " * 100 + "- 1\n"),
        "nests deeper than 64 levels (line 65)",
    ),
    "huge": (
        lambda p: p.write_text("device_id: door-a\n" + "# padding\n" * 110_000),
        "is larger than 1,048,576 bytes: refused before parsing",
    ),
    "directory": (lambda p: p.mkdir(), "cannot read config"),
    "fifo": (_fifo, "is not a regular file but a FIFO"),
    "socket": (_socket, "cannot read config"),
}


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("name", list(UNREADABLE))
def test_a_file_that_is_no_yaml_config_is_one_bad_config_line(
    tmp_path: Path, run_edged: RunEdged, name: str, command: str
) -> None:
    """Non-UTF-8 bytes, nesting 10,000 deep (PyYAML's composer recurses per level), a file over
    1 MiB (refused before parsing), a directory, a FIFO nobody writes, a socket."""
    make, reason = UNREADABLE[name]
    path = tmp_path / "edged.yaml"
    make(path)
    args = ["check-config", path] if command == "check-config" else ["--config", path, "run"]
    result = run_edged(args, timeout=60)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr[:2000]
    assert result.stderr.startswith("edged: BadConfig: "), result.stderr
    assert str(path) in result.stderr and reason in result.stderr, result.stderr
    assert result.returncode == 2
    assert result.stdout == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_unreadable_config_is_one_bad_config_line(tmp_path: Path, run_edged: RunEdged) -> None:
    path = tmp_path / "edged.yaml"
    path.write_text("device_id: door-a\n")
    path.chmod(0)
    result = run_edged(["check-config", path], timeout=60)
    assert result.stderr == f"edged: BadConfig: cannot read config {path}: Permission denied\n"
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("device_id: 2001-13-45\n", "x.yaml:1: not valid YAML: cannot read '2001-13-45' as timestamp"),
        ("mqtt:\n  port: !!int abc\n", "x.yaml:2: not valid YAML: cannot read 'abc' as int"),
        ("verify:\n  far: !!float x\n", "x.yaml:2: not valid YAML: cannot read 'x' as float"),
        ("a: !!timestamp x\n", "x.yaml:1: not valid YAML: cannot read 'x' as timestamp"),
    ],
)
def test_a_scalar_its_tag_cannot_read_is_a_yaml_error_with_its_line(text: str, expected: str) -> None:
    """PyYAML's constructors raise ValueError/AttributeError for these (a traceback before)."""
    config, errors = config_errors(text, "x.yaml")
    assert config is None
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_nesting_within_the_bound_is_read() -> None:
    """64 levels are read (the configuration nests 4 deep); the duplicate-key walk is iterative."""
    data, _ = load_yaml(_deep("[", "]", 63))
    for _ in range(63):
        data = data[0]
    assert data == 1
    with pytest.raises(DuplicateKey, match=r"line 65|lines 64 and 65"):
        load_yaml("".join(f"{'  ' * i}a:\n" for i in range(63)) + "  " * 63 + "b: 1\n" + "  " * 63 + "b: 2\n")
