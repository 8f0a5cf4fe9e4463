"""Verification metrics (edged_bench.metrics), table-driven on hand-made (distance, same) pairs, and
the pairs file reader of ``edged bench accuracy``.

An ``inf`` distance is a pair where an image had no detectable face: it is a non-match, never
dropped."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edged.errors import BadArgument
from edged_bench.accuracy import Pair, load_pairs
from edged_bench.metrics import accuracy_at, auc, best_threshold, eer, evaluate, far_frr, tar_at_far

INF = math.inf


def arrays(genuine: list[float], impostor: list[float]) -> tuple[np.ndarray, np.ndarray]:
    distances = np.array(genuine + impostor, np.float64)
    same = np.array([1] * len(genuine) + [0] * len(impostor), np.int64)
    return distances, same


@pytest.mark.parametrize(
    ("genuine", "impostor", "expected"),
    [
        ([0.1, 0.2], [0.8, 0.9], 0.5),  # midway across the gap
        ([0.3], [0.5], 0.4),
        ([0.1, 0.2, 0.7], [0.6, 0.65, 0.9, 1.0], 0.4),  # an outlier genuine pair does not move it
        ([0.1, INF], [0.8], 0.45),  # a failed genuine pair cannot be accepted; the gap still rules
    ],
)
def test_best_threshold(genuine: list[float], impostor: list[float], expected: float) -> None:
    distances, same = arrays(genuine, impostor)
    threshold = best_threshold(distances, same)
    assert threshold == pytest.approx(expected)
    best = accuracy_at(distances, same, threshold)
    for t in np.linspace(0.0, 1.2, 121):
        assert accuracy_at(distances, same, float(t)) <= best + 1e-12


def test_best_threshold_without_finite_distances() -> None:
    distances, same = arrays([INF], [INF])
    assert best_threshold(distances, same) == 0.0


@pytest.mark.parametrize(
    ("genuine", "impostor", "threshold", "expected"),
    [
        ([0.1, 0.2], [0.8, 0.9], 0.5, 1.0),
        ([0.1, 0.2], [0.8, 0.9], 0.85, 0.75),
        ([0.1, 0.2], [0.8, 0.9], 0.0, 0.5),
        ([0.5], [0.5], 0.5, 0.5),  # at the threshold: accepted
        ([0.1, INF], [INF, 0.9], 0.5, 0.75),  # inf: rejected, right for the impostor, wrong for the genuine
        ([INF, INF], [INF], 10.0, 1 / 3),
    ],
)
def test_accuracy_at(genuine: list[float], impostor: list[float], threshold: float, expected: float) -> None:
    distances, same = arrays(genuine, impostor)
    assert accuracy_at(distances, same, threshold) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("genuine", "impostor", "expected"),
    [
        ([0.1, 0.2, 0.3], [0.7, 0.8], 1.0),  # perfect separation
        ([0.7, 0.8], [0.1, 0.2, 0.3], 0.0),  # reversed
        ([0.5, 0.5], [0.5, 0.5, 0.5], 0.5),  # all tied
        ([0.1, 0.6], [0.5, 0.9], 0.75),  # 3 of 4 (genuine, impostor) pairs ordered right
        ([0.1, 0.5], [0.5, 0.9], 0.875),  # one tie counts half
        ([0.1, INF], [0.8], 0.5),  # the failed genuine pair ranks after every impostor
        ([0.1, INF], [INF], 0.75),  # ... and ties with a failed impostor pair
    ],
)
def test_auc(genuine: list[float], impostor: list[float], expected: float) -> None:
    distances, same = arrays(genuine, impostor)
    assert auc(distances, same) == pytest.approx(expected)


def test_auc_needs_both_classes() -> None:
    distances, same = arrays([0.1, 0.2], [])
    assert math.isnan(auc(distances, same))


@pytest.mark.parametrize(
    ("genuine", "impostor", "expected"),
    [
        ([0.1, 0.2], [0.8, 0.9], 0.0),
        ([0.8, 0.9], [0.1, 0.2], 1.0),
        ([0.5, 0.5], [0.5, 0.5], 0.5),
        ([0.1, 0.2, 0.6, 0.7], [0.3, 0.8, 0.9, 1.0], 0.25),  # 1 of 4 wrong on each side
    ],
)
def test_eer(genuine: list[float], impostor: list[float], expected: float) -> None:
    distances, same = arrays(genuine, impostor)
    assert eer(distances, same) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("genuine", "impostor", "threshold", "far", "frr"),
    [
        ([0.1, 0.2], [0.8, 0.9], 0.5, 0.0, 0.0),
        ([0.1, 0.6], [0.4, 0.9], 0.5, 0.5, 0.5),
        ([0.1, INF], [INF], 1e9, 0.0, 0.5),
    ],
)
def test_far_frr(
    genuine: list[float], impostor: list[float], threshold: float, far: float, frr: float
) -> None:
    distances, same = arrays(genuine, impostor)
    assert far_frr(distances, same, threshold) == pytest.approx((far, frr))


@pytest.mark.parametrize(
    ("genuine", "impostor", "target", "tar"),
    [
        # 10 impostors, FAR 0.1: one false accept allowed, the threshold sits below the second impostor
        ([0.1, 0.3, 0.55, 0.7], [0.5, 0.6, 0.8, 0.8, 0.9, 0.9, 1.0, 1.0, 1.1, 1.2], 0.1, 0.75),
        # FAR 1e-3 with 10 impostors: none allowed, the threshold sits below the smallest impostor
        ([0.1, 0.3, 0.55, 0.7], [0.5, 0.6, 0.8, 0.8, 0.9, 0.9, 1.0, 1.0, 1.1, 1.2], 1e-3, 0.5),
        ([0.1, 0.2], [0.8, 0.9], 1e-4, 1.0),
        ([0.8, 0.9], [0.1, 0.2], 1e-4, 0.0),
    ],
)
def test_tar_at_far(genuine: list[float], impostor: list[float], target: float, tar: float) -> None:
    distances, same = arrays(genuine, impostor)
    value, threshold = tar_at_far(distances, same, target)
    assert value == pytest.approx(tar)
    far, _ = far_frr(distances, same, threshold)
    assert far <= target


@pytest.mark.parametrize(
    ("genuine", "impostor", "tar"),
    [
        pytest.param([0.1, INF], [0.8, 0.9], 0.5, id="failed-genuine-pair"),
        # every impostor pair failed too: no impostor bounds the threshold
        pytest.param([0.1, INF], [INF], 0.5, id="failed-genuine-and-impostor-pairs"),
        pytest.param([INF, INF], [INF, INF], 0.0, id="every-pair-failed"),
    ],
)
def test_tar_at_far_never_accepts_a_failed_pair(
    genuine: list[float], impostor: list[float], tar: float
) -> None:
    distances, same = arrays(genuine, impostor)
    value, _ = tar_at_far(distances, same, 1e-3)
    assert value == pytest.approx(tar), f"TAR {value} counts a pair without a face as a match"


def test_evaluate_without_folds_uses_the_default_threshold() -> None:
    distances, same = arrays([0.3, 0.6, INF], [0.4, 0.7, INF])
    report = evaluate(distances, same, None, 0.5, failures=2)
    # 0.3 accepted ✓, 0.6 rejected ✗, inf ✗ | 0.4 accepted ✗, 0.7 ✓, inf ✓
    assert report.accuracy == pytest.approx(0.5)
    assert report.accuracy_std == 0.0
    assert report.threshold == 0.5
    assert report.pairs == 6
    assert report.failures == 2
    assert "default" in report.protocol
    assert set(report.tar_at_far) == {"1e-3", "1e-4"}


def test_evaluate_with_folds_chooses_the_threshold_on_the_other_folds() -> None:
    # fold 0 separates at 0.3..0.5, fold 1 at 0.6..0.8: each fold is judged by the other's threshold
    distances = np.array([0.3, 0.5, 0.6, 0.8])
    same = np.array([1, 0, 1, 0])
    folds = np.array([0, 0, 1, 1])
    report = evaluate(distances, same, folds, default_threshold=9.0, failures=0)
    # fold 0 tested at 0.7 (from fold 1): 0.3 ✓, 0.5 accepted ✗ → 0.5; fold 1 at 0.4: 0.6 ✗, 0.8 ✓ → 0.5
    assert report.accuracy == pytest.approx(0.5)
    assert report.accuracy_std == pytest.approx(0.0)
    assert report.threshold == pytest.approx((0.7 + 0.4) / 2)
    assert report.protocol.startswith("2-fold")


def test_evaluate_with_folds_on_separable_data() -> None:
    rng = np.random.default_rng(0)
    genuine, impostor = rng.uniform(0.1, 0.4, 50), rng.uniform(0.6, 1.0, 50)
    distances = np.concatenate([genuine, impostor])
    same = np.array([1] * 50 + [0] * 50)
    folds = np.tile(np.arange(5), 20)
    report = evaluate(distances, same, folds, default_threshold=0.0, failures=0)
    assert report.accuracy == 1.0
    assert 0.4 <= report.threshold <= 0.6
    assert report.auc == 1.0
    assert report.eer == 0.0
    assert report.protocol.startswith("5-fold")


def test_evaluate_with_one_fold_falls_back_to_the_default_threshold() -> None:
    distances, same = arrays([0.3], [0.7])
    report = evaluate(distances, same, np.array([0, 0]), default_threshold=0.5, failures=0)
    assert report.threshold == 0.5
    assert report.accuracy == 1.0


def test_report_json_contract() -> None:
    distances, same = arrays([0.3, INF], [0.7])
    payload = evaluate(distances, same, None, 0.5, failures=1).as_json()
    assert set(payload) >= {
        "pairs",
        "failures",
        "accuracy",
        "accuracy_std",
        "auc",
        "eer",
        "tar_at_far",
        "threshold",
    }
    assert set(payload["tar_at_far"]) == {"1e-3", "1e-4"}
    assert payload["pairs"] == 3 and payload["failures"] == 1


# ---------------------------------------------------------------------------------------------
# the pairs file of ``edged bench accuracy``


def test_load_pairs_reads_pairs_and_folds(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("image_a,image_b,same_person,fold\na.jpg,b.jpg,1,0\na.jpg,c.jpg,0,1\n", encoding="utf-8")
    assert load_pairs(path) == [Pair("a.jpg", "b.jpg", 1, 0), Pair("a.jpg", "c.jpg", 0, 1)]
    path.write_text("image_a,image_b,same_person\na.jpg,b.jpg,1\n", encoding="utf-8")
    assert load_pairs(path) == [Pair("a.jpg", "b.jpg", 1, None)]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("image_a,image_b,same_person\na.jpg,b.jpg,1\na.jpg,c.jpg,2\n", ":3:"),  # not 0 or 1
        ("image_a,image_b,same_person\na.jpg,b.jpg,yes\n", ":2:"),
        ("image_a,image_b,same\na.jpg,b.jpg,1\n", ":2:"),  # missing column
        ("image_a,image_b,same_person,fold\na.jpg,b.jpg,1,0\nb.jpg,c.jpg,0,first\n", ":3:"),
        ("image_a,image_b,same_person\n", ""),  # no pairs at all
    ],
)
def test_load_pairs_errors_name_the_file_and_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadArgument) as caught:
        load_pairs(path)
    assert f"{path}{where}" in str(caught.value), str(caught.value)


def test_load_pairs_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadArgument, match=r"nothing\.csv"):
        load_pairs(tmp_path / "nothing.csv")
