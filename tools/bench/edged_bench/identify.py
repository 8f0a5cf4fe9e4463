"""``edged bench identify``: 1:N identification accuracy on a set of face images with identities.

Protocol (the issue's): every person with at least two images is enrolled with ONE image (the first in
sorted order that has a face) into a ``TemplateIndex``; their other images are *mated* probes; every
image of a person with exactly one image is a *non-mated* probe (that person is not enrolled). Each
probe's best candidate (rank 1) is looked up once; at the calibrated threshold for ``--far``:

- rank-1 identification rate: mated probes whose rank-1 candidate is the right person within the
  threshold; FNIR = 1 − that rate (no face, wrong person or beyond the threshold);
- FPIR: non-mated probes (with a face) that get any candidate within the threshold;
- also the rank-1 rate without a threshold, and mated probes given a *wrong* person within it.

Images with no face are counted: a mated one is a miss; a non-mated one cannot be a false positive
and is left out of FPIR's denominator (reported). A person with two or more images none of which has
a face cannot be enrolled: all their images count as missed mated probes.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import BadArgument
from edged.matcher import STORAGES, TemplateIndex
from edged.pipeline.image import ImageLimits
from edged.pipeline.pipeline import FacePipeline
from edged.types import FloatArray
from edged_bench.accuracy import edged_embedder, embed_images, read_rows
from edged_bench.index import one_thread
from edged_bench.record import markdown_table, record
from edged_bench.settings import IdentifyOptions

HEADLINE_STORAGE = "float16"
"""The storage the headline numbers are for: the index's default."""


@dataclass(frozen=True, slots=True)
class Entry:
    image: str
    identity: str


def load_identities(path: Path) -> list[Entry]:
    """Read ``image,identity`` rows; errors name the file and line."""
    rows = read_rows(path, "identities")
    seen: dict[str, str] = {}
    entries = []
    for line, row in enumerate(rows, start=2):
        image, identity = (row.get("image") or "").strip(), (row.get("identity") or "").strip()
        if not image or not identity:
            raise BadArgument(f"{path}:{line}: bad row {row!r}: want columns image,identity, both non-empty")
        if image in seen:
            if seen[image] != identity:
                raise BadArgument(f"{path}:{line}: {image} is listed as {seen[image]!r} and as {identity!r}")
            continue
        seen[image] = identity
        entries.append(Entry(image, identity))
    if not entries:
        raise BadArgument(f"{path} has no rows (want columns image,identity)")
    return entries


@dataclass(slots=True)
class Split:
    """Who is enrolled with which image, and the probes."""

    gallery: list[Entry] = field(default_factory=list)
    mated: list[Entry] = field(default_factory=list)
    non_mated: list[Entry] = field(default_factory=list)
    unenrollable: list[str] = field(default_factory=list)


def split(entries: list[Entry], has_face: dict[str, bool]) -> Split:
    by_identity: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        by_identity[entry.identity].append(entry.image)
    out = Split()
    for identity in sorted(by_identity):
        images = sorted(by_identity[identity])
        if len(images) == 1:
            out.non_mated.append(Entry(images[0], identity))
            continue
        enrolled = next((image for image in images if has_face[image]), None)
        if enrolled is None:
            out.unenrollable.append(identity)
        else:
            out.gallery.append(Entry(enrolled, identity))
        out.mated.extend(Entry(image, identity) for image in images if image != enrolled)
    return out


def embed_all(
    images: list[str], root: Path, pipeline: FacePipeline, limits: ImageLimits | None
) -> tuple[dict[str, FloatArray | None], float]:
    """Every image's template (None: no face or unreadable) and the mean time per image."""
    return embed_images(images, root, edged_embedder(pipeline), limits)


@dataclass(frozen=True, slots=True)
class Rank1:
    """Each probe's rank-1 candidate: identity and distance (``""`` / inf: no face or no gallery)."""

    identity: list[str]
    distance: np.ndarray
    search_ms: list[float]


