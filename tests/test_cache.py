"""The activation cache: round trip, sharded streaming, stale and corrupt entries are never used."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from transformer_dynamics import cache

ID = {"model": "m", "weights": "gguf:abc", "rows_sha256": "r", "n": 10, "seed": 0, "condition": "original"}


def _write(root, identity=ID, n=10, shard=4):
    rs = np.random.default_rng(0).standard_normal((n, 6, 5)).astype(np.float32)
    with cache.ShardWriter(root, identity) as w:
        for s in range(0, n, shard):
            w.write(s, rs[s:s + shard])
    return rs, w.store


def test_round_trip_and_chunks(tmp_path):
    rs, store = _write(tmp_path)
    assert store.shape == (10, 6, 5)
    found = cache.open_store(tmp_path, ID)
    np.testing.assert_array_equal(found.to_numpy(), rs)
    np.testing.assert_array_equal(found.read(3, 9), rs[3:9])
    chunks = list(found.iter_chunks())
    assert [s for s, _ in chunks] == [0, 4, 8] and max(len(c) for _, c in chunks) == 4


def test_miss_when_any_identity_field_differs(tmp_path):
    _write(tmp_path)
    assert cache.open_store(tmp_path, {**ID, "seed": 1}) is None
    assert cache.open_store(tmp_path, {**ID, "extra": 1}) is None


def test_stale_meta_is_reported(tmp_path):
    _, store = _write(tmp_path)
    meta = json.loads((store.path / "meta.json").read_text())
    meta["identity"]["seed"] = 99
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(cache.CacheWarning, match="stale"):
        assert cache.open_store(tmp_path, ID) is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta"])
def test_corrupt_entries_are_reported_never_used(tmp_path, damage):
    _, store = _write(tmp_path)
    shard = store.path / "shard-00001.safetensors"
    if damage == "flip":
        data = bytearray(shard.read_bytes())
        data[-3] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:50])
    else:
        (store.path / "meta.json").write_text("{not json")
    with pytest.warns(cache.CacheWarning):
        assert cache.open_store(tmp_path, ID) is None
    if damage != "meta":
        unverified = cache.open_store(tmp_path, ID, verify=False)
        with pytest.raises(cache.CacheError, match="delete"):
            unverified.to_numpy()


def test_missing_shard_is_a_miss_even_unverified(tmp_path):
    _, store = _write(tmp_path)
    (store.path / "shard-00001.safetensors").unlink()
    with pytest.warns(cache.CacheWarning, match="missing"):
        assert cache.open_store(tmp_path, ID, verify=False) is None


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with cache.ShardWriter(tmp_path, ID) as w:
            w.write(0, np.zeros((2, 3, 4), np.float32))
            raise RuntimeError("capture died")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.open_store(tmp_path, ID) is None
    assert not any(tmp_path.rglob("meta.json"))


def test_writer_checks_order_and_shape(tmp_path):
    with pytest.raises(ValueError, match="in order"):
        with cache.ShardWriter(tmp_path, ID) as w:
            w.write(1, np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="differs"):
        with cache.ShardWriter(tmp_path, ID) as w:
            w.write(0, np.zeros((2, 3, 4), np.float32))
            w.write(2, np.zeros((2, 3, 5), np.float32))


def test_module_round_trip_and_corruption(tmp_path):
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = cache.save_module(tmp_path, ID, state, {"widths": [3, 2]})
    got, cfg = cache.load_module(tmp_path, ID)
    np.testing.assert_array_equal(got["w"], state["w"])
    assert cfg == {"widths": [3, 2]}
    assert cache.load_module(tmp_path, {**ID, "n": 11}) is None
    data = bytearray((path / "state.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "state.safetensors").write_bytes(bytes(data))
    with pytest.warns(cache.CacheWarning, match="corrupt"):
        assert cache.load_module(tmp_path, ID) is None


def _swap_records(meta):
    """Swap two shard records' files (and sha256), keeping their start/stop: the records still tile [0, n)."""
    a, b = meta["shards"][0], meta["shards"][1]
    for key in ("file", "sha256"):
        a[key], b[key] = b[key], a[key]


def test_each_shard_carries_its_row_range(tmp_path):
    rs, store = _write(tmp_path, n=10, shard=5)  # two shards of equal size: a swap keeps every shape
    assert cache.shard_bytes(rs[:5], 0) == (store.path / "shard-00000.safetensors").read_bytes()  # reproducible
    from safetensors import safe_open

    with safe_open(store.path / "shard-00001.safetensors", "np") as f:
        assert f.metadata() == {"rows": "5:10"}
    meta = json.loads((store.path / "meta.json").read_text())
    _swap_records(meta)
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(cache.CacheWarning, match=r"holds rows \[5, 10\) but meta.json places it at \[0, 5\)"):
        assert cache.open_store(tmp_path, ID) is None
    with pytest.raises(cache.CacheError, match="its records were edited"):
        cache.open_store(tmp_path, ID, verify=False).to_numpy()


def test_entries_of_format_1_are_read_and_format_2_needs_the_row_range(tmp_path):
    from safetensors.numpy import save

    rs, store = _write(tmp_path, n=10, shard=5)
    meta = json.loads((store.path / "meta.json").read_text())
    for sh in meta["shards"]:  # as written before the row range: no metadata in the shard
        data = save({"rs": rs[sh["start"]:sh["stop"]]})
        (store.path / sh["file"]).write_bytes(data)
        sh["sha256"] = cache._sha256(data)
    (store.path / "meta.json").write_text(json.dumps({**meta, "format": 1}))
    np.testing.assert_array_equal(cache.open_store(tmp_path, ID).to_numpy(), rs)
    (store.path / "meta.json").write_text(json.dumps({**meta, "format": 2}))
    with pytest.warns(cache.CacheWarning, match="does not carry its row range"):
        assert cache.open_store(tmp_path, ID) is None
