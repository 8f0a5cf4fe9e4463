"""Reading an image's format and true size before decoding (edged.pipeline.imagehead): every
accepted encoding cv2 writes, the header variants it does not write (crafted byte by byte), the
JPEG marker walk, and every other format refused by name."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from image_helpers import jpeg_bomb, lossless_webp, os2_bmp, vp8x_webp

from edged.errors import ImageError, ImageSizeError
from edged.pipeline.image import decode_image
from edged.pipeline.imagehead import MAX_SCANS, ImageHead, read_head
from edged.types import ImageRGB

Encode = Callable[..., bytes]
WIDTH, HEIGHT = 301, 203  # odd and not square: a swapped or rounded side shows


@pytest.fixture(scope="module")
def crop(astronaut: ImageRGB) -> ImageRGB:
    return np.ascontiguousarray(astronaut[:HEIGHT, :WIDTH])


def channels(rgb: ImageRGB, kind: str) -> ImageRGB:
    if kind == "grey":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if kind == "rgba":
        return np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    return rgb


SAMPLING = cv2.IMWRITE_JPEG_SAMPLING_FACTOR
ENCODINGS = {
    "jpeg-baseline": (".jpg", ()),
    "jpeg-progressive": (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
    "jpeg-restart-1": (".jpg", (cv2.IMWRITE_JPEG_RST_INTERVAL, 1)),
    "jpeg-444-restart-3": (
        ".jpg",
        (SAMPLING, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, cv2.IMWRITE_JPEG_RST_INTERVAL, 3),
    ),
    "jpeg-411-restart-2": (
        ".jpg",
        (SAMPLING, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411, cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
    ),
    "jpeg-progressive-422-restart-5": (
        ".jpg",
        (
            cv2.IMWRITE_JPEG_PROGRESSIVE,
            1,
            SAMPLING,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
            cv2.IMWRITE_JPEG_RST_INTERVAL,
            5,
        ),
    ),
    "png": (".png", ()),
    "bmp": (".bmp", ()),
    "webp-lossy": (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
    "webp-lossless": (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),
}


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba"])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_reads_the_true_size_of_every_encoding_cv2_writes(
    crop: ImageRGB, encode_image: Encode, encoding: str, kind: str
) -> None:
    ext, params = ENCODINGS[encoding]
    blob = encode_image(channels(crop, kind), ext, *params)
    fmt = {".jpg": "jpeg", ".png": "png", ".bmp": "bmp", ".webp": "webp"}[ext]
    assert read_head(blob) == ImageHead(fmt, WIDTH, HEIGHT)
    assert decode_image(blob).shape == (HEIGHT, WIDTH, 3)


# -- JPEG: the marker walk ---------------------------------------------------------------------


def test_jpeg_size_is_found_past_fill_bytes(crop: ImageRGB, encode_image: Encode) -> None:
    jpeg = encode_image(crop, ".jpg")
    sof = jpeg.find(b"\xff\xc0")
    padded = jpeg[:sof] + b"\xff" * 5 + jpeg[sof:]  # fill bytes are legal: no flaw
    assert read_head(padded) == ImageHead("jpeg", WIDTH, HEIGHT)
    assert read_head(jpeg_bomb(20_000, 20_000)) == ImageHead("jpeg", 20_000, 20_000)


@pytest.mark.parametrize("junk", [b"\x00", b"\x12\x34\x56", b"\xff\x00"])
def test_jpeg_size_is_found_past_stray_bytes_which_are_a_flaw(
    crop: ImageRGB, encode_image: Encode, junk: bytes
) -> None:
    jpeg = encode_image(crop, ".jpg")
    dqt = jpeg.find(b"\xff\xdb")
    head = read_head(jpeg[:dqt] + junk + jpeg[dqt:])
    assert (head.width, head.height) == (WIDTH, HEIGHT)
    assert head.flaw is not None and "stray" in head.flaw and "0xDB" in head.flaw
    bomb = read_head(jpeg_bomb(20_000, 20_000, junk))
    assert (bomb.width, bomb.height) == (20_000, 20_000)


@pytest.mark.parametrize("code", [0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF])
def test_every_sof_marker_gives_the_size(crop: ImageRGB, encode_image: Encode, code: int) -> None:
    """Extended, progressive, lossless, hierarchical and arithmetic frame headers all hold the
    size at the same place; the scan after them is not read for it."""
    jpeg = bytearray(encode_image(crop, ".jpg"))
    jpeg[jpeg.find(b"\xff\xc0") + 1] = code
    head = read_head(bytes(jpeg))
    assert (head.kind, head.width, head.height) == ("jpeg", WIDTH, HEIGHT)


def test_jpeg_with_no_frame_header_before_its_scan_is_refused(crop: ImageRGB, encode_image: Encode) -> None:
    jpeg = encode_image(crop, ".jpg")
    sof = jpeg.find(b"\xff\xc0")
    (length,) = struct.unpack(">H", jpeg[sof + 2 : sof + 4])
    with pytest.raises(ImageError, match="scan before the frame header") as caught:
        read_head(jpeg[:sof] + jpeg[sof + 2 + length :], name="no-sof")
    assert "no-sof" in str(caught.value)


def test_jpeg_restart_markers_must_all_be_there(crop: ImageRGB, encode_image: Encode) -> None:
    jpeg = encode_image(crop, ".jpg", cv2.IMWRITE_JPEG_RST_INTERVAL, 2)
    # a scan cut short and re-terminated: libjpeg says "Corrupt JPEG data: premature end of data segment"
    cut = read_head(jpeg[: len(jpeg) // 2] + b"\xff\xd9")
    assert cut.flaw is not None and "restart markers" in cut.flaw
    missing = read_head(jpeg.replace(b"\xff\xd3", b"", 1))
    assert missing.flaw is not None and "restart markers" in missing.flaw
    trailing = read_head(jpeg[:-2] + b"\xff\xd0\xff\xd9")  # one RST after the last interval: tolerated
    assert trailing.flaw is None


@pytest.mark.parametrize(
    ("cut", "fragment"),
    [(0, "it ends before its first scan"), (6, "it ends inside its 0xC0 segment")],
)
def test_jpeg_cut_before_its_size_is_refused(
    crop: ImageRGB, encode_image: Encode, cut: int, fragment: str
) -> None:
    jpeg = encode_image(crop, ".jpg")
    with pytest.raises(ImageError, match=f"image is a truncated JPEG \\({fragment}\\)"):
        read_head(jpeg[: jpeg.find(b"\xff\xc0") + cut])


@pytest.mark.parametrize("cut", [-2, -400])
def test_jpeg_cut_in_its_scan_is_a_flaw(crop: ImageRGB, encode_image: Encode, cut: int) -> None:
    head = read_head(encode_image(crop, ".jpg")[:cut])
    assert (head.width, head.height) == (WIDTH, HEIGHT)
    assert head.flaw == "a truncated JPEG (no end-of-image marker after the scan data)"


# -- BMP, WebP, PNG ----------------------------------------------------------------------------


def test_os2_bmp_header_has_16_bit_sides(crop: ImageRGB) -> None:
    blob = os2_bmp(crop)
    assert read_head(blob) == ImageHead("bmp", WIDTH, HEIGHT)
    assert np.array_equal(decode_image(blob), crop)


def test_top_down_bmp_has_a_negative_height(crop: ImageRGB, encode_image: Encode) -> None:
    bmp = bytearray(encode_image(crop, ".bmp"))
    offset = struct.unpack_from("<I", bmp, 10)[0]
    stride = (WIDTH * 3 + 3) & ~3
    rows = np.frombuffer(bytes(bmp[offset:]), np.uint8)[: stride * HEIGHT].reshape(HEIGHT, stride)
    bmp[offset : offset + stride * HEIGHT] = rows[::-1].tobytes()
    struct.pack_into("<i", bmp, 22, -HEIGHT)
    assert read_head(bytes(bmp)) == ImageHead("bmp", WIDTH, HEIGHT)
    assert np.array_equal(decode_image(bytes(bmp)), crop)


@pytest.mark.parametrize(("size", "fragment"), [(16, "unsupported 16-byte"), (40, "width of -5")])
def test_bmp_headers_the_decoder_cannot_read_are_refused(
    crop: ImageRGB, encode_image: Encode, size: int, fragment: str
) -> None:
    bmp = bytearray(encode_image(crop, ".bmp"))
    struct.pack_into("<I", bmp, 14, size)
    if size == 40:
        struct.pack_into("<i", bmp, 18, -5)
    with pytest.raises(ImageError, match=fragment):
        read_head(bytes(bmp))


def test_lossless_webp_has_14_bit_sides() -> None:
    assert read_head(lossless_webp(16383, 16383)) == ImageHead("webp", 16383, 16383)
    assert read_head(lossless_webp(300, 7)) == ImageHead("webp", 300, 7)
    # the crafted bytes are a real image: this is what a decoder would allocate for 16383²
    assert decode_image(lossless_webp(64, 48)).shape == (48, 64, 3)


def test_extended_webp_canvas_has_24_bit_sides(crop: ImageRGB, encode_image: Encode) -> None:
    lossy = encode_image(crop, ".webp", cv2.IMWRITE_WEBP_QUALITY, 80)
    assert lossy[12:16] == b"VP8 "
    extended = vp8x_webp(lossy, (WIDTH, HEIGHT))
    assert read_head(extended) == ImageHead("webp", WIDTH, HEIGHT)
    assert decode_image(extended).shape == (HEIGHT, WIDTH, 3)
    huge = read_head(vp8x_webp(lossy, (1 << 24, 1 << 24)))
    assert (huge.width, huge.height) == (1 << 24, 1 << 24)
    assert huge.flaw is not None and f"{WIDTH}×{HEIGHT} image" in huge.flaw
    with pytest.raises(ImageSizeError, match="16777216×16777216"):
        decode_image(vp8x_webp(lossy, (1 << 24, 1 << 24)))


def test_animated_webp_is_refused(crop: ImageRGB, encode_image: Encode) -> None:
    lossy = encode_image(crop, ".webp", cv2.IMWRITE_WEBP_QUALITY, 80)
    with pytest.raises(ImageError, match="animated WebP") as caught:
        read_head(vp8x_webp(lossy, (WIDTH, HEIGHT), flags=0x02), name="anim")
    assert str(caught.value).startswith("InvalidImage: anim is an animated WebP")


def test_png_chunks_are_checked_up_to_iend(crop: ImageRGB, encode_image: Encode) -> None:
    png = encode_image(crop, ".png")
    assert read_head(png + b"trailing bytes after IEND").flaw is None
    cut = read_head(png[:-20])
    assert cut.flaw is not None and "truncated PNG" in cut.flaw
    flipped = bytearray(png)
    flipped[100] ^= 0x01
    bad = read_head(bytes(flipped))
    assert bad.flaw == "a corrupt PNG (a bad CRC in its IDAT chunk)"
    assert (bad.width, bad.height) == (WIDTH, HEIGHT)


# -- other formats -----------------------------------------------------------------------------

OTHER_WRITTEN = {  # extension → the name the refusal gives; cv2 writes and decodes each of them
    ".tiff": "a TIFF image",
    ".ppm": "a PNM (PBM/PGM/PPM) image",
    ".pam": "a PAM image",
    ".pfm": "a PFM image",
    ".jp2": "a JPEG 2000 image",
    ".ras": "a Sun raster image",
    ".hdr": "a Radiance HDR image",
    ".gif": "a GIF image",
    ".avif": "an AVIF image",
}


@pytest.mark.parametrize("ext", list(OTHER_WRITTEN))
def test_other_formats_cv2_decodes_are_refused_by_name(crop: ImageRGB, ext: str) -> None:
    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    try:
        ok, encoded = cv2.imencode(ext, bgr)
    except cv2.error:
        ok = False
    if not ok:
        pytest.skip(f"this OpenCV build writes no {ext}")
    blob = encoded.tobytes()
    assert cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR) is not None  # it could decode it
    with pytest.raises(ImageError) as caught:
        decode_image(blob, name=f"photo{ext}")
    assert type(caught.value) is ImageError
    assert str(caught.value) == (
        f"InvalidImage: photo{ext} is {OTHER_WRITTEN[ext]}, not a JPEG, PNG, BMP or WebP image"
    )


@pytest.mark.parametrize(
    ("magic", "label"),
    [
        (b"MM\x00*\x00\x00\x00\x08", "a TIFF image"),
        (b"GIF87a\x10\x00\x10\x00", "a GIF image"),
        (b"\x76\x2f\x31\x01\x02\x00\x00\x00", "an OpenEXR image"),
        (b"\xff\x0a\xfa\x7f", "a JPEG XL codestream"),
        (b"\x00\x00\x00\x18ftypheic", "an ISO media (HEIF/MP4) file"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", "a RIFF file that is not WebP"),
        (b"P1\n16 16\n", "a PNM (PBM/PGM/PPM) image"),
    ],
)
def test_other_formats_by_magic_bytes(magic: bytes, label: str) -> None:
    with pytest.raises(ImageError, match=re.escape(f"is {label}, not a JPEG, PNG, BMP or WebP image")):
        read_head(magic + bytes(64))


def test_a_jpeg_of_too_many_scans_is_a_flaw(crop: ImageRGB, encode_image: Encode) -> None:
    """Thousands of tiny progressive scans keep libjpeg busy for minutes (a pass over the image
    each); real encoders write at most a few dozen."""
    jpeg = encode_image(crop, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    last_scan = jpeg.rfind(b"\xff\xda")
    scans = jpeg.count(b"\xff\xda")
    assert 1 < scans < MAX_SCANS
    assert read_head(jpeg).flaw is None
    many = jpeg[:last_scan] + jpeg[last_scan:-2] * (MAX_SCANS - scans + 2) + b"\xff\xd9"
    head = read_head(many)
    assert (head.width, head.height) == (WIDTH, HEIGHT)
    assert head.flaw == f"a JPEG of more than {MAX_SCANS} scans"


def test_a_jpeg_of_thousands_of_markers_is_refused(crop: ImageRGB, encode_image: Encode) -> None:
    """Six megabytes of empty segments would take the marker walk seconds: real files have dozens."""
    jpeg = encode_image(crop, ".jpg")
    sof = jpeg.find(b"\xff\xc0")
    comments = b"\xff\xfe\x00\x02" * 3000
    with pytest.raises(ImageError, match="a corrupt JPEG \\(more than 2,000 markers\\)"):
        read_head(jpeg[:2] + comments + jpeg[2:])
    after_sof = read_head(jpeg[: sof + 19] + comments + jpeg[sof + 19 :])
    assert (after_sof.width, after_sof.height) == (WIDTH, HEIGHT)
    assert after_sof.flaw == "a corrupt JPEG (more than 2,000 markers)"
    assert read_head(jpeg[:2] + comments[:4000] + jpeg[2:]).flaw is None
