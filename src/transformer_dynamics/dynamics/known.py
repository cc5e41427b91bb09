"""Known answers: every dynamics estimator of the package on a system whose answer is a textbook value or a
closed form (the book's appendix 9 and ``tests/test_known_answers.py``).

- :func:`~.exponents.lyapunov` (Benettin, through :func:`~.derivatives.matrix_steps`): the Lorenz flow (sigma =
  10, rho = 28, beta = 8/3), largest exponent 0.9056 per unit time, and the Henon map (a = 1.4, b = 0.3),
  0.41922 per iteration (:data:`~.systems.LORENZ_LARGEST`, :data:`~.systems.HENON_LARGEST`: Sprott 2003); the exponents'
  sums (the flow's divergence ``-(sigma + 1 + beta)``; ``ln b`` for the map, ``det J = -b`` at every step); the
  finite-time exponents of ``exp(nhA)`` for a non-normal ``A`` (closed-form singular values).
- :func:`transformer_dynamics.phase.count_rotations` and :func:`transformer_dynamics.phase.rotations_per_unit`:
  a cosine ``cos(theta t + phi)`` (one coordinate of a planar rotation by ``theta`` per step) and a
  block-diagonal rotation map, against :func:`rotation_count_of_cosine`, derived below (not
  ``theta T / 2 pi``: the count is taken in activation-gradient space).
- :func:`~.rotational.jpca` (with :func:`~.rotational.jpca_projection`): ``x_{t+1} = exp(dt M) x_t`` with ``M``
  skew-symmetric of known frequencies: R^2 ratio 1, frequencies ``2 tan(omega dt / 2)`` (the midpoint fit is
  the Cayley transform of the step), the planes.
- :func:`~.spectral.spectra`, :func:`~.spectral.cumulative_products`, :func:`~.spectral.product_measures`:
  ``[[-1, a], [0, -2]]``, a rotation beside a Jordan-type block, and the transient growth of
  ``||exp(tA)||``, each measure against its closed form.

:func:`known_answers` returns one row per check (:class:`KnownAnswer`: estimate, known value, error,
tolerance, source); :func:`~.systems.benettin_convergence` the Benettin estimate over growing lengths (the
appendix's figure). The systems themselves (the Lorenz flow, the Henon map) are in :mod:`.systems`.

**The rotation count of a cosine.** ``a_t = cos(theta t + phi)``, ``t = 0 .. n - 1``, ``0 < theta < pi``.
:mod:`transformer_dynamics.phase` counts the turning of the tangent ``(dx_l, dy_l)`` of the activation-
gradient portrait, ``dx_l = a_{l+1} - a_l`` and ``dy_l`` the step of ``numpy.gradient(a)``. With
``m_l = phi + theta (l + 1/2)``: ``dx_l = -2 sin(theta/2) sin m_l`` and, inside (``1 <= l <= n - 3``),
``dy_l = -2 sin(theta/2) sin(theta) cos m_l``: the tangent runs clockwise round an ellipse of axes 1 and
``sin theta``, its angle ``pi/2 - eta(m_l)`` (up to the common factor's half turn) with ``eta`` the ellipse's
polar angle at eccentric anomaly ``m``, ``eta(m) = m + atan((1 - c) sin m cos m / (c cos^2 m + sin^2 m))``,
``c = sin theta``; consecutive turns stay inside ``(-pi, pi)``. The one-sided differences at the two ends
give ``dy_0 = -2 sin^2(theta/2) cos(m_0 + theta/2)`` and ``dy_{n-2} = -2 sin^2(theta/2) cos(m_{n-2} -
theta/2)``. So::

    R = (delta_0 - (eta(m_{n-3}) - eta(m_1)) + delta_end) / (2 pi)

with ``delta_0``, ``delta_end`` the (wrapped) turns from the first tangent to the second and from the
second-to-last to the last. ``R / n -> -theta / (2 pi)``: minus the rotation number (clockwise), but for finite
``n`` the count differs from ``-theta T / (2 pi)`` by up to about one turn (the ellipse and the ends).
The count is invariant to the amplitude and to an added constant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import phase
from .derivatives import matrix_steps
from .exponents import lyapunov
from .rotational import jpca
from .spectral import cumulative_products, product_measures, spectra
from .systems import (HENON, HENON_LARGEST, HENON_SETUP, LORENZ, LORENZ_LARGEST, LORENZ_SETUP, Literature,
                      benettin_exponents, henon_exponent, henon_jacobians_along, lorenz_exponent, lorenz_jacobians)

__all__ = ["EXACT_TOLERANCE", "KnownAnswer", "RELATIVE_TOLERANCE", "benettin_answers", "jpca_answers",
           "known_answers", "rotation_answers", "rotation_count_of_cosine", "spectral_answers", "summary_table",
           "transient_growth"]

#: Tolerances: relative for the chaotic systems' exponents, absolute for the exact cases.
RELATIVE_TOLERANCE = 0.02
EXACT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class KnownAnswer:
    """One estimator on one system: ``estimate`` against ``known`` (``error = estimate - known``), within
    ``tolerance`` (relative to ``|known|`` when ``relative``, else absolute). key: the ledger's key; label: a
    short name of the check; system, quantity: in full; setup: parameters and run lengths; source: where the
    known value comes from (a citation or "closed form")."""

    key: str
    label: str
    estimator: str
    system: str
    quantity: str
    estimate: float
    known: float
    tolerance: float
    relative: bool
    setup: str
    source: str

    @property
    def error(self) -> float:
        return float(self.estimate - self.known)

    @property
    def relative_error(self) -> float:
        return float(self.error / abs(self.known)) if self.known != 0 else float("nan")

    @property
    def within(self) -> bool:
        err = abs(self.relative_error) if self.relative else abs(self.error)
        return bool(err <= self.tolerance)


def _mean_row(key: str, label: str, estimator: str, system: str, quantity: str, values: np.ndarray,
              lit: Literature, setup: str) -> KnownAnswer:
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return KnownAnswer(key, label, estimator, system, quantity, float(values.mean()), lit.value,
                       RELATIVE_TOLERANCE, True, f"{setup}; standard error over trajectories {se:.2g}", lit.source)


def benettin_answers(seed: int = 0) -> list[KnownAnswer]:
    """:func:`~.exponents.lyapunov` on the Lorenz flow and the Henon map: the mean over the trajectories of the
    finite-time largest exponent, with the routine's defaults (``k = 1`` carried with one more vector, no
    subspace iteration) and, for the Henon map, with one vector (``oversample = 0``, the textbook single pass);
    and the exponents' sums over products short enough for the whole spectrum."""
    est = "dynamics.lyapunov"
    ls, hs = LORENZ_SETUP, HENON_SETUP
    lsetup = (f"RK4 h = {ls['h']}, transient {ls['transient']:g}, length {ls['length']:g} time units, "
              f"{ls['n_trajectories']} trajectories")
    hsetup = (f"transient {hs['transient']}, length {hs['length']} iterations, {hs['n_trajectories']} "
              "trajectories")
    lsys = "Lorenz (σ = 10, ρ = 28, β = 8/3)"
    hsys = "Hénon (a = 1.4, b = 0.3)"
    rows = [_mean_row("lorenz_largest_exponent", "Lorenz: λ₁", est, lsys, "largest exponent (per unit time)",
                      lorenz_exponent(seed), LORENZ_LARGEST, lsetup),
            _mean_row("henon_largest_exponent", "Hénon: λ₁", est, hsys, "largest exponent (per iteration)",
                      henon_exponent(seed), HENON_LARGEST, hsetup),
            _mean_row("henon_largest_exponent_one_vector", "Hénon: λ₁", est + " (oversample = 0)", hsys,
                      "largest exponent (per iteration)", henon_exponent(seed, oversample=0), HENON_LARGEST,
                      hsetup)]
    # the whole spectrum (k = D) over products short enough for lyapunov's float64 range (see its docstring):
    # the flow's exponents sum to its divergence -(sigma + 1 + beta) (the RK4 map's, to O(h^4))
    J, s = lorenz_jacobians(seed, length=30.0, n_trajectories=2)
    lam = benettin_exponents(J, 3, 0, seed).sum(-1) / float(s["h"])
    p = LORENZ
    rows.append(KnownAnswer("lorenz_exponent_sum", "Lorenz: λ₁ + λ₂ + λ₃", est + " (k = 3)", lsys,
                            "sum of the three exponents (per unit time)", float(lam.mean()),
                            -(p["sigma"] + 1.0 + p["beta"]), RELATIVE_TOLERANCE, True,
                            f"RK4 h = {s['h']}, 30 time units, mean of 2 trajectories",
                            "closed form: the divergence -(σ + 1 + β) of the flow"))
    # det J = -b at every step: the two exponents sum to ln b for every length
    J, _ = henon_jacobians_along(seed, length=300, n_trajectories=4)
    lam = benettin_exponents(J, 2, 0, seed).sum(-1)
    worst = int(np.argmax(np.abs(lam - math.log(HENON["b"]))))
    rows.append(KnownAnswer("henon_exponent_sum", "Hénon: λ₁ + λ₂", est + " (k = 2)", hsys,
                            "sum of the two exponents", float(lam[worst]), math.log(HENON["b"]), EXACT_TOLERANCE,
                            False, "300 iterations, worst of 4 trajectories", "closed form: ln b (det J = -b)"))
    return rows


