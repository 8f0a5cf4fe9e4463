"""Images crafted byte by byte for the decoding tests: decompression bombs (a few hundred bytes that
a decoder would turn into gigabytes) and headers OpenCV cannot write (OS/2 BMP, WebP VP8X)."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from edged.types import ImageRGB

LOSSLESS_WEBP_16 = bytes.fromhex("524946461a000000574542505650384c0e0000002f0fc00300071011fd0f4444ff03")
"""A 16×16 black lossless WebP as libwebp writes it (cv2.imencode, quality 101): one colour, so every
Huffman code has a single symbol and a pixel costs no bits at all, whatever the size."""


def lossless_webp(width: int, height: int) -> bytes:
    """``LOSSLESS_WEBP_16`` with its VP8L header's 14-bit sides set: a black width×height image in
    34 bytes (16383×16383 is 805 MB as BGR)."""
    blob = bytearray(LOSSLESS_WEBP_16)
    blob[21:25] = struct.pack("<I", (width - 1) | (height - 1) << 14)
    return bytes(blob)


def jpeg_bomb(width: int, height: int, before_sof: bytes = b"\xff") -> bytes:
    """A 16×16 black baseline JPEG whose frame header says width×height, with ``before_sof`` just
    before its SOF marker: by default one legal fill byte (0xFF), or a stray byte (libjpeg warns
    and decodes anyway). libjpeg fills the missing scan data with grey: all width×height pixels."""
    ok, encoded = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    assert ok
    blob = bytearray(encoded.tobytes())
    sof = blob.find(b"\xff\xc0")
    blob[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(blob[:sof]) + before_sof + bytes(blob[sof:])


def os2_bmp(rgb: ImageRGB) -> bytes:
    """A 24-bit BMP with the OS/2 1.x BITMAPCOREHEADER: 12 bytes, 16-bit width and height, then
    bottom-up BGR rows padded to 4 bytes (OpenCV writes only BITMAPINFOHEADER)."""
    height, width = rgb.shape[:2]
    stride = (width * 3 + 3) & ~3
    rows = np.zeros((height, stride), np.uint8)
    rows[:, : width * 3] = rgb[::-1, :, ::-1].reshape(height, width * 3)
    pixels = rows.tobytes()
    offset = 14 + 12
    file_header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return file_header + struct.pack("<IHHHH", 12, width, height, 1, 24) + pixels


def vp8x_webp(simple: bytes, canvas: tuple[int, int], flags: int = 0) -> bytes:
    """A simple-format WebP (one VP8 or VP8L chunk) rewrapped in the extended format: a VP8X chunk
    declaring ``canvas`` (24-bit sides) and ``flags`` (0x02: animation), then the same bitstream."""
    width, height = canvas
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes((flags, 0, 0, 0))
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + simple[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body
