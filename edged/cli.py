"""The ``edged`` command line: the parser, ``--version``, and the pipeline and daemon commands
(detect, verify, demo, run, check-config; ``bench`` hands over to the benchmarks in tools/bench).
The directory and request commands are in ``cli_directory``, ``cli_faces`` and ``cli_request``.

Arguments become frozen settings (``cli_options``) before a command runs. Parsing and output only;
the work is done elsewhere, in modules each command imports when it runs: ``edged --help`` and
``edged --version`` load no numpy, OpenCV, TFLite runtime, paho, cryptography or pydantic.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged import __version__, cli_directory, cli_faces, cli_request, environment, log
from edged.cli_options import (
    GlobalOptions,
    add_command,
    bounded_float,
    command_of,
    effective_config,
    load_pipeline,
    parse_far,
    settings_from,
)
from edged.errors import BadArgument, ConfigError, EdgedError, NoFaceDetected

if TYPE_CHECKING:
    from edged.pipeline.image import ImageLimits
    from edged.pipeline.pipeline import FacePipeline
    from edged.types import Face, ImageRGB

BENCH_INSTALL = "python3 -m pip install -e tools/bench"
"""How to install the benchmarks (from the edged source tree); ``edged bench`` names it when absent."""


@dataclass(frozen=True, slots=True)
class DetectOptions:
    image: Path
    json: bool


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    image_a: Path
    image_b: Path
    far: float | None
    json: bool


@dataclass(frozen=True, slots=True)
class DemoOptions:
    mqtt: str | None
    device_id: str
    duration: float
    pipeline_only: bool


@dataclass(frozen=True, slots=True)
class RunOptions:
    no_mqtt: bool


@dataclass(frozen=True, slots=True)
class CheckConfigOptions:
    file: Path | None


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """``edged bench [-h] BENCH …``: the arguments are the benchmarks' own (``edged_bench.cli``)."""

    bench_help: bool
    bench_args: tuple[str, ...]


# -- --version ---------------------------------------------------------------------------------------


def version_report(model_dir: Path | None) -> str:
    """edged's version, each model of the manifest (name, file, sha256 prefix) and the runtime
    packages' versions, read from the manifest and the package metadata (nothing is loaded)."""
    from edged.inference.catalog import MANIFEST_NAME, default_model_dir, model_versions, runtime_versions

    folder = model_dir or default_model_dir()
    lines = [f"edged {__version__}"]
    try:
        models = model_versions(folder)
    except OSError as exc:
        lines.append(f"models: cannot read {folder / MANIFEST_NAME}: {exc.strerror or exc}")
    except ValueError as exc:
        lines.append(f"models: {exc}")
    else:
        lines.append(f"models ({folder / MANIFEST_NAME}):")
        name_width = max((len(m.name) for m in models), default=0)
        file_width = max((len(m.file) for m in models), default=0)
        lines += [f"  {m.name:<{name_width}}  {m.file:<{file_width}}  sha256 {m.sha256[:16]}" for m in models]
    lines.append("runtime:")
    lines += [f"  {name} {version}" for name, version in runtime_versions()]
    return "\n".join(lines)


