"""The capture thread as its own supervisor: a camera that fails (open or read) is closed and opened
again with exponential backoff, for as long as it takes, and the stop event cuts any wait short.
Real sources: a small ``SourceBase`` camera written here that dies after a few frames (as an
unplugged USB camera does), and a real replay folder that is emptied and refilled; then the whole
daemon (``edged.app.App`` with the real pipeline) on such a folder."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.app import App
from edged.capture import CameraError, CaptureThread, Frame, LatestFrame, ReplaySource
from edged.capture.source import SourceBase
from edged.config import Config
from edged.directory import crypto
from edged.pipeline.pipeline import FacePipeline

WAIT = 30.0  # generous bound for anything a thread must do


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds (bounded); the thread under test has no event to wait on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.01)


class DyingCamera(SourceBase):
    """Delivers ``good`` frames after each open, then every read fails until it is opened again.
    Records when it was opened and when it failed (``time.monotonic()``)."""

    def __init__(self, good: int = 2) -> None:
        super().__init__()
        self.name = "dying-camera"
        self.good = good
        self.is_open = False
        self.opened_at: list[float] = []
        self.failed_at: list[float] = []
        self.closes = 0
        self._since_open = 0

    def open(self) -> None:
        self.is_open = True
        self._since_open = 0
        self._count = 0
        self.opened_at.append(time.monotonic())

    def read(self) -> Frame | None:
        if not self.is_open:
            raise CameraError(f"{self.name} is not open")
        if self._since_open >= self.good:
            if len(self.failed_at) < len(self.opened_at):
                self.failed_at.append(time.monotonic())
            raise CameraError(f"camera {self.name}: read failed (unplugged)")
        self._since_open += 1
        return self._frame(np.full((24, 32, 3), 100, np.uint8))

    def close(self) -> None:
        self.is_open = False
        self.closes += 1


def logged_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The waits announced by the capture thread's one-line failure reports."""
    found = []
    for record in caplog.records:
        match = re.search(r"; restart (\d+) in ([\d.]+) s$", record.getMessage())
        if match:
            found.append(float(match.group(2)))
    return found


