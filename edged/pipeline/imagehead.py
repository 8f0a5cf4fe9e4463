"""What an encoded image is, read from its bytes before a single pixel is decoded.

``read_head`` names the format by its magic bytes and reads the width and height the decoder will
allocate, the way the decoder reads them: the JPEG frame header found by a marker walk that skips
fill bytes and stray bytes as libjpeg does (every SOFn: baseline, extended, progressive, lossless,
arithmetic), the PNG IHDR, the BMP info header (BITMAPINFOHEADER and its successors with 32-bit
sides, a negative height meaning top-down, and the OS/2 BITMAPCOREHEADER with 16-bit sides), the
WebP frame header (lossy VP8, lossless VP8L, the extended VP8X canvas and its image). Only JPEG,
PNG, BMP and WebP are accepted: every other format OpenCV could decode (TIFF, GIF, PNM, JPEG 2000,
AVIF, OpenEXR …) is refused by name, since its dimensions are not checked here.

The head also carries a ``flaw``: what a native decoder would only complain about on stderr
("Corrupt JPEG data: …", "libpng error: …") and then decode anyway or give up on, or would take
minutes over. A JPEG must have its end-of-image marker after the last scan, no bytes where a marker
belongs, where it declares a restart interval the restart markers its scans need, and at most
``MAX_SCANS`` scans; a PNG must have every chunk whole with a good CRC up to IEND. The caller
refuses a flawed image after the size caps, without decoding it. Damage inside entropy-coded data
that keeps this structure intact (a flipped bit in a Huffman code, a JPEG without restart markers
cut short and re-terminated with EOI) is not seen here: libjpeg still prints one line for it.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Literal

from edged.errors import ImageError

__all__ = ["MAX_SCANS", "ImageHead", "read_head"]

Kind = Literal["jpeg", "png", "bmp", "webp"]
_ACCEPTED = "a JPEG, PNG, BMP or WebP image"


@dataclass(frozen=True, slots=True)
class ImageHead:
    """An accepted image's format and size as its header declares them (before any decoding)."""

    kind: Kind
    width: int
    height: int
    flaw: str | None = None
    """Why the decoder would find the stream damaged ("a truncated JPEG (…)"), or None."""


class _Unreadable(Exception):
    """The header cannot be read: the message completes "<name> is …"."""


def read_head(data: bytes, name: str = "image") -> ImageHead:
    """The format, true dimensions and structural flaw of ``data``. Raises ``ImageError`` naming
    ``name`` for a format that is not accepted or a header that cannot be read."""
    try:
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _png(data)
        if data[:2] == b"BM":
            return _bmp(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
    except _Unreadable as exc:
        raise ImageError(f"{name} is {exc}") from None
    other = _other_format(data)
    if other is not None:
        raise ImageError(f"{name} is {other}, not {_ACCEPTED}")
    raise ImageError(f"{name} is not {_ACCEPTED}")


# -- formats OpenCV decodes that edged refuses ---------------------------------------------------

_OTHER_MAGIC = (
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image"),
    (b"\xff\x0a", "a JPEG XL codestream"),
    (b"\x59\xa6\x6a\x95", "a Sun raster image"),
    (b"\x76\x2f\x31\x01", "an OpenEXR image"),
    (b"#?RADIANCE", "a Radiance HDR image"),
    (b"#?RGBE", "a Radiance HDR image"),
    (b"8BPS", "a Photoshop image"),
    (b"RIFF", "a RIFF file that is not WebP"),
)
_PNM = re.compile(rb"P([1-7Ff])\s")


def _other_format(data: bytes) -> str | None:
    """A name for a known image format that edged does not accept ("a TIFF image"), or None."""
    for magic, label in _OTHER_MAGIC:
        if data.startswith(magic):
            return label
    pnm = _PNM.match(data)
    if pnm is not None:
        kind = pnm.group(1)
        return (
            "a PFM image" if kind in b"Ff" else "a PAM image" if kind == b"7" else "a PNM (PBM/PGM/PPM) image"
        )
    if data[4:8] == b"ftyp":
        return "an AVIF image" if data[8:12] in (b"avif", b"avis") else "an ISO media (HEIF/MP4) file"
    return None


# -- JPEG ----------------------------------------------------------------------------------------

_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_LOSSLESS = frozenset((0xC3, 0xC7, 0xCB, 0xCF))
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM and RST0-7 have no length
_SEGMENTS = frozenset((0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)))
_MARKER = re.compile(rb"\xff[^\x00\xff]")  # a marker code after its FF (and any FF fill before it)
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # the first marker after a scan that is not RSTn
_RESTARTS = tuple(bytes((0xFF, code)) for code in range(0xD0, 0xD8))
_UNFINISHED = "no end-of-image marker after the scan data"
_MAX_MARKERS = 2000  # real files have dozens (split ICC/XMP segments, a DHT per progressive scan)
MAX_SCANS = 100
"""Encoders write 1 scan (baseline) to ~10 (progressive); libjpeg makes a pass over the whole image per
scan, so thousands of tiny progressive scans keep a decoder busy for minutes (libjpeg-turbo's
TurboJPEG API has a scan limit for the same reason)."""


