"""Tests for transformer_dynamics.attractors on the tiny random-weight Llama and Gemma 3 of conftest.py: known answers
(identity layers, first-order agreement of the linearisation, interventions that change nothing), the swap and the
next token against references built another way, and the new claims on curves whose answer is known."""

import copy
import json

import numpy as np
import pytest
import torch

from transformer_dynamics import attractors as A
from transformer_dynamics import claims, effects, profiles, robustness, verdicts
from transformer_dynamics import perturb as P
from transformer_dynamics import residual
from transformer_dynamics.capture import residual_stream, tokenize
from transformer_dynamics.reduce import PCA

TEXTS = ["the game of the season was a film", "a war", "the army and the ship were in the city , it was new",
         "music", "one river , two ships", "the album of the year is new"]


@pytest.fixture(scope="module")
def pca(tiny_llama, tiny_tokenizer):
    return PCA(n_components=2).fit(residual_stream(tiny_llama, tiny_tokenizer, TEXTS * 3, progress=False))


@pytest.fixture(scope="module")
def identity_llama(tiny_llama):
    """The tiny Llama with every update zeroed (o_proj and down_proj): each layer is the identity."""
    model = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model


@pytest.fixture(params=["llama", "gemma3"])
def any_model(request, tiny_llama, tiny_gemma3, tiny_tokenizer):
    return {"llama": tiny_llama, "gemma3": tiny_gemma3}[request.param], tiny_tokenizer


def _sweep(model, tok, pca, sizes, **kw):
    kw = {"layers": [0, 2, 3], "n_directions": 3, "kl_sizes": sizes, **kw}
    return A.attractor_sweep(model, tok, TEXTS, sizes=sizes, pca=pca, **kw)


# ---- sizes, directions, the validity radius ----------------------------------------------------------------
def test_sizes_and_directions():
    s = A.perturbation_sizes(4)
    assert s[0] == pytest.approx(0.01) and s[-1] == pytest.approx(10 ** 0.5) and len(s) == 11
    assert np.isclose(s, claims.ATTRACTOR_SIZE).sum() == 1 and np.all(np.diff(s) > 0)
    assert np.isclose(A.perturbation_sizes(3, 0.02, 1.0), claims.ATTRACTOR_SIZE).any()  # added when off the grid
    np.testing.assert_allclose(A.kl_grid(s), [0.1, 10 ** -0.5, 1, 10 ** 0.5])
    np.testing.assert_allclose(A.kl_grid(s, None), [0.1])
    with pytest.raises(ValueError, match="claims' size"):
        A.kl_grid([0.2, 0.3])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8))
    x[3] = x[4]                                                        # two prompts with the same vector
    plane = A.plane_basis(PCA(n_components=2).fit(rng.normal(size=(50, 8))), 8)
    np.testing.assert_allclose(plane @ plane.T, np.eye(2), atol=1e-12)
    for kind in A.KINDS:
        u = A.unit_directions(x, kind, 3, plane=plane, seed=1)
        assert u.shape == (5, 3, 8)
        ok = np.isfinite(u).all(-1)
        np.testing.assert_allclose(np.linalg.norm(u[ok], axis=-1), 1.0)
    u = A.unit_directions(x, "plane", 3, plane=plane)
    np.testing.assert_allclose(u @ plane.T @ plane, u, atol=1e-12)    # in the plane
    u = A.unit_directions(x, "swap", 2)
    np.testing.assert_allclose(u[0, 0], (x[1] - x[0]) / np.linalg.norm(x[1] - x[0]))
    assert np.isnan(u[3, 0]).all() and np.isfinite(u[3, 1]).all()     # the donor of 3 is 4: the same vector
    with pytest.raises(ValueError, match="kind"):
        A.unit_directions(x, "nope", 1)


