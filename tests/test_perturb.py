"""Tests for transformer_dynamics.perturb on the tiny random-weight Llama of conftest.py (no download)."""

import numpy as np
import pytest
import torch

from transformer_dynamics import perturb as P
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


def test_unproject_uses_first_two_components_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)) * np.arange(6, 0, -1)
    pca = PCA(n_components=5).fit(X)
    z = rng.normal(size=(7, 2))
    x = P.unproject(pca, z)
    np.testing.assert_allclose(x, z @ pca.components_[:2] + pca.mean_)
    np.testing.assert_allclose(P.project(pca, x), z, atol=1e-10)
    from sklearn.decomposition import PCA as SkPCA

    sk = SkPCA(n_components=4).fit(X)
    np.testing.assert_allclose(P.unproject(sk, z), z @ sk.components_[:2] + sk.mean_)
    with pytest.raises(ValueError, match="2 coordinates"):
        P.unproject(pca, np.zeros((3, 3)))


# ---- teleport ---------------------------------------------------------------------------------------
def test_teleport_to_own_vector_reproduces_control(tiny, pca):
    model, tok = tiny
    ids = tokenize(tok, [P.DEFAULT_PROMPT])
    control = P.run_with_edit(model, ids)[0]
    for layer in (0, 2):
        own = control[2 * layer][None].astype(np.float64)
        res = P.teleport(model, tok, pca, layer=layer, grid=P.project(pca, own), vectors=own, n_following=3)
        np.testing.assert_array_equal(res.mse_full, 0.0)
        np.testing.assert_allclose(res.perturbed[0], res.control_following, atol=1e-9)
        np.testing.assert_array_equal(res.sublayers, np.arange(2 * layer, 2 * layer + 4))
    # the projection route: with a full-rank PCA, z on the plane of the control point is written exactly
    # when the control point lies in that plane; here check that the written vector is the unprojected z.
    grid = P.make_grid(-1, 1, 2)
    res = P.teleport(model, tok, pca, layer=1, grid=grid, n_following=2)
    np.testing.assert_allclose(res.perturbed[:, 0], grid, atol=1e-4)


