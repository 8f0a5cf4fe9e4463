"""``edged bench speed``: per-stage latency for one face in 640×480 and 1280×720 frames, and the
anti-spoofing models' cost per face (int8 and their float32 references)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np

from edged.errors import NoFaceDetected
from edged.pipeline.align import chip_for
from edged.pipeline.antispoof import AntiSpoof, Precision
from edged.pipeline.embed import FaceEmbedder
from edged.pipeline.image import read_image
from edged.pipeline.pipeline import FacePipeline
from edged.pipeline.quality import assess
from edged.types import Box, ImageRGB
from edged_bench.record import markdown_table, record
from edged_bench.settings import SpeedOptions

FRAME_SIZES = ((640, 480), (1280, 720))
STAGES = ("detect", "mesh", "align+quality", "embed", "total")
ANTISPOOF = "antispoof"
"""Both anti-spoofing networks (int8) on the same face: crops, resizes, inference, softmaxes. Not
part of ``total`` (that stays the face pipeline's, comparable with earlier records)."""
ANTISPOOF_PARTS = ("MiniFASNetV2 ×2.7", "MiniFASNetV1SE ×4.0", "both")


def make_frame(image: ImageRGB, width: int, height: int) -> ImageRGB:
    """The image scaled to the frame's height and centred on a grey background."""
    scale = height / max(image.shape[:2])
    resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 110, np.uint8)
    h, w = resized.shape[:2]
    x, y = (width - w) // 2, (height - h) // 2
    frame[y : y + h, x : x + w] = resized[: height - y, : width - x]
    return frame