def rank1(index: TemplateIndex, probes: list[Entry], templates: dict[str, FloatArray | None]) -> Rank1:
    identity, distance, timing = [], [], []
    for probe in probes:
        template = templates[probe.image]
        if template is None:
            identity.append("")
            distance.append(np.inf)
            continue
        t0 = time.perf_counter()
        found = index.search(template, 1)
        timing.append((time.perf_counter() - t0) * 1000)
        identity.append(found[0].owner_id if found else "")
        distance.append(found[0].distance if found else np.inf)
    return Rank1(identity, np.array(distance, np.float64), timing)


def rates(split_: Split, mated: Rank1, non_mated: Rank1, threshold: float) -> dict[str, Any]:
    truth = np.array([entry.identity for entry in split_.mated], dtype=object)
    right = np.array(mated.identity, dtype=object) == truth
    within = mated.distance <= threshold
    total = max(1, len(split_.mated))
    with_face = np.isfinite(non_mated.distance)
    false_positives = int((non_mated.distance[with_face] <= threshold).sum())
    hits = int((right & within).sum())
    return {
        "threshold": round(threshold, 4),
        "rank1_rate": hits / total,
        "rank1_no_threshold": int(right.sum()) / total,
        "fnir": 1 - hits / total,
        "fpir": false_positives / max(1, int(with_face.sum())),
        "false_positives": false_positives,
        "misidentified": int((~right & within).sum()),
    }


def threshold_at_fpir(non_mated: Rank1, fpir: float) -> float:
    """The largest distance threshold at which at most ``fpir`` of the non-mated probes (with a
    face) have a candidate within it (open-set identification's operating point)."""
    distances = np.sort(non_mated.distance[np.isfinite(non_mated.distance)])
    allowed = int(np.floor(fpir * distances.size))
    if distances.size == 0:
        return 0.0
    if allowed >= distances.size:
        return float(distances[-1])
    return float(np.nextafter(distances[allowed], -np.inf))


