"""Between the camera and the worker: a one-slot latest-frame buffer, and the capture thread that
fills it.

The camera never waits for the worker. When the worker is busy, the frame it has not taken yet is
replaced by a newer one and counted as dropped: the worker always sees the freshest frame, and the
``dropped`` counter tells how far behind it runs.
"""

from __future__ import annotations

import logging
import threading

from edged.capture.source import Frame, FrameSource
from edged.errors import CameraError

__all__ = ["CaptureThread", "LatestFrame"]

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


class CaptureThread(threading.Thread):
    """Opens ``source``, reads frames into ``buffer`` until ``stop_event`` is set, the stream ends,
    or the source fails, and closes the source whatever happens.

    A read that raises ``CameraError`` is counted in ``read_errors``; after ``max_consecutive_errors``
    in a row the thread gives up. ``error`` keeps the last ``CameraError`` (a failed open, the read
    error that ended the thread, or an unexpected exception wrapped in one) for the supervisor, which
    decides whether and when to start a new thread. ``ended`` tells a finite source ran out. The
    buffer is left open: it belongs to whoever made it."""

    def __init__(
        self,
        source: FrameSource,
        buffer: LatestFrame,
        stop_event: threading.Event,
        max_consecutive_errors: int = 3,
    ) -> None:
        super().__init__(name=f"capture-{source.name}", daemon=True)
        if max_consecutive_errors < 1:
            raise ValueError(f"max_consecutive_errors must be ≥ 1, got {max_consecutive_errors}")
        self.source = source
        self.buffer = buffer
        self.stop_event = stop_event
        self.max_consecutive_errors = max_consecutive_errors
        self.frames = 0
        self.read_errors = 0
        self.ended = False
        self.error: CameraError | None = None

    def run(self) -> None:
        name = self.source.name
        try:
            self.source.open()
            logger.info("capture %s: started", name)
            self._loop()
        except CameraError as exc:
            self.error = exc
            logger.error("capture %s: %s", name, exc.message)
        except Exception as exc:  # a bug in a source: report it like a camera failure, never die silently
            self.error = CameraError(f"{name}: unexpected {type(exc).__name__}: {exc}")
            logger.exception("capture %s: unexpected failure", name)
        finally:
            try:
                self.source.close()
            except Exception:
                logger.exception("capture %s: close failed", name)
            logger.info(
                "capture %s: stopped after %d frames (%d read errors)%s",
                name,
                self.frames,
                self.read_errors,
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