class VersionAction(argparse.Action):
    """``--version``: print ``version_report`` (of ``--model-dir`` when given before it) and exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(version_report(getattr(namespace, "model_dir", None)))
        parser.exit()


# -- the parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edged", description="On-device face verification for door terminals."
    )
    parser.add_argument(
        "--version", action=VersionAction, help="print the versions of edged, its models and runtimes"
    )
    parser.add_argument(
        "--config", type=Path, help=f"YAML configuration (default: ${environment.CONFIG}, else built-in)"
    )
    parser.add_argument(
        "--model-dir", type=Path, help="directory with manifest.yaml (default: the installed models)"
    )
    parser.add_argument("--threads", type=int, help="inference threads per model (config default 1)")
    parser.add_argument(
        "--detector", choices=("short", "full"), help="BlazeFace variant (config default short)"
    )
    parser.add_argument("--max-pixels", type=int, help="image pixel cap (config default 4096×4096)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    cli_directory.add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("detect", help="find faces in an image")
    p.add_argument("image", type=Path)
    p.add_argument("--json", action="store_true")
    add_command(p, DetectOptions, cmd_detect)

    p = sub.add_parser("verify", help="are the largest faces of two images the same person?")
    p.add_argument("image_a", type=Path)
    p.add_argument("image_b", type=Path)
    p.add_argument(
        "--far", type=parse_far, default=None, help="target false-accept rate (default: calibrated, 1e-4)"
    )
    p.add_argument("--json", action="store_true")
    add_command(p, VerifyOptions, cmd_verify)

    p = sub.add_parser(
        "bench",
        help="accuracy, identification, index, speed, daemon, API and liveness benchmarks",
        add_help=False,
    )
    p.add_argument("-h", "--help", action="store_true", dest="bench_help", help="the benchmarks and options")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="BENCH ...")
    add_command(p, BenchOptions, cmd_bench)

    p = sub.add_parser(
        "demo", help="the door daemon on a built-in camera scene, the astronaut enrolled (nothing stored)"
    )
    p.add_argument("--mqtt", metavar="mqtt://HOST:PORT", help="also publish to this broker")
    p.add_argument("--device-id", default="demo", help="MQTT device ID (default demo)")
    p.add_argument(
        "--duration",
        type=bounded_float("--duration", "a number of seconds", 86_400, " seconds"),
        default=15.0,
        help="seconds to run (default 15)",
    )
    p.add_argument("--pipeline-only", action="store_true", help="just the pipeline on the astronaut portrait")
    add_command(p, DemoOptions, cmd_demo)

    p = sub.add_parser("run", help="the door daemon: camera, doors and MQTT from the configuration")
    p.add_argument("--no-mqtt", action="store_true", help="do not connect to the broker")
    add_command(p, RunOptions, cmd_run)

    cli_directory.add_commands(sub)
    cli_faces.add_commands(sub)
    cli_directory.add_list_commands(sub)
    cli_request.add_commands(sub)

    p = sub.add_parser("check-config", help="validate a configuration file and print every error")
    p.add_argument("file", type=Path, nargs="?", help="default: --config, $EDGED_CONFIG")
    add_command(p, CheckConfigOptions, cmd_check_config)
    return parser


# -- detect, verify ----------------------------------------------------------------------------------


def quiet_read(path: Path, limits: ImageLimits) -> ImageRGB:
    """Read an image with the decoders' own stderr chatter silenced: the error, if any, is ours."""
    from edged.pipeline.image import read_image

    with log.native_stderr_silenced():
        return read_image(path, limits)


def face_json(face: Face) -> dict[str, Any]:
    det = face.detection
    return {
        "box": det.box.as_list(),
        "score": round(det.score, 4),
        "keypoints": [[round(float(x), 1), round(float(y), 1)] for x, y in det.keypoints],
        "quality": {"ok": face.quality.ok, "reasons": list(face.quality.reasons), **face.quality.measures},
    }


def cmd_detect(detect: DetectOptions, options: GlobalOptions) -> int:
    config = effective_config(options)
    pipeline = load_pipeline(config)
    image = quiet_read(detect.image, config.images)
    faces = pipeline.faces(image, embed=False)
    result = {"faces": [face_json(f) for f in faces]}
    if detect.json:
        print(json.dumps(result))
    else:
        print(f"{detect.image}: {len(faces)} face(s)")
        for i, f in enumerate(result["faces"]):
            q = f["quality"]
            verdict = "ok" if q["ok"] else ",".join(q["reasons"])
            print(f"  #{i} box={f['box']} score={f['score']:.3f} quality={verdict}")
    return 0


def largest_face(pipeline: FacePipeline, path: Path, limits: ImageLimits, warnings: list[str]) -> Face:
    image = quiet_read(path, limits)
    faces = pipeline.faces(image, embed=False)
    if not faces:
        raise NoFaceDetected(f"no face found in {path}")
    if len(faces) > 1:
        warnings.append(f"{path} has {len(faces)} faces; using the largest")
    return pipeline.embed(image, faces[0])


