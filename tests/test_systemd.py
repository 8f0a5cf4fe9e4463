"""sd_notify over a real unix datagram socket, as systemd would listen."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.systemd import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_messages_reach_the_socket(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    notifier = Notifier(path)
    assert notifier.ready("models, directory and camera up")
    assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=models, directory and camera up"]
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert sock.recv(4096).decode().startswith("STOPPING=1\n")
    assert notifier.sent == 3


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.sent == 0


def test_a_vanished_socket_is_a_counted_warning_not_a_crash(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert not notifier.watchdog()
    assert notifier.failures == 1


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("10000000", None, 5.0),
        ("0", None, None),
        (None, None, None),
        ("10000000", "1", None),
        ("x", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    if pid == "1" and os.getpid() == 1:
        pytest.skip("running as PID 1")
    assert Notifier.watchdog_interval_s() == expected


def test_the_daemon_reports_ready_watchdog_and_stopping(listener: tuple[str, socket.socket]) -> None:
    """`edged demo` runs the daemon: under systemd it says READY once up, pings the watchdog from the
    frame loop, and says STOPPING on the way out."""
    path, sock = listener
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    env.pop("WATCHDOG_PID", None)
    messages: list[str] = []
    done = threading.Event()

    def read() -> None:  # as systemd does: read as they come
        sock.settimeout(0.2)
        while not done.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=read)
    reader.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "edged", "demo", "--duration", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        done.set()
        reader.join(5)
    assert result.returncode == 0, result.stderr
    kinds = [m.split("\n")[0] for m in messages]
    assert kinds[0] == "READY=1", messages
    assert "WATCHDOG=1" in kinds
    assert kinds[-1] == "STOPPING=1"
