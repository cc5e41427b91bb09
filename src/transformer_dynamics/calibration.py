"""Calibration: the claim registry run on constructed residual streams whose right answer is known.

Every residual-stream claim of :mod:`.claims` is decided by :func:`.verdicts.decide` from bootstrap replicates over
texts (:func:`.robustness.claim_evidence`). Here that rule meets streams built so that the answer is known:

- **nulls** (:data:`NULLS`): a depth-stationary stream (:func:`stationary`: AR(1) over the sublayers with
  ``phi`` in {0, 0.5, 0.9}, started from its stationary distribution, a nonzero mean, a per-text scale that
  varies slowly over depth); the same with **one outlier text** (:func:`with_outlier`: one text of 200 whose effect
  grows with depth, with a +,+,-,- sublayer pattern); and one stream per level claim whose true value sits **at its
  threshold** (:data:`MECHANISMS` at amplitude 0). Where the true value sits at the threshold, or the construction
  has no effect at all (no trend, ordering or shape over depth in a stationary stream), any decision is a false
  decision; where it has a side (``phi = 0.9``: r = 0.9 kappa > 0.8), the other side is.
- **the random walk** (:func:`random_walk`: updates of variance 0.3 on an embedding of variance 1): its
  residual-accumulation null (:func:`.nulls.accumulation_null`) is the same process, so "beyond the null"
  (:func:`.verdicts.compare` through :func:`.robustness.stream_verdicts`) is a false decision there.
- **planted effects** (:data:`MECHANISMS`): for each claim and reading, a stream whose value lies on the trained
  models' side of the threshold by as many standard errors (of the value at the calibration's number of texts) as
  the trained models' own value (:func:`effect_sizes`, read from the book's ledgers, or
  :func:`sizes_from_evidence`), at most :data:`Z_MAX`. The readings' verdicts of one simulation are corrected
  together (Benjamini-Hochberg, as a chapter's are) before power is counted.

The streams are small (a few hundred texts, 16 units, 18-36 sublayers; :class:`Settings`): the rule's calibration
depends on the texts' number and the curves' shape over depth, not on the width. A planted effect's size is counted
in standard errors, so an effect as clear as the trained models' is planted whatever the calibration's N.

:func:`calibrate` runs it all side by side (:func:`.workers.map_jobs`); :func:`table` gives, per claim and
reading, the false-decision rate on each null and the power, with the number of simulations and a binomial
(Clopper-Pearson) interval; :func:`worst` the largest false-decision rate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import claims as _claims

__all__ = ["ALPHA", "Z_MAX", "Z_POWER", "stationary", "random_walk", "with_outlier", "scale_correlation", "Null",
           "NULLS", "Mechanism", "MECHANISMS", "null_truth", "effect_sizes", "sizes_from_evidence", "Settings",
           "calibrate", "Calibration", "planted_sizes", "rates", "table", "book_table", "markdown", "worst", "summary",
           "summary_sentence", "binomial_interval"]

ALPHA = _claims.ALPHA
#: The largest planted effect, in standard errors (a trained effect further from its threshold is planted at this
#: size: power there is the power at a smaller effect than the trained one, so a lower bound).
Z_MAX = 8.0
#: The smallest planted effect (standard errors) of which power >= 0.8 is asked: a calibrated interval decides an
#: effect of z standard errors with probability Phi(|z| - 1.96), 0.8 at |z| = 2.8; the correction over a family of
#: verdicts and the bootstrap's own noise need a margin.
Z_POWER = 3.5
#: The per-text scale of the nulls: exp(SCALE_SD u - SCALE_SD^2) with u an AR(1) over depth (coefficient SCALE_PHI).
SCALE_SD, SCALE_PHI = 0.3, 0.9


# ----------------------------------------------------------------------------------------------------------
# constructed streams
# ----------------------------------------------------------------------------------------------------------
def _ar(rng: np.random.Generator, n: int, L: int, D: int, phi) -> np.ndarray:
    """Unit-variance AR(1) over the sublayers from its stationary start: ``z[:, s + 1] = phi[s] z[:, s] +
    sqrt(1 - phi[s]^2) e``. phi: scalar, (L - 1,) or (L - 1, D) -> (n, L, D) float64."""
    phi = np.asarray(phi, dtype=np.float64)
    phi = np.broadcast_to(phi[:, None] if phi.ndim == 1 else phi, (L - 1, D))
    if np.any(np.abs(phi) >= 1):
        raise ValueError(f"AR coefficients must lie in (-1, 1); got {phi.min():.3g} .. {phi.max():.3g}")
    z = np.empty((n, L, D))
    z[:, 0] = rng.standard_normal((n, D))
    e = rng.standard_normal((n, L - 1, D))
    for s in range(L - 1):                                      # over depth only; texts and units vectorised
        z[:, s + 1] = phi[s] * z[:, s] + np.sqrt(1.0 - phi[s] ** 2) * e[:, s]
    return z


def _scale(rng: np.random.Generator, n: int, L: int, sd: float = SCALE_SD, phi: float = SCALE_PHI) -> np.ndarray:
    """A per-text scale that varies slowly over depth, the same distribution at every sublayer:
    ``exp(sd u - sd^2)`` with ``u`` a unit-variance AR(1) over the sublayers (``E[scale^2] = 1``). -> (n, L)."""
    if sd == 0:
        return np.ones((n, L))
    u = _ar(rng, n, L, 1, phi)[:, :, 0]
    return np.exp(sd * u - sd ** 2)


def scale_correlation(sd: float = SCALE_SD, phi: float = SCALE_PHI) -> float:
    """kappa = E[c_s c_{s+1}] / E[c_s^2] of the per-text scale :func:`_scale`: the Pearson r across texts of a
    unit at successive sublayers of :func:`stationary` is ``phi kappa`` (the scale is independent of the unit's
    AR part, whose mean is 0)."""
    return float(np.exp(-sd ** 2 * (1.0 - phi)))


def _unit_means(rng: np.random.Generator, D: int) -> np.ndarray:
    """Nonzero unit means: random sign times U(0.5, 1.5). -> (D,)."""
    return rng.choice([-1.0, 1.0], size=D) * rng.uniform(0.5, 1.5, size=D)


def stationary(n: int, L: int, D: int, *, phi: float = 0.5, scale_sd: float = SCALE_SD, seed: int = 0
               ) -> np.ndarray:
    """A stream with nothing over depth: ``x[i, s, d] = mu_d + c_i(s) z[i, s, d]`` with ``z`` a unit-variance AR(1)
    over the sublayers (coefficient ``phi``, stationary start), ``mu_d`` nonzero unit means and ``c_i(s)`` a per-text
    scale varying slowly over depth (:func:`_scale`). Every sublayer, and every pair of successive sublayers, has
    the same distribution. -> (n, L, D) float32."""
    rng = np.random.default_rng(seed)
    mu = _unit_means(rng, D)
    x = _base(rng, n, L, D, mu=mu, phi=phi, scale_sd=scale_sd)
    return x.astype(np.float32)


def random_walk(n: int, L: int, D: int, *, update_var: float = 0.3, seed: int = 0) -> np.ndarray:
    """Residual accumulation and nothing else: an embedding of variance 1 plus, at every sublayer, an independent
    update of variance ``update_var``. Its residual-accumulation null is the same process. -> (n, L, D) float32."""
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((n, L, D))
    steps[:, 1:] *= np.sqrt(update_var)
    return np.cumsum(steps, axis=1).astype(np.float32)


def with_outlier(rs: np.ndarray, *, strength: float = 20.0, seed: int = 0) -> np.ndarray:
    """``rs`` with its first text replaced by one strong effect: every unit at ``mean + strength g(s) p(s) v_d``,
    ``g`` growing linearly from 1/L to 1 over depth, ``p`` the sublayer pattern +,+,-,- (within-layer steps keep the
    sign, cross-layer steps flip it) and ``v_d`` random signs. rs: (n, L, D) -> (n, L, D) float32, a copy."""
    rs = np.array(rs, dtype=np.float32)
    n, L, D = rs.shape
    rng = np.random.default_rng(seed)
    s = np.arange(L)
    g = (s + 1) / L
    p = np.where((s // 2) % 2 == 0, 1.0, -1.0)
    sd = rs.std(axis=(0, 1))
    rs[0] = rs.mean(axis=(0, 1)) + strength * sd * (g * p)[:, None] * rng.choice([-1.0, 1.0], size=D)
    return rs


# ----------------------------------------------------------------------------------------------------------
# planted effects: one knob per claim and reading, amplitude a (the reading's value increases with a)
# ----------------------------------------------------------------------------------------------------------
def _ramp(k: int) -> np.ndarray:
    """0 .. 1 over k positions. -> (k,)."""
    return np.linspace(0.0, 1.0, k)


def _kinds(T: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the within-layer (even t) and cross-layer (odd t) transitions. -> two (T,) bool."""
    t = np.arange(T)
    return t % 2 == 0, t % 2 == 1


