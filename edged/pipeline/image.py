"""Decoding request and file images in memory, with the size caps of the cloud face APIs.

Nothing here writes to disk: images arrive as bytes and leave as an RGB array.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from edged.errors import ImageError, ImageSizeError
from edged.pipeline.imagehead import read_head
from edged.strict import Strict
from edged.types import ImageRGB

__all__ = ["ImageLimits", "decode_image", "read_image"]


class ImageLimits(Strict):
    """Caps on request and file images (decoded in memory only)."""

    max_bytes: int = Field(6 * 1024 * 1024, ge=1024, le=6 * 1024 * 1024, description="largest encoded image")
    max_pixels: int = Field(4096 * 4096, ge=36 * 36, description="largest decoded width × height")
    min_side: int = Field(36, ge=1, description="smallest decoded width or height")


def decode_image(data: bytes, limits: ImageLimits | None = None, name: str = "image") -> ImageRGB:
    """JPEG, PNG, BMP or WebP bytes → H×W×3 uint8 RGB. Grayscale is expanded, alpha dropped, EXIF
    orientation applied. The header's true size is checked against the caps, and a stream the
    decoder would find damaged is refused, before anything is decoded (imagehead.py). Errors name
    the image and what was wrong."""
    limits = limits or ImageLimits()
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageSizeError(f"{name} is {len(data):,} bytes; the limit is {limits.max_bytes:,}")
    head = read_head(data, name)
    w, h = head.width, head.height
    if w * h > limits.max_pixels:
        raise ImageSizeError(f"{name} is {w}×{h} = {w * h:,} pixels; the limit is {limits.max_pixels:,}")
    if min(w, h) < limits.min_side:
        raise ImageSizeError(f"{name} is {w}×{h}; each side must be at least {limits.min_side} pixels")
    if head.flaw is not None:
        raise ImageError(f"{name} is {head.flaw}")
    buffer = np.frombuffer(data, np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(
            f"{name} could not be decoded as {head.kind}: {exc.msg if hasattr(exc, 'msg') else exc}"
        ) from exc
    if bgr is None or bgr.size == 0:
        raise ImageError(f"{name} is a corrupt or truncated {head.kind} file")
    dh, dw = bgr.shape[:2]
    if (dw, dh) not in ((w, h), (h, w)):  # (h, w): turned by its EXIF orientation
        raise ImageError(f"{name} decoded to {dw}×{dh}, not the {w}×{h} its {head.kind} header declares")
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
