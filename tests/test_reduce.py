"""Tests for transformer_dynamics.reduce (reduce.pca, reduce.cae): PCA against scikit-learn, the CAE on synthetic 2-D
manifolds."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from transformer_dynamics import reduce as R


def _rs(n=40, s=12, d=16, seed=0, growth=True):
    """Synthetic residual stream with norms growing over depth and correlated features."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(n, s, d)) @ A
    if growth:
        x = x * np.linspace(1, 10, s)[None, :, None] + np.linspace(0, 5, s)[None, :, None]
    return x.astype(np.float32)


def _sheet(n=300, s=8, d=64, seed=0, linear=False):
    """Trajectories on a 2-D sheet embedded in ``d`` dims: latent (u, v) move along sublayers."""
    rng = np.random.default_rng(seed)
    u0 = rng.uniform(-1, 1, size=(n, 1))
    v0 = rng.uniform(-1, 1, size=(n, 1))
    t = np.linspace(0, 1, s)[None, :]
    u = u0 + 1.5 * t
    v = v0 * (1 - 0.5 * t)
    if linear:
        feats = np.stack([u, v], -1)
    else:  # curved sheet
        feats = np.stack([u, v, np.sin(2 * u), np.cos(2 * u) * v, u * v], -1)
    W = rng.normal(size=(feats.shape[-1], d))
    return (feats @ W).astype(np.float32)


# ------------------------------------------------------------------ PCA