def cmd_verify(request: VerifyOptions, options: GlobalOptions) -> int:
    from edged.api import wire
    from edged.pipeline.verify import verify

    config = effective_config(options)
    pipeline = load_pipeline(config)
    warnings: list[str] = []
    a = largest_face(pipeline, request.image_a, config.images, warnings)
    b = largest_face(pipeline, request.image_b, config.images, warnings)
    assert a.embedding is not None and b.embedding is not None
    far = request.far if request.far is not None else config.verify.far
    result = verify(a.embedding, b.embedding, pipeline.calibration, far)
    for warning in warnings:
        print(f"edged: warning: {warning}", file=sys.stderr)
    if request.json:
        print(json.dumps({**wire.verification(result).model_dump(), "warnings": warnings}))
    else:
        verdict = "same person" if result.is_identical else "different people"
        print(
            f"{verdict}: distance {result.distance:.4f} "
            f"(threshold {result.threshold:.4f} at FAR {result.far:g}), "
            f"confidence {result.confidence:.3f}"
        )
    return 0


# -- bench, demo, run, check-config --------------------------------------------------------------------


def cmd_bench(bench: BenchOptions, options: GlobalOptions) -> int:
    try:
        from edged_bench.cli import main as bench_main
    except ModuleNotFoundError as exc:
        if exc.name not in ("edged_bench", "edged_bench.cli"):
            raise
        raise BadArgument(
            f"edged bench: the benchmarks are not installed; from the edged source tree: {BENCH_INSTALL}"
        ) from None
    argv = ("--help", *bench.bench_args) if bench.bench_help else bench.bench_args
    return bench_main(argv, options)


def cmd_demo(demo: DemoOptions, options: GlobalOptions) -> int:
    from edged.demo import demo_config, run_daemon_demo, run_demo
    from edged.mqtt.settings import BrokerAddress

    if demo.pipeline_only:
        return run_demo(load_pipeline(effective_config(options)))
    broker = None if demo.mqtt is None else BrokerAddress.parse(demo.mqtt)  # before anything starts
    config = demo_config(effective_config(options), demo.device_id)
    return run_daemon_demo(config, load_pipeline(config), broker, demo.duration)


def cmd_run(run: RunOptions, options: GlobalOptions) -> int:
    from edged.app import App
    from edged.directory.crypto import locate_key_file, read_kek
    from edged.mqtt.settings import BrokerAddress

    config = effective_config(options)
    if not options.verbose:
        log.setup(config.log_level)
    if not config.doors:
        raise ConfigError("no doors configured: add a doors: section to the configuration")
    kek = read_kek(locate_key_file(options.key_file))
    broker = None if run.no_mqtt else BrokerAddress(config.mqtt.host, config.mqtt.port)
    stop = threading.Event()
    app = App(config, cli_directory.state_dir(options, config), kek, broker, stop, sys.stdout)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with log.native_stderr_captured():  # decoders' own complaints become log lines
            try:
                app.start()
                stop.wait()
            finally:
                app.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if app.error is not None else 0


def cmd_check_config(check: CheckConfigOptions, options: GlobalOptions) -> int:
    from edged.config import check_config, config_path

    path = check.file or config_path(options.config)
    if path is None:
        raise BadArgument("name the file: edged check-config FILE (or --config / $EDGED_CONFIG)")
    config, errors = check_config(path)
    for error in errors:
        print(error, file=sys.stderr)
    if config is None:
        print(f"edged: {path}: {len(errors)} error(s)", file=sys.stderr)
        return ConfigError.exit_code
    print(f"{path}: ok")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    namespace = build_parser().parse_args(argv)
    options = settings_from(GlobalOptions, namespace)
    log.setup(logging.DEBUG if options.verbose else logging.WARNING)
    try:
        return command_of(namespace).run(namespace, options)
    except EdgedError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