def _kind_ramp(T: int, mask: np.ndarray) -> np.ndarray:
    """A ramp from -1/2 to 1/2 over the transitions in ``mask`` (0 elsewhere). -> (T,)."""
    out = np.zeros(T)
    out[mask] = _ramp(int(mask.sum())) - 0.5
    return out


def _gaussian_mi(phi) -> np.ndarray:
    """Mutual information (nats) of a bivariate Gaussian with correlation ``phi``."""
    return -0.5 * np.log1p(-np.asarray(phi, dtype=np.float64) ** 2)


def _phi_of_mi(mi) -> np.ndarray:
    """The correlation whose Gaussian MI is ``mi`` nats."""
    return np.sqrt(-np.expm1(-2.0 * np.asarray(mi, dtype=np.float64)))


def _wiggle(k: int) -> np.ndarray:
    """A fixed irregular sequence in [-1, 1] (no period over k positions): ``cos(2.4 i + 0.3)``. -> (k,)."""
    return np.cos(2.4 * np.arange(k) + 0.3)


def _early(L: int) -> int:
    from .effects import early_window  # noqa: PLC0415

    return early_window(L - 1)


def _base(rng, n, L, D, *, mu, phi=0.5, mean=None, sd=1.0, scale_sd=SCALE_SD) -> np.ndarray:
    """``mean + sd * c * z`` for ``n`` texts drawn with ``rng``: ``z`` :func:`_ar` with ``phi``, ``c`` the per-text
    scale, ``mean`` (L, D) (None: the unit means ``mu`` (D,) at every sublayer). sd: scalar, (L,) or (L, D).
    -> (n, L, D) float64."""
    mean = np.broadcast_to(mu, (L, D)) if mean is None else mean
    z = _ar(rng, n, L, D, phi)
    c = _scale(rng, n, L, scale_sd)[..., None]
    sd = np.asarray(sd, dtype=np.float64)
    sd = sd[:, None] if sd.ndim == 1 else sd
    return mean + sd * c * z


