"""A throw-away Mosquitto broker on a free loopback port, for the daemon benchmark and the MQTT tests
(``tests/mqtt_broker.py``, a pytest plugin, wraps it in fixtures).

``Broker`` writes a minimal mosquitto.conf into a directory, starts ``mosquitto -c`` as a subprocess,
waits (bounded) until the port accepts connections, and terminates it in ``stop()``; ``start()``
again reuses the same port (broker outage tests). Nothing is installed or downloaded: the broker is
the system's ``mosquitto`` (``apt install mosquitto``).
"""

from __future__ import annotations

import getpass
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["READY_TIMEOUT_S", "Broker", "find_mosquitto", "free_port"]

READY_TIMEOUT_S = 10.0
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


LISTEN_PORTS = range(20000, 32000)
"""Where listening ports are drawn from: below Linux's ephemeral range (32768–60999 by default).
A port the kernel hands out for bind(0) is in that range, and between the probe and the broker's
own bind any outgoing connection (the tests make thousands) can take it: mosquitto then exits with
"Address already in use"."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the ephemeral range
    (``LISTEN_PORTS``), so that no client connection's local port can take it before it is used."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(LISTEN_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1}")


def find_mosquitto() -> str | None:
    """The ``mosquitto`` executable on $PATH or in the usual sbin folders, or None."""
    return shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if Path(p).exists()), None)


class Broker:
    """``mosquitto`` on ``127.0.0.1:<port>`` with its configuration, log (and persistence, if asked)
    in ``directory``; anonymous clients allowed (loopback only). ``extra_conf`` is appended to the
    configuration. Also a context manager (start, then stop)."""

    def __init__(
        self, executable: str, directory: Path, extra_conf: str = "", persistent: bool = False
    ) -> None:
        self.executable = executable
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        persistence = (
            f"persistence true\npersistence_location {directory}/\n" if persistent else "persistence false\n"
        )
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n{persistence}"
            f"log_dest file {self.log}\nlog_type all\n{self.run_as()}{extra_conf}"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def run_as() -> str:
        """Started as root, mosquitto switches to the ``mosquitto`` user, which cannot read our folder."""
        return f"user {getpass.getuser()}\n" if os.geteuid() == 0 else ""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until the port accepts connections (RuntimeError if it does not)."""
        self.process = subprocess.Popen(
            [self.executable, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)  # polling a port: no event to wait on
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {READY_TIMEOUT_S} s")

    def stop(self) -> None:
        """Terminate it (kill after ``READY_TIMEOUT_S``); harmless when not running."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=READY_TIMEOUT_S)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
