"""``edged bench liveness``: presentation-attack detection measured as ISO/IEC 30107-3 counts it.

APCER per attack type (the share of attack presentations accepted: decided ``realface``) and BPCER
per kind of bona fide presentation (the share of live faces not decided ``realface``: ``uncertain``
and ``spoofface`` both reject), for three systems on the same frames:
- the model alone: the MiniFASNet pair (``pipeline/antispoof``) over the frames that pass the quality
  gate (one frame for a still, the mean over a sequence's frames), with the fusion's model thresholds;
- the cues alone: the motion cues (``pipeline/fusion.track_cues``: parallax, blink) without the
  model: any cue saying spoof → ``spoofface``, else any saying real → ``realface``, else
  ``uncertain`` (a still has no motion: always ``uncertain``);
- the fusion: ``pipeline/fusion.fuse`` over both, exactly as ``LivenessChecker.assess`` decides.

Presentations (``edged_bench.attacks``, in memory, deterministic for ``--seed``):
attacks — print still / print sequence / screen still / screen sequence built from real face photos
(the dev set's and LFW's), and the upstream sample images F1 (a print) and F2 (a phone screen);
bona fide — LFW stills (lfw-dev), the upstream sample T1, head turns re-rendered from the stills
with the face mesh's depth, and windows of the dev video. A frame without a face is left out of its
sequence (as a door's track would); a presentation left with no face (a still) or fewer than two
thirds of its frames (a sequence) is counted as a failure to acquire, outside the rates.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edged.errors import EdgedError, NoFaceDetected
from edged.pipeline.fusion import LivenessChecker, LivenessSettings, fuse, track_cues
from edged.pipeline.image import ImageLimits, read_image
from edged.pipeline.liveness import Cue, LivenessDecision, LivenessFrame, LivenessResult, PassiveModel
from edged.pipeline.pipeline import FacePipeline
from edged.types import Box, FloatArray, ImageRGB
from edged_bench import attacks
from edged_bench.record import markdown_table, record
from edged_bench.settings import LIVENESS_SOURCES, LivenessOptions

SYSTEMS = ("model", "cues", "fusion")
SYSTEM_NAMES = {"model": "model alone", "cues": "cues alone", "fusion": "fusion"}


@dataclass(frozen=True, slots=True)
class Category:
    """One kind of presentation: an attack type (APCER) or a kind of bona fide presentation
    (BPCER); ``default``: how many presentations the full run makes."""

    key: str
    name: str
    attack: bool
    sequence: bool
    default: int


CATEGORIES = (
    Category("print_still", "print, still", True, False, 40),
    Category("print_sequence", "print, moving sequence", True, True, 30),
    Category("screen_still", "screen, still", True, False, 40),
    Category("screen_sequence", "screen, moving sequence", True, True, 30),
    Category("sample_f1", "upstream sample F1 (a printed photo)", True, False, 1),
    Category("sample_f2", "upstream sample F2 (a phone screen)", True, False, 1),
    Category("lfw_still", "LFW stills (lfw-dev)", False, False, 300),
    Category("sample_t1", "upstream sample T1 (a live face)", False, False, 1),
    Category("head_turn", "head turns re-rendered from stills", False, True, 30),
    Category("video", "dev video windows (a performer on stage)", False, True, 100),
)

UNCOVERED = (
    "What the synthetic attacks do not cover: masks (paper, silicone, 3D-printed), good video "
    "replays (a screen playing a moving, blinking, turning face: the parallax of a recorded head "
    "turn survives the replay up to the screen's flatness), cut-out prints with the eyes or mouth "
    "removed, and the door camera's own capture of a real print or screen (its optics, exposure, "
    "white balance, noise and compression: the attacks here are rendered, not photographed). The "
    "bona fide head turns are re-rendered from one photograph (no blink, no expression change, no "
    "new skin visible as the head turns)."
)


@dataclass(frozen=True, slots=True)
class Presentation:
    """One presentation: its category, a name (source and seed) and its frames, ``attacks.FPS``
    apart (one frame for a still)."""

    category: str
    name: str
    frames: list[ImageRGB] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One presentation's decisions by the three systems (None: no face, a failure to acquire), the
    model's mean p(real) over its good frames, the parallax residual when measured, and whether
    no frame passed the quality gate (the model was not run: the fusion cannot say ``realface``)."""

    category: str
    name: str
    decisions: tuple[LivenessDecision, LivenessDecision, LivenessDecision] | None
    model_score: float | None
    parallax: float | None
    refused: bool = False


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the real faces come from (``--lfw``, ``--dev``, ``--samples``); a missing folder skips
    its presentations (reported)."""

    lfw: Path
    dev: Path
    samples: Path


@dataclass(frozen=True, slots=True)
class Photo:
    """A real photograph with its face's box and mesh points (for portraits and head turns)."""

    name: str
    image: ImageRGB = field(repr=False)
    box: Box
    points: FloatArray = field(repr=False)