# ------------------------------------------------------------------------------------------------------------
# rotations: the rotation count and jPCA
# ------------------------------------------------------------------------------------------------------------
def _wrap(d: np.ndarray) -> np.ndarray:
    """Angles into ``(-pi, pi]``."""
    return np.pi - np.mod(np.pi - d, 2 * np.pi)


def rotation_count_of_cosine(theta: float | np.ndarray, n: int, phi: float | np.ndarray = 0.0) -> np.ndarray:
    """What :func:`transformer_dynamics.phase.count_rotations` must return for ``a_t = A cos(theta t + phi)
    + C`` (``A > 0``), ``t = 0 .. n - 1``: the closed form of the module docstring. theta in ``(0, pi)``,
    ``n >= 4``; theta and phi broadcast."""
    theta, phi = np.broadcast_arrays(np.asarray(theta, dtype=np.float64), np.asarray(phi, dtype=np.float64))
    if n < 4 or np.any((theta <= 0) | (theta >= np.pi)):
        raise ValueError("the closed form needs n >= 4 samples and 0 < theta < pi")
    c, s2 = np.sin(theta), np.sin(theta / 2)
    m = lambda i: phi + theta * (i + 0.5)  # noqa: E731

    def eta(mm):  # the ellipse's polar angle at eccentric anomaly mm, continuous in mm
        return mm + np.arctan((1 - c) * np.sin(mm) * np.cos(mm) / (c * np.cos(mm) ** 2 + np.sin(mm) ** 2))

    def angle(u, v):
        return np.arctan2(v, u)

    # tangent directions up to the common negative factor 2 sin(theta / 2)
    first = angle(np.sin(m(0)), s2 * np.cos(m(0) + theta / 2))
    second = angle(np.sin(m(1)), c * np.cos(m(1)))
    penult = angle(np.sin(m(n - 3)), c * np.cos(m(n - 3)))
    last = angle(np.sin(m(n - 2)), s2 * np.cos(m(n - 2) - theta / 2))
    turns = _wrap(second - first) - (eta(m(n - 3)) - eta(m(1))) + _wrap(last - penult)
    return turns / (2 * np.pi)