def time_pipeline(pipeline: FacePipeline, frame: ImageRGB, repeat: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    clock = time.perf_counter
    for _ in range(repeat):
        t0 = clock()
        detections = pipeline.detect(frame)
        t1 = clock()
        if not detections:
            raise NoFaceDetected("the benchmark frame has no detectable face")
        det = max(detections, key=lambda d: d.box.area)
        mesh = pipeline.mesher.mesh(frame, det)
        t2 = clock()
        chip = chip_for(frame, det, mesh)
        assess(frame, det, mesh, chip, pipeline.quality_limits)
        if pipeline.embedder.family.name != "dlib":  # its own chip besides the gate's (as FacePipeline)
            chip = pipeline.embedder.chip(frame, det, mesh)
        t3 = clock()
        pipeline.embedder.embed(chip)
        t4 = clock()
        for stage, value in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
            samples[stage].append(value * 1000)
    return samples


def time_antispoof(model: AntiSpoof, frame: ImageRGB, box: Box, repeat: int) -> dict[str, list[float]]:
    """ms per face of each network (crop + resize + inference + softmax) and of both together."""
    samples: dict[str, list[float]] = {part: [] for part in ANTISPOOF_PARTS}
    clock = time.perf_counter
    for _ in range(repeat):
        times = [clock()]
        for network in model.models:
            network.probabilities(frame, box)
            times.append(clock())
        for part, value in zip(ANTISPOOF_PARTS, (*np.diff(times), times[-1] - times[0]), strict=True):
            samples[part].append(float(value) * 1000)
    return samples


def face_box(pipeline: FacePipeline, frame: ImageRGB) -> Box:
    detections = pipeline.detect(frame)
    if not detections:
        raise NoFaceDetected("the benchmark frame has no detectable face")
    return max(detections, key=lambda d: d.box.area).box


def antispoof_table(
    load_antispoof: Callable[[int, Precision], AntiSpoof], frame: ImageRGB, box: Box, repeat: int
) -> tuple[str, dict[str, dict[str, object]]]:
    """int8 against float32, one thread, per network and both."""
    columns: dict[str, dict[str, list[float]]] = {}
    for precision in ("int8", "float32"):
        model = load_antispoof(1, precision)
        time_antispoof(model, frame, box, 10)  # warm-up
        columns[precision] = time_antispoof(model, frame, box, repeat)
    rows = [
        [part] + ["{:.2f} / {:.2f}".format(*stats(columns[p][part])) for p in columns]
        for part in ANTISPOOF_PARTS
    ]
    results: dict[str, dict[str, object]] = {
        f"antispoof {precision}": {
            part: dict(zip(("median_ms", "p95_ms"), stats(columns[precision][part]), strict=True))
            for part in ANTISPOOF_PARTS
        }
        for precision in columns
    }
    header = ["anti-spoofing, 1 thread (ms per face, median / p95)", "int8 (shipped)", "float32 reference"]
    return markdown_table(header, rows), results


EMBEDDERS = (("dlib", "int8"), ("dlib", "float32"), ("mbf", "int8"), ("mbf", "float32"))
ROUNDS = 5


def embedder_table(
    load_embedder: Callable[[str, str], FaceEmbedder], pipeline: FacePipeline, frame: ImageRGB, repeat: int
) -> tuple[str, dict[str, dict[str, object]]]:
    """Both precisions of both embedder families on one face's own chips, one thread, interleaved
    over ``ROUNDS`` rounds (a shared machine's load falls on all of them alike); ratios to dlib int8."""
    face = pipeline.faces(frame, embed=False)[0]
    embedders = {key: load_embedder(*key) for key in EMBEDDERS}
    chips = {key: e.chip(frame, face.detection, face.mesh) for key, e in embedders.items()}
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in EMBEDDERS}
    for key, embedder in embedders.items():
        for _ in range(5):
            embedder.embed(chips[key])  # warm-up
    per_round = max(1, repeat // ROUNDS)
    for _ in range(ROUNDS):
        for key, embedder in embedders.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                embedder.embed(chips[key])
                samples[key].append((time.perf_counter() - t0) * 1000)
    base = stats(samples[EMBEDDERS[0]])[0]
    rows: list[list[str]] = []
    results: dict[str, dict[str, object]] = {}
    for key in EMBEDDERS:
        median, p95 = stats(samples[key])
        e = embedders[key]
        rows.append(
            [
                f"{key[0]} {key[1]} ({e.model_id})",
                f"{e.dim}",
                f"{median:.2f} / {p95:.2f}",
                f"{median / base:.2f}×",
            ]
        )
        results[f"embed {key[0]} {key[1]}"] = {
            "median_ms": median,
            "p95_ms": p95,
            "ratio_vs_dlib_int8": median / base,
        }
    header = ["embedder, 1 thread (ms per face, median / p95)", "dim", "embed", "÷ dlib int8"]
    return markdown_table(header, rows), results


def time_face_recognition(frame: ImageRGB, repeat: int) -> list[float] | None:
    try:
        import face_recognition
    except ImportError:
        return None
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        locations = face_recognition.face_locations(frame)
        face_recognition.face_encodings(frame, locations[:1])
        out.append((time.perf_counter() - t0) * 1000)
    return out


def stats(values: list[float]) -> tuple[float, float]:
    return float(np.median(values)), float(np.percentile(values, 95))


def run_speed(
    settings: SpeedOptions,
    load: Callable[[int], FacePipeline],
    load_antispoof: Callable[[int, Precision], AntiSpoof] | None = None,
    load_embedder: Callable[[str, str], FaceEmbedder] | None = None,
    load_mbf: Callable[[], FacePipeline] | None = None,
) -> int:
    """``load_embedder(family, precision)``: an embedder for the embedders' table; ``load_mbf``: a
    one-thread pipeline with the mbf embedder, for its row beside dlib's (both: None skips them)."""
    source = read_image(settings.image) if settings.image else None
    if source is None:
        from edged.demo import astronaut

        # a door-distance head shot: the portrait's upper 300×300 px, the face a third of its height
        # a door-distance head shot: the portrait's upper 300×300 px, the face a third of its height
        source = astronaut()[0:300, 75:375]
    threads_options = sorted({1, os.cpu_count() or 1})
    pipelines = {t: load(t) for t in threads_options}
    load_antispoof = load_antispoof or (lambda threads, precision: AntiSpoof.load(None, threads, precision))
    antispoofs = {t: load_antispoof(t, "int8") for t in threads_options}
    results: dict[str, dict[str, object]] = {}
    rows = []
    for width, height in FRAME_SIZES:
        frame = make_frame(source, width, height)
        for threads, pipeline in pipelines.items():
            time_pipeline(pipeline, frame, 10)  # warm-up
            samples = time_pipeline(pipeline, frame, settings.repeat)
            box = face_box(pipeline, frame)
            time_antispoof(antispoofs[threads], frame, box, 10)  # warm-up
            samples[ANTISPOOF] = time_antispoof(antispoofs[threads], frame, box, settings.repeat)["both"]
            key = f"{width}x{height} threads={threads}"
            results[key] = {
                stage: dict(zip(("median_ms", "p95_ms"), stats(samples[stage]), strict=True))
                for stage in (*STAGES, ANTISPOOF)
            }
            rows.append(
                [f"edged, {width}×{height}, {threads} thread(s)"]
                + ["{:.2f} / {:.2f}".format(*stats(samples[stage])) for stage in STAGES]
                + ["{:.2f} / {:.2f}".format(*stats(samples[ANTISPOOF])), ""]
            )
        if load_mbf is not None and (width, height) == FRAME_SIZES[0]:
            mbf = load_mbf()
            time_pipeline(mbf, frame, 10)
            samples = time_pipeline(mbf, frame, settings.repeat)
            results[f"{width}x{height} threads=1 mbf"] = {
                stage: dict(zip(("median_ms", "p95_ms"), stats(samples[stage]), strict=True))
                for stage in STAGES
            }
            rows.append(
                [f"edged (mbf int8), {width}×{height}, 1 thread(s)"]
                + ["{:.2f} / {:.2f}".format(*stats(samples[stage])) for stage in STAGES]
                + ["", ""]
            )
        if settings.compare:
            reference = time_face_recognition(frame, max(5, settings.repeat // 20))
            if reference is None:
                print("edged: face_recognition is not installed; comparing skipped", file=sys.stderr)
            else:
                ours = stats(time_pipeline(pipelines[1], frame, settings.repeat)["total"])[0]
                theirs = stats(reference)
                ratio = theirs[0] / ours
                results[f"{width}x{height} face_recognition"] = {
                    "median_ms": theirs[0],
                    "p95_ms": theirs[1],
                    "ratio_vs_edged_1_thread": ratio,
                }
                rows.append(
                    [
                        f"face_recognition 1.3 (dlib), {width}×{height}",
                        "",
                        "",
                        "",
                        "",
                        "{:.2f} / {:.2f}".format(*theirs),
                        "",
                        f"{ratio:.1f}× slower than edged (1 thread)",
                    ]
                )
    header = ["pipeline (ms, median / p95)", *STAGES, ANTISPOOF, "ratio"]
    table = markdown_table(header, rows)
    frame = make_frame(source, *FRAME_SIZES[0])
    spoof_table, spoof_results = antispoof_table(
        load_antispoof, frame, face_box(pipelines[1], frame), settings.repeat
    )
    results.update(spoof_results)
    table += "\n\n" + spoof_table
    if load_embedder is not None:
        embed_table, embed_results = embedder_table(load_embedder, pipelines[1], frame, settings.repeat)
        results.update(embed_results)
        table += "\n\n" + embed_table
    print(table, file=sys.stderr if settings.json else sys.stdout)
    if settings.record:
        command = (
            "edged bench speed" + (" --compare" if settings.compare else "") + f" --repeat {settings.repeat}"
        )
        note = (
            "One face per frame: the astronaut's head and shoulders scaled to the frame height, the face "
            "≈ 30 % of it (a door camera at arm's length). `total` is detect + mesh + align + quality + "
            "embed for that face (flip averaging off, the default); face_recognition's is "
            "face_locations (HOG) + face_encodings on the same frame, in the same run. `antispoof` is "
            "both MiniFASNet networks (int8) on that face — two crops, resizes, inferences and "
            "softmaxes — and is not part of `total`; the second table compares them, per network, "
            "with their float32 references (640×480, 1 thread). The `mbf int8` row is the same pipeline "
            "with the MBF embedder (`pipeline.recognition_model: mbf`: align is then the quality gate's "
            "150×150 chip plus the 112×112 ArcFace chip). The embedders' table times `embed` alone on "
            "each family's own chip of that face, the four models interleaved over 5 rounds; its ratio "
            "column is to dlib int8 in the same run."
        )
        record(settings.record, "speed", table + "\n\n" + note, command)
    if settings.json:
        print(json.dumps(results))
    return 0
