"""Constructed (x, y) pairs for the mutual-information tests and benchmark (``from mi_cases import ...``; the
benchmark puts ``tests/`` on its path)."""

from __future__ import annotations

import numpy as np


def constructed_pairs(n: int = 1000, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Hard (x, y) pairs on which the gridded "kde" is verified against "kde_exact": Gaussian, bimodal,
    heavy-tailed (Student t, 1.5 degrees of freedom), one massive outlier, near constant (noise 1e-6 around 5),
    near constant with three spikes, sharply nonlinear. -> x, y: (n, 7) float64."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, 7))
    e = rng.standard_normal((n, 7))
    x, y = g.copy(), 0.8 * g + 0.6 * e
    x[:, 1] = np.where(rng.random(n) < 0.5, -4.0, 4.0) + 0.5 * g[:, 1]
    y[:, 1] = x[:, 1] ** 2 + e[:, 1]
    x[:, 2] = rng.standard_t(1.5, n)
    y[:, 2] = x[:, 2] + rng.standard_t(1.5, n)
    x[0, 3], y[0, 3] = 400.0, -300.0
    x[:, 4] = 5.0 + 1e-6 * g[:, 4]
    y[:, 4] = 5.0 + 1e-6 * x[:, 4] * 1e6 + 1e-6 * e[:, 4]
    x[:, 5], y[:, 5] = 0.01 * g[:, 5], 0.01 * e[:, 5] + 0.01 * g[:, 5]
    x[:3, 5], y[:3, 5] = [30.0, -50.0, 80.0], [20.0, 60.0, -90.0]
    y[:, 6] = np.sin(4 * x[:, 6]) + 0.05 * e[:, 6]
    return x, y
