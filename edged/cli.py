"""The ``edged`` command line: argument parsing and output only; the work is done elsewhere."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edged import __version__, cli_directory, cli_request, environment, log
from edged.config import Config, check_config, config_path, load_config
from edged.directory.crypto import locate_key_file, read_kek
from edged.errors import BadArgument, ConfigError, EdgedError, NoFaceDetected
from edged.inference.manifest import Manifest
from edged.log import native_stderr_silenced
from edged.pipeline.image import ImageLimits, read_image
from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.verify import verify
from edged.types import Face, ImageRGB

logger = logging.getLogger("edged.cli")


def _far(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--far must be a number such as 1e-4, not {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"--far must be between 0 and 1, not {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--duration must be a number of seconds, not {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"--duration must be between 0 and 86400 seconds, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edged", description="On-device face verification for door terminals."
    )
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
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

    p = sub.add_parser("verify", help="are the largest faces of two images the same person?")
    p.add_argument("image_a", type=Path)
    p.add_argument("image_b", type=Path)
    p.add_argument(
        "--far", type=_far, default=None, help="target false-accept rate (default: calibrated, 1e-4)"
    )
    p.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="accuracy and speed benchmarks").add_subparsers(
        dest="bench", required=True, metavar="BENCH"
    )
    p = bench.add_parser("accuracy", help="verification accuracy on a pairs CSV")
    p.add_argument("--pairs", type=Path, required=True, help="CSV: image_a,image_b,same_person[,fold]")
    p.add_argument("--root", type=Path, required=True, help="directory the CSV paths are relative to")
    p.add_argument("--embedder", choices=("int8", "float32"), default="int8")
    p.add_argument("--compare", action="store_true", help="also run face_recognition (dlib) when installed")
    p.add_argument(
        "--record", type=Path, nargs="?", const=Path("docs/BENCHMARKS.md"), help="write to this file"
    )
    p.add_argument("--json", action="store_true")

    p = bench.add_parser("identify", help="1:N identification accuracy on an identities CSV")
    p.add_argument("--root", type=Path, required=True, help="directory the CSV paths are relative to")
    p.add_argument("--identities", type=Path, required=True, help="CSV: image,identity")
    p.add_argument(
        "--far", type=_far, default=1e-4, help="per-comparison FAR for the threshold (default 1e-4)"
    )
    p.add_argument(
        "--record", type=Path, nargs="?", const=Path("docs/BENCHMARKS.md"), help="write to this file"
    )
    p.add_argument("--json", action="store_true")

    p = bench.add_parser("index", help="matching index: latency and memory at 1k–1M synthetic templates")
    p.add_argument(
        "--sizes", default="1k,10k,100k,1M", help="comma-separated template counts (1k, 1M, 50000)"
    )
    p.add_argument("--queries", type=int, default=200, help="per size: half enrolled people, half strangers")
    p.add_argument("--storages", default="float32,float16,int8")
    p.add_argument("--faces-per-identity", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-faiss", action="store_true", help="skip the faiss comparison even when installed")
    p.add_argument(
        "--record", type=Path, nargs="?", const=Path("docs/BENCHMARKS.md"), help="write to this file"
    )
    p.add_argument("--json", action="store_true")

    p = bench.add_parser(
        "daemon", help="the door daemon end to end: fps, drops, frame-to-decision latency over MQTT"
    )
    p.add_argument("--faces", default="1,3", help="face layouts to run: 1, 3 or 1,3 (default)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of the throughput run (15)")
    p.add_argument(
        "--source-fps", type=float, default=0.0, help="throughput run's source rate (0: unpaced, default)"
    )
    p.add_argument("--latency-fps", type=float, default=15.0, help="latency run's camera rate (15)")
    p.add_argument("--latency-decisions", type=int, default=50, help="decisions to time per layout (50)")
    p.add_argument(
        "--record", type=Path, nargs="?", const=Path("docs/BENCHMARKS.md"), help="write to this file"
    )
    p.add_argument("--json", action="store_true")

    p = bench.add_parser(
        "api", help="the face operations over MQTT: requests/s and round trip, v5 and 3.1.1, vs in-process"
    )
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--seconds", type=float, help="seconds per measurement (default 2.5)")
    amount.add_argument("--requests", type=int, help="requests per measurement instead of a duration")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients of the multi-client runs (4)")
    p.add_argument(
        "--record", type=Path, nargs="?", const=Path("docs/BENCHMARKS.md"), help="write to this file"
    )
    p.add_argument("--json", action="store_true")

    p = bench.add_parser("speed", help="per-stage latency on 640×480 and 1280×720 frames")
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument(
        "--image", type=Path, help="a one-face image to build the frames from (default: astronaut)"
    )
    p.add_argument("--compare", action="store_true", help="also run face_recognition (dlib) when installed")
    p.add_argument(
        "--record", type=Path, nargs="?", const=Path("docs/BENCHMARKS.md"), help="write to this file"
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "demo", help="the door daemon on a built-in camera scene, the astronaut enrolled (nothing stored)"
    )
    p.add_argument("--mqtt", metavar="mqtt://HOST:PORT", help="also publish to this broker")
    p.add_argument("--device-id", default="demo", help="MQTT device ID (default demo)")
    p.add_argument("--duration", type=_seconds, default=15.0, help="seconds to run (default 15)")
    p.add_argument("--pipeline-only", action="store_true", help="just the pipeline on the astronaut portrait")

    p = sub.add_parser("run", help="the door daemon: camera, doors and MQTT from the configuration")
    p.add_argument("--no-mqtt", action="store_true", help="do not connect to the broker")

    cli_directory.add_commands(sub)
    cli_request.add_commands(sub)

    p = sub.add_parser("check-config", help="validate a configuration file and print every error")
    p.add_argument("file", type=Path, nargs="?", help="default: --config, $EDGED_CONFIG")
    return parser


def effective_config(args: argparse.Namespace) -> Config:
    """The configuration file with the command-line overrides applied (validated again)."""
    data = load_config(args.config).model_dump()
    overrides = {
        "threads": args.threads,
        "detector": args.detector,
        "embedder": getattr(args, "embedder", None),
    }
    data["pipeline"].update({k: v for k, v in overrides.items() if v is not None})
    if args.max_pixels is not None:
        data["images"]["max_pixels"] = args.max_pixels
    if args.model_dir is not None:
        data["model_dir"] = args.model_dir
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][-1]).replace("_", "-")
        raise BadArgument(f"{option}: {first['msg']}") from None


def load_pipeline(config: Config, threads: int | None = None) -> FacePipeline:
    settings = config.pipeline
    if threads is not None:  # the speed benchmark's 1-thread / all-cores runs
        settings = settings.model_copy(update={"threads": threads, "model_threads": {}})
    return FacePipeline.load(Manifest.load(config.model_dir), settings)


def quiet_read(path: Path, limits: ImageLimits) -> ImageRGB:
    """Read an image with the decoders' own stderr chatter silenced: the error, if any, is ours."""
    with native_stderr_silenced():
        return read_image(path, limits)


