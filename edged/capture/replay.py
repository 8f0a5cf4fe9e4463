"""Replay: a folder of images or a video file, played at a set frame rate, once or in a loop.

Images are read as bytes and decoded in memory; nothing is written anywhere.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np

from edged.capture.source import Frame, PacedSource, Pacer, bgr_to_rgb
from edged.errors import CameraError
from edged.types import ImageRGB

__all__ = ["IMAGE_SUFFIXES", "ReplaySource"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FOLDER_FPS = 10.0
"""The frame rate of a folder of images when none is given (and of a video that reports none)."""


def _natural_key(path: Path) -> list[int | str]:
    """frame2.png before frame10.png; otherwise by name, case-insensitively."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class ReplaySource(PacedSource):
    """Frames from ``path``: a folder of JPEG/PNG/BMP/WebP images (in natural name order), one image,
    or a video file OpenCV can decode.

    ``fps`` sets the pace (default: the video's own frame rate, or 10 for images); ``fps=0`` plays as
    fast as the reader asks. ``loop=True`` starts again after the last frame; otherwise ``read()``
    returns None there. ``Frame.index`` keeps counting across loops."""

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None, loop: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        self.name = f"replay:{self.path}"
        self._requested_fps = fps
        self._pacer = Pacer(fps if fps is not None else FOLDER_FPS)  # validates fps; set again by open()
        self._files: list[Path] = []
        self._position = 0
        self._video: cv2.VideoCapture | None = None
        self._pending: np.ndarray | None = None
        self._open = False

    @property
    def is_video(self) -> bool:
        return self._video is not None

    def open(self) -> None:
        self.close()
        path = self.path
        if not path.exists():
            raise CameraError(f"replay source {path} does not exist")
        native_fps = FOLDER_FPS
        if path.is_dir():
            try:
                entries = list(path.iterdir())
            except OSError as exc:
                raise CameraError(f"replay folder {path} cannot be listed: {exc.strerror or exc}") from exc
            files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
            if not files:
                raise CameraError(
                    f"replay folder {path} holds no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})"
                )
            self._files = sorted(files, key=_natural_key)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            self._files = [path]
        else:
            self._video, self._pending = self._open_video()
            reported = float(self._video.get(cv2.CAP_PROP_FPS))
            if math.isfinite(reported) and reported > 0:
                native_fps = reported
        self._pacer = Pacer(native_fps if self._requested_fps is None else self._requested_fps)
        self._position = 0
        self._count = 0
        self._open = True
        logger.info(
            "replay %s: %s at %.2f fps%s",
            path,
            "video" if self._video is not None else f"{len(self._files)} image(s)",
            self._pacer.fps,
            ", looping" if self.loop else "",
        )

    def _open_video(self) -> tuple[cv2.VideoCapture, np.ndarray]:
        """The opened video and its first frame: a file OpenCV cannot decode fails here, at open()."""
        video = cv2.VideoCapture(str(self.path))
        if not video.isOpened():
            video.release()
            raise CameraError(
                f"replay source {self.path} cannot be opened as a video "
                "(not a video file, or a format OpenCV's FFmpeg cannot decode)"
            )
        ok, first = video.read()
        if not ok or first is None:
            video.release()
            raise CameraError(f"replay source {self.path} opened as a video but no frame could be decoded")
        return video, first

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
        self._video = None
        self._pending = None
        self._files = []
        self._open = False

    def read(self) -> Frame | None:
        if not self._open:
            raise CameraError(f"{self.name} is not open")
        image = self._next_video_frame() if self._video is not None else self._next_image()
        if image is None:
            return None
        self._pacer.wait()
        return self._frame(image)

    def _next_image(self) -> ImageRGB | None:
        if self._position >= len(self._files):
            if not self.loop:
                return None
            self._position = 0
        path = self._files[self._position]
        self._position += 1
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CameraError(f"replay image {path} cannot be read: {exc.strerror or exc}") from exc
        try:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        except cv2.error:
            bgr = None
        if bgr is None or bgr.size == 0:
            raise CameraError(f"replay image {path} is not a readable JPEG, PNG, BMP or WebP image")
        return bgr_to_rgb(bgr)

    def _next_video_frame(self) -> ImageRGB | None:
        assert self._video is not None
        if self._pending is not None:
            bgr, self._pending = self._pending, None
            return bgr_to_rgb(bgr)
        ok, bgr = self._video.read()
        if ok and bgr is not None:
            return bgr_to_rgb(bgr)
        if not self.loop:
            return None
        # rewinding by reopening works for every container, seekable or not
        self._video.release()
        self._video, bgr = self._open_video()
        return bgr_to_rgb(bgr)