def test_validity_radius_known_answers():
    s = A.perturbation_sizes(4)
    assert A.validity_radius(s, s) == pytest.approx(A.LINEAR_TOLERANCE)       # error = size crosses at the tolerance
    assert A.validity_radius(s, 0.5 * s ** 2) == pytest.approx(np.sqrt(2 * A.LINEAR_TOLERANCE))  # power law: exact
    assert A.validity_radius(s, np.zeros_like(s)) == s[-1]                    # never: censored at the largest
    assert A.validity_radius(s, np.ones_like(s)) == s[0]                      # always: censored at the smallest
    assert np.isnan(A.validity_radius(s, np.full_like(s, np.nan)))
    assert A.validity_radius(s, np.stack([s, s * 0])).shape == (2,)
    with pytest.raises(ValueError, match="increasing"):
        A.validity_radius(s[::-1], s)
    # the basin's reach: where stability falls through one half, linear in it between log-spaced sizes
    b = np.where(s <= 0.1, 1.0, 0.0)
    assert A.basin_reach(s, b) == pytest.approx(np.sqrt(0.1 * s[5]))          # halfway (in log size) to the next
    assert A.basin_reach(s, np.ones_like(s)) == s[-1] and A.basin_reach(s, np.zeros_like(s)) == s[0]
    assert A.basin_reach(s, np.stack([b, b])).shape == (2,)


# ---- known answers on models ---------------------------------------------------------------------------------
def test_identity_layers_known_answers(identity_llama, tiny_tokenizer, pca):
    """Layers that add nothing: every ratio is 1 (nothing shrinks: inward-flow 0), a perturbation returns within the
    tolerance exactly when it started within it, the linearisation is exact, and no intervention moves the next
    token."""
    sizes = A.perturbation_sizes(2)
    sw = _sweep(identity_llama, tiny_tokenizer, pca, sizes)
    # undefined only where a swap's donor has the prompt's own vector: two texts end in "new" (layer 0: embeddings)
    undefined = ~np.isfinite(sw.recovery)
    assert undefined[:, 0, 2].any() and not np.delete(undefined, 2, axis=2).any()
    np.testing.assert_allclose(sw.recovery[~undefined], 1.0, atol=1e-6)
    np.testing.assert_allclose(sw.recovery_raw[~undefined], 1.0, atol=1e-6)
    c = sw.curves()
    for kind in A.KINDS:
        np.testing.assert_array_equal(c[f"flow:{kind}"], 0.0)
        np.testing.assert_array_equal(c[f"basin_size:{kind}"], np.broadcast_to(sizes <= claims.BASIN_TOLERANCE,
                                                                                c[f"basin_size:{kind}"].shape))
        assert np.nanmax(c[f"error_size:{kind}"]) < 1e-3
        np.testing.assert_array_equal(c[f"validity:{kind}"], np.log10(sizes[-1]))
    np.testing.assert_allclose(sw.end[:, :, :2, 0], sizes[0], rtol=1e-4)     # the distance stays what it was
    assert np.nanmax(sw.kl_delete) < 1e-9 and np.nanmax(sw.kl_swap) < 1e-9
    assert np.all(np.diff(np.nanmean(sw.kl, axis=(0, 1, 2))) > 0)           # a perturbation that stays moves it
    assert np.all(sw.top1_delete == 1) and np.all(sw.top1_swap == 1)


def test_linearisation_agrees_to_first_order(tiny_llama, tiny_tokenizer, pca):
    """The displacement predicted from the Jacobian-vector product (central differences through the extension) is
    off by an error that shrinks in proportion to the size: first-order agreement."""
    sizes = np.array([1e-3, 1e-2, 1e-1])
    sw = _sweep(tiny_llama, tiny_tokenizer, pca, sizes, kl_sizes=[1e-1])
    err = np.nanmedian(sw.error, axis=(0, 1, 2, 4))                           # (S,)
    assert err[0] < 0.01
    assert err[2] > err[1] > err[0]
    assert 4 < err[1] / err[0] < 25 and 4 < err[2] / err[1] < 25              # about 10: proportional to the size


