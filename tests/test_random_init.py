"""Tests for transformer_dynamics.random_init: the untrained references every chapter compares with."""

import pytest
import torch

from transformer_dynamics import random_init


@pytest.fixture(scope="module")
def tied_llama(tiny_tokenizer):
    """A tiny Llama whose output embedding is its input embedding (as SmolLM2's and Gemma's are)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # trained-like: norms away from one, weights at their own scales
        for i, p in enumerate(model.parameters()):
            p.mul_(1.0 + 0.1 * i).add_(0.01 * i)
    return model


def _reference(model, kind, seed):
    """What random_init_model did before it skipped transformers' init for the kinds that overwrite every
    weight: from_config (initialised) under the seed, then each tensor drawn from its own generator."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rand = AutoModelForCausalLM.from_config(model.config)
    trained = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in rand.named_parameters():
            t = trained[name].detach().float()
            if kind == "matched":
                sd, mean = (float(v) for v in torch.std_mean(t.double(), unbiased=False))
                p.copy_(torch.randn(t.shape, generator=gen) * sd + mean)
            elif kind == "permuted":
                flat = t.reshape(-1)
                p.copy_(flat[torch.randperm(flat.numel(), generator=gen)].reshape(t.shape))
    return rand


@pytest.mark.parametrize("kind", random_init.KINDS)
def test_each_kind_is_the_documented_draw_untied_from_nothing(tied_llama, kind):
    before = {k: v.clone() for k, v in tied_llama.state_dict().items()}
    rand = random_init.random_init_model(tied_llama, kind, seed=3)
    want = _reference(tied_llama, kind, 3)
    got_params, want_params = list(rand.named_parameters()), list(want.named_parameters())
    assert [n for n, _ in got_params] == [n for n, _ in want_params]          # tied weights drawn once
    for (name, a), (_, b) in zip(got_params, want_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert rand.get_output_embeddings().weight is rand.get_input_embeddings().weight
    assert not rand.training and not any(p.requires_grad for p in rand.parameters())
    own = {p.data_ptr() for p in tied_llama.parameters()}
    assert not own & {p.data_ptr() for p in rand.parameters()}
    for k, v in tied_llama.state_dict().items():                             # the trained model unchanged
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_matched_keeps_each_tensors_scale_and_permuted_its_values(tied_llama):
    matched = dict(random_init.random_init_model(tied_llama, "matched", seed=1).named_parameters())
    permuted = dict(random_init.random_init_model(tied_llama, "permuted", seed=1).named_parameters())
    for name, t in tied_llama.named_parameters():
        if t.numel() >= 1000:
            assert float(matched[name].std()) == pytest.approx(float(t.detach().std()), rel=0.1), name
        torch.testing.assert_close(permuted[name].reshape(-1).sort().values, t.reshape(-1).sort().values)
        assert not torch.equal(permuted[name], t) or t.unique().numel() == 1, name


def test_seeds_and_bad_input(tied_llama):
    a = random_init.random_init_model(tied_llama, "matched", seed=0)
    b = random_init.random_init_model(tied_llama, "matched", seed=0)
    c = random_init.random_init_model(tied_llama, "matched", seed=1)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    with pytest.raises(ValueError, match="kind must be one of"):
        random_init.random_init_model(tied_llama, "uniform")
    with pytest.raises(ValueError, match="seed must be an integer"):
        random_init.random_init_model(tied_llama, "default", seed=-1)
    assert random_init.run_model(tied_llama, "trained") is tied_llama
    with pytest.raises(ValueError, match="neither 'trained' nor"):
        random_init.run_model(tied_llama, "matched")
