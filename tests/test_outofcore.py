"""Figure 1 and 2 statistics from a cache entry (shard by shard) equal the in-memory ones."""

from __future__ import annotations

import numpy as np
import pytest

from transformer_dynamics import arrays, cache, metrics as M, mutual_info as MI, phase


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """An array (n=301, 8 sublayers, 12 units) with a massive unit, a large-mean unit and a constant unit,
    written into a cache entry as 4 uneven shards. -> (rs, store)."""
    rng = np.random.default_rng(0)
    rs = np.cumsum(rng.standard_normal((301, 8, 12)), axis=1).astype(np.float32)
    rs[:, :, 0] *= 300.0  # massive
    rs[:, :, 1] += 1e4  # large mean, small spread: needs the shifted sums
    rs[:, 3, 2] = 5.0  # constant at one sublayer: NaN correlations
    root = tmp_path_factory.mktemp("cache")
    with cache.ShardWriter(root, {"test": "outofcore"}) as w:
        for a, b in [(0, 100), (100, 101), (101, 250), (250, 301)]:
            w.write(a, rs[a:b])
    store = cache.open_store(root, {"test": "outofcore"})
    assert store is not None and len(store.meta["shards"]) == 4
    return rs, store


@pytest.mark.parametrize("fn", [M.mean_activations, M.unit_order, M.successive_correlation,
                                M.pairwise_correlation, M.cosine_similarity, M.centered_cosine_similarity,
                                M.velocity, M.unit_magnitude, M.massive_units, phase.rotations_per_sample,
                                lambda r: phase.rotations_per_unit(r, "mean"),
                                lambda r: phase.rotations_per_unit(r, "per_sample")])
def test_store_equals_in_memory(sharded, fn):
    rs, store = sharded
    mem, ooc = np.asarray(fn(rs), dtype=np.float64), np.asarray(fn(store), dtype=np.float64)
    assert mem.shape == ooc.shape
    np.testing.assert_array_equal(np.isnan(mem), np.isnan(ooc))
    np.testing.assert_allclose(ooc, mem, rtol=1e-6, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("method", ["kde", "gcmi"])
def test_mutual_information_from_store(sharded, method):
    rs, store = sharded
    units = [0, 1, 3, 7]
    mem = MI.mutual_information(rs, method, units=units)
    ooc = MI.mutual_information(store, method, units=units, max_bytes=301 * 8 * 4 * 3)  # 2 unit blocks
    np.testing.assert_allclose(ooc, mem, rtol=1e-6)


def test_chunks_cover_the_samples_in_order(sharded):
    rs, store = sharded
    got = np.concatenate([c for _, c in arrays.chunks(store, max_samples=64)])
    np.testing.assert_array_equal(got, rs)
    starts = [s for s, _ in arrays.chunks(rs, max_samples=100)]
    assert starts == [0, 100, 200, 300]
    assert [s for s, _ in arrays.chunks(store, max_samples=64)] == [0, 64, 100, 101, 165, 229, 250]
    (start, whole), = arrays.chunks(rs)  # an array is one chunk, itself
    assert start == 0 and whole is rs


def test_read_take_and_unit_blocks_of_an_entry_equal_the_array(sharded):
    rs, store = sharded
    np.testing.assert_array_equal(arrays.read(store, 95, 260), rs[95:260])
    np.testing.assert_array_equal(arrays.take(store, sublayers=slice(2, 5), units=[7, 0]), rs[:, 2:5][:, :, [7, 0]])
    blocks = list(arrays.unit_blocks(store, [1, 3, 5, 7, 9], max_bytes=301 * 8 * 4 * 2))  # 2 units per block
    assert [b[0] for b in blocks] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    got = np.concatenate([src[:, :, cols] for _, src, cols in blocks], axis=2)
    np.testing.assert_array_equal(got, rs[:, :, [1, 3, 5, 7, 9]])
    (pos, src, cols), = arrays.unit_blocks(rs, [1, 3])  # an array: one block, itself
    assert src is rs and cols.tolist() == [1, 3]


def test_memory_map_and_tensor_read_like_the_array(sharded, tmp_path):
    import torch

    rs, _ = sharded
    np.save(tmp_path / "rs.npy", rs)
    mm = np.load(tmp_path / "rs.npy", mmap_mode="r")
    for src in (mm, torch.from_numpy(rs)):
        np.testing.assert_array_equal(M.successive_correlation(src), M.successive_correlation(rs))
        np.testing.assert_array_equal(np.asarray(phase.rotations_per_unit(src)), phase.rotations_per_unit(rs))
