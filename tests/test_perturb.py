"""Tests for transformer_dynamics.perturb on the tiny random-weight Llama and Gemma 3 of conftest.py (no download)."""

import numpy as np
import pytest
import torch

from transformer_dynamics import claims, effects, robustness, verdicts
from transformer_dynamics import perturb as P
from transformer_dynamics import residual
from transformer_dynamics.capture import residual_stream, tokenize
from transformer_dynamics.reduce import PCA

N_LAYERS = 4
D = 64
TEXTS = ["the game of the season was a film", "a war", "the army and the ship were in the city , it was new",
         "music", "one river , two ships"]


@pytest.fixture(scope="module")
def tiny(tiny_llama, tiny_tokenizer):
    """The tiny random-weight Llama (4 layers, d_model 64) and word-level tokenizer of conftest.py."""
    return tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def pca(tiny):
    model, tok = tiny
    rs = residual_stream(model, tok, TEXTS * 4, progress=False)
    return PCA().fit(rs)  # all components: the PC plane of the first two is exact for projections


# ---- pure helpers -----------------------------------------------------------------------------------
def test_paper_layers_mapping():
    assert P.paper_layers(32) == [0, 7, 15, 23, 31]
    assert P.paper_layers(30) == [0, 7, 14, 22, 29]  # SmolLM2
    assert P.paper_layers(4) == [0, 1, 2, 3]  # duplicates dropped
    assert P.paper_layers(1) == [0]
    with pytest.raises(ValueError, match="n_layers"):
        P.paper_layers(0)


def test_make_grid_and_range():
    g = P.make_grid(-1.0, 1.0, 3)
    assert g.shape == (9, 2)
    np.testing.assert_allclose(g[:3, 0], [-1, 0, 1])  # PC1 fastest
    np.testing.assert_allclose(g[::3, 1], [-1, 0, 1])
    g2 = P.make_grid([0, 10], [1, 20], 2)
    np.testing.assert_allclose(g2, [[0, 10], [1, 10], [0, 20], [1, 20]])
    with pytest.raises(ValueError):
        P.make_grid(0, 1, 0)
    with pytest.raises(ValueError, match="r_min <= r_max"):
        P.make_grid(1, 0, 3)
    z = np.stack([np.arange(101.0), 10 * np.arange(101.0)], axis=1)
    lo, hi = P.grid_range(z, (0, 100))
    assert (lo, hi) == (0.0, 1000.0)
    lo, hi = P.grid_range(z, (1, 99), per_component=True)
    np.testing.assert_allclose(lo, [1, 10])
    np.testing.assert_allclose(hi, [99, 990])


def test_plane_and_grid_is_one_named_result():
    rs = np.random.default_rng(0).standard_normal((20, 6, 8)).astype(np.float32)
    plane = P.plane_and_grid(rs, 3, (0, 100))
    assert isinstance(plane, P.TeleportPlane) and plane.grid.shape == (9, 2)
    z = P.project(plane.pca, rs)
    assert plane.extent == pytest.approx((float(z[..., :2].min()), float(z[..., :2].max())))
    np.testing.assert_allclose(plane.grid, P.make_grid(*plane.extent, 3))
    pca, grid, extent = plane                                                # unpacks in field order
    assert pca is plane.pca and grid is plane.grid and extent == plane.extent


def _unproject(pca, z):
    """The paper's inverse map ``x = z V[:, :2]^T + mu``: ``z: (..., 2)`` -> ``(..., d_model)`` (first two PCs)."""
    return np.asarray(z, dtype=np.float64) @ np.asarray(pca.components_)[:2] + np.asarray(pca.mean_)


def test_project_inverts_the_papers_map_on_the_first_two_components():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)) * np.arange(6, 0, -1)
    pca = PCA(n_components=5).fit(X)
    z = rng.normal(size=(7, 2))
    np.testing.assert_allclose(P.project(pca, _unproject(pca, z)), z, atol=1e-10)
    from sklearn.decomposition import PCA as SkPCA

    sk = SkPCA(n_components=4).fit(X)
    np.testing.assert_allclose(P.project(sk, _unproject(sk, z)), z, atol=1e-10)


