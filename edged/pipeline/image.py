"""Decoding request and file images in memory, with the size caps of the cloud face APIs.

Nothing here writes to disk: images arrive as bytes and leave as an RGB array.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from edged.errors import ImageError, ImageSizeError
from edged.strict import Strict
from edged.types import ImageRGB

__all__ = ["ImageLimits", "decode_image", "header_size", "read_image"]


class ImageLimits(Strict):
    """Caps on request and file images (decoded in memory only)."""

    max_bytes: int = Field(6 * 1024 * 1024, ge=1024, le=6 * 1024 * 1024, description="largest encoded image")
    max_pixels: int = Field(4096 * 4096, ge=36 * 36, description="largest decoded width × height")
    min_side: int = Field(36, ge=1, description="smallest decoded width or height")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def header_size(data: bytes) -> tuple[str, tuple[int, int] | None]:
    """The format and (width, height) read from the header, before any pixel is decoded, so a
    decompression bomb is refused without allocating it."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg", _jpeg_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return "png", (w, h)
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return "bmp", (abs(w), abs(h))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", None
    return "unknown", None


def decode_image(data: bytes, limits: ImageLimits | None = None, name: str = "image") -> ImageRGB:
    """JPEG, PNG, BMP or WebP bytes → H×W×3 uint8 RGB. Grayscale is expanded, alpha dropped, EXIF
    orientation applied. Errors name the image and what was wrong."""
    limits = limits or ImageLimits()
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageSizeError(f"{name} is {len(data):,} bytes; the limit is {limits.max_bytes:,}")
    kind, dims = header_size(data)
    if kind == "unknown":
        raise ImageError(f"{name} is not a JPEG, PNG, BMP or WebP image")
    if dims is not None:
        w, h = dims
        if w * h > limits.max_pixels:
            raise ImageSizeError(f"{name} is {w}×{h} = {w * h:,} pixels; the limit is {limits.max_pixels:,}")
    if kind == "jpeg" and data.rfind(b"\xff\xd9") < data.find(b"\xff\xda"):
        raise ImageError(f"{name} is a truncated JPEG (no end-of-image marker after the scan data)")
    buffer = np.frombuffer(data, np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(
            f"{name} could not be decoded as {kind}: {exc.msg if hasattr(exc, 'msg') else exc}"
        ) from exc
    if bgr is None or bgr.size == 0:
        raise ImageError(f"{name} is a corrupt or truncated {kind} file")
    h, w = bgr.shape[:2]
    if w * h > limits.max_pixels:
        raise ImageSizeError(f"{name} is {w}×{h} = {w * h:,} pixels; the limit is {limits.max_pixels:,}")
    if min(w, h) < limits.min_side:
        raise ImageSizeError(f"{name} is {w}×{h}; each side must be at least {limits.min_side} pixels")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def read_image(path: Path, limits: ImageLimits | None = None) -> ImageRGB:
    """Read an image file into memory and decode it (the CLI's entry; the daemon gets bytes)."""
    limits = limits or ImageLimits()
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageSizeError(f"{path} is {size:,} bytes; the limit is {limits.max_bytes:,}")
        data = path.read_bytes()
    except IsADirectoryError as exc:
        raise ImageError(f"{path} is a directory, not an image") from exc
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return decode_image(data, limits, name=str(path))