def cue_decision(motion: Sequence[Cue]) -> LivenessDecision:
    """The cues alone: a spoof verdict wins, else a real one, else ``uncertain``."""
    verdicts = {c.verdict for c in motion}
    return "spoofface" if "spoof" in verdicts else "realface" if "real" in verdicts else "uncertain"


def judge(checker: LivenessChecker, settings: LivenessSettings, presentation: Presentation) -> Outcome:
    """The three systems' decisions on one presentation (frames without a face left out)."""
    interval = 1 / attacks.FPS
    frames: list[LivenessFrame] = []
    for index, image in enumerate(presentation.frames):
        try:
            (frame,) = checker.frames([image], interval)
        except NoFaceDetected:
            continue
        frames.append(replace(frame, t=index * interval))
    total = len(presentation.frames)
    if not frames or (total > 1 and (len(frames) < 2 or 3 * len(frames) < 2 * total)):
        return Outcome(presentation.category, presentation.name, None, None, None)
    scores = [f.model_score for f in frames if f.model_score is not None]
    # as LivenessChecker.assess: several frames → every cue, the record over when the images are
    motion = (
        track_cues(frames, settings, None, frames[-1].t + settings.challenge_window_s)
        if len(frames) > 1
        else ()
    )
    model: LivenessResult = fuse(scores, (), settings, len(frames))
    fusion = fuse(scores, motion, settings, len(frames))
    # the residual when a pair of frames moved enough to measure it (whatever the verdict)
    parallax = next((c.value for c in motion if c.name == "parallax" and math.isfinite(c.value)), None)
    return Outcome(
        presentation.category,
        presentation.name,
        (model.decision, cue_decision(motion), fusion.decision),
        float(np.mean(scores)) if scores else None,
        parallax,
        not any(f.quality_ok for f in frames),
    )


# ---------------------------------------------------------------------------------------------------
# the presentations


def _read(path: Path, limits: ImageLimits) -> ImageRGB | None:
    try:
        return read_image(path, limits)
    except (EdgedError, OSError):
        return None


CALIBRATION_COUNT = 300
"""tools/build_liveness.py calibrates the int8 models on faces of every (n // 300)-th image of
lfw-dev (sorted): those images are held out of every presentation here (in a folder of fewer than
600 images, which cannot be that set, nothing is held out)."""