def test_central_difference_is_the_jacobian(any_model):
    """The central difference through the one-token extension equals the window map's Jacobian from torch.func
    (chapter 7's frozen-context maps), so the linear prediction is the Jacobian's."""
    from transformer_dynamics import dynamics as dy

    model, tok = any_model
    ids = tokenize(tok, TEXTS[:3])
    cache = P.prefix_cache(residual.of(model, tok), ids)
    ctx = dy.frozen_context(residual.of(model, tok), ids)
    l = 1
    J = dy.jacobians(model, ctx, [2 * l, 2 * l + 1]).double()
    JW = J[:, 1] @ J[:, 0]                                                    # (n, D, D)
    x = cache.clean[:, 2 * l].astype(np.float64)
    u = A.unit_directions(x, "random", 1, seed=3)[:, 0]
    h = A.FD_STEP * np.linalg.norm(x, axis=-1, keepdims=True)
    rows = np.arange(len(ids))
    plus = P.extend(model, cache, rows, layer=l, vectors=x + h * u, stop_after=2 * l + 2)[:, 2 * l + 2]
    minus = P.extend(model, cache, rows, layer=l, vectors=x - h * u, stop_after=2 * l + 2)[:, 2 * l + 2]
    fd = (plus.astype(np.float64) - minus) / (2 * h)
    exact = torch.einsum("nij,nj->ni", JW, torch.as_tensor(u)).numpy()
    np.testing.assert_allclose(fd, exact, rtol=2e-3, atol=2e-3 * np.abs(exact).max())


def test_next_token_logprobs_are_the_models(any_model):
    model, tok = any_model
    ids = tokenize(tok, TEXTS)
    cache = P.prefix_cache(residual.of(model, tok), ids)
    ours = A.next_token_logprobs(model, cache.clean[:, -1], chunk=4)
    for i, seq in enumerate(ids):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, -1]
        np.testing.assert_allclose(ours[i].numpy(), torch.log_softmax(logits, -1).numpy(), atol=1e-4)
    assert A.kl_divergence(ours, ours).max() == 0.0
    kl, same = A.next_token_kl(model, cache.clean[:, -1], ours, np.arange(len(ids)), chunk=2)
    np.testing.assert_allclose(kl, 0.0, atol=1e-6)                           # float32 logits in other chunks
    assert same.all()
    shifted, same = A.next_token_kl(model, cache.clean[:, -1], ours, np.roll(np.arange(len(ids)), 1))
    assert np.all(shifted > 0)                                                # another text's distribution
    top = ours.argmax(-1).numpy()
    np.testing.assert_array_equal(same, top == np.roll(top, 1))
    with pytest.raises(ValueError, match="one clean row"):
        A.next_token_kl(model, cache.clean[:, -1], ours, [0])


def test_interventions(any_model):
    """No intervention gives the clean output (KL 0); deleting a layer skips exactly it; swapping two layers equals
    running them in the other order through the extension (each reading its own cached prefix); the stack is left as
    it was."""
    model, tok = any_model
    ids = tokenize(tok, TEXTS)
    cache = P.prefix_cache(residual.of(model, tok), ids)
    n_layers = len(model.model.layers)
    before = list(model.model.layers)
    types = list(getattr(model.config, "layer_types", None) or [])
    logp = A.next_token_logprobs(model, cache.clean[:, -1])
    rows = np.arange(cache.n)
    for l in range(n_layers):
        none = A.intervention_outputs(model, cache, l, "none")
        np.testing.assert_allclose(none, cache.clean[:, -1], rtol=1e-4, atol=1e-4)
        assert A.next_token_kl(model, none, logp, rows)[0].max() < 1e-6
        delete = A.intervention_outputs(model, cache, l, "delete")
        if l < n_layers - 1:
            ref = P.extend(model, cache, rows, layer=l + 1, vectors=cache.clean[:, 2 * l])[:, -1]
        else:
            ref = cache.clean[:, 2 * l]
        np.testing.assert_allclose(delete, ref, rtol=1e-5, atol=1e-5)
        assert A.next_token_kl(model, delete, logp, rows)[0].max() > 1e-6
        a, b = (l, l + 1) if l < n_layers - 1 else (l - 1, l)
        y = P.extend(model, cache, rows, layer=b, vectors=cache.clean[:, 2 * a], stop_after=2 * b + 2)[:, 2 * b + 2]
        z = P.extend(model, cache, rows, layer=a, vectors=y, stop_after=2 * a + 2)[:, 2 * a + 2]
        ref = z if b == n_layers - 1 else P.extend(model, cache, rows, layer=b + 1, vectors=z)[:, -1]
        np.testing.assert_allclose(A.intervention_outputs(model, cache, l, "swap"), ref, rtol=1e-4, atol=1e-4)
    assert list(model.model.layers) == before and list(getattr(model.config, "layer_types", None) or []) == types
    with pytest.raises(ValueError, match="kind"):
        A.intervention_outputs(model, cache, 0, "nope")