def test_teleport_matches_capture_control_and_prefix_unchanged(tiny, pca):
    model, tok = tiny
    rs = residual_stream(model, tok, [P.DEFAULT_PROMPT], progress=False)[0]
    ids = tokenize(tok, [P.DEFAULT_PROMPT])
    grid = P.make_grid(-2, 2, 3)
    layer = 2
    x = P.unproject(pca, grid)
    edit = lambda h, idx: torch.as_tensor(x, dtype=torch.float32)[torch.as_tensor(idx)]  # noqa: E731
    out = P.run_with_edit(model, ids * len(grid), layer=layer, edit=edit)
    np.testing.assert_allclose(out[:, :2 * layer], np.broadcast_to(rs[:2 * layer], out[:, :2 * layer].shape),
                               atol=1e-5)
    np.testing.assert_allclose(out[:, 2 * layer], x, atol=1e-5)
    assert np.all(np.abs(out[:, 2 * layer + 1] - rs[2 * layer + 1]).max(axis=1) > 1e-3)
    res = P.teleport(model, tok, pca, layer=layer, grid=grid, n_following=12)
    np.testing.assert_allclose(res.control, P.project(pca, rs), atol=1e-4)
    # clipped at the model's end: layer 2 of 4 -> sublayers 4..7
    np.testing.assert_array_equal(res.sublayers, np.arange(4, 8))
    assert res.perturbed.shape == (9, 4, 2) and res.mse_pc.shape == (9,)
    np.testing.assert_allclose(res.perturbed, P.project(pca, out[:, 4:8]), atol=1e-4)
    # MSE is the mean over the following sublayers (not the teleport point) and the 2 PCs
    diff = res.perturbed[:, 1:] - res.control_following[1:]
    np.testing.assert_allclose(res.mse_pc, (diff ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose(res.distance_pc, np.linalg.norm(res.perturbed - res.control_following, axis=-1))
    np.testing.assert_allclose(res.recovery, res.distance_pc[:, -1] / res.distance_pc[:, 0])
    np.testing.assert_allclose(res.displacement, res.perturbed[:, -1] - res.perturbed[:, 0])


def test_teleport_batching_equals_one_by_one(tiny, pca):
    model, tok = tiny
    grid = P.make_grid(-3, 3, 3)
    whole = P.teleport(model, tok, pca, layer=1, grid=grid, n_following=4)
    small = P.teleport(model, tok, pca, layer=1, grid=grid, n_following=4, batch_size=4)
    singles = [P.teleport(model, tok, pca, layer=1, grid=grid[i:i + 1], n_following=4) for i in range(len(grid))]
    np.testing.assert_allclose(small.perturbed, whole.perturbed, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([s.perturbed for s in singles]), whole.perturbed, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([s.mse_full for s in singles]), whole.mse_full, rtol=1e-3)


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


def test_compare_layers():
    def fake(layer, mse):
        r = object.__new__(P.TeleportResult)
        r.layer, r.mse_pc = layer, np.asarray(mse, float)
        return r

    out = P.compare_layers([fake(0, [5, 6]), fake(3, [9, 9]), fake(1, [1, 2]), fake(2, [2, 3])])
    assert out["layers"] == [0, 1, 2, 3] and out["best_layer"] == 1
    np.testing.assert_allclose(out["median"], [5.5, 1.5, 2.5, 9])
    assert out["mid_beats_ends"] and out["last_worst"]
    out = P.compare_layers([fake(0, [1]), fake(1, [2]), fake(2, [3])])
    assert not out["mid_beats_first"] and out["mid_beats_last"] and not out["mid_beats_ends"]
    with pytest.raises(ValueError, match="at least 3"):
        P.compare_layers([fake(0, [1])])


# ---- noise and swap ---------------------------------------------------------------------------------
def test_noise_scale_zero_changes_nothing_and_noise_norm(tiny):
    model, tok = tiny
    res = P.inject_noise(model, tok, TEXTS, layer=1, scale=0.0)
    np.testing.assert_array_equal(res.distance_own, 0.0)
    np.testing.assert_array_equal(res.sublayers, np.arange(2, 2 * N_LAYERS))
    res = P.inject_noise(model, tok, TEXTS, layer=1, scale=0.5, seed=3, n_following=2)
    assert res.distance_own.shape == (len(TEXTS), 3)
    # at the perturbed point the relative distance is the noise scale exactly
    np.testing.assert_allclose(res.distance_own[:, 0], 0.5, rtol=1e-5)
    assert np.all(res.distance_own[:, 1:] > 0)
    again = P.inject_noise(model, tok, TEXTS, layer=1, scale=0.5, seed=3, n_following=2)
    np.testing.assert_array_equal(again.distance_own, res.distance_own)
    with pytest.raises(ValueError, match="scale"):
        P.inject_noise(model, tok, TEXTS, layer=1, scale=-1.0)


def test_swap_with_itself_changes_nothing(tiny):
    model, tok = tiny
    res = P.swap(model, tok, TEXTS, TEXTS, layer=2)
    np.testing.assert_array_equal(res.distance_own, 0.0)
    np.testing.assert_array_equal(res.distance_donor, 0.0)
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
    with pytest.raises(ValueError, match="baseline"):
        P.swap(model, tok, a, b, layer=1, baseline_a=np.zeros((2, 2, 2)))


def test_run_with_edit_stop_after_and_batching(tiny):
    model, tok = tiny
    ids = tokenize(tok, TEXTS)
    full = P.run_with_edit(model, ids)
    ref = residual_stream(model, tok, TEXTS, progress=False)
    np.testing.assert_allclose(full, ref, atol=1e-5)
    part = P.run_with_edit(model, ids, stop_after=2, batch_size=2)
    np.testing.assert_allclose(part[:, :3], full[:, :3], atol=1e-5)
    assert np.isnan(part[:, 3:]).all()
    with pytest.raises(ValueError, match="stop_after"):
        P.run_with_edit(model, ids, stop_after=2 * N_LAYERS)


def test_sweeps_equal_single_calls(tiny):
    model, tok = tiny
    res = P.noise_sweep(model, tok, TEXTS, layers=[0, 2], scales=[0.0, 0.3], seed=1, n_following=3)
    assert [(r.layer, r.scale) for r in res] == [(0, 0.0), (0, 0.3), (2, 0.0), (2, 0.3)]
    single = P.inject_noise(model, tok, TEXTS, layer=2, scale=0.3, seed=1, n_following=3)
    np.testing.assert_allclose(res[3].distance_own, single.distance_own, atol=1e-6)
    np.testing.assert_array_equal(res[2].distance_own, 0.0)
    a, b = TEXTS[:2], TEXTS[3:5]
    sw = P.swap_sweep(model, tok, a, b, layers=[1, 3])
    single = P.swap(model, tok, a, b, layer=3)
    np.testing.assert_allclose(sw[1].distance_donor, single.distance_donor, atol=1e-6)
    assert sw[1].sublayers.tolist() == [6, 7]


def test_end_variance_in_compare(tiny, pca):
    model, tok = tiny
    grid = P.make_grid(-2, 2, 2)
    res = [P.teleport(model, tok, pca, layer=l, grid=grid, n_following=2) for l in range(N_LAYERS)]
    out = P.compare_layers(res)
    np.testing.assert_allclose(out["end_variance"][1], np.var(res[1].perturbed[:, -1], axis=0).sum())
    assert isinstance(out["mid_spread_below_ends"], bool)


def test_gemma3_prefix_unchanged_and_own_vector_exact(tiny_gemma3, tiny_tokenizer):
    model, tok = tiny_gemma3, tiny_tokenizer
    ids = tokenize(tok, TEXTS)
    base = P.run_with_edit(model, ids)
    np.testing.assert_allclose(base, residual_stream(model, tok, TEXTS, progress=False), atol=1e-5)
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
