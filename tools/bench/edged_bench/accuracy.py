"""``edged bench accuracy``: verification accuracy on a pairs CSV, optionally beside face_recognition."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edged.errors import BadArgument, EdgedError
from edged.pipeline.image import ImageLimits, read_image
from edged.pipeline.pipeline import FacePipeline
from edged.types import Box, FloatArray, ImageRGB
from edged_bench.metrics import Report, evaluate
from edged_bench.record import markdown_table, record
from edged_bench.settings import AccuracyOptions


@dataclass(frozen=True, slots=True)
class Pair:
    image_a: str
    image_b: str
    same: int
    fold: int | None


def read_rows(path: Path, what: str) -> list[dict[str, str]]:
    """The rows of a CSV file with a header; an unreadable file is a BadArgument naming it."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise BadArgument(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc


def load_pairs(path: Path) -> list[Pair]:
    """Read ``image_a,image_b,same_person[,fold]``; errors name the file and line."""
    rows = read_rows(path, "pairs")
    pairs = []
    for line, row in enumerate(rows, start=2):
        try:
            same = int(row["same_person"])
            if same not in (0, 1):
                raise ValueError(f"same_person must be 0 or 1, not {same}")
            fold = int(row["fold"]) if row.get("fold") not in (None, "") else None
            pairs.append(Pair(row["image_a"], row["image_b"], same, fold))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadArgument(f"{path}:{line}: bad row {row!r}: {exc}") from exc
    if not pairs:
        raise BadArgument(f"{path} has no pairs (want columns image_a,image_b,same_person[,fold])")
    return pairs


def choose_face(boxes: Sequence[Box], width: int, height: int) -> int:
    """The face the pair means: the largest box containing the image centre, else the largest."""
    cx, cy = width / 2, height / 2
    central = [i for i, b in enumerate(boxes) if b.x1 <= cx <= b.x2 and b.y1 <= cy <= b.y2]
    candidates = central or list(range(len(boxes)))
    return max(candidates, key=lambda i: boxes[i].area)


Embedder = Callable[[ImageRGB], FloatArray | None]


def edged_embedder(pipeline: FacePipeline) -> Embedder:
    def embed(image: ImageRGB) -> FloatArray | None:
        faces = pipeline.faces(image, embed=False)
        if not faces:
            return None
        h, w = image.shape[:2]
        chosen = faces[choose_face([f.detection.box for f in faces], w, h)]
        return pipeline.embed(image, chosen).embedding

    return embed


def face_recognition_embedder() -> Embedder | None:
    try:
        import face_recognition
    except ImportError:
        return None

    def embed(image: ImageRGB) -> FloatArray | None:
        locations = face_recognition.face_locations(image)
        if not locations:
            return None
        h, w = image.shape[:2]
        boxes = [Box(left, top, right, bottom) for top, right, bottom, left in locations]
        chosen = locations[choose_face(boxes, w, h)]
        return np.asarray(face_recognition.face_encodings(image, [chosen])[0], np.float32)

    return embed


def embed_images(
    names: Sequence[str], root: Path, embed: Embedder, limits: ImageLimits | None = None
) -> tuple[dict[str, FloatArray | None], float]:
    """Every image's template (None: no face or unreadable, said on stderr) and the mean s per image."""
    templates: dict[str, FloatArray | None] = {}
    start = time.perf_counter()
    for i, name in enumerate(names, 1):
        try:
            templates[name] = embed(read_image(root / name, limits))
        except EdgedError as exc:
            print(f"edged: {exc}", file=sys.stderr)
            templates[name] = None
        if i % 500 == 0:
            print(f"  … {i}/{len(names)} images", file=sys.stderr)
    return templates, (time.perf_counter() - start) / max(1, len(names))


def distances_for(
    pairs: list[Pair], root: Path, embed: Embedder, limits: ImageLimits | None = None
) -> tuple[np.ndarray, list[str], float]:
    names = sorted({p.image_a for p in pairs} | {p.image_b for p in pairs})
    templates, per_image = embed_images(names, root, embed, limits)
    failures = [name for name in names if templates[name] is None]
    distances = np.array(
        [
            float(np.linalg.norm(ta - tb))
            if (ta := templates[p.image_a]) is not None and (tb := templates[p.image_b]) is not None
            else np.inf
            for p in pairs
        ]
    )
    return distances, failures, per_image


