"""The constructed residual streams of the calibration and what is right on them: the nulls (:func:`stationary`,
:func:`random_walk`, :func:`with_outlier`, :data:`NULLS` with :func:`null_truth`) and the planted effects
(:data:`MECHANISMS`, one knob per claim and reading). Every stream is ``(n_texts, n_sublayers, n_units)`` float32."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import claims as _claims

ALPHA = _claims.ALPHA
#: The largest planted effect, in standard errors (a trained effect further from its threshold is planted at this
#: size: power there is the power at a smaller effect than the trained one, so a lower bound).
Z_MAX = 8.0
#: The smallest planted effect (standard errors) of which power >= 0.8 is asked: a calibrated interval decides an
#: effect of z standard errors with probability ``Phi(|z| - 1.96)``, 0.8 at ``|z| = 2.8``; the correction over a
#: family of verdicts and the bootstrap's own noise need a margin.
Z_POWER = 3.5
#: The per-text scale of the nulls: exp(SCALE_SD u - SCALE_SD^2) with u an AR(1) over depth (coefficient SCALE_PHI).
SCALE_SD, SCALE_PHI = 0.3, 0.9



# ----------------------------------------------------------------------------------------------------------
# constructed streams
# ----------------------------------------------------------------------------------------------------------
def _seed(*parts: Any) -> int:
    import zlib  # noqa: PLC0415

    ints = [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0])


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
    from ..effects import early_window  # noqa: PLC0415

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
    d = _Draw(np.random.default_rng(seed), srng, n, L, D, _unit_means(srng, D))
    for family in (_plant_phi, _plant_mean, _plant_sd, _plant_mi, _plant_geometry):
        x = family(name, a, d)
        if x is not None:
            return np.asarray(x, dtype=np.float32)
    raise ValueError(f"unknown mechanism {name!r}; use one of {sorted({m.name for m in MECHANISMS.values()})}")


@dataclass
class _Draw:
    """What every mechanism draws from: ``rng`` the texts, ``srng`` the population (after its unit means ``mu``),
    the shape ``(n, L, D)``."""

    rng: np.random.Generator
    srng: np.random.Generator
    n: int
    L: int
    D: int
    mu: np.ndarray

    def base(self, **kw) -> np.ndarray:
        return _base(self.rng, self.n, self.L, self.D, **{"mu": self.mu, **kw})


def _plant_phi(name: str, a: float, d: _Draw) -> np.ndarray | None:
    """The mechanisms of the successive correlation (AR coefficients over depth)."""
    T, kappa, (within, cross) = d.L - 1, scale_correlation(), _kinds(d.L - 1)
    if name == "phi_level":                            # r = (0.8 + a kappa) at every transition
        return d.base(phi=0.8 / kappa + a)
    if name in ("phi_ramp_within", "phi_ramp_cross", "phi_ramp_all"):
        mask = {"phi_ramp_within": within, "phi_ramp_cross": cross, "phi_ramp_all": np.ones(T, bool)}[name]
        return d.base(phi=0.5 + a * _kind_ramp(T, mask))
    if name == "phi_kind":                             # within-layer steps more correlated than cross-layer ones
        return d.base(phi=np.where(within, 0.5 + a / 2, 0.5 - a / 2))
    if name == "phi_units":                            # each unit its own r, half above 0.8 at a = 0
        q = np.linspace(-1.0, 1.0, d.D)
        return d.base(phi=np.broadcast_to(np.clip((0.8 + 0.1 * q) / kappa + a, -0.95, 0.98), (T, d.D)))
    return None


def _plant_mean(name: str, a: float, d: _Draw) -> np.ndarray | None:
    """The mechanisms of the mean activations (magnitude, per-unit growth, sign)."""
    L, D, mu, sign, s_ramp = d.L, d.D, d.mu, np.sign(d.mu), _ramp(d.L)
    if name == "mean_growth":
        return d.base(mean=mu * (1.0 + a * s_ramp)[:, None])
    if name == "unit_growth":                          # each unit its own growth, half rising at a = 0
        q = np.linspace(-1.0, 1.0, D)                  # unit offsets, symmetric, none at 0 for even D
        return d.base(mu=sign, mean=sign * (1.0 + np.outer(s_ramp, a + 0.5 * q)))
    if name == "sign_flip":                            # units whose mean flips sign at the last sublayer
        keep = np.arange(D) < round((0.5 + a) * D)
        mean = np.broadcast_to(0.15 * sign, (L, D)).copy()
        mean[-1] = np.where(keep, 1, -1) * 0.15 * sign
        return d.base(mu=sign, mean=mean)
    return None


def _plant_sd(name: str, a: float, d: _Draw) -> np.ndarray | None:
    """The mechanisms of the spread over depth (density, velocity)."""
    L, D, s_ramp = d.L, d.D, _ramp(d.L)
    if name == "unit_spread":                          # units' scales even out over depth: a denser vector
        from scipy.stats import norm  # noqa: PLC0415

        v = norm.ppf((np.arange(D) + 0.5) / D)
        h = 1.0 - a * (s_ramp - 0.5)
        return d.base() * np.exp(np.outer(h, v))
    if name == "sd_ramp":
        return d.base(sd=1.0 + a * s_ramp)
    if name == "sd_wiggle":                            # an irregular speed early (a > 0) or late (a < 0)
        third = np.array_split(np.arange(L), 3)[0 if a > 0 else 2]
        sd = np.ones(L)
        sd[third] += abs(a) * np.cos(0.9 * np.arange(third.size) + 0.3)
        return d.base(sd=sd)
    if name == "sd_late_rise":                         # the speed rises in the last third (a > 0) or the first
        s = np.arange(L, dtype=np.float64)
        s1, s2 = (L - 1) / 3, 2 * (L - 1) / 3
        sd = 1.0 + (a * np.clip(s - s2, 0, None) / (L - 1 - s2) if a > 0 else -a * np.clip(s, None, s1) / s1)
        return d.base(sd=sd)
    return None


def _plant_mi(name: str, a: float, d: _Draw) -> np.ndarray | None:
    """The mechanisms of the mutual information (Gaussian streams: MI a function of r)."""
    L, T, mu = d.L, d.L - 1, d.mu
    if name == "mi_drop":                              # Gaussian: MI drops by 1/3 + a after the first transition
        hi = 0.9
        lo = _phi_of_mi((2.0 / 3.0 - a) * _gaussian_mi(hi))
        return d.base(phi=np.r_[hi, np.full(T - 1, lo)], scale_sd=0.0)
    if name == "mi_alternate":                         # MI declines by 60 % over the early window; a > 0: in steps
        e = _early(L)                                  # into the cross-layer transitions, a < 0 the within-layer
        m0 = _gaussian_mi(0.9)
        t = np.minimum(np.arange(T), e - 1)
        m = m0 * (1.0 - 0.6 * t / (e - 1)) - a * 0.3 * m0 * ((np.arange(T) % 2 == 1) & (np.arange(T) < e))
        return d.base(phi=_phi_of_mi(m), scale_sd=0.0)
    if name == "mi_r_comove":                          # r and (Gaussian) MI move together over the early window
        e = _early(L)
        phi = np.full(T, 0.6)
        phi[:e] += a * 0.3 * _wiggle(e)
        return d.base(phi=phi, scale_sd=0.0)
    if name == "mi_mag_comove":                        # magnitude grows in irregular steps; MI follows (a > 0)
        steps = 1.0 + 0.8 * _wiggle(L)                 # or goes against them (a < 0)
        S = np.cumsum(steps) - steps[0]
        S = S / S[-1]
        phi = 0.55 + a * 0.8 * (S[1:] - 0.5)
        return d.base(mean=mu * (1.0 + 2.0 * S)[:, None], phi=phi, scale_sd=0.0)
    return None


def _plant_geometry(name: str, a: float, d: _Draw) -> np.ndarray | None:
    """The mechanisms of the trajectories' shape: rotations in phase space, shared factors, the PCA spectrum."""
    rng, srng, n, L, D, mu, s_ramp = d.rng, d.srng, d.n, d.L, d.D, d.mu, _ramp(d.L)
    if name in ("oscillation", "spiral"):              # the mean trajectory of each unit turns in phase space
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
        return d.base(mean=mean)
    if name == "factor_ramp_late":                     # k = 2 shared factors carry a share lam, rising over depth
        k = 2
        F = np.linalg.qr(srng.standard_normal((D, k)))[0] * np.sqrt(D / k)       # (D, k), unit variance per unit
        lam = np.clip(0.5 + a * (s_ramp - 0.5), 0.01, 0.99)
        f = _ar(rng, n, L, k, 0.5) @ F.T
        z = np.sqrt(lam)[:, None] * f + np.sqrt(1 - lam)[:, None] * _ar(rng, n, L, D, 0.5)
        return mu + _scale(rng, n, L)[..., None] * z
    if name == "power_spectrum":                       # variances j^-(1.9 - a) along a fixed basis: a smooth
        Q = np.linalg.qr(srng.standard_normal((D, D)))[0]                         # spectrum (about D / 10 PCs
        v = np.arange(1, D + 1, dtype=np.float64) ** -(1.9 - a)                   # for 90 % at a = 0)
        z = (_ar(rng, n, L, D, 0.5) * np.sqrt(v * D / v.sum())) @ Q.T
        return mu + _scale(rng, n, L)[..., None] * z
    return None


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
