"""Validated configuration: a typed tree (pydantic, unknown keys rejected) read from YAML.

Every field carries a description; ``config/edged.yaml`` documents them all. Errors name the YAML
path and line of each offending key, and ``edged check-config`` prints all of them at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from edged.api.settings import ApiSettings
from edged.decider import DoorSettings
from edged.errors import ConfigError
from edged.mqtt.settings import HaSettings, MqttSettings
from edged.mqtt.topics import check_id
from edged.strict import Strict

CONFIG_ENV = "EDGED_CONFIG"


class QualityThresholds(Strict):
    """Limits of the quality gate (reason codes in edged/pipeline/quality.py)."""

    min_face_px: float = Field(48.0, ge=0, description="smallest face box side, frame pixels (too_small)")
    min_sharpness: float = Field(40.0, ge=0, description="variance of the Laplacian on the chip (blurred)")
    max_yaw_deg: float = Field(40.0, gt=0, le=90, description="largest left/right head turn (extreme_pose)")
    max_pitch_deg: float = Field(35.0, gt=0, le=90, description="largest up/down head tilt (extreme_pose)")
    max_roll_deg: float = Field(45.0, gt=0, le=180, description="largest in-plane rotation (extreme_pose)")
    min_brightness: float = Field(40.0, ge=0, le=255, description="darkest mean chip grey level (too_dark)")
    max_brightness: float = Field(
        225.0, ge=0, le=255, description="brightest mean chip grey level (too_bright)"
    )
    max_outside_fraction: float = Field(
        0.1, ge=0, le=1, description="largest share of the face box outside the frame (cut_by_border)"
    )
    min_face_score: float = Field(
        0.5, ge=0, le=1, description="face-mesh face probability below which a detection is not a face"
    )
    min_detection_score: float = Field(0.5, ge=0, le=1, description="detector score (low_detection_score)")


class PipelineSettings(Strict):
    """The face pipeline: which models, how many threads, which limits."""

    detector: Literal["short", "full"] = Field(
        "short", description="BlazeFace short-range (faces ≥ ~10 % of frame width) or full-range (≥ ~6 %)"
    )
    detection_threshold: float | None = Field(
        None, gt=0, lt=1, description="detector score threshold (default: the model's, 0.5 short / 0.6 full)"
    )
    min_face_px: float = Field(20.0, ge=0, description="detections smaller than this (pixels) are ignored")
    embedder: Literal["int8", "float32"] = Field(
        "int8", description="int8 is the daemon's model; float32 is the reference"
    )
    flip_average: bool = Field(
        False,
        description="template = mean of the chip's and its mirror's embeddings (slower; see docs/models.md)",
    )
    threads: int = Field(1, ge=1, le=16, description="inference threads per model")
    model_threads: dict[Literal["detector", "mesh", "embedder"], Annotated[int, Field(ge=1, le=16)]] = Field(
        default_factory=dict, description="per-model overrides of threads, e.g. {embedder: 2}"
    )

    def threads_for(self, stage: Literal["detector", "mesh", "embedder"]) -> int:
        return self.model_threads.get(stage, self.threads)

    quality: QualityThresholds = Field(default_factory=QualityThresholds)


class ImageLimits(Strict):
    """Caps on request and file images (decoded in memory only)."""

    max_bytes: int = Field(6 * 1024 * 1024, ge=1024, le=6 * 1024 * 1024, description="largest encoded image")
    max_pixels: int = Field(4096 * 4096, ge=36 * 36, description="largest decoded width × height")
    min_side: int = Field(36, ge=1, description="smallest decoded width or height")


class VerifySettings(Strict):
    far: float | None = Field(
        None, gt=0, lt=1, description="target false-accept rate for 1:1 verify (default: the calibrated 1e-3)"
    )


class DirectorySettings(Strict):
    """The person directory: where it lives and its policies."""

    state_dir: Path | None = Field(
        None,
        description="directory of the SQLite file (default: $STATE_DIRECTORY under systemd, else ./state)",
    )
    transient_ttl_s: int = Field(
        86_400, ge=60, le=86_400, description="lifetime of face IDs from detect (60 s to 24 h)"
    )
    identify_far: float = Field(
        1e-4, gt=0, lt=1, description="target false-accept rate of identify (1:N): stricter than verify"
    )
    duplicate_policy: Literal["refuse", "warn", "off"] = Field(
        "refuse", description="enrolling a face that matches a different person: refuse, warn, or allow"
    )
    duplicate_far: float = Field(
        1e-3, gt=0, lt=1, description="FAR threshold of the duplicate-identity check"
    )
    enroll_requires_quality: bool = Field(
        True, description="refuse enrolment of faces that fail the quality gate"
    )


class CameraSettings(Strict):
    """Where the door daemon's frames come from."""

    source: str = Field(
        "demo",
        min_length=1,
        description="frame source: demo, picamera2, a camera index or /dev/video*, an rtsp:// or "
        "http(s):// URL, a video file or a folder of images (edged.capture.make_source)",
    )
    fps: float | None = Field(
        None, gt=0, le=120, description="frame rate to pace the source at (null: the source's own)"
    )
    restart_max_delay_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="a failed camera (open or read) is closed and re-opened after 0.5 s, the wait "
        "doubling on each failure in a row up to this many seconds; 0: never (the daemon stops)",
    )


