"""The edge of the ``edged`` command line: parsed arguments become frozen settings here, before any
command sees them (no ``argparse.Namespace`` reaches a command), plus the global options, the
argument types and the effective configuration.

Each leaf parser carries its ``Command``: the frozen settings class of the subcommand (a dataclass
whose fields are the parser's destinations) and the handler that takes it with the global options.
Standard library only at import time, like every ``cli*`` module: ``edged --help`` and
``edged --version`` load no numpy, OpenCV, TFLite runtime, paho, cryptography or pydantic; a
command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from edged.errors import BadArgument

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from edged.config import Config
    from edged.pipeline.pipeline import FacePipeline

__all__ = [
    "Command",
    "GlobalOptions",
    "Output",
    "add_command",
    "bounded_float",
    "command_of",
    "effective_config",
    "load_pipeline",
    "parse_far",
    "settings_from",
]

S = TypeVar("S", bound="DataclassInstance")


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    """The options before the command (``edged --config FILE --threads 2 detect …``)."""

    config: Path | None
    model_dir: Path | None
    threads: int | None
    detector: str | None
    max_pixels: int | None
    verbose: bool
    state_dir: Path | None
    key_file: Path | None


@dataclass(frozen=True, slots=True)
class Output:
    """The settings of a command whose only option is ``--json``."""

    json: bool


def settings_from(cls: type[S], namespace: argparse.Namespace) -> S:
    """The frozen settings ``cls`` built from the parsed arguments of the same names (lists become
    tuples); the one place where a ``Namespace`` is read."""
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(namespace, field.name)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


@dataclass(frozen=True, slots=True)
class Command(Generic[S]):
    """A subcommand: its frozen settings class and its handler."""

    settings: type[S]
    handler: Callable[[S, GlobalOptions], int]

    def run(self, namespace: argparse.Namespace, options: GlobalOptions) -> int:
        return self.handler(settings_from(self.settings, namespace), options)


def add_command(
    parser: argparse.ArgumentParser, settings: type[S], handler: Callable[[S, GlobalOptions], int]
) -> None:
    """Make ``handler`` the command of ``parser`` (a leaf of the parser tree)."""
    parser.set_defaults(_command=Command(settings, handler))


def command_of(namespace: argparse.Namespace) -> Command[DataclassInstance]:
    """The command the parsed arguments chose (``add_command``)."""
    command: Command[DataclassInstance] = namespace._command
    return command


def bounded_float(
    option: str, kind: str, high: float, unit: str = "", closed: bool = True
) -> Callable[[str], float]:
    """An argument type: a number above 0 and up to ``high`` (below it when not ``closed``); the
    errors name ``option`` (``--far must be between 0 and 1, not 2``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} must be {kind}, not {text!r}") from None
        if not (0 < value <= high if closed else 0 < value < high):
            raise argparse.ArgumentTypeError(f"{option} must be between 0 and {high:g}{unit}, not {text}")
        return value

    return parse


parse_far = bounded_float("--far", "a number such as 1e-4", 1, closed=False)
"""The type of ``--far`` (a target false-accept rate)."""


def effective_config(
    options: GlobalOptions, embedder: str | None = None, recognition_model: str | None = None
) -> Config:
    """The configuration file with the command-line overrides applied (validated again);
    ``embedder`` and ``recognition_model`` are the benchmarks' ``--embedder`` and
    ``--recognition-model``."""
    from pydantic import ValidationError

    from edged.config import Config, load_config

    data = load_config(options.config).model_dump()
    overrides = {
        "threads": options.threads,
        "detector": options.detector,
        "embedder": embedder,
        "recognition_model": recognition_model,
    }
    data["pipeline"].update({k: v for k, v in overrides.items() if v is not None})
    if options.max_pixels is not None:
        data["images"]["max_pixels"] = options.max_pixels
    if options.model_dir is not None:
        data["model_dir"] = options.model_dir
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][-1]).replace("_", "-")
        raise BadArgument(f"{option}: {first['msg']}") from None


def load_pipeline(config: Config, threads: int | None = None) -> FacePipeline:
    """The face pipeline of ``config`` (``threads``: the speed benchmark's 1-thread and all-cores runs)."""
    from edged.inference.manifest import Manifest
    from edged.pipeline.pipeline import FacePipeline

    settings = config.pipeline
    if threads is not None:
        settings = settings.model_copy(update={"threads": threads, "model_threads": {}})
    return FacePipeline.load(Manifest.load(config.model_dir), settings)
