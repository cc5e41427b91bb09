"""The registry of the paper's claims: each claim once, with the one rule that decides it.

A claim (:class:`Claim`) is one sentence of the paper: its key, figure, a short quote, which of the paper's
five numbered contributions (section 1, :data:`CONTRIBUTIONS`) it belongs to, the statistic that measures it
(a function in an analysis module, named in ``statistic``: the computation lives there, not here), the test
a value must pass, the evidence the test needs, and the readings the paper's words allow, one of them the
headline (with why).

A verdict (:func:`verdict`) has three values, decided from the value's uncertainty, never from a bare
threshold on a point estimate:

- ``evidence="interval"`` (a bootstrap interval over texts, ``ci=(low, high)``): **holds** when the whole
  interval lies on the claim's side of the threshold, **fails** when it lies wholly on the other side,
  **undecided** when it straddles the threshold;
- ``evidence="p"`` (a permutation or sign test of a trend or an ordering, ``p``): **holds** when p < alpha and
  the value is on the claim's side, **fails** when p < alpha and it is on the other side, else **undecided**.

An undefined value (NaN: e.g. the correlation at a transition whose first sublayer is constant) is reported
as undefined and the verdict is undecided, never 0 and never fails. A claim with a ``premise`` (the location
of the MI drop presupposes the drop) is undecided unless its premise holds.

Adding a claim: append a :class:`Claim` to ``_CLAIMS`` below (key, figure, quote from the paper, contribution,
the statistic's function, the test and evidence, readings with one headline and why), compute its value
(and interval or p) in the analysis module, and record it in its chapter with
``led.claim(key, value, model=m, ci=(lo, hi))`` or ``p=p``. ``tests/test_claims.py`` checks every entry is
complete; values that are not a claim of the paper go to ``led.record`` (no verdict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONTRIBUTIONS", "VERDICTS", "MARKS", "Reading", "Claim", "Verdict", "REGISTRY", "get", "verdict",
           "keys_of_contribution"]

#: The paper's five numbered contributions (section 1), shortened.
CONTRIBUTIONS = {
    1: "individual RS units keep strong correlations across layers",
    2: "the residual stream accelerates and grows denser over the layers",
    3: "a sharp decrease of mutual information in the early layers",
    4: "units trace unstable periodic orbits (rotations) in phase space",
    5: "self-correcting curved trajectories in reduced space, attractor-like in the lower layers",
    6: "beyond the paper: the sequel's Jacobian picture (arXiv 2605.14258), checked in chapter 7",
}
VERDICTS = ("holds", "fails", "undecided")
MARKS = {"holds": "✓", "fails": "✗", "undecided": "?", None: "–"}
ALPHA = 0.05


@dataclass(frozen=True)
class Reading:
    """One way to read the claim's words: ``name`` (a ledger suffix) and what it computes."""

    name: str
    description: str


@dataclass(frozen=True)
class Claim:
    """One sentence of the paper and the rule that decides it (see the module docstring)."""

    key: str
    figure: str
    quote: str
    contribution: int
    statistic: str          # "module.function" that computes the value (and its interval / p)
    description: str        # what the value is
    test: str               # ">", "<" or "==": the value's relation to ``threshold`` that supports the claim
    threshold: float
    evidence: str           # "interval" (bootstrap over texts) or "p" (permutation / sign test)
    readings: tuple[Reading, ...]
    headline: str           # the reading the book's headline uses
    why: str                # why that one
    chapter: str            # the notebook that records it
    premise: str | None = None
    paper: str = ""         # the paper's value, in its words
    unit: str = ""
    source: str = "paper"   # "paper": a sentence of arXiv 2502.12131; "sequel": of arXiv 2605.14258

    def reading(self, name: str | None) -> Reading:
        name = self.headline if name is None else name
        for r in self.readings:
            if r.name == name:
                return r
        raise ValueError(f"claim {self.key!r} has no reading {name!r}; use one of {[r.name for r in self.readings]}")


