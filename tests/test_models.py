"""The real offline default model (SmolLM2-135M from its wheel), 4-bit loading, the pipeline's cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transformer_dynamics import cae_cache, capture, models, pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm(model_cache_dir):
    return pipeline.load_model("smollm2-135m", cache_dir=model_cache_dir)


def test_unknown_model_lists_short_names():
    with pytest.raises(ValueError, match="smollm2-135m"):
        models.resolve("no-such-model")
    assert models.resolve("meta-llama/Llama-3.1-8B").kind == "hub"
    assert models.resolve("smollm2-135m").kind == "packaged"


def test_bad_options_are_explained():
    with pytest.raises(ValueError, match="quantization"):
        models.load_model("smollm2-135m", quantization="3bit")
    with pytest.raises(ValueError, match="dtype"):
        models.load_model("smollm2-135m", dtype="float8")


def test_default_model_loads_offline_and_speaks(smollm):
    model, tok = smollm
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert tok.bos_token_id is not None
    # SmolLM2's tokenizer adds no BOS by itself: capture adds it explicitly.
    assert tok("Paris")["input_ids"][0] != tok.bos_token_id
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_conversion_is_cached_with_its_source(model_cache_dir, smollm):
    folder = models.convert_gguf("smollm2-135m", model_cache_dir)
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert models.source_fingerprint("smollm2-135m", model_cache_dir).startswith("gguf:")
    # every loaded file's sha256 is recorded (at conversion, or on the first use of an older conversion)
    # and verified on each use
    recorded = json.loads((folder / "source.json").read_text())["files"]
    assert set(recorded) >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert recorded == models.file_digests(folder, model_cache_dir)


def test_capture_shape_on_the_real_model(smollm, wikitext_dir):
    model, tok = smollm
    texts = pipeline.load_texts(3, seed=0, data_dir=wikitext_dir)
    rs = capture.residual_stream(model, tok, texts, batch_size=2, progress=False)
    assert rs.shape == (3, 60, 576) and np.isfinite(rs).all()
    # the residual stream grows over depth
    norms = np.linalg.norm(rs, axis=-1).mean(0)
    assert norms[-1] > 5 * norms[1]


def test_pipeline_caches_and_recomputes_corrupt(model_cache_dir, wikitext_dir, smollm, monkeypatch):
    kw = dict(n=3, seed=5, cache_dir=model_cache_dir, data_dir=wikitext_dir, progress=False)
    first = pipeline.residual_stream_store("smollm2-135m", **kw)
    calls = []
    real = pipeline.load_model
    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = pipeline.residual_stream_store("smollm2-135m", **kw)
    assert calls == [] and again.path == first.path  # a hit needs no model
    np.testing.assert_array_equal(again.to_numpy(), first.to_numpy())
    shard = first.path / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8] + b"\0" * 8)
    with pytest.warns(UserWarning, match="corrupt"):
        redone = pipeline.residual_stream_store("smollm2-135m", **kw)
    assert calls == [1]
    assert redone.to_numpy().shape == (3, 60, 576)
    # residual_stream reads the entry once (hashing each shard as it reads) and recomputes a corrupt one
    good = redone.to_numpy()
    shard = redone.path / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8] + b"\1" * 8)
    with pytest.warns(UserWarning, match="corrupt"):
        again = pipeline.residual_stream("smollm2-135m", **kw)
    assert calls == [1, 1]
    np.testing.assert_array_equal(again, good)
    shuffled = pipeline.residual_stream("smollm2-135m", condition="shuffled", **kw)
    assert shuffled.shape == (3, 60, 576) and not np.allclose(shuffled, redone.to_numpy())
    with pytest.raises(ValueError, match="condition"):
        pipeline.residual_stream("smollm2-135m", condition="reversed", **kw)


def test_cli_capture_prints_where(model_cache_dir, wikitext_dir, capsys):
    from transformer_dynamics.__main__ import main

    assert main(["capture", "--n", "2", "--cache-dir", str(model_cache_dir), "--data-dir", str(wikitext_dir),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "(2, 60, 576)" in out and str(model_cache_dir) in out
    assert main(["capture", "--model", "nope", "--n", "2", "--quiet"]) == 2
    assert "short name" in capsys.readouterr().err


def test_four_bit_capture_on_cpu(model_cache_dir, wikitext_dir, smollm):
    """CI runs the capture on a 4-bit (bitsandbytes NF4) model, as the design asks."""
    pytest.importorskip("bitsandbytes")
    q, tok = models.load_model("smollm2-135m", quantization="4bit", cache_dir=model_cache_dir)
    assert any("4bit" in type(m).__name__ for m in q.modules())
    texts = pipeline.load_texts(2, seed=0, data_dir=wikitext_dir)
    rs4 = capture.residual_stream(q, tok, texts, progress=False)
    rs = capture.residual_stream(*smollm, texts, progress=False)
    assert rs4.shape == rs.shape
    r = np.corrcoef(rs4.ravel(), rs.ravel())[0, 1]
    assert 0.9 < r < 1.0  # close to fp32, and really quantised


def test_trained_cae_is_cached(model_cache_dir, wikitext_dir, monkeypatch):
    from transformer_dynamics import reduce

    kw = dict(n=6, seed=1, cache_dir=model_cache_dir, k=3, epochs=2, patience=1, batch_size=64, progress=False)
    first = cae_cache.trained_cae("smollm2-135m", **kw)
    monkeypatch.setattr(reduce, "fit_cae", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again = cae_cache.trained_cae("smollm2-135m", **kw)
    assert again.test_ev == first.test_ev and again.config == first.config
    for (k1, v1), (k2, v2) in zip(first.model.state_dict().items(), again.model.state_dict().items()):
        assert k1 == k2 and np.array_equal(v1.numpy(), v2.numpy())
    with pytest.raises(AssertionError, match="retrained"):
        cae_cache.trained_cae("smollm2-135m", **{**kw, "epochs": 3})


def test_trained_caes_in_worker_processes_equal_in_process(model_cache_dir, wikitext_dir):
    """CAEs trained side by side in two spawned processes are the CAEs one process trains (bit for bit)."""
    kw = dict(n=6, seed=3, cache_dir=model_cache_dir, k=3, epochs=2, patience=1, batch_size=64, progress=False,
              num_threads=1)
    runs = [("smollm2-135m", "original"), ("smollm2-135m", "shuffled")]
    parallel = cae_cache.trained_caes(runs, workers=2, recompute=True, **kw)  # trained in the workers
    for m, c in runs:
        alone = cae_cache.trained_cae(m, condition=c, recompute=True, **kw)
        assert parallel[m, c].test_ev == alone.test_ev
        for (k1, v1), (k2, v2) in zip(parallel[m, c].model.state_dict().items(), alone.model.state_dict().items()):
            assert k1 == k2 and np.array_equal(v1.numpy(), v2.numpy()), (c, k1)
