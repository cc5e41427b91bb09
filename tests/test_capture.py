"""Capture on tiny random-weight Llama and Gemma 3 models: the hooked points are the residual stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transformer_dynamics import capture, residual

ARCHS = ["tiny_llama", "tiny_gemma3"]


@pytest.fixture(params=ARCHS)
def tiny(request):
    return request.getfixturevalue(request.param)


def _ids(tok, text, **kw):
    return torch.tensor([capture.tokenize(tok, [text], **kw)[0]])


def test_labels_and_hook_names():
    assert capture.sublayer_labels(2) == ["L0.attn", "L0.mlp", "L1.attn", "L1.mlp"]
    assert capture.hook_names(1) == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid"]
    # the short labels are derived from TransformerLens's names, the one vocabulary
    names = residual.hook_names(2, output=True)
    assert names[-1] == "blocks.1.hook_resid_post"
    assert [residual.short_label(h) for h in names] == capture.sublayer_labels(2) + ["L1.out"]
    with pytest.raises(ValueError, match="not a residual-stream hook name"):
        residual.short_label("blocks.0.attn.hook_z")


def test_residual_model_facts(tiny, tiny_tokenizer):
    """One object per loaded model: layers, the two norms, width, sublayers, device, pad id, hook names."""
    rm = residual.of(tiny, tiny_tokenizer)
    n_layers = tiny.config.num_hidden_layers
    assert (rm.n_layers, rm.n_sublayers, rm.n_points) == (n_layers, 2 * n_layers, 2 * n_layers + 1)
    assert rm.d_model == tiny.config.hidden_size and rm.pad_id == tiny_tokenizer.pad_token_id
    assert rm.norms[0] is rm.layers[0].input_layernorm
    assert rm.norms[1] is getattr(rm.layers[0], rm.architecture.mlp_norm)
    assert len(rm.hook_names) == rm.n_points and len(rm.labels) == rm.n_sublayers
    assert residual.of(rm) is rm and rm.config is tiny.config


def test_a_model_without_layers_is_refused(tiny_tokenizer):
    """A residual stream needs at least one decoder layer: said in one line when the model is resolved, not as a
    division by zero where its shards are sized."""
    from transformers import LlamaConfig, LlamaForCausalLM

    empty = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=0, num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="has no decoder layers"):
        residual.of(empty, tiny_tokenizer)


def test_the_pad_id_rule(tiny_llama, tiny_tokenizer):
    """The tokenizer's pad token, else its end-of-text token, else 0: written once (residual.of)."""
    class Tok:
        pad_token_id, eos_token_id = None, 7
    assert residual.of(tiny_llama, Tok()).pad_id == 7
    Tok.eos_token_id = None
    assert residual.of(tiny_llama, Tok()).pad_id == 0
    assert residual.of(tiny_llama, pad_id=3).pad_id == 3
    with pytest.raises(ValueError, match="pad_id must be an int >= 0"):
        residual.of(tiny_llama, pad_id=-1)


def test_recording_adds_and_removes_its_hooks(tiny_llama, tiny_tokenizer):
    """The hooks live for one forward: none are left on the model afterwards, even when the forward fails."""
    rm = residual.of(tiny_llama, tiny_tokenizer)
    ids = _ids(tiny_tokenizer, "the game was")

    def n_hooks():
        return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in tiny_llama.modules())

    before = n_hooks()
    out = torch.empty((1, rm.n_points, rm.d_model))
    with torch.inference_mode():
        with capture.recording(rm, torch.zeros(1, dtype=torch.long), torch.tensor([ids.shape[1] - 1]), out,
                               edit=(1, lambda h: h)):
            assert n_hooks() == before + rm.n_points + 1
            capture.forward_until_stop(rm, input_ids=ids)
        assert n_hooks() == before
        boom = rm.layers[1].register_forward_pre_hook(lambda *a: (_ for _ in ()).throw(KeyError("boom")))
        try:
            with pytest.raises(KeyError), capture.recording(rm, torch.zeros(1, dtype=torch.long),
                                                            torch.tensor([ids.shape[1] - 1]), out):
                capture.forward_until_stop(rm, input_ids=ids)
        finally:
            boom.remove()
        assert n_hooks() == before