@dataclass(frozen=True)
class Verdict:
    """``verdict``: "holds" / "fails" / "undecided"; ``reason``: one line saying why."""

    verdict: str
    reason: str

    @property
    def holds(self) -> bool | None:
        return {"holds": True, "fails": False}.get(self.verdict)


def _r(name, description):
    return Reading(name, description)


_ONE = (_r("median", "median over units"),)
_MEAN = (_r("mean", "the mean trajectory / mean over texts"),)
_EST = (_r("kde", "Gaussian-KDE plug-in MI (the paper's estimator)"), _r("ksg", "Kraskov k-NN MI (k = 3)"),
        _r("gcmi", "Gaussian-copula MI (bias-corrected lower bound)"))
_EST_WHY = "the paper's own estimator (Gaussian KDE, section 2.5); ksg and gcmi test whether it is an artefact"

_LEARNED = (Reading("trained", "the trained model"),
            Reading("learned", "trained minus random-init model, paired over the same texts"))
_LEARNED_WHY = "the sentence describes the trained model; 'learned' checks that random init lacks it"

_CLAIMS = [
    # --- contribution 1: correlations across layers -------------------------------------------------------
    Claim("r_early", "1C", "correlations starting high (r > 0.8) even in the earliest layers", 1,
          "robustness.first_transitions", "median r over units at the earliest transition(s)", ">", 0.8, "interval",
          (_r("first_each_kind", "the smaller of the first defined within- and cross-layer medians"),
           _r("first_transition", "the literal first transition L0.attn -> L0.mlp (undefined if sublayer 0 is "
                                  "constant)"),
           _r("first_defined", "the first transition whose median r is defined")),
          "first_each_kind", "the sentence speaks of both transition types ('for both transition types, with "
          "correlations starting high')", "02_activation_statistics", paper="r > 0.8"),
    Claim("r_increases_within", "1C", "[within-layer] the correlation strength increased over layers for both "
          "transition types",
          1, "bootstrap.trend_test", "Spearman rho of the within-layer median r with depth", ">", 0.0, "p", _ONE,
          "median", "the figure's thick line is the median over units", "02_activation_statistics",
          paper="increases"),
    Claim("r_increases_cross", "1C", "[cross-layer] the correlation strength increased over layers for both "
          "transition types",
          1, "bootstrap.trend_test", "Spearman rho of the cross-layer median r with depth", ">", 0.0, "p", _ONE,
          "median", "the figure's thick line is the median over units", "02_activation_statistics",
          paper="increases"),
    Claim("r_within_above_cross", "1C", "the within-layer correlations were consistently higher than the "
          "cross-layer correlations", 1, "bootstrap.sign_test", "fraction of layers whose within-layer median r "
          "exceeds the cross-layer one (sign test over layers)", ">", 0.5, "p", _ONE, "median",
          "one comparison per layer, the figure's median lines", "02_activation_statistics", paper="consistently"),
    Claim("units_high_r", "1D", "most units maintain strong correlations throughout the network", 1,
          "metrics.successive_correlation", "fraction of units whose median successive r exceeds 0.8", ">", 0.5,
          "interval", _ONE, "median", "'most units' = more than half; 'strong' = the paper's own 0.8",
          "02_activation_statistics", paper="most units"),
    # --- contribution 2: acceleration, density ------------------------------------------------------------
    Claim("magnitude_increases", "1B", "activations at the last token position for input sequences increase in "
          "magnitude over the layers", 2, "bootstrap.trend_test", "Spearman rho of the mean |activation| over "
          "units with depth", ">", 0.0, "p", (_r("mean_abs", "mean over units of |mean over texts|"),), "mean_abs",
          "Fig 1B shows the mean over texts", "02_activation_statistics", paper="increase"),
    Claim("sign_preserved", "1B", "units tend to preserve their sign over the layers", 2, "metrics.sign_agreement",
          "fraction of units with the last sublayer's sign, averaged over the second half of the sublayers "
          "(chance 0.5)", ">", 0.5, "interval", (_r("second_half", "averaged over the second half"),),
          "second_half", "the first sublayers are near zero, where a sign means little",
          "02_activation_statistics", paper="tend to preserve"),
    Claim("cos_increases", "1E", "cosine similarity of layerwise RS vector pairs increased as a function of layers",
          2, "bootstrap.trend_test", "Spearman rho of the mean cosine with depth", ">", 0.0, "p",
          (_r("raw", "raw cosine (the paper's)"), _r("centred", "cosine after removing each sublayer's mean")),
          "raw", "the paper's definition (section 2.3)", "02_activation_statistics", paper="increases"),
    Claim("cos_within_above_cross", "1E", "[within-layer] transitions more similar than cross-layer", 2,
          "bootstrap.sign_test", "fraction of layers whose within-layer mean cosine exceeds the cross-layer one "
          "(sign test over layers)", ">", 0.5, "p",
          (_r("raw", "raw cosine (the paper's)"), _r("centred", "cosine after removing each sublayer's mean")),
          "raw", "the paper's definition (section 2.3)", "02_activation_statistics", paper="more similar"),
    Claim("vel_increases", "1F", "the velocity profile showed a distinct pattern of acceleration through the model",
          2, "bootstrap.trend_test", "Spearman rho of the mean velocity with depth", ">", 0.0, "p",
          (_r("within", "within-layer transitions"), _r("cross", "cross-layer transitions")), "cross",
          "'this acceleration pattern holds for both'; the cross-layer steps carry the larger velocity",
          "02_activation_statistics", paper="accelerates"),
    Claim("vel_last_third", "1F", "the steepest acceleration occurring in the last third of the model", 2,
          "metrics.steepest_segment", "third of the model (1-3) with the largest increase of the mean velocity",
          "==", 3.0, "interval", (_r("within", "within-layer transitions"), _r("cross", "cross-layer transitions")),
          "cross", "'this acceleration pattern holds for both'; both readings are in the robustness table",
          "02_activation_statistics", paper="last third", unit="third"),
    Claim("vel_cross_above_within", "1F", "cross-layer transitions consistently showed higher velocities", 2,
          "bootstrap.sign_test", "fraction of layers whose cross-layer mean velocity exceeds the within-layer one "
          "(sign test over layers)", ">", 0.5, "p", _ONE, "median", "one comparison per layer",
          "02_activation_statistics", paper="consistently"),
    # --- contribution 3: mutual information ---------------------------------------------------------------
    Claim("mi_early_drop", "1H", "MI showed a sharp decline in early layers", 3, "bootstrap.trend_test",
          "Spearman rho of the mean MI over units with depth, first third of the transitions", "<", 0.0, "p", _EST,
          "kde", _EST_WHY, "02_activation_statistics", paper="sharp decline"),
    Claim("mi_drop_at_cross", "1H", "with the steepest drops occurring at cross-layer transitions", 3,
          "metrics.largest_drop", "1 if the largest early drop of the mean MI is into a cross-layer transition",
          "==", 1.0, "interval", _EST, "kde", _EST_WHY, "02_activation_statistics", premise="mi_early_drop",
          paper="cross-layer"),
    Claim("mi_vs_r", "1G", "the reduction in MI occurred simultaneously with increasing linear correlations", 3,
          "bootstrap.trend_test", "Spearman rho over transitions between the mean MI and the median r", "<", 0.0,
          "p", _EST, "kde", _EST_WHY, "02_activation_statistics", paper="MI falls while r rises"),
    # --- contribution 4: rotations ------------------------------------------------------------------------
    Claim("rotations_beat_null", "2B", "a mean of 10.74 rotations over the layers compared to approximately zero "
          "rotations in shuffle controls", 4, "phase.null_per_unit", "mean |R| per unit minus the layer-shuffle "
          "null's (permutation p: the null's mean |R| per shuffle)", ">", 0.0, "p",
          (_r("sublayers", "mean trajectory; null: each unit's activations in shuffled layer order"),
           _r("points", "mean trajectory; null: the (a, grad a) points in shuffled order")),
          "sublayers", "the paper's control 'randomly permut[es] the layer ordering' of each unit",
          "03_phase_space_rotations", paper="10.74 vs ~0", unit="rotations"),
    Claim("rotations_majority", "2C", "this rotational behavior was consistent across the majority of the 4096 "
          "units", 4, "phase.exceeds_null", "fraction of units whose |R| exceeds their own null's 95th "
          "percentile (sign test over units)", ">", 0.5, "p",
          (_r("sublayers", "null: shuffled layer order"), _r("points", "null: shuffled points")), "sublayers",
          "the paper's control", "03_phase_space_rotations", paper="the majority"),
    # --- contribution 5: reduced space, attractors --------------------------------------------------------
    Claim("cae_straighten", "3B", "the trajectories in this space straightened over the layers", 5,
          "bootstrap.trend_test", "Spearman rho of the mean turning angle of the CAE trajectory with depth", "<",
          0.0, "p", _MEAN, "mean", "the figure shows the mean trajectory", "04_reduced_trajectories",
          paper="straightened"),
    Claim("cae_distance_increases", "3C", "with increasing distance between successive layers", 5,
          "bootstrap.trend_test", "Spearman rho of the successive distance in the CAE space with depth", ">", 0.0,
          "p", _MEAN, "mean", "the figure's mean over texts", "04_reduced_trajectories", paper="increasing"),
    Claim("cae_ev_increases", "3D", "the model's reconstruction of RS vectors showed increasing explained variance",
          5, "bootstrap.trend_test", "Spearman rho of the CAE's explained variance per sublayer with depth", ">",
          0.0, "p", _MEAN, "mean", "explained variance about each sublayer's mean (Fig 3D)",
          "04_reduced_trajectories",
          paper="increasing"),
    Claim("pcs_fewer_later", "4C", "later layers requiring fewer principal components to explain the same amount "
          "of variance", 5, "robustness.curves", "mean over the last third of the sublayers minus mean over the "
          "first third of the global PCs a sublayer needs for the variance threshold", "<", 0.0, "interval",
          (_r("global", "components of one PCA of all sublayers (Fig 4C)"),
           _r("own", "each sublayer's own PCA")), "global",
          "Fig 4C plots the explained variance per layer of one PCA's components", "04_reduced_trajectories",
          paper="fewer", unit="PCs"),
    Claim("teleport_mid_recovers", "4D", "mid-layer perturbations (layers 7, 15, 23) exhibited a more robust "
          "recovery, with lower variance on the perturbed trajectories and lower mean squared error", 5,
          "robustness.teleport_evidence",
          "fraction of the middle teleport layers' grid points whose MSE to the control is below the median "
          "MSE of the first and of the last teleport layer (sign test over points)", ">", 0.5, "p",
          (_r("mse_pc", "MSE in the 2 PCs"),), "mse_pc", "the figure's space", "05_perturbation_attractors",
          paper="more robust"),
    Claim("attractor_lower_exponents", "7", "attractor-like dynamics in the lower layers", 5,
          "dynamics.lower_layers_exponent",
          "largest median top finite-time Lyapunov exponent at the first and early perturbed layers, relative to "
          "the residual stream's own growth (< 0: perturbations shrink relative to the state; bootstrap over "
          "texts)", "<", 0.0, "interval",
          (_r("relative", "exponent minus the RS's log-norm growth rate"),), "relative",
          "the teleports judge recovery relative to the trajectory, so the exponent is taken relative to the "
          "stream's growth", "07_local_dynamics", paper="attractor-like", unit="per sublayer"),
    # the sequel (arXiv 2605.14258): the Jacobian of the layer map (chapter 7)
    Claim("dyn_rotation_early", "7", "early layers are dominated by rotations", 6, "dynamics.sequel_statistic",
          "early minus late third of depth: rotation dominance (share of eigenvalues in complex-conjugate "
          "pairs), mean per text", ">", 0.0, "interval", _LEARNED, "trained", _LEARNED_WHY, "07_local_dynamics",
          paper="early > late", source="sequel"),
    Claim("dyn_nonnormal_early", "7", "early layers are non-normal", 6, "dynamics.sequel_statistic",
          "early minus late third of depth: Henrici's departure from normality of the update J - I, normalised",
          ">", 0.0, "interval", _LEARNED, "trained", _LEARNED_WHY, "07_local_dynamics", paper="early > late",
          source="sequel"),
    Claim("dyn_symmetric_late", "7", "late layers are near-symmetric", 6, "dynamics.sequel_statistic",
          "late minus early third of depth: antisymmetric share of the update J - I", "<", 0.0, "interval",
          _LEARNED, "trained", _LEARNED_WHY, "07_local_dynamics", paper="late < early", source="sequel"),
    Claim("dyn_bottleneck", "7", "a cumulative low-rank bottleneck that funnels perturbations", 6,
          "dynamics.bottleneck_statistic",
          "effective rank of the end-to-end last-token Jacobian from sublayer 0, over D (mean over texts)", "<",
          0.5, "interval", (_r("trained", "the trained model"),), "trained",
          "low rank = well below half of the dimensions", "07_local_dynamics", paper="low rank",
          source="sequel"),
]

