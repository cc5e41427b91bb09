"""Common checks for every statistic of a residual stream, in the manner of scikit-learn's estimator checks.

Each public statistic of metrics, mutual_info, phase, reduce (PCA) and the robustness curves is run through the same
checks: a wrong shape, NaN and inf, empty input and a zero or negative size are one-line ValueErrors (or, for NaN
and inf, a NaN that shows in the result: never a silent number), and an array and the same data as a cache entry
give the same result. Each check is first seen to fail on a statistic built to break it (``BROKEN``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

from transformer_dynamics import arrays, cache, metrics, mutual_info, phase, reduce
from transformer_dynamics.robustness import curves


@dataclass
class Stat:
    """A statistic ``fn(rs, **sizes)``; ``sizes``: its count and size keywords (each refuses 0 and -1)."""

    name: str
    fn: Callable[..., Any]
    sizes: tuple[str, ...] = ()
    rtol: float = 1e-6
    rows: bool = False  # also takes rows (n_rows, d_model): a 2-D input is not a wrong shape for it
    gaps: dict[str, str] = field(default_factory=dict)  # check -> why it is a known gap (strict xfail)


def _rng_rs(n: int = 37, L: int = 8, D: int = 6, seed: int = 0) -> np.ndarray:
    """A random walk over sublayers with one large-mean unit: (n, L, D) float32."""
    rng = np.random.default_rng(seed)
    rs = np.cumsum(rng.standard_normal((n, L, D)), axis=1).astype(np.float32)
    rs[:, :, 1] += 50.0
    return rs


RS = _rng_rs()
PCA3 = reduce.PCA(3).fit(RS)
SHARDS = [(0, 10), (10, 11), (11, 30), (30, 37)]  # uneven, one of a single text


def _rot_null(rs, n_shuffles=4, max_samples=None, n_jobs=1, mode="mean"):
    return phase.null_per_unit(rs, mode, n_shuffles, seed=1, max_samples=max_samples, n_jobs=n_jobs)


def _pca_fit(rs, chunk_rows=16384):
    pca = reduce.PCA(3, chunk_rows=chunk_rows).fit(rs)
    return pca.components_, pca.explained_variance_ratio_


def _mi(method):
    def f(rs, chunk=64, k=3, max_bytes=512 * 2**20):
        return mutual_info.mutual_information(rs, method, units=[0, 2, 4], chunk=chunk, k=k, max_bytes=max_bytes)
    return f



STATS = [
    Stat("metrics.mean_activations", metrics.mean_activations),
    Stat("metrics.unit_order", metrics.unit_order),
    Stat("metrics.successive_correlation", metrics.successive_correlation, ("max_samples",)),
    Stat("metrics.pairwise_correlation", metrics.pairwise_correlation, ("max_samples",)),
    Stat("metrics.cosine_similarity", metrics.cosine_similarity),
    Stat("metrics.centered_cosine_similarity", metrics.centered_cosine_similarity),
    Stat("metrics.velocity", metrics.velocity, ("chunk",)),
    Stat("metrics.unit_magnitude", metrics.unit_magnitude),
    Stat("metrics.massive_units", lambda rs: metrics.massive_units(rs, ratio=1.5)),
    *[Stat(f"mutual_info.mutual_information[{m}]", _mi(m), ("chunk", "k", "max_bytes"))
      for m in mutual_info.MI_METHODS],
    Stat("phase.rotations_per_unit[mean]", lambda rs: phase.rotations_per_unit(rs, "mean")),
    Stat("phase.rotations_per_unit[per_sample]", lambda rs: phase.rotations_per_unit(rs, "per_sample")),
    Stat("phase.rotations_per_sample", phase.rotations_per_sample),
    Stat("phase.null_per_unit[mean]", _rot_null, ("n_shuffles", "n_jobs"), rtol=1e-5),
    Stat("phase.null_per_unit[per_sample]", lambda rs, max_samples=5, **kw: _rot_null(
        rs, mode="per_sample", max_samples=max_samples, **kw), ("n_shuffles", "max_samples", "n_jobs")),
    Stat("reduce.PCA.fit", _pca_fit, ("chunk_rows",), rows=True),
    Stat("reduce.pca_trajectories", lambda rs, n_components=2: reduce.pca_trajectories(PCA3, rs, n_components),
         ("n_components",)),
    Stat("reduce.explained_variance_curve_per_sublayer",
         lambda rs, chunk_samples=256, max_components=3: reduce.explained_variance_curve_per_sublayer(
             PCA3, rs, max_components, chunk_samples=chunk_samples), ("chunk_samples", "max_components")),
    Stat("reduce.sublayer_explained_variance_ratio", reduce.sublayer_explained_variance_ratio,
         ("sublayers_per_batch",)),
    Stat("robustness.stream_curves[fast]", lambda rs: curves.stream_curves(rs, curves.FAST)),
    Stat("robustness.stream_curves[slow]",
         lambda rs, n_shuffles=3, pca_components=3: curves.stream_curves(
             rs, ("mi", "rot", "pca"), mi_units=[0, 2], mi_methods=("gcmi",), n_shuffles=n_shuffles,
             pca_components=pca_components), ("n_shuffles", "pca_components")),
]


# ----------------------------------------------------------------------------------------------------
# the checks (each raises AssertionError on a statistic that breaks the contract)
# ----------------------------------------------------------------------------------------------------
def _values(out: Any) -> list[np.ndarray]:
    """Every array in a result (an array, a tuple of arrays, a dict of arrays) as float64."""
    if isinstance(out, dict):
        return [v for k in sorted(out) for v in _values(out[k])]
    if isinstance(out, (tuple, list)):
        return [v for o in out for v in _values(o)]
    return [np.asarray(out, dtype=np.float64)]


def _one_line_error(call: Callable[[], Any], what: str, match: str | None = None) -> None:
    try:
        call()
    except ValueError as err:
        text = str(err)
        assert "\n" not in text, f"{what}: a multi-line error: {text!r}"
        assert match is None or match in text, f"{what}: the error does not name {match!r}: {text!r}"
        return
    except Exception as err:  # noqa: BLE001 - any other kind of error breaks the contract too
        raise AssertionError(f"{what}: {type(err).__name__} instead of a one-line ValueError: {err}") from None
    raise AssertionError(f"{what}: no error")


def check_bad_shape(stat: Stat, rs: np.ndarray) -> None:
    for bad in (rs[0, 0], rs[None]) + (() if stat.rows else (rs[:, 0], rs[:, :, 0])):
        _one_line_error(lambda: stat.fn(bad), f"{stat.name} on shape {bad.shape}")


def check_nonfinite(stat: Stat, rs: np.ndarray) -> None:
    for value in (np.nan, np.inf):
        bad = rs.copy()
        bad[3, -1, 0] = value
        bad[5, 2, 2] = value
        try:
            out = stat.fn(bad)
        except ValueError as err:
            assert "\n" not in str(err) and ("NaN" in str(err) or "inf" in str(err)), \
                f"{stat.name}: the error for {value} does not say NaN or inf in one line: {err}"
            continue
        assert any(not np.isfinite(v).all() for v in _values(out)), \
            f"{stat.name}: {value} in rs gave an all-finite result (silently wrong)"


def check_empty(stat: Stat, rs: np.ndarray) -> None:
    for empty in (rs[:0], rs[:, :, :0], rs[:, :0]):
        _one_line_error(lambda: stat.fn(empty), f"{stat.name} on empty shape {empty.shape}")


def check_sizes(stat: Stat, rs: np.ndarray) -> None:
    for size in stat.sizes:
        for value in (0, -1):
            _one_line_error(lambda: stat.fn(rs, **{size: value}), f"{stat.name}({size}={value})", match=size)


def check_entry(stat: Stat, rs: np.ndarray, entry: Any) -> None:
    mem, ooc = _values(stat.fn(rs)), _values(stat.fn(entry))
    assert len(mem) == len(ooc), f"{stat.name}: {len(mem)} arrays from the array, {len(ooc)} from the entry"
    for a, b in zip(mem, ooc):
        assert a.shape == b.shape, f"{stat.name}: shape {a.shape} from the array, {b.shape} from the entry"
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{stat.name}: NaN where the other has a number"
        scale = max(float(np.nanmax(np.abs(a), initial=0.0)), 1e-12)
        np.testing.assert_allclose(b, a, rtol=stat.rtol, atol=stat.rtol * scale, equal_nan=True,
                                   err_msg=f"{stat.name}: the entry's result differs from the array's")


CHECKS = {"shape": check_bad_shape, "nonfinite": check_nonfinite, "empty": check_empty, "sizes": check_sizes,
          "entry": check_entry}


def _write_entry(rs: np.ndarray, root, name: str) -> cache.ActivationStore:
    with cache.ShardWriter(root, {"test": name}) as w:
        for a, b in SHARDS:
            w.write(a, rs[a:b])
    store = cache.open_store(root, {"test": name})
    assert store is not None and len(store.meta["shards"]) == len(SHARDS)
    return store


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    return _write_entry(RS, tmp_path_factory.mktemp("cache"), "contracts")


def _run(stat: Stat, check: str, entry) -> None:
    if check == "entry":
        check_entry(stat, RS, entry)
    else:
        CHECKS[check](stat, RS)


#: every (statistic, check) that applies: the size check only where the statistic takes a size argument
CASES = [(stat, check) for stat in STATS for check in CHECKS if check != "sizes" or stat.sizes]


@pytest.mark.parametrize(("stat", "check"), CASES, ids=[f"{s.name}-{c}" for s, c in CASES])
def test_contract(stat, check, entry, request):
    if check in stat.gaps:
        request.applymarker(pytest.mark.xfail(reason=stat.gaps[check], strict=True,
                                              raises=(AssertionError, ValueError)))
    _run(stat, check, entry)


# ----------------------------------------------------------------------------------------------------
# each check fails on a statistic built to break it
# ----------------------------------------------------------------------------------------------------
def _silent_shape(rs):  # takes any array: a 2-D input gives a number, no error
    return np.asarray(rs, dtype=np.float64).mean(0)


def _nan_hiding(rs):  # nanmean over samples: NaN in rs disappears from the result
    return np.nanmean(arrays.take(rs), axis=0)


def _empty_zeros(rs):  # a sum over no samples is zeros, no error
    return arrays.check_rs(rs).sum(0) if len(rs) else np.zeros(np.shape(rs)[1:])


def _unchecked_size(rs, chunk=8):  # a zero or negative chunk quietly becomes 1
    rs = arrays.check_rs(rs)
    return np.concatenate([rs[s:s + max(chunk, 1)].sum(0, keepdims=True) for s in range(0, len(rs), max(chunk, 1))])


def _size_error_without_name(rs, chunk=8):  # refuses the size, but the error does not say which
    if chunk < 1:
        raise ValueError("bad value")
    return arrays.check_rs(rs).mean(0)


def _first_shard_only(rs):  # an entry read as its first shard: a different answer from the array
    (_, first), *_ = arrays.chunks(rs)
    return first.mean(0, dtype=np.float64)


def _multiline(rs):
    if np.ndim(rs) != 3:
        raise ValueError("rs must be 3-D\nsee the docs")
    return np.zeros(3)


BROKEN = {
    "shape": Stat("silent shape", _silent_shape),
    "shape (multi-line error)": Stat("multi-line error", _multiline),
    "nonfinite": Stat("NaN hidden", _nan_hiding),
    "empty": Stat("empty gives zeros", _empty_zeros),
    "sizes": Stat("size unchecked", _unchecked_size, ("chunk",)),
    "sizes (error without the name)": Stat("size error without its name", _size_error_without_name, ("chunk",)),
    "entry": Stat("first shard only", _first_shard_only),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_check_catches_its_broken_statistic(case, entry):
    check = case.split(" ")[0]
    with pytest.raises(AssertionError):
        _run(BROKEN[case], check, entry)
