"""The sequel's claims (arXiv 2605.14258) as statistics with bootstrap intervals over texts.

Per-text measures ``(n_texts, n_sublayers)`` of :func:`~.local.local_dynamics` contrasted between thirds of
depth (:func:`depth_thirds`, :func:`depth_contrast`) and against the same architecture at random init
(:func:`learned_difference`); :data:`SEQUEL_CLAIMS` and :func:`sequel_statistic`, the cumulative bottleneck
(:func:`bottleneck_statistic`) and the lower layers' relative exponent (:func:`lower_layers_exponent`): the
statistics that :mod:`transformer_dynamics.claims` decides verdicts on, each ``(estimate, low, high)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..bootstrap import bootstrap
from ..validation import check_allocation, check_int, check_positive_int, check_seed
from .exponents import relative_exponents

__all__ = ["SEQUEL_CLAIMS", "SequelClaim", "bottleneck_fraction", "bottleneck_statistic", "depth_contrast",
           "depth_thirds", "learned_difference", "lower_layers_exponent", "sequel_statistic"]


def depth_thirds(n_sublayers: int, kind: str = "all") -> dict[str, np.ndarray]:
    """Sublayer indices of the early, middle and late thirds of depth (by layer), for ``kind`` ``"attn"``
    (even), ``"mlp"`` (odd) or ``"all"``. Returns ``{"early": (n,), "middle": (n,), "late": (n,)}``."""
    if kind not in ("attn", "mlp", "all"):
        raise ValueError(f"kind must be 'attn', 'mlp' or 'all', got {kind!r}")
    n_sublayers = check_int(n_sublayers, "n_sublayers (2 per layer; thirds of depth need 3 layers)", low=6)
    if n_sublayers % 2:
        raise ValueError(f"n_sublayers must be even (2 per layer: attn, mlp); got {n_sublayers}")
    s = np.arange(n_sublayers)
    s = s[s % 2 == 0] if kind == "attn" else s[s % 2 == 1] if kind == "mlp" else s
    third = np.minimum((3 * (s // 2)) // (n_sublayers // 2), 2)
    return {name: s[third == i] for i, name in enumerate(("early", "middle", "late"))}


def depth_contrast(values: np.ndarray, *, kind: str = "all", a: str = "early", b: str = "late",
                   n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` over the ``a`` third of depth minus over the ``b`` third, with a 95% percentile
    bootstrap interval over texts. values: ``(n_texts, n_sublayers)`` per-text measures (e.g. rotation
    dominance). Returns ``(estimate, low, high)``. E.g. the sequel's "early layers rotation-dominated":
    early minus late rotation dominance > 0 (the interval above 0)."""
    n_boot, seed = check_positive_int(n_boot, "n_boot"), check_seed(seed)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"values must be (n_texts >= 2, n_sublayers), got shape {values.shape}")
    thirds = depth_thirds(values.shape[1], kind)
    diff = values[:, thirds[a]].mean(1) - values[:, thirds[b]].mean(1)
    return bootstrap("mean", diff, n_boot=n_boot, seed=seed)


