"""sd_notify over a real unix datagram socket, as systemd would listen."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_helpers import lossless_webp

from edged.directory.crypto import CREDENTIAL_NAME
from edged.pipeline.image import ImageLimits
from edged.systemd import Notifier

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "edged.service"
MAX_EXPOSURE = 2.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_messages_reach_the_socket(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    notifier = Notifier(path)
    assert notifier.ready("models, directory and camera up")
    assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=models, directory and camera up"]
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert sock.recv(4096).decode().startswith("STOPPING=1\n")
    assert notifier.sent == 3
    # a frame that finishes while the daemon stops: no WATCHDOG after STOPPING
    assert not notifier.watchdog()
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    assert notifier.sent == 3


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.sent == 0


def test_a_vanished_socket_is_a_counted_warning_not_a_crash(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert not notifier.watchdog()
    assert notifier.failures == 1


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("10000000", None, 5.0),
        ("0", None, None),
        (None, None, None),
        ("10000000", "1", None),
        ("x", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    if pid == "1" and os.getpid() == 1:
        pytest.skip("running as PID 1")
    assert Notifier.watchdog_interval_s() == expected


def test_the_daemon_reports_ready_watchdog_and_stopping(listener: tuple[str, socket.socket]) -> None:
    """`edged demo` runs the daemon: under systemd it says READY once up, pings the watchdog from the
    frame loop, and says STOPPING on the way out."""
    path, sock = listener
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    env.pop("WATCHDOG_PID", None)
    messages: list[str] = []
    done = threading.Event()

    def read() -> None:  # as systemd does: read as they come
        sock.settimeout(0.2)
        while not done.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=read)
    reader.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "edged", "demo", "--duration", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        done.set()
        reader.join(5)
    assert result.returncode == 0, result.stderr
    kinds = [m.split("\n")[0] for m in messages]
    assert kinds[0] == "READY=1", messages
    assert "WATCHDOG=1" in kinds
    assert kinds[-1] == "STOPPING=1"


# -- the unit file ---------------------------------------------------------------------------------------


def unit_settings() -> list[tuple[str, str]]:
    """(key, value) of every assignment in the [Service] section, in order (keys may repeat)."""
    settings: list[tuple[str, str]] = []
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.append((key.strip(), value.strip()))
    return settings


def test_the_unit_keeps_what_the_daemon_needs() -> None:
    """Hardening must not take away what edged runs on: sd_notify and the watchdog, a restart on
    failure, its own user with the camera group, its state directory, the key credential under the
    name edged looks for, the camera devices and IP networking (MQTT)."""
    settings = unit_settings()
    values: dict[str, list[str]] = {}
    for key, value in settings:
        values.setdefault(key, []).append(value)
    one = {key: vs[-1] for key, vs in values.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["WatchdogSec"] and one["Restart"] == "on-failure"
    assert one["User"] == "edged" and "DynamicUser" not in one
    assert one["SupplementaryGroups"] == "video"
    assert one["StateDirectory"] == "edged" and one["StateDirectoryMode"] == "0700"
    assert one["LoadCredentialEncrypted"].split(":")[0] == CREDENTIAL_NAME
    assert one["ProtectSystem"] == "strict" and one["NoNewPrivileges"] == "yes"
    assert one["DevicePolicy"] == "closed"
    assert {"char-video4linux rw", "char-media rw"} <= set(values["DeviceAllow"])
    assert any(v.startswith("/dev/dma_heap/") for v in values["DeviceAllow"])
    assert one.get("PrivateDevices", "no") == "no", "PrivateDevices hides the camera"
    assert one.get("PrivateNetwork", "no") == "no", "PrivateNetwork cuts the broker off"
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert one["SystemCallFilter"] == "@system-service"
    assert one["LimitCORE"] == "0", "a core dump would hold decrypted templates and the key"


MEASURED_PEAK = 480 * 1024**2
"""The daemon's peak RSS with the request queue full of the largest images (systemd/README.md)."""
SMALLEST_PI = 1024**3
SIZE_SUFFIX = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def unit_bytes(value: str) -> int:
    """A systemd size (``640M``, ``1G``, ``123456``) in bytes; a percentage or ``infinity`` fails."""
    found = re.fullmatch(r"(\d+)([KMGT]?)", value)
    assert found, f"not an absolute size: {value!r}"
    return int(found.group(1)) * SIZE_SUFFIX[found.group(2)]


def unit_environment() -> dict[str, str]:
    return dict(
        pair.split("=", 1) for key, value in unit_settings() if key == "Environment" for pair in value.split()
    )


def test_the_unit_caps_memory_for_a_pi() -> None:
    """A hard memory cap on the service, above the daemon's measured worst case with a quarter to
    spare and leaving a quarter of the smallest Pi (1 GB) to the OS; no swap to spill past it."""
    one = dict(unit_settings())
    assert "MemoryMax" in one, "no memory cap: one request may take all of a Pi's memory"
    limit = unit_bytes(one["MemoryMax"])
    assert MEASURED_PEAK * 1.25 <= limit <= SMALLEST_PI * 0.75, f"MemoryMax={one['MemoryMax']}"
    assert one["MemorySwapMax"] == "0"
    assert "MemoryLimit" not in one, "MemoryLimit= is the cgroup v1 name: MemoryMax= replaces it"


def test_the_unit_caps_opencv_decoders_at_the_pixel_cap() -> None:
    """OPENCV_IO_MAX_IMAGE_PIXELS in the unit equals the default images.max_pixels, and this
    OpenCV honours it: a 25-megapixel WebP that decodes without it is refused with it."""
    value = unit_environment()["OPENCV_IO_MAX_IMAGE_PIXELS"]
    assert int(value) == ImageLimits().max_pixels
    script = (
        "import sys, cv2, numpy as np\n"
        "try:\n"
        "    image = cv2.imdecode(np.frombuffer(bytes.fromhex(sys.argv[1]), np.uint8), cv2.IMREAD_COLOR)\n"
        "    print(image.shape)\n"
        "except cv2.error as exc:\n"
        "    print('refused', 'CV_IO_MAX_IMAGE_PIXELS' in str(exc))\n"
    )
    blob = lossless_webp(5000, 5000).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_IO_MAX_IMAGE")}
    runs = {
        capped: subprocess.run(
            [sys.executable, "-c", script, blob],
            env={**env, "OPENCV_IO_MAX_IMAGE_PIXELS": value} if capped else env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        for capped in (False, True)
    }
    assert runs == {False: "(5000, 5000, 3)", True: "refused True"}


def test_the_unit_exposure_is_at_most_two() -> None:
    """`systemd-analyze security --offline=true` scores the unit file itself (systemd ≥ 250)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr and ("unrecognized" in result.stderr or "Unknown" in result.stderr):
        pytest.skip(f"this systemd-analyze has no --offline: {result.stderr.strip()}")
    found = re.search(r"Overall exposure level for edged\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert found, f"no exposure level in the output:\n{result.stdout}\n{result.stderr}"
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout
