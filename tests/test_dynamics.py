"""Local dynamics: sublayer maps, Jacobians against finite differences, spectral measures on matrices with
known answers, Lyapunov exponents of known products, jPCA on a synthetic rotation and a random walk."""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch

from transformer_dynamics import claims

from transformer_dynamics import dynamics as dy
from transformer_dynamics.capture import residual_stream, tokenize

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
    for method in ("fwd", "rev", "replicate"):  # the default is replicate (attention) + rev (MLP)
        np.testing.assert_allclose(dy.jacobians(tiny64, ctx, [0, 1], method=method).numpy(), J[:, :2].numpy(),
                                   rtol=1e-10, atol=1e-12)
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


def test_random_init_reference(tiny_llama):
    rand = dy.random_init_model(tiny_llama, seed=1)
    assert type(rand) is type(tiny_llama) and rand.config.hidden_size == tiny_llama.config.hidden_size
    a, b = rand.model.layers[0].mlp.up_proj.weight, tiny_llama.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(a, b)
    assert torch.equal(a, dy.random_init_model(tiny_llama, seed=1).model.layers[0].mlp.up_proj.weight)


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


def test_jpca_random_walk_is_not_rotational():
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.standard_normal((200, 40, 30)), axis=1)
    res = dy.jpca(walk, k=6, soft_norm=None)
    assert res.ratio < 0.3


# --------------------------------------------------------------------------------------------------
# Claim statistics
# --------------------------------------------------------------------------------------------------
def test_depth_thirds_and_contrast():
    th = dy.depth_thirds(12, "attn")
    assert th["early"].tolist() == [0, 2] and th["late"].tolist() == [8, 10]
    assert dy.depth_thirds(12, "mlp")["middle"].tolist() == [5, 7]
    values = np.zeros((20, 12))
    values[:, :4] = 1.0
    values += np.random.default_rng(0).normal(0, 0.01, values.shape)
    est, low, high = dy.depth_contrast(values, n_boot=200)
    assert 0.9 < low <= est <= high < 1.1
    est, low, high = dy.learned_difference(values, np.zeros_like(values), n_boot=200)
    assert low > 0.9


def test_sequel_statistics_and_verdicts():
    from transformer_dynamics.verdicts import verdict_from_interval

    n, S = 12, 12
    rng = np.random.default_rng(1)
    trained = {"rotation_dominance": np.where(np.arange(S) < 4, 0.9, 0.5) + rng.normal(0, 0.01, (n, S)),
               "cumulative_effective_rank": np.full((n, S), 32.0), "d_model": np.full(n, 64)}
    random = {"rotation_dominance": np.full((n, S), 0.5) + rng.normal(0, 0.01, (n, S))}
    est, lo, hi = dy.sequel_statistic("rotation_early_minus_late", trained, n_boot=200)
    key = dy.SEQUEL_CLAIMS["rotation_early_minus_late"].registry      # the registry decides
    assert verdict_from_interval(key, est, lo, hi)[0] == "holds"
    assert verdict_from_interval("dyn_symmetric_late", est, lo, hi)[0] == "fails"
    est, lo, hi = dy.sequel_statistic("rotation_early_minus_late", trained, random=random, n_boot=200)
    assert verdict_from_interval(key, est, lo, hi)[0] == "holds"  # the "learned" reading, same test
    assert verdict_from_interval(key, -0.1, -0.2, 0.1)[0] == "undecided"
    assert all(k.registry in claims.REGISTRY for k in dy.SEQUEL_CLAIMS.values())
    est, lo, hi = dy.bottleneck_statistic(trained, n_boot=50)
    # exactly at the threshold: on neither side
    assert est == lo == hi == 0.5 and verdict_from_interval("dyn_bottleneck", est, lo, hi)[0] == "undecided"
    np.testing.assert_allclose(dy.bottleneck_fraction(trained), 0.5)
    with pytest.raises(ValueError, match="unknown sequel claim"):
        dy.sequel_statistic("nope", trained)


def test_local_dynamics_streams_consistent_summaries(tiny64, tiny_tokenizer):
    ids = tokenize(tiny_tokenizer, TEXTS)
    r = dy.local_dynamics(tiny64, ids, batch_size=2, k=3, lyapunov_starts=[0, 5], n_iter=30,
                          pad_token_id=tiny_tokenizer.pad_token_id)
    assert r["rotation_dominance"].shape == (3, 8) and r["exponents"].shape == (3, 8, 3)
    assert r["eigenvalues"].shape == (3, 8, 64) and r["norms"].shape == (3, 9)
    assert r["map_error"].max() < 1e-12
    J = dy.jacobians(tiny64, _ctx(tiny64, tiny_tokenizer))
    P = dy.cumulative_products(J)
    np.testing.assert_allclose(r["exponents"][:, 2], np.log(torch.linalg.svdvals(P[:, 2])[:, :3].numpy()) / 6,
                               rtol=1e-9)
    np.testing.assert_allclose(r["benettin"], r["exponents"][:, [0, 5]], atol=1e-3)  # JVPs only, no matrix
    Q = J[:, 6] @ J[:, 5] @ J[:, 4]  # to the last recorded sublayer 7
    np.testing.assert_allclose(r["growth_to_last"][:, 4], Q.pow(2).sum((-2, -1)).div(64).sqrt().numpy(), rtol=1e-9)
    assert np.isnan(r["growth_to_last"][:, 7]).all()
    st = dy.spectra(J[:, 3])
    np.testing.assert_allclose(r["departure"][:, 3], st["departure"], rtol=1e-9)
