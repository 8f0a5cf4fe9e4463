"""What every frame source delivers, the interface the capture thread reads through, and the
pacing shared by the sources that play at a set frame rate."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from edged.errors import ConfigError
from edged.strict import Strict
from edged.types import ImageRGB

__all__ = ["CameraSettings", "Frame", "FrameSource", "Pacer", "SourceBase", "bgr_to_rgb", "redact"]


class CameraSettings(Strict):
    """Where the door daemon's frames come from."""

    source: str = Field(
        "demo",
        min_length=1,
        description="frame source: demo, picamera2, a camera index or /dev/video*, an rtsp:// or "
        "http(s):// URL, a video file or a folder of images (edged.capture.make_source)",
    )
    fps: float | None = Field(
        None, gt=0, le=120, description="frame rate to pace the source at (null: the source's own)"
    )
    restart_max_delay_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="a failed camera (open or read) is closed and re-opened after 0.5 s, the wait "
        "doubling on each failure in a row up to this many seconds; 0: never (the daemon stops)",
    )


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame.

    ``image`` is the H×W×3 uint8 RGB detection stream; ``main`` a higher-resolution RGB view of the
    same instant to crop faces from (picamera2's main stream), or None when the source has only one
    stream; ``index`` counts the frames read since ``open()`` (from 0); ``timestamp`` is
    ``time.monotonic()`` when the frame was captured."""

    image: ImageRGB = field(repr=False)
    main: ImageRGB | None = field(repr=False)
    index: int
    timestamp: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``image``."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@runtime_checkable
class FrameSource(Protocol):
    """A camera, a video, a folder of images or the built-in demo.

    ``open()`` acquires the device (raising ``CameraError`` when it cannot), ``read()`` returns the
    next frame or None at the end of a finite stream (raising ``CameraError`` when a read fails),
    ``close()`` releases everything and may be called more than once. Reconnecting is not the
    source's job: it reports, and the supervisor decides."""

    name: str

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


_Source = TypeVar("_Source", bound="SourceBase")


class SourceBase:
    """``with source:`` opens and closes; ``_frame()`` numbers and timestamps what ``read()`` returns."""

    name: str = "source"

    def __init__(self) -> None:
        self._count = 0

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Source) -> _Source:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def _frame(self, image: ImageRGB, main: ImageRGB | None = None) -> Frame:
        frame = Frame(image, main, self._count, time.monotonic())
        self._count += 1
        return frame


class Pacer:
    """Releases frames at ``fps`` on ``time.monotonic()``: ``wait()`` sleeps until the next frame is
    due. A late frame is not made up for with a burst: the schedule restarts from now. ``fps=0``
    never sleeps. ``waited`` is the total time slept, in seconds."""

    def __init__(self, fps: float) -> None:
        if not fps >= 0:  # also rejects NaN
            raise ConfigError(f"fps must be 0 (as fast as possible) or positive, got {fps}")
        self.fps = float(fps)
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.waited = 0.0
        self._due: float | None = None

    def reset(self) -> None:
        self._due = None

    def wait(self) -> None:
        if self.period == 0.0:
            return
        now = time.monotonic()
        if self._due is not None and self._due > now:
            delay = self._due - now
            time.sleep(delay)
            self.waited += delay
            now = self._due
        self._due = now + self.period


def bgr_to_rgb(image: npt.NDArray[Any]) -> ImageRGB:
    """What OpenCV decodes (BGR, BGRA or grey) → a fresh C-contiguous RGB array."""
    if image.ndim == 2:
        code = cv2.COLOR_GRAY2RGB
    elif image.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB
    else:
        code = cv2.COLOR_BGR2RGB
    return np.asarray(cv2.cvtColor(image, code), dtype=np.uint8)


def redact(spec: str) -> str:
    """A source spec fit for logs and error messages: a URL loses its password and its query string,
    where cameras often take credentials (``rtsp://door:secret@cam/live?token=x`` →
    ``rtsp://door:***@cam/live?***``); anything else is unchanged."""
    if "://" not in spec:
        return spec
    try:
        parts = urlsplit(spec)
    except ValueError:
        return spec.split("://", 1)[0] + "://***"
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        parts = parts._replace(query="***")
    return urlunsplit(parts)


class PacedSource(SourceBase):
    """A source that paces itself with ``self._pacer`` (set by the subclass)."""

    _pacer: Pacer

    @property
    def fps(self) -> float:
        """The pace in frames per second (0: unpaced)."""
        return self._pacer.fps

    @property
    def waited(self) -> float:
        """Seconds spent sleeping to keep the frame rate."""
        return self._pacer.waited
