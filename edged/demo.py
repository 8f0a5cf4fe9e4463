"""The built-in demos, on scikit-image's public-domain photographs, so they run on a fresh machine
with no camera, no broker and no shared data:

- ``run_daemon_demo``: the door daemon (``edged.app.App``) on the demo camera, with the astronaut
  portrait (Eileen Collins, NASA) enrolled in a throw-away encrypted directory (a temporary folder
  and a key that lives in memory only, both gone at exit): one door in identify mode;
- ``run_demo``: the pipeline alone on the astronaut portrait (``edged demo --pipeline-only``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from edged.api import wire
from edged.config import Config
from edged.directory.crypto import KEY_BYTES, Kek
from edged.directory.store import Store
from edged.errors import ConfigError, NoFaceDetected
from edged.mqtt.settings import BrokerAddress
from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.verify import verify
from edged.service.faces import FaceService
from edged.service.policy import Caller
from edged.types import ImageRGB


def astronaut() -> ImageRGB:
    """The 512×512 RGB astronaut portrait that ships inside scikit-image (public domain)."""
    try:
        from skimage import data
    except ImportError as exc:
        raise ConfigError("the demo image comes from scikit-image: pip install 'edged[demo]'") from exc
    portrait: ImageRGB = np.ascontiguousarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    return portrait


def shifted(image: ImageRGB, dx: int, dy: int) -> ImageRGB:
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    size = (image.shape[1], image.shape[0])
    return np.asarray(cv2.warpAffine(image, matrix, size, borderMode=cv2.BORDER_REPLICATE), dtype=np.uint8)


def run_demo(pipeline: FacePipeline) -> int:
    original = astronaut()
    variants = {
        "shifted by (40, 25) px": shifted(original, 40, 25),
        "mirrored": np.ascontiguousarray(original[:, ::-1]),
    }
    faces = pipeline.faces(original)
    if not faces:
        raise NoFaceDetected("the demo found no face in the astronaut portrait: the models are broken")
    reference = faces[0]
    assert reference.embedding is not None
    print(f"astronaut portrait {original.shape[1]}×{original.shape[0]}: {len(faces)} face(s)")
    print(
        "  reference face:",
        json.dumps(
            {
                "box": reference.detection.box.as_list(),
                "score": round(reference.detection.score, 3),
                "quality": reference.quality.reasons or "ok",
            }
        ),
    )
    for name, image in variants.items():
        found = pipeline.faces(image)
        if not found or found[0].embedding is None:
            print(f"  {name}: no face found")
            continue
        result = verify(reference.embedding, found[0].embedding, pipeline.calibration)
        print(f"  verify against {name}: {json.dumps(wire.verification(result).model_dump())}")
    return 0


DEMO_GROUP = "demo"
DEMO_PERSON = "Eileen Collins"
DEMO_DOOR = "front"
DEMO_MAX_YAW_DEG = 90.0
"""The demo's stranger stands in profile: with the default pose limit (40°) he is low_quality; at 90°
his face is embedded and matched, and comes out unknown."""
DEMO = Caller("demo", "manager")
"""Who enrols the demo's person (the audit log's actor)."""


def demo_config(base: Config, device_id: str) -> Config:
    """``base`` with the demo camera, one identify door on the demo group, and the pose limit opened."""
    data: dict[str, Any] = base.model_dump()
    data["device_id"] = device_id
    data["camera"] = {"source": "demo", "fps": None}
    data["pipeline"]["quality"]["max_yaw_deg"] = DEMO_MAX_YAW_DEG
    data["doors"] = {DEMO_DOOR: {"mode": "identify", "group": DEMO_GROUP}}
    data["directory"]["state_dir"] = None
    return Config.model_validate(data)


def enrol_demo(pipeline: FacePipeline, state_dir: Path, kek: Kek, config: Config) -> str:
    """Create the trained demo group with the astronaut in it; returns her person ID."""
    store = Store.open(state_dir, kek)
    try:
        service = FaceService(pipeline, store, config.directory, pipeline.embedder.model.path.name)
        service.changes.create_group(DEMO, DEMO_GROUP, "Demo")
        person_id = service.changes.create_person(DEMO, DEMO_GROUP, DEMO_PERSON)
        service.changes.add_person_face(DEMO, DEMO_GROUP, person_id, astronaut())
        service.changes.train(DEMO, DEMO_GROUP)
        return person_id
    finally:
        store.close()


def run_daemon_demo(
    config: Config,
    pipeline: FacePipeline,
    broker: BrokerAddress | None,
    duration_s: float,
    out: TextIO = sys.stdout,
) -> int:
    """The daemon for ``duration_s`` seconds (or until SIGINT/SIGTERM), decisions as JSON lines on
    ``out``. The directory lives in a temporary folder under $TMPDIR, deleted before this returns."""
    from edged.app import App

    stop = threading.Event()
    key = Kek(os.urandom(KEY_BYTES), "demo (in memory)")
    with tempfile.TemporaryDirectory(prefix="edged-demo-") as tmp:
        state = Path(tmp)
        person_id = enrol_demo(pipeline, state, key, config)
        print(f"edged demo: enrolled {DEMO_PERSON!r} as person {person_id}", file=sys.stderr)
        app = App(config, state, key, broker, stop, out, pipeline=pipeline)
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            app.start()
            stop.wait(duration_s)
        finally:
            app.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print(
            f"edged demo: {app.frames_processed} frames processed, {app.frames_dropped} dropped, "
            f"{app.decisions} decisions",
            file=sys.stderr,
        )
    return 1 if app.error is not None else 0