def rotation_answers(seed: int = 0) -> list[KnownAnswer]:
    """:func:`~transformer_dynamics.phase.count_rotations` on cosines and
    :func:`~transformer_dynamics.phase.rotations_per_unit` on a block-diagonal rotation map (both modes),
    each against :func:`rotation_count_of_cosine`."""
    rows = []
    for theta, T, phi in ((2 * np.pi / 12, 60, 0.0), (0.3, 63, 0.4), (2.5, 40, 1.0)):
        a = 2.0 * np.cos(theta * np.arange(T + 1) + phi) + 0.5
        rows.append(KnownAnswer(f"rotation_count_theta_{theta:.3f}", f"cos, θ = {theta:.3g}, T = {T}",
                                "phase.count_rotations", f"cos(θt + φ), θ = {theta:.4g}, φ = {phi:g}",
                                f"rotation count over T = {T} steps", float(phase.count_rotations(a)),
                                float(rotation_count_of_cosine(theta, T + 1, phi)), EXACT_TOLERANCE, False,
                                f"-θT/2π = {-theta * T / (2 * np.pi):.4g} (the naive value)",
                                "closed form (module docstring)"))
    rs, thetas, phases = _rotation_map_stream(seed)
    T = rs.shape[1] - 1
    mean_phase = np.angle(np.exp(1j * phases).mean(0))  # per plane: the mean trajectory's phase (amplitudes 1)
    known_unit = _unit_counts(thetas, T + 1, mean_phase)
    for mode, known in (("mean", known_unit),
                        ("per_sample", np.stack([_unit_counts(thetas, T + 1, p) for p in phases]).mean(0))):
        got = np.asarray(phase.rotations_per_unit(rs, mode=mode))
        worst = int(np.argmax(np.abs(got - known)))
        rows.append(KnownAnswer(f"rotations_per_unit_{mode}", "rotation map",
                                f"phase.rotations_per_unit ({mode})",
                                "x_{t+1} = R x_t, planes at θ = " + ", ".join(f"{t:.3g}" for t in thetas),
                                f"rotation count per unit (worst of {rs.shape[2]})", float(got[worst]),
                                float(known[worst]), EXACT_TOLERANCE, False,
                                f"{rs.shape[0]} trajectories, T = {T} steps", "closed form (module docstring)"))
    return rows