def _plant(name: str, a: float, n: int, L: int, D: int, seed: int) -> np.ndarray:
    """The stream of mechanism ``name`` at amplitude ``a`` (see :data:`MECHANISMS`): ``n`` texts drawn with
    ``seed`` from a population whose structure (unit means, signs, frequencies, loadings) is fixed by the mechanism
    and the shape alone, so that simulations differ only in their texts. -> (n, L, D) float32."""
    srng = np.random.default_rng(_seed("structure", name, L, D))     # the population
    rng = np.random.default_rng(seed)                                 # the texts
    T = L - 1
    kappa = scale_correlation()
    within, cross = _kinds(T)
    q = np.linspace(-1.0, 1.0, D)                      # unit offsets, symmetric, none at 0 for even D
    s_ramp = _ramp(L)
    mu = _unit_means(srng, D)
    sign = np.sign(mu)
    if name == "phi_level":                            # r = (0.8 + a kappa) at every transition
        x = _base(rng, n, L, D, mu=mu, phi=0.8 / kappa + a)
    elif name in ("phi_ramp_within", "phi_ramp_cross", "phi_ramp_all"):
        mask = {"phi_ramp_within": within, "phi_ramp_cross": cross, "phi_ramp_all": np.ones(T, bool)}[name]
        x = _base(rng, n, L, D, mu=mu, phi=0.5 + a * _kind_ramp(T, mask))
    elif name == "phi_kind":                           # within-layer steps more correlated than cross-layer ones
        x = _base(rng, n, L, D, mu=mu, phi=np.where(within, 0.5 + a / 2, 0.5 - a / 2))
    elif name == "phi_units":                          # each unit its own r, half above 0.8 at a = 0
        x = _base(rng, n, L, D, mu=mu, phi=np.broadcast_to(np.clip((0.8 + 0.1 * q) / kappa + a, -0.95, 0.98), (T, D)))
    elif name == "mean_growth":
        x = _base(rng, n, L, D, mu=mu, mean=mu * (1.0 + a * s_ramp)[:, None])
    elif name == "unit_growth":                        # each unit its own growth, half rising at a = 0
        x = _base(rng, n, L, D, mu=sign, mean=sign * (1.0 + np.outer(s_ramp, a + 0.5 * q)))
    elif name == "sign_flip":                          # units whose mean flips sign at the last sublayer
        keep = np.arange(D) < round((0.5 + a) * D)
        mean = np.broadcast_to(0.15 * sign, (L, D)).copy()
        mean[-1] = np.where(keep, 1, -1) * 0.15 * sign
        x = _base(rng, n, L, D, mu=sign, mean=mean)
    elif name == "unit_spread":                        # units' scales even out over depth: a denser vector
        from scipy.stats import norm  # noqa: PLC0415

        v = norm.ppf((np.arange(D) + 0.5) / D)
        h = 1.0 - a * (s_ramp - 0.5)
        x = _base(rng, n, L, D, mu=mu) * np.exp(np.outer(h, v))
    elif name == "sd_ramp":
        x = _base(rng, n, L, D, mu=mu, sd=1.0 + a * s_ramp)
    elif name == "sd_wiggle":                          # an irregular speed early (a > 0) or late (a < 0)
        third = np.array_split(np.arange(L), 3)[0 if a > 0 else 2]
        sd = np.ones(L)
        sd[third] += abs(a) * np.cos(0.9 * np.arange(third.size) + 0.3)
        x = _base(rng, n, L, D, mu=mu, sd=sd)
    elif name == "sd_late_rise":                       # the speed rises in the last third (a > 0) or the first
        s = np.arange(L, dtype=np.float64)
        s1, s2 = (L - 1) / 3, 2 * (L - 1) / 3
        sd = 1.0 + (a * np.clip(s - s2, 0, None) / (L - 1 - s2) if a > 0 else -a * np.clip(s, None, s1) / s1)
        x = _base(rng, n, L, D, mu=mu, sd=sd)
    elif name == "mi_drop":                            # Gaussian: MI drops by 1/3 + a after the first transition
        hi = 0.9
        lo = _phi_of_mi((2.0 / 3.0 - a) * _gaussian_mi(hi))
        x = _base(rng, n, L, D, mu=mu, phi=np.r_[hi, np.full(T - 1, lo)], scale_sd=0.0)
    elif name == "mi_alternate":                       # MI declines by 60 % over the early window; a > 0: in steps
        e = _early(L)                                  # into the cross-layer transitions, a < 0 the within-layer
        m0 = _gaussian_mi(0.9)
        t = np.minimum(np.arange(T), e - 1)
        m = m0 * (1.0 - 0.6 * t / (e - 1)) - a * 0.3 * m0 * ((np.arange(T) % 2 == 1) & (np.arange(T) < e))
        x = _base(rng, n, L, D, mu=mu, phi=_phi_of_mi(m), scale_sd=0.0)
    elif name == "mi_r_comove":                        # r and (Gaussian) MI move together over the early window
        e = _early(L)
        phi = np.full(T, 0.6)
        phi[:e] += a * 0.3 * _wiggle(e)
        x = _base(rng, n, L, D, mu=mu, phi=phi, scale_sd=0.0)
    elif name == "mi_mag_comove":                      # magnitude grows in irregular steps; MI follows (a > 0)
        steps = 1.0 + 0.8 * _wiggle(L)                 # or goes against them (a < 0)
        S = np.cumsum(steps) - steps[0]
        S = S / S[-1]
        phi = 0.55 + a * 0.8 * (S[1:] - 0.5)
        x = _base(rng, n, L, D, mu=mu, mean=mu * (1.0 + 2.0 * S)[:, None], phi=phi, scale_sd=0.0)
    elif name in ("oscillation", "spiral"):            # the mean trajectory of each unit turns in phase space
        omega = srng.uniform(0.9, 1.6, size=D)
        theta = srng.uniform(0, 2 * np.pi, size=D)
        drift = srng.choice([-1.0, 1.0], size=D)
        wave = np.cos(np.outer(np.arange(L), omega) + theta)
        if name == "spiral":                           # ... with an amplitude growing (a > 0) over depth
            mean = mu + np.exp(a * (s_ramp - 0.5))[:, None] * wave
        elif a >= 0:                                   # a > 0: oscillation; a < 0: a smooth drift, no turning
            mean = mu + a * wave
        else:
            mean = mu - a * np.outer(s_ramp, drift)
        x = _base(rng, n, L, D, mu=mu, mean=mean)
    elif name == "factor_ramp_late":                   # k = 2 shared factors carry a share lam, rising over depth
        k = 2
        F = np.linalg.qr(srng.standard_normal((D, k)))[0] * np.sqrt(D / k)       # (D, k), unit variance per unit
        lam = np.clip(0.5 + a * (s_ramp - 0.5), 0.01, 0.99)
        f = _ar(rng, n, L, k, 0.5) @ F.T
        z = np.sqrt(lam)[:, None] * f + np.sqrt(1 - lam)[:, None] * _ar(rng, n, L, D, 0.5)
        x = mu + _scale(rng, n, L)[..., None] * z
    elif name == "power_spectrum":                     # variances j^-(1.9 - a) along a fixed basis: a smooth
        Q = np.linalg.qr(srng.standard_normal((D, D)))[0]                         # spectrum (about D / 10 PCs
        v = np.arange(1, D + 1, dtype=np.float64) ** -(1.9 - a)                   # for 90 % at a = 0)
        z = (_ar(rng, n, L, D, 0.5) * np.sqrt(v * D / v.sum())) @ Q.T
        x = mu + _scale(rng, n, L)[..., None] * z
    else:
        raise ValueError(f"unknown mechanism {name!r}; use one of {sorted({m.name for m in MECHANISMS.values()})}")
    return np.asarray(x, dtype=np.float32)


@dataclass(frozen=True)
class Mechanism:
    """How an effect on one reading is planted: the knob ``name`` of :func:`_plant` turned to amplitude ``a`` in
    ``[lo, hi]``, the reading's population value increasing with ``a``. ``at_threshold``: at ``a = 0`` the
    population value sits exactly at the claim's threshold (the stream is then a null for that claim). ``wide``:
    its streams have :attr:`Settings.shape_wide` (a count of components over the width needs a spectrum: in 16
    units, "under a tenth of the width" means one component carrying 90 % of the variance, a count that jumps
    between 1 and 2 with the texts)."""

    name: str
    lo: float
    hi: float
    at_threshold: bool = False
    wide: bool = False