def lfw_paths(root: Path) -> list[Path]:
    """Every image of lfw-dev's identities.csv, in its (sorted) order, less the images the int8
    anti-spoofing models were calibrated on; empty when absent."""
    try:
        with (root / "identities.csv").open(newline="", encoding="utf-8") as handle:
            paths = [root / row["image"] for row in csv.DictReader(handle)]
    except OSError:
        return []
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(images) < 2 * CALIBRATION_COUNT:  # not the calibration set (it would have used nearly all)
        return paths
    calibration = set(images[:: len(images) // CALIBRATION_COUNT])
    return [path for path in paths if path not in calibration]


def dev_paths(root: Path) -> list[Path]:
    """The dev set's single-face images (the canonical images of its pairs.csv), sorted."""
    try:
        with (root / "pairs.csv").open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return []
    return sorted({root / row[key] for row in rows for key in ("image_a", "image_b")})


def spread(items: Sequence[Path], count: int, offset: int = 0) -> list[Path]:
    """``count`` items spread evenly over ``items`` (deterministic), starting ``offset`` in."""
    if count <= 0 or not items:
        return []
    step = max(1, len(items) // count)
    return [items[(offset + i * step) % len(items)] for i in range(min(count, len(items)))]


class Library:
    """The real faces the presentations are built from, read and meshed once: the largest face of a
    photo, when it passes the quality gate (a sharp, near-frontal face a door would acquire; a
    partial or blurred photo makes neither a fair attack nor a fair head turn)."""

    def __init__(self, pipeline: FacePipeline, limits: ImageLimits) -> None:
        self.pipeline = pipeline
        self.limits = limits

    def face(self, path: Path | None, image: ImageRGB | None = None) -> Photo | None:
        image = image if image is not None else _read(path, self.limits) if path else None
        if image is None:
            return None
        faces = self.pipeline.faces(image, embed=False)
        if not faces or faces[0].mesh is None or not faces[0].quality.ok:
            return None
        name = path.stem if path else "astronaut"
        return Photo(name, image, faces[0].detection.box, faces[0].mesh.points)


def presentations(settings: LivenessOptions, library: Library, notes: list[str]) -> Iterator[Presentation]:
    """Every presentation of the run, built lazily (a sequence's frames exist while it is judged)."""
    sources = Sources(settings.lfw, settings.dev, settings.samples)
    lfw, dev = lfw_paths(sources.lfw), dev_paths(sources.dev)
    if not lfw:
        notes.append(f"lfw-dev not found at {sources.lfw}: LFW stills and LFW-built presentations skipped")
    if not dev:
        notes.append(f"the dev set not found at {sources.dev}: its photos and video skipped")

    def count(key: str) -> int:
        default = next(c.default for c in CATEGORIES if c.key == key)
        return default if settings.limit is None else min(default, settings.limit)

    # photos for attacks and head turns: the dev set's, then LFW's (other images than the stills')
    wanted = max(
        count(k) for k in ("print_still", "print_sequence", "screen_still", "screen_sequence", "head_turn")
    )
    faces: list[Photo] = []
    for path in [*dev, *spread(lfw, 2 * wanted, offset=7)]:
        if len(faces) >= wanted:
            break
        found = library.face(path)
        if found is not None and max(found.box.width, found.box.height) >= 60:
            faces.append(found)
    if not faces:
        from edged.demo import astronaut

        notes.append("no face photos found: attacks and head turns built from the astronaut only")
        astro = library.face(None, astronaut())
        faces = [astro] if astro else []
    makers: tuple[tuple[str, Callable[..., list[ImageRGB]], int], ...] = (
        ("print_still", attacks.print_attack, 1),
        ("print_sequence", attacks.print_attack, settings.frames),
        ("screen_still", attacks.screen_attack, 1),
        ("screen_sequence", attacks.screen_attack, settings.frames),
    )
    for number, (key, make, frames) in enumerate(makers):
        for i in range(count(key) if faces else 0):
            face = faces[i % len(faces)]
            seed = settings.seed * 1000 + number * 100 + i
            photo = attacks.portrait(face.image, face.box)
            yield Presentation(key, f"{face.name} seed {seed}", make(photo, seed, frames))
    for key, name in (
        ("sample_f1", "image_F1.jpg"),
        ("sample_f2", "image_F2.jpg"),
        ("sample_t1", "image_T1.jpg"),
    ):
        image = _read(sources.samples / name, library.limits)
        if image is None:
            notes.append(f"{sources.samples / name} not found: skipped")
        elif count(key):
            yield Presentation(key, name, [image])
    for path in spread(lfw, count("lfw_still")):
        image = _read(path, library.limits)
        if image is not None:
            yield Presentation("lfw_still", path.stem, [image])
    for i in range(count("head_turn") if faces else 0):
        face = faces[i % len(faces)]
        seed = settings.seed * 1000 + 500 + i
        yield Presentation(
            "head_turn",
            f"{face.name} seed {seed}",
            attacks.head_turn(face.image, face.points, seed, settings.frames),
        )
    video = sources.dev / "face_recognition" / "examples" / "short_hamilton_clip.mp4"
    clips = [
        window
        for phase in range(3)  # the 29.97 fps clip at ≈ 10 fps, from each of its first three frames
        for window in attacks.windows(
            attacks.video_frames(video, step=3, offset=phase), settings.frames, settings.frames // 2
        )
    ]
    if dev and not clips:
        notes.append(f"{video} could not be decoded: its windows skipped")
    for i, window in enumerate(clips[: count("video")]):
        yield Presentation("video", f"{video.name} window {i}", window)


# ---------------------------------------------------------------------------------------------------
# the report


@dataclass(frozen=True, slots=True)
class Tally:
    """One category's counts: presentations judged, failures to acquire, errors per system (attacks
    accepted or bona fide rejected) and the fusion's decisions."""

    category: Category
    judged: int
    no_face: int
    errors: tuple[int, int, int]
    fusion: dict[str, int]
    refused: int
    model_scores: tuple[float, ...]
    parallax: tuple[float, ...]

    def rate(self, system: int) -> float | None:
        return self.errors[system] / self.judged if self.judged else None


def tally(category: Category, outcomes: Sequence[Outcome]) -> Tally:
    mine = [o for o in outcomes if o.category == category.key]
    judged = [o.decisions for o in mine if o.decisions is not None]
    wrong: Callable[[LivenessDecision], bool] = (
        (lambda d: d == "realface") if category.attack else (lambda d: d != "realface")
    )
    errors = tuple(sum(wrong(d[s]) for d in judged) for s in range(3))
    fusion = {k: sum(d[2] == k for d in judged) for k in ("realface", "uncertain", "spoofface")}
    return Tally(
        category,
        len(judged),
        len(mine) - len(judged),
        (errors[0], errors[1], errors[2]),
        fusion,
        sum(o.refused for o in mine if o.decisions is not None),
        tuple(o.model_score for o in mine if o.model_score is not None),
        tuple(o.parallax for o in mine if o.parallax is not None),
    )


def cell(t: Tally, system: int) -> str:
    rate = t.rate(system)
    return "—" if rate is None else f"{100 * rate:.1f} % ({t.errors[system]}/{t.judged})"


def median(values: Sequence[float]) -> str:
    return f"{float(np.median(values)):.3f}" if values else "—"


def tables(tallies: Sequence[Tally]) -> str:
    header = ["presentations", "measure", "judged", "no face", *(SYSTEM_NAMES[s] for s in SYSTEMS)]
    rows = [
        [t.category.name, "APCER" if t.category.attack else "BPCER", str(t.judged), str(t.no_face)]
        + [cell(t, s) for s in range(3)]
        for t in tallies
    ]
    detail_header = [
        "presentations",
        "fusion: realface",
        "uncertain",
        "spoofface",
        "quality gate refused every frame",
        "model p(real), median",
        "parallax residual, median",
    ]
    detail = [
        [
            t.category.name,
            str(t.fusion["realface"]),
            str(t.fusion["uncertain"]),
            str(t.fusion["spoofface"]),
            str(t.refused),
            median(t.model_scores),
            median(t.parallax) if t.category.sequence else "",
        ]
        for t in tallies
    ]
    return markdown_table(header, rows) + "\n\n" + markdown_table(detail_header, detail)


def pooled(tallies: Sequence[Tally], keys: Sequence[str], system: int) -> tuple[int, int]:
    chosen = [t for t in tallies if t.category.key in keys]
    return sum(t.errors[system] for t in chosen), sum(t.judged for t in chosen)


def targets(tallies: Sequence[Tally]) -> list[str]:
    """The issue's targets for the fusion, met or not."""
    lines = []
    for what, keys, limit in (
        ("APCER, print and screen sequences", ("print_sequence", "screen_sequence"), 0.0),
        ("BPCER, bona fide sequences", ("head_turn", "video"), 0.05),
        ("BPCER, bona fide stills", ("lfw_still", "sample_t1"), 0.10),
    ):
        errors, judged = pooled(tallies, keys, 2)
        if not judged:
            lines.append(f"- {what}: not measured (no presentations)")
            continue
        rate = errors / judged
        verdict = "met" if rate <= limit + 1e-12 else "NOT met"
        measured = f"{100 * rate:.1f} % ({errors}/{judged})"
        line = f"- {what} (fusion): {measured}; target ≤ {100 * limit:.0f} %: {verdict}"
        refused = sum(t.refused for t in tallies if t.category.key in keys)
        if refused and not any(t.category.attack for t in tallies if t.category.key in keys):
            # every frame refused: `uncertain` without the model asked (ISO/IEC 30107-3 would count
            # it as a non-response, BPNRR, outside BPCER); shown, not taken out of the rate
            acquired = judged - refused
            line += (
                f" ({refused} of them with every frame refused by the quality gate; over the "
                f"{acquired} acquired: {100 * (errors - refused) / acquired:.1f} %)"
                if acquired
                else " (every one refused by the quality gate on every frame)"
            )
        lines.append(line)
    return lines


def reproduce(settings: LivenessOptions) -> str:
    """The command line that repeats the run (paths only where not the defaults)."""
    command = "edged bench liveness" + (f" --limit {settings.limit}" if settings.limit is not None else "")
    command += f" --frames {settings.frames} --seed {settings.seed}"
    for name, path in (("lfw", settings.lfw), ("dev", settings.dev), ("samples", settings.samples)):
        command += f" --{name} {path}" if path != LIVENESS_SOURCES[name] else ""
    return command


def protocol(settings: LivenessOptions, count: int, elapsed: float, summary: str, notes: list[str]) -> str:
    """The recorded section's text under the tables: how it was measured, the targets, what the
    synthetic attacks do not cover."""
    text = (
        "ISO/IEC 30107-3 terms. APCER: attack presentations decided `realface` / attack presentations "
        "of that type; BPCER: bona fide presentations not decided `realface` (`uncertain` or "
        "`spoofface`) / bona fide presentations. *no face*: a still without a face or a sequence with a "
        "face in fewer than two thirds of its frames (a failure to acquire, outside the rates). "
        f"Sequences: {settings.frames} frames at {attacks.FPS:.0f} fps. *model alone*: the MiniFASNet "
        "pair's p(real) (the mean over the frames that pass the quality gate) against the fusion's "
        "model thresholds; *cues alone*: the motion cues without the model (a still has none: always "
        "`uncertain`); *fusion*: `LivenessChecker`'s decision, default thresholds (`liveness:`). Attacks "
        "are rendered (`tools/bench/edged_bench/attacks.py`, in memory, seeded) from real face photos "
        "whose face passes the quality gate (the dev set's, then LFW's): prints resampled with a "
        "halftone screen, in the paper's gamut and texture, held with or without the margin visible, "
        "tilted, bent and moved by hand; screens with their sub-pixel grid (moiré), gamma, black level, "
        "reflection and bezel, tilted and moved. Bona fide sequences: head turns re-rendered from those "
        "photos with the face mesh's depth (yaw to ±12–20°), and overlapping windows of the dev video. "
        f"{count} presentations, {elapsed:.0f} s.\n\n{summary}\n\n{UNCOVERED}"
    )
    return text + ("\n\n" + " ".join(f"{n}." for n in notes) if notes else "")


def presented(outcome: Outcome) -> dict[str, object]:
    """One presentation in the JSON report: what a threshold sweep needs (the model's mean p(real),
    the parallax residual) beside the decisions."""
    return {
        "name": outcome.name,
        "decisions": dict(zip(SYSTEMS, outcome.decisions, strict=True)) if outcome.decisions else None,
        "model_score": outcome.model_score,
        "parallax": outcome.parallax,
        "quality_refused_every_frame": outcome.refused,
    }


def run_liveness(
    settings: LivenessOptions,
    pipeline: FacePipeline,
    model: PassiveModel,
    liveness: LivenessSettings,
    limits: ImageLimits,
) -> int:
    started = time.perf_counter()
    checker = LivenessChecker(pipeline, model, liveness)
    notes: list[str] = []
    outcomes = [
        judge(checker, liveness, p) for p in presentations(settings, Library(pipeline, limits), notes)
    ]
    elapsed = time.perf_counter() - started
    tallies = [tally(c, outcomes) for c in CATEGORIES]
    tallies = [t for t in tallies if t.judged or t.no_face]
    body = tables(tallies)
    summary = "\n".join(targets(tallies))
    out = sys.stderr if settings.json else sys.stdout
    print(body + "\n\n" + summary + "\n", file=out)
    for note in notes:
        print(f"edged: {note}", file=sys.stderr)
    print(UNCOVERED, file=out)
    print(f"{len(outcomes)} presentations in {elapsed:.0f} s", file=out)
    if settings.record:
        record(
            settings.record,
            "liveness",
            body + "\n\n" + protocol(settings, len(outcomes), elapsed, summary, notes),
            reproduce(settings),
        )
    if settings.json:
        print(
            json.dumps(
                {
                    t.category.key: {
                        "judged": t.judged,
                        "no_face": t.no_face,
                        "measure": "APCER" if t.category.attack else "BPCER",
                        **{s: t.rate(i) for i, s in enumerate(SYSTEMS)},
                        "errors": dict(zip(SYSTEMS, t.errors, strict=True)),
                        "fusion_decisions": t.fusion,
                        "presentations": [presented(o) for o in outcomes if o.category == t.category.key],
                    }
                    for t in tallies
                }
            )
        )
    return 0