#: key -> :class:`Claim`, in the paper's order.
REGISTRY: dict[str, Claim] = {c.key: c for c in _CLAIMS}


def get(key: str) -> Claim:
    """The registered claim ``key``; a one-line error naming the registry otherwise."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"{key!r} is not a claim of the registry (transformer_dynamics.claims.REGISTRY); record a "
                       "plain value with led.record, or add the claim there") from None


def keys_of_contribution(contribution: int) -> list[str]:
    """Keys of the claims of one of the five contributions, in registry order."""
    return [k for k, c in REGISTRY.items() if c.contribution == contribution]


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _side(test: str, value: float, threshold: float) -> bool:
    return value > threshold if test == ">" else value < threshold if test == "<" else value == threshold


def verdict(key: str, value: Any, *, ci: tuple[float, float] | None = None, p: float | None = None,
            premise: str | None = None, alpha: float = ALPHA) -> Verdict:
    """Decide claim ``key`` from ``value`` and its uncertainty -> :class:`Verdict`.

    ci: (low, high) bootstrap interval (claims with ``evidence="interval"``); p: the permutation / sign test's
    p-value (``evidence="p"``); premise: the verdict of the claim's premise (required when it has one).
    Undefined values, missing evidence, an interval across the threshold, p >= alpha or a premise that does
    not hold all give "undecided", with the reason.
    """
    c = get(key)
    if not _finite(value):
        return Verdict("undecided", "value undefined")
    if c.premise is not None and premise != "holds":
        return Verdict("undecided", f"premise {c.premise} {premise or 'not recorded'}")
    value, thr = float(value), c.threshold
    if c.evidence == "interval":
        if ci is None or not (_finite(ci[0]) and _finite(ci[1])):
            return Verdict("undecided", "no interval")
        lo, hi = sorted((float(ci[0]), float(ci[1])))
        if c.test == "==":
            if lo == hi == thr:
                return Verdict("holds", f"interval [{lo:g}, {hi:g}] = {thr:g}")
            if thr < lo or thr > hi:
                return Verdict("fails", f"{thr:g} outside interval [{lo:g}, {hi:g}]")
            return Verdict("undecided", f"interval [{lo:g}, {hi:g}] contains {thr:g} and other values")
        inside, outside = (lo > thr, hi <= thr) if c.test == ">" else (hi < thr, lo >= thr)
        if inside:
            return Verdict("holds", f"interval [{lo:.3g}, {hi:.3g}] {c.test} {thr:g}")
        if outside:
            return Verdict("fails", f"interval [{lo:.3g}, {hi:.3g}] on the wrong side of {thr:g}")
        return Verdict("undecided", f"interval [{lo:.3g}, {hi:.3g}] contains {thr:g}")
    if not _finite(p):
        return Verdict("undecided", "no p-value")
    if float(p) >= alpha:
        return Verdict("undecided", f"p = {float(p):.2g} >= {alpha:g}")
    if _side(c.test, value, thr):
        return Verdict("holds", f"p = {float(p):.2g}, value {c.test} {thr:g}")
    return Verdict("fails", f"p = {float(p):.2g}, value on the wrong side of {thr:g}")
