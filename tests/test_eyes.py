"""The iris landmark model (edged.pipeline.eyes) for the blink cue: the shipped file and its manifest
entry, and — on a real face with its eyes closed — the measurement that made it necessary: the face
mesh under-reports closure, the iris model does not; on the dev video's open eyes it finds no blink."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from liveness_helpers import HAMILTON, closed_eyes, track, video

from edged.errors import ModelIntegrityError
from edged.inference.manifest import Manifest
from edged.inference.runtime import TFLiteModel
from edged.pipeline import cues
from edged.pipeline.eyes import EyeModel
from edged.pipeline.fusion import LivenessSettings
from edged.pipeline.pipeline import FacePipeline
from edged.types import Face, ImageRGB

MODELS = Path(__file__).resolve().parents[1] / "models"
SETTINGS = LivenessSettings()


@pytest.fixture(scope="module")
def eyes() -> EyeModel:
    return EyeModel.load()


def test_the_shipped_file_matches_its_manifest_entry() -> None:
    entry = Manifest.load(MODELS).entry("iris_landmark")
    entry.verify()
    model = TFLiteModel(entry.path)
    assert model.inputs[0].shape == (1, 64, 64, 3)
    assert [o.shape for o in model.outputs] == [(1, 213), (1, 15)]


def test_a_changed_byte_is_refused(tmp_path: Path) -> None:
    copy = Path(shutil.copytree(MODELS, tmp_path / "models"))
    target = copy / "iris_landmark.tflite"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    target.write_bytes(bytes(blob))
    with pytest.raises(ModelIntegrityError):
        EyeModel.load(Manifest.load(copy))


def test_the_mesh_under_reports_closure_the_iris_model_does_not(
    pipeline: FacePipeline, eyes: EyeModel, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    assert astronaut_face.mesh is not None
    shut_image = closed_eyes(astronaut, astronaut_face.mesh.points)
    shut = pipeline.faces(shut_image, embed=False)[0].mesh
    assert shut is not None
    open_points = astronaut_face.mesh.points
    mesh_ratio = cues.eye_aspect_ratio(shut.points) / cues.eye_aspect_ratio(open_points)
    iris_ratio = eyes.openness(shut_image, shut.points) / eyes.openness(astronaut, open_points)
    # measured: mesh 0.66 of open (no threshold tells it from an expressive open eye, 0.70),
    # iris model 0.29
    assert mesh_ratio > SETTINGS.blink_closed_fraction
    assert iris_ratio < SETTINGS.blink_closed_fraction / 1.5


def test_a_blink_on_real_frames(
    pipeline: FacePipeline, eyes: EyeModel, astronaut: ImageRGB, astronaut_face: Face
) -> None:
    assert astronaut_face.mesh is not None
    shut = closed_eyes(astronaut, astronaut_face.mesh.points)
    frames = track(pipeline, [astronaut, astronaut, astronaut, shut, astronaut, astronaut], eyes=eyes)
    times = [f.t for f in frames]
    openness = [f.eye_openness for f in frames]
    assert all(value is not None for value in openness)
    assert (
        cues.blinks([v for v in openness if v is not None], times, SETTINGS.blink_closed_fraction).count == 1
    )
    # the same frames by the mesh's eye aspect ratio: the blink is missed
    ratios = [cues.eye_aspect_ratio(f.points) for f in frames]
    assert cues.blinks(ratios, times, SETTINGS.blink_closed_fraction).count == 0


def test_no_blink_in_the_dev_videos_open_eyes(pipeline: FacePipeline, eyes: EyeModel) -> None:
    if not HAMILTON.is_file():
        pytest.skip(f"{HAMILTON} is not here")
    # the performer's eyes stay open through frames 82-210 (looked at); his expression and head
    # turns move the openness, never by a blink's dip
    frames = track(pipeline, video(HAMILTON, step=3)[28:70], fps=29.97 / 3, eyes=eyes)
    openness = [f.eye_openness for f in frames if f.eye_openness is not None]
    found = cues.blinks(openness, [f.t for f in frames], SETTINGS.blink_closed_fraction)
    assert found.count == 0
    assert found.deepest > 0.7
