"""Local dynamics: sublayer maps, Jacobians (every method, the batched structured ones included) against finite
differences and each other, spectral measures on matrices with known answers, Lyapunov exponents of known products,
jPCA on a synthetic rotation and a random walk and its resampled control against refits, and the registry's
dynamics claims decided from constructed per-text measures."""

from __future__ import annotations

import copy
import os
import types

import numpy as np
import pytest
import torch

from transformer_dynamics import claims, effects
from transformer_dynamics import dynamics as dy
from transformer_dynamics.bootstrap import bootstrap_indices
from transformer_dynamics.capture import residual_stream, tokenize
from transformer_dynamics.verdicts import judge

TEXTS = ["the game was the first of the season", "a war",
         "the city is on the river and the army was at the station in the first year of the war"]


def _rmsnorm64(module, x):
    """transformers' RMSNorms compute in float32 whatever the model's dtype; the float64 test models use the
    same formula in float64 (Gemma scales by ``1 + weight``, Llama by ``weight``)."""
    eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-6))
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y * (1.0 + module.weight) if "Gemma" in type(module).__name__ else module.weight * y


def _double(model):
    """A float64 copy of ``model`` whose RMSNorms compute in float64 (so the whole map is float64)."""
    model = copy.deepcopy(model).double()
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.forward = types.MethodType(_rmsnorm64, module)
    return model


def _ctx(model, tok, mode="frozen"):
    return dy.frozen_context(model, tokenize(tok, TEXTS), mode=mode, pad_token_id=tok.pad_token_id)


def _fd_jacobian(f, x, eps):
    """Central finite differences of ``f: (B, D) -> (B, D)`` at ``x``: ``(B, D, D)``."""
    B, D = x.shape
    cols = []
    for j in range(D):
        e = torch.zeros_like(x)
        e[:, j] = eps
        with torch.no_grad():
            cols.append((f(x + e) - f(x - e)) / (2 * eps))
    return torch.stack(cols, dim=-1)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny64(request, tiny_llama, tiny_gemma3):
    return _double(tiny_llama if request.param == "llama" else tiny_gemma3)


# --------------------------------------------------------------------------------------------------
# Sublayer maps and Jacobians
# --------------------------------------------------------------------------------------------------
def test_maps_reproduce_the_captured_stream(tiny64, tiny_tokenizer):
    ctx = _ctx(tiny64, tiny_tokenizer)
    assert ctx.h.shape == (3, 9, 64)
    assert dy.check_maps(tiny64, ctx).max() < 1e-12
    # the module's own (eager) attention with the prefix as its cache: transformers' softmax is float32
    assert dy.check_maps(tiny64, ctx, fast=False).max() < 1e-6
    rs = residual_stream(tiny64.float(), tiny_tokenizer, TEXTS, progress=False)  # capture's view agrees
    tiny64.double()
    np.testing.assert_allclose(ctx.h[:, :-1].numpy(), rs, rtol=1e-5, atol=1e-5)


def test_gemma_sliding_window_is_respected(tiny_gemma3, tiny_tokenizer):
    """The long text (17 tokens) exceeds the window of 8: a map that attended to the whole prefix would miss."""
    g = _double(tiny_gemma3)
    ctx = _ctx(g, tiny_tokenizer)
    assert max(ctx.meta["lengths"]) > g.config.sliding_window
    assert dy.check_maps(g, ctx).max() < 1e-12


def test_jacobians_equal_finite_differences_float64(tiny64, tiny_tokenizer):
    ctx = _ctx(tiny64, tiny_tokenizer)
    J = dy.jacobians(tiny64, ctx)
    assert J.shape == (3, 8, 64, 64) and J.dtype == torch.float64
    for s in range(8):  # attention (even) and MLP (odd) sublayers, Gemma 3's four norms included
        fd = _fd_jacobian(dy.sublayer_map(tiny64, ctx, s), ctx.h[:, s], 1e-5)
        assert ((J[:, s] - fd).norm() / fd.norm()).item() <= 1e-6, s
    for method in ("fwd", "rev", "replicate", "structured"):  # the default: structured where the block allows
        np.testing.assert_allclose(dy.jacobians(tiny64, ctx, [0, 1], method=method).numpy(), J[:, :2].numpy(),
                                   rtol=1e-10, atol=1e-12)
    # the update's Jacobian is J - I without the identity's rounding, by every method
    for method in ("rev", "structured"):
        A = dy.jacobians(tiny64, ctx, method=method, update=True)
        np.testing.assert_allclose(A.numpy(), (J - torch.eye(64)).numpy(), rtol=1e-10, atol=1e-12)
    module = dy.jacobians(tiny64, ctx, [2], fast=False)  # float32 softmax inside transformers' attention
    assert ((module - J[:, 2:3]).norm() / J[:, 2:3].norm()).item() < 1e-6


