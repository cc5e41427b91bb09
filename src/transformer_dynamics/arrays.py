"""The small rules every analysis and plot room shares: the input check for ``rs: (n_samples, n_sublayers,
d_model)``, the one way to read a stream, and which transitions are within-layer or cross-layer.

Reading a stream. A statistic takes ``rs`` as an array (numpy, a memory map, a torch tensor) or as a cache entry
(:class:`transformer_dynamics.cache.ActivationStore`, read shard by shard, each shard verified), and reads it
through the functions here only, so each statistic has one code path for both:

- :func:`chunks` yields ``(start, chunk)`` over the samples: an array as slices (one slice, itself, by default),
  an entry shard by shard. Sums over samples (means, moments, per-sample values) are computed chunk by chunk,
  with memory flat in N for an entry.
- :func:`read` returns rows ``start .. stop - 1`` (a view of an array; only the shards needed of an entry).
- :func:`take` gathers every sample of some sublayers or units (a view or copy of an array; one pass over an
  entry's shards), and :func:`unit_blocks` splits the units so that a statistic needing every sample of a unit at
  once (mutual information) reads an entry in a few passes and an array in none.

:func:`nanmedian` is the one NaN-skipping median of the package (numpy's values, without its slow path).

Transition ``t`` goes from sublayer ``t`` to ``t + 1``: even ``t`` (attn -> mlp of one layer) is
*within-layer*, odd ``t`` (mlp -> the next layer's attn) is *cross-layer*.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .validation import check_positive_int

__all__ = ["check_rs", "check_units", "rs_shape", "is_entry", "check_stream", "chunks", "read", "take",
           "unit_blocks", "within_mask", "cross_mask", "split_transitions", "transition_kind", "nanmedian"]

_SHAPE_HINT = "Add the missing axis (e.g. rs[None]) or pass the full residual-stream array."


def rs_shape(rs: Any, *, min_samples: int = 1, min_sublayers: int = 1, name: str = "rs") -> tuple[int, int, int]:
    """``(n_samples, n_sublayers, d_model)`` of ``rs`` without reading it (an array, memory map, tensor, nested
    list, or a cache entry); a ValueError naming the fix when the shape is wrong or too small."""
    shape = getattr(rs, "shape", None)
    if shape is None and isinstance(rs, (list, tuple)):
        shape = np.shape(rs)
    if shape is None or len(shape) != 3:
        raise ValueError(f"{name} must be (n_samples, n_sublayers, d_model); got shape {shape}. {_SHAPE_HINT}")
    n, s, d = (int(v) for v in shape)
    if d < 1:
        raise ValueError(f"{name} has an empty axis: shape {(n, s, d)}")
    if s < max(min_sublayers, 1):
        raise ValueError(f"need at least {max(min_sublayers, 1)} sublayers; {name} has {s}")
    if n < max(min_samples, 1):
        raise ValueError(f"need at least {max(min_samples, 1)} samples (texts); {name} has {n}")
    return n, s, d


def check_rs(rs: Any, *, min_samples: int = 1, min_sublayers: int = 1, finite: bool = False,
             name: str = "rs") -> np.ndarray:
    """The one input check: ``rs`` as a numpy float array ``(n_samples, n_sublayers, d_model)``.

    Torch tensors are moved to numpy, float dtypes kept, other numeric dtypes cast to float32 (no copy when
    nothing changes). ``finite=True`` rejects NaN and inf. Errors say what to do.
    """
    if hasattr(rs, "detach"):  # a torch tensor
        rs = rs.detach().cpu().numpy()
    rs = np.asarray(rs)
    if rs.dtype == object or not (np.issubdtype(rs.dtype, np.number) or rs.dtype == bool):
        raise ValueError(f"{name} must be a numeric array; got dtype {rs.dtype}")
    if rs.ndim != 3:
        raise ValueError(f"{name} must be (n_samples, n_sublayers, d_model); got shape {rs.shape}. {_SHAPE_HINT}")
    if not np.issubdtype(rs.dtype, np.floating):
        rs = rs.astype(np.float32)
    rs_shape(rs, min_samples=min_samples, min_sublayers=min_sublayers, name=name)
    if finite and not np.isfinite(rs).all():
        raise ValueError(f"{name} contains NaN or inf; drop or impute those values first")
    return rs


def is_entry(rs: Any) -> bool:
    """Whether ``rs`` is a cache entry rather than an array: anything with ``shape`` and ``read(start, stop)``
    (:class:`transformer_dynamics.cache.ActivationStore`, which also reads shard by shard with
    ``iter_chunks()``)."""
    return not isinstance(rs, np.ndarray) and hasattr(rs, "read") and hasattr(rs, "shape")


def check_stream(rs: Any, *, min_samples: int = 1, min_sublayers: int = 1, name: str = "rs") -> Any:
    """``rs`` checked as something :func:`chunks` reads: a cache entry is returned as it is (its shape checked
    from its metadata, nothing read), anything else as :func:`check_rs` returns it (a numpy float array)."""
    if is_entry(rs):
        rs_shape(rs, min_samples=min_samples, min_sublayers=min_sublayers, name=name)
        return rs
    return check_rs(rs, min_samples=min_samples, min_sublayers=min_sublayers, name=name)


def _finite(chunk: np.ndarray, start: int, name: str) -> np.ndarray:
    if not np.isfinite(chunk).all():
        rows = np.flatnonzero(~np.isfinite(chunk).reshape(len(chunk), -1).all(1)) + start
        raise ValueError(f"{name} contains NaN or inf (samples {rows[:5].tolist()}); drop or impute those values "
                         "first")
    return chunk


def chunks(rs: Any, max_samples: int | None = None, *, finite: bool = False,
           name: str = "rs") -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, chunk)`` over the samples of ``rs`` in order; chunk: ``(m, n_sublayers, d_model)`` numpy.

    An array (numpy, memory map, torch tensor) gives slices of ``max_samples`` samples (None: one chunk, the
    array itself); a cache entry gives its shards (``iter_chunks()``: each read and verified once; an entry
    with ``read`` only: one read), split into ``max_samples`` pieces. ``finite=True``: a ValueError naming the
    samples on the first NaN or inf.
    """
    max_samples = check_positive_int(max_samples, "max_samples", none=True)
    rs = check_stream(rs, name=name)
    if not is_entry(rs):
        parts = iter([(0, rs)])
    elif hasattr(rs, "iter_chunks"):
        parts = rs.iter_chunks()
    else:
        parts = iter([(0, rs.read(0, rs.shape[0]))])
    for start, part in parts:
        step = max(1, len(part)) if max_samples is None else max_samples
        for s in range(0, len(part), step):
            chunk = part if step >= len(part) else part[s:s + step]
            yield start + s, (_finite(chunk, start + s, name) if finite else chunk)