@pytest.mark.parametrize("solver", ["full", "covariance", "auto"])
def test_pca_matches_sklearn(solver):
    rs = _rs(n=30, s=10, d=24)
    X = rs.reshape(-1, 24)
    ours = R.PCA(n_components=10, svd_solver=solver).fit(rs)
    ref = SkPCA(n_components=10, svd_solver="full").fit(X.astype(np.float64))
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-6)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(ours.mean_, ref.mean_, atol=1e-6)
    # components up to sign
    dots = np.abs(np.sum(ours.components_ * ref.components_, axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-6)
    assert ours.n_features_in_ == 24 and ours.components_.shape == (10, 24)
    Z = ours.transform(X.astype(np.float64))
    signs = np.sign(np.sum(ours.components_ * ref.components_, axis=1))
    np.testing.assert_allclose(Z, ref.transform(X.astype(np.float64)) * signs, atol=1e-5)


def test_partial_fit_equals_fit():
    rs = _rs(n=50, s=10, d=20, seed=1)
    full = R.PCA(n_components=8, svd_solver="full").fit(rs)
    inc = R.PCA(n_components=8)
    for chunk in np.array_split(rs, 7):
        inc.partial_fit(chunk)
    np.testing.assert_allclose(inc.explained_variance_ratio_, full.explained_variance_ratio_, atol=1e-9)
    np.testing.assert_allclose(inc.mean_, full.mean_, atol=1e-9)
    np.testing.assert_allclose(np.abs(np.sum(inc.components_ * full.components_, 1)), 1, atol=1e-8)
    # same sign convention, so the same components
    np.testing.assert_allclose(inc.components_, full.components_, atol=1e-6)
    assert inc.n_samples_seen_ == 500


def test_pca_large_offset_stable():
    """A huge common offset (like massive activations) must not destroy the covariance route."""
    rs = _rs(n=40, s=5, d=12, seed=2).astype(np.float64) + 1e4
    a = R.PCA(4, svd_solver="covariance").fit(rs)
    b = SkPCA(4, svd_solver="full").fit(rs.reshape(-1, 12))
    np.testing.assert_allclose(a.explained_variance_ratio_, b.explained_variance_ratio_, atol=1e-6)


def test_inverse_transform_and_shapes():
    rs = _rs(n=20, s=6, d=10)
    pca = R.PCA().fit(rs)
    assert pca.n_components_ == 10
    Z = R.pca_trajectories(pca, rs)
    assert Z.shape == (20, 6, 10) and Z.dtype == np.float32
    np.testing.assert_allclose(pca.inverse_transform(Z), rs, atol=1e-4)  # all components: exact
    z2 = np.zeros((3, 4, 2))
    x = pca.inverse_transform(z2)
    assert x.shape == (3, 4, 10)
    np.testing.assert_allclose(x, np.broadcast_to(pca.mean_, x.shape))
    xt = pca.inverse_transform(torch.ones(5, 2))
    assert isinstance(xt, torch.Tensor) and xt.shape == (5, 10)
    assert R.pca_trajectories(pca, rs, n_components=2).shape == (20, 6, 2)


def test_pca_errors():
    with pytest.raises(ValueError):
        R.PCA(n_components=0)
    with pytest.raises(ValueError, match="not fitted"):
        R.PCA().transform(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        R.PCA().fit(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="n_components"):
        R.PCA(n_components=20).fit(np.random.rand(10, 5))
    pca = R.PCA(2).fit(np.random.rand(10, 5))
    with pytest.raises(ValueError, match="features"):
        pca.transform(np.zeros((3, 6)))


def test_cumulative_and_per_sublayer_ev():
    rs = _rs(n=60, s=8, d=12, seed=3)
    pca = R.PCA().fit(rs)
    cum = R.cumulative_explained_variance(pca)
    assert np.all(np.diff(cum) >= -1e-12) and cum[-1] == pytest.approx(1.0)
    curve = R.explained_variance_curve_per_sublayer(pca, rs, chunk_samples=7)
    assert curve.shape == (8, 12)
    # closed form: reconstruct with k components and compute the definition directly
    for k in (1, 3, 12):
        rec = pca.inverse_transform(pca.transform(rs.astype(np.float64), n_components=k))
        direct = R.explained_variance_from_reconstruction(rs, rec)
        np.testing.assert_allclose(curve[:, k - 1], direct, atol=1e-8)
    np.testing.assert_allclose(curve[:, -1], 1.0, atol=1e-8)
    g = R.explained_variance_curve_per_sublayer(pca, rs, 3, center="global", chunk_samples=5)
    rec = pca.inverse_transform(pca.transform(rs.astype(np.float64), n_components=3))
    np.testing.assert_allclose(g[:, 2], R.explained_variance_from_reconstruction(rs, rec, center="global"), atol=1e-8)
    assert np.all(g[:, 2] >= curve[:, 2] - 1e-12)  # the global centre adds the offset to the total
    with pytest.raises(ValueError):
        R.explained_variance_per_sublayer(pca, rs, 3, center="median")
    ev = R.explained_variance_per_sublayer(pca, rs, n_components=100)  # clipped to 12
    np.testing.assert_allclose(ev, curve[:, -1])
    n90 = R.components_for_variance(curve, 0.9)
    assert n90.shape == (8,)
    assert np.all(curve[np.arange(8), n90.astype(int) - 1] >= 0.9)
    assert np.all((n90 == 1) | (curve[np.arange(8), np.maximum(n90.astype(int) - 2, 0)] < 0.9))
    assert np.isnan(R.components_for_variance(np.array([0.1, 0.2]), 0.9))
    both = R.components_for_variance(np.array([[0.1, 0.2], [np.nan, np.nan], [0.5, 0.95]]), 0.9, not_reached=np.inf)
    np.testing.assert_array_equal(both, [np.inf, np.nan, 2])


def test_pca_linear_sheet_two_components():
    rs = _sheet(n=200, s=6, d=64, linear=True)
    pca = R.PCA(5).fit(rs)
    assert pca.explained_variance_ratio_[:2].sum() > 0.999
    ev = R.explained_variance_per_sublayer(pca, rs, n_components=2)
    assert np.all(ev > 0.999)


def test_sublayer_explained_variance_ratio_matches_sklearn():
    for n, d in ((25, 8), (6, 10)):  # scatter (n > d) and Gram (n <= d) routes
        rs = _rs(n=n, s=5, d=d, seed=7)
        ratio = R.sublayer_explained_variance_ratio(rs, sublayers_per_batch=2)
        assert ratio.shape == (5, min(n, d))
        for sl in range(5):
            ref = SkPCA().fit(rs[:, sl].astype(np.float64)).explained_variance_ratio_
            np.testing.assert_allclose(ratio[sl][:len(ref)], ref, atol=1e-8)
    rs = _rs(n=25, s=5, d=8, seed=7)
    rs[:, 4] = 1.0  # no variance: undefined
    assert np.isnan(R.sublayer_explained_variance_ratio(rs)[4]).all()
    # a sublayer confined to one direction needs 1 component
    rs[:, 2] = np.outer(np.arange(25.0), np.ones(8))
    n90 = R.components_for_variance(np.cumsum(R.sublayer_explained_variance_ratio(rs), 1), 0.9)
    assert n90[2] == 1


# ------------------------------------------------------------------ CAE pieces

def test_geometric_widths():
    w = R.geometric_widths(4096, 2, 10)
    assert len(w) == 10 and w[0] == 4096 and w[-1] == 2
    r = (2 / 4096) ** (1 / 9)
    np.testing.assert_allclose(w[1:-1], [round(4096 * r ** i) for i in range(1, 9)])
    assert all(a >= b for a, b in zip(w, w[1:]))
    assert R.geometric_widths(8, 2, 2) == [8, 2]
    assert R.geometric_widths(576, 2, 4) == [576, 87, 13, 2]
    with pytest.raises(ValueError):
        R.geometric_widths(10, 2, 1)
    with pytest.raises(ValueError):
        R.geometric_widths(2, 10, 3)


def test_cae_architecture():
    m = R.CompressingAutoencoder(64, 2, 4)
    assert m.widths == R.geometric_widths(64, 2, 4)
    kinds = [type(l).__name__ for l in m.encoder]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU", "Linear"]
    assert [type(l).__name__ for l in m.decoder] == kinds
    assert [l.out_features for l in m.decoder if isinstance(l, torch.nn.Linear)] == m.widths[::-1][1:]
    x = torch.randn(3, 5, 64)
    assert m.encode(x).shape == (3, 5, 2) and m(x).shape == (3, 5, 64)
    m2 = R.CompressingAutoencoder.from_config(m.config())
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2(x), m(x))


@pytest.mark.parametrize("kind", ["standard", "global", "none"])
def test_standardizer_roundtrip_and_streaming(kind):
    X = _rs(n=30, s=5, d=8).reshape(-1, 8).astype(np.float64)
    X[:, 3] = 7.0  # a constant feature
    sc = R.Standardizer(kind).fit(X)
    Z = sc.transform(X)
    np.testing.assert_allclose(sc.inverse_transform(Z), X, atol=1e-9)
    if kind == "standard":
        np.testing.assert_allclose(Z.mean(0), 0, atol=1e-9)
        np.testing.assert_allclose(np.delete(Z.std(0), 3), 1, atol=1e-9)
        assert sc.scale_[3] == 1.0
    if kind == "global":
        assert np.allclose(sc.scale_, sc.scale_[0]) and np.mean(Z ** 2) == pytest.approx(1.0)
    if kind == "none":
        np.testing.assert_allclose(Z, X)
    st = R.Standardizer(kind)
    for c in np.array_split(X, 4):
        st.partial_fit(c)
    np.testing.assert_allclose(st.mean_, sc.mean_, atol=1e-9)
    np.testing.assert_allclose(st.scale_, sc.scale_, rtol=1e-9)
    with pytest.raises(ValueError):
        R.Standardizer("minmax")


def test_split_by_sample():
    tr, va, te = R.split_by_sample(100, test_fraction=0.15, val_fraction=0.1, seed=3)
    assert (len(tr), len(va), len(te)) == (75, 10, 15)
    assert len(np.intersect1d(tr, te)) == 0 and len(np.intersect1d(tr, va)) == 0 and len(np.intersect1d(va, te)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(100))
    tr2, _, te2 = R.split_by_sample(100, seed=4)
    assert not np.array_equal(te, te2)
    with pytest.raises(ValueError):
        R.split_by_sample(2, test_fraction=0.5, val_fraction=0.5)


# ------------------------------------------------------------------ CAE training

@pytest.fixture(scope="module")
def sheet_fit():
    rs = _sheet(n=300, s=8, d=64, seed=0)
    res = R.fit_cae(rs, k=4, epochs=40, patience=10, batch_size=64, seed=0, progress=False, num_threads=1)
    return rs, res


def test_cae_learns_2d_manifold(sheet_fit):
    rs, res = sheet_fit
    assert res.test_ev > 0.9, res.test_ev
    ev = R.explained_variance_per_sublayer_cae(res, rs[res.test_idx], chunk_samples=13)
    assert ev.shape == (8,)
    with torch.no_grad():
        rec = res.model(torch.as_tensor(rs[res.test_idx])).numpy()
    np.testing.assert_allclose(ev, R.explained_variance_from_reconstruction(rs[res.test_idx], rec), atol=1e-5)
    evg = R.explained_variance_per_sublayer_cae(res, rs[res.test_idx], center="global", chunk_samples=13)
    np.testing.assert_allclose(evg, R.explained_variance_from_reconstruction(rs[res.test_idx], rec, center="global"),
                               atol=1e-5)
    assert np.mean(ev) > 0.85
    traj = R.bottleneck_trajectories(res, rs)
    assert traj.shape == (300, 8, 2) and np.isfinite(traj).all()
    assert len(res.history["val_loss"]) <= 40
    assert res.history["val_loss"][res.best_epoch] == min(res.history["val_loss"])


def test_cae_split_has_no_leak(sheet_fit):
    rs, res = sheet_fit
    sets = [set(res.train_idx), set(res.val_idx), set(res.test_idx)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(res.test_idx) == 45 and sum(map(len, sets)) == 300
    # scaler fitted on training texts only
    train_rows = rs[res.train_idx].reshape(-1, 64).astype(np.float64)
    np.testing.assert_allclose(res.model.input_mean.numpy(), train_rows.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res.model.input_scale.numpy(), train_rows.std(0), rtol=1e-4)


def test_cae_deterministic_and_state_roundtrip(tmp_path):
    rs = _rs(n=40, s=6, d=16, seed=5)
    a = R.fit_cae(rs, k=3, epochs=3, patience=2, batch_size=32, seed=1, progress=False, num_threads=1)
    b = R.fit_cae(rs, k=3, epochs=3, patience=2, batch_size=32, seed=1, progress=False, num_threads=1)
    c = R.fit_cae(rs, k=3, epochs=3, patience=2, batch_size=32, seed=2, progress=False, num_threads=1)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not all(torch.equal(va, vc) for va, vc in zip(a.model.state_dict().values(), c.model.state_dict().values()))
    tensors, meta = a.to_state()
    import json
    meta = json.loads(json.dumps(meta))  # JSON-able
    back = R.CAEResult.from_state(tensors, meta)
    np.testing.assert_array_equal(back.test_idx, a.test_idx)
    np.testing.assert_allclose(R.bottleneck_trajectories(back, rs), R.bottleneck_trajectories(a, rs))
    assert back.config["widths"] == a.model.widths
    # through the on-disk cache (safetensors + JSON)
    from transformer_dynamics import cache
    identity = {"what": "cae-test", "seed": 1}
    cache.save_module(tmp_path, identity, tensors, meta)
    state, meta2 = cache.load_module(tmp_path, identity)
    disk = R.CAEResult.from_state(state, meta2)
    np.testing.assert_allclose(R.bottleneck_trajectories(disk, rs), R.bottleneck_trajectories(a, rs))
    assert disk.test_ev == pytest.approx(a.test_ev) and disk.history == a.history


def test_cae_streaming_matches_in_memory_split_and_runs_on_memmap(tmp_path):
    rs = _rs(n=30, s=4, d=8, seed=6)
    path = tmp_path / "rs.npy"
    np.save(path, rs)
    mm = np.load(path, mmap_mode="r")
    res = R.fit_cae(mm, k=3, epochs=2, patience=5, chunk_samples=7, seed=0, progress=False, num_threads=1)
    ref = R.fit_cae(rs, k=3, epochs=2, patience=5, seed=0, progress=False, num_threads=1)
    np.testing.assert_array_equal(res.test_idx, ref.test_idx)
    np.testing.assert_allclose(res.model.input_mean.numpy(), ref.model.input_mean.numpy(), atol=1e-5)
    assert np.isfinite(res.test_loss) and len(res.history["train_loss"]) == 2

    class Store:  # the cache's ActivationStore interface: shape + read(start, stop)
        shape = rs.shape
        reads = []

        def read(self, start=0, stop=None):
            self.reads.append((start, stop))
            return rs[start:stop]

    store = Store()
    res2 = R.fit_cae(store, k=3, epochs=2, patience=5, chunk_samples=7, seed=0, progress=False, num_threads=1)
    assert max(b - a for a, b in store.reads) <= 7
    for x, y in zip(res.model.state_dict().values(), res2.model.state_dict().values()):
        torch.testing.assert_close(x, y)  # same blocks, same order, same weights as the memmap run
    np.testing.assert_allclose(R.bottleneck_trajectories(res2, store, chunk_samples=4),
                               R.bottleneck_trajectories(res2, rs), atol=1e-6)


def test_fit_cae_errors():
    with pytest.raises(ValueError):
        R.fit_cae(np.zeros((10, 16)))
    with pytest.raises(ValueError):
        R.fit_cae(np.zeros((10, 3, 16)), scaling="minmax")
    with pytest.raises(ValueError):
        R.bottleneck_trajectories("not a model", np.zeros((1, 2, 3)))


def test_pca_rejects_nan_and_inf():
    X = np.random.default_rng(0).normal(size=(20, 5))
    for bad in (np.nan, np.inf):
        Y = X.copy()
        Y[3, 2] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            R.PCA(2).fit(Y)
        with pytest.raises(ValueError, match="NaN or inf"):
            R.PCA(2).partial_fit(Y)


def test_pca_float16_overflow_is_an_error_not_inf():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 1)) * np.array([[1.0, 1.0, 0.0, 0.0]]) + 0.01 * rng.normal(size=(50, 4))
    pca = R.PCA(2).fit(X)  # PC1 ~ (1, 1, 0, 0) / sqrt(2)
    x16 = np.array([[6e4, 6e4, 0.0, 0.0]], dtype=np.float16)  # finite in float16, PC1 ~ 8.5e4 is not
    with pytest.raises(ValueError, match="overflows float16"):
        pca.transform(x16)
    with pytest.raises(ValueError, match="overflows float16"):
        pca.inverse_transform(np.full((3, 2), 6e4, dtype=np.float16))
    assert pca.transform(X.astype(np.float16)).dtype == np.float16  # in range: float16 stays float16


def test_pca_from_components_matches_sklearn_projection():
    X = _rs(n=30, s=4, d=8).reshape(-1, 8).astype(np.float64)
    sk = SkPCA(n_components=3).fit(X)
    own = R.PCA.from_components(sk.mean_, sk.components_)
    np.testing.assert_allclose(own.transform(X), sk.transform(X), atol=1e-10)
    np.testing.assert_allclose(own.inverse_transform(sk.transform(X)), sk.inverse_transform(sk.transform(X)),
                               atol=1e-10)
    with pytest.raises(ValueError, match="components"):
        R.PCA.from_components(np.zeros(8), np.zeros((3, 7)))


def test_components_for_variance_fractional():
    from transformer_dynamics import reduce

    cv = np.array([0.5, 0.8, 0.95, 1.0])
    assert reduce.components_for_variance(cv, 0.9) == 3.0
    assert reduce.components_for_variance(cv, 0.9, fractional=True) == pytest.approx(2 + 0.1 / 0.15)
    assert reduce.components_for_variance(cv, 0.3, fractional=True) == pytest.approx(0.6)
    assert np.isposinf(reduce.components_for_variance(cv * 0.5, 0.9, not_reached=np.inf, fractional=True))