# ---- keys and values reused: equal to the full rerun -----------------------------------------------
@pytest.fixture(scope="module", params=["llama", "gemma3"])
def any_model(request, tiny_llama, tiny_gemma3, tiny_tokenizer):
    """Both tiny models; the Gemma 3 has sliding-window layers (window 8) shorter than the longest text."""
    return {"llama": tiny_llama, "gemma3": tiny_gemma3}[request.param], tiny_tokenizer


def _close(a, b):
    """Equal to float32 round-off (relative to the stream's scale)."""
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * max(1.0, float(np.nanmax(np.abs(b)))))


def test_prefix_cache_clean_run_is_the_full_run(any_model):
    model, tok = any_model
    ids = tokenize(tok, TEXTS)
    assert max(map(len, ids)) > 8  # longer than the Gemma's sliding window
    cache = P.prefix_cache(residual.of(model, tok), ids, batch_size=2)
    full = P.run_with_edit(residual.of(model, tok), ids)
    assert full.shape == cache.clean.shape == (len(TEXTS), 2 * N_LAYERS + 1, D)
    _close(cache.clean, full)
    _close(full[:, :-1], residual_stream(model, tok, TEXTS, progress=False))
    np.testing.assert_array_equal(cache.prefix.numpy(), [len(s) - 1 for s in ids])


@pytest.mark.parametrize("layer", range(N_LAYERS))
def test_extend_equals_full_rerun(any_model, layer):
    model, tok = any_model
    ids = tokenize(tok, TEXTS)
    cache = P.prefix_cache(residual.of(model, tok), ids)
    v = np.random.default_rng(layer).normal(size=(len(TEXTS), D)).astype(np.float32)
    vt = torch.as_tensor(v)
    full = P.run_with_edit(model, ids, layer=layer, edit=lambda h, idx: vt[torch.as_tensor(idx)])
    kv = P.extend(model, cache, np.arange(len(TEXTS)), layer=layer, vectors=v, batch_size=2)
    _close(kv, full)
    np.testing.assert_array_equal(kv[:, 2 * layer], v)                 # the written vector itself
    # an edit of the clean vector, rows in another order and repeated
    rows = np.array([4, 0, 2, 2])
    edit = lambda h, idx: 1.5 * h + torch.as_tensor(idx, dtype=torch.float32)[:, None]  # noqa: E731
    full = P.run_with_edit(residual.of(model, tok), ids, layer=layer, edit=edit)
    _close(P.extend(model, cache, rows, layer=layer, edit=edit), full[rows])


def test_extend_stops_and_skips(tiny_llama, tiny_tokenizer):
    model, tok = tiny_llama, tiny_tokenizer
    cache = P.prefix_cache(residual.of(model, tok), tokenize(tok, TEXTS))
    v = np.ones((2, D), dtype=np.float32)
    out = P.extend(model, cache, [1, 3], layer=2, vectors=v, stop_after=5)
    np.testing.assert_array_equal(out[:, :4], cache.clean[[1, 3], :4])    # before the edit: the clean run
    assert np.isfinite(out[:, 4:6]).all() and np.isnan(out[:, 6:]).all()
    with pytest.raises(ValueError, match="stop_after"):
        P.extend(model, cache, [0], layer=2, vectors=v[:1], stop_after=3)
    with pytest.raises(ValueError, match="exactly one"):
        P.extend(model, cache, [0], layer=2)
    with pytest.raises(ValueError, match="rows"):
        P.extend(model, cache, [5], layer=2, vectors=v[:1])
    with pytest.raises(ValueError, match=r"\(len\(rows\), d_model\)"):
        P.extend(model, cache, [0], layer=2, vectors=v)


def test_kv_reuse_needs_sdpa(tiny_llama, tiny_tokenizer):
    model = tiny_llama
    before = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        with pytest.raises(ValueError, match="sdpa"):
            P.prefix_cache(model, tokenize(tiny_tokenizer, TEXTS[:1]))
    finally:
        model.config._attn_implementation = before


# ---- teleport ---------------------------------------------------------------------------------------
def test_teleport_to_own_vector_reproduces_control(tiny, pca):
    model, tok = tiny
    ids = tokenize(tok, [P.DEFAULT_PROMPT])
    control = P.run_with_edit(model, ids)[0]
    for layer in (0, 2):
        own = control[2 * layer][None].astype(np.float64)
        res = P.teleport(model, tok, pca, layer=layer, grid=P.project(pca, own), vectors=own, n_following=3)
        np.testing.assert_allclose(res.distance, 0.0, atol=1e-5)
        np.testing.assert_allclose(res.perturbed[0], res.control_following, atol=1e-5)
        np.testing.assert_array_equal(res.sublayers, np.arange(2 * layer, 2 * layer + 4))
    grid = P.make_grid(-1, 1, 2)
    res = P.teleport(model, tok, pca, layer=1, grid=grid, n_following=2)
    np.testing.assert_allclose(res.perturbed[:, 0], grid, atol=1e-4)   # the written point is the unprojected z


def test_teleport_matches_full_rerun(tiny, pca):
    model, tok = tiny
    ids = tokenize(tok, [P.DEFAULT_PROMPT])
    grid = P.make_grid(-2, 2, 3)
    layer = 2
    x = _unproject(pca, grid)
    edit = lambda h, idx: torch.as_tensor(x, dtype=torch.float32)[torch.as_tensor(idx)]  # noqa: E731
    out = P.run_with_edit(model, ids * len(grid), layer=layer, edit=edit)
    clean = P.run_with_edit(model, ids)[0]
    res = P.teleport(model, tok, pca, layer=layer, grid=grid, n_following=12)
    np.testing.assert_allclose(res.control, P.project(pca, clean), atol=1e-4)
    # clipped at the stack's output: layer 2 of 4 -> points 4..8
    np.testing.assert_array_equal(res.sublayers, np.arange(4, 9))
    assert res.perturbed.shape == (9, 5, 2) and res.distance.shape == (9, 5)
    np.testing.assert_allclose(res.perturbed, P.project(pca, out[:, 4:9]), atol=1e-4)
    np.testing.assert_allclose(res.distance, np.linalg.norm(out[:, 4:9] - clean[4:9], axis=-1), rtol=1e-4)
    np.testing.assert_allclose(res.distance_pc, np.linalg.norm(res.perturbed - res.control_following, axis=-1))
    np.testing.assert_allclose(res.recovery, res.distance[:, -1] / res.distance[:, 0])
    np.testing.assert_allclose(res.recovery_pc, res.distance_pc[:, -1] / res.distance_pc[:, 0])


def test_teleport_batching_equals_one_by_one(tiny, pca):
    model, tok = tiny
    grid = P.make_grid(-3, 3, 3)
    whole = P.teleport(model, tok, pca, layer=1, grid=grid, n_following=4)
    small = P.teleport(model, tok, pca, layer=1, grid=grid, n_following=4, batch_size=4)
    singles = [P.teleport(model, tok, pca, layer=1, grid=grid[i:i + 1], n_following=4) for i in range(len(grid))]
    np.testing.assert_allclose(small.perturbed, whole.perturbed, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([s.perturbed for s in singles]), whole.perturbed, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([s.distance for s in singles]), whole.distance, rtol=1e-4)


def test_teleport_errors(tiny, pca):
    model, tok = tiny
    grid = P.make_grid(0, 1, 2)
    with pytest.raises(ValueError, match="layer must be"):
        P.teleport(model, tok, pca, layer=N_LAYERS, grid=grid)
    with pytest.raises(ValueError, match="layer must be"):
        P.teleport(model, tok, pca, layer=-1, grid=grid)
    with pytest.raises(ValueError, match="empty"):
        P.teleport(model, tok, pca, layer=0, grid=np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"\(n_points, 2\)"):
        P.teleport(model, tok, pca, layer=0, grid=np.zeros((4, 3)))
    other = PCA(n_components=2).fit(np.random.default_rng(0).normal(size=(50, D + 8)))
    with pytest.raises(ValueError, match="d_model"):
        P.teleport(model, tok, other, layer=0, grid=grid)
    with pytest.raises(ValueError, match="fitted PCA"):
        P.teleport(model, tok, object(), layer=0, grid=grid)
    with pytest.raises(ValueError, match="n_following"):
        P.teleport(model, tok, pca, layer=0, grid=grid, n_following=0)


# ---- the teleport over prompts: equal windows, per-prompt curves ------------------------------------
def test_equal_window():
    assert P.equal_window([0, 7, 14, 22, 29], 30) == 2          # the last layer: its attention and MLP
    assert P.equal_window([0, 7, 14, 22], 30, cap=12) == 12
    assert P.equal_window([0, 7, 14, 22], 30) == 16
    with pytest.raises(ValueError, match="layer must be"):
        P.equal_window([0, 30], 30)
    with pytest.raises(ValueError, match="cap"):
        P.equal_window([0], 30, cap=0)


def test_controls_spread():
    clean = np.zeros((4, 2, 3))
    clean[:, 1, 0] = [1.0, -1.0, 1.0, -1.0]                      # every run at distance 1 from the mean
    np.testing.assert_allclose(P.controls_spread(clean), [0.0, 1.0])
    with pytest.raises(ValueError, match="n_texts >= 2"):
        P.controls_spread(clean[:1])


def test_teleport_sweep_curves_by_hand(tiny, pca):
    """Every per-prompt curve recomputed from full reruns of the edited prompts."""
    model, tok = tiny
    prompts = [P.DEFAULT_PROMPT, *TEXTS[:2]]
    grid = P.make_grid(-2, 2, 2)
    layers = [0, 1, 3]
    sweep = P.teleport_sweep(model, tok, pca, grid=grid, prompts=prompts, layers=layers, n_following=3)
    W = sweep.window
    assert W == 2 and sweep.n_prompts == 3
    assert all(v.shape == (3, 3) for v in sweep.curves.values()) and set(sweep.curves) == set(P.CURVES)
    x = torch.as_tensor(_unproject(pca, grid), dtype=torch.float32)
    clean = P.run_with_edit(model, tokenize(tok, prompts)).astype(np.float64)
    spread = np.sqrt(((clean - clean.mean(0)) ** 2).sum(-1).mean(0))
    np.testing.assert_allclose(sweep.spread, spread, rtol=1e-4)
    for p in range(3):
        ids = tokenize(tok, [prompts[p]]) * len(grid)
        for k, l in enumerate(layers):
            pert = P.run_with_edit(model, ids, layer=l, edit=lambda h, idx: x[torch.as_tensor(idx)]).astype(float)
            s, e = 2 * l, 2 * l + W
            dist = np.linalg.norm(pert[:, s:e + 1] - clean[p, s:e + 1], axis=-1)
            end = pert[:, e]
            want = {"recovery": np.median(dist[:, -1] / dist[:, 0]),
                    "rel_mse": np.median((dist[:, 1:] ** 2).mean(1)) / np.mean(spread[s + 1:e + 1] ** 2),
                    "end_spread": np.sqrt(((end - end.mean(0)) ** 2).sum(-1).mean()) / spread[e],
                    "end_far": np.median(dist[:, -1]) / spread[e]}
            for name, v in want.items():
                assert sweep.curves[name][p, k] == pytest.approx(v, rel=1e-3), (name, p, l)
    # the figure: the first prompt over n_following points, equal to the single-layer teleport
    assert [r.layer for r in sweep.results] == layers
    one = P.teleport(model, tok, pca, layer=1, grid=grid, n_following=3)
    np.testing.assert_allclose(sweep.results[1].perturbed, one.perturbed, atol=1e-5)
    np.testing.assert_array_equal(sweep.results[2].sublayers, [6, 7, 8])    # clipped at the stack's output
    with pytest.raises(ValueError, match="window"):
        P.teleport_sweep(model, tok, pca, grid=grid, prompts=prompts, layers=layers, window=3)
    with pytest.raises(ValueError, match="2 prompts"):
        P.teleport_sweep(model, tok, pca, grid=grid, prompts=prompts[:1], layers=layers)
    with pytest.raises(ValueError, match="increasing"):
        P.teleport_sweep(model, tok, pca, grid=grid, prompts=prompts, layers=[1, 0])