def test_architecture_finds_the_right_norms(tiny_llama, tiny_gemma3):
    assert residual.architecture(tiny_llama).mlp_norm == "post_attention_layernorm"
    # Gemma 3's post_attention_layernorm norms the attention output; its pre-MLP norm is another one.
    assert residual.architecture(tiny_gemma3).mlp_norm == "pre_feedforward_layernorm"


def test_even_sublayers_equal_hidden_states(tiny, tiny_tokenizer, sample_texts):
    rs = capture.residual_stream(tiny, tiny_tokenizer, sample_texts, batch_size=3, progress=False)
    n_layers = tiny.config.num_hidden_layers
    assert rs.shape == (len(sample_texts), 2 * n_layers, tiny.config.hidden_size)
    assert rs.dtype == np.float32
    for i, text in enumerate(sample_texts):
        out = tiny(_ids(tiny_tokenizer, text), output_hidden_states=True)
        for l in range(n_layers):
            np.testing.assert_allclose(rs[i, 2 * l], out.hidden_states[l][0, -1].numpy(), atol=1e-5, rtol=0)


def test_odd_sublayer_is_even_plus_attention_output(tiny, tiny_tokenizer, sample_texts):
    """index 2l+1 = index 2l + the attention block's output (for Gemma: after its post-attention norm)."""
    arch = residual.architecture(tiny)
    layers = residual.of(tiny).layers
    added = {}
    # The module whose output the layer adds to the residual stream after attention.
    name = "post_attention_layernorm" if arch.mlp_norm == "pre_feedforward_layernorm" else "self_attn"
    handles = [getattr(layer, name).register_forward_hook(
        lambda m, a, o, l=l: added.__setitem__(l, (o[0] if isinstance(o, tuple) else o)[0, -1].clone()))
        for l, layer in enumerate(layers)]
    try:
        text = sample_texts[4]
        rs = capture.residual_stream(tiny, tiny_tokenizer, [text], progress=False)[0]
        tiny(_ids(tiny_tokenizer, text))
    finally:
        for h in handles:
            h.remove()
    for l in range(len(layers)):
        np.testing.assert_allclose(rs[2 * l + 1], rs[2 * l] + added[l].numpy(), atol=1e-5, rtol=0)
        assert not np.allclose(rs[2 * l + 1], rs[2 * l])


def test_batched_equals_unbatched_under_padding(tiny, tiny_tokenizer, sample_texts):
    batched = capture.residual_stream(tiny, tiny_tokenizer, sample_texts, batch_size=4, progress=False)
    single = np.stack([capture.residual_stream(tiny, tiny_tokenizer, [t], progress=False)[0]
                       for t in sample_texts])
    np.testing.assert_allclose(batched, single, atol=1e-4, rtol=0)


def test_chunks_stream_in_input_order(tiny_llama, tiny_tokenizer, sample_texts):
    whole = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, progress=False)
    chunks = list(capture.iter_residual_stream(tiny_llama, tiny_tokenizer, sample_texts, chunk_size=3,
                                               batch_size=2, progress=False))
    assert [s for s, _ in chunks] == [0, 3, 6]
    np.testing.assert_allclose(np.concatenate([c for _, c in chunks]), whole, atol=1e-4, rtol=0)


def test_tokenize_bos_and_strip(tiny_tokenizer):
    bos = tiny_tokenizer.bos_token_id
    with_bos = capture.tokenize(tiny_tokenizer, ["the war \n"], add_bos=True)[0]
    without = capture.tokenize(tiny_tokenizer, ["the war \n"], add_bos=False)[0]
    assert with_bos[0] == bos and with_bos[1:] == without and bos not in without
    assert without[-1] == tiny_tokenizer.convert_tokens_to_ids("\n") or len(without) == 2
    stripped = capture.tokenize(tiny_tokenizer, ["the war \n"], add_bos=False, strip=True)[0]
    assert stripped == tiny_tokenizer("the war", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="empty"):
        capture.tokenize(tiny_tokenizer, [" \n"], strip=True)