def learned_difference(trained: np.ndarray, random: np.ndarray, *, kind: str = "all", a: str = "early",
                       b: str = "late", n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """How much more of a depth contrast the trained model has than the same architecture at random init:
    ``contrast(trained) - contrast(random)`` with a paired bootstrap over texts (the same texts in both).
    trained, random: ``(n_texts, n_sublayers)``. Returns ``(estimate, low, high)``; > 0 with the interval
    above 0: the structure is learned."""
    n_boot, seed = check_positive_int(n_boot, "n_boot"), check_seed(seed)
    trained, random = np.asarray(trained, dtype=np.float64), np.asarray(random, dtype=np.float64)
    if trained.shape != random.shape:
        raise ValueError(f"trained and random must be the same texts: shapes {trained.shape} vs {random.shape}")
    thirds = depth_thirds(trained.shape[1], kind)
    d = lambda v: v[:, thirds[a]].mean(1) - v[:, thirds[b]].mean(1)  # noqa: E731
    return bootstrap("mean", d(trained) - d(random), n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------------------------------
# The sequel's claims as statistics (for the claim registry and chapter 7)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SequelClaim:
    """A claim of the sequel (arXiv 2605.14258) decided by a depth contrast of a per-text measure.

    measure: a key of :func:`~.local.local_dynamics`'s result, ``(n_texts, n_sublayers)``; the statistic is the mean
    over the ``a`` third of depth minus that over the ``b`` third (:func:`depth_contrast`); sign: +1 if the
    claim says the contrast is positive, -1 if negative."""

    sentence: str
    measure: str
    a: str
    b: str
    sign: int
    registry: str  # its key in :mod:`transformer_dynamics.claims`, which decides the verdict


SEQUEL_CLAIMS: dict[str, SequelClaim] = {
    "rotation_early_minus_late": SequelClaim(
        "early layers are dominated by rotations", "rotation_dominance", "early", "late", +1,
        "dyn_rotation_early"),
    "nonnormality_early_minus_late": SequelClaim(
        "early layers are non-normal", "departure_update", "early", "late", +1,
        "dyn_nonnormal_early"),
    "antisymmetry_late_minus_early": SequelClaim(
        "late layers are near-symmetric", "antisymmetric_share_update", "late", "early", -1,
        "dyn_symmetric_late"),
}


def sequel_statistic(key: str, result: dict[str, np.ndarray], *, random: dict[str, np.ndarray] | None = None,
                     n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """The statistic of :data:`SEQUEL_CLAIMS` ``key`` on one :func:`~.local.local_dynamics` result: its depth contrast
    with a 95% bootstrap interval over texts. With ``random`` (the same texts through the random-init model):
    the trained-minus-random difference of the contrast (:func:`learned_difference`, paired). Returns
    ``(estimate, low, high)``."""
    if key not in SEQUEL_CLAIMS:
        raise ValueError(f"unknown sequel claim {key!r}; one of {sorted(SEQUEL_CLAIMS)}")
    c = SEQUEL_CLAIMS[key]
    if random is None:
        return depth_contrast(result[c.measure], a=c.a, b=c.b, n_boot=n_boot, seed=seed)
    return learned_difference(result[c.measure], random[c.measure], a=c.a, b=c.b, n_boot=n_boot, seed=seed)


def bottleneck_fraction(result: dict[str, np.ndarray]) -> np.ndarray:
    """``(n_texts,)`` the effective rank of the end-to-end last-token Jacobian from sublayer 0, over D: the
    sequel's cumulative low-rank bottleneck (well below 1: perturbations are funnelled into few directions)."""
    return result["cumulative_effective_rank"][:, 0] / result["d_model"]


def bottleneck_statistic(result: dict[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0
                         ) -> tuple[float, float, float]:
    """The registry's ``dyn_bottleneck``: mean of :func:`bottleneck_fraction` over texts with a 95% bootstrap
    interval over texts. Returns ``(estimate, low, high)``."""
    n_boot, seed = check_positive_int(n_boot, "n_boot"), check_seed(seed)
    return bootstrap("mean", bottleneck_fraction(result).astype(np.float64), n_boot=n_boot, seed=seed)


def lower_layers_exponent(result: dict[str, np.ndarray], sublayers: Sequence[int], *, n_boot: int = 1000,
                          seed: int = 0) -> tuple[float, float, float]:
    """The registry's ``attractor_lower_exponents``: the largest, over ``sublayers`` (the lower perturbed
    layers' inputs), of the median over texts of the top exponent relative to the RS's own growth
    (:func:`~.exponents.relative_exponents`), with a 95% percentile bootstrap interval over texts. Returns
    ``(estimate, low, high)``; below 0 with the interval: perturbations shrink relative to the state."""
    n_boot, seed = check_positive_int(n_boot, "n_boot"), check_seed(seed)
    s = np.asarray(sublayers)
    rel = relative_exponents(result["exponents"][:, s, :1], result["norms"], s)[:, :, 0]  # (B, n)
    stat = lambda x: float(np.max(np.median(x, axis=0)))  # noqa: E731
    check_allocation((n_boot, rel.shape[0]), np.int64, what="the resampled indices", name="n_boot")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, rel.shape[0], size=(n_boot, rel.shape[0]))
    reps = np.array([stat(rel[i]) for i in idx])
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return stat(rel), float(lo), float(hi)
