"""Logging for the terminal and for journald: priority prefixes under systemd, INFO by default for the
daemon (start-up lines without -v), one handler however often ``setup`` runs."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mqtt_broker import Broker

from edged import log
from edged.config import Config
from edged.demo import enrol_demo
from edged.directory.crypto import create_key_file
from edged.pipeline.pipeline import FacePipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def journal_env(path: Path) -> str:
    info = os.stat(path)
    return f"{info.st_dev}:{info.st_ino}"


@pytest.mark.parametrize(
    ("level", "prefix"),
    [(logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"), (logging.ERROR, "<3>")],
)
def test_journal_lines_carry_the_syslog_priority_and_no_timestamp(
    level: int, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        monkeypatch.setenv("JOURNAL_STREAM", journal_env(path))
        log.setup(logging.DEBUG, stream)
        logging.getLogger("edged.test").log(level, "door %s", "front")
    assert path.read_text() == f"{prefix}edged.test: door front\n"


def test_a_traceback_keeps_the_prefix_on_every_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        monkeypatch.setenv("JOURNAL_STREAM", journal_env(path))
        log.setup(logging.INFO, stream)
        try:
            raise RuntimeError("camera gone")
        except RuntimeError:
            logging.getLogger("edged.app").exception("worker failed")
    lines = path.read_text().splitlines()
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines), lines
    assert lines[-1] == "<3>RuntimeError: camera gone"


def test_outside_the_journal_lines_have_a_timestamp_and_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    """JOURNAL_STREAM set but naming another stream (stderr redirected to a file): plain lines."""
    other = tmp_path / "other"
    other.write_text("")
    monkeypatch.setenv("JOURNAL_STREAM", journal_env(other))
    stream = io.StringIO()
    log.setup("INFO", stream)
    log.setup("INFO", stream)  # a second setup replaces the first: one line per record
    logging.getLogger("edged.test").info("hello")
    logging.getLogger("edged.test").debug("hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" INFO edged.test: hello")
    assert lines[0][:4].isdigit()  # the year of the timestamp


def test_the_daemon_logs_its_start_up_at_info_with_priorities_under_systemd(
    tmp_path: Path, pipeline: FacePipeline, broker: Broker
) -> None:
    """`edged run` under a unit (stderr is the journal stream): its start-up lines appear at INFO
    without -v, each with its priority prefix, so `journalctl -p` can filter them."""
    key = tmp_path / "kek"
    kek = create_key_file(key)
    state = tmp_path / "state"
    state.mkdir()
    enrol_demo(pipeline, state, kek, Config())
    config = tmp_path / "edged.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "device_id": "gate-1",
                "directory": {"state_dir": str(state)},
                "camera": {"source": "demo"},
                "mqtt": {"host": "127.0.0.1", "port": broker.port, "stats_interval_s": 0},
                "doors": {"front": {"mode": "identify", "group": "demo"}},
            }
        )
    )
    stderr = tmp_path / "stderr"
    stderr.write_text("")
    env = {**os.environ, "JOURNAL_STREAM": journal_env(stderr)}
    with stderr.open("a") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edged",
                "--config",
                str(config),
                "--key-file",
                str(key),
                "run",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not all(
                line in stderr.read_text() for line in ("started:", "MQTT connected")
            ):
                assert process.poll() is None, stderr.read_text()
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = stderr.read_text().splitlines()
    assert "<6>edged.app: started: 1 door(s), device gate-1" in lines, lines
    assert any(line.startswith("<6>edged.capture.buffer: capture demo: started") for line in lines), lines
    assert f"<6>edged.mqtt.connection: MQTT connected to 127.0.0.1:{broker.port}" in lines, lines
    assert any(line.startswith("<6>edged.app: stopped: ") for line in lines), lines
    assert all(line.startswith(("<3>", "<4>", "<6>")) for line in lines), lines  # no DEBUG without -v


NATIVE_SCRIPT = """
import logging, os, sys
import cv2, numpy as np
from edged import log
log.setup("INFO")
image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
ok, jpeg = cv2.imencode(".jpg", image)
cut = bytes(jpeg)[: len(jpeg) // 2] + b"\\xff\\xd9"  # libjpeg: "Corrupt JPEG data: premature end …"
with log.native_stderr_captured():
    os.write(2, b"a native library writes this\\n")
    cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR)
    logging.getLogger("edged.test").info("python logging still works")
os.write(2, b"after: straight to stderr again\\n")
"""


def test_native_stderr_becomes_log_lines() -> None:
    """What native code writes to fd 2 while the daemon runs (libjpeg decoding a damaged JPEG on an
    API worker) arrives as edged.native WARNING lines, never as raw text among the log lines."""
    result = subprocess.run(
        [sys.executable, "-c", NATIVE_SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == "after: straight to stderr again", lines
    during = lines[:-1]
    assert all(" edged." in line and line[:4].isdigit() for line in during), during  # formatted records
    assert any(line.endswith("WARNING edged.native: a native library writes this") for line in during), during
    assert any("edged.native" in line and "JPEG" in line for line in during), during
    assert any(line.endswith("INFO edged.test: python logging still works") for line in during), during


CRASH_SCRIPT = """
import ctypes, os, sys
from edged import log
log.setup("INFO")
with log.native_stderr_captured():
    # native code holding the GIL writes far more than a pipe holds (64 KiB): nothing of ours may
    # have to run for it to finish
    lines = b"".join(b"libfoo: line %05d of a long complaint\\n" % i for i in range(8000))
    libc = ctypes.PyDLL(None)  # PyDLL: the call keeps the GIL
    libc.write(2, lines, len(lines))
    os.write(2, b"libfoo: assertion failed, aborting\\n")
    os.abort()  # what a crashing native library does: its last words must still reach the log
"""


def test_native_stderr_survives_a_flood_under_the_gil_and_a_crash() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT], cwd=REPO, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == -signal.SIGABRT
    lines = result.stderr.decode().splitlines()
    native = [line for line in lines if " WARNING edged.native: libfoo: " in line]
    assert len(native) == 8001, lines[-3:]
    assert native[-1].endswith("libfoo: assertion failed, aborting")