def test_shuffled_control_keeps_bos_and_token_multiset(tiny_llama, tiny_tokenizer, sample_texts):
    from transformer_dynamics.data import shuffle_token_ids

    ids = capture.tokenize(tiny_tokenizer, sample_texts)
    shuffled = shuffle_token_ids(ids, seed=3)
    assert all(s[0] == tiny_tokenizer.bos_token_id for s in shuffled)
    assert all(sorted(a) == sorted(b) for a, b in zip(ids, shuffled))
    assert any(a != b for a, b in zip(ids, shuffled))
    assert shuffle_token_ids(ids, seed=3) == shuffled  # seeded
    orig = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, progress=False)
    shuf = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, shuffle_tokens=True, seed=3,
                                   progress=False)
    # the control runs exactly the shuffled ids
    direct = capture.iter_residual_stream(tiny_llama, tiny_tokenizer, token_ids=shuffled, progress=False)
    np.testing.assert_allclose(shuf, next(direct)[1], atol=1e-5, rtol=0)
    # the first sublayer depends only on the last token: same where the last token stayed put
    same_last = np.array([a[-1] == b[-1] for a, b in zip(ids, shuffled)])
    np.testing.assert_allclose(orig[same_last, 0], shuf[same_last, 0], atol=1e-6)
    assert not np.allclose(orig, shuf)


def test_capture_errors(tiny_llama, tiny_tokenizer):
    with pytest.raises(ValueError, match="batch_size"):
        capture.residual_stream(tiny_llama, tiny_tokenizer, ["a war"], batch_size=0, progress=False)
    with pytest.raises(ValueError, match="exactly one"):
        next(capture.iter_residual_stream(tiny_llama, tiny_tokenizer, progress=False))


def test_chunked_shuffle_equals_one_shot(tiny_llama, tiny_tokenizer, sample_texts):
    """Tokenising and shuffling chunk by chunk draws the same permutations as shuffling all at once."""
    one = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, shuffle_tokens=True, seed=4,
                                  progress=False)
    chunks = capture.iter_residual_stream(tiny_llama, tiny_tokenizer, sample_texts, shuffle_tokens=True, seed=4,
                                          chunk_size=2, progress=False)
    np.testing.assert_allclose(np.concatenate([c for _, c in chunks]), one, atol=1e-4, rtol=0)


def test_batches_is_the_one_loop(tiny_llama, tiny_tokenizer, sample_texts):
    """capture.batches: every text once, longest first, recorded rows equal the one-shot capture."""
    ids = capture.tokenize(tiny_tokenizer, sample_texts)
    full = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, batch_size=2, progress=False)
    seen = []
    with torch.inference_mode():
        for sel, rec in capture.batches(residual.of(tiny_llama, tiny_tokenizer), ids, batch_size=2):
            assert len(sel) <= 2 and rec.shape == (len(sel), *full.shape[1:])
            np.testing.assert_allclose(rec, full[sel], atol=1e-6, rtol=0)
            seen.extend(sel.tolist())
    assert sorted(seen) == list(range(len(ids)))
    lengths = [len(ids[i]) for i in seen]
    assert lengths == sorted(lengths, reverse=True)


# ------------------------------------------------------------------------------------------------
# Packed (padding-free) batches
# ------------------------------------------------------------------------------------------------
def test_pack_ids_restarts_positions_per_text():
    input_ids, position_ids, last, lengths = capture.pack_ids([[5, 6, 7], [8], [9, 10]])
    assert input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert position_ids.tolist() == [[0, 1, 2, 0, 0, 1]]
    assert last.tolist() == [2, 3, 5] and lengths.tolist() == [3, 1, 2]
    with pytest.raises(ValueError, match="no tokens"):
        capture.pack_ids([[1], []])


def assert_roundoff_equal(a, b):
    """Equal to float32 round-off: measured at 2 threads on tiny GPT-2 / Mistral, 2e-8 absolute (1.8e-5
    relative on values ~1e-3); a wrong mask or position would move values by far more than 1e-6."""
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(np.abs(b).max()))


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_packed_equals_padded(tiny, tiny_tokenizer, sample_texts, batch_size):
    """Packing changes only which rows the linear layers see; attention runs on the padded batch with its
    own mask (Gemma 3's sliding window of 8 included: several texts are longer), so values agree to float32
    round-off (matmuls of other shapes may sum in another order with 2+ threads)."""
    assert capture.can_pack(residual.of(tiny))
    assert max(len(s) for s in capture.tokenize(tiny_tokenizer, sample_texts)) > 8
    padded = capture.residual_stream(tiny, tiny_tokenizer, sample_texts, batch_size=batch_size, progress=False,
                                     pack=False)
    packed = capture.residual_stream(tiny, tiny_tokenizer, sample_texts, batch_size=batch_size, progress=False,
                                     pack=True)
    assert_roundoff_equal(packed, padded)
    assert tiny.config._attn_implementation == "sdpa"  # restored after the capture