_K = scale_correlation()
#: (claim, reading) -> the mechanism that plants its effect.
MECHANISMS: dict[tuple[str, str], Mechanism] = {
    **{("r_early", r): Mechanism("phi_level", 0.05 - 0.8 / _K, 0.97 - 0.8 / _K, True)
       for r in ("first_each_kind", "first_transition", "first_defined")},
    ("r_increases_within", "median"): Mechanism("phi_ramp_within", -0.9, 0.9),
    ("r_increases_cross", "median"): Mechanism("phi_ramp_cross", -0.9, 0.9),
    ("r_within_above_cross", "mean"): Mechanism("phi_kind", -0.9, 0.9),
    ("units_high_r", "median"): Mechanism("phi_units", -0.75, 0.3, True),
    **{("magnitude_increases", r): Mechanism("mean_growth", -0.9, 4.0) for r in ("mean_abs", "no_massive")},
    ("units_majority_rise", "mean_abs"): Mechanism("unit_growth", -0.6, 0.6, True),
    **{("density_increases", r): Mechanism("unit_spread", -1.8, 1.8) for r in ("no_massive", "all_units")},
    ("sign_preserved", "second_half"): Mechanism("sign_flip", -0.5, 0.5, True),
    **{("cos_increases", r): Mechanism("phi_ramp_all", -0.9, 0.9) for r in ("raw", "centred")},
    **{("cos_within_above_cross", r): Mechanism("phi_kind", -0.9, 0.9) for r in ("raw", "centred")},
    **{("vel_increases", r): Mechanism("sd_ramp", -0.9, 5.0)
       for r in ("cross", "within", "cross_no_massive", "within_no_massive")},
    **{("vel_early_constant", r): Mechanism("sd_wiggle", -0.9, 0.9) for r in ("cross", "within")},
    **{("vel_last_third", r): Mechanism("sd_late_rise", -3.0, 3.0) for r in ("cross", "within")},
    ("vel_cross_above_within", "mean"): Mechanism("phi_kind", -0.9, 0.9),
    ("mi_early_drop", "kde"): Mechanism("mi_drop", 0.02 - 1 / 3, 0.6, True),
    ("mi_drop_at_cross", "kde"): Mechanism("mi_alternate", -0.9, 0.9, True),
    ("mi_vs_r", "kde"): Mechanism("mi_r_comove", 0.0, 1.0),
    ("mi_with_magnitude", "kde"): Mechanism("mi_mag_comove", -1.0, 1.0, True),
    ("rotations_beat_null", "sublayers"): Mechanism("oscillation", -2.0, 2.0),
    ("rotations_majority", "sublayers"): Mechanism("oscillation", -2.0, 2.0),
    ("rotations_spiral_out", "gradient"): Mechanism("spiral", -3.0, 3.0),
    **{("pcs_fewer_later", r): Mechanism("factor_ramp_late", -0.9, 0.9, True) for r in ("ev_at_k", "global", "own")},
    ("low_dimensional", "pca"): Mechanism("power_spectrum", -1.5, 1.4, wide=True),
}


# ----------------------------------------------------------------------------------------------------------
# the nulls and what is right on them
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Null:
    """A stream whose right answer is known. kind: ``"stationary"`` (:func:`stationary` with ``phi``),
    ``"outlier"`` (the same, ``phi``, with :func:`with_outlier`), ``"walk"`` (:func:`random_walk`: only "beyond the
    null" is judged there) or ``"threshold"`` (the mechanism of ``claim`` at amplitude 0: its value at the
    threshold)."""

    name: str
    kind: str
    phi: float = 0.5
    claim: str | None = None


#: The claims whose value lies on a side of its threshold in a stationary stream (the others have no effect there).
#: A claim that a phenomenon exists (an early MI drop, rotations beyond a shuffle control, few dimensions) is false
#: on a stream built without it: "fails" is right there, "holds" a false decision.
_LEVEL = ("r_early", "units_high_r", "sign_preserved", "mi_early_drop", "rotations_beat_null", "rotations_majority",
          "low_dimensional")


def _threshold_claims() -> list[str]:
    return list(dict.fromkeys(k for (k, _), m in MECHANISMS.items() if m.at_threshold))


#: The nulls of :func:`calibrate`, in table order.
NULLS: tuple[Null, ...] = (
    Null("stationary phi=0", "stationary", 0.0),
    Null("stationary phi=0.5", "stationary", 0.5),
    Null("stationary phi=0.9", "stationary", 0.9),
    Null("one outlier text", "outlier", 0.5),
    *(Null(f"at threshold: {k}", "threshold", claim=k) for k in _threshold_claims()),
    Null("random walk", "walk"),
)