def _rotation_map_stream(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rs: (16, 33, 6)`` trajectories of the block-diagonal rotation by ``thetas = (0.9, 0.4, 0.15)`` in the
    planes (0, 1), (2, 3), (4, 5) from unit-amplitude starts with random phases ``(16, 3)``."""
    thetas = np.array([0.9, 0.4, 0.15])
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, (16, 3))
    t = np.arange(33)
    ang = phases[:, None, :] + thetas * t[:, None]               # (16, 33, 3)
    rs = np.stack([np.cos(ang), np.sin(ang)], axis=-1).reshape(16, 33, 6)
    return rs, thetas, phases


def _unit_counts(thetas: np.ndarray, n: int, phases: np.ndarray) -> np.ndarray:
    """Closed-form counts of the 6 units: unit ``2j`` is ``cos(theta_j t + phi_j)``, unit ``2j + 1``
    ``sin(...) = cos(... - pi / 2)``."""
    return np.stack([rotation_count_of_cosine(thetas, n, phases),
                     rotation_count_of_cosine(thetas, n, phases - np.pi / 2)], axis=-1).ravel()


def jpca_answers(seed: int = 0) -> list[KnownAnswer]:
    """:func:`~.rotational.jpca` on ``x_{t+1} = exp(dt M) x_t`` (``M`` skew-symmetric, frequencies ``omega``)
    embedded in 10 dimensions: the R^2 ratio (1), each plane's frequency (``2 tan(omega dt / 2)`` per step:
    the fit of steps on midpoints maps the orthogonal step ``Q`` to ``2 (Q - I)(Q + I)^-1``, skew-symmetric
    with eigenvalues ``2i tan(omega dt / 2)``), and the planes (largest sine of a principal angle to the true
    plane, 0)."""
    omegas, dt = np.array([2.0, 0.7]), 0.25
    rng = np.random.default_rng(seed)
    n, S, D = 24, 16, 10
    U = np.linalg.qr(rng.standard_normal((D, 4)))[0]              # the rotation planes in the units
    ang = rng.uniform(0, 2 * np.pi, (n, 1, 2)) + omegas * dt * np.arange(S)[:, None]
    amp = rng.uniform(0.5, 2.0, (n, 1, 2))
    y = np.stack([amp * np.cos(ang), amp * np.sin(ang)], axis=-1).reshape(n, S, 4)
    rs = y @ U.T + rng.standard_normal(D)                        # plus a constant offset
    res = jpca(rs, k=4, soft_norm=None)
    sysname = (f"x_(t+1) = exp(dt M) x_t, ω = {', '.join(f'{w:g}' for w in omegas)}, dt = {dt:g}, "
               f"in {D} units")
    setup = f"{n} trajectories of {S} steps"
    src = "closed form: 2 tan(ω dt / 2) (midpoint fit)"
    rows = [KnownAnswer("jpca_ratio", "skew flow: R² ratio", "dynamics.jpca", sysname, "R² ratio (skew / full)",
                        res.ratio, 1.0, EXACT_TOLERANCE, False, setup,
                        "closed form: the step is exactly skew-symmetric"),
            KnownAnswer("jpca_r2_skew", "skew flow: R² skew", "dynamics.jpca", sysname,
                        "R² of the skew-symmetric fit", res.r2_skew, 1.0, EXACT_TOLERANCE, False, setup,
                        "closed form: the dynamics are linear and noiseless")]
    known = np.sort(2 * np.tan(omegas * dt / 2))[::-1]
    for i, (f, k) in enumerate(zip(res.frequencies, known, strict=True)):
        rows.append(KnownAnswer(f"jpca_frequency_{i + 1}", f"skew flow: frequency {i + 1}", "dynamics.jpca",
                                sysname, f"frequency of plane {i + 1} (rad per step)", float(f), float(k),
                                EXACT_TOLERANCE, False, setup, src))
    for i, w in enumerate(np.argsort(-omegas)):
        plane = res.components.T @ res.planes[i]                 # (D, 2) in the units
        true = U[:, 2 * w: 2 * w + 2]
        sine = float(np.linalg.norm(plane - true @ (true.T @ plane), 2))   # sin of the largest principal angle
        rows.append(KnownAnswer(f"jpca_plane_{i + 1}", f"skew flow: plane {i + 1}", "dynamics.jpca",
                                sysname, f"plane {i + 1}: sine of the largest principal angle", sine, 0.0,
                                EXACT_TOLERANCE, False, setup, "closed form: the rotation's plane"))
    return rows


# ------------------------------------------------------------------------------------------------------------
# spectra of non-normal matrices
# ------------------------------------------------------------------------------------------------------------
def _triangular_singular_values(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Singular values ``(..., 2)`` of ``[[p, q], [0, r]]``: ``sigma^2 = (F +- sqrt(F^2 - 4 p^2 r^2)) / 2``,
    ``F = p^2 + q^2 + r^2``."""
    F = p ** 2 + q ** 2 + r ** 2
    disc = np.sqrt(np.maximum(F ** 2 - 4 * p ** 2 * r ** 2, 0.0))
    big = np.sqrt((F + disc) / 2)
    return np.stack([big, np.abs(p * r) / big], axis=-1)  # the product of the two is |det| = |p r|


