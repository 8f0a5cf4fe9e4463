"""Validated configuration: a typed tree (pydantic, unknown keys rejected) read from YAML.

Every field carries a description; ``config/edged.yaml`` documents them all. Errors name the YAML
path and line of each offending key, and ``edged check-config`` prints all of them at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from edged import environment
from edged.api.settings import ApiSettings
from edged.capture.source import CameraSettings
from edged.door.settings import DoorSettings
from edged.errors import ConfigError
from edged.log import LogLevel
from edged.mqtt.settings import HaSettings, MqttSettings
from edged.mqtt.topics import check_id
from edged.pipeline.fusion import LivenessSettings
from edged.pipeline.image import ImageLimits
from edged.pipeline.pipeline import PipelineSettings
from edged.pipeline.verify import VerifySettings
from edged.service.settings import DirectorySettings
from edged.strict import Strict
from edged.tracker import TrackerSettings
from edged.yamlfile import DuplicateKey, Unreadable, load_yaml, read_text


class Config(Strict):
    """The whole configuration file."""

    schema_version: Literal[1] = Field(1, description="version of this file's layout")
    device_id: str = Field(
        "edged-1", description="this terminal's ID: the MQTT topic level edged/<device_id>/…"
    )
    model_dir: Path | None = Field(
        None, description="directory with manifest.yaml (default: the installed models)"
    )
    log_level: LogLevel = Field(
        "INFO", description="the daemon's log level (-v: DEBUG); one-shot commands log WARNING"
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
    liveness: LivenessSettings = Field(
        default_factory=LivenessSettings, description="liveness cues and their thresholds (docs/liveness.md)"
    )
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

    @model_validator(mode="after")
    def _liveness_frames(self) -> Config:
        # a liveness result rests on at most window_frames frames: a door needing more never grants
        window = self.liveness.window_frames
        for name, door in self.doors.items():
            if door.liveness != "off" and door.liveness_min_frames > window:
                raise ValueError(
                    f"doors.{name}.liveness_min_frames ({door.liveness_min_frames}) is more than "
                    f"liveness.window_frames ({window}): a realface would never count"
                )
        return self


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
    """Parse and validate; returns the config or every error as ``source:line: path: message``.
    ``Unreadable`` (not listed: nothing else can be checked) for nesting too deep to compose."""
    try:
        data, root = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        return None, [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]
    except DuplicateKey as exc:
        return None, [f"{source}:{exc.line}: {exc}"]
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
    return environment.config_file()


def check_config(path: Path) -> tuple[Config | None, list[str]]:
    """Read and validate the file at ``path``: the config, or every error found. A file that cannot
    be read as YAML at all is one ``ConfigError`` naming it: unreadable, not a regular file (a
    directory, a FIFO: never waited on), over ``strict.MAX_YAML_BYTES``, not UTF-8, or nested deeper
    than ``strict.MAX_YAML_DEPTH``."""
    try:
        return config_errors(read_text(path), str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except Unreadable as exc:
        raise ConfigError(f"config {path} {exc}") from None


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