def null_truth(null: Null, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The right answer on ``null`` for each (claim, reading) judged there: ``"null"`` (no effect, or the value at
    the threshold: any decision is false), ``"holds"`` or ``"fails"`` (the other decision is false). A pair
    absent from the result is not judged on this null (the random walk: only "beyond the null";
    a threshold null: only its claim)."""
    out = {}
    for key, reading in pairs:
        if null.kind == "walk":
            continue
        if null.kind == "threshold":
            if key == null.claim:
                out[key, reading] = "null"
            continue
        if key not in _LEVEL:                               # every trend, ordering and shape over depth: none
            out[key, reading] = "null"
        elif key in ("r_early", "units_high_r"):            # r = phi kappa at every transition and unit
            out[key, reading] = "holds" if null.phi * scale_correlation() > 0.8 else "fails"
        elif key == "sign_preserved":                       # nonzero means, constant over depth: share 1
            out[key, reading] = "holds"
        else:                                               # no MI drop, no rotations, no low-rank structure
            out[key, reading] = "fails"
    return out


def _null_stream(null: Null, n: int, L: int, D: int, seed: int) -> np.ndarray:
    """One draw of ``null``'s stream. -> (n, L, D) float32."""
    if null.kind == "stationary":
        return stationary(n, L, D, phi=null.phi, seed=seed)
    if null.kind == "outlier":
        return with_outlier(stationary(n, L, D, phi=null.phi, seed=seed), seed=seed)
    if null.kind == "walk":
        return random_walk(n, L, D, seed=seed)
    if null.kind == "threshold":
        names = {m.name for (k, _), m in MECHANISMS.items() if k == null.claim and m.at_threshold}
        return _plant(names.pop(), 0.0, n, L, D, seed)
    raise ValueError(f"unknown null kind {null.kind!r}")


# ----------------------------------------------------------------------------------------------------------
# effect sizes of the trained models
# ----------------------------------------------------------------------------------------------------------
_SIZE_COLUMNS = ["model", "claim", "reading", "value", "low", "high", "n", "z"]


def _z(key: str, value, low, high) -> float:
    """The standardised effect: (value - threshold) / standard error, the standard error from the 1 - alpha
    percentile interval ``(high - low) / (2 z_{1 - alpha/2})``. NaN without a value or an interval; +-inf for a
    zero-width interval off the threshold."""
    from scipy.stats import norm  # noqa: PLC0415

    c = _claims.get(key)
    try:
        value, low, high = float(value), float(low), float(high)
    except (TypeError, ValueError):
        return float("nan")
    if not all(map(math.isfinite, (value, low, high))):
        return float("nan")
    se = abs(high - low) / (2 * norm.ppf(1 - ALPHA / 2))
    d = value - c.threshold
    if se == 0:
        return float("nan") if d == 0 else math.copysign(math.inf, d)
    return d / se


def effect_sizes(ledgers: Sequence[Mapping[str, Any]] | None = None, *, directory=None,
                 models: Sequence[str] | None = None) -> pd.DataFrame:
    """The residual-stream claims' values on the trained models as the book recorded them: the claim rows of the
    original texts in the ledgers (:func:`transformer_dynamics.ledger.load_all` of ``directory`` when ``ledgers``
    is None). -> DataFrame ``model, claim, reading, value, low, high, n, z`` (``z``: :func:`_z`, the size a
    planted effect is given), one row per model, claim and reading."""
    from . import ledger as _ledger  # noqa: PLC0415

    ledgers = _ledger.load_all(directory) if ledgers is None else ledgers
    rs_claims = set(_claims.claims_of(source="rs"))
    rows = []
    for led in ledgers:
        for e in led.get("entries", []):
            key = e.get("registry")
            if key not in rs_claims or (e.get("condition") or "original") != "original":
                continue
            if models is not None and e.get("model") not in models:
                continue
            if (e.get("reading") or _claims.get(key).headline) not in _claims.get(key).reading_names:
                continue                                    # a reading the registry no longer has
            ci = e.get("ci") or (None, None)
            rows.append({"model": e.get("model", ""), "claim": key, "reading": e.get("reading") or
                         _claims.get(key).headline, "value": _num(e.get("value")), "low": _num(ci[0]),
                         "high": _num(ci[1]), "n": e.get("n")})
    out = pd.DataFrame(rows, columns=_SIZE_COLUMNS[:-1])
    out["z"] = [_z(r.claim, r.value, r.low, r.high) for r in out.itertuples()]
    return out.drop_duplicates(["model", "claim", "reading"], keep="last").reset_index(drop=True)


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def sizes_from_evidence(evidence: Sequence[Any], model: str = "") -> pd.DataFrame:
    """:func:`effect_sizes`' frame from :class:`~transformer_dynamics.verdicts.Evidence` of the run ``"trained"``
    (e.g. :func:`transformer_dynamics.robustness.claim_evidence` on a captured stream) instead of a ledger."""
    from .verdicts import decide  # noqa: PLC0415

    rows = []
    for e in evidence:
        if e.run != "trained":
            continue
        d = decide(e)
        rows.append({"model": model, "claim": e.claim, "reading": e.reading, "value": d["value"], "low": d["low"],
                     "high": d["high"], "n": e.n, "z": _z(e.claim, d["value"], d["low"], d["high"])})
    return pd.DataFrame(rows, columns=_SIZE_COLUMNS)


# ----------------------------------------------------------------------------------------------------------
# the runs
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What a calibration run costs. n: texts per stream; n_sims: simulations per null of the fast claims (mean,
    r, cosine, velocity curves); n_sims_slow: of the claims whose statistic is recomputed per resample (MI,
    rotations, PCA); n_sims_power: simulations of the planted effects; n_boot, n_boot_slow, n_shuffles: as
    :func:`transformer_dynamics.robustness.claim_evidence`; shape: (sublayers, units) of the streams (each third
    of the cross-layer steps must hold two: at least 14 sublayers); shape_mi: those of the MI claims' streams
    (their early window must hold three steps of each transition kind: at least 26 sublayers); shape_rot: those
    of the rotation claims (enough sublayers for a few turns); shape_wide: those of the claims about a count over
    the width (:attr:`Mechanism.wide`); n_pilot: draws (without resamples) that size a
    planted effect at each amplitude tried; seed: every draw."""

    n: int = 200
    n_sims: int = 100
    n_sims_slow: int = 100
    n_sims_power: int = 60
    n_boot: int = 200
    n_boot_slow: int = 100
    n_shuffles: int = 16
    shape: tuple[int, int] = (18, 16)
    shape_mi: tuple[int, int] = (36, 8)
    shape_rot: tuple[int, int] = (30, 8)
    shape_wide: tuple[int, int] = (18, 64)
    n_pilot: int = 24
    seed: int = 0

    def __post_init__(self):
        for name in ("n", "n_sims", "n_boot", "n_boot_slow", "n_shuffles", "n_pilot"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if self.n < 8:
            raise ValueError(f"n must be at least 8 texts; got {self.n}")
        if not 0 <= self.n_sims_slow <= self.n_sims or not 0 <= self.n_sims_power:
            raise ValueError("need 0 <= n_sims_slow <= n_sims and n_sims_power >= 0")
        if self.shape[0] < 14 or self.shape_rot[0] < 14:
            raise ValueError(f"shape and shape_rot need at least 14 sublayers (two cross-layer steps per third); got "
                             f"{self.shape[0]}, {self.shape_rot[0]}")
        if self.shape_mi[0] < 26:
            raise ValueError(f"shape_mi needs at least 26 sublayers (3 steps of each kind in the early window); got "
                             f"{self.shape_mi[0]}")

    def evidence_kw(self, seed: int) -> dict[str, Any]:
        # the PCA keeps half the units, as the book keeps fewer components than units (Fig 4C's explained variance
        # with the kept components varies then; with every component it is 1 everywhere)
        return dict(n_boot=self.n_boot, n_boot_slow=self.n_boot_slow, n_shuffles=self.n_shuffles, seed=seed,
                    mi_methods=("kde",), pca_components=max(2, self.shape[1] // 2))


def _group(pair: tuple[str, str]) -> str:
    """``"fast"``, ``"mi"``, ``"rot"`` or ``"pca"``: the costliest curve group the reading reads."""
    from .robustness.curves import FAST, group_of  # noqa: PLC0415

    groups = {group_of(k) for k in _claims.get(pair[0]).reading(pair[1]).keys}
    slow = sorted(groups - set(FAST))
    return slow[0] if slow else "fast"


def _pairs(keys: Iterable[str] | None = None) -> list[tuple[str, str]]:
    from .robustness import rs_readings  # noqa: PLC0415

    return rs_readings(keys)


def _seed(*parts: Any) -> int:
    import zlib  # noqa: PLC0415

    ints = [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0])


def _quiet_evidence(rs, keys, **kw):
    from .robustness import claim_evidence  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return claim_evidence(rs, keys, **kw)


def _decided(evidence) -> pd.DataFrame:
    from .robustness import evidence_frame  # noqa: PLC0415

    return evidence_frame(evidence)[["claim", "reading", "value", "low", "high", "verdict", "p"]]


def _null_job(null: Null, sims: Sequence[int], pairs: Sequence[tuple[str, str]], st: Settings) -> list[dict]:
    """Every pair's verdict on ``sims`` draws of ``null`` (slow pairs only on the first ``st.n_sims_slow``); the
    random walk: whether the data are "beyond the null" (:func:`transformer_dynamics.robustness.stream_verdicts`)."""
    from .robustness import stream_verdicts  # noqa: PLC0415

    rows: list[dict] = []
    by_shape: dict[tuple[tuple[int, int], bool], list[tuple[str, str]]] = {}
    for p in pairs:
        by_shape.setdefault((_shape(p, st), _group(p) != "fast"), []).append(p)
    for sim in sims:
        for ((L, D), slow), group in by_shape.items():
            if slow and sim >= st.n_sims_slow:
                continue
            keys = list(dict.fromkeys(k for k, _ in group))
            rs = _null_stream(null, st.n, L, D, _seed(st.seed, null.name, L, D, sim))
            kw = st.evidence_kw(_seed(st.seed, "boot", sim))
            want = set(group)
            if null.kind == "walk":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    tab, _ = stream_verdicts(rs, {}, keys, null=True, null_seed=_seed(st.seed, "perm", sim),
                                             reference_readings="all", workers=1, **kw)
                for r in tab.itertuples():
                    beyond = r.refs.get("null", {}).get("beyond")
                    if (r.claim, r.reading) in want and beyond is not None:
                        rows.append({"scenario": null.name, "sim": sim, "claim": r.claim, "reading": r.reading,
                                     "value": r.value, "verdict": "beyond" if beyond else "not beyond", "p": np.nan})
            else:
                frame = _decided(_quiet_evidence(rs, keys, **kw))
                for r in frame.itertuples():
                    if (r.claim, r.reading) in want:
                        rows.append({"scenario": null.name, "sim": sim, "claim": r.claim, "reading": r.reading,
                                     "value": r.value, "low": r.low, "high": r.high, "verdict": r.verdict, "p": r.p})
    return rows


def _premise_keys(key: str) -> list[str]:
    p = _claims.get(key).premise
    return [key] if p is None else [p, key]


def _value_of(rs: np.ndarray, pair: tuple[str, str], st: Settings, seed: int) -> float:
    """The reading's value on the whole stream (no resamples)."""
    ev = _quiet_evidence(rs, [pair[0]], **{**st.evidence_kw(seed), "n_boot": 0, "n_boot_slow": 0})
    return next(float(e.value) for e in ev if e.reading == pair[1])


def _shape(pair: tuple[str, str], st: Settings) -> tuple[int, int]:
    mech = MECHANISMS.get(pair)
    if mech is not None and mech.wide:
        return st.shape_wide
    return {"mi": st.shape_mi, "rot": st.shape_rot}.get(_group(pair), st.shape)


def _solve_job(pair: tuple[str, str], z: float, st: Settings) -> dict:
    """The amplitude that plants ``z`` standard errors of ``pair`` (:data:`MECHANISMS`) at ``st.n`` texts: at an
    amplitude, the value's mean and standard deviation over ``st.n_pilot`` draws (the same draws at every
    amplitude), and the amplitude found by bisection on their ratio, then checked on ``2 st.n_pilot`` fresh draws
    (and re-aimed once if short of the target). A target out of the mechanism's reach is planted as far as it
    goes. -> ``{"claim", "reading", "z", "a", "mean", "se", "z_planted", "reached"}``
    (``z_planted``: (mean - threshold) / se at the chosen amplitude; ``reached``: the mean lies on the target's side
    of the threshold)."""
    import time  # noqa: PLC0415

    t0 = time.perf_counter()
    mech = MECHANISMS[pair]
    thr = _claims.get(pair[0]).threshold
    L, D = _shape(pair, st)
    seeds = [_seed(st.seed, "pilot", pair, i) for i in range(st.n_pilot)]

    def moments(a):
        v = np.array([_value_of(_plant(mech.name, a, st.n, L, D, s), pair, st, s) for s in seeds])  # noqa: B023
        v = v[np.isfinite(v)]
        if v.size < max(3, st.n_pilot // 2):
            return float("nan"), float("nan"), float("nan")
        m, sd = float(v.mean()), float(v.std(ddof=1))
        zz = (m - thr) / sd if sd > 0 else (0.0 if m == thr else math.copysign(math.inf, m - thr))
        return zz, m, sd

    def done(a, mom, reached):
        return {"claim": pair[0], "reading": pair[1], "z": z, "a": a, "mean": mom[1], "se": mom[2],
                "z_planted": mom[0], "reached": bool(reached), "seconds": time.perf_counter() - t0}

    z0 = moments(0.0)
    lo, hi = (0.0, mech.hi) if (z > (z0[0] if math.isfinite(z0[0]) else 0.0)) else (mech.lo, 0.0)
    m_lo, m_hi = (z0, moments(hi)) if lo == 0.0 else (moments(lo), z0)
    if not (math.isfinite(m_lo[0]) or math.isinf(m_lo[0])) or math.isnan(m_hi[0]):
        return done(float("nan"), (float("nan"),) * 3, False)
    if not m_lo[0] <= z <= m_hi[0]:                  # out of reach: the far end of the range
        a, mom = (hi, m_hi) if z > m_hi[0] else (lo, m_lo)
        return done(a, mom, np.sign(mom[0]) == np.sign(z) and mom[0] != 0)
    for _ in range(8):
        mid = 0.5 * (lo + hi)
        mm = moments(mid)
        if math.isnan(mm[0]):
            break
        if mm[0] <= z:
            lo, m_lo = mid, mm
        else:
            hi, m_hi = mid, mm
    # the end nearer the threshold (an effect no larger than the target), unless it is on the wrong side
    near, far = ((lo, m_lo), (hi, m_hi)) if z > 0 else ((hi, m_hi), (lo, m_lo))
    a, mom = near if np.sign(near[1][0]) == np.sign(z) and near[1][0] != 0 else far
    # checked on twice as many fresh draws (a spread from few draws of a heavy-tailed value can be far off); a
    # planted effect that falls short of the target is re-aimed once, the value taken as linear in the amplitude
    seeds = [_seed(st.seed, "check", pair, i) for i in range(2 * st.n_pilot)]
    check = moments(a)
    if math.isfinite(check[0]) and 0 < check[0] / z < 0.85 and check[1] != z0[1]:
        a_new = float(np.clip(a * (thr + z * check[2] - z0[1]) / (check[1] - z0[1]), mech.lo, mech.hi))
        again = moments(a_new)
        if math.isfinite(again[0]) and abs(again[0] - z) < abs(check[0] - z):
            a, check = a_new, again
    if not math.isnan(check[0]):
        mom = check
    return done(a, mom, np.sign(mom[0]) == np.sign(z) and mom[0] != 0)


def _planted_job(plan: Sequence[dict], sims: Sequence[int], st: Settings) -> list[dict]:
    """Each planted reading of ``plan`` decided on its own stream in each simulation (with its premise on the same
    stream), then the readings of one simulation corrected together (Benjamini-Hochberg)."""
    from .verdicts import corrected  # noqa: PLC0415

    rows: list[dict] = []
    for sim in sims:
        one = []
        for p in plan:
            pair = (p["claim"], p["reading"])
            L, D = _shape(pair, st)
            rs = _plant(MECHANISMS[pair].name, p["a"], st.n, L, D, _seed(st.seed, "planted", pair, sim))
            frame = _decided(_quiet_evidence(rs, _premise_keys(pair[0]), **st.evidence_kw(_seed(st.seed, "b", sim))))
            r = frame[(frame["claim"] == pair[0]) & (frame["reading"] == pair[1])].iloc[0]
            one.append({"scenario": "planted", "sim": sim, "claim": pair[0], "reading": pair[1],
                        "value": float(r["value"]), "low": float(r["low"]), "high": float(r["high"]),
                        "verdict": r["verdict"], "p": float(r["p"])})
        if one:
            _, bh = corrected([r["verdict"] for r in one], [r["p"] for r in one])
            for r, v in zip(one, bh):
                r["verdict_bh"] = v
        rows += one
    return rows


def _chunks(n: int, k: int) -> list[list[int]]:
    """0 .. n - 1 in about k interleaved chunks (so that each worker gets early and late simulations)."""
    k = max(1, min(int(k), n))
    return [list(range(i, n, k)) for i in range(k)] if n else []


@dataclass
class Calibration:
    """A calibration run: ``rows`` (one per scenario, simulation, claim and reading: ``scenario, sim, claim,
    reading, value, low, high, verdict, p``, ``verdict_bh`` for the planted ones; the random walk's verdict is
    ``"beyond"`` or ``"not beyond"`` the null), ``truth`` ({(scenario, claim, reading): "null" / "holds" /
    "fails"}), ``plan`` (per planted reading, :func:`_solve_job`: the trained size ``z``, the amplitude, the mean
    and standard error of the value at that amplitude, the planted size ``z_planted`` and whether the effect is on
    the target's side) and the ``settings``."""

    rows: pd.DataFrame
    truth: dict[tuple[str, str, str], str]
    plan: pd.DataFrame
    settings: Settings
    sizes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_SIZE_COLUMNS))