FACE_RECOGNITION_THRESHOLD = 0.6
"""face_recognition's documented tolerance (dlib's 128-d descriptor): the reference's fixed threshold
on a pairs file without folds."""


def run_accuracy(settings: AccuracyOptions, pipeline: FacePipeline, limits: ImageLimits) -> int:
    pairs = load_pairs(settings.pairs)
    same = np.array([p.same for p in pairs], np.int64)
    folds = np.array([p.fold for p in pairs], np.int64) if all(p.fold is not None for p in pairs) else None
    calibration = pipeline.calibration
    family = pipeline.embedder.family.name
    has_folds = folds is not None and np.unique(folds).size > 1
    if calibration is None and not has_folds:
        raise BadArgument(
            f"{pipeline.embedder.model_id} has no calibration in the model manifest, and "
            f"{settings.pairs.name} has no folds to choose a threshold on: run tools/calibrate.py "
            f"--family {family} --embedder {settings.embedder}"
        )
    default = calibration.default_threshold if calibration is not None else 0.0  # folds choose it
    label = settings.embedder if family == "dlib" else f"{family}, {settings.embedder}"
    systems: dict[str, Embedder] = {f"edged ({label})": edged_embedder(pipeline)}
    if settings.compare:
        reference = face_recognition_embedder()
        if reference is None:
            print("edged: face_recognition is not installed; comparing skipped", file=sys.stderr)
        else:
            systems["face_recognition 1.3 (dlib HOG + ResNet)"] = reference
    reports: dict[str, tuple[Report, float, list[str]]] = {}
    for name, embed in systems.items():
        print(f"{name}: embedding images of {settings.pairs} …", file=sys.stderr)
        distances, failures, per_image = distances_for(pairs, settings.root, embed, limits)
        failed_pairs = sum(1 for p in pairs if p.image_a in failures or p.image_b in failures)
        # face_recognition's descriptors are dlib's: its own classic threshold, whatever edged's model
        threshold = default if name.startswith("edged") else FACE_RECOGNITION_THRESHOLD
        reports[name] = (evaluate(distances, same, folds, threshold, failed_pairs), per_image, failures)
    rows = []
    for name, (rep, per_image, failures) in reports.items():
        rows.append(
            [
                name,
                str(rep.pairs),
                f"{len(failures)} images / {rep.failures} pairs",
                f"{100 * rep.accuracy:.2f} ± {100 * rep.accuracy_std:.2f} %",
                f"{rep.auc:.4f}",
                f"{100 * rep.eer:.2f} %",
                f"{100 * rep.tar_at_far['1e-3']:.2f} %",
                f"{100 * rep.tar_at_far['1e-4']:.2f} %",
                f"{rep.threshold:.4f}",
                f"{1000 * per_image:.1f}",
            ]
        )
    header = [
        "system",
        "pairs",
        "no face",
        "accuracy",
        "AUC",
        "EER",
        "TAR@FAR1e-3",
        "TAR@FAR1e-4",
        "threshold",
        "ms/image",
    ]
    table = markdown_table(header, rows)
    first = next(iter(reports.values()))[0]
    print(table, file=sys.stderr if settings.json else sys.stdout)
    print(f"protocol: {first.protocol}", file=sys.stderr)
    if settings.record:
        command = (
            f"edged bench accuracy --pairs {settings.pairs} --root {settings.root} "
            f"--embedder {settings.embedder}"
            + (f" --recognition-model {family}" if family != "dlib" else "")
            + (" --compare" if settings.compare else "")
        )
        note = (
            f"Protocol: {first.protocol}. Images with no detected face count as failures and their pairs "
            "as non-matches. TAR@FAR on these pairs only "
            "(FAR 1e-4 below 1/impostors means zero false accepts)."
        )
        record(
            settings.record,
            f"accuracy: {settings.pairs.name} ({settings.root.name})"
            + (f", {family}" if family != "dlib" else ""),
            table + "\n\n" + note,
            command,
        )
    if settings.json:
        main_report = reports[next(iter(reports))][0].as_json()
        if len(reports) > 1:
            main_report["reference"] = {k: v[0].as_json() for k, v in list(reports.items())[1:]}
        print(json.dumps(main_report))
    return 0