def _entropy_rank(sv: np.ndarray) -> np.ndarray:
    p = sv / sv.sum(-1, keepdims=True)
    return np.exp(-(p * np.log(p)).sum(-1))


def spectral_answers(a: float = 10.0) -> list[KnownAnswer]:
    """:func:`~.spectral.spectra` of ``A = [[-1, a], [0, -2]]`` (and its update ``A - I``) and of a rotation
    by ``alpha`` scaled by ``rho`` beside a Jordan-type block ``[[mu, a], [0, mu]]``; the transient growth of
    ``||exp(tA)||`` through :func:`~.spectral.cumulative_products` of ``exp(hA)`` and
    :func:`~.spectral.product_measures` (growth ``||P||_F / sqrt(D)``, finite-time exponents
    ``log sigma_i / n``, effective rank of ``P``) and through :func:`~.exponents.lyapunov` with ``k = D``
    (exact: the accumulated triangular factor holds the whole product). Each against its closed form."""
    rows: list[KnownAnswer] = []
    A = np.array([[-1.0, a], [0.0, -2.0]])
    sa = spectra(A[None], update=True)
    nameA = f"A = [[-1, {a:g}], [0, -2]]"
    fro2 = 5.0 + a ** 2
    svA = _triangular_singular_values(np.float64(-1.0), np.float64(a), np.float64(-2.0))
    closed = {"spectral_radius": 2.0, "rotation_dominance": 0.0, "rotation_angle": 0.0,
              "departure": abs(a) / math.sqrt(fro2), "antisymmetric_share": abs(a) / math.sqrt(2 * fro2),
              "effective_rank": float(_entropy_rank(svA)),
              "spectral_radius_update": 3.0, "rotation_dominance_update": 0.0,
              "departure_update": abs(a) / math.sqrt(13.0 + a ** 2),
              "antisymmetric_share_update": abs(a) / math.sqrt(2 * (13.0 + a ** 2))}
    for key, known in closed.items():
        rows.append(KnownAnswer(f"spectra_A_{key}", f"A: {key}", "dynamics.spectra", nameA, key,
                                float(sa[key][0]), float(known), EXACT_TOLERANCE, False, "update=True",
                                "closed form"))
    rho, alpha, mu, b = 0.9, 0.6, 0.5, 3.0
    B = np.zeros((4, 4))
    B[:2, :2] = rho * np.array([[math.cos(alpha), -math.sin(alpha)], [math.sin(alpha), math.cos(alpha)]])
    B[2:, 2:] = [[mu, b], [0.0, mu]]
    sb = spectra(B[None])
    nameB = f"{rho:g}·rotation({alpha:g}) ⊕ [[{mu:g}, {b:g}], [0, {mu:g}]]"
    fro2b = 2 * rho ** 2 + 2 * mu ** 2 + b ** 2
    closed_b = {"spectral_radius": max(rho, mu), "rotation_dominance": 0.5, "rotation_angle": alpha,
                "departure": b / math.sqrt(fro2b),
                "antisymmetric_share": math.sqrt(2 * rho ** 2 * math.sin(alpha) ** 2 + b ** 2 / 2) / math.sqrt(fro2b)}
    for key, known in closed_b.items():
        rows.append(KnownAnswer(f"spectra_rotation_jordan_{key}", f"rot. ⊕ Jordan: {key}", "dynamics.spectra",
                                nameB, key, float(sb[key][0]), float(known), EXACT_TOLERANCE, False, "",
                                "closed form"))
    rows += _transient_answers(a)
    return rows