def test_sweep_shapes_curves_and_spectra(tiny_gemma3, tiny_tokenizer):
    pca = PCA(n_components=2).fit(residual_stream(tiny_gemma3, tiny_tokenizer, TEXTS * 3, progress=False))
    sizes = A.perturbation_sizes(1)
    sw = A.attractor_sweep(tiny_gemma3, tiny_tokenizer, TEXTS, layers=[0, 1, 3], sizes=sizes, pca=pca,
                           n_directions=2, kl_sizes=A.kl_grid(sizes, None), n_spectra=2)
    n, L, K, S, R = len(TEXTS), 3, len(A.KINDS), sizes.size, 2
    assert sw.recovery.shape == sw.end.shape == sw.error.shape == (n, L, K, S, R)
    assert sw.kl.shape == (n, L, K, 1) and sw.kl_delete.shape == sw.kl_swap.shape == (n, L)
    assert sw.window == 2 and sw.spread.shape == (L,) and np.all(sw.spread > 0)
    assert sw.spectra["full"].shape == sw.spectra["update"].shape == (2, L, 64)
    assert np.all(np.diff(sw.spectra["full"], axis=-1) <= 1e-9)              # descending
    c = sw.curves()
    for key in ("flow", "flow_raw", "basin", "recovery", "kl", "validity"):
        assert c[f"{key}:plane"].shape == (n, L)
    assert c["flow_size:swap"].shape == (n, L, S) and c["kl_size:random"].shape == (n, L, 1)
    flows = np.stack([c[f"flow:{k}"] for k in A.KINDS])
    assert np.all((flows >= 0) & (flows <= 1))
    # the recovery at a tiny size is the Jacobian's gain along that direction: inside the window map's spectrum
    sv = sw.spectra["full"][:, :, [0, -1]]                                    # (2, L, 2): largest, smallest
    small = sw.recovery[:2, :, 1, 0]                                          # random directions at 0.01
    assert np.all(small <= sv[:, :, :1] * 1.05) and np.all(small >= sv[:, :, 1:] * 0.95)
    with pytest.raises(ValueError, match="not measured"):
        sw.curves(size=0.5)


def test_sweep_errors(tiny_llama, tiny_tokenizer, pca):
    kw = dict(layers=[0, 1], sizes=[0.1, 0.2], pca=pca)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        A.attractor_sweep(tiny_llama, tiny_tokenizer, TEXTS[:1], **kw)
    with pytest.raises(ValueError, match="increasing"):
        A.attractor_sweep(tiny_llama, tiny_tokenizer, TEXTS, **{**kw, "layers": [1, 0]})
    with pytest.raises(ValueError, match="sizes"):
        A.attractor_sweep(tiny_llama, tiny_tokenizer, TEXTS, **{**kw, "sizes": [0.0, 0.1]})
    with pytest.raises(ValueError, match="kl_sizes"):
        A.attractor_sweep(tiny_llama, tiny_tokenizer, TEXTS, **kw, kl_sizes=[0.3])
    with pytest.raises(ValueError, match="kinds"):
        A.attractor_sweep(tiny_llama, tiny_tokenizer, TEXTS, **kw, kinds=("nope",))


