"""The environment variables edged reads, all in edged.environment: typed, empty means unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged import environment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("name", "read"),
    [
        (environment.CONFIG, environment.config_file),
        (environment.STATE_DIR, environment.state_dir),
        (environment.KEY_FILE, environment.key_file),
        (environment.MODEL_DIR, environment.model_dir),
        (environment.CREDENTIALS_DIRECTORY, environment.credentials_dir),
        (environment.SYSTEMD_STATE_DIRECTORY, environment.systemd_state_dir),
    ],
)
def test_paths_are_read_when_asked_and_empty_is_unset(
    name: str, read: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert callable(read)
    monkeypatch.setenv(name, "/srv/edged/x")
    assert read() == Path("/srv/edged/x")
    monkeypatch.setenv(name, "")
    assert read() is None
    monkeypatch.delenv(name)
    assert read() is None


def test_systemd_state_directory_takes_the_first_of_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edged:/var/lib/other")
    assert environment.systemd_state_dir() == Path("/var/lib/edged")


@pytest.mark.parametrize(
    ("value", "expected"), [("8:12345", (8, 12345)), ("", None), ("garbage", None), ("8:", None)]
)
def test_journal_stream(value: str, expected: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", value)
    assert environment.journal_stream() == expected


def test_no_other_module_reads_the_environment() -> None:
    """One module reads environment variables: a grep of the package proves it stays so."""
    readers = []
    for path in sorted((ROOT / "edged").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name != "environment.py" and ("os.environ" in text or "getenv(" in text):
            readers.append(str(path.relative_to(ROOT)))
    assert readers == []