@dataclass(frozen=True, slots=True)
class _Frame:
    code: int
    width: int
    height: int
    sampling: dict[int, tuple[int, int]]  # component id → (horizontal, vertical) sampling factors

    def units(self, components: list[int]) -> int:
        """MCUs in a scan of these components: what the restart interval counts (libjpeg's
        per_scan_setup: one component's blocks, or interleaved MCUs)."""
        hmax = max(h for h, _ in self.sampling.values())
        vmax = max(v for _, v in self.sampling.values())
        if len(components) == 1:
            h, v = self.sampling[components[0]]
            return -(-self.width * h // (8 * hmax)) * -(-self.height * v // (8 * vmax))
        return -(-self.width // (8 * hmax)) * -(-self.height // (8 * vmax))


def _jpeg(data: bytes) -> ImageHead:
    """Walk the markers from SOI to EOI as libjpeg's next_marker does (non-FF bytes before a
    marker are stray, FF fill is skipped), skipping the entropy-coded data of each scan. A flaw
    found before the frame header does not stop the walk: the size is still read."""
    frame: _Frame | None = None
    flaw: str | None = None
    restart = 0
    scans = 0
    pos = 2
    for _ in range(_MAX_MARKERS):
        if flaw is not None and frame is not None:
            break
        found = _MARKER.search(data, pos)
        if found is None:
            flaw = flaw or f"a truncated JPEG ({_UNFINISHED if scans else 'it ends before its first scan'})"
            break
        stray = len(data[pos : found.start()].rstrip(b"\xff"))
        code = data[found.start() + 1]
        pos = found.end()
        if stray:
            flaw = flaw or f"a corrupt JPEG ({stray} stray byte(s) before marker 0x{code:02X})"
        if code == 0xD9:  # EOI
            flaw = flaw or (None if scans else "a corrupt JPEG (it ends before its first scan)")
            break
        if code in _STANDALONE:
            continue
        if code == 0xDA and frame is None:
            flaw = flaw or "a corrupt JPEG (a scan before the frame header)"
            break
        if code not in _SOF and code not in _SEGMENTS and code != 0xDA:
            flaw = flaw or f"a corrupt JPEG (unknown marker 0x{code:02X})"
        length = _u16(data, pos)
        if pos + max(length, 2) > len(data):
            flaw = flaw or f"a truncated JPEG (it ends inside its 0x{code:02X} segment)"
            break
        if length < 2:
            flaw = flaw or f"a corrupt JPEG (marker 0x{code:02X} has a length of {length})"
            break
        if code in _SOF:
            if frame is None:
                frame, sof_flaw = _sof(data, pos, length, code)
                flaw = flaw or sof_flaw
            else:
                flaw = flaw or "a corrupt JPEG (a second frame header)"
        elif code == 0xDD and length == 4:
            restart = _u16(data, pos + 2)
        elif code == 0xDA and frame is not None:
            scans += 1
            if scans > MAX_SCANS:
                flaw = f"a JPEG of more than {MAX_SCANS} scans"
                break
            pos, scan_flaw = _scan(data, pos, length, frame, restart, scans)
            flaw = flaw or scan_flaw
            continue
        pos += length
    else:
        flaw = flaw or f"a corrupt JPEG (more than {_MAX_MARKERS:,} markers)"
    if frame is None:
        raise _Unreadable(flaw or "a JPEG without a frame header")
    return ImageHead("jpeg", frame.width, frame.height, flaw)


def _u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _sof(data: bytes, pos: int, length: int, code: int) -> tuple[_Frame | None, str | None]:
    if length < 8:
        return None, f"a corrupt JPEG (a {length}-byte frame header)"
    height, width, count = struct.unpack_from(">HHB", data, pos + 3)
    if count == 0 or length < 8 + 3 * count:
        return None, f"a corrupt JPEG (a frame header of {length} bytes for {count} components)"
    sampling = {}
    for i in range(count):
        component, factors = data[pos + 8 + 3 * i], data[pos + 9 + 3 * i]
        sampling[component] = (max(factors >> 4, 1), max(factors & 0x0F, 1))
    return _Frame(code, width, height, sampling), None


def _scan(
    data: bytes, pos: int, length: int, frame: _Frame, restart: int, number: int
) -> tuple[int, str | None]:
    """Past scan ``number``'s header and entropy-coded data: (where the next marker starts, flaw)."""
    count = data[pos + 2] if length > 2 else 0
    components = list(data[pos + 3 : pos + 3 + 2 * count : 2])
    if not 1 <= count <= 4 or length < 6 + 2 * count or any(c not in frame.sampling for c in components):
        return pos, f"a corrupt JPEG (scan {number} has a bad header)"
    start = pos + length
    end = _SCAN_END.search(data, start)
    if end is None:
        return start, f"a truncated JPEG ({_UNFINISHED})"
    if frame.code not in _LOSSLESS:
        expected = -(-frame.units(components) // restart) - 1 if restart else 0
        found = sum(data.count(marker, start, end.start()) for marker in _RESTARTS)
        if found not in (expected, expected + 1):  # libjpeg tolerates one trailing RST
            return end.start(), (
                f"a truncated or corrupt JPEG (scan {number} has {found} restart markers, not {expected})"
            )
    return end.start(), None


# -- PNG -----------------------------------------------------------------------------------------


def _png(data: bytes) -> ImageHead:
    """IHDR's width and height (read even when its CRC is wrong: the size cap comes first), then
    every chunk's length and CRC up to IEND."""
    if len(data) < 33:
        raise _Unreadable("a truncated PNG (it ends inside its header)")
    if data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise _Unreadable("a corrupt PNG (its first chunk is not a 13-byte IHDR)")
    width, height = struct.unpack_from(">II", data, 16)
    view = memoryview(data)
    flaw = None
    pos = 8
    while True:
        if pos + 12 > len(data):
            flaw = "a truncated PNG (no IEND chunk)"
            break
        length, kind = struct.unpack_from(">I4s", data, pos)
        label = kind.decode("ascii") if kind.isalpha() else kind.hex()
        end = pos + 12 + length
        if end > len(data):
            flaw = f"a truncated PNG (it ends inside its {label} chunk)"
            break
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            flaw = f"a corrupt PNG (a bad CRC in its {label} chunk)"
            break
        if kind == b"IEND":
            break
        pos = end
    return ImageHead("png", width, height, flaw)


# -- BMP -----------------------------------------------------------------------------------------


def _bmp(data: bytes) -> ImageHead:
    """The info header after the 14-byte file header: OS/2 1.x's 12 bytes hold 16-bit unsigned
    sides; 40 bytes and more (and OS/2 2.x's 64) hold 32-bit signed ones. OpenCV reads no other size."""
    if len(data) < 26:
        raise _Unreadable("a truncated BMP (it ends inside its header)")
    (size,) = struct.unpack_from("<I", data, 14)
    if size == 12:
        width, height = struct.unpack_from("<HH", data, 18)
    elif size >= 36:
        width, height = struct.unpack_from("<ii", data, 18)
        if width <= 0:
            raise _Unreadable(f"a corrupt BMP (a width of {width})")
        height = abs(height)  # negative: rows top-down
    else:
        raise _Unreadable(f"a BMP with an unsupported {size}-byte info header")
    return ImageHead("bmp", width, height)


# -- WebP ----------------------------------------------------------------------------------------


def _webp(data: bytes) -> ImageHead:
    """The first chunk: a lossy or lossless bitstream, or VP8X (the canvas, then the bitstream,
    whose size must equal the canvas; an animation is refused)."""
    if len(data) < 30:
        raise _Unreadable("a truncated WebP (it ends inside its header)")
    first = data[12:16]
    if first != b"VP8X":
        return ImageHead("webp", *_webp_frame(data, 12))
    if data[20] & 0x02:
        raise _Unreadable("an animated WebP; only still images are accepted")
    width = int.from_bytes(data[24:27], "little") + 1
    height = int.from_bytes(data[27:30], "little") + 1
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        if kind in (b"VP8 ", b"VP8L"):
            try:
                frame = _webp_frame(data, pos)
            except _Unreadable as exc:
                return ImageHead("webp", width, height, str(exc))
            flaw = (
                None
                if frame == (width, height)
                else f"a corrupt WebP (a {width}×{height} canvas, a {frame[0]}×{frame[1]} image)"
            )
            return ImageHead("webp", width, height, flaw)
        (size,) = struct.unpack_from("<I", data, pos + 4)
        pos += 8 + size + (size & 1)
    return ImageHead("webp", width, height, "a truncated WebP (no image data)")


def _webp_frame(data: bytes, pos: int) -> tuple[int, int]:
    """(width, height) of the VP8 or VP8L chunk at ``pos``."""
    kind, payload = data[pos : pos + 4], pos + 8
    if kind == b"VP8 ":
        if len(data) < payload + 10:
            raise _Unreadable("a truncated WebP (it ends inside its frame header)")
        if data[payload] & 1 or data[payload + 3 : payload + 6] != b"\x9d\x01\x2a":
            raise _Unreadable("a corrupt WebP (no VP8 key frame)")
        width, height = struct.unpack_from("<HH", data, payload + 6)
        return width & 0x3FFF, height & 0x3FFF  # the top two bits are the upscaling hint
    if kind == b"VP8L":
        if len(data) < payload + 5:
            raise _Unreadable("a truncated WebP (it ends inside its frame header)")
        if data[payload] != 0x2F:
            raise _Unreadable("a corrupt WebP (no VP8L signature)")
        (bits,) = struct.unpack_from("<I", data, payload + 1)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise _Unreadable(f"a corrupt WebP (its first chunk is {kind!r})")