def test_teleport_runs_trained_and_random_init(tiny):
    model, tok = tiny
    rs = residual_stream(model, tok, TEXTS * 2, progress=False)
    runs = P.teleport_runs(model, tok, {"trained": rs, "matched:1": rs}, prompts=TEXTS[:3], layers=[0, 2, 3],
                           grid_n=2, n_reference_prompts=2, n_following=2)
    assert runs["trained"].n_prompts == 3 and runs["matched:1"].n_prompts == 2
    assert len(runs["trained"].results) == 3 and runs["matched:1"].results == []
    assert not np.allclose(runs["trained"].curves["end_far"][:2], runs["matched:1"].curves["end_far"])
    lo, hi = runs["trained"].grid_range
    np.testing.assert_allclose(runs["trained"].grid[[0, -1]], [[lo, lo], [hi, hi]])
    with pytest.raises(ValueError, match="random init"):
        P.teleport_runs(model, tok, {"untrained": rs}, prompts=TEXTS[:2], layers=[0, 3], grid_n=2)


# ---- the teleport claims on constructed per-prompt curves ------------------------------------------
def _decide(per_prompt, key, reading=None, n_boot=400, seed=0):
    curves = robustness.mean_curves(per_prompt, n_boot=n_boot, seed=seed)
    c = claims.get(key)
    ev = robustness.evidence_from_curves(curves, [(key, reading or c.headline)], n=len(next(iter(
        per_prompt.values()))))
    return verdicts.judge(ev).iloc[0]


def test_new_statistics_known_answers():
    y = np.array([[3.0, 1.0, 1.0, 2.0, 5.0]])
    assert effects.first_column(y)[0] == 3.0
    assert effects.last_minus_first(y)[0] == 2.0
    assert effects.lower_minus_upper(y)[0] == pytest.approx(2.0 - 3.5)     # middle column left out
    assert effects.lower_minus_upper(y[:, :4])[0] == pytest.approx(2.0 - 1.5)
    assert effects.middle_minus_ends(y)[0] == pytest.approx(4 / 3 - 4.0)
    with pytest.raises(ValueError):
        effects.last_minus_first(y[:, :1])


def test_teleport_claims_decide_planted_effects():
    rng = np.random.default_rng(0)
    n = 16
    noise = lambda: 0.05 * rng.normal(size=(n, 5))  # noqa: E731
    u_shaped = np.array([1.0, 0.5, 0.4, 0.5, 1.2]) + noise()        # middle recovers, last worst
    flat = 0.8 + noise()
    assert _decide({"recovery": u_shaped}, "teleport_mid_recovers")["verdict"] == "holds"
    assert _decide({"recovery": -u_shaped}, "teleport_mid_recovers")["verdict"] == "fails"
    assert _decide({"end_spread": u_shaped}, "teleport_mid_lower_variance")["verdict"] == "holds"
    far = np.array([1.6, 0.5, 0.4, 0.5, 2.5]) + noise()
    assert _decide({"end_far": far}, "teleport_first_far")["verdict"] == "holds"
    assert _decide({"end_far": far - 1.2}, "teleport_first_far")["verdict"] == "fails"
    assert _decide({"end_far": far}, "teleport_last_more_drastic")["verdict"] == "holds"
    assert _decide({"recovery": np.array([0.3, 0.4, 0.8, 0.9, 1.0]) + noise()},
                   "teleport_lower_robust")["verdict"] == "holds"
    assert _decide({"recovery": flat}, "teleport_lower_robust")["verdict"] == "undecided"


def test_mid_recovers_is_unbiased_on_identical_layers():
    """Five layers with the same distribution: middle minus the mean of the ends is centred at 0 (a decision is then
    a false one, at about the interval's rate). The old reference, the smaller of the first and last layers, is
    biased towards "the middle is worse" (the broken case, kept to show the check catches it)."""
    rng = np.random.default_rng(1)
    y = rng.lognormal(size=(4000, 16, 5)).mean(1)                    # mean over 16 prompts, 4000 draws
    new = effects.middle_minus_ends(y)
    old = y[:, 1:-1].mean(1) - np.minimum(y[:, 0], y[:, -1])
    se = new.std() / np.sqrt(len(new))
    assert abs(new.mean()) < 3 * se
    assert old.mean() > 10 * se
    decided = sum(_decide({"recovery": rng.lognormal(size=(16, 5))}, "teleport_mid_recovers", n_boot=200,
                          seed=i)["verdict"] != "undecided" for i in range(40))
    assert decided <= 10      # a percentile interval over 16 prompts decides ~10-15 % of such nulls, not most


