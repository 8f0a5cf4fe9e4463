"""The embedder families (edged.pipeline.embed.FAMILIES): ``dlib`` stays the default and unchanged;
``mbf`` gives 512-d unit templates from the 112×112 ArcFace chip with its own model identity and
calibration; templates of two models never compare — in the pipeline, and in one directory shared
by terminals of both models (groups and face lists keep their model; a person of the directory
may hold templates of both); the speed benchmark's embedders table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from edged.config import Config
from edged.demo import astronaut
from edged.directory.crypto import create_key_file, read_kek
from edged.directory.scope import DirectoryScope
from edged.directory.store import Store
from edged.errors import BadArgument, ConfigError
from edged.inference.manifest import Manifest
from edged.pipeline.embed import FAMILIES, FaceEmbedder, distance
from edged.pipeline.pipeline import FacePipeline, PipelineSettings
from edged.service.faces import FaceService
from edged.service.policy import Caller
from edged.service.settings import DirectorySettings

REPO = Path(__file__).resolve().parents[1]
MANAGER = Caller("cli", "manager")


@pytest.fixture(scope="module")
def mbf() -> FacePipeline:
    return FacePipeline.load(Manifest.load(REPO / "models"), PipelineSettings(recognition_model="mbf"))


@pytest.fixture(scope="module")
def dlib() -> FacePipeline:
    return FacePipeline.load(Manifest.load(REPO / "models"))


def test_dlib_is_the_default_family(dlib: FacePipeline) -> None:
    assert PipelineSettings().recognition_model == "dlib"
    assert dlib.embedder.family is FAMILIES["dlib"]
    assert dlib.embedder.model_id == "dlib_resnet_v1_int8.tflite"
    face = dlib.faces(astronaut())[0]
    assert face.embedding is not None and face.embedding.shape == (128,)
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) > 0.05  # dlib's are not normalised


@pytest.mark.parametrize("precision", ["int8", "float32"])
def test_mbf_gives_unit_512d_templates_under_its_own_model_id(precision: str) -> None:
    settings = PipelineSettings(recognition_model="mbf", embedder=precision)  # type: ignore[arg-type]
    pipeline = FacePipeline.load(Manifest.load(REPO / "models"), settings)
    assert pipeline.embedder.model_id == f"mbf_s8_v1_{precision}.tflite"
    face = pipeline.faces(astronaut())[0]
    assert face.embedding is not None and face.embedding.shape == (512,)
    assert float(np.linalg.norm(face.embedding)) == pytest.approx(1.0, abs=1e-5)


def test_mbf_matches_the_same_face_and_not_another_at_its_calibrated_threshold(mbf: FacePipeline) -> None:
    assert mbf.calibration is not None
    threshold = mbf.calibration.threshold_for(1e-4)
    image = astronaut()
    shifted = np.ascontiguousarray(np.roll(image, (25, 40), axis=(0, 1)))
    cameraman = np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))
    a, b, c = (mbf.faces(i)[0].embedding for i in (image, shifted, cameraman))
    assert a is not None and b is not None and c is not None
    assert distance(a, b) < 0.5 < threshold  # the same photo moved: nearly the same template
    assert distance(a, c) > threshold  # another person


def test_templates_of_two_families_do_not_compare(mbf: FacePipeline, dlib: FacePipeline) -> None:
    a, b = mbf.faces(astronaut())[0], dlib.faces(astronaut())[0]
    assert a.embedding is not None and b.embedding is not None
    with pytest.raises(ValueError, match="two models"):
        distance(a.embedding, b.embedding)


@pytest.mark.parametrize("family", ["dlib", "mbf"])
def test_each_precision_has_its_own_calibration(family: str) -> None:
    manifest = Manifest.load(REPO / "models")
    loaded = {
        precision: FacePipeline.load(
            manifest,
            PipelineSettings(recognition_model=family, embedder=precision),  # type: ignore[arg-type]
        ).calibration
        for precision in ("int8", "float32")
    }
    assert loaded["int8"] is not None and loaded["float32"] is not None
    for precision, calibration in loaded.items():
        assert calibration == manifest.entry(FAMILIES[family].keys[precision]).calibration  # type: ignore[index]
    assert loaded["int8"].default_threshold != loaded["float32"].default_threshold


@pytest.mark.parametrize("family", ["dlib", "mbf"])
def test_embedding_a_found_face_later_aligns_and_judges_it_once(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the door worker finds faces without embedding them, then embeds the one it tracks: the gate's
    # chip and verdict are not made again, and the template is the one faces() would have given
    import edged.pipeline.pipeline as module

    settings = PipelineSettings(recognition_model=family)  # type: ignore[arg-type]
    pipeline = FacePipeline.load(Manifest.load(REPO / "models"), settings)
    image = astronaut()
    [found] = pipeline.faces(image, embed=False)
    [direct] = pipeline.faces(image)
    calls: list[str] = []
    monkeypatch.setattr(module, "chip_for", lambda *a: calls.append("chip_for"))
    monkeypatch.setattr(module, "assess", lambda *a: calls.append("assess"))
    embedded = pipeline.embed(image, found)
    assert calls == []
    assert embedded.quality == found.quality
    assert embedded.embedding is not None and direct.embedding is not None
    assert np.array_equal(embedded.embedding, direct.embedding)


def test_mbf_needs_the_mesh(mbf: FacePipeline) -> None:
    face = mbf.faces(astronaut(), embed=False)[0]
    with pytest.raises(ValueError, match="mesh"):
        mbf.embedder.chip(astronaut(), face.detection, None)


# ---------------------------------------------------------------------------------------------
# models side by side in one directory: two terminals' services (dlib, mbf) on one store


@pytest.fixture
def services(
    dlib: FacePipeline, mbf: FacePipeline, tmp_path: Path
) -> Iterator[tuple[FaceService, FaceService]]:
    store = Store.open(tmp_path / "state", create_key_file(tmp_path / "kek"))
    try:
        yield (
            FaceService(dlib, store, Config().directory, dlib.embedder.model_id),
            FaceService(mbf, store, Config().directory, mbf.embedder.model_id),
        )
    finally:
        store.close()


def test_an_mbf_group_enrols_trains_and_identifies(services: tuple[FaceService, FaceService]) -> None:
    _, service = services
    image = astronaut()
    service.changes.create_group(MANAGER, "lobby", "Lobby")
    person = service.changes.create_person(MANAGER, "lobby", "Eileen")
    service.changes.add_person_face(MANAGER, "lobby", person, image)
    service.changes.train(MANAGER, "lobby")
    [detected] = service.recognition.detect(MANAGER, np.ascontiguousarray(np.roll(image, (10, 20), (0, 1))))
    assert detected.face_id is not None
    [(_, candidates)] = service.recognition.identify([detected.face_id], group_id="lobby")
    assert [c.person_id for c in candidates] == [person]
    assert service.store.groups.get("lobby").recognition_model == "mbf_s8_v1_int8.tflite"


def test_two_models_never_compare(services: tuple[FaceService, FaceService]) -> None:
    old, new = services
    image = astronaut()
    old.changes.create_group(MANAGER, "staff", "Staff")
    person = old.changes.create_person(MANAGER, "staff", "Eileen")
    old.changes.add_person_face(MANAGER, "staff", person, image)
    old.changes.train(MANAGER, "staff")
    [probe] = new.recognition.detect(MANAGER, image)
    [old_probe] = old.recognition.detect(MANAGER, image)
    assert probe.face_id is not None and old_probe.face_id is not None
    both = re.escape("dlib_resnet_v1_int8.tflite; this terminal matches with mbf_s8_v1_int8.tflite")
    with pytest.raises(BadArgument, match=both):
        new.recognition.identify([probe.face_id], group_id="staff")
    with pytest.raises(BadArgument, match=both):
        new.recognition.verify_person(probe.face_id, person, "staff")
    with pytest.raises(BadArgument, match=both):
        new.changes.add_person_face(MANAGER, "staff", person, image)
    with pytest.raises(
        BadArgument, match=re.escape("detected with recognition model dlib_resnet_v1_int8.tflite")
    ):
        new.recognition.verify_faces(probe.face_id, old_probe.face_id)
    old.changes.create_face_list(MANAGER, "visitors", "Visitors")
    with pytest.raises(BadArgument, match="face list 'visitors' uses recognition model"):
        new.changes.add_list_face(MANAGER, "visitors", image)
    with pytest.raises(BadArgument, match="face list 'visitors' uses recognition model"):
        new.recognition.find_similar(probe.face_id, face_list_id="visitors")


def test_a_person_of_the_directory_holds_templates_of_both_models(
    services: tuple[FaceService, FaceService],
) -> None:
    # the person directory (no group) holds persons whose faces were enrolled under either model:
    # each terminal matches its own model's templates only
    old, new = services
    image = astronaut()
    person = old.changes.create_person(MANAGER, None, "Eileen")
    old.changes.add_person_face(MANAGER, None, person, image)
    [probe] = new.recognition.detect(MANAGER, image)
    assert probe.face_id is not None
    with pytest.raises(BadArgument, match=re.escape("no faces of recognition model mbf_s8_v1_int8.tflite")):
        new.recognition.verify_person(probe.face_id, person, None)
    new.changes.add_person_face(MANAGER, None, person, image)
    assert old.store.persons.faces.count(person) == 2
    assert new.recognition.verify_person(probe.face_id, person, None).is_identical
    [(_, found)] = new.recognition.identify([probe.face_id], person_ids=["*"])
    assert [c.person_id for c in found] == [person]
    [old_probe] = old.recognition.detect(MANAGER, image)
    assert old_probe.face_id is not None
    [(_, found)] = old.recognition.identify([old_probe.face_id], person_ids=["*"])
    assert [c.person_id for c in found] == [person]
    assert new.store.faces.templates(DirectoryScope(), model_id="mbf_s8_v1_int8.tflite").matrix.shape == (
        1,
        512,
    )


def test_no_write_reaches_a_group_of_another_model(
    services: tuple[FaceService, FaceService], dlib: FacePipeline, tmp_path: Path
) -> None:
    # neither a train (it would build an empty index and call it trained) nor an enrolment (with
    # the duplicate check off too: no person may be left behind without faces)
    old, new = services
    new.changes.create_group(MANAGER, "lobby", "Lobby")
    refusing = re.escape("person group 'lobby' uses recognition model mbf_s8_v1_int8.tflite")
    with pytest.raises(BadArgument, match=refusing):
        old.changes.train(MANAGER, "lobby")
    assert old.store.groups.get("lobby").train_status == "notstarted"
    lax = FaceService(dlib, old.store, DirectorySettings(duplicate_policy="off"), dlib.embedder.model_id)
    face = lax.changes.embed(MANAGER, astronaut())
    with pytest.raises(BadArgument, match=refusing):
        lax.changes.enrol_person(MANAGER, "lobby", None, "Eileen", [face])
    with pytest.raises(BadArgument, match=refusing):
        lax.changes.create_person(MANAGER, "lobby", "Eileen")
    assert old.store.persons.count("lobby") == 0


@pytest.mark.parametrize("kind", ["group", "large"])
def test_a_group_re_created_under_another_model_is_not_searched_by_the_door(
    services: tuple[FaceService, FaceService], tmp_path: Path, kind: str
) -> None:
    daemon, _ = services
    image = astronaut()
    daemon.changes.create_group(MANAGER, "staff", "Staff")
    person = daemon.changes.create_person(MANAGER, "staff", "Eileen")
    daemon.changes.add_person_face(MANAGER, "staff", person, image)
    daemon.changes.train(MANAGER, "staff")
    template = daemon.pipeline.faces(image)[0].embedding
    assert template is not None
    assert [m.owner_id for m in daemon.search_door("staff", template, 1, 0.6)] == [person]
    other = Store.open(tmp_path / "state", read_kek(tmp_path / "kek"))  # another process
    try:
        other.groups.delete("staff")
        other.groups.create("staff", "Staff", None, kind, "mbf_s8_v1_int8.tflite")
    finally:
        other.close()
    daemon.refresh()  # drops the stale index (its people were deleted), raises nothing
    # the door worker logs this once and decides nothing on the frame (edged.door.worker)
    with pytest.raises(BadArgument, match=re.escape("'staff' uses recognition model mbf_s8_v1_int8.tflite")):
        daemon.search_door("staff", template, 1, 0.6)


@pytest.mark.parametrize(("family", "precision"), [("mbf", "int8"), ("dlib", "float32")])
def test_a_model_without_its_calibration_does_not_start_the_directory(
    family: str, precision: str, tmp_path: Path
) -> None:
    # no flip-averaged calibration exists for these: a start-up error naming the setting and the fix
    settings = PipelineSettings(recognition_model=family, embedder=precision, flip_average=True)  # type: ignore[arg-type]
    pipeline = FacePipeline.load(Manifest.load(REPO / "models"), settings)
    assert pipeline.calibration is None
    store = Store.open(tmp_path / "state", create_key_file(tmp_path / "kek"))
    try:
        expected = f"--family {family} --embedder {precision} --flip-average --write"
        with pytest.raises(ConfigError, match=re.escape(expected)):
            FaceService(pipeline, store, Config().directory, pipeline.embedder.model_id)
    finally:
        store.close()


def test_the_speed_benchmark_times_both_precisions_of_both_families(dlib: FacePipeline) -> None:
    from edged_bench.speed import EMBEDDERS, embedder_table, make_frame

    def load(family: str, precision: str) -> FaceEmbedder:
        settings = PipelineSettings(recognition_model=family, embedder=precision)  # type: ignore[arg-type]
        return FacePipeline.load(Manifest.load(REPO / "models"), settings).embedder

    frame = make_frame(astronaut()[0:300, 75:375], 640, 480)
    table, results = embedder_table(load, dlib, frame, 5)
    assert [line.split("|")[2].strip() for line in table.splitlines()[2:]] == ["128", "128", "512", "512"]
    for family, precision in EMBEDDERS:
        cell = results[f"embed {family} {precision}"]
        assert isinstance(cell["median_ms"], float) and cell["median_ms"] > 0
    assert results["embed dlib int8"]["ratio_vs_dlib_int8"] == 1.0