def planted_sizes(sizes: pd.DataFrame | None, pairs: Sequence[tuple[str, str]], *, model: str | None = None,
                  z_max: float = Z_MAX) -> dict[tuple[str, str], float]:
    """The size to plant per reading: the trained ``z`` (:func:`effect_sizes`), of the smaller ``|z|`` over the models
    when several (the weaker trained effect), capped at ``z_max``; readings without a finite trained size or a
    mechanism are left out. ``sizes`` None: ``z_max`` standard errors on the claim's side for every reading."""
    out = {}
    for pair in pairs:
        if pair not in MECHANISMS:
            continue
        if sizes is None:
            out[pair] = z_max if _claims.get(pair[0]).test == ">" else -z_max
            continue
        s = sizes[(sizes["claim"] == pair[0]) & (sizes["reading"] == pair[1])]
        if model is not None:
            s = s[s["model"] == model]
        z = s["z"].astype(float)
        z = z[z.notna() & (z != 0)]
        if z.empty or (np.sign(z).nunique() > 1):     # no size, or the models disagree on the side
            continue
        zz = float(z.abs().min()) * float(np.sign(z.iloc[0]))
        out[pair] = float(np.clip(zz, -z_max, z_max))
    return out


def calibrate(settings: Settings | None = None, *, sizes: pd.DataFrame | None = None, keys: Iterable[str] | None = None,
              nulls: Sequence[Null] = NULLS, model: str | None = None, power: bool = True,
              workers: int | None = None) -> Calibration:
    """Run the registry's residual-stream claims ``keys`` (None: all) on the nulls and the planted effects.

    sizes: the trained models' effect sizes (:func:`effect_sizes` / :func:`sizes_from_evidence`; None: every
    effect planted at :data:`Z_MAX` standard errors on the claim's side); model: take the sizes of that model only;
    power: False to skip the planted effects; workers: processes (:func:`transformer_dynamics.workers.map_jobs`).
    -> :class:`Calibration`.
    """
    from . import workers as _workers  # noqa: PLC0415

    st = settings or Settings()
    pairs = _pairs(keys)
    truth: dict[tuple[str, str, str], str] = {}
    jobs = []
    n_jobs = max(2, (workers or _workers.default_workers(64)) * 2)
    for null in nulls:
        t = null_truth(null, pairs)
        truth.update({(null.name, k, r): v for (k, r), v in t.items()})
        want = pairs if null.kind == "walk" else [p for p in pairs if p in t]
        if want:
            jobs += [(_null_job, (null, sims, want, st)) for sims in _chunks(st.n_sims, n_jobs)]
    plan_rows: list[dict] = []
    targets = planted_sizes(sizes, pairs, model=model) if power and st.n_sims_power else {}
    jobs += [(_solve_job, (pair, z, st)) for pair, z in targets.items()]
    out = _workers.map_jobs(_run, jobs, workers)
    rows = [r for res, (fn, _) in zip(out, jobs) if fn is _null_job for r in res]
    plan_rows = [res for res, (fn, _) in zip(out, jobs) if fn is _solve_job]
    plan = pd.DataFrame(plan_rows, columns=["claim", "reading", "z", "a", "mean", "se", "z_planted", "reached",
                                            "seconds"])
    usable = [p for p in plan_rows if math.isfinite(p["a"]) and p["reached"]]
    if usable:
        for p in usable:
            truth["planted", p["claim"], p["reading"]] = "holds" if (p["z_planted"] > 0) == (
                _claims.get(p["claim"]).test == ">") else "fails"
        pjobs = [(_planted_job, (usable, sims, st)) for sims in _chunks(st.n_sims_power, n_jobs)]
        rows += [r for res in _workers.map_jobs(_run, pjobs, workers) for r in res]
    frame = pd.DataFrame(rows, columns=["scenario", "sim", "claim", "reading", "value", "low", "high", "verdict", "p",
                                        "verdict_bh"])
    return Calibration(frame, truth, plan, st, sizes if sizes is not None else pd.DataFrame(columns=_SIZE_COLUMNS))


