"""The chaotic systems of the known answers (:mod:`.known`): the Lorenz flow and the Henon map at their textbook
parameters (:data:`LORENZ`, :data:`HENON`), their literature exponents (:data:`LORENZ_LARGEST`,
:data:`HENON_LARGEST`), trajectories and step Jacobians, and Benettin's estimate along them
(:func:`benettin_exponents`, :func:`lorenz_exponent`, :func:`henon_exponent`, :func:`benettin_convergence`).

**The flow.** The Lorenz system is integrated by the classical fourth-order Runge-Kutta scheme with a fixed
step ``h`` (:data:`LORENZ_SETUP`: ``h = 0.01``, a transient of 20 time units dropped, then 200 time units, on 8
trajectories from seeded starts near ``(1, 1, 1)``). The Benettin step is the Jacobian of one RK4 step,
:func:`rk4_jacobians` -- the RK4 scheme applied to the variational equation ``dV/dt = Df(x) V`` alongside the
state, i.e. the exact propagator of the discrete map that is integrated; exponents per step are divided by
``h``. The estimate is the mean over the trajectories of :func:`~.exponents.lyapunov`'s finite-time exponent
(its standard error is the spread over trajectories over their square root; the finite-time exponent of one
trajectory of 200 time units scatters by about 1.5 % around the limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .derivatives import matrix_steps
from .exponents import lyapunov

__all__ = ["HENON", "HENON_LARGEST", "HENON_SETUP", "LORENZ", "LORENZ_LARGEST", "LORENZ_SETUP", "Literature",
           "benettin_convergence", "benettin_exponents", "benettin_running", "henon_exponent", "henon_jacobians",
           "henon_jacobians_along", "henon_trajectory", "lorenz", "lorenz_exponent", "lorenz_jacobians",
           "lorenz_trajectory", "rk4_jacobians"]

#: The textbook parameters.
LORENZ = {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}
HENON = {"a": 1.4, "b": 0.3}

SPROTT_2003 = ("J. C. Sprott, Chaos and Time-Series Analysis (Oxford University Press, 2003), Appendix A; "
               "the same values by Wolf et al.'s algorithm: Sprott, Lyapunov exponent spectrum software "
               "(sprott.physics.wisc.edu/chaos/lespec.htm, 2005, rev. 2010): 0.90563 and 0.419217")


@dataclass(frozen=True)
class Literature:
    """A literature constant: its value and where it is published."""

    value: float
    source: str


#: Largest Lyapunov exponent of the Lorenz flow at :data:`LORENZ` (natural log, per unit time).
LORENZ_LARGEST = Literature(0.9056, SPROTT_2003)
#: Largest Lyapunov exponent of the Henon map at :data:`HENON` (natural log, per iteration).
HENON_LARGEST = Literature(0.41922, SPROTT_2003)

#: The Benettin runs of the appendix: RK4 step ``h``, transient and length in time units (Lorenz) or
#: iterations (Henon), number of trajectories.
LORENZ_SETUP = {"h": 0.01, "transient": 20.0, "length": 200.0, "n_trajectories": 8}
HENON_SETUP = {"transient": 1000, "length": 5000, "n_trajectories": 32}


def lorenz(x: np.ndarray, sigma: float = LORENZ["sigma"], rho: float = LORENZ["rho"],
           beta: float = LORENZ["beta"]) -> np.ndarray:
    """The Lorenz vector field ``f(x): (..., 3) -> (..., 3)``."""
    x0, x1, x2 = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([sigma * (x1 - x0), x0 * (rho - x2) - x1, x0 * x1 - beta * x2], axis=-1)


def _lorenz_jacobian(x: np.ndarray, sigma: float, rho: float, beta: float) -> np.ndarray:
    """``Df(x): (..., 3) -> (..., 3, 3)``."""
    J = np.zeros(x.shape + (3,))
    J[..., 0, 0], J[..., 0, 1] = -sigma, sigma
    J[..., 1, 0], J[..., 1, 1], J[..., 1, 2] = rho - x[..., 2], -1.0, -x[..., 0]
    J[..., 2, 0], J[..., 2, 1], J[..., 2, 2] = x[..., 1], x[..., 0], -beta
    return J


def _rk4(x: np.ndarray, h: float, p: dict[str, float]) -> np.ndarray:
    k1 = lorenz(x, **p)
    k2 = lorenz(x + h / 2 * k1, **p)
    k3 = lorenz(x + h / 2 * k2, **p)
    k4 = lorenz(x + h * k3, **p)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def lorenz_trajectory(x0: np.ndarray, h: float, n_transient: int, n: int, **params: float) -> np.ndarray:
    """RK4 trajectories of the Lorenz flow: ``x0: (B, 3)`` -> ``(B, n, 3)`` the states at the start of each of
    ``n`` steps of size ``h``, after ``n_transient`` steps dropped. params: sigma, rho, beta."""
    p = {**LORENZ, **params}
    x = np.array(x0, dtype=np.float64).reshape(-1, 3)
    for _ in range(int(n_transient)):
        x = _rk4(x, h, p)
    out = np.empty((x.shape[0], int(n), 3))
    for i in range(int(n)):
        out[:, i] = x
        x = _rk4(x, h, p)
    return out


def rk4_jacobians(x: np.ndarray, h: float, **params: float) -> np.ndarray:
    """Jacobians of one RK4 step of the Lorenz flow at the states ``x: (..., 3)`` -> ``(..., 3, 3)``.

    The stage derivatives ``K_i = d k_i / d x`` by the chain rule (``K_1 = Df(x)``, ``K_2 = Df(y_2) (I + h/2
    K_1)``, ``K_3 = Df(y_3) (I + h/2 K_2)``, ``K_4 = Df(y_4) (I + h K_3)`` at the stage points ``y_i``) and
    ``J = I + h/6 (K_1 + 2 K_2 + 2 K_3 + K_4)``: the RK4 scheme applied to the variational equation, the exact
    propagator of the integrated map over one step.
    """
    p = {**LORENZ, **params}
    x = np.asarray(x, dtype=np.float64)
    eye = np.eye(3)
    k1 = lorenz(x, **p)
    y2 = x + h / 2 * k1
    k2 = lorenz(y2, **p)
    y3 = x + h / 2 * k2
    k3 = lorenz(y3, **p)
    y4 = x + h * k3
    K1 = _lorenz_jacobian(x, **p)
    K2 = _lorenz_jacobian(y2, **p) @ (eye + h / 2 * K1)
    K3 = _lorenz_jacobian(y3, **p) @ (eye + h / 2 * K2)
    K4 = _lorenz_jacobian(y4, **p) @ (eye + h * K3)
    return eye + h / 6 * (K1 + 2 * K2 + 2 * K3 + K4)


def henon_trajectory(x0: np.ndarray, n_transient: int, n: int, a: float = HENON["a"],
                     b: float = HENON["b"]) -> np.ndarray:
    """Henon map ``(x, y) -> (1 - a x^2 + y, b x)``: ``x0: (B, 2)`` -> ``(B, n, 2)`` after ``n_transient``
    iterations dropped."""
    x = np.array(x0, dtype=np.float64).reshape(-1, 2)
    out = np.empty((x.shape[0], int(n) + int(n_transient), 2))
    with np.errstate(over="ignore", invalid="ignore"):          # an escape is reported below
        for i in range(out.shape[1]):
            out[:, i] = x
            x = np.stack([1.0 - a * x[:, 0] ** 2 + x[:, 1], b * x[:, 0]], axis=-1)
    if not np.isfinite(out).all():
        raise ValueError("a Henon trajectory escaped to infinity: start it inside the basin (e.g. near the origin)")
    return out[:, int(n_transient):]


def henon_jacobians(x: np.ndarray, a: float = HENON["a"], b: float = HENON["b"]) -> np.ndarray:
    """Jacobians ``[[-2 a x, 1], [b, 0]]`` of the Henon map at ``x: (..., 2)`` -> ``(..., 2, 2)``."""
    x = np.asarray(x, dtype=np.float64)
    J = np.zeros(x.shape + (2,))
    J[..., 0, 0], J[..., 0, 1], J[..., 1, 0] = -2.0 * a * x[..., 0], 1.0, b
    return J


def _starts(centre: Sequence[float], spread: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(centre, dtype=np.float64) + spread * rng.standard_normal((n, len(centre)))


def benettin_exponents(J: np.ndarray, k: int, n_iter: int, seed: int, oversample: int | None = None) -> np.ndarray:
    """The top ``k`` exponents per step, :func:`~.exponents.lyapunov` from the first step over all of
    ``J: (B, S, D, D)`` -> ``(B, k)``."""
    return lyapunov(matrix_steps(torch.as_tensor(np.ascontiguousarray(J))), k=k, starts=[0], n_iter=n_iter,
                    oversample=oversample, seed=seed, n_texts=J.shape[0], d_model=J.shape[-1])[:, 0]


def lorenz_jacobians(seed: int = 0, **setup: float) -> tuple[np.ndarray, dict]:
    """The RK4-step Jacobians ``(B, n, 3, 3)`` along :data:`LORENZ_SETUP`'s trajectories (keywords override
    it), and the setup used."""
    s = {**LORENZ_SETUP, **setup}
    h = float(s["h"])
    x0 = _starts((1.0, 1.0, 1.0), 1.0, int(s["n_trajectories"]), seed)
    X = lorenz_trajectory(x0, h, round(s["transient"] / h), round(s["length"] / h))
    return rk4_jacobians(X, h), s


def henon_jacobians_along(seed: int = 0, **setup: int) -> tuple[np.ndarray, dict]:
    """The Henon Jacobians ``(B, n, 2, 2)`` along :data:`HENON_SETUP`'s trajectories (keywords override it),
    from seeded starts near the origin, and the setup used."""
    s = {**HENON_SETUP, **setup}
    x0 = _starts((0.0, 0.0), 0.05, int(s["n_trajectories"]), seed)
    return henon_jacobians(henon_trajectory(x0, int(s["transient"]), int(s["length"]))), s


def lorenz_exponent(seed: int = 0, n_iter: int = 0, **setup: float) -> np.ndarray:
    """The largest Lyapunov exponent of the Lorenz flow per unit time, one per trajectory ``(B,)``:
    :func:`~.exponents.lyapunov` on :func:`rk4_jacobians` along :data:`LORENZ_SETUP` (keywords override it),
    divided by the step."""
    J, s = lorenz_jacobians(seed, **setup)
    return benettin_exponents(J, 1, n_iter, seed)[:, 0] / float(s["h"])


def henon_exponent(seed: int = 0, n_iter: int = 0, oversample: int | None = None, **setup: int) -> np.ndarray:
    """The largest Lyapunov exponent of the Henon map per iteration, one per trajectory ``(B,)``, along
    :data:`HENON_SETUP` (keywords override it). ``oversample=0``: one vector (the textbook single pass);
    the default carries two, the whole plane, so that the estimate is ``log sigma_1`` of the product."""
    J, _ = henon_jacobians_along(seed, **setup)
    return benettin_exponents(J, 1, n_iter, seed, oversample)[:, 0]


def benettin_running(J: np.ndarray, lengths: Sequence[int], *, scale: float = 1.0, n_iter: int = 0,
                     seed: int = 0) -> np.ndarray:
    """The largest exponent over the first ``n`` steps of ``J: (B, S, D, D)`` for each ``n`` in ``lengths``:
    ``(len(lengths), B)``, divided by ``scale`` (the step ``h`` of a flow). Each is a separate call of
    :func:`~.exponents.lyapunov` on ``J[:, :n]`` (the convergence of the estimate with the length)."""
    lengths = [int(n) for n in lengths]
    if any(not 1 <= n <= J.shape[1] for n in lengths):
        raise ValueError(f"lengths must be in [1, {J.shape[1]}] (the number of steps)")
    return np.stack([benettin_exponents(J[:, :n], 1, n_iter, seed)[:, 0] / scale for n in lengths])


def benettin_convergence(seed: int = 0, n_points: int = 8) -> dict[str, dict]:
    """The Benettin estimate against the length of the run, for the appendix's figure: per system
    (``"Lorenz"``, ``"Hénon"``) a dict with ``lengths: (n_points,)`` (time units, iterations),
    ``estimates: (n_points, B)`` (one per trajectory, :func:`benettin_running` on geometrically spaced
    prefixes of :data:`LORENZ_SETUP`'s and :data:`HENON_SETUP`'s runs), ``known`` (the literature value),
    ``unit``."""
    out = {}
    J, s = lorenz_jacobians(seed)
    h = float(s["h"])
    steps = np.unique(np.geomspace(100, J.shape[1], n_points).round().astype(int))
    out["Lorenz"] = {"lengths": steps * h, "estimates": benettin_running(J, steps, scale=h, seed=seed),
                     "known": LORENZ_LARGEST.value, "unit": "time units"}
    J, _ = henon_jacobians_along(seed)
    steps = np.unique(np.geomspace(20, J.shape[1], n_points).round().astype(int))
    out["Hénon"] = {"lengths": steps.astype(np.float64), "estimates": benettin_running(J, steps, seed=seed),
                    "known": HENON_LARGEST.value, "unit": "iterations"}
    return out
