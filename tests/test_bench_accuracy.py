"""``edged bench accuracy`` without a threshold to score at: a model with no calibration on a pairs
file without folds is refused (never a made-up threshold)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.errors import BadArgument
from edged.inference.manifest import Manifest
from edged.pipeline.image import ImageLimits
from edged.pipeline.pipeline import FacePipeline, PipelineSettings
from edged_bench.accuracy import run_accuracy
from edged_bench.settings import AccuracyOptions

REPO = Path(__file__).resolve().parents[1]


def test_an_uncalibrated_model_without_folds_is_refused(tmp_path: Path) -> None:
    # mbf has no flip-averaged calibration; the pairs have no fold column
    settings = PipelineSettings(recognition_model="mbf", flip_average=True)
    pipeline = FacePipeline.load(Manifest.load(REPO / "models"), settings)
    assert pipeline.calibration is None
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b,same_person\na.png,b.png,1\n", encoding="utf-8")
    options = AccuracyOptions(pairs, tmp_path, "int8", "mbf", False, None, False)
    with pytest.raises(BadArgument, match=r"mbf_s8_v1_int8\.tflite has no calibration.*no folds"):
        run_accuracy(options, pipeline, ImageLimits())
