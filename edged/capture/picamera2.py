"""The Raspberry Pi camera through picamera2 (libcamera). Thin on purpose: it cannot run off a Pi.

picamera2 comes from the OS, never from pip: ``apt install python3-picamera2`` and a venv created
with ``--system-site-packages``. It is imported inside ``open()``, so the rest of edged runs
without it.

One video configuration, two streams of the same instant:
- ``lores`` (default 640×480, YUV420 — the only format the low-resolution stream has on a Pi 4 and
  earlier) is converted to RGB and becomes ``Frame.image``, the detection stream;
- ``main`` (default 1280×960, "RGB888", which picamera2 lays out as B, G, R bytes) becomes
  ``Frame.main`` in RGB order, for face crops at full detail.

Frames are taken with ``captured_request()``, a context manager that returns every request to the
camera; both arrays are copied out before it is released. No callbacks are installed (inference
never runs on picamera2's thread). picamera2 raises bare ``RuntimeError``s: they are wrapped in
``CameraError`` here.
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edged.capture.source import Frame, SourceBase, bgr_to_rgb
from edged.errors import CameraError, ConfigError
from edged.types import ImageRGB

__all__ = ["INSTALL_HINT", "Picamera2Source", "yuv420_to_rgb"]

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "picamera2 is not installed: on a Raspberry Pi, apt install python3-picamera2 "
    "and create the venv with --system-site-packages"
)

# what picamera2 and libcamera raise: bare RuntimeErrors, timeouts from capture jobs (a distinct
# class before Python 3.11), and OS errors from the device nodes
_CAMERA_FAILURES = (RuntimeError, TimeoutError, concurrent.futures.TimeoutError, OSError, IndexError)


def yuv420_to_rgb(yuv: npt.NDArray[np.uint8], width: int | None = None) -> ImageRGB:
    """A planar YUV 4:2:0 (I420) frame as picamera2's ``make_array`` returns it → H×W×3 RGB.

    The array is (height × 3/2) rows of ``stride`` bytes: ``height`` rows of Y, then the U plane and
    the V plane, each (height/2) rows of stride/2 bytes packed two to an array row. The stride may
    exceed the width (row padding); converting the padded frame and cropping to ``width`` afterwards
    is exact, because every pixel's chroma sits in the same column block either way. OpenCV decodes
    with the BT.601 limited-range matrix (libcamera's ``Smpte170m`` colour space)."""
    if yuv.ndim != 2 or yuv.dtype != np.uint8:
        raise CameraError(f"a YUV420 frame is a 2-D uint8 array, got {yuv.dtype} with shape {yuv.shape}")
    rows, stride = yuv.shape
    if rows % 3 or (rows * 2 // 3) % 2 or stride % 2:
        raise CameraError(f"a YUV420 frame has (even height × 3/2) rows and an even stride, got {yuv.shape}")
    if width is not None and not 0 < width <= stride:
        raise CameraError(f"YUV420 width {width} does not fit the stride {stride}")
    rgb = cv2.cvtColor(np.ascontiguousarray(yuv), cv2.COLOR_YUV2RGB_I420)
    if width is not None and width < stride:
        rgb = rgb[:, :width]
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _check_size(label: str, size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ConfigError(f"picamera2 {label} size must be positive and even, got {width}×{height}")
    return int(width), int(height)


class Picamera2Source(SourceBase):
    """The Pi camera ``camera`` (0 for the first) at ``fps``, ``lores`` for detection and ``main``
    for crops (each (width, height); lores no larger than main). ``timeout`` bounds the wait for
    one frame, in seconds."""

    def __init__(
        self,
        lores: tuple[int, int] = (640, 480),
        main: tuple[int, int] = (1280, 960),
        fps: float = 15.0,
        camera: int = 0,
        timeout: float = 2.0,
    ) -> None:
        super().__init__()
        self.lores = _check_size("lores", lores)
        self.main = _check_size("main", main)
        if self.lores[0] > self.main[0] or self.lores[1] > self.main[1]:
            raise ConfigError(f"picamera2 lores {self.lores} must not exceed main {self.main}")
        if not fps > 0:
            raise ConfigError(f"picamera2 fps must be positive, got {fps}")
        self.fps = float(fps)
        self.camera = camera
        self.timeout = timeout
        self.name = f"picamera2:{camera}"
        self._picam2: Any = None
        self._lores_width = self.lores[0]

    def open(self) -> None:
        self.close()
        try:
            import libcamera
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(INSTALL_HINT) from exc
        picam2: Any = None
        try:
            picam2 = Picamera2(self.camera)
            frame_us = round(1_000_000 / self.fps)
            config = picam2.create_video_configuration(
                main={"size": self.main, "format": "RGB888"},
                lores={"size": self.lores, "format": "YUV420"},
                # the matrix cv2's YUV420 → RGB conversion assumes (BT.601, limited range)
                colour_space=libcamera.ColorSpace.Smpte170m(),
                controls={"FrameDurationLimits": (frame_us, frame_us)},
                display=None,
                encode=None,
            )
            picam2.configure(config)
            lores_config = picam2.stream_configuration("lores")
            picam2.start()
        except _CAMERA_FAILURES as exc:
            if picam2 is not None:
                self._shutdown(picam2)
            raise CameraError(f"camera {self.name} cannot be opened: {exc}") from exc
        self._lores_width = int(lores_config["size"][0])
        self._picam2 = picam2
        self._count = 0
        logger.info(
            "camera %s: lores %s stride %s, main %s, %.1f fps",
            self.name,
            lores_config["size"],
            lores_config.get("stride"),
            picam2.stream_configuration("main")["size"],
            self.fps,
        )

    def read(self) -> Frame | None:
        if self._picam2 is None:
            raise CameraError(f"camera {self.name} is not open")
        try:
            with self._picam2.captured_request(wait=self.timeout) as request:
                lores = request.make_array("lores")  # copies: safe after the request is released
                main = request.make_array("main")
        except _CAMERA_FAILURES as exc:
            raise CameraError(f"camera {self.name}: read failed: {exc or type(exc).__name__}") from exc
        return self._frame(yuv420_to_rgb(np.asarray(lores, np.uint8), self._lores_width), bgr_to_rgb(main))

    def close(self) -> None:
        if self._picam2 is not None:
            self._shutdown(self._picam2)
        self._picam2 = None

    def _shutdown(self, picam2: Any) -> None:
        for step in ("stop", "close"):
            try:
                getattr(picam2, step)()
            except _CAMERA_FAILURES as exc:
                logger.warning("camera %s: %s failed: %s", self.name, step, exc)