# ---- noise and swap ---------------------------------------------------------------------------------
def test_noise_scale_zero_changes_nothing_and_noise_norm(tiny):
    model, tok = tiny
    res = P.inject_noise(model, tok, TEXTS, layer=1, scale=0.0)
    np.testing.assert_allclose(res.distance_own, 0.0, atol=1e-6)
    np.testing.assert_array_equal(res.sublayers, np.arange(2, 2 * N_LAYERS))
    res = P.inject_noise(model, tok, TEXTS, layer=1, scale=0.5, seed=3, n_following=2)
    assert res.distance_own.shape == (len(TEXTS), 3)
    # at the perturbed point the relative distance is the noise scale exactly
    np.testing.assert_allclose(res.distance_own[:, 0], 0.5, rtol=1e-5)
    assert np.all(res.distance_own[:, 1:] > 1e-3)
    again = P.inject_noise(model, tok, TEXTS, layer=1, scale=0.5, seed=3, n_following=2)
    np.testing.assert_array_equal(again.distance_own, res.distance_own)
    with pytest.raises(ValueError, match="scale"):
        P.inject_noise(model, tok, TEXTS, layer=1, scale=-1.0)


def test_noise_and_swap_equal_full_reruns(any_model):
    model, tok = any_model
    ids = tokenize(tok, TEXTS)
    base = P.run_with_edit(model, ids)
    res = P.noise_sweep(model, tok, TEXTS, layers=[0, 2], scales=[0.3, 1.0], seed=4, batch_size=2)
    u = np.random.default_rng(4).standard_normal((len(TEXTS), D))
    u = torch.as_tensor(u / np.linalg.norm(u, axis=1, keepdims=True), dtype=torch.float32)
    for r in res:
        edit = lambda h, idx, s=r.scale: h + s * h.norm(dim=-1, keepdim=True) * u[torch.as_tensor(idx)]  # noqa: E731
        full = P.run_with_edit(model, ids, layer=r.layer, edit=edit)
        want = np.linalg.norm(full[:, r.sublayers] - base[:, r.sublayers], axis=-1) / np.linalg.norm(
            base[:, r.sublayers], axis=-1)
        np.testing.assert_allclose(r.distance_own, want, atol=1e-5)
    a, b = TEXTS[:3], TEXTS[2:5]
    ida, idb = tokenize(tok, a), tokenize(tok, b)
    ba, bb = P.run_with_edit(model, ida), P.run_with_edit(model, idb)
    for r in P.swap_sweep(model, tok, a, b, layers=[1, 3], batch_size=2):
        donor = torch.as_tensor(bb[:, 2 * r.layer])
        full = P.run_with_edit(model, ida, layer=r.layer, edit=lambda h, idx: donor[torch.as_tensor(idx)])
        f = r.sublayers
        rel = lambda x, y: np.linalg.norm(x - y, axis=-1) / np.linalg.norm(y, axis=-1)  # noqa: E731
        np.testing.assert_allclose(r.distance_own, rel(full[:, f], ba[:, f]), atol=1e-5)
        np.testing.assert_allclose(r.distance_donor, rel(full[:, f], bb[:, f]), atol=1e-5)


def test_swap_with_itself_changes_nothing(tiny):
    model, tok = tiny
    res = P.swap(model, tok, TEXTS, TEXTS, layer=2)
    np.testing.assert_allclose(res.distance_own, 0.0, atol=1e-6)
    np.testing.assert_allclose(res.distance_donor, 0.0, atol=1e-6)
    np.testing.assert_array_equal(res.distance_own_donor, 0.0)


def test_swap_distances(tiny):
    model, tok = tiny
    a, b = TEXTS[:3], TEXTS[2:5]
    res = P.swap(model, tok, a, b, layer=1, n_following=3)
    ids_a, ids_b = tokenize(tok, a), tokenize(tok, b)
    ra, rb = P.run_with_edit(model, ids_a, batch_size=16), P.run_with_edit(model, ids_b, batch_size=16)
    # at the swapped point the run is the donor's vector
    np.testing.assert_allclose(res.distance_donor[:, 0], 0.0, atol=1e-6)
    expect = np.linalg.norm(ra[:, 2] - rb[:, 2], axis=-1) / np.linalg.norm(ra[:, 2], axis=-1)
    np.testing.assert_allclose(res.distance_own[:, 0], expect, rtol=1e-5)
    np.testing.assert_allclose(res.distance_own_donor[:, 0], expect, rtol=1e-5)
    # row 0 gets text 2's vector into text 0's context: it differs from both runs afterwards
    assert res.distance_own[0, 1] > 0 and res.distance_donor[0, 1] > 0
    with pytest.raises(ValueError, match="paired"):
        P.swap(model, tok, a, b[:2], layer=1)


