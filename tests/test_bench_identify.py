"""``edged bench identify`` end to end on a tiny set built from scikit-image's public-domain images:
the astronaut twice (enrolled + a mated probe), the cameraman (a different person, not enrolled),
the cat (no face, not enrolled) and a "person" whose two images have no face (cannot be enrolled)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from edged.errors import BadArgument
from edged.pipeline.image import ImageLimits
from edged.pipeline.pipeline import FacePipeline
from edged.types import ImageRGB
from edged_bench.identify import Entry, load_identities, run_identify, split
from edged_bench.settings import IdentifyOptions


def write(path: Path, image: ImageRGB) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    assert cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    return path.name


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("faces")
    astronaut = data.astronaut()
    # the same person again: tighter crop, rescaled, brighter
    crop = cv2.resize(astronaut[40:400, 90:400], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    brighter = np.clip(crop.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    rows = [
        ("astronaut/astronaut_0001.png", "astronaut", astronaut),
        ("astronaut/astronaut_0002.jpg", "astronaut", brighter),
        ("cameraman/cameraman_0001.png", "cameraman", data.camera()),
        ("cat/cat_0001.png", "cat", data.chelsea()),
        ("things/things_0001.png", "things", data.coffee()),
        ("things/things_0002.png", "things", data.rocket()),
    ]
    lines = ["image,identity"]
    for name, identity, image in rows:
        write(root / name, image)
        lines.append(f"{name},{identity}")
    csv_path = root / "identities.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, csv_path


def identify_options(root: Path, identities: Path, record: Path | None = None) -> IdentifyOptions:
    """The settings ``edged bench identify`` parses into."""
    return IdentifyOptions(
        root=root, identities=identities, far=1e-4, recognition_model="dlib", record=record, json=True
    )


def test_identify_report(
    pipeline: FacePipeline, tiny_set: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root, identities = tiny_set
    bench_file = tmp_path / "BENCHMARKS.md"
    assert run_identify(identify_options(root, identities, record=bench_file), pipeline, ImageLimits()) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert set(report) >= {
        "images",
        "identities",
        "gallery",
        "mated_probes",
        "non_mated_probes",
        "unenrollable_identities",
        "no_face",
        "far",
        "threshold",
        "storage",
        "rank1_rate",
        "rank1_no_threshold",
        "fnir",
        "fpir",
        "embed_ms_per_image",
        "storages",
        "by_far",
    }
    assert report["images"] == 6
    assert report["identities"] == 4
    # counts add up: every image is the gallery image of its person or a probe
    assert report["gallery"] + report["mated_probes"] + report["non_mated_probes"] == report["images"]
    assert (report["gallery"], report["mated_probes"], report["non_mated_probes"]) == (1, 3, 2)
    assert report["unenrollable_identities"] == 1
    assert report["no_face"] == {"total": 3, "mated": 2, "non_mated": 1}
    assert report["no_face"]["mated"] + report["no_face"]["non_mated"] == report["no_face"]["total"]
    assert report["threshold"] == pytest.approx(pipeline.calibration.threshold_for(1e-4), abs=1e-4)
    # the astronaut probe is found; the two faceless "things" images are misses
    assert report["rank1_rate"] == pytest.approx(1 / 3)
    assert report["rank1_no_threshold"] == pytest.approx(1 / 3)
    assert report["fnir"] == pytest.approx(2 / 3)
    # the cameraman is the only non-mated probe with a face, and he is not the astronaut
    assert report["fpir"] == 0.0
    assert set(report["storages"]) == {"float32", "float16", "int8"}
    for result in report["storages"].values():
        assert result["rank1_rate"] + result["fnir"] == pytest.approx(1.0)
        assert result["false_positives"] == 0
        assert result["misidentified"] == 0
        assert result["search_ms"]["median"] >= 0
    assert [row["far"] for row in report["by_far"]] == sorted(
        (t.far for t in pipeline.calibration.thresholds), reverse=True
    )
    # at a looser FAR nothing gets worse for the mated probe
    assert all(row["rank1_rate"] >= report["rank1_rate"] - 1e-12 for row in report["by_far"][:2])
    assert "rank-1" in captured.err  # the table goes to stderr with --json
    text = bench_file.read_text(encoding="utf-8")
    assert "## identify: identities.csv" in text
    assert "edged bench identify --root" in text


def test_split_enrols_the_first_image_with_a_face() -> None:
    entries = [
        Entry("b/2.jpg", "b"),
        Entry("b/1.jpg", "b"),
        Entry("b/3.jpg", "b"),
        Entry("a/1.jpg", "a"),
        Entry("c/1.jpg", "c"),
        Entry("c/2.jpg", "c"),
    ]
    has_face = {"b/1.jpg": False, "b/2.jpg": True, "b/3.jpg": True, "a/1.jpg": True, "c/1.jpg": False}
    has_face["c/2.jpg"] = False
    result = split(entries, has_face)
    assert result.gallery == [Entry("b/2.jpg", "b")]
    assert result.mated == [
        Entry("b/1.jpg", "b"),
        Entry("b/3.jpg", "b"),
        Entry("c/1.jpg", "c"),
        Entry("c/2.jpg", "c"),
    ]
    assert result.non_mated == [Entry("a/1.jpg", "a")]
    assert result.unenrollable == ["c"]


def test_identities_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("image,identity\na.jpg,\n", encoding="utf-8")
    with pytest.raises(BadArgument, match=r"bad.csv:2: bad row"):
        load_identities(bad)
    bad.write_text("image,identity\na.jpg,x\na.jpg,y\n", encoding="utf-8")
    with pytest.raises(BadArgument, match="listed as 'x' and as 'y'"):
        load_identities(bad)
    bad.write_text("image,identity\n", encoding="utf-8")
    with pytest.raises(BadArgument, match="no rows"):
        load_identities(bad)
    with pytest.raises(BadArgument, match="cannot read identities file"):
        load_identities(tmp_path / "missing.csv")


def test_the_threshold_at_an_fpir_admits_at_most_that_share_of_non_mated_probes() -> None:
    from edged_bench.identify import Rank1, threshold_at_fpir

    distances = np.array([0.9, 0.5, np.inf, 0.7, 0.6, 0.8, 1.0, 1.1, 1.2, 1.3, 1.4])  # 10 with a face
    probes = Rank1([""] * distances.size, distances, [])
    t = threshold_at_fpir(probes, 0.2)  # 2 of 10 may fall within: 0.5 and 0.6, not 0.7
    assert 0.6 <= t < 0.7
    assert threshold_at_fpir(probes, 0.0) < 0.5