def test_single_token_variant(tiny64, tiny_tokenizer):
    """The last token fed alone: attention reads only itself; the MLP maps are the same as with the context."""
    frozen, single = _ctx(tiny64, tiny_tokenizer), _ctx(tiny64, tiny_tokenizer, "single")
    J1, J0 = dy.jacobians(tiny64, single, [0, 1]), dy.jacobians(tiny64, frozen, [0, 1])
    np.testing.assert_allclose(J1[:, 1].numpy(), J0[:, 1].numpy(), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(J1[:, 0], J0[:, 0])
    fd = _fd_jacobian(dy.sublayer_map(tiny64, single, 0), single.h[:, 0], 1e-5)
    assert ((J1[:, 0] - fd).norm() / fd.norm()).item() <= 1e-6


def test_jvp_steps_match_matrices(tiny64, tiny_tokenizer):
    ctx = _ctx(tiny64, tiny_tokenizer)
    J = dy.jacobians(tiny64, ctx)
    V = torch.randn(3, 4, 64, dtype=torch.float64)
    for step, M in zip(dy.jvp_steps(tiny64, ctx)[:2], J.unbind(1)):
        np.testing.assert_allclose(step.apply(V).numpy(), (V @ M.mT).numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(step.apply_t(V).numpy(), (V @ M).numpy(), rtol=1e-10, atol=1e-12)


def test_structured_jacobians_equal_rev_on_a_wider_attention(tiny_tokenizer):
    """The structured attention reads each head's blocks off g * hd copies (g query heads per key/value head):
    with 3 groups of 2 heads, a copy's cotangent landing on a block of another head would show here."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=96, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=256,
                      pad_token_id=tiny_tokenizer.pad_token_id)
    torch.manual_seed(1)
    model = _double(LlamaForCausalLM(cfg).eval())
    ctx = _ctx(model, tiny_tokenizer)
    for s in range(4):
        np.testing.assert_allclose(dy.jacobians(model, ctx, [s], method="structured", update=True).numpy(),
                                   dy.jacobians(model, ctx, [s], method="rev", update=True).numpy(),
                                   rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="structured"):
        dy.jacobians(model, _ctx(model, tiny_tokenizer, "single"), [0], method="structured")


def test_bad_input_says_what_to_do(tiny_llama, tiny_tokenizer):
    with pytest.raises(ValueError, match="mode"):
        dy.frozen_context(tiny_llama, [[1, 2]], mode="cached")
    ctx = _ctx(tiny_llama, tiny_tokenizer)
    with pytest.raises(ValueError, match="sublayer"):
        dy.sublayer_map(tiny_llama, ctx, 8)
    with pytest.raises(ValueError, match="square"):
        dy.spectra(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="even"):
        dy.jpca(np.zeros((4, 5, 8)), k=3)


@pytest.mark.slow
def test_jacobians_equal_finite_differences_real_model(model_cache_dir, wikitext_dir):
    """SmolLM2 in float32: J v against central differences along random directions, for attention and MLP
    sublayers early and deep (relative error <= 1e-3)."""
    from transformer_dynamics import pipeline

    lm, tok = pipeline.load_model("smollm2-135m", cache_dir=model_cache_dir)
    texts = pipeline.load_texts(2, seed=0, data_dir=wikitext_dir)
    ctx = dy.frozen_context(lm, dy.text_token_ids(tok, texts), pad_token_id=tok.pad_token_id or 0)
    assert dy.check_maps(lm, ctx).max() < 1e-5
    subs = [0, 1, 30, 31, 58, 59]
    J = dy.jacobians(lm, ctx, subs)
    g = torch.Generator().manual_seed(0)
    for i, s in enumerate(subs):
        f, x = dy.sublayer_map(lm, ctx, s), ctx.h[:, s]
        v = torch.randn(x.shape, generator=g)
        v = v / v.norm(dim=-1, keepdim=True)
        eps = 1e-2 * x.norm(dim=-1, keepdim=True).clamp(min=1.0) ** 0.5
        with torch.no_grad():  # the branch only: subtracting x itself would cost float32 digits
            fd = ((f(x + eps * v) - (x + eps * v)) - (f(x - eps * v) - (x - eps * v))) / (2 * eps) + v
        jv = (J[:, i] @ v[..., None])[..., 0]
        assert ((jv - fd).norm() / jv.norm()).item() <= 1e-3, s


# --------------------------------------------------------------------------------------------------
# Spectral measures on matrices with known answers
# --------------------------------------------------------------------------------------------------
def _rotation(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_spectra_rotation_jordan_symmetric():
    R = np.kron(np.eye(3), _rotation(0.3))  # 6 x 6, three rotation planes
    jordan = np.eye(4) * 0.5 + np.diag(np.ones(3), 1)
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 6))
    sym = B + B.T
    st = dy.spectra(np.stack([R, sym]))
    assert st["rotation_dominance"][0] == 1.0 and st["departure"][0] < 1e-6  # sqrt of a rounding error
    np.testing.assert_allclose(st["rotation_angle"][0], 0.3, atol=1e-12)
    np.testing.assert_allclose(st["spectral_radius"][0], 1.0, atol=1e-12)
    np.testing.assert_allclose(st["effective_rank"][0], 6.0, atol=1e-9)
    assert st["rotation_dominance"][1] == 0.0 and st["antisymmetric_share"][1] < 1e-15
    assert st["departure"][1] < 1e-7  # symmetric: normal
    sj = dy.spectra(jordan)
    # Henrici: ||J||_F^2 = 4 * 0.25 + 3, sum |lambda|^2 = 1 -> departure sqrt(3) / 2
    np.testing.assert_allclose(sj["departure"], np.sqrt(3) / 2, rtol=1e-6)
    skew = B - B.T
    np.testing.assert_allclose(dy.spectra(skew)["antisymmetric_share"], 1.0, rtol=1e-12)
    # the update J - I shares the eigenvalues: a rotation's update is rotation-dominated too
    su = dy.spectra(R, update=True)
    assert su["rotation_dominance_update"] == 1.0 and su["departure_update"] < 1e-6


def test_update_spectra_equal_spectra_of_identity_plus_update():
    rng = np.random.default_rng(2)
    A = 0.3 * rng.standard_normal((3, 40, 40)) / np.sqrt(40)
    A[0] = np.kron(np.eye(20), _rotation(0.2)) - np.eye(40)     # a rotation's update: every eigenvalue complex
    ref = dy.spectra(A + np.eye(40), update=True, singular=False)
    for precision, tol in (("double", 1e-12), ("single", 1e-5)):
        st = dy.update_spectra(A, precision=precision, eigenvalues=True)
        assert set(st) == set(ref) | {"eigenvalues"}
        for key in ref:
            # Henrici's departure is a square root of a difference: float32 eigenvalues leave a floor of
            # ~sqrt(eps32) ~ 2e-4 (relative) under an exactly normal matrix's 0
            atol = 3e-4 if precision == "single" and key.startswith("departure") else tol
            np.testing.assert_allclose(st[key], ref[key], rtol=tol, atol=atol, err_msg=f"{precision} {key}")
    assert st["rotation_dominance"][0] == 1.0
    with pytest.raises(ValueError, match="precision"):
        dy.update_spectra(A, precision="half")


def test_effective_rank():
    np.testing.assert_allclose(dy.effective_rank(np.array([2.0, 2.0, 2.0, 0.0])), 3.0)
    np.testing.assert_allclose(dy.effective_rank(np.array([[1.0, 0, 0], [1, 1, 0]])), [1.0, 2.0])


def test_cumulative_products():
    J = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    P = dy.cumulative_products(J)
    np.testing.assert_allclose(P[:, 1].numpy(), (J[:, 3] @ J[:, 2] @ J[:, 1]).numpy(), rtol=1e-12)
    np.testing.assert_allclose(P[:, 3].numpy(), J[:, 3].numpy())


# --------------------------------------------------------------------------------------------------
# Lyapunov exponents
# --------------------------------------------------------------------------------------------------
def test_lyapunov_diagonal_known_rates():
    rates = np.array([0.3, 0.1, -0.2, -0.5, -1.0, -2.0])
    J = np.broadcast_to(np.diag(np.exp(rates)), (7, 6, 6)).copy()
    lam = dy.lyapunov(dy.matrix_steps(J), k=3, n_texts=1, d_model=6, n_iter=2)
    assert lam.shape == (1, 7, 3)
    np.testing.assert_allclose(lam[0], np.broadcast_to(rates[:3], (7, 3)), atol=1e-3)


def test_lyapunov_rotation_with_contraction():
    c = 0.8
    J = np.broadcast_to(c * np.kron(np.eye(2), _rotation(0.7)), (10, 4, 4)).copy()
    lam = dy.lyapunov(dy.matrix_steps(J), k=4, n_texts=1, d_model=4, starts=[0, 5, 9], n_iter=0)
    np.testing.assert_allclose(lam, np.log(c), atol=1e-3)


def test_lyapunov_equals_log_singular_values_of_the_product():
    rng = np.random.default_rng(1)
    S, D, k = 6, 12, 3
    J = torch.as_tensor(np.eye(D) + 0.5 * rng.standard_normal((2, S, D, D)))
    P = dy.cumulative_products(J)
    expect = torch.log(torch.linalg.svdvals(P)[..., :k]).numpy() / (S - np.arange(S))[None, :, None]
    lam = dy.lyapunov(dy.matrix_steps(J), k=k, n_texts=2, d_model=D, n_iter=30)
    np.testing.assert_allclose(lam, expect, atol=1e-3)


def test_relative_exponents_subtract_norm_growth():
    lam = np.zeros((1, 2, 1))
    norms = np.array([[1.0, np.e, np.e ** 2]])
    np.testing.assert_allclose(dy.relative_exponents(lam, norms, [0, 1])[0, :, 0], [-1.0, -1.0])


# --------------------------------------------------------------------------------------------------
# jPCA
# --------------------------------------------------------------------------------------------------
def _rotation_data(omega=0.4, n=40, S=30, D=20, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((D, 2)))
    phase = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(1.0, 2.0, n)
    t = np.arange(S)
    xy = amp[:, None, None] * np.stack([np.cos(omega * t + phase[:, None]),
                                         np.sin(omega * t + phase[:, None])], -1)  # (n, S, 2)
    return xy @ basis.T + noise * rng.standard_normal((n, S, D)), basis


def test_jpca_recovers_a_noisy_rotation():
    rs, basis = _rotation_data()
    res = dy.jpca(rs, k=2, soft_norm=None)
    assert res.ratio > 0.95 and res.r2_full > 0.95
    # discrete step exp(i omega) ~ fitted on midpoints: 2 tan(omega / 2) per sublayer
    np.testing.assert_allclose(res.frequencies[0], 2 * np.tan(0.4 / 2), rtol=0.02)
    plane = res.components.T @ res.planes[0]  # (D, 2) in unit space
    cosines = np.linalg.svd(basis.T @ plane, compute_uv=False)
    assert cosines.min() > 0.99
    control = dy.jpca_shuffled(rs, k=2, n_shuffles=10, soft_norm=None)
    assert control.shape == (10, 3) and np.median(control[:, 0]) < 0.5


def test_jpca_resampled_equals_refits():
    """The control on every resample comes from per-text moments: equal to refitting jPCA (re-centred at each
    sublayer) on the resampled texts, the shuffles included. A resample not re-centred would differ (it did, first)."""
    rs, _ = _rotation_data(noise=0.5, n=30, S=12)
    Z = dy.jpca_projection(rs, k=4, soft_norm=None)[0]
    out = dy.jpca_resampled(Z, n_boot=40, n_shuffles=6, seed=3)
    fit, control = dy.jpca(Z, projected=True), dy.jpca_shuffled(Z, n_shuffles=6, seed=3, projected=True)
    assert out.ratio == pytest.approx(fit.ratio, abs=1e-12) and out.r2_skew == pytest.approx(fit.r2_skew, abs=1e-12)
    np.testing.assert_allclose(out.shuffled, control[:, 2], atol=1e-10)
    np.testing.assert_allclose(out.shuffled_r2_skew, control[:, 0], atol=1e-10)
    assert out.excess == pytest.approx(fit.r2_skew - np.median(control[:, 0]), abs=1e-10)
    for b in (0, 17, 39):
        Zb = Z[bootstrap_indices(len(Z), 40, 3)[b]]
        Zb = Zb - Zb.mean(0)
        expect = dy.jpca(Zb, projected=True).r2_skew - np.median(
            dy.jpca_shuffled(Zb, n_shuffles=6, seed=3, projected=True)[:, 0])
        assert out.replicates[b] == pytest.approx(expect, abs=1e-9)
    full, reps = out.curves()
    assert full["jpca_skew_excess"].shape == (1,) and reps["jpca_skew_excess"].shape == (40,)
    with pytest.raises(ValueError, match="even k"):
        dy.jpca_resampled(Z[..., :3])


def test_jpca_runs_give_one_result_each_that_the_tables_read():
    rot, _ = _rotation_data(noise=0.3, n=40, S=12)
    walk = np.cumsum(np.random.default_rng(5).standard_normal(rot.shape), axis=1)
    runs = dy.jpca_runs({"trained": rot, "default:0": walk}, k=4, n_boot=20, n_shuffles=5, seed=1)
    one = runs["trained"]
    assert isinstance(one, dy.JPCARun) and one.Z.shape == (40, 12, 4) and one.resamples.replicates.shape == (20,)
    fit, resamples, Z = one                                                  # unpacks in field order
    assert fit is one.fit and resamples is one.resamples and Z is one.Z
    assert one.fit.r2_skew > runs["default:0"].fit.r2_skew
    keyed = {(run, "original"): r for run, r in runs.items()}
    table = dy.jpca_table(keyed)
    assert table.loc[("trained", "original"), "texts"] == 40
    assert set(dy.jpca_planes(keyed)) == {"original"}
    values, controls = dy.jpca_by_reference(keyed)
    assert len(values) == len(controls) == 2


def test_jpca_random_walk_is_not_rotational():
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.standard_normal((200, 40, 30)), axis=1)
    res = dy.jpca(walk, k=6, soft_norm=None)
    assert res.ratio < 0.3


# --------------------------------------------------------------------------------------------------
# The registry's dynamics claims
# --------------------------------------------------------------------------------------------------
def test_claim_sublayers_are_the_thirds_the_statistics_read():
    th = dy.depth_thirds(60)
    np.testing.assert_array_equal(th["early"], np.arange(20))
    np.testing.assert_array_equal(th["late"], np.arange(40, 60))
    np.testing.assert_array_equal(dy.claim_sublayers(60), np.r_[th["early"], th["late"]])
    # every second layer of each third, counted from the network's ends (layers 0, 2, .. and 29, 27, ..)
    assert dy.claim_sublayers(60, layer_stride=2).tolist() == [0, 1, 4, 5, 8, 9, 12, 13, 16, 17,
                                                                42, 43, 46, 47, 50, 51, 54, 55, 58, 59]
    assert dy.claim_sublayers(36, layer_stride=3).tolist() == [0, 1, 6, 7, 28, 29, 34, 35]
    # what the statistic weighs, exactly: an impulse outside these sublayers moves no claim
    y = np.zeros((1, 60))
    y[0, 25] = 1.0
    assert effects.depth_contrast(y)[0] == 0.0
    with pytest.raises(ValueError, match="layer_stride"):
        dy.claim_sublayers(60, layer_stride=0)
    assert dy.lower_starts(60).tolist() == [0, 14] and len(dy.exponent_starts(60)) == 5


def _fake_run(n, S, *, early, late, seed, bottleneck=0.3, lower=-0.05, D=64, k=3):
    """A LocalDynamics of constructed per-text measures: rotation dominance ``early`` in the early third and
    ``late`` in the late one (+ noise), the bottleneck, and exponents whose relative value at the lower starts is
    ``lower`` (norms constant)."""
    rng = np.random.default_rng(seed)
    th = dy.depth_thirds(S)
    per_text = {key: np.full((n, S), np.nan) for key in
                [m + sfx for m in dy.MEASURES for sfx in ("", "_update")]}
    for key in per_text:
        per_text[key][:, th["early"]] = early + 0.02 * rng.standard_normal((n, len(th["early"])))
        per_text[key][:, th["late"]] = late + 0.02 * rng.standard_normal((n, len(th["late"])))
    starts = dy.exponent_starts(S)
    per_text["bottleneck_fraction"] = bottleneck + 0.01 * rng.standard_normal(n)
    per_text["exponents"] = np.broadcast_to(lower + 0.01 * rng.standard_normal((n, len(starts), 1)),
                                            (n, len(starts), k)).copy()
    per_text["norms"] = np.ones((n, S + 1))
    per_text["growth_to_last"] = np.ones((n, len(starts)))
    return dy.LocalDynamics(per_text=per_text, sublayers=dy.claim_sublayers(S), starts=starts, n_sublayers=S,
                            d_model=D)


def test_claim_curves_are_means_and_the_lower_exponent_a_median():
    run = _fake_run(12, 24, early=0.9, late=0.5, seed=0)
    full, reps = dy.claim_curves(run, n_boot=50, seed=4)
    measured = run.sublayers
    np.testing.assert_allclose(full["rotation_dominance"][0, measured], run["rotation_dominance"][:, measured].mean(0))
    assert np.isnan(full["rotation_dominance"][0, dy.depth_thirds(24)["middle"]]).all()
    assert reps["rotation_dominance"].shape == (50, 24) and reps["bottleneck_fraction"].shape == (50,)
    rel = dy.relative_exponents(run["exponents"][:, :2, :1], run["norms"], dy.lower_starts(24))[:, :, 0]
    assert full["lower_relative_exponent"][0] == pytest.approx(np.median(rel, 0).max())
    i = bootstrap_indices(12, 50, 4)[7]                               # the same resamples as the means'
    assert reps["lower_relative_exponent"][7] == pytest.approx(np.median(rel[i], 0).max())
    assert {k for k, _ in dy.claim_pairs(full)} == {"dyn_rotation_early", "dyn_nonnormal_early",
                                                    "dyn_symmetric_late", "dyn_bottleneck",
                                                    "attractor_lower_exponents"}


def test_verdicts_say_whether_random_init_has_it_too():
    S, n = 24, 32
    trained = _fake_run(n, S, early=0.9, late=0.5, seed=0)
    flat = {f"{kind}:{s}": _fake_run(n, S, early=0.6, late=0.6, seed=10 + s, bottleneck=0.9, lower=0.05)
            for kind in ("default", "matched") for s in range(3)}
    table = dy.verdict_table({"trained": trained, **flat}, n_boot=200).set_index("claim")
    assert table.loc["dyn_rotation_early", "verdict"] == "holds"
    assert table.loc["dyn_rotation_early", "line"].startswith("holds, beyond random init")
    assert table.loc["dyn_symmetric_late", "verdict"] == "holds"          # late - early < 0: every measure falls
    assert table.loc["dyn_bottleneck", "verdict"] == "holds"
    assert table.loc["attractor_lower_exponents", "line"].startswith("holds, beyond")
    same = {f"default:{s}": _fake_run(n, S, early=0.9, late=0.5, seed=20 + s) for s in range(3)}
    table = dy.verdict_table({"trained": trained, **same}, n_boot=200).set_index("claim")
    assert table.loc["dyn_rotation_early", "line"] == "holds, but so does random init"
    # the registry's readings and nothing else decide: the tables of judge itself
    ev = dy.run_evidence({"trained": trained}, n_boot=200)
    assert judge(ev).set_index("claim").loc["dyn_rotation_early", "verdict"] == "holds"
    assert all(e.claim in claims.REGISTRY for e in ev)


def test_local_dynamics_streams_consistent_summaries(tiny64, tiny_tokenizer):
    ids = tokenize(tiny_tokenizer, TEXTS)
    r = dy.local_dynamics(tiny64, ids, sublayers=[0, 1, 6, 7], starts=[0, 2, 5], batch_size=2, k=3,
                          pad_token_id=tiny_tokenizer.pad_token_id, keep_eigenvalues=True, precision="double")
    assert r.n_texts == 3 and r["rotation_dominance"].shape == (3, 8) and r["exponents"].shape == (3, 3, 3)
    assert r["eigenvalues"].shape == (3, 4, 64) and r["norms"].shape == (3, 9)
    assert r.map_error.max() < 1e-12
    J = dy.jacobians(tiny64, _ctx(tiny64, tiny_tokenizer))
    P = dy.cumulative_products(J)
    np.testing.assert_allclose(r["exponents"][:, 1], np.log(torch.linalg.svdvals(P[:, 2])[:, :3].numpy()) / 6,
                               rtol=1e-9)
    np.testing.assert_allclose(r["bottleneck_fraction"], dy.effective_rank(torch.linalg.svdvals(P[:, 0]).numpy())
                               / 64, rtol=1e-9)
    Q = J[:, 6] @ J[:, 5] @ J[:, 4] @ J[:, 3] @ J[:, 2]  # to the last recorded sublayer 7
    np.testing.assert_allclose(r["growth_to_last"][:, 1], Q.pow(2).sum((-2, -1)).div(64).sqrt().numpy(), rtol=1e-9)
    st = dy.spectra(J[:, [0, 1, 6, 7]], update=True, singular=False)
    for key in ("rotation_dominance", "departure", "departure_update", "antisymmetric_share_update"):
        np.testing.assert_allclose(r[key][:, [0, 1, 6, 7]], st[key], rtol=1e-8, atol=1e-12)
        assert np.isnan(r[key][:, 2:6]).all()                       # not asked for: not computed
    np.testing.assert_allclose(dy.predicted_recovery(r)[:, 1],
                               r["growth_to_last"][:, 1] * r["norms"][:, 2] / r["norms"][:, 7])
    err = dy.benettin_check(tiny64, tiny_tokenizer, TEXTS[0], r, 2, k=3, n_iter=30)
    assert err < 1e-3                                               # JVPs only, no matrix
    with pytest.raises(ValueError, match="starts"):
        dy.local_dynamics(tiny64, ids, starts=[8])


def test_reference_runs_use_the_random_init_models(tiny_llama, tiny_tokenizer):
    runs = dy.reference_runs(tiny_llama, tiny_tokenizer, TEXTS[:2], inits=("default", "matched"), seeds=(1,),
                             conditions=("original", "shuffled"), k=2, batch_size=2)
    assert set(runs) == {("trained", "original"), ("trained", "shuffled"), ("default:1", "original"),
                         ("matched:1", "original")}
    a, b = runs["trained", "original"], runs["matched:1", "original"]
    np.testing.assert_array_equal(a.sublayers, dy.claim_sublayers(8))
    assert not np.allclose(a["bottleneck_fraction"], b["bottleneck_fraction"])
    assert "eigenvalues" in a and "eigenvalues" not in b
    table = dy.runs_table(runs)
    assert list(table.index) == list(runs) and (table["texts"] == 2).all()
    with pytest.raises(ValueError, match="random-init kind"):
        dy.reference_runs(tiny_llama, tiny_tokenizer, TEXTS[:2], inits=("uniform",))


def test_reference_runs_side_by_side_give_each_run_s_own_numbers(tiny_llama, tiny_tokenizer):
    kw = dict(inits=("default", "matched"), seeds=(0,), conditions=("original", "shuffled"), k=2, batch_size=2)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)            # the workers' one thread: the same float32 round-off
    try:
        alone = dy.reference_runs(tiny_llama, tiny_tokenizer, TEXTS[:3], workers=1, **kw)
    finally:
        torch.set_num_threads(torch_threads)
    with torch.no_grad():  # a model once asked for its hidden states holds transformers' output-capturing hooks
        tiny_llama(torch.tensor([[1, 2, 3]]), output_hidden_states=True)  # (local functions: no pickle carries them)
    apart = dy.reference_runs(tiny_llama, tiny_tokenizer, TEXTS[:3], workers=2, **kw)
    assert list(apart) == list(alone)                               # every run, in the same order
    for key, r in alone.items():
        assert set(apart[key].per_text) == set(r.per_text)
        for name, v in r.per_text.items():
            np.testing.assert_array_equal(apart[key][name], v, err_msg=f"{key} {name}")
    # the small runs of the tests and the ci profile stay in this process; the book's runs go side by side
    assert dy.run_workers(tiny_llama, 3, 4, 6) == 1
    assert dy.run_workers(tiny_llama, 10 ** 6, 4, 6) == min(os.cpu_count() or 1, 6)
