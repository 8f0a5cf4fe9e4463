"""In-memory decoding (edged.pipeline.image): formats, channel handling, EXIF orientation, and every
kind of bad input, which must raise ImageError / ImageSizeError naming the image."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from image_helpers import jpeg_bomb, lossless_webp

from edged.errors import EdgedError, ImageError, ImageSizeError
from edged.pipeline.image import ImageLimits, decode_image, read_image
from edged.pipeline.imagehead import ImageHead, read_head
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
        ("png", ImageHead("png", 512, 512)),
        ("jpeg", ImageHead("jpeg", 512, 512)),
        ("bmp", ImageHead("bmp", 512, 512)),
        ("webp", ImageHead("webp", 512, 512)),
        ("text", None),
    ],
)
def test_read_head_reads_dimensions_without_decoding(
    astronaut: ImageRGB, encode_image: Encode, kind: str, expected: ImageHead | None
) -> None:
    blobs = {
        "png": lambda: encode_image(astronaut, ".png"),
        "jpeg": lambda: encode_image(astronaut, ".jpg"),
        "bmp": lambda: encode_image(astronaut, ".bmp"),
        "webp": lambda: encode_image(astronaut, ".webp"),
        "text": lambda: b"just some text\n",
    }
    if expected is None:
        with pytest.raises(ImageError, match="not a JPEG, PNG, BMP or WebP image"):
            read_head(blobs[kind]())
    else:
        assert read_head(blobs[kind]()) == expected


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


# ---------------------------------------------------------------------------------------------
# decompression bombs and damaged streams, in a fresh process: its peak memory and its stderr

REPO = Path(__file__).resolve().parents[1]
BOMB_HEADROOM = 512 * 1024 * 1024
"""Address space the bomb's process may still map: a regression fails with a refused allocation
instead of taking gigabytes from the machine running the tests."""
MAX_RSS_GROWTH_KB = 100 * 1024

BOMB_SCRIPT = """
import resource, sys
import cv2, numpy as np
from edged.errors import ImageError
from edged.pipeline.image import decode_image

decode_image(cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes())  # decoders warm
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_AS)[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image(bytes.fromhex(sys.argv[1]), name="bomb")
    print("decoded")
except ImageError as exc:
    print(exc)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def run_python(script: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("blob", "size"),
    [
        pytest.param(lossless_webp(16383, 16383), "16383×16383", id="lossless-webp-34-bytes"),
        pytest.param(jpeg_bomb(20_000, 20_000), "20000×20000", id="jpeg-fill-byte-before-sof"),
        pytest.param(jpeg_bomb(20_000, 20_000, b"\x00"), "20000×20000", id="jpeg-stray-byte-before-sof"),
    ],
)
def test_decompression_bombs_are_refused_before_decoding(blob: bytes, size: str) -> None:
    """A few hundred bytes that declare 268–400 million pixels (0.8–1.2 GB as BGR, 1.5–2.3 GB at the
    decoder's peak): refused by their header, the process's peak RSS unchanged."""
    result = run_python(BOMB_SCRIPT, blob.hex(), str(BOMB_HEADROOM))
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    message, growth_kb = lines[0], lines[-1]
    assert message.startswith(f"InvalidImageSize: bomb is {size} = "), message
    assert int(growth_kb) < MAX_RSS_GROWTH_KB, f"peak RSS grew by {int(growth_kb) // 1024} MB"


DECODE_STDIN = """
import sys
from edged.errors import ImageError
from edged.pipeline.image import decode_image

try:
    decode_image(sys.stdin.buffer.read(), name="damaged")
    print("decoded")
except ImageError as exc:
    print(exc)
"""


def damaged_streams(astronaut: ImageRGB, encode_image: Encode) -> dict[str, bytes]:
    jpeg = encode_image(astronaut, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    restarts = encode_image(astronaut, ".jpg", cv2.IMWRITE_JPEG_RST_INTERVAL, 4)
    thumbnail = encode_image(cv2.resize(astronaut, (64, 64)), ".jpg")
    exif = b"Exif\0\0" + thumbnail  # an APP1 segment holding a whole JPEG, as cameras write
    with_thumbnail = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]
    png = encode_image(astronaut, ".png")
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0x10
    dqt = jpeg.find(b"\xff\xdb")
    return {
        "jpeg-truncated": jpeg[: len(jpeg) // 2],
        "jpeg-with-thumbnail-truncated": with_thumbnail[: len(with_thumbnail) * 2 // 3],
        "jpeg-restart-intervals-truncated-then-terminated": restarts[: len(restarts) // 2] + b"\xff\xd9",
        "jpeg-restart-marker-missing": restarts.replace(b"\xff\xd2", b"", 1),
        "jpeg-stray-bytes-between-segments": jpeg[:dqt] + b"\x00\x00" + jpeg[dqt:],
        "png-truncated": png[: len(png) // 2],
        "png-bad-crc": bytes(flipped),
    }


DAMAGED = [
    "jpeg-truncated",
    "jpeg-with-thumbnail-truncated",
    "jpeg-restart-intervals-truncated-then-terminated",
    "jpeg-restart-marker-missing",
    "jpeg-stray-bytes-between-segments",
    "png-truncated",
    "png-bad-crc",
]


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_streams_are_refused_with_nothing_on_stderr(
    astronaut: ImageRGB, encode_image: Encode, name: str
) -> None:
    """libjpeg's "Corrupt JPEG data: …" and libpng's "libpng error: …" go straight to file
    descriptor 2, unformatted, from whichever thread decodes: the damage is found before decoding
    and reported as one InvalidImage error instead."""
    result = run_python(DECODE_STDIN, stdin=damaged_streams(astronaut, encode_image)[name])
    assert result.returncode == 0
    assert result.stderr == b"", result.stderr.decode()
    assert result.stdout.decode().startswith("InvalidImage: damaged is "), result.stdout.decode()


def test_a_decoded_size_other_than_the_header_is_refused(
    astronaut_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: should a decoder ever read a size other than the one checked (no known
    input does), its result is refused, not passed on."""
    monkeypatch.setattr(cv2, "imdecode", lambda buffer, flags: np.zeros((600, 512, 3), np.uint8))
    with pytest.raises(ImageError, match="decoded to 512×600, not the 512×512 its png header declares"):
        decode_image(astronaut_png, name="disagreeing")
