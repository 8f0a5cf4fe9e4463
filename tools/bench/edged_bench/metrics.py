"""Verification metrics over (distance, same_person) pairs. Pure numpy; distances may be ``inf``
for pairs where an image had no detectable face (scored as a non-match, never dropped)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def best_threshold(distances: Floats, same: Ints) -> float:
    """The threshold (midpoint between neighbouring distances) that maximises accuracy."""
    finite = np.unique(distances[np.isfinite(distances)])
    if finite.size == 0:
        return 0.0
    candidates = np.concatenate([[finite[0] - 1e-6], (finite[:-1] + finite[1:]) / 2, [finite[-1] + 1e-6]])
    order = np.argsort(distances, kind="stable")
    sorted_d, sorted_same = distances[order], same[order]
    # accepted(t) = pairs with d <= t; correct = genuine accepted + impostors rejected
    genuine_below = np.cumsum(sorted_same)
    impostor_below = np.cumsum(1 - sorted_same)
    n_accepted = np.searchsorted(sorted_d, candidates, side="right")
    total_impostors = int((1 - same).sum())
    g = np.where(n_accepted > 0, genuine_below[np.maximum(n_accepted - 1, 0)], 0)
    i = np.where(n_accepted > 0, impostor_below[np.maximum(n_accepted - 1, 0)], 0)
    correct = g + (total_impostors - i)
    return float(candidates[int(np.argmax(correct))])


def accuracy_at(distances: Floats, same: Ints, threshold: float) -> float:
    return float(((distances <= threshold) == (same == 1)).mean())


def auc(distances: Floats, same: Ints) -> float:
    """Area under the ROC curve: P(genuine distance < impostor distance), ties count half."""
    genuine, impostor = distances[same == 1], distances[same == 0]
    if genuine.size == 0 or impostor.size == 0:
        return float("nan")
    scores = np.concatenate([genuine, impostor])
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    ranks = (starts + (counts + 1) / 2.0)[inverse]  # average ranks, ascending distance
    rank_sum = ranks[: genuine.size].sum()
    u = rank_sum - genuine.size * (genuine.size + 1) / 2.0
    return float(1.0 - u / (genuine.size * impostor.size))


def far_frr(distances: Floats, same: Ints, threshold: float) -> tuple[float, float]:
    genuine, impostor = distances[same == 1], distances[same == 0]
    far = float((impostor <= threshold).mean()) if impostor.size else 0.0
    frr = float((genuine > threshold).mean()) if genuine.size else 0.0
    return far, frr


def eer(distances: Floats, same: Ints) -> float:
    finite = np.unique(distances[np.isfinite(distances)])
    best = (2.0, 1.0)
    for t in finite:
        far, frr = far_frr(distances, same, float(t))
        if abs(far - frr) < best[0]:
            best = (abs(far - frr), (far + frr) / 2)
    return best[1]


def tar_at_far(distances: Floats, same: Ints, target: float) -> tuple[float, float]:
    """(TAR, threshold) at the largest threshold whose FAR on these pairs is ≤ ``target``."""
    impostor = np.sort(distances[same == 0])
    allowed = int(np.floor(target * impostor.size + 1e-9))  # false accepts we may make
    threshold = float(impostor[allowed] - 1e-9) if allowed < impostor.size else float("inf")
    if not np.isfinite(threshold):
        # every impostor left is a failure (inf, a non-match): any finite threshold accepts none of
        # them, and a failed genuine pair must never count as accepted
        finite = distances[np.isfinite(distances)]
        threshold = float(finite.max()) if finite.size else 0.0
    genuine = distances[same == 1]
    return float((genuine <= threshold).mean()) if genuine.size else float("nan"), threshold


@dataclass(frozen=True, slots=True)
class Report:
    pairs: int
    failures: int
    accuracy: float
    accuracy_std: float
    auc: float
    eer: float
    tar_at_far: dict[str, float]
    threshold: float
    protocol: str

    def as_json(self) -> dict[str, object]:
        return {
            "pairs": self.pairs,
            "failures": self.failures,
            "accuracy": round(self.accuracy, 5),
            "accuracy_std": round(self.accuracy_std, 5),
            "auc": round(self.auc, 5),
            "eer": round(self.eer, 5),
            "tar_at_far": {k: round(v, 5) for k, v in self.tar_at_far.items()},
            "threshold": round(self.threshold, 4),
            "protocol": self.protocol,
        }


def evaluate(
    distances: Floats, same: Ints, folds: Ints | None, default_threshold: float, failures: int
) -> Report:
    """k-fold accuracy when folds are given (threshold chosen on the other folds, averaged over
    folds), else accuracy at ``default_threshold``."""
    if folds is not None and np.unique(folds).size > 1:
        accs, thresholds = [], []
        for fold in np.unique(folds):
            test = folds == fold
            t = best_threshold(distances[~test], same[~test])
            thresholds.append(t)
            accs.append(accuracy_at(distances[test], same[test], t))
        accuracy, std, threshold = float(np.mean(accs)), float(np.std(accs)), float(np.mean(thresholds))
        protocol = f"{len(accs)}-fold (threshold chosen on the other folds)"
    else:
        accuracy, std, threshold = accuracy_at(distances, same, default_threshold), 0.0, default_threshold
        protocol = "calibrated default threshold"
    tars = {key: tar_at_far(distances, same, float(key))[0] for key in ("1e-3", "1e-4")}
    return Report(
        pairs=int(distances.size),
        failures=failures,
        accuracy=accuracy,
        accuracy_std=std,
        auc=auc(distances, same),
        eer=eer(distances, same),
        tar_at_far=tars,
        threshold=threshold,
        protocol=protocol,
    )
