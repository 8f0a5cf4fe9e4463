"""The model manifest (edged.inference.manifest) and the TFLite wrapper (edged.inference.runtime):
integrity checks on a copy of models/, malformed manifests, the calibration table."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edged.errors import EdgedError, ModelError, ModelIntegrityError
from edged.inference.manifest import MANIFEST_NAME, Calibration, FarThreshold, Manifest
from edged.inference.runtime import TFLiteModel
from edged.pipeline.pipeline import FacePipeline, PipelineSettings

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
KEYS = ("face_detector_short", "face_detector_full", "face_mesh", "face_embedder", "face_embedder_float32")
SETTINGS_USING = {
    "face_detector_short": PipelineSettings(),
    "face_detector_full": PipelineSettings(detector="full"),
    "face_mesh": PipelineSettings(),
    "face_embedder": PipelineSettings(),
    "face_embedder_float32": PipelineSettings(embedder="float32"),
}


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A private copy of models/ that a test may damage."""
    return Path(shutil.copytree(MODELS, tmp_path / "models"))


def manifest_data(model_dir: Path) -> dict[str, Any]:
    data = yaml.safe_load((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def write_manifest(model_dir: Path, data: object) -> None:
    (model_dir / MANIFEST_NAME).write_text(yaml.safe_dump(data), encoding="utf-8")


def flip_one_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


# ---------------------------------------------------------------------------------------------
# the shipped models


def test_every_shipped_model_matches_the_manifest() -> None:
    manifest = Manifest.load(MODELS)
    for key in KEYS:
        assert key in manifest
        entry = manifest.entry(key)
        entry.verify()
        assert entry.path.stat().st_size == entry.size, f"{key}: 'bytes' disagrees with the file"
    assert manifest.entry("face_embedder").calibration is not None


@pytest.mark.parametrize("key", KEYS)
def test_manifest_tensor_specs_match_the_models(key: str) -> None:
    item = manifest_data(MODELS)["models"][key]
    model = TFLiteModel(Manifest.load(MODELS).verified_path(key))
    for documented, actual in [
        *zip(item["inputs"], model.inputs, strict=True),
        *zip(item["outputs"], model.outputs, strict=True),
    ]:
        assert tuple(documented["shape"]) == actual.shape, (key, documented["name"])
        assert np.dtype(documented["dtype"]) == actual.dtype, (key, documented["name"])


def test_int8_embedder_takes_raw_uint8_bytes() -> None:
    model = TFLiteModel(Manifest.load(MODELS).verified_path("face_embedder"))
    (spec,) = model.inputs
    assert spec.dtype == np.uint8
    assert (spec.scale, spec.zero_point) == (1.0, 0)


def test_default_model_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, model_copy: Path) -> None:
    monkeypatch.setenv("EDGED_MODEL_DIR", str(model_copy))
    assert Manifest.load().model_dir == model_copy


# ---------------------------------------------------------------------------------------------
# integrity


@pytest.mark.parametrize("key", KEYS)
def test_a_changed_byte_is_refused(model_copy: Path, key: str) -> None:
    manifest = Manifest.load(model_copy)
    target = manifest.entry(key).path
    flip_one_byte(target)
    with pytest.raises(ModelIntegrityError) as caught:
        manifest.verified_path(key)
    assert target.name in str(caught.value)
    assert caught.value.code == "ModelIntegrity"
    # the others are untouched and still load
    other = next(k for k in KEYS if k != key)
    assert manifest.verified_path(other).is_file()
    # and the pipeline that needs the damaged model refuses to start
    with pytest.raises(ModelIntegrityError):
        FacePipeline.load(Manifest.load(model_copy), SETTINGS_USING[key])


def test_a_missing_model_file_is_a_model_error(model_copy: Path) -> None:
    (model_copy / "face_landmark.tflite").unlink()
    with pytest.raises(ModelError) as caught:
        Manifest.load(model_copy).verified_path("face_mesh")
    assert not isinstance(caught.value, ModelIntegrityError)
    assert "face_landmark.tflite" in str(caught.value)


def test_a_missing_manifest_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        Manifest.load(tmp_path)
    assert str(tmp_path / MANIFEST_NAME) in str(caught.value)


def test_an_unknown_key_names_the_known_ones() -> None:
    with pytest.raises(ModelError, match="face_mesh"):
        Manifest.load(MODELS).entry("face_recogniser")


def _drop(field: str) -> Any:
    def edit(data: dict[str, Any]) -> dict[str, Any]:
        del data["models"]["face_mesh"][field]
        return data

    return edit


def _set(key: str, field: str, value: object) -> Any:
    def edit(data: dict[str, Any]) -> dict[str, Any]:
        data["models"][key][field] = value
        return data

    return edit


def _calibration(edit_calibration: Any) -> Any:
    def edit(data: dict[str, Any]) -> dict[str, Any]:
        edit_calibration(data["models"]["face_embedder"]["calibration"])
        return data

    return edit


MALFORMED = {
    "entry-without-file": _drop("file"),
    "entry-without-sha256": _drop("sha256"),
    "bytes-not-a-number": _set("face_mesh", "bytes", "a lot"),
    "entry-not-a-mapping": lambda d: {**d, "models": {**d["models"], "face_mesh": "face_landmark.tflite"}},
    "no-models-mapping": lambda d: {"schema": 1, "models": ["face_mesh"]},
    "not-a-mapping-at-all": lambda d: ["models"],
    "calibration-without-thresholds": _calibration(lambda c: c.pop("far_thresholds")),
    "calibration-threshold-not-a-number": _calibration(
        lambda c: c["far_thresholds"][0].update(threshold="high")
    ),
    "calibration-points-not-pairs": _calibration(lambda c: c.update(confidence_points=[0.1, 0.2])),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_manifest_is_a_model_error(model_copy: Path, name: str) -> None:
    write_manifest(model_copy, MALFORMED[name](manifest_data(model_copy)))
    with pytest.raises(ModelError) as caught:
        Manifest.load(model_copy)
    assert MANIFEST_NAME in str(caught.value), str(caught.value)


def test_invalid_yaml_is_a_model_error(model_copy: Path) -> None:
    (model_copy / MANIFEST_NAME).write_text("models: [unclosed\n  - {", encoding="utf-8")
    with pytest.raises(ModelError, match="YAML"):
        Manifest.load(model_copy)


UNREADABLE_MANIFESTS: dict[str, tuple[Any, str]] = {
    "not-utf8": (lambda p: p.write_bytes(b"models:\n  face_mesh: {file: \xff}\n"), "is not UTF-8 text"),
    "deep": (lambda p: p.write_text("models: " + "[" * 10_000 + "]" * 10_000), "nests deeper than 64"),
    "huge": (lambda p: p.write_text(p.read_text() + "#\n" * 600_000), "is larger than 1,048,576 bytes"),
    "directory": (lambda p: (p.unlink(), p.mkdir()), "cannot read the model manifest"),
    "fifo": (lambda p: (p.unlink(), os.mkfifo(p)), "is not a regular file but a FIFO"),
}


@pytest.mark.parametrize("name", list(UNREADABLE_MANIFESTS))
def test_a_manifest_that_cannot_be_read_is_one_model_error(model_copy: Path, name: str) -> None:
    """Not a traceback (UnicodeDecodeError, RecursionError, IsADirectoryError) nor a hang."""
    make, reason = UNREADABLE_MANIFESTS[name]
    make(model_copy / MANIFEST_NAME)
    with pytest.raises(ModelError, match=re.escape(reason)) as caught:
        Manifest.load(model_copy)
    assert str(model_copy / MANIFEST_NAME) in str(caught.value)


def test_a_duplicate_key_in_the_manifest_is_a_model_error(model_copy: Path) -> None:
    """A second entry for the same model would silently replace the first (and its sha256)."""
    path = model_copy / MANIFEST_NAME
    text = path.read_text(encoding="utf-8")
    first = text.index("\n  face_detector_short:")
    entry_end = text.index("\n  face_", first + 1)
    path.write_text(text + text[first:entry_end] + "\n", encoding="utf-8")
    with pytest.raises(ModelError, match=r"manifest.yaml:\d+: models.face_detector_short: .* appears twice"):
        Manifest.load(model_copy)


def test_model_errors_have_stable_codes() -> None:
    assert issubclass(ModelIntegrityError, ModelError) and issubclass(ModelError, EdgedError)
    assert (ModelError.code, ModelIntegrityError.code) == ("ModelError", "ModelIntegrity")
    assert ModelIntegrityError.exit_code == ModelError.exit_code != 0


# ---------------------------------------------------------------------------------------------
# runtime wrapper


def test_a_file_that_is_not_a_model_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.tflite"
    path.write_bytes(b"TFL3" + bytes(range(256)) * 16)
    with pytest.raises(ModelError, match=r"garbage\.tflite"):
        TFLiteModel(path)


def test_wrong_input_shape_or_dtype_is_a_model_error() -> None:
    model = TFLiteModel(Manifest.load(MODELS).verified_path("face_detector_short"))
    with pytest.raises(ModelError, match="wants"):
        model.run(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ModelError, match="wants"):
        model.run(np.zeros((1, 128, 128, 3), np.uint8))
    with pytest.raises(ModelError, match="takes 1 inputs"):
        model.run()
    regressors, scores = model.run(np.zeros((1, 128, 128, 3), np.float32))
    assert regressors.shape == (1, 896, 16) and scores.shape == (1, 896, 1)


# ---------------------------------------------------------------------------------------------
# calibration


TABLE = Calibration(
    default_far=1e-4,
    default_threshold=0.48,
    thresholds=(
        FarThreshold(1e-2, 0.62, 10**7),
        FarThreshold(1e-3, 0.55, 10**7),
        FarThreshold(1e-4, 0.48, 10**7),
        FarThreshold(1e-5, 0.42, 10**7),
    ),
    points=((0.0, 1.0), (0.48, 0.5), (1.0, 0.0)),
)


@pytest.mark.parametrize(
    ("far", "threshold"),
    [
        (1e-2, 0.62),
        (1e-3, 0.55),
        (1e-4, 0.48),
        (1e-5, 0.42),
        (0.5, 0.62),  # above every row: the loosest calibrated one
        (5e-4, 0.48),  # between rows: the largest calibrated FAR not above the request
        (2e-5, 0.42),
        (1e-4 * (1 + 1e-12), 0.48),  # float noise does not skip a row
    ],
)
def test_threshold_for_picks_the_right_row(far: float, threshold: float) -> None:
    assert TABLE.threshold_for(far) == threshold


def test_threshold_for_below_the_smallest_calibrated_far_is_refused() -> None:
    with pytest.raises(EdgedError, match="1e-05"):
        TABLE.threshold_for(1e-6)


def test_shipped_calibration_is_consistent() -> None:
    calibration = Manifest.load(MODELS).entry("face_embedder").calibration
    assert calibration is not None
    assert calibration.threshold_for(calibration.default_far) == calibration.default_threshold
    rows = sorted(calibration.thresholds, key=lambda t: t.far)
    thresholds = [t.threshold for t in rows]
    assert thresholds == sorted(thresholds), "a looser FAR must never have a stricter threshold"
    assert len(set(thresholds)) == len(thresholds)


def test_confidence_is_monotone_and_one_half_at_the_default_threshold() -> None:
    calibration = Manifest.load(MODELS).entry("face_embedder").calibration
    assert calibration is not None
    assert calibration.confidence(calibration.default_threshold) == pytest.approx(0.5, abs=1e-6)
    assert calibration.confidence(0.0) == pytest.approx(1.0)
    assert calibration.confidence(2.0) == pytest.approx(0.0, abs=1e-6)
    grid = np.linspace(0.0, 2.0, 401)
    values = np.array([calibration.confidence(float(d)) for d in grid])
    assert ((values >= 0) & (values <= 1)).all()
    assert (np.diff(values) <= 0).all(), "confidence must never grow with the distance"
    # strictly decreasing across the decision region (the table saturates, rounded, far from it)
    region = (values > 0.01) & (values < 0.99)
    assert region.sum() >= 10
    assert (np.diff(values[region]) < 0).all()


def test_a_rebuilt_models_entries_keep_their_calibration_and_the_rest_stays_byte_identical(
    tmp_path: Path,
) -> None:
    # what tools/build_mbf.py and build_liveness.py write: their entries, without a calibration
    # block (calibrate.py adds that later); a rebuild must not drop it, nor touch other entries
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        import manifest_yaml
    finally:
        sys.path.pop(0)
    original = (Path(__file__).resolve().parents[1] / "models" / "manifest.yaml").read_text()
    path = tmp_path / "manifest.yaml"
    path.write_text(original)
    models = yaml.safe_load(original)["models"]
    assert "calibration" in models["mbf_embedder"]
    rebuilt = {
        key: {k: v for k, v in models[key].items() if k not in manifest_yaml.CALIBRATION_KEYS}
        for key in ("mbf_embedder", "mbf_embedder_float32")
    }
    manifest_yaml.update(path, rebuilt)
    assert path.read_text() == original
