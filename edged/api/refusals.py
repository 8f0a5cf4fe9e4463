"""The audit records of refused requests (docs/mqtt-api.md): at most ``PER_MINUTE`` a minute (beyond
that they are counted and logged once a minute), each a record with the operation, the actor, the
role and the reply's error code and message.

A refusal decided on paho's network thread (a retained, too large or misaddressed request) is never
written there: writing takes the service lock (held for seconds by a train, an identify or a
pruning batch) and a synchronous disk write, and while paho's thread waits nothing is sent or
received (PINGREQ, replies, the door's decisions, claims; the broker drops a connection silent for
1.5 × its keepalive). It is queued (at most ``QUEUE_DEPTH``; beyond, or once stopped, it is
dropped and counted) for the writer thread ``api-audit``. An API worker, which may wait, writes its
refusals at once, so their record is in the chain before the reply leaves.

The actor of a refusal decided before a signature verified (``claimed``) is
``mqtt:unverified:<client>``, the client the request names but may not be: anyone may name one.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from edged.api import codec
from edged.api.auth import CLIENT_RE
from edged.errors import EdgedError

__all__ = ["PER_MINUTE", "QUEUE_DEPTH", "Recorder", "RefusalAudit", "claimed"]

logger = logging.getLogger(__name__)

PER_MINUTE = 60
QUEUE_DEPTH = 64
"""Refusals from paho's thread waiting for the writer: more than a minute's budget."""
UNVERIFIED = "mqtt:unverified:"
NO_CLIENT = "mqtt:(unsigned or malformed)"


class Recorder(Protocol):
    """Where the records go (``FaceService.record``: the directory's audit log)."""

    def record(self, operation: str, actor: str, role: str, targets: dict[str, str], result: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Refusal:
    operation: str
    actor: str
    role: str
    result: str


class RefusalAudit:
    """The rate limit, the queue and its writer thread (``start``/``stop``, with the request
    server). ``unaudited``: refusals not recorded (over the limit, queue full, stopped, failed)."""

    def __init__(self, recorder: Recorder, depth: int = QUEUE_DEPTH) -> None:
        self.recorder = recorder
        self._queue: queue.Queue[_Refusal | None] = queue.Queue(depth)
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._stopped = False
        self.unaudited = 0
        self.suppressed_minute = 0
        self._minute = -math.inf
        self._this_minute = 0

    def start(self) -> None:
        self._stopped = False
        self._writer = threading.Thread(target=self._write_queued, name="api-audit", daemon=True)
        self._writer.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the writer; later refusals from paho's thread are counted."""
        with self._lock:
            self._stopped = True  # nothing is queued after the end mark
        if self._writer is None:
            return
        try:
            self._queue.put(None, timeout=timeout)  # after everything queued: waits for room
        except queue.Full:
            logger.warning("API: %d refusals were not audited (edged stopped)", self._queue.qsize())
        self._writer.join(timeout)
        self._writer = None

    def refused(
        self, operation: str, actor: str, role: str, error: EdgedError | None, *, queued: bool
    ) -> None:
        """A record of a refusal (``error`` None: the role), within the rate limit: written now, or,
        ``queued`` (on paho's thread), by the writer thread."""
        if not self._within_limit():
            return
        message = "" if error is None else codec.printable(error.message[:160])
        result = "refused: role" if error is None else f"refused: {error.code}: {message}"
        refusal = _Refusal(operation, actor, role, result)
        if not queued:
            self._write(refusal)
            return
        with self._lock:
            stopped = self._stopped
            if not stopped:
                try:
                    self._queue.put_nowait(refusal)
                    return
                except queue.Full:
                    pass
            self.unaudited += 1
        logger.warning(
            "API: the refusal of a %s request was not audited (%s)",
            operation,
            "edged is stopping" if stopped else f"{self._queue.maxsize} refusals wait to be written",
        )

    def _within_limit(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._minute >= 60.0:
                if self.suppressed_minute:
                    logger.warning(
                        "API: %d refused requests in the last minute were not audited (rate limit)",
                        self.suppressed_minute,
                    )
                self._minute, self._this_minute = now, 0
                self.suppressed_minute = 0
            if self._this_minute >= PER_MINUTE:
                self.unaudited += 1
                self.suppressed_minute += 1
                return False
            self._this_minute += 1
            return True

    def _write_queued(self) -> None:
        while (refusal := self._queue.get()) is not None:
            self._write(refusal)

    def _write(self, refusal: _Refusal) -> None:
        try:
            self.recorder.record(refusal.operation, refusal.actor, refusal.role, {}, refusal.result)
        except Exception:  # the refusal still gets its reply
            logger.exception("API: the refusal of a %s request could not be audited", refusal.operation)
            self._count_unaudited()

    def _count_unaudited(self) -> None:
        with self._lock:
            self.unaudited += 1


def claimed(body: object) -> str:
    """The audit actor of a request refused before its signature verified: ``mqtt:unverified:<client>``
    for the client it claims (when that is a well-formed client ID: not verified, anyone may claim
    it), else ``mqtt:(unsigned or malformed)``."""
    auth = body.get("auth") if isinstance(body, dict) else None
    client = auth.get("client") if isinstance(auth, dict) else None
    return UNVERIFIED + client if isinstance(client, str) and CLIENT_RE.fullmatch(client) else NO_CLIENT