def transient_growth(a: float, t: np.ndarray) -> np.ndarray:
    """Closed-form singular values ``(len(t), 2)`` of ``exp(tA)`` for ``A = [[-1, a], [0, -2]]``:
    ``exp(tA) = [[e^-t, a (e^-t - e^-2t)], [0, e^-2t]]``."""
    t = np.asarray(t, dtype=np.float64)
    return _triangular_singular_values(np.exp(-t), a * (np.exp(-t) - np.exp(-2 * t)), np.exp(-2 * t))


def _transient_answers(a: float, h: float = 0.05, S: int = 100) -> list[KnownAnswer]:
    """``exp(nhA)`` as the product of ``n`` steps ``exp(hA)``: every measure of the products against
    :func:`transient_growth`, the worst over ``n = 1 .. S`` (and over ``i``); and the peak of ``||exp(tA)||_2``
    over the grid."""
    step = np.array([[math.exp(-h), a * (math.exp(-h) - math.exp(-2 * h))], [0.0, math.exp(-2 * h)]])
    J = torch.as_tensor(np.broadcast_to(step, (1, S, 2, 2)).copy())
    P = cumulative_products(J)                                   # P[:, s] = exp((S - s) h A)
    n = S - np.arange(S)                                         # steps in each product
    pm = product_measures(P[0], n, k=2)
    sv = transient_growth(a, n * h)                              # (S, 2)
    lam = lyapunov(matrix_steps(J), k=2, n_iter=0, n_texts=1, d_model=2)[0]   # (S starts, 2)
    name = f"exp(tA), A = [[-1, {a:g}], [0, -2]], t = n·{h:g}, n = 1..{S}"
    setup = f"products of {S} steps exp(hA) (worst over n)"
    rows = []
    for key, label, estimator, what, got, known in (
            ("transient_growth", "exp(tA): ‖·‖_F / √2", "dynamics.product_measures", "||exp(tA)||_F / √2",
             pm["cumulative_growth"], np.sqrt((sv ** 2).sum(-1) / 2)),
            ("transient_exponents", "exp(tA): log σᵢ / n", "dynamics.product_measures",
             "finite-time exponents log σ_i / n", pm["exponents"], np.log(sv) / n[:, None]),
            ("transient_effective_rank", "exp(tA): effective rank", "dynamics.product_measures",
             "effective rank of exp(tA)", pm["cumulative_effective_rank"], _entropy_rank(sv)),
            ("transient_benettin", "exp(tA): log σᵢ / n", "dynamics.lyapunov (k = D)",
             "finite-time exponents log σ_i / n", lam, np.log(sv) / n[:, None])):
        w = int(np.argmax(np.abs(got - known)))                    # the worst over n (and i)
        rows.append(KnownAnswer(key, label, estimator, name, what, float(np.ravel(got)[w]),
                                float(np.ravel(known)[w]), EXACT_TOLERANCE, False, setup, "closed form"))
    peak = np.exp(pm["exponents"][:, 0] * n).max()               # max over n of ||exp(nhA)||_2
    rows.insert(3, KnownAnswer("transient_peak", "exp(tA): peak of ‖·‖₂", "dynamics.product_measures", name,
                               "transient peak max_n ||exp(nhA)||_2", float(peak), float(sv[:, 0].max()),
                               EXACT_TOLERANCE, False, "both eigenvalues decay; the peak is the non-normal "
                               "transient", "closed form"))
    return rows


