"""Capture: where frames come from (adapters layer).

    FrameSource (source.py)      open() / read() -> Frame | None / close(), a context manager
    ├── Picamera2Source          the Pi camera: lores YUV420 stream for detection, main for crops
    ├── OpenCVSource             USB/V4L2 camera, RTSP/HTTP stream, video file
    ├── ReplaySource             a folder of images or a video at a set frame rate, once or looping
    └── DemoSource               the built-in door scene (scikit-image's public-domain photographs)
    LatestFrame, CaptureThread   the one-slot latest-frame buffer and the thread that fills it

``make_source(spec)`` picks the adapter from one string, as the configuration and the CLI give it.
Only numpy and OpenCV are imported here; picamera2 and scikit-image are imported by the source
that needs them, when it opens.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.capture.buffer import CaptureThread, LatestFrame
from edged.capture.demo import DemoSource
from edged.capture.opencv import STREAM_SCHEMES, OpenCVSource
from edged.capture.picamera2 import Picamera2Source
from edged.capture.replay import ReplaySource
from edged.capture.source import CameraSettings, Frame, FrameSource, redact
from edged.errors import CameraError, ConfigError

__all__ = [
    "CameraError",
    "CameraSettings",
    "CaptureThread",
    "DemoSource",
    "Frame",
    "FrameSource",
    "LatestFrame",
    "OpenCVSource",
    "Picamera2Source",
    "ReplaySource",
    "make_source",
]

if TYPE_CHECKING:  # every adapter satisfies the interface (checked by mypy)
    _ADAPTERS: tuple[type[FrameSource], ...] = (DemoSource, OpenCVSource, Picamera2Source, ReplaySource)

SPEC_HELP = (
    "expected 'demo', 'picamera2', a camera index (0) or device path (/dev/video0), "
    "an rtsp:// or http(s):// URL, a video file, or a folder of images"
)


def _build(cls: type[Any], spec: str, *args: Any, **kw: Any) -> FrameSource:
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise ConfigError(
            f"frame source {spec!r} ({cls.__name__}) takes no option {', '.join(unknown)}; "
            f"it takes {', '.join(p for p in accepted if p not in ('path', 'device'))}"
        )
    source: FrameSource = cls(*args, **kw)
    return source


def make_source(spec: str | int, **kw: Any) -> FrameSource:
    """The frame source ``spec`` names, built with ``kw`` (the options of that source):

    - ``"demo"`` → ``DemoSource``; ``"picamera2"`` → ``Picamera2Source``;
    - a camera index (``0``, ``"0"``), a ``/dev/…`` device, an ``rtsp://``, ``rtsps://``, ``rtmp://``,
      ``http://`` or ``https://`` URL → ``OpenCVSource``;
    - an existing folder, image or video file → ``ReplaySource``.

    Nothing is opened yet. Anything else is a ``CameraError`` that says what was expected."""
    if isinstance(spec, int):
        return _build(OpenCVSource, str(spec), spec, **kw)
    text = spec.strip()
    if text == "demo":
        return _build(DemoSource, text, **kw)
    if text == "picamera2":
        return _build(Picamera2Source, text, **kw)
    if text.isdigit():
        return _build(OpenCVSource, text, int(text), **kw)
    if text.lower().startswith(STREAM_SCHEMES) or text.startswith("/dev/"):
        return _build(OpenCVSource, redact(text), text, **kw)
    if "://" in text:
        raise CameraError(f"frame source {redact(text)!r}: unsupported URL scheme; {SPEC_HELP}")
    if not text:
        raise CameraError(f"frame source is empty; {SPEC_HELP}")
    path = Path(text).expanduser()
    if path.exists():
        return _build(ReplaySource, text, path, **kw)
    raise CameraError(
        f"frame source {text!r} is not a known source nor an existing file or folder; {SPEC_HELP}"
    )
