"""Capture: the frame sources (replay, OpenCV, picamera2, demo), the latest-frame buffer and the capture
thread. Real files, real decoders, real threads and the real pipeline; no camera is needed (picamera2 is
tested up to its import and its pure YUV conversion)."""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from edged.capture import (
    CameraError,
    CaptureThread,
    DemoSource,
    Frame,
    FrameSource,
    LatestFrame,
    OpenCVSource,
    Picamera2Source,
    ReplaySource,
    make_source,
)
from edged.capture.demo import ASTRONAUT, EMPTY, STRANGER
from edged.capture.picamera2 import yuv420_to_rgb
from edged.capture.source import redact
from edged.errors import ConfigError, EdgedError
from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.verify import verify
from edged.types import Face, ImageRGB

HAMILTON = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "faces"
    / "dev"
    / "face_recognition"
    / "examples"
    / "short_hamilton_clip.mp4"
)
needs_hamilton = pytest.mark.skipif(not HAMILTON.is_file(), reason=f"peer clip absent: {HAMILTON}")

WAIT = 30.0  # generous bound for anything a thread must do


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> ImageRGB:
    width, height = size
    return np.full((height, width, 3), rgb, np.uint8)


def write_png(path: Path, image: ImageRGB) -> Path:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def colour(i: int) -> tuple[int, int, int]:
    """A distinct colour per frame number, with red ≠ blue so a channel swap shows."""
    return (10 + 20 * i, 200 - 10 * i, 3)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Five PNGs whose natural order (frame_1 … frame_10) differs from their plain sort order,
    plus a file that is not an image."""
    root = tmp_path / "frames"
    root.mkdir()
    for i, number in enumerate((1, 2, 3, 9, 10)):
        write_png(root / f"frame_{number}.png", solid(colour(i)))
    (root / "notes.txt").write_text("not an image\n")
    return root


def read_all(source: FrameSource, limit: int = 10_000) -> list[Frame]:
    frames = []
    while len(frames) < limit and (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def first_pixel(frame: Frame) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in frame.image[0, 0])
    return r, g, b


# -- replay: a folder of images -----------------------------------------------------------------------


def test_replay_folder_plays_every_image_once_in_natural_order_as_rgb(folder: Path) -> None:
    with ReplaySource(folder, fps=0) as source:
        frames = read_all(source)
        assert source.read() is None, "the end of a finite stream stays the end"
    assert [first_pixel(f) for f in frames] == [colour(i) for i in range(5)]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert all(f.image.shape == (32, 48, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.main is None for f in frames)
    assert [f.timestamp for f in frames] == sorted(f.timestamp for f in frames)


def test_replay_folder_loops_and_keeps_counting(folder: Path) -> None:
    with ReplaySource(folder, fps=0, loop=True) as source:
        frames = [source.read() for _ in range(12)]
    assert all(f is not None for f in frames)
    assert [first_pixel(f) for f in frames if f is not None] == [colour(i % 5) for i in range(12)]
    assert [f.index for f in frames if f is not None] == list(range(12))


def test_replay_unpaced_never_sleeps_and_the_default_pace_is_ten_fps(folder: Path) -> None:
    with ReplaySource(folder, fps=0) as source:
        assert len(read_all(source)) == 5
        assert source.waited == 0.0
    assert ReplaySource(folder).fps == 10.0


def test_replay_pace_spaces_frames_at_least_a_period_apart(folder: Path) -> None:
    fps = 25.0
    with ReplaySource(folder, fps=fps) as source:
        frames = read_all(source, limit=4)
        assert source.waited > 0.0
    # a lower bound only (sleeping never ends early); one period of slack for the first frame
    assert frames[3].timestamp - frames[0].timestamp >= 2 / fps


def test_replay_skips_past_a_corrupt_image_after_reporting_it(folder: Path) -> None:
    (folder / "frame_5.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with ReplaySource(folder, fps=0) as source:
        good = [source.read() for _ in range(3)]
        with pytest.raises(CameraError, match=r"frame_5\.png"):
            source.read()
        rest = read_all(source)
    assert len(good) + len(rest) == 5


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("empty-folder", "holds no images"),
        ("text.mp4", "cannot be opened as a video"),
    ],
)
def test_replay_errors_name_the_path(tmp_path: Path, case: str, message: str) -> None:
    path = tmp_path / case
    if case == "empty-folder":
        path.mkdir()
        (path / "readme.txt").write_text("no images here\n")
    elif case == "text.mp4":
        path.write_text("this is text, not a video\n")
    source = ReplaySource(path)
    with pytest.raises(CameraError, match=message) as caught:
        source.open()
    assert str(path) in str(caught.value)
    assert caught.value.code == "CameraError" and caught.value.exit_code == 11
    assert isinstance(caught.value, EdgedError)


def test_a_closed_source_refuses_to_read(folder: Path) -> None:
    source = ReplaySource(folder, fps=0)
    with source:
        assert source.read() is not None
    with pytest.raises(CameraError, match="not open"):
        source.read()
    source.close()  # closing twice is harmless


@pytest.mark.parametrize("fps", [-1.0, float("nan")])
def test_a_negative_or_nan_frame_rate_is_a_config_error(folder: Path, fps: float) -> None:
    with pytest.raises(ConfigError, match="fps"):
        ReplaySource(folder, fps=fps)


def test_frames_are_immutable_values(folder: Path) -> None:
    with ReplaySource(folder, fps=0) as source:
        frame = source.read()
    assert frame is not None and frame.size == (48, 32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.index = 7  # type: ignore[misc]


# -- replay and OpenCV: a real video -------------------------------------------------------------------


@needs_hamilton
def test_replay_video_plays_all_275_frames_as_rgb_at_its_own_rate() -> None:
    reference = cv2.VideoCapture(str(HAMILTON))
    ok, first_bgr = reference.read()
    reference.release()
    assert ok
    with ReplaySource(HAMILTON, fps=0) as source:
        assert source.is_video
        frames = read_all(source)
    assert len(frames) == 275
    assert all(f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    np.testing.assert_array_equal(frames[0].image, first_bgr[:, :, ::-1])
    source = ReplaySource(HAMILTON)
    with source:
        assert source.fps == pytest.approx(29.97, abs=0.01)


@needs_hamilton
def test_replay_video_loops_back_to_its_first_frame() -> None:
    with ReplaySource(HAMILTON, fps=0, loop=True) as source:
        frames = [source.read() for _ in range(277)]
    assert all(f is not None for f in frames)
    first, again = frames[0], frames[275]
    assert first is not None and again is not None
    np.testing.assert_array_equal(first.image, again.image)
    assert again.index == 275


@needs_hamilton
def test_opencv_source_reads_a_video_file_to_its_end() -> None:
    with ReplaySource(HAMILTON, fps=0) as replay:
        first = replay.read()
    with OpenCVSource(str(HAMILTON)) as source:
        frames = read_all(source)
        assert source.read() is None
    assert len(frames) == 275
    assert first is not None
    np.testing.assert_array_equal(frames[0].image, first.image)


@pytest.mark.parametrize(
    ("device", "shown"),
    [(99, "opencv:99"), ("/dev/video99", "/dev/video99"), ("rtsp://door:s3cret@127.0.0.1:9/live", "***")],
    ids=["index", "device-path", "refused-stream"],
)
def test_opencv_source_that_cannot_open_raises_a_camera_error_naming_it(
    device: int | str, shown: str
) -> None:
    source = OpenCVSource(device, timeout=5.0)
    with pytest.raises(CameraError, match=r"cannot be opened|no such device") as caught:
        source.open()
    assert shown in str(caught.value)
    assert "s3cret" not in str(caught.value) and "s3cret" not in source.name


# -- picamera2 -----------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
def test_picamera2_missing_is_a_camera_error_with_the_install_hint() -> None:
    source = Picamera2Source()
    with pytest.raises(CameraError) as caught:
        source.open()
    message = str(caught.value)
    assert "apt install python3-picamera2" in message and "--system-site-packages" in message
    with pytest.raises(CameraError, match="not open"):
        source.read()


@pytest.mark.parametrize(
    "rgb", [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 30, 90), (128, 128, 128), (20, 20, 20)]
)
def test_i420_of_a_flat_colour_converts_back_to_that_colour(rgb: tuple[int, int, int]) -> None:
    image = solid(rgb, (64, 48))
    yuv = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)
    assert yuv.shape == (72, 64)
    back = yuv420_to_rgb(yuv)
    assert back.shape == (48, 64, 3)
    assert np.abs(back.astype(int) - image.astype(int)).max() <= 3


def test_i420_of_a_real_photo_round_trips_within_chroma_subsampling_error() -> None:
    photo = np.ascontiguousarray(data.astronaut())
    back = yuv420_to_rgb(cv2.cvtColor(photo, cv2.COLOR_RGB2YUV_I420))
    error = np.abs(back.astype(int) - photo.astype(int))
    assert error.mean() < 2.5
    assert np.percentile(error, 99) <= 20


def padded(yuv: np.ndarray, width: int, height: int, stride: int) -> np.ndarray:
    """An I420 frame laid out as picamera2's make_array returns a padded lores stream: Y rows of
    ``stride`` bytes, then U and V planes of stride/2-byte rows, two to an array row."""
    flat = yuv.reshape(-1)
    n, q = width * height, (width // 2) * (height // 2)
    y = flat[:n].reshape(height, width)
    u = flat[n : n + q].reshape(height // 2, width // 2)
    v = flat[n + q :].reshape(height // 2, width // 2)
    out = np.full(stride * height * 3 // 2, 77, np.uint8)  # padding bytes hold junk
    planes = (
        (y, 0, stride),
        (u, stride * height, stride // 2),
        (v, stride * height + (stride // 2) * (height // 2), stride // 2),
    )
    for plane, start, row in planes:
        view = out[start : start + row * plane.shape[0]].reshape(plane.shape[0], row)
        view[:, : plane.shape[1]] = plane
    return out.reshape(height * 3 // 2, stride)


def test_i420_with_row_padding_converts_exactly_like_the_unpadded_frame() -> None:
    photo = np.ascontiguousarray(cv2.resize(data.astronaut(), (320, 240)))
    yuv = cv2.cvtColor(photo, cv2.COLOR_RGB2YUV_I420)
    wide = padded(yuv, 320, 240, 384)
    assert wide.shape == (360, 384)
    np.testing.assert_array_equal(yuv420_to_rgb(wide, 320), yuv420_to_rgb(yuv))


@pytest.mark.parametrize("shape", [(71, 64), (72, 63), (72, 64, 1)])
def test_i420_of_the_wrong_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(CameraError, match="YUV420"):
        yuv420_to_rgb(np.zeros(shape, np.uint8))


@pytest.mark.parametrize(
    "kwargs", [{"lores": (641, 480)}, {"lores": (1920, 1080)}, {"fps": 0}], ids=["odd", "lores>main", "fps"]
)
def test_picamera2_settings_are_checked_before_any_import(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Picamera2Source(**kwargs)  # type: ignore[arg-type]


# -- the demo source -----------------------------------------------------------------------------------


def test_demo_is_deterministic_for_a_seed_and_differs_between_seeds() -> None:
    indexes = (0, 17, 33, 50, 80, 123, 200)
    with DemoSource(fps=0, seed=3) as a, DemoSource(fps=0, seed=3) as b, DemoSource(fps=0, seed=4) as c:
        for i in indexes:
            np.testing.assert_array_equal(a.render(i), b.render(i))
        assert not np.array_equal(a.render(50), c.render(50)), "the wall's texture comes from the seed"


def test_demo_frames_have_the_requested_size_and_count() -> None:
    with DemoSource(fps=0, frames=7, size=(320, 240)) as source:
        frames = read_all(source)
        assert source.waited == 0.0
    assert len(frames) == 7
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.index for f in frames] == list(range(7))


def test_demo_schedule_alternates_astronaut_empty_stranger_empty() -> None:
    source = DemoSource(fps=10)
    cycle = [source.segment_of(i) for i in range(120)]
    runs: list[tuple[str, int]] = []
    for segment in cycle:
        if runs and runs[-1][0] == segment:
            runs[-1] = (segment, runs[-1][1] + 1)
        else:
            runs.append((segment, 1))
    assert runs == [(ASTRONAUT, 40), (EMPTY, 20), (STRANGER, 40), (EMPTY, 20)]
    assert source.segment_of(120) == ASTRONAUT, "the scene repeats"
    assert DemoSource(fps=20).segment_of(79) == ASTRONAUT and DemoSource(fps=20).segment_of(80) == EMPTY


def only_face(pipeline: FacePipeline, image: ImageRGB) -> Face:
    faces = pipeline.faces(image)
    assert len(faces) == 1, f"expected one face, found {len(faces)}"
    assert faces[0].embedding is not None
    return faces[0]


def test_demo_people_are_found_and_told_apart_by_the_pipeline(
    pipeline: FacePipeline, astronaut_face: Face
) -> None:
    assert astronaut_face.embedding is not None
    reference = astronaut_face.embedding
    with DemoSource(fps=10) as source:
        # from well into each approach to just before the subject steps out (progress 0.3 … 0.85)
        astronaut_frames = range(12, 35, 4)
        stranger_frames = range(72, 95, 4)
        assert {source.segment_of(i) for i in astronaut_frames} == {ASTRONAUT}
        assert {source.segment_of(i) for i in stranger_frames} == {STRANGER}
        for i in astronaut_frames:
            face = only_face(pipeline, source.render(i))
            assert face.embedding is not None
            result = verify(reference, face.embedding, pipeline.calibration)
            assert result.is_identical, f"frame {i}: the astronaut should verify ({result.distance:.3f})"
        for i in stranger_frames:
            face = only_face(pipeline, source.render(i))
            assert face.embedding is not None
            result = verify(reference, face.embedding, pipeline.calibration)
            assert not result.is_identical, f"frame {i}: the stranger must not verify ({result.distance:.3f})"
        for i in (45, 55, 105, 115):
            assert source.segment_of(i) == EMPTY
            assert pipeline.faces(source.render(i)) == []


# -- the latest-frame buffer ---------------------------------------------------------------------------


def frame(index: int) -> Frame:
    return Frame(solid(colour(index % 10)), None, index, float(index))


def test_latest_frame_keeps_only_the_newest_and_counts_the_overwritten() -> None:
    buffer = LatestFrame()
    for i in range(3):
        buffer.put(frame(i))
    got = buffer.get(timeout=1.0)
    assert got is not None and got.index == 2
    assert (buffer.received, buffer.dropped, buffer.delivered) == (3, 2, 1)
    assert buffer.get(timeout=0.01) is None, "a frame is handed out once"
    buffer.put(frame(3))
    got = buffer.get(timeout=0)
    assert got is not None and got.index == 3
    assert (buffer.dropped, buffer.delivered) == (2, 2)


def test_latest_frame_get_times_out_with_none() -> None:
    assert LatestFrame().get(timeout=0.05) is None


def test_latest_frame_put_wakes_a_waiting_get() -> None:
    buffer = LatestFrame()
    got: list[Frame | None] = []
    getter = threading.Thread(target=lambda: got.append(buffer.get(timeout=WAIT)))
    getter.start()
    buffer.put(frame(5))
    getter.join(WAIT)
    assert not getter.is_alive()
    assert [f.index for f in got if f is not None] == [5]


def test_latest_frame_close_wakes_a_getter_waiting_without_timeout() -> None:
    buffer = LatestFrame()
    waiting = threading.Event()
    got: list[Frame | None] = []

    def consume() -> None:
        waiting.set()
        got.append(buffer.get())

    getter = threading.Thread(target=consume, daemon=True)
    getter.start()
    assert waiting.wait(WAIT)
    buffer.close()
    getter.join(WAIT)
    assert not getter.is_alive(), "close() must wake a get() that waits forever"
    assert got == [None]


def test_latest_frame_after_close_drops_what_is_left_and_what_comes() -> None:
    buffer = LatestFrame()
    buffer.put(frame(0))
    buffer.close()
    buffer.put(frame(1))
    assert buffer.closed
    assert buffer.get(timeout=0) is None
    assert (buffer.received, buffer.dropped, buffer.delivered) == (2, 2, 0)


# -- the capture thread --------------------------------------------------------------------------------


def test_capture_thread_plays_a_finite_source_to_its_end_and_closes_it(folder: Path) -> None:
    source = ReplaySource(folder, fps=0)
    buffer = LatestFrame()
    thread = CaptureThread(source, buffer, threading.Event())
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert (thread.frames, thread.ended, thread.error, thread.read_errors) == (5, True, None, 0)
    last = buffer.get(timeout=0)
    assert last is not None and last.index == 4, "nobody read: only the newest frame is left"
    assert (buffer.received, buffer.dropped, buffer.delivered) == (5, 4, 1)
    with pytest.raises(CameraError, match="not open"):
        source.read()


def test_capture_thread_records_why_a_source_would_not_open(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    thread = CaptureThread(ReplaySource(missing), LatestFrame(), threading.Event())
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert isinstance(thread.error, CameraError) and str(missing) in thread.error.message
    assert (thread.frames, thread.ended) == (0, False)


def test_capture_thread_counts_read_errors_and_gives_up_after_too_many_in_a_row(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"not a png at all")
    thread = CaptureThread(
        ReplaySource(tmp_path, fps=0, loop=True), LatestFrame(), threading.Event(), max_consecutive_errors=4
    )
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert (thread.read_errors, thread.frames, thread.ended) == (4, 0, False)
    assert isinstance(thread.error, CameraError) and ".png" in thread.error.message


def test_capture_thread_survives_an_isolated_read_error(folder: Path) -> None:
    (folder / "frame_4.png").write_bytes(b"garbage")
    thread = CaptureThread(ReplaySource(folder, fps=0), LatestFrame(), threading.Event())
    thread.start()
    thread.join(WAIT)
    assert (thread.frames, thread.read_errors, thread.ended) == (5, 1, True)
    assert isinstance(thread.error, CameraError) and "frame_4.png" in thread.error.message


def test_capture_thread_stops_on_the_stop_event_and_never_waits_for_the_consumer() -> None:
    stop = threading.Event()
    buffer = LatestFrame()
    thread = CaptureThread(DemoSource(fps=0, size=(160, 120)), buffer, stop)
    thread.start()
    seen = [buffer.get(timeout=WAIT) for _ in range(3)]
    assert all(f is not None for f in seen)
    indexes = [f.index for f in seen if f is not None]
    assert indexes == sorted(set(indexes)), "frames come newest-first, never twice"
    stop.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert thread.error is None and not thread.ended
    assert thread.frames == buffer.received >= 3


# -- choosing a source from one string -----------------------------------------------------------------


def test_make_source_picks_the_adapter(folder: Path, tmp_path: Path) -> None:
    video = tmp_path / "door.mp4"
    video.write_bytes(b"")  # chosen by path; opening is a later, separate step
    cases: list[tuple[str | int, type]] = [
        ("demo", DemoSource),
        ("picamera2", Picamera2Source),
        ("0", OpenCVSource),
        (1, OpenCVSource),
        ("/dev/video0", OpenCVSource),
        ("rtsp://door:pw@10.0.0.5/stream1", OpenCVSource),
        ("https://cam.local/mjpeg", OpenCVSource),
        (str(folder), ReplaySource),
        (str(video), ReplaySource),
    ]
    for spec, kind in cases:
        source = make_source(spec)
        assert type(source) is kind, spec
        assert isinstance(source, FrameSource)
    assert "pw" not in make_source("rtsp://door:pw@10.0.0.5/stream1").name
    demo = make_source("demo", fps=0, frames=2)
    with demo:
        assert len(read_all(demo)) == 2


@pytest.mark.parametrize("spec", ["webcam", "ftp://cam/x", "", "/no/such/folder"])
def test_make_source_refuses_what_it_does_not_know_and_says_what_it_expects(spec: str) -> None:
    with pytest.raises(CameraError) as caught:
        make_source(spec)
    assert "expected 'demo', 'picamera2'" in str(caught.value)


def test_make_source_refuses_an_option_the_source_does_not_take() -> None:
    with pytest.raises(ConfigError, match="loop"):
        make_source("demo", loop=True)


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("rtsp://door:secret@cam/live", "rtsp://door:***@cam/live"),
        ("rtsp://cam/live?user=admin&password=x", "rtsp://cam/live?***"),
        ("http://cam.local:8080/video", "http://cam.local:8080/video"),
        ("/dev/video0", "/dev/video0"),
    ],
)
def test_source_names_never_carry_passwords(spec: str, shown: str) -> None:
    assert redact(spec) == shown
