"""Synthetic templates for the matching index's benchmark and tests, one statistical model per embedder
family (``TemplateModel``: dimension, common mean, identity and per-face spectra), and ``fit_model``,
which fits such a model to real embeddings of known identities (refit in one call when a model lands).

A template is ``mean + identity offset + s · face noise`` (then L2-normalised for embedders whose
templates are unit vectors); offsets and noise are Gaussian with exponentially decaying spectra along
one random orthonormal basis, ``s`` is log-normal (σ ``FACE_SPREAD``) so that some faces lie far from
their identity, as profile and old photos do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edged.errors import BadArgument

__all__ = [
    "DLIB",
    "EMBEDDERS",
    "FACE_SPREAD",
    "MBF",
    "MBF_BETWEEN",
    "MBF_DIM",
    "MBF_MEAN_NORM",
    "MBF_WITHIN",
    "SyntheticSet",
    "TemplateModel",
    "fit_model",
    "synthetic_set",
    "synthetic_threshold",
]

F32 = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]

FACE_SPREAD = 0.25
"""σ of the log-normal factor each face's noise is scaled by (not fitted: ``fit_model`` assumes it)."""

DIM = 128
MEAN_NORM = 1.30
"""dlib: norm of the templates' common mean (LFW, int8 embedder: 1.30; template norms 1.31–1.54)."""
BETWEEN = (21.0, 0.244)
"""dlib: identity offsets, (decay in axes, total variance) of an exponentially decaying spectrum."""
WITHIN = (36.0, 0.084)
"""dlib: per-face noise around an identity, the same form (before the ``FACE_SPREAD`` factor)."""

MBF_DIM = 512
MBF_MEAN_NORM = 0.16
"""MBF: norm of the common mean before normalisation."""
MBF_BETWEEN = (102.0, 0.56)
"""MBF: identity offsets, (decay in axes, total variance)."""
MBF_WITHIN = (150.0, 0.38)
"""MBF: per-face noise, (decay in axes, total variance) before ``FACE_SPREAD``.

The three MBF constants are fitted (``fit_model``) on the real int8 MBF embeddings of lfw-dev (5,370
images of 2,085 people, the face nearest each image's centre; 2026-12-08): a flatter spectrum than
the provisional one they replace (64 / 96 axes), so the matcher's pruning has less to work with."""


@dataclass(frozen=True, slots=True)
class TemplateModel:
    """The statistics of one embedder's templates: ``between``/``within`` are (decay in axes, total
    variance) of the identity offsets and of the per-face noise; ``unit_norm``: templates are
    L2-normalised after generation."""

    name: str
    dim: int
    mean_norm: float
    between: tuple[float, float]
    within: tuple[float, float]
    unit_norm: bool


DLIB = TemplateModel("dlib", DIM, MEAN_NORM, BETWEEN, WITHIN, unit_norm=False)
MBF = TemplateModel("mbf", MBF_DIM, MBF_MEAN_NORM, MBF_BETWEEN, MBF_WITHIN, unit_norm=True)
EMBEDDERS: dict[str, TemplateModel] = {m.name: m for m in (DLIB, MBF)}


@dataclass(frozen=True, slots=True)
class SyntheticSet:
    """Templates of ``n`` faces (``identity`` per face) and probes: ``mated`` (fresh faces of enrolled
    identities, ``mated_identity``) and ``non_mated`` (faces of identities not in the set)."""

    templates: F32
    identity: Ints
    mated: F32
    mated_identity: Ints
    non_mated: F32


def spectrum(dim: int, decay: float, total: float) -> npt.NDArray[np.float64]:
    """Per-axis variances ∝ exp(-k / decay), summing to ``total``."""
    values = np.exp(-np.arange(dim) / decay)
    out: npt.NDArray[np.float64] = values * total / values.sum()
    return out


