"""1:1 verification of two templates with the embedder's calibration."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from edged.errors import ModelError
from edged.inference.manifest import Calibration
from edged.pipeline.embed import distance
from edged.strict import Strict
from edged.types import FloatArray


class VerifySettings(Strict):
    far: float | None = Field(
        None, gt=0, lt=1, description="target false-accept rate for 1:1 verify (default: the calibrated 1e-3)"
    )


@dataclass(frozen=True, slots=True)
class Verification:
    is_identical: bool
    confidence: float
    distance: float
    threshold: float
    far: float


def verify(
    a: FloatArray, b: FloatArray, calibration: Calibration | None, far: float | None = None
) -> Verification:
    """Same person when the distance is at or below the calibrated threshold for ``far``
    (default: the calibration's default FAR). Confidence is the calibrated monotone map."""
    if calibration is None:
        raise ModelError("the embedder has no calibration in models/manifest.yaml; run tools/calibrate.py")
    far = calibration.default_far if far is None else far
    threshold = calibration.threshold_for(far)
    d = distance(a, b)
    return Verification(d <= threshold, calibration.confidence(d), d, threshold, far)