class TrackerSettings(Strict):
    """The face tracker that follows faces across frames (edged/tracker.py)."""

    min_iou: float = Field(0.3, gt=0, le=1, description="smallest box overlap that continues a track")
    max_missed_s: float = Field(
        1.0, ge=0, le=60, description="a track unseen for longer than this ends (its session closes)"
    )


class Config(Strict):
    """The whole configuration file."""

    schema_version: Literal[1] = Field(1, description="version of this file's layout")
    device_id: str = Field(
        "edged-1", description="this terminal's ID: the MQTT topic level edged/<device_id>/…"
    )
    model_dir: Path | None = Field(
        None, description="directory with manifest.yaml (default: the installed models)"
    )
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    images: ImageLimits = Field(default_factory=ImageLimits)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    directory: DirectorySettings = Field(default_factory=DirectorySettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="broker connection (docs/mqtt.md)")
    ha: HaSettings = Field(
        default_factory=HaSettings, description="Home Assistant MQTT device discovery (docs/mqtt.md)"
    )
    api: ApiSettings = Field(
        default_factory=ApiSettings, description="the face operations over MQTT (docs/mqtt-api.md)"
    )
    camera: CameraSettings = Field(default_factory=CameraSettings)
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)
    doors: dict[str, DoorSettings] = Field(
        default_factory=dict, description="the doors of this terminal by door ID (docs/decisions.md)"
    )

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        return _identifier("device id", value)

    @field_validator("doors")
    @classmethod
    def _door_ids(cls, value: dict[str, DoorSettings]) -> dict[str, DoorSettings]:
        for door in value:
            _identifier("door id", door)
        return value


def _identifier(kind: str, value: str) -> str:
    try:
        return check_id(kind, value)
    except ConfigError as exc:
        raise ValueError(exc.message) from None


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest key of ``loc`` that exists in the composed YAML."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def config_errors(text: str, source: str) -> tuple[Config | None, list[str]]:
    """Parse and validate; returns the config or every error as ``source:line: path: message``."""
    try:
        data: Any = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        return None, [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [f"{source}: the top level must be a mapping, not {type(data).__name__}"]
    try:
        return Config.model_validate(data), []
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            path = ".".join(str(p) for p in loc) or "(top)"
            line = _line_of(root, loc)
            where = f"{source}:{line}" if line else source
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            errors.append(f"{where}: {path}: {message}")
        return None, errors


def config_path(path: Path | None) -> Path | None:
    """``path``, else ``$EDGED_CONFIG``, else None (the built-in defaults)."""
    if path is not None:
        return path
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else None


def check_config(path: Path) -> tuple[Config | None, list[str]]:
    """Read and validate the file at ``path``: the config, or every error found."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    return config_errors(text, str(path))


def load_config(path: Path | None) -> Config:
    """The config at ``path`` (or ``$EDGED_CONFIG``), or the defaults when neither is set."""
    path = config_path(path)
    if path is None:
        return Config()
    config, errors = check_config(path)
    if config is None:
        more = f" (and {len(errors) - 1} more: run edged check-config)" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more)
    return config
