"""A calibration run (:func:`calibrate`): every null's simulations and every planted effect decided by the claim
registry's rule, side by side (:func:`transformer_dynamics.workers.map_jobs`), into a :class:`Calibration`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import claims as _claims
from .sizes import _SIZE_COLUMNS, planted_sizes
from .streams import MECHANISMS, NULLS, Null, _null_stream, _plant, _seed, null_truth


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
    from ..robustness.curves import FAST, group_of  # noqa: PLC0415

    groups = {group_of(k) for k in _claims.get(pair[0]).reading(pair[1]).keys}
    slow = sorted(groups - set(FAST))
    return slow[0] if slow else "fast"


def _pairs(keys: Iterable[str] | None = None) -> list[tuple[str, str]]:
    from ..robustness import rs_readings  # noqa: PLC0415

    return rs_readings(keys)


def _quiet_evidence(rs, keys, **kw):
    from ..robustness import claim_evidence  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return claim_evidence(rs, keys, **kw)


def _decided(evidence) -> pd.DataFrame:
    from ..robustness import evidence_frame  # noqa: PLC0415

    return evidence_frame(evidence)[["claim", "reading", "value", "low", "high", "verdict", "p"]]


def _null_job(null: Null, sims: Sequence[int], pairs: Sequence[tuple[str, str]], st: Settings) -> list[dict]:
    """Every pair's verdict on ``sims`` draws of ``null`` (slow pairs only on the first ``st.n_sims_slow``); the
    random walk: whether the data are "beyond the null" (:func:`transformer_dynamics.robustness.stream_verdicts`)."""
    from ..robustness import stream_verdicts  # noqa: PLC0415

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
                                             reference_readings="all", workers=1, cache_dir=False, **kw)
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
    from ..verdicts import corrected  # noqa: PLC0415

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


def calibrate(settings: Settings | None = None, *, sizes: pd.DataFrame | None = None, keys: Iterable[str] | None = None,
              nulls: Sequence[Null] = NULLS, model: str | None = None, power: bool = True,
              workers: int | None = None) -> Calibration:
    """Run the registry's residual-stream claims ``keys`` (None: all) on the nulls and the planted effects.

    sizes: the trained models' effect sizes (:func:`effect_sizes` / :func:`sizes_from_evidence`; None: every
    effect planted at :data:`Z_MAX` standard errors on the claim's side); model: take the sizes of that model only;
    power: False to skip the planted effects; workers: processes (:func:`transformer_dynamics.workers.map_jobs`).
    -> :class:`Calibration`.
    """
    from .. import workers as _workers  # noqa: PLC0415

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
