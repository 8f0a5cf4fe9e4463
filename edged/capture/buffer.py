"""Between the camera and the worker: a one-slot latest-frame buffer, and the capture thread that
fills it.

The camera never waits for the worker. When the worker is busy, the frame it has not taken yet is
replaced by a newer one and counted as dropped: the worker always sees the freshest frame, and the
``dropped`` counter tells how far behind it runs.
"""

from __future__ import annotations

import logging
import threading
import time

from edged.capture.source import Frame, FrameSource
from edged.errors import CameraError

__all__ = ["RESTART_DELAY_S", "RESTART_STABLE_S", "CaptureThread", "LatestFrame"]

logger = logging.getLogger(__name__)


class LatestFrame:
    """A one-slot buffer: ``put()`` never blocks and overwrites, ``get()`` waits for a frame newer
    than the last one taken. Every frame put is eventually delivered or dropped (a frame still
    waiting when the buffer is closed counts as dropped). Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._put = 0
        self._dropped = 0
        self._delivered = 0

    def put(self, frame: Frame) -> None:
        """Offer the newest frame; an unread older one is dropped. Once closed, the frame is dropped."""
        with self._cond:
            if self._closed:
                self._put += 1
                self._dropped += 1
                return
            if self._frame is not None:
                self._dropped += 1
            self._frame = frame
            self._put += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken, waiting up to ``timeout`` seconds (None: until one comes
        or the buffer is closed). None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            if self._closed or self._frame is None:
                return None
            frame, self._frame = self._frame, None
            self._delivered += 1
            return frame

    def close(self) -> None:
        """Wake every waiting ``get()``; from now on ``get()`` returns None and ``put()`` drops."""
        with self._cond:
            if self._frame is not None:
                self._dropped += 1
                self._frame = None
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    @property
    def dropped(self) -> int:
        """Frames overwritten (or closed out) before anyone took them."""
        with self._cond:
            return self._dropped

    @property
    def delivered(self) -> int:
        """Frames handed out by ``get()``."""
        with self._cond:
            return self._delivered

    @property
    def received(self) -> int:
        """Frames ``put()`` so far."""
        with self._cond:
            return self._put


RESTART_DELAY_S = 0.5
"""The first wait before a failed source is re-opened; it doubles on every failure in a row."""
RESTART_STABLE_S = 10.0
"""A source that delivered frames for this long after (re)opening counts as recovered: the next
failure waits ``restart_delay_s`` again instead of the doubled delay."""


class CaptureThread(threading.Thread):
    """Opens ``source``, reads frames into ``buffer`` until ``stop_event`` is set, the stream ends,
    or the source fails, and closes the source whatever happens.

    A read that raises ``CameraError`` is counted in ``read_errors``; ``max_consecutive_errors`` in a
    row make the source *failed*, as does an open that raises. Then:

    - ``restart_max_delay_s=None`` (the default): the thread ends; ``error`` keeps the ``CameraError``
      (a failed open, the read error that ended it, or an unexpected exception wrapped in one) and the
      supervisor decides what to do;
    - otherwise the thread is its own supervisor: it closes the source, waits ``restart_delay_s``
      (doubling after every failure in a row, capped at ``restart_max_delay_s``; back to the first
      delay once a re-opened source has delivered frames for ``restart_stable_s``) and opens it
      again, for as long as it takes. The wait ends at once when ``stop_event`` is set. Each failure
      is one log line (what failed, the restart number and the delay); ``restarts`` counts the
      re-opens attempted, ``failures`` the failures, and ``down`` is true from a failure until the
      source opens again.

    A finite source that ends (``read()`` returns None) is never restarted: ``ended`` is set and the
    thread ends. The buffer is left open: it belongs to whoever made it."""

    def __init__(
        self,
        source: FrameSource,
        buffer: LatestFrame,
        stop_event: threading.Event,
        max_consecutive_errors: int = 3,
        *,
        restart_max_delay_s: float | None = None,
        restart_delay_s: float = RESTART_DELAY_S,
        restart_stable_s: float = RESTART_STABLE_S,
    ) -> None:
        super().__init__(name=f"capture-{source.name}", daemon=True)
        if max_consecutive_errors < 1:
            raise ValueError(f"max_consecutive_errors must be ≥ 1, got {max_consecutive_errors}")
        if restart_max_delay_s is not None and not restart_max_delay_s > 0:
            raise ValueError(f"restart_max_delay_s must be None or > 0, got {restart_max_delay_s}")
        if not restart_delay_s > 0 or not restart_stable_s >= 0:
            raise ValueError(
                f"restart_delay_s must be > 0 and restart_stable_s ≥ 0, "
                f"got {restart_delay_s} and {restart_stable_s}"
            )
        self.source = source
        self.buffer = buffer
        self.stop_event = stop_event
        self.max_consecutive_errors = max_consecutive_errors
        self.restart_max_delay_s = restart_max_delay_s
        self.restart_delay_s = (
            restart_delay_s if restart_max_delay_s is None else min(restart_delay_s, restart_max_delay_s)
        )
        self.restart_stable_s = restart_stable_s
        self.frames = 0
        self.read_errors = 0
        self.restarts = 0
        self.failures = 0
        self.down = False
        self.ended = False
        self.error: CameraError | None = None

    def run(self) -> None:
        name = self.source.name
        delay = self.restart_delay_s
        try:
            while True:
                opened_at: float | None = None
                frames_before = self.frames
                try:
                    self.source.open()
                    opened_at = time.monotonic()
                    self.down = False
                    if self.restarts:
                        logger.info("capture %s: re-opened (restart %d)", name, self.restarts)
                    else:
                        logger.info("capture %s: started", name)
                    self._loop()
                    return  # stopped, or the end of a finite stream
                except CameraError as exc:
                    self.error = exc
                    bug: Exception | None = None
                except Exception as exc:  # a bug in a source: report it like a camera failure
                    self.error = CameraError(f"{name}: unexpected {type(exc).__name__}: {exc}")
                    bug = exc  # logged with its traceback
                finally:
                    try:
                        self.source.close()
                    except Exception:
                        logger.exception("capture %s: close failed", name)
                self.failures += 1
                self.down = True
                assert self.error is not None
                if self.restart_max_delay_s is None or self.stop_event.is_set():
                    logger.error("capture %s: %s", name, self.error.message, exc_info=bug)
                    return
                if (
                    opened_at is not None
                    and self.frames > frames_before
                    and time.monotonic() - opened_at >= self.restart_stable_s
                ):
                    delay = self.restart_delay_s  # it ran well: a new failure, not the same one
                logger.error(
                    "capture %s: %s; restart %d in %g s",
                    name,
                    self.error.message,
                    self.restarts + 1,
                    delay,
                    exc_info=bug,
                )
                if self.stop_event.wait(delay):
                    return
                self.restarts += 1
                delay = min(2.0 * delay, self.restart_max_delay_s)
        finally:
            logger.info(
                "capture %s: stopped after %d frames (%d read errors, %d restarts)%s",
                name,
                self.frames,
                self.read_errors,
                self.restarts,
                ", end of stream" if self.ended else "",
            )

    def _loop(self) -> None:
        consecutive = 0
        while not self.stop_event.is_set():
            try:
                frame = self.source.read()
            except CameraError as exc:
                self.read_errors += 1
                consecutive += 1
                self.error = exc
                if consecutive >= self.max_consecutive_errors:
                    raise
                logger.warning("capture %s: %s", self.source.name, exc.message)
                continue
            consecutive = 0
            if frame is None:
                self.ended = True
                return
            self.buffer.put(frame)
            self.frames += 1