def _run(fn, args):
    """One job of :func:`calibrate` (module level, so that worker processes can run it)."""
    return fn(*args)


# ----------------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------------
def binomial_interval(k, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson interval of ``k`` successes in ``n`` trials (arrays broadcast). -> (low, high)."""
    from scipy.stats import beta  # noqa: PLC0415

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    a = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, beta.ppf(a, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - a, k + 1, n - k), 1.0)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


_OPPOSITE = {"holds": "fails", "fails": "holds"}


def rates(cal: Calibration) -> pd.DataFrame:
    """One row per scenario, claim and reading: ``scenario, claim, reading, truth, sims, events, rate, low, high``
    and ``kind`` (``"false"``: the share of false decisions on a null, the random walk's share "beyond the null";
    ``"power"``: the share of planted effects decided on their side after Benjamini-Hochberg, ``"power_raw"``
    before it)."""
    df = cal.rows
    out = []
    for (scenario, claim, reading), g in df.groupby(["scenario", "claim", "reading"], sort=False):
        if scenario == "planted":
            t = cal.truth.get((scenario, claim, reading))
            for kind, col in (("power", "verdict_bh"), ("power_raw", "verdict")):
                out.append({"scenario": scenario, "kind": kind, "claim": claim, "reading": reading, "truth": t,
                            "sims": len(g), "events": int((g[col] == t).sum())})
            continue
        if (g["verdict"].isin(["beyond", "not beyond"])).all():
            out.append({"scenario": scenario, "kind": "false", "claim": claim, "reading": reading,
                        "truth": "same as null", "sims": len(g), "events": int((g["verdict"] == "beyond").sum())})
            continue
        t = cal.truth.get((scenario, claim, reading))
        if t is None:
            continue
        wrong = g["verdict"] != "undecided" if t == "null" else g["verdict"] == _OPPOSITE[t]
        out.append({"scenario": scenario, "kind": "false", "claim": claim, "reading": reading, "truth": t,
                    "sims": len(g), "events": int(wrong.sum())})
    r = pd.DataFrame(out, columns=["scenario", "kind", "claim", "reading", "truth", "sims", "events"])
    r["rate"] = r["events"] / r["sims"]
    r["low"], r["high"] = binomial_interval(r["events"], r["sims"])
    return r


def table(cal: Calibration) -> pd.DataFrame:
    """The calibration table: one row per claim and reading (registry order) with the false-decision rate on each
    null (a column per scenario, the random walk's "beyond the null"), the worst of them with its binomial
    interval and simulations, the trained and the planted size (standard errors; ``planted_z`` from the draws that
    sized it, ``planted_z_sims`` from the planted simulations themselves), the power after Benjamini-Hochberg with
    its interval and simulations."""
    r = rates(cal)
    pairs = [p for p in _pairs() if ((r["claim"] == p[0]) & (r["reading"] == p[1])).any()]
    rows = []
    for key, reading in pairs:
        g = r[(r["claim"] == key) & (r["reading"] == reading)]
        row: dict[str, Any] = {"claim": key, "reading": reading}
        false = g[g["kind"] == "false"]
        for s in false.itertuples():
            row[s.scenario] = s.rate
        if len(false):
            w = false.sort_values(["rate", "sims"], ascending=[False, True]).iloc[0]
            row.update({"worst": w["rate"], "worst_low": w["low"], "worst_high": w["high"], "worst_on": w["scenario"],
                        "sims": int(false["sims"].min())})
        pw = g[g["kind"] == "power"]
        plan = cal.plan[(cal.plan["claim"] == key) & (cal.plan["reading"] == reading)]
        planted = cal.rows[(cal.rows["scenario"] == "planted") & (cal.rows["claim"] == key)
                           & (cal.rows["reading"] == reading)]["value"].astype(float)
        if len(planted) > 2 and planted.std() > 0:
            row["planted_z_sims"] = (planted.mean() - _claims.get(key).threshold) / planted.std()
        if len(plan):
            row["trained_z"] = float(plan["z"].iloc[0])
            row["planted_z"] = float(plan["z_planted"].iloc[0])
            row["reached"] = bool(plan["reached"].iloc[0])
        if len(pw):
            row.update({"power": float(pw["rate"].iloc[0]), "power_low": float(pw["low"].iloc[0]),
                        "power_high": float(pw["high"].iloc[0]), "power_sims": int(pw["sims"].iloc[0]),
                        "power_raw": float(g[g["kind"] == "power_raw"]["rate"].iloc[0])})
        rows.append(row)
    return pd.DataFrame(rows)


def worst(cal: Calibration) -> dict[str, Any]:
    """The largest false-decision rate over every claim, reading and null: ``{"rate", "low", "high", "events",
    "sims", "claim", "reading", "scenario"}`` (ties: the one with fewer simulations)."""
    r = rates(cal)
    f = r[r["kind"] == "false"].sort_values(["rate", "sims"], ascending=[False, True])
    if f.empty:
        return {"rate": float("nan")}
    w = f.iloc[0]
    return {"rate": float(w["rate"]), "low": float(w["low"]), "high": float(w["high"]), "events": int(w["events"]),
            "sims": int(w["sims"]), "claim": w["claim"], "reading": w["reading"], "scenario": w["scenario"]}


def book_table(cal: Calibration) -> pd.DataFrame:
    """:func:`table` for the book: one row per claim and reading with the false-decision rate on the stationary
    nulls (the largest over phi), with one outlier text, at the threshold and (the random walk) "beyond the null";
    the worst of them with its 95 % binomial interval and simulations; the trained models' size and the planted
    one (standard errors; the trained size is capped at :data:`Z_MAX`) and the power after Benjamini-Hochberg with
    its interval and simulations. Rates as numbers; intervals as text."""
    t = table(cal)
    stat = [c for c in t.columns if str(c).startswith("stationary")]
    thr = [c for c in t.columns if str(c).startswith("at threshold")]

    def most(row, cols):
        v = [row[c] for c in cols if c in row and pd.notna(row[c])]
        return max(v) if v else np.nan

    def ci(lo, hi):
        return "" if pd.isna(lo) else f"[{lo:.2f}, {hi:.2f}]"

    rows = []
    for _, r in t.iterrows():
        rows.append({"claim": r["claim"], "reading": r["reading"], "stationary": most(r, stat),
                     "one outlier text": r.get("one outlier text", np.nan), "at threshold": most(r, thr),
                     "random walk: beyond": r.get("random walk", np.nan), "worst": r.get("worst", np.nan),
                     "worst 95% CI": ci(r.get("worst_low"), r.get("worst_high")), "sims": r.get("sims", np.nan),
                     "trained z": r.get("trained_z", np.nan), "planted z": r.get("planted_z", np.nan),
                     "power": r.get("power", np.nan),
                     "power 95% CI": ci(r.get("power_low"), r.get("power_high")),
                     "power sims": r.get("power_sims", np.nan)})
    out = pd.DataFrame(rows)
    for c in ("sims", "power sims"):
        out[c] = out[c].astype("Int64")
    return out


def markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    """A table of this module (:func:`book_table`, :func:`effect_sizes`) as Markdown: numbers to ``digits``
    decimals, integers as integers, missing entries blank."""
    def cell(v):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return "inf" if math.isinf(v) and v > 0 else "-inf" if math.isinf(v) else f"{v:.{digits}f}"
        return str(v)

    return frame.astype(object).map(cell).to_markdown(index=False, disable_numparse=True)


def summary(cal: Calibration) -> dict[str, Any]:
    """What the book records of a calibration run: ``worst`` (:func:`worst`), ``readings`` (claim readings judged),
    ``above_2_alpha`` (``"claim:reading"`` whose false-decision rate exceeds 2 alpha on some null, with the rate),
    ``strong`` (readings planted at :data:`Z_POWER` or more standard errors) and ``below_power`` (those of them
    with power below 0.8 after Benjamini-Hochberg)."""
    t = table(cal)
    above = t[t["worst"] > 2 * ALPHA] if "worst" in t else t.iloc[:0]
    strong = t[t["planted_z"].abs() >= Z_POWER] if "planted_z" in t else t.iloc[:0]
    below = strong[strong["power"] < 0.8] if "power" in strong else strong.iloc[:0]
    return {"worst": worst(cal), "readings": len(t),
            "above_2_alpha": {f"{r.claim}:{r.reading}": float(r.worst) for r in above.itertuples()},
            "strong": len(strong), "below_power": {f"{r.claim}:{r.reading}": float(r.power)
                                                   for r in below.itertuples()}}


def summary_sentence(s: Mapping[str, Any]) -> str:
    """The appendix's closing sentence (Markdown) from :func:`summary`'s ``s``: the worst false-decision rate with
    its interval, the readings above 2 alpha and those planted clearly but below power 0.8."""
    w = s["worst"]
    return (f"The worst false-decision rate: **{w['rate']:.2f}** (95 % interval {w['low']:.2f}–{w['high']:.2f}, "
            f"{w['events']} of {w['sims']} simulations), for `{w['claim']}` ({w['reading']}) on *{w['scenario']}*. "
            f"{len(s['above_2_alpha'])} of {s['readings']} claim readings decide falsely more than 2α of the time on "
            f"some null. Of the {s['strong']} readings planted at {Z_POWER} or more standard errors, "
            f"{len(s['below_power'])} have power below 0.8.")