# ------------------------------------------------------------------------------------------------------------
def summary_table(table, styled: bool = False):
    """The book's view of :func:`known_answers`' table, narrow enough for a page: indexed by (estimator without
    its module, check label); the estimate and the known value to 6 digits, the error (relative, in %, where
    the tolerance is relative) marked ✓ within the tolerance or ✗ outside it, and the tolerance. styled: a
    pandas ``Styler`` in a smaller font, numbers unwrapped (the book's page), else the ``DataFrame``."""
    import pandas as pd  # noqa: PLC0415

    err = [(f"{100 * r['relative error']:+.2g} %" if r["relative"] else f"{r['error']:.0e}" if r["error"] else "0")
           + (" ✓" if r["within"] else " ✗") for _, r in table.iterrows()]
    tol = [f"{100 * t:g} %" if rel else f"{t:.0e}" for t, rel in zip(table["tolerance"], table["relative"],
                                                                     strict=True)]
    out = pd.DataFrame({"estimate": [f"{v:.6g}" for v in table["estimate"]],
                        "known": [f"{v:.6g}" for v in table["known"]], "error": err, "tolerance": tol})
    names = [e.split(".", 1)[-1] for e in table["estimator"]]
    out.index = pd.MultiIndex.from_arrays([names, table["label"]], names=["estimator", "check"])
    if not styled:
        return out
    return out.style.set_table_styles([{"selector": "", "props": "font-size: 0.8em;"},
                                       {"selector": "td", "props": "white-space: nowrap;"}])


def known_answers(seed: int = 0):
    """Every check above as a ``pandas.DataFrame``, one row per (estimator, system, quantity): key, label,
    estimate, known, error, relative error, tolerance (relative or absolute), within, setup, source
    (:func:`summary_table`: the book's view)."""
    import pandas as pd  # noqa: PLC0415

    rows = benettin_answers(seed) + rotation_answers(seed) + jpca_answers(seed) + spectral_answers()
    df = pd.DataFrame([{**asdict(r), "error": r.error, "relative error": r.relative_error, "within": r.within}
                       for r in rows])
    cols = ["key", "label", "estimator", "system", "quantity", "estimate", "known", "error", "relative error",
            "tolerance", "relative", "within", "setup", "source"]
    return df[cols]