def test_runs_trained_and_random_init(tiny_llama, tiny_tokenizer):
    rs = residual_stream(tiny_llama, tiny_tokenizer, TEXTS * 2, progress=False)
    runs = A.attractor_runs(tiny_llama, tiny_tokenizer, {"trained": rs, "matched:0": rs}, prompts=TEXTS,
                            layers=[0, 3], sizes=A.perturbation_sizes(1), n_prompts=4, n_reference_prompts=3,
                            n_directions=1, n_spectra=2, n_reference_spectra=0)
    assert runs["trained"].n_prompts == 4 and runs["matched:0"].n_prompts == 3
    assert runs["trained"].kl_sizes.size == 3 and runs["matched:0"].kl_sizes.tolist() == [claims.ATTRACTOR_SIZE]
    assert runs["trained"].spectra and not runs["matched:0"].spectra
    assert runs["matched:0"].kl_kinds == ("plane",) and "kl:random" not in runs["matched:0"].curves()
    assert np.isnan(runs["matched:0"].kl[:, :, 1:]).all() and np.isfinite(runs["matched:0"].kl[:, :, 0]).all()
    assert not np.allclose(runs["trained"].kl_delete[:3], runs["matched:0"].kl_delete)


def test_chapter_ledger_inside_and_outside_a_build(tmp_path):
    assert A.chapter_ledger("07_local_dynamics", tmp_path) is None
    data = {"notebook": "07_local_dynamics", "context": {}, "entries": []}
    (tmp_path / "07_local_dynamics.json").write_text(json.dumps(data))
    assert A.chapter_ledger("07_local_dynamics", tmp_path)["notebook"] == "07_local_dynamics"
    partial = tmp_path / "out" / "ledger" / ".partial" / "ci" / "11_attractors"
    partial.mkdir(parents=True)
    assert A.chapter_ledger("07_local_dynamics", partial) is None
    (tmp_path / "out" / "ledger" / "ci").mkdir(parents=True)
    (tmp_path / "out" / "ledger" / "ci" / "07_local_dynamics.json").write_text(json.dumps(data))
    assert A.chapter_ledger("07_local_dynamics", partial)["notebook"] == "07_local_dynamics"


# ---- the claims on curves whose answer is known ---------------------------------------------------------------
N_PROMPTS = profiles.load_profile("full", "11_attractors")["N_PROMPTS"]   # the book's number of prompts
PAIRS = claims.readings(claims.claims_of(source="attractors"))


def _curves(rng, n, effect=0.0, rho=0.0):
    """Per-prompt curves over 5 layers with identical layers (effect 0): shares of 4 directions around a per-prompt
    level, log-normal recoveries and KLs with a per-prompt level; ``effect`` raises the lower layers' shares and
    makes the KL follow the recovery across layers; ``rho`` correlates recovery and KL within a prompt and layer."""
    level = rng.uniform(0.2, 0.8, (n, 1))
    lower = np.r_[1, 1, 0, 0, 0] * effect
    out = {k: rng.binomial(4, np.clip(level + lower, 0, 1), (n, 5)) / 4
           for k in ("flow:plane", "flow:random", "flow:swap", "basin:plane")}
    z, w, p = rng.normal(size=(n, 5)), rng.normal(size=(n, 5)), rng.normal(size=(n, 1))
    trend = np.arange(5) * effect
    out["recovery:plane"] = np.exp(0.1 * (z + p) + 0.1 * trend)
    out |= {k: np.exp(0.5 * (rho * z + np.sqrt(1 - rho ** 2) * w) + p + trend)
            for k in ("kl:plane", "kl_delete", "kl_swap")}
    return A.disjoint_halves(out)


def _verdicts(curves, seed):
    ev = robustness.evidence_from_curves(robustness.mean_curves(curves, n_boot=400, seed=seed), PAIRS,
                                         n=len(next(iter(curves.values()))))
    return {(e.claim, e.reading): verdicts.decide(e)["verdict"] for e in ev}


