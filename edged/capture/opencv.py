"""OpenCV capture: a USB/V4L2 camera (index or device path), an RTSP/HTTP stream, or a video file.

This adapter only reports: a device that cannot be opened raises ``CameraError`` from ``open()``,
a failed read of a live device raises it from ``read()``. Reconnecting with backoff is the
supervisor's job. The end of a video file is the end of the stream (``read()`` returns None);
files are read as fast as asked (``ReplaySource`` plays them at a frame rate).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from edged.capture.source import Frame, SourceBase, bgr_to_rgb, redact
from edged.errors import CameraError, ConfigError

__all__ = ["OpenCVSource"]

logger = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")


class OpenCVSource(SourceBase):
    """``device``: a camera index (``0``), a device path (``/dev/video0``,
    ``/dev/v4l/by-id/…``), a stream URL (``rtsp://user:pass@host/path``) or a video file.
    ``width``/``height``/``fps`` are requested from cameras (best effort: the camera may pick the
    nearest mode it has; the result is logged). ``timeout`` bounds opening and each read of a
    network stream, in seconds."""

    def __init__(
        self,
        device: int | str,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__()
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        if isinstance(device, int) and device < 0:
            raise ConfigError(f"camera index must be ≥ 0, got {device}")
        for label, value in (("width", width), ("height", height), ("fps", fps)):
            if value is not None and not value > 0:
                raise ConfigError(f"camera {label} must be positive, got {value}")
        if not timeout > 0:
            raise ConfigError(f"camera timeout must be positive, got {timeout}")
        self.device = device
        self.width, self.height, self.fps = width, height, fps
        self.timeout = timeout
        self.name = f"opencv:{device if isinstance(device, int) else redact(device)}"
        self._capture: cv2.VideoCapture | None = None
        self._is_file = False

    @property
    def is_stream(self) -> bool:
        return isinstance(self.device, str) and self.device.lower().startswith(STREAM_SCHEMES)

    def open(self) -> None:
        self.close()
        device = self.device
        params: list[int] = []
        if isinstance(device, str) and not self.is_stream:
            path = Path(device)
            if not path.exists():
                raise CameraError(f"camera {self.name}: no such device or file")
            self._is_file = path.is_file()
        if self.is_stream:
            ms = int(self.timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        try:
            capture = cv2.VideoCapture(device, cv2.CAP_ANY, params)
        except cv2.error as exc:
            raise CameraError(f"camera {self.name} cannot be opened: {exc}") from exc
        if not capture.isOpened():
            capture.release()
            what = "video file" if self._is_file else "stream" if self.is_stream else "camera"
            raise CameraError(
                f"camera {self.name} cannot be opened: no such {what}, busy, or a format OpenCV cannot read"
            )
        if not self._is_file:
            self._configure(capture)
        self._capture = capture
        self._count = 0

    def _configure(self, capture: cv2.VideoCapture) -> None:
        """Ask for the configured mode and a one-frame driver queue (the freshest frame, not a
        backlog); log what the device actually gives."""
        wanted = (
            (cv2.CAP_PROP_FRAME_WIDTH, self.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
            (cv2.CAP_PROP_FPS, self.fps),
            (cv2.CAP_PROP_BUFFERSIZE, 1),
        )
        for prop, value in wanted:
            if value is not None:
                capture.set(prop, float(value))
        logger.info(
            "camera %s: %dx%d at %.1f fps",
            self.name,
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            capture.get(cv2.CAP_PROP_FPS),
        )

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
        self._capture = None

    def read(self) -> Frame | None:
        if self._capture is None:
            raise CameraError(f"camera {self.name} is not open")
        try:
            ok, bgr = self._capture.read()
        except cv2.error as exc:
            raise CameraError(f"camera {self.name}: read failed: {exc}") from exc
        if not ok or bgr is None or bgr.size == 0:
            if self._is_file:
                return None
            raise CameraError(f"camera {self.name}: read failed (unplugged, stream ended, or timed out)")
        return self._frame(bgr_to_rgb(bgr))
