"""In-memory decoding (edged.pipeline.image): formats, channel handling, EXIF orientation, and every
kind of bad input, which must raise ImageError / ImageSizeError naming the image."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.errors import EdgedError, ImageError, ImageSizeError
from edged.pipeline.image import ImageLimits, decode_image, header_size, read_image
from edged.pipeline.pipeline import FacePipeline
from edged.types import ImageRGB

Encode = Callable[..., bytes]


def png_with_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR width/height patched (the chunk CRC is left stale on purpose)."""
    patched = bytearray(png)
    patched[16:24] = struct.pack(">II", width, height)
    return bytes(patched)


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its start-of-frame height/width patched."""
    patched = bytearray(jpeg)
    i = 2
    while True:
        marker = patched[i + 1]
        (length,) = struct.unpack(">H", patched[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2):
            patched[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(patched)
        i += 2 + length


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 Exif segment holding only the orientation tag (0x0112)."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0\0\0\0"
    payload = b"Exif\0\0" + b"MM\0*\0\0\0\x08" + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.fixture(scope="module")
def astronaut_png(astronaut: ImageRGB, encode_image: Encode) -> bytes:
    return encode_image(astronaut, ".png")


@pytest.fixture(scope="module")
def astronaut_jpeg(astronaut: ImageRGB, encode_image: Encode) -> bytes:
    return encode_image(astronaut, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)


# ---------------------------------------------------------------------------------------------
# good input


@pytest.mark.parametrize(
    ("ext", "params", "max_mean_error"),
    [
        (".png", (), 0.0),
        (".bmp", (), 0.0),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101), 0.0),  # quality > 100 is lossless WebP
        (".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95), 2.0),
    ],
)
def test_decodes_each_format_to_contiguous_rgb(
    astronaut: ImageRGB, encode_image: Encode, ext: str, params: tuple[int, ...], max_mean_error: float
) -> None:
    decoded = decode_image(encode_image(astronaut, ext, *params))
    assert decoded.shape == astronaut.shape
    assert decoded.dtype == np.uint8
    assert decoded.flags["C_CONTIGUOUS"]
    error = np.abs(decoded.astype(np.int16) - astronaut).mean()
    assert error <= max_mean_error, f"{ext}: mean error {error:.2f} (channels swapped?)"


def test_grayscale_png_is_expanded_to_rgb_and_its_face_detected(
    pipeline: FacePipeline, astronaut: ImageRGB, encode_image: Encode
) -> None:
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    decoded = decode_image(encode_image(grey, ".png"))
    assert decoded.shape == (*grey.shape, 3)
    assert np.array_equal(decoded[..., 0], grey)
    assert np.array_equal(decoded[..., 1], grey)
    assert np.array_equal(decoded[..., 2], grey)
    detections = pipeline.detect(decoded)
    assert len(detections) == 1, f"{len(detections)} faces in the grey portrait"


@pytest.mark.parametrize("alpha", [255, 0, "random"])
def test_rgba_png_drops_alpha(astronaut: ImageRGB, encode_image: Encode, alpha: int | str) -> None:
    rgba = np.dstack([astronaut, np.zeros(astronaut.shape[:2], np.uint8)])
    rgba[..., 3] = (
        np.random.default_rng(0).integers(0, 256, astronaut.shape[:2]) if alpha == "random" else alpha
    )
    decoded = decode_image(encode_image(rgba, ".png"))
    assert decoded.shape == astronaut.shape
    assert np.array_equal(decoded, astronaut)


def test_16_bit_png_is_reduced_to_8_bit(astronaut: ImageRGB) -> None:
    deep = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    ok, buffer = cv2.imencode(".png", deep)
    assert ok
    decoded = decode_image(buffer.tobytes())
    assert decoded.dtype == np.uint8
    assert np.array_equal(decoded, astronaut)


@pytest.mark.parametrize(("orientation", "quarter_turns"), [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(
    astronaut: ImageRGB, encode_image: Encode, orientation: int, quarter_turns: int
) -> None:
    landscape = np.ascontiguousarray(astronaut[64:448])  # 512 wide × 384 high: a turn shows in the shape
    jpeg = encode_image(landscape, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    upright = decode_image(jpeg)
    decoded = decode_image(with_exif_orientation(jpeg, orientation))
    assert np.array_equal(decoded, np.rot90(upright, quarter_turns))


def test_read_image_reads_a_file(tmp_path: Path, astronaut: ImageRGB, astronaut_png: bytes) -> None:
    path = tmp_path / "astronaut.png"
    path.write_bytes(astronaut_png)
    assert np.array_equal(read_image(path), astronaut)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("png", ("png", (512, 512))),
        ("jpeg", ("jpeg", (512, 512))),
        ("bmp", ("bmp", (512, 512))),
        ("webp", ("webp", None)),
        ("text", ("unknown", None)),
    ],
)
def test_header_size_reads_dimensions_without_decoding(
    astronaut: ImageRGB, encode_image: Encode, kind: str, expected: tuple[str, tuple[int, int] | None]
) -> None:
    blobs = {
        "png": lambda: encode_image(astronaut, ".png"),
        "jpeg": lambda: encode_image(astronaut, ".jpg"),
        "bmp": lambda: encode_image(astronaut, ".bmp"),
        "webp": lambda: encode_image(astronaut, ".webp"),
        "text": lambda: b"just some text\n",
    }
    assert header_size(blobs[kind]()) == expected


# ---------------------------------------------------------------------------------------------
# bad input


def bad_inputs(astronaut: ImageRGB, encode_image: Encode) -> dict[str, tuple[bytes, type[ImageError], str]]:
    """name → (bytes, the exact error class, a fragment the message must contain)."""
    jpeg = encode_image(astronaut, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    png = encode_image(astronaut, ".png")
    corrupt_png = bytearray(png)
    corrupt_png[200:20000] = bytes(19800)  # zero the start of the pixel data: IDAT CRC mismatch
    tiny = encode_image(cv2.resize(astronaut, (20, 20), interpolation=cv2.INTER_AREA), ".png")
    max_bytes = ImageLimits().max_bytes  # 6 MiB, the cloud face APIs' cap
    oversized = jpeg + bytes(max_bytes + 1 - len(jpeg))  # a valid JPEG followed by padding
    return {
        "empty": (b"", ImageError, "empty"),
        "text": (b"name,identity\nobama,obama\n", ImageError, "not a JPEG, PNG, BMP or WebP"),
        "random-bytes": (np.random.default_rng(1).bytes(4096), ImageError, "not a JPEG, PNG, BMP or WebP"),
        "jpeg-signature-then-garbage": (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, ImageError, "corrupt"),
        "corrupt-png": (bytes(corrupt_png), ImageError, "corrupt"),
        "truncated-jpeg": (jpeg[: len(jpeg) // 2], ImageError, "truncated"),
        "truncated-png": (png[: len(png) // 2], ImageError, "truncated"),
        "png-header-100000x100000": (png_with_size(png, 100_000, 100_000), ImageSizeError, "100000×100000"),
        "jpeg-header-60000x60000": (jpeg_with_size(jpeg, 60_000, 60_000), ImageSizeError, "60000×60000"),
        "over-6-MB": (oversized, ImageSizeError, f"{max_bytes:,}"),
        "20x20": (tiny, ImageSizeError, "20×20"),
    }


BAD_INPUT_NAMES = [
    "empty",
    "text",
    "random-bytes",
    "jpeg-signature-then-garbage",
    "corrupt-png",
    "truncated-jpeg",
    "truncated-png",
    "png-header-100000x100000",
    "jpeg-header-60000x60000",
    "over-6-MB",
    "20x20",
]


@pytest.mark.parametrize("name", BAD_INPUT_NAMES)
def test_decode_image_rejects_bad_input(astronaut: ImageRGB, encode_image: Encode, name: str) -> None:
    blob, expected, fragment = bad_inputs(astronaut, encode_image)[name]
    with pytest.raises(ImageError) as caught:
        decode_image(blob, name=f"request-{name}")
    assert type(caught.value) is expected, f"{name}: {caught.value!r}"
    message = str(caught.value)
    assert f"request-{name}" in message, f"the error does not name the image: {message}"
    assert fragment in message, message
    assert message.startswith(f"{expected.code}: ")


@pytest.mark.parametrize("name", BAD_INPUT_NAMES)
def test_read_image_rejects_bad_file(
    tmp_path: Path, astronaut: ImageRGB, encode_image: Encode, name: str
) -> None:
    blob, expected, fragment = bad_inputs(astronaut, encode_image)[name]
    path = tmp_path / f"{name}.img"
    path.write_bytes(blob)
    with pytest.raises(ImageError) as caught:
        read_image(path)
    assert type(caught.value) is expected, f"{name}: {caught.value!r}"
    assert str(path) in str(caught.value)
    assert fragment in str(caught.value)


def test_read_image_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nobody.jpg"
    with pytest.raises(ImageError) as caught:
        read_image(path)
    assert type(caught.value) is ImageError
    assert str(path) in str(caught.value)


def test_read_image_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as caught:
        read_image(tmp_path)
    assert type(caught.value) is ImageError
    assert str(tmp_path) in str(caught.value)
    assert "directory" in str(caught.value)


def test_pixel_cap_is_configurable(astronaut_png: bytes) -> None:
    with pytest.raises(ImageSizeError, match="512×512"):
        decode_image(astronaut_png, ImageLimits(max_pixels=512 * 511))
    assert decode_image(astronaut_png, ImageLimits(max_pixels=512 * 512)).shape == (512, 512, 3)


def test_image_errors_have_stable_codes() -> None:
    assert issubclass(ImageSizeError, ImageError)
    assert issubclass(ImageError, EdgedError)
    assert (ImageError.code, ImageSizeError.code) == ("InvalidImage", "InvalidImageSize")
    assert ImageError.exit_code == ImageSizeError.exit_code != 0