def test_a_dying_camera_is_reopened_with_a_doubling_capped_delay(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edged.capture.buffer")
    camera = DyingCamera(good=2)
    stop = threading.Event()
    buffer = LatestFrame()
    thread = CaptureThread(
        camera, buffer, stop, max_consecutive_errors=1, restart_delay_s=0.02, restart_max_delay_s=0.16
    )
    thread.start()
    wait_until(lambda: len(camera.opened_at) >= 7)
    stop.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    opens = len(camera.opened_at)
    assert thread.restarts == opens - 1 >= 6
    assert camera.closes == opens, "every open is closed before the next one (and at the end)"
    assert thread.failures in (opens - 1, opens)
    assert thread.frames >= 2 * (opens - 1), "frames flow again after every re-open"
    assert isinstance(thread.error, CameraError) and "unplugged" in thread.error.message
    delays = logged_delays(caplog)
    assert delays[:6] == [0.02, 0.04, 0.08, 0.16, 0.16, 0.16], "one line per failure, the delay doubling"
    # the waits really happened: each re-open comes at least the announced delay after the failure
    for failed, reopened, delay in zip(camera.failed_at, camera.opened_at[1:], delays, strict=False):
        assert reopened - failed >= delay


def test_a_camera_that_ran_well_starts_again_from_the_first_delay(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="edged.capture.buffer")
    camera = DyingCamera(good=2)
    thread = CaptureThread(
        camera,
        LatestFrame(),
        threading.Event(),
        max_consecutive_errors=1,
        restart_delay_s=0.02,
        restart_max_delay_s=1.0,
        restart_stable_s=0.0,  # any re-open that delivers frames counts as recovered
    )
    thread.start()
    wait_until(lambda: len(camera.opened_at) >= 4)
    thread.stop_event.set()
    thread.join(WAIT)
    assert logged_delays(caplog)[:3] == [0.02, 0.02, 0.02]


def test_an_emptied_replay_folder_is_retried_until_it_is_refilled(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    keep = tmp_path / "keep"
    keep.mkdir()
    for i in range(3):
        ok, png = cv2.imencode(".png", np.full((24, 32, 3), 40 * i, np.uint8))
        assert ok
        (keep / f"f{i}.png").write_bytes(png.tobytes())
        shutil.copy(keep / f"f{i}.png", folder)
    stop = threading.Event()
    source = ReplaySource(folder, fps=200, loop=True)
    thread = CaptureThread(source, LatestFrame(), stop, restart_delay_s=0.01, restart_max_delay_s=0.05)
    thread.start()
    try:
        wait_until(lambda: thread.frames >= 5)
        for path in folder.iterdir():
            path.unlink()
        # reads fail (files gone), then re-opens fail (no images): the thread keeps trying
        wait_until(
            lambda: thread.down and thread.error is not None and "holds no images" in thread.error.message
        )
        wait_until(lambda: thread.restarts >= 3)
        assert thread.is_alive()
        frames_while_down = thread.frames
        for path in keep.iterdir():
            shutil.copy(path, folder)
        wait_until(lambda: not thread.down and thread.frames >= frames_while_down + 5)
    finally:
        stop.set()
        thread.join(WAIT)
    assert not thread.is_alive() and not thread.ended
    assert thread.read_errors >= 3 and thread.failures >= 2


def test_stop_cuts_a_long_backoff_short(tmp_path: Path) -> None:
    stop = threading.Event()
    thread = CaptureThread(
        ReplaySource(tmp_path / "not-yet"), LatestFrame(), stop, restart_delay_s=600, restart_max_delay_s=600
    )
    thread.start()
    wait_until(lambda: thread.failures == 1)  # now waiting 600 s before the first restart
    stop.set()
    thread.join(WAIT)
    assert not thread.is_alive(), "the stop event must end the backoff wait"
    assert (thread.restarts, thread.down) == (0, True)


def test_a_finite_source_that_ends_is_not_restarted(tmp_path: Path) -> None:
    for i in range(4):
        ok, png = cv2.imencode(".png", np.full((24, 32, 3), 50 * i, np.uint8))
        assert ok
        (tmp_path / f"f{i}.png").write_bytes(png.tobytes())
    thread = CaptureThread(
        ReplaySource(tmp_path, fps=0), LatestFrame(), threading.Event(), restart_max_delay_s=0.05
    )
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert (thread.frames, thread.ended, thread.restarts, thread.failures, thread.error) == (
        4,
        True,
        0,
        0,
        None,
    )


@pytest.mark.parametrize(
    "bad", [{"restart_max_delay_s": 0.0}, {"restart_max_delay_s": -1.0}, {"restart_delay_s": 0.0}]
)
def test_restart_settings_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="restart"):
        CaptureThread(DyingCamera(), LatestFrame(), threading.Event(), **bad)  # type: ignore[arg-type]


# -- the daemon ----------------------------------------------------------------------------------------


def fill(folder: Path, count: int = 100) -> None:
    """``count`` small frames: at 20 fps the replay lasts 5 s, much longer than the test needs."""
    for i in range(count):
        ok, png = cv2.imencode(".png", np.full((120, 160, 3), 40 + 2 * i, np.uint8))
        assert ok
        (folder / f"frame{i}.png").write_bytes(png.tobytes())


def daemon(pipeline: FacePipeline, tmp_path: Path, kek: crypto.Kek, restart_max_delay_s: float) -> App:
    folder = tmp_path / "camera"
    folder.mkdir()
    fill(folder)
    config = Config.model_validate(
        {"camera": {"source": str(folder), "fps": 20, "restart_max_delay_s": restart_max_delay_s}}
    )
    app = App(config, tmp_path / "state", kek, None, threading.Event(), None, pipeline=pipeline)
    return app


def test_the_daemon_outlives_a_camera_failure_and_processes_frames_again(
    pipeline: FacePipeline, tmp_path: Path, kek: crypto.Kek
) -> None:
    app = daemon(pipeline, tmp_path, kek, restart_max_delay_s=0.1)
    folder = tmp_path / "camera"
    app.start()
    try:
        assert app.capture is not None
        wait_until(lambda: app.frames_processed >= 2)
        for path in folder.iterdir():
            path.unlink()
        wait_until(lambda: app.camera_restarts >= 2)
        assert not app.stop_event.is_set() and app.capture.is_alive(), "a failed camera does not stop it"
        before = app.frames_processed
        fill(folder)
        wait_until(lambda: app.frames_processed > before)
        assert app.error is None
    finally:
        app.stop()
    assert app.capture is not None and not app.capture.is_alive()


def test_with_restarts_off_a_camera_failure_stops_the_daemon(
    pipeline: FacePipeline, tmp_path: Path, kek: crypto.Kek
) -> None:
    app = daemon(pipeline, tmp_path, kek, restart_max_delay_s=0)
    folder = tmp_path / "camera"
    app.start()
    try:
        wait_until(lambda: app.frames_processed >= 1)
        for path in folder.iterdir():
            path.unlink()
        assert app.stop_event.wait(WAIT), "the worker stops the daemon when the capture thread ends"
        assert app.camera_restarts == 0
        assert app.capture is not None and isinstance(app.capture.error, CameraError)
    finally:
        app.stop()