def synthetic_set(
    n: int, queries: int, faces_per_identity: int = 4, seed: int = 0, model: TemplateModel = DLIB
) -> SyntheticSet:
    """Templates that look like real ones. ``DLIB``: 128-d, norms ≈ 1.3–1.5, same-identity distances
    ≈ 0.3–0.55 and different-identity ≈ 0.65–0.95 (LFW: 0.27–0.54 and 0.67–0.96, 5–95 %), first 32
    principal axes 74 % of the variance (LFW: 78 %). ``MBF``: fitted on real templates (``MBF_WITHIN``)."""
    dim = model.dim
    rng = np.random.default_rng(seed)
    basis, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    basis = (basis * np.sign(np.diag(r))).astype(np.float32)
    mean = rng.standard_normal(dim)
    mean = (mean * model.mean_norm / np.linalg.norm(mean)).astype(np.float32)
    between = np.sqrt(spectrum(dim, *model.between)).astype(np.float32)
    within = np.sqrt(spectrum(dim, *model.within)).astype(np.float32)
    identities = max(1, -(-n // faces_per_identity))

    def centres(count: int) -> F32:
        out: F32 = (rng.standard_normal((count, dim), dtype=np.float32) * between) @ basis.T + mean
        return out

    def faces(of: F32) -> F32:
        scale = np.asarray(rng.lognormal(0.0, FACE_SPREAD, of.shape[0]), np.float32)[:, None]
        noise = (rng.standard_normal(of.shape, dtype=np.float32) * within) @ basis.T
        out: F32 = of + scale * noise
        if model.unit_norm:
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    identity_centres = centres(identities)
    identity = np.repeat(np.arange(identities, dtype=np.int64), faces_per_identity)[:n]
    templates = np.empty((n, dim), np.float32)
    for i in range(0, n, 65_536):
        templates[i : i + 65_536] = faces(identity_centres[identity[i : i + 65_536]])
    half = queries // 2
    mated_identity = rng.integers(0, identities, half)
    return SyntheticSet(
        templates,
        identity,
        faces(identity_centres[mated_identity]),
        mated_identity,
        faces(centres(queries - half)),
    )


def synthetic_threshold(model: TemplateModel, far: float = 1e-4, people: int = 3000, seed: int = 1) -> float:
    """The distance that ``far`` of the impostor pairs of ``people`` synthetic identities (one face
    each) fall within: the benchmark's threshold for a model that has no calibration yet."""
    x = synthetic_set(people, 2, 1, seed, model).templates.astype(np.float64)
    norms = np.einsum("ij,ij->i", x, x)
    d2 = norms[:, None] + norms[None, :] - 2 * (x @ x.T)
    pairs = d2[np.triu_indices(people, 1)]
    return float(np.sqrt(max(0.0, float(np.quantile(pairs, far)))))


def _fit_spectrum(values: npt.NDArray[np.floating[Any]]) -> tuple[float, float]:
    """(decay, total) of the exponential spectrum whose cumulative share of the variance is closest
    (least squares over all axes) to that of the eigenvalues ``values``."""
    values = np.sort(np.maximum(values, 0.0))[::-1]
    total = float(values.sum())
    if total <= 0:
        raise BadArgument("fit_model: the embeddings have no variance")
    observed = np.cumsum(values) / total
    decays = np.geomspace(0.25, 8.0 * values.size, 2000)
    k = np.arange(values.size)
    model = np.cumsum(np.exp(-k[None, :] / decays[:, None]), axis=1)
    model /= model[:, -1:]
    best = int(np.argmin(((model - observed) ** 2).sum(axis=1)))
    return float(decays[best]), total


def fit_model(embeddings: npt.ArrayLike, identities: npt.ArrayLike, name: str = "fitted") -> TemplateModel:
    """The ``TemplateModel`` of real embeddings (one row a face) of known ``identities`` (one label a
    row; identities with several faces give the per-face noise, every identity the offsets): the
    common mean's norm, both spectra (the identity offsets' covariance less the noise their means
    still carry, the noise less the ``FACE_SPREAD`` factor's mean square), unit norm when every row
    has norm 1 (± 1e-3). Assumes the model's form (one basis, exponential spectra)."""
    x = np.asarray(embeddings, np.float64)
    labels = np.asarray(identities)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise BadArgument(f"fit_model: embeddings {x.shape} and identities {labels.shape} do not match")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.size < 2 or not (counts > 1).any():
        raise BadArgument("fit_model needs at least two identities and one with several faces")
    sums = np.zeros((counts.size, x.shape[1]))
    np.add.at(sums, inverse, x)
    centres = sums / counts[:, None]
    residual = x - centres[inverse]
    within = residual.T @ residual / float((counts - 1).sum())
    spread = centres - centres.mean(axis=0)
    between = spread.T @ spread / (counts.size - 1) - float(np.mean(1.0 / counts)) * within
    within /= np.exp(2 * FACE_SPREAD**2)  # E[s²] of the log-normal face factor
    norms = np.linalg.norm(x, axis=1)
    return TemplateModel(
        name,
        x.shape[1],
        float(np.linalg.norm(x.mean(axis=0))),
        _fit_spectrum(np.linalg.eigvalsh(between)),
        _fit_spectrum(np.linalg.eigvalsh(within)),
        unit_norm=bool(np.all(np.abs(norms - 1) <= 1e-3)),
    )