def test_packed_attention_sees_only_its_own_text(tiny_llama, tiny_tokenizer, sample_texts):
    """Each text of a packed batch gives what it gives alone: nothing leaks between neighbours in the row."""
    packed = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, batch_size=len(sample_texts),
                                     progress=False, pack=True)
    alone = np.stack([capture.residual_stream(tiny_llama, tiny_tokenizer, [t], progress=False, pack=False)[0]
                      for t in sample_texts])
    np.testing.assert_allclose(packed, alone, atol=1e-5, rtol=0)


def test_pack_needs_sdpa_and_default_falls_back(tiny_llama, tiny_tokenizer, sample_texts):
    cfg = tiny_llama.config
    padded = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, batch_size=3, progress=False,
                                     pack=False)
    cfg._attn_implementation = "eager"
    try:
        assert not capture.can_pack(residual.of(tiny_llama))
        with pytest.raises(ValueError, match="sdpa"):
            capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, progress=False, pack=True)
        eager = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, batch_size=3, progress=False)
    finally:
        cfg._attn_implementation = "sdpa"
    np.testing.assert_allclose(eager, padded, atol=1e-5, rtol=0)


def test_packed_attention_outside_a_capture_is_an_error(tiny_llama, tiny_tokenizer):
    cfg = tiny_llama.config
    capture.packing._register_packed_attention()
    cfg._attn_implementation = capture.PACKED_ATTENTION
    try:
        with pytest.raises(RuntimeError, match="pack=True"), torch.inference_mode():
            tiny_llama(input_ids=_ids(tiny_tokenizer, "the game was"))
    finally:
        cfg._attn_implementation = "sdpa"


def test_attention_restored_when_a_hook_fails(tiny_llama, tiny_tokenizer, sample_texts):
    def boom(module, args):
        raise KeyError("boom")

    handle = residual.of(tiny_llama).layers[1].register_forward_pre_hook(boom)
    try:
        with pytest.raises(KeyError):
            capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, progress=False, pack=True)
    finally:
        handle.remove()
    assert tiny_llama.config._attn_implementation == "sdpa"
    assert capture.packing._PACKING.get() is None


def test_compiled_capture_matches_eager_and_restores_forwards(tiny_llama, tiny_tokenizer, sample_texts):
    """compile=True: the layers' MLPs and norms run torch.compile'd (round-off only), the recording hooks
    still fire, and the modules get their own forward back afterwards."""
    eager = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, batch_size=3, progress=False)
    compiled = capture.residual_stream(tiny_llama, tiny_tokenizer, sample_texts, batch_size=3, progress=False,
                                       compile=True)
    np.testing.assert_allclose(compiled, eager, atol=1e-5, rtol=1e-5)
    layer = residual.of(tiny_llama).layers[0]
    assert "forward" not in layer.mlp.__dict__ and "forward" not in layer.input_layernorm.__dict__


@pytest.mark.parametrize("kind", ["gpt2", "mistral_sliding_window"])
def test_packed_equals_padded_on_other_architectures(kind, tiny_tokenizer, sample_texts):
    """Absolute position embeddings (GPT-2: positions restart per packed text) and a sliding window passed
    to the attention (Mistral, window 6 < the longest text): still the padded batch's values (to round-off)."""
    from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=64, n_layer=2, n_head=4,
                                           n_positions=128, bos_token_id=tiny_tokenizer.bos_token_id))
    else:
        model = MistralForCausalLM(MistralConfig(
            vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, sliding_window=6,
            bos_token_id=tiny_tokenizer.bos_token_id, pad_token_id=tiny_tokenizer.pad_token_id))
    model.eval()
    assert capture.can_pack(residual.of(model))
    padded = capture.residual_stream(model, tiny_tokenizer, sample_texts, batch_size=4, progress=False, pack=False)
    packed = capture.residual_stream(model, tiny_tokenizer, sample_texts, batch_size=4, progress=False, pack=True)
    assert_roundoff_equal(packed, padded)
