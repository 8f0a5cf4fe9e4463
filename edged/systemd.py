"""sd_notify without a dependency: READY=1 once models, directory and camera are up, STATUS= lines,
WATCHDOG=1 from the frame loop (so a stuck camera trips systemd's watchdog), STOPPING=1 on the way
out. Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op."""

from __future__ import annotations

import logging
import socket
import threading

from edged import environment

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else environment.notify_socket()
        self.sent = 0
        self.failures = 0
        self._stopping = False
        self._lock = threading.Lock()  # STOPPING (main thread) and WATCHDOG (the worker) in order

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when not under systemd or on failure."""
        if not self.address:
            return False
        target = self.address
        if target.startswith("@"):  # an abstract socket
            target = "\0" + target[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # never stall the frame loop on a busy or stuck notify socket
                sock.connect(target)
                sock.sendall("\n".join(fields).encode())
        except OSError as exc:
            self.failures += 1
            logger.warning("sd_notify to %s failed: %s", self.address, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        """WATCHDOG=1, until ``stopping``: a frame finished while the daemon stops pings no more."""
        with self._lock:
            return False if self._stopping else self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        with self._lock:
            self._stopping = True
            return self.notify("STOPPING=1", f"STATUS={status}")

    @staticmethod
    def watchdog_interval_s() -> float | None:
        """Half of systemd's WatchdogSec (from $WATCHDOG_USEC), the interval to ping at; None when off."""
        return environment.watchdog_interval_s()