def test_new_claims_read_their_curves():
    assert {c for c, _ in PAIRS} == {"attractor_lower_flow", "recovery_predicts_robustness"}
    y = np.array([[0.9, 0.7, 0.5, 0.3, 0.1]])
    assert claims.get("attractor_lower_flow").reading("plane")({"flow:plane": y})[0] == pytest.approx(0.6)
    r = claims.get("recovery_predicts_robustness").reading("delete")
    assert r({"recovery_a:plane": y, "kl_delete_b": y ** 2})[0] == pytest.approx(1.0)
    assert r({"recovery_a:plane": y, "kl_delete_b": -y})[0] == pytest.approx(-1.0)
    halves = A.disjoint_halves({"recovery:plane": np.ones((4, 5)), "kl_delete": np.ones((4, 5))})
    assert np.isnan(halves["recovery_a:plane"][1::2]).all() and np.isnan(halves["kl_delete_b"][::2]).all()
    assert effects.rank_correlation(y, np.array([[1.0, 1, 1, 1, 1]]))[0] != effects.rank_correlation(y, y)[0]


def test_new_claims_undecided_on_identical_layers():
    """Identical layers: every new reading undecided in most of 200 draws at the book's number of prompts, and
    decided falsely in at most 2 alpha of them; a planted effect is found."""
    rng = np.random.default_rng(0)
    draws = [_verdicts(_curves(rng, N_PROMPTS), seed) for seed in range(200)]
    for pair in PAIRS:
        v = [d[pair] for d in draws]
        assert v.count("undecided") > 100, (pair, v.count("undecided"))
        assert (len(v) - v.count("undecided")) / len(v) <= 2 * claims.ALPHA, pair
    planted = [_verdicts(_curves(rng, N_PROMPTS, effect=0.5), seed) for seed in range(20)]
    for pair in PAIRS:
        assert sum(d[pair] == "holds" for d in planted) >= 16, pair


# ---- figures -------------------------------------------------------------------------------------------------
def test_figures_draw_from_curves():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transformer_dynamics.plots import attractors as plots

    rng = np.random.default_rng(0)
    sizes, names, n, L = A.perturbation_sizes(1), ["first", "middle", "last"], 4, 3
    S = sizes.size

    def run(n):
        c = {f"{k}_size:{kind}": rng.uniform(0, 1, (n, L, S)) for k in ("flow", "basin", "recovery", "error")
             for kind in A.KINDS}
        c |= {f"{k}:{kind}": rng.uniform(0.1, 1, (n, L)) for k in ("recovery", "kl", "validity") for kind in A.KINDS}
        c |= {k: rng.uniform(0.1, 1, (n, L)) for k in ("kl_delete", "kl_swap")}
        return c, {k: v[:5] for k, v in c.items()}

    runs = {"trained": run(n), "default:0": run(3), "matched:0": run(3)}
    data = {"m1": runs, "m2": runs}
    fig = plots.plot_size_profiles(data, sizes={"m1": sizes, "m2": sizes}, names={"m1": names, "m2": names},
                                   spread={"m1": [0.3] * L, "m2": [0.4] * L}, claim_size=0.1)
    axes = [a for a in fig.axes if a.axison]
    assert len(axes) == 2 * L and axes[0].get_title() == "m1, first" and fig.legends
    spectra = {"trained": {"full": np.sort(rng.uniform(0, 2, (2, L, 8)))[..., ::-1],
                           "update": np.sort(rng.uniform(0, 1, (2, L, 8)))[..., ::-1]}, "default:0": {}}
    fig2 = plots.plot_spectra_grid({"m1": spectra}, names={"m1": names})
    panels = {("m1", "basin"): (plots.plot_by_layer, (runs["trained"][0]["basin_size:plane"],
                                                      runs["trained"][1]["basin_size:plane"], sizes),
                                dict(names=names, key="basin_size", hline=0.5)),
              ("m1", "deleted"): (plots.plot_layer_measure, ({r: (c["kl_delete"], b["kl_delete"])
                                                               for r, (c, b) in runs.items()},),
                                  dict(key="kl_delete", names=names, layers=[0, 1, 2], log=True)),
              ("m1", "recovery vs KL"): (plots.plot_recovery_vs_kl, (runs,), dict(names=names))}
    fig3 = plots.plot_mixed_grid(panels)
    assert [a.get_ylabel() for a in fig3.axes[:3]] == ["basin stability", "KL, layer deleted",
                                                       "next-token KL (nats)"]
    for f in (fig, fig2, fig3):
        plt.close(f)
