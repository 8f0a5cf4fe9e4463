"""``edged bench BENCH …``: the benchmarks' command line. ``edged`` hands over the arguments after
``bench`` with its global options (``--config``, ``--model-dir``, ``--threads`` …); here they become
each benchmark's frozen settings (``edged_bench.settings``). Argument parsing only at import: a
benchmark's module (numpy, OpenCV, the runtime) is imported when it runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from edged.cli_options import (
    GlobalOptions,
    add_command,
    command_of,
    effective_config,
    load_pipeline,
    parse_far,
)
from edged_bench.settings import (
    LIVENESS_SOURCES,
    AccuracyOptions,
    ApiOptions,
    DaemonOptions,
    IdentifyOptions,
    IndexOptions,
    LivenessOptions,
    SpeedOptions,
)

RECORD_FILE = Path("docs/BENCHMARKS.md")


def _output_options(parser: argparse.ArgumentParser) -> None:
    """``--record [FILE]`` and ``--json``, which every benchmark has."""
    parser.add_argument("--record", type=Path, nargs="?", const=RECORD_FILE, help="write to this file")
    parser.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edged bench", description="Benchmarks of edged; --record writes docs/BENCHMARKS.md sections."
    )
    bench = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")

    p = bench.add_parser("accuracy", help="verification accuracy on a pairs CSV")
    p.add_argument("--pairs", type=Path, required=True, help="CSV: image_a,image_b,same_person[,fold]")
    p.add_argument("--root", type=Path, required=True, help="directory the CSV paths are relative to")
    p.add_argument("--embedder", choices=("int8", "float32"), default="int8")
    p.add_argument("--recognition-model", choices=("dlib", "mbf"), default="dlib", help="the embedder family")
    p.add_argument("--compare", action="store_true", help="also run face_recognition (dlib) when installed")
    _output_options(p)
    add_command(p, AccuracyOptions, accuracy)

    p = bench.add_parser("identify", help="1:N identification accuracy on an identities CSV")
    p.add_argument("--root", type=Path, required=True, help="directory the CSV paths are relative to")
    p.add_argument("--identities", type=Path, required=True, help="CSV: image,identity")
    p.add_argument(
        "--far", type=parse_far, default=1e-4, help="per-comparison FAR for the threshold (default 1e-4)"
    )
    p.add_argument("--recognition-model", choices=("dlib", "mbf"), default="dlib", help="the embedder family")
    _output_options(p)
    add_command(p, IdentifyOptions, identify)

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
        "--recognition-model",
        choices=("dlib", "mbf"),
        default="dlib",
        help="template statistics: dlib (128-d, fitted to LFW) or mbf (512-d unit vectors, fitted to LFW)",
    )
    _output_options(p)
    add_command(p, IndexOptions, index)

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
    _output_options(p)
    add_command(p, DaemonOptions, daemon)

    p = bench.add_parser(
        "api", help="the face operations over MQTT: requests/s and round trip, v5 and 3.1.1, vs in-process"
    )
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--seconds", type=float, help="seconds per measurement (default 2.5)")
    amount.add_argument("--requests", type=int, help="requests per measurement instead of a duration")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients of the multi-client runs (4)")
    _output_options(p)
    add_command(p, ApiOptions, api)

    p = bench.add_parser("speed", help="per-stage latency on 640×480 and 1280×720 frames")
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument(
        "--image", type=Path, help="a one-face image to build the frames from (default: astronaut)"
    )
    p.add_argument("--compare", action="store_true", help="also run face_recognition (dlib) when installed")
    _output_options(p)
    add_command(p, SpeedOptions, speed)

    p = bench.add_parser(
        "liveness", help="presentation-attack detection: APCER per attack type, BPCER (ISO/IEC 30107-3)"
    )
    p.add_argument("--limit", type=int, help="at most N presentations per kind (default: the full run)")
    p.add_argument("--frames", type=int, default=12, help="frames per sequence, 10 fps (12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic attacks and head turns (0)")
    p.add_argument("--lfw", type=Path, default=LIVENESS_SOURCES["lfw"], help="lfw-dev (bona fide stills)")
    p.add_argument("--dev", type=Path, default=LIVENESS_SOURCES["dev"], help="the dev face set and its video")
    p.add_argument(
        "--samples",
        type=Path,
        default=LIVENESS_SOURCES["samples"],
        help="the upstream sample images F1, F2, T1",
    )
    _output_options(p)
    add_command(p, LivenessOptions, liveness)
    return parser


def accuracy(settings: AccuracyOptions, options: GlobalOptions) -> int:
    from edged_bench.accuracy import run_accuracy

    config = effective_config(
        options, embedder=settings.embedder, recognition_model=settings.recognition_model
    )
    return run_accuracy(settings, load_pipeline(config), config.images)


def identify(settings: IdentifyOptions, options: GlobalOptions) -> int:
    from edged_bench.identify import run_identify

    config = effective_config(options, recognition_model=settings.recognition_model)
    return run_identify(settings, load_pipeline(config), config.images)


def index(settings: IndexOptions, options: GlobalOptions) -> int:
    from edged_bench.index import run_index

    effective_config(options)  # a bad configuration or override is reported, as for every benchmark
    return run_index(settings)


def daemon(settings: DaemonOptions, options: GlobalOptions) -> int:
    from edged_bench.daemon import run_daemon_bench

    config = effective_config(options)
    return run_daemon_bench(settings, load_pipeline(config), config)


def api(settings: ApiOptions, options: GlobalOptions) -> int:
    from edged_bench.api import run_api_bench

    config = effective_config(options)
    return run_api_bench(settings, load_pipeline(config), config)


def speed(settings: SpeedOptions, options: GlobalOptions) -> int:
    from edged.inference.manifest import Manifest
    from edged.pipeline.antispoof import AntiSpoof
    from edged.pipeline.embed import FaceEmbedder
    from edged.pipeline.pipeline import FacePipeline
    from edged_bench.speed import run_speed

    config = effective_config(options)
    manifest = Manifest.load(config.model_dir)

    def embedder(family: str, precision: str) -> FaceEmbedder:
        update = {"recognition_model": family, "embedder": precision, "threads": 1, "model_threads": {}}
        return FacePipeline.load(manifest, config.pipeline.model_copy(update=update)).embedder

    def mbf() -> FacePipeline:
        update = {"recognition_model": "mbf", "threads": 1, "model_threads": {}}
        return FacePipeline.load(manifest, config.pipeline.model_copy(update=update))

    return run_speed(
        settings,
        lambda threads: load_pipeline(config, threads),
        lambda threads, precision: AntiSpoof.load(manifest, threads, precision),
        embedder,
        mbf,
    )


def liveness(settings: LivenessOptions, options: GlobalOptions) -> int:
    from edged.inference.manifest import Manifest
    from edged.pipeline.antispoof import AntiSpoof
    from edged_bench.liveness import run_liveness

    config = effective_config(options)
    model = AntiSpoof.load(Manifest.load(config.model_dir), config.pipeline.threads)
    return run_liveness(settings, load_pipeline(config), model, config.liveness, config.images)


def main(argv: Sequence[str], options: GlobalOptions) -> int:
    """Run ``edged bench`` with ``argv`` (the arguments after ``bench``) and ``edged``'s global options;
    ``edged.cli.main`` reports an ``EdgedError`` as its one line."""
    namespace = build_parser().parse_args(argv)
    return command_of(namespace).run(namespace, options)