def read(rs: Any, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Samples ``start .. stop - 1`` of ``rs`` (None: to the end): ``(m, n_sublayers, d_model)``; a view of an
    in-memory array (a read of a memory map), only the shards needed of a cache entry."""
    rs = check_stream(rs)
    n = rs.shape[0]
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise IndexError(f"rows {start}:{stop} out of range for {n} samples")
    return rs.read(start, stop) if is_entry(rs) else rs[start:stop]


def take(rs: Any, *, sublayers: slice | None = None, units: Any = None) -> np.ndarray:
    """Every sample of the given ``sublayers`` (a slice; None: all) and ``units`` (indices; None: all) of ``rs``
    -> ``(n_samples, n_sublayers', n_units')``: a view of an array where the selection allows, one pass over a
    cache entry's shards."""
    rs = check_stream(rs)
    sel = (slice(None), slice(None) if sublayers is None else sublayers)
    if units is not None:
        units = check_units(units, rs.shape[2])
    if not is_entry(rs):
        out = rs[sel]
        return out if units is None else out[:, :, units]
    return np.concatenate([c[sel] if units is None else c[sel][:, :, units] for _, c in chunks(rs)])


def unit_blocks(rs: Any, units: Any = None, max_bytes: int = 512 * 2**20
                ) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Blocks of units with every sample, for statistics that need all of a unit's samples at once.

    Yields ``(positions, source, columns)``: ``source[:, :, columns]`` are the units ``units[positions]`` (None:
    all units). An array is one block, itself (no copy); a cache entry is gathered in blocks of at most
    ``max_bytes`` (float32, every sample and sublayer), one pass over its shards per block.
    """
    max_bytes = check_positive_int(max_bytes, "max_bytes")
    rs = check_stream(rs)
    n, L, D = rs.shape
    units = np.arange(D) if units is None else check_units(units, D)
    if not is_entry(rs):
        yield slice(0, units.size), rs, units
        return
    block = max(1, int(max_bytes // (n * L * 4)))
    for b in range(0, units.size, block):
        idx = units[b:b + block]
        yield slice(b, b + idx.size), take(rs, units=idx), np.arange(idx.size)


def within_mask(n_transitions: int) -> np.ndarray:
    """``(n_transitions,)`` bool: True for within-layer transitions (even ``t``: attn -> mlp of one layer)."""
    return np.arange(int(n_transitions)) % 2 == 0


def cross_mask(n_transitions: int) -> np.ndarray:
    """``(n_transitions,)`` bool: True for cross-layer transitions (odd ``t``: mlp -> the next layer's attn)."""
    return ~within_mask(n_transitions)


def transition_kind(n_sublayers: int) -> np.ndarray:
    """Kind of each transition ``t -> t + 1``: ``(n_sublayers - 1,)`` str, ``"within"`` or ``"cross"``."""
    if n_sublayers < 2:
        raise ValueError(f"need at least 2 sublayers for a transition; got {n_sublayers}")
    return np.where(within_mask(n_sublayers - 1), "within", "cross")


def split_transitions(x, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(within, cross)``: the even and odd entries of ``x`` along ``axis`` (which indexes transitions
    t = 0 … n_sublayers - 2)."""
    x = np.asarray(x)
    w = within_mask(x.shape[axis])
    return np.compress(w, x, axis=axis), np.compress(~w, x, axis=axis)


def check_units(units: Any, d_model: int) -> np.ndarray:
    """``units`` as int64 indices, each in ``[0, d_model)``: a one-line error otherwise. -> (n_units,)"""
    u = np.atleast_1d(np.asarray(units))
    if u.size and not (np.issubdtype(u.dtype, np.integer) or
                       (np.issubdtype(u.dtype, np.floating) and np.isfinite(u).all() and (u == np.round(u)).all())):
        raise ValueError(f"units must be integer unit indices in [0, {d_model}); got dtype {u.dtype}: {u[:5]}")
    u = u.astype(np.int64).ravel()
    bad = u[(u < 0) | (u >= d_model)]
    if bad.size:
        raise ValueError(f"units {bad[:5].tolist()} out of range: indices must be in [0, {d_model}) (d_model)")
    return u


def nanmedian(x, axis: int = -1) -> np.ndarray:
    """``np.nanmedian(x, axis)``, the same values, quietly (NaN where a slice is all NaN): the slices without NaN by
    ``np.median`` (a partition; numpy's nanmedian of a 2-D or 3-D array goes through masked arrays, ten times
    slower), the others by ``np.nanmedian``. x: any shape -> x's shape without ``axis``."""
    import warnings  # noqa: PLC0415

    x = np.asarray(x)
    moved = np.moveaxis(x, axis, -1)
    nan = np.isnan(moved).any(-1) if np.issubdtype(x.dtype, np.floating) else np.zeros(moved.shape[:-1], bool)
    out = np.median(moved, axis=-1)
    if nan.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if out.ndim == 0:
                return np.nanmedian(moved)
            out[nan] = np.nanmedian(moved[nan], axis=-1)
    return out