FPIR_TARGET = 0.01
"""The open-set operating point reported beside the calibrated FARs: FNIR at FPIR 1 %."""


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p95": 0.0}
    return {"median": round(float(np.median(values)), 4), "p95": round(float(np.percentile(values, 95)), 4)}


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def run_identify(settings: IdentifyOptions, pipeline: FacePipeline, limits: ImageLimits) -> int:
    entries = load_identities(settings.identities)
    calibration = pipeline.calibration
    if calibration is None:
        raise BadArgument(
            "the embedder has no calibration in the model manifest: no threshold to identify at"
        )
    threshold = calibration.threshold_for(settings.far)
    family = pipeline.embedder.family.name
    images = sorted(entry.image for entry in entries)
    print(f"embedding {len(images)} images of {settings.identities} …", file=sys.stderr)
    templates, per_image = embed_all(images, settings.root, pipeline, limits)
    has_face = {name: template is not None for name, template in templates.items()}
    protocol = split(entries, has_face)
    no_face_mated = sum(1 for e in protocol.mated if not has_face[e.image])
    no_face_non_mated = sum(1 for e in protocol.non_mated if not has_face[e.image])
    results: dict[str, dict[str, Any]] = {}
    by_far: list[dict[str, Any]] = []
    at_fpir: dict[str, Any] = {}
    with one_thread() as threads:
        for storage in STORAGES:
            index = TemplateIndex(dim=pipeline.embedder.dim, storage=storage)
            if protocol.gallery:
                index.add_many(
                    [e.image for e in protocol.gallery],
                    [e.identity for e in protocol.gallery],
                    np.stack([t for e in protocol.gallery if (t := templates[e.image]) is not None]),
                )
            mated = rank1(index, protocol.mated, templates)
            non_mated = rank1(index, protocol.non_mated, templates)
            results[storage] = {
                **rates(protocol, mated, non_mated, threshold),
                "search_ms": _ms(mated.search_ms + non_mated.search_ms),
            }
            if storage == HEADLINE_STORAGE:
                by_far = [
                    {"far": t.far, **rates(protocol, mated, non_mated, t.threshold)}
                    for t in sorted(calibration.thresholds, key=lambda t: -t.far)
                ]
                at_fpir = rates(protocol, mated, non_mated, threshold_at_fpir(non_mated, FPIR_TARGET))
    headline = results[HEADLINE_STORAGE]
    report: dict[str, Any] = {
        "images": len(images),
        "identities": len({e.identity for e in entries}),
        "gallery": len(protocol.gallery),
        "mated_probes": len(protocol.mated),
        "non_mated_probes": len(protocol.non_mated),
        "unenrollable_identities": len(protocol.unenrollable),
        "no_face": {
            "total": sum(1 for v in has_face.values() if not v),
            "mated": no_face_mated,
            "non_mated": no_face_non_mated,
        },
        "far": settings.far,
        "threshold": round(threshold, 4),
        "storage": HEADLINE_STORAGE,
        "rank1_rate": headline["rank1_rate"],
        "rank1_no_threshold": headline["rank1_no_threshold"],
        "fnir": headline["fnir"],
        "fpir": headline["fpir"],
        "embed_ms_per_image": round(1000 * per_image, 2),
        "storages": results,
        "by_far": by_far,
        "at_fpir": {"target": FPIR_TARGET, **at_fpir},
    }
    rows = [
        [
            storage,
            _pct(r["rank1_no_threshold"]),
            _pct(r["rank1_rate"]),
            _pct(r["fnir"]),
            f"{_pct(r['fpir'])} ({r['false_positives']})",
            str(r["misidentified"]),
            "{median:.3f} / {p95:.3f}".format(**r["search_ms"]),
        ]
        for storage, r in results.items()
    ]
    header = [
        "index storage",
        "rank-1 (no threshold)",
        f"rank-1 at FAR {settings.far:g} (d ≤ {threshold:.4f})",
        "FNIR",
        "FPIR (false positives)",
        "wrong person within threshold",
        "search ms (median / p95)",
    ]
    table = markdown_table(header, rows)
    far_table = markdown_table(
        ["FAR (1:1 calibration)", "threshold", "rank-1 = 1 − FNIR", "FPIR (false positives)"],
        [
            [
                f"{r['far']:g}",
                f"{r['threshold']:.4f}",
                _pct(r["rank1_rate"]),
                f"{_pct(r['fpir'])} ({r['false_positives']})",
            ]
            for r in by_far
        ]
        + [
            [
                f"FPIR {FPIR_TARGET:.0%} (open set)",
                f"{at_fpir['threshold']:.4f}",
                _pct(at_fpir["rank1_rate"]),
                f"{_pct(at_fpir['fpir'])} ({at_fpir['false_positives']})",
            ]
        ],
    )
    counts = (
        f"{report['images']} images of {report['identities']} people: gallery {report['gallery']} (one image "
        f"each), {report['mated_probes']} mated probes, {report['non_mated_probes']} non-mated probes; "
        f"no face in {report['no_face']['total']} ({no_face_mated} mated: misses; {no_face_non_mated} "
        f"non-mated: left out of FPIR); {report['unenrollable_identities']} people could not be enrolled. "
        f"Embedding {report['embed_ms_per_image']:.1f} ms per image (detect, mesh, align, embed)."
    )
    out = sys.stderr if settings.json else sys.stdout
    print(table, file=out)
    print(f"\n{HEADLINE_STORAGE} index at each calibrated FAR:\n\n{far_table}\n\n{counts}", file=out)
    if settings.record:
        command = (
            f"edged bench identify --root {settings.root} --identities {settings.identities} "
            f"--far {settings.far:g}" + (f" --recognition-model {family}" if family != "dlib" else "")
        )
        note = (
            "Protocol: each person with ≥ 2 images is enrolled with one image (the first in sorted order "
            "with a face); their other images are mated probes; people with one image are non-mated "
            "probes (not enrolled). Rank-1 at the threshold: the best candidate is the right person and "
            "within the threshold; FNIR = 1 − that; FPIR: non-mated probes with any candidate within "
            f"it. Search: one query, k = 1, {threads}.\n\n{counts}\n\n"
            f"The {HEADLINE_STORAGE} index (the default) at each calibrated FAR:\n\n{far_table}"
        )
        record(
            settings.record,
            f"identify: {settings.identities.name} ({settings.root.name})"
            + (f", {family}" if family != "dlib" else ""),
            table + "\n\n" + note,
            command,
        )
    if settings.json:
        print(json.dumps(report))
    return 0
