"""``edged liveness IMAGE [IMAGE…] [--json] [--video FILE] [--interval S]``: is the face live?

One image gives the anti-spoofing model's cue alone; several images (the frames of one approach, in
order, ``--interval`` seconds apart) or ``--video FILE`` (a regular file; its frames read with
OpenCV, in memory, each within the image pixel cap) add the motion cues (docs/liveness.md). The
output is the request API's liveness result: ``{"livenessDecision", "score", "cues", "decidedBy",
"frames"}``. Nothing is written anywhere.

Exit codes: 0 ``realface``, 20 ``spoofface``, 21 ``uncertain`` (so ``edged liveness … && open``
never opens for a spoof or a doubt); errors as every command (2 bad arguments, 3 models, 4 an
unreadable image or video, 5 no face in an image).
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.cli_options import GlobalOptions, add_command, bounded_float, effective_config, load_pipeline
from edged.errors import BadArgument, ImageError, ImageSizeError

if TYPE_CHECKING:
    from edged.pipeline.image import ImageLimits
    from edged.types import ImageRGB

EXIT_CODES = {"realface": 0, "spoofface": 20, "uncertain": 21}
"""The exit code of each decision."""
DEFAULT_INTERVAL_S = 0.1
MAX_FRAMES = 32
"""Frames of a video (evenly spaced over it) or images checked at most: the API's limit too."""


@dataclass(frozen=True, slots=True)
class LivenessOptions:
    images: tuple[Path, ...]
    json: bool
    video: Path | None
    interval: float | None


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "liveness",
        help="is the face live or a photo/screen? (one image: the model; several or --video: all cues)",
    )
    p.add_argument("images", type=Path, nargs="*", metavar="IMAGE", help="frames of one approach, in order")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--video", type=Path, help=f"a video of the approach (at most {MAX_FRAMES} frames used)")
    p.add_argument(
        "--interval",
        type=bounded_float("--interval", "a number of seconds", 2, " seconds"),
        help=f"seconds between the images (default {DEFAULT_INTERVAL_S}; a video: between its frames used)",
    )
    add_command(p, LivenessOptions, cmd_liveness)


def video_frames(
    path: Path, interval_s: float | None, limits: ImageLimits | None = None
) -> tuple[list[ImageRGB], float]:
    """Up to ``MAX_FRAMES`` frames of a video, evenly spaced over it, as RGB in memory, and the
    seconds between them (``interval_s`` when given, else from the video's frame rate, within the
    API's ``INTERVAL_RANGE``). Only a regular file is opened (never a device, a FIFO or a URL), by
    its absolute path with the FFmpeg backend; a frame over ``limits.max_pixels`` is refused before
    any is decoded (by the size the container declares) and as decoded; skipped frames are only
    grabbed, not decoded."""
    import cv2
    import numpy as np

    from edged.pipeline.image import ImageLimits
    from edged.service.liveness import INTERVAL_RANGE

    limits = limits or ImageLimits()
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ImageError(f"cannot read the video {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        raise ImageError(f"the video {path} is not a regular file (a device, FIFO or directory is not read)")
    capture = cv2.VideoCapture(str(path.resolve()), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise ImageError(f"cannot read the video {path}")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_frame_size(path, width, height, limits)
        fps = capture.get(cv2.CAP_PROP_FPS)
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        stride = max(1, math.ceil(total / MAX_FRAMES)) if total > 0 else 1
        frames: list[ImageRGB] = []
        index = 0
        while len(frames) < MAX_FRAMES:
            if index % stride == 0:
                ok, frame = capture.read()
                if not ok:
                    break
                _check_frame_size(path, frame.shape[1], frame.shape[0], limits)
                frames.append(np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), np.uint8))
            elif not capture.grab():
                break
            index += 1
    finally:
        capture.release()
    if not frames:
        raise ImageError(f"the video {path} has no frames that can be read")
    if interval_s is None:
        interval_s = stride / fps if fps and fps > 0 else DEFAULT_INTERVAL_S
        interval_s = min(max(interval_s, INTERVAL_RANGE[0]), INTERVAL_RANGE[1])
    return frames, interval_s


def _check_frame_size(path: Path, width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageSizeError(
            f"the video {path} has {width}×{height} = {width * height:,} pixel frames; "
            f"the limit is {limits.max_pixels:,}"
        )


def cmd_liveness(request: LivenessOptions, options: GlobalOptions) -> int:
    from edged.api import wire
    from edged.app import load_liveness_checker
    from edged.cli import quiet_read

    if bool(request.images) == (request.video is not None):
        raise BadArgument("give IMAGE … or --video FILE (one of them)")
    if len(request.images) > MAX_FRAMES:
        raise BadArgument(f"at most {MAX_FRAMES} images, not {len(request.images)}")
    config = effective_config(options)
    if request.video is not None:
        images, interval_s = video_frames(request.video, request.interval, config.images)
    else:
        images = [quiet_read(path, config.images) for path in request.images]
        interval_s = request.interval or DEFAULT_INTERVAL_S
    result = load_liveness_checker(config, load_pipeline(config)).assess(images, interval_s)
    out = wire.liveness(result).model_dump(mode="json", exclude={"challenge"})
    if request.json:
        print(json.dumps(out))
    else:
        source = str(request.video) if request.video is not None else " ".join(map(str, request.images))
        decided = ", ".join(out["decidedBy"]) or "no cue could tell"
        print(f"{source}: {out['livenessDecision']} (score {out['score']:.3f}; decided by {decided})")
        for cue in out["cues"]:
            value = "-" if cue["value"] is None else f"{cue['value']:.4f}"
            print(f"  {cue['name']:<10} {cue['verdict']:<6} score {cue['score']:.3f}  value {value}")
    return EXIT_CODES[result.decision]