def test_run_with_edit_stop_after_and_batching(tiny):
    model, tok = tiny
    ids = tokenize(tok, TEXTS)
    full = P.run_with_edit(model, ids)
    assert full.shape == (len(TEXTS), 2 * N_LAYERS + 1, D)
    np.testing.assert_allclose(full[:, :-1], residual_stream(model, tok, TEXTS, progress=False), atol=1e-5)
    part = P.run_with_edit(model, ids, stop_after=2, batch_size=2)
    np.testing.assert_allclose(part[:, :3], full[:, :3], atol=1e-5)
    assert np.isnan(part[:, 3:]).all()
    with pytest.raises(ValueError, match="stop_after"):
        P.run_with_edit(model, ids, stop_after=2 * N_LAYERS + 1)


def test_sweeps_equal_single_calls(tiny):
    model, tok = tiny
    res = P.noise_sweep(model, tok, TEXTS, layers=[0, 2], scales=[0.0, 0.3], seed=1, n_following=3)
    assert [(r.layer, r.scale) for r in res] == [(0, 0.0), (0, 0.3), (2, 0.0), (2, 0.3)]
    single = P.inject_noise(model, tok, TEXTS, layer=2, scale=0.3, seed=1, n_following=3)
    np.testing.assert_allclose(res[3].distance_own, single.distance_own, atol=1e-6)
    np.testing.assert_allclose(res[2].distance_own, 0.0, atol=1e-6)
    a, b = TEXTS[:2], TEXTS[3:5]
    sw = P.swap_sweep(model, tok, a, b, layers=[1, 3])
    single = P.swap(model, tok, a, b, layer=3)
    np.testing.assert_allclose(sw[1].distance_donor, single.distance_donor, atol=1e-6)
    assert sw[1].sublayers.tolist() == [6, 7]


def test_gemma3_prefix_unchanged_and_own_vector_exact(tiny_gemma3, tiny_tokenizer):
    model, tok = tiny_gemma3, tiny_tokenizer
    ids = tokenize(tok, TEXTS)
    base = P.run_with_edit(model, ids)
    np.testing.assert_allclose(base[:, :-1], residual_stream(model, tok, TEXTS, progress=False), atol=1e-5)
    same = P.run_with_edit(model, ids, layer=2, edit=lambda h, idx: h.clone())
    np.testing.assert_array_equal(same, base)
    shifted = P.run_with_edit(model, ids, layer=2, edit=lambda h, idx: h + 1.0)
    np.testing.assert_array_equal(shifted[:, :4], base[:, :4])
    np.testing.assert_allclose(shifted[:, 4], base[:, 4] + 1.0, atol=1e-5)
    assert np.all(np.abs(shifted[:, 5:] - base[:, 5:]).max(axis=-1) > 0)


def test_depth_names_line_up_across_depths():
    # the paper's five layers mapped to SmolLM2 (30 layers) and Gemma 3 (18 layers) get the same names
    smol, gemma = P.paper_layers(30), P.paper_layers(18)
    assert P.depth_names(smol) == P.depth_names(gemma) == ["first", "early", "middle", "late", "last"]
    assert P.depth_names(P.paper_layers(32)) == ["first", "early", "middle", "late", "last"]
    assert P.depth_names([3]) == ["first"]
    assert P.depth_names([0, 5, 9]) == ["first", "middle", "last"]
    assert P.depth_names(range(7)) == ["first", "middle1", "middle2", "middle3", "middle4", "middle5", "last"]
    assert len(set(P.depth_names(range(12)))) == 12
    with pytest.raises(ValueError, match="increasing"):
        P.depth_names([0, 7, 7])
    with pytest.raises(ValueError, match="increasing"):
        P.depth_names([7, 0])
    with pytest.raises(ValueError):
        P.depth_names([])
    assert "depth_names" in P.__all__