def face_json(face: Face) -> dict[str, Any]:
    det = face.detection
    return {
        "box": det.box.as_list(),
        "score": round(det.score, 4),
        "keypoints": [[round(float(x), 1), round(float(y), 1)] for x, y in det.keypoints],
        "quality": {"ok": face.quality.ok, "reasons": list(face.quality.reasons), **face.quality.measures},
    }


def cmd_detect(args: argparse.Namespace) -> int:
    config = effective_config(args)
    pipeline = load_pipeline(config)
    image = quiet_read(args.image, config.images)
    faces = pipeline.faces(image, embed=False)
    result = {"faces": [face_json(f) for f in faces]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.image}: {len(faces)} face(s)")
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


def cmd_verify(args: argparse.Namespace) -> int:
    config = effective_config(args)
    pipeline = load_pipeline(config)
    warnings: list[str] = []
    a = largest_face(pipeline, args.image_a, config.images, warnings)
    b = largest_face(pipeline, args.image_b, config.images, warnings)
    assert a.embedding is not None and b.embedding is not None
    far = args.far if args.far is not None else config.verify.far
    result = verify(a.embedding, b.embedding, pipeline.calibration, far)
    for warning in warnings:
        print(f"edged: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({**result.as_json(), "warnings": warnings}))
    else:
        verdict = "same person" if result.is_identical else "different people"
        print(
            f"{verdict}: distance {result.distance:.4f} "
            f"(threshold {result.threshold:.4f} at FAR {result.far:g}), "
            f"confidence {result.confidence:.3f}"
        )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    config = effective_config(args)
    if args.bench == "accuracy":
        from edged_bench.accuracy import run_accuracy

        return run_accuracy(args, load_pipeline(config), config.images)
    if args.bench == "identify":
        from edged_bench.identify import run_identify

        return run_identify(args, load_pipeline(config), config.images)
    if args.bench == "index":
        from edged_bench.index import run_index

        return run_index(args)
    if args.bench == "daemon":
        from edged_bench.daemon import run_daemon_bench

        return run_daemon_bench(args, load_pipeline(config), config)
    if args.bench == "api":
        from edged_bench.api import run_api_bench

        return run_api_bench(args, load_pipeline(config), config)
    from edged_bench.speed import run_speed

    return run_speed(args, lambda threads: load_pipeline(config, threads))


def cmd_demo(args: argparse.Namespace) -> int:
    from edged.demo import demo_config, run_daemon_demo, run_demo

    if args.pipeline_only:
        return run_demo(load_pipeline(effective_config(args)))
    config = demo_config(effective_config(args), args.device_id)
    return run_daemon_demo(config, load_pipeline(config), args.mqtt, args.duration)


def cmd_run(args: argparse.Namespace) -> int:
    from edged.app import App

    config = effective_config(args)
    if not args.verbose:
        log.setup(config.log_level)
    if not config.doors:
        raise ConfigError("no doors configured: add a doors: section to the configuration")
    kek = read_kek(locate_key_file(args.key_file))
    mqtt_url = None if args.no_mqtt else f"mqtt://{config.mqtt.host}:{config.mqtt.port}"
    stop = threading.Event()
    app = App(config, cli_directory.state_dir(args, config), kek, mqtt_url, stop, sys.stdout)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app.start()
        stop.wait()
    finally:
        app.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if app.error is not None else 0


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or config_path(args.config)
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


COMMANDS = {
    "detect": cmd_detect,
    "verify": cmd_verify,
    "bench": cmd_bench,
    "demo": cmd_demo,
    "run": cmd_run,
    "check-config": cmd_check_config,
    **cli_request.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        if args.command in cli_directory.COMMANDS:
            return cli_directory.COMMANDS[args.command](args, effective_config(args))
        return COMMANDS[args.command](args)
    except EdgedError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
