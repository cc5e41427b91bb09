# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab,kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] tags=["remove-cell"]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/07_local_dynamics.ipynb)
#
# **Running this in Google Colab?** The notebook asks for a GPU runtime: on a CPU one the next code cell stops before
# installing anything and says how to switch (*Runtime > Change runtime type > T4 GPU*), or set `PROFILE = "ci"` for
# the small offline models on the CPU. The cell installs the package from the GitHub branch, tag or commit this
# notebook was opened at, then applies the run profile: `PROFILE = "auto"` takes the `colab` profile in Colab
# (chapters 1–5: the paper's Llama 3.1 8B in 4-bit) and `full` elsewhere; a value you change in the parameters cell
# is kept, and `PROFILE = None` keeps them all. Llama 3.1 8B is a **gated** model: accept its licence at
# https://huggingface.co/meta-llama/Llama-3.1-8B, create a read token at https://huggingface.co/settings/tokens and
# add it as a Colab **secret named `HF_TOKEN`** (key icon in the left bar, notebook access on); without it the setup
# stops and says so. The `colab` profile keeps the captures on your Google Drive (`CACHE_DIR = "drive"`: Colab asks
# for permission once; about 2 GB for Llama's two captures of 1000 texts), shared by every chapter; the 16 GB weights
# download stays on the runtime's disk.

# %% [markdown]
# # 7. Local dynamics: Jacobian spectra, Lyapunov exponents, rotational planes (beyond the paper)
#
# The paper asks whether the residual stream (RS) behaves like a dynamical system with rotations and
# attractors, but looks only through 1-D phase portraits and a 2-D PCA plane; chapter 3 showed that a
# Gaussian random walk gives as many "rotations" per unit as the network. The authors' sequel
# (arXiv 2605.14258) answers the same questions from the **Jacobian of the layer map**: early layers
# non-normal and dominated by rotations (complex-conjugate eigenvalue pairs), late layers near-symmetric, a
# cumulative low-rank bottleneck, all of it learned rather than architectural. It ships no code; here it is,
# for every model in `MODELS`:
#
# 1. **Per-sublayer Jacobians** $J_s = \partial h_{s+1} / \partial h_s$ at each text's last token, for the
#    attention block and the MLP block of every layer (norms included; Gemma 3's output norms too).
# 2. **Spectral geometry over depth**: rotation dominance, Henrici's departure from normality, the
#    antisymmetric share, effective rank, and the effective rank of the product to the end (the bottleneck),
#    against two references: the token-shuffled texts and the same architecture at random initialisation.
# 3. **Finite-time Lyapunov exponents** from every sublayer to the end, next to chapter 5's noise recovery
#    at the paper's five depths.
# 4. **jPCA** (Churchland et al. 2012, the motor-cortex method the paper borrows its rotation language
#    from) on the population trajectories over sublayers, against the layer-shuffled control.
#
# **The frozen-context linearisation.** At the last token, attention reads the keys and values of the
# earlier positions. By causality they do not depend on the last token's RS, so with them held at their
# values for that text, the last token's sublayer map is a function of its own RS alone and $J_s$ is its exact
# Jacobian; products of them are exact end-to-end last-token Jacobians *with the context fixed*. They do not
# describe what happens when the context itself changes. The maps call the model's own modules, and are
# checked to reproduce the captured RS (section 1). Computation: `transformer_dynamics.dynamics`
# (`torch.func` on the real model, float32).

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts (jPCA on the captured RS of all of them)
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
N_JACOBIAN: int = 6              # seeded subset of the N texts whose full Jacobians are computed (per reference)
BATCH_SIZE: int = 6              # texts per Jacobian batch (memory: a few D x D matrices per text)
CONTEXT: str = "frozen"          # "frozen": the prefix's keys/values held fixed; "single": the last token alone
LYAPUNOV_K: int = 10             # top-k Lyapunov exponents
LYAPUNOV_ITER: int = 2           # subspace-iteration rounds of the Benettin cross-check (through JVPs)
JPCA_K: int = 6                  # jPCA on the top-k PCs (even)
N_SHUFFLES: int = 100            # layer-order shuffles for jPCA's control
N_NOISE: int = 16                # texts for the noise-recovery comparison (chapter 5's experiment, recomputed)
NOISE_SCALE: float = 0.1         # noise norm / RS norm at the perturbed point
N_BOOT: int = 1000               # bootstrap resamples over texts
PROFILE: Optional[str] = "auto"  # run profile: "auto" (colab in Colab, full elsewhere), a name or a .yml path, or None

# %% tags=["remove-cell"]
# Colab: stop on a CPU runtime before installing anything, else install this package from the GitHub ref
# (branch, tag or commit) this notebook was opened at. Then, everywhere: PROFILE applied, parameters checked.
import sys
if "google.colab" in sys.modules:
    import json, os, re, subprocess, urllib.parse, urllib.request  # noqa: E401
    import torch
    if PROFILE in ("auto", "colab") and not torch.cuda.is_available():
        raise RuntimeError("no GPU in this runtime: Runtime > Change runtime type > T4 GPU,"
                           " then run all again (or PROFILE = \"ci\": the small offline models on this CPU)")
    try:  # the notebook's address, from this runtime's Jupyter server
        _at = os.environ.get("COLAB_JUPYTER_IP", "127.0.0.1") + ":" + os.environ.get("KMP_TARGET_PORT", "9000")
        _url = json.load(urllib.request.urlopen(f"http://{_at}/api/sessions", timeout=10))[0]["path"]
    except Exception:  # noqa: BLE001 - not from GitHub as far as we can tell: the fallback below
        _url = ""
    _m = re.search(r"github\.com/([\w.-]+/[\w.-]+)/blob/(.+)/notebooks/\w+\.ipynb", urllib.parse.unquote(_url))
    SPEC = os.environ.get("TRANSFORMER_DYNAMICS_SPEC") or (  # the notebook's ref, or the default branch
        "transformer-dynamics[quant,hub] @ git+https://github.com/"
        + (f"{_m[1]}@{_m[2]}" if _m else "transformer-dynamics/transformer-dynamics"))
    print(f"[colab] pip install {SPEC}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", SPEC], check=True)
from transformer_dynamics import colab
colab.setup(globals(), "07_local_dynamics")

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown

from transformer_dynamics import dynamics as dy
from transformer_dynamics import chapter, models, perturb, pipeline
from transformer_dynamics.capture import sublayer_labels
from transformer_dynamics.plots import dynamics as pd_
from transformer_dynamics.plots.style import grid

T0 = time.perf_counter()
REFERENCES = ("trained", "shuffled", "random init")
# the ledger only: this chapter runs the models itself (Jacobians of the sublayer maps)
ch = chapter.setup("07_local_dynamics", models=MODELS, n=N, seed=SEED,
                   ledger_dir=LEDGER_DIR, capture=False, n_jacobian=N_JACOBIAN,
                   context=CONTEXT, lyapunov_k=LYAPUNOV_K, jpca_k=JPCA_K,
                   n_shuffles=N_SHUFFLES, n_noise=N_NOISE, noise_scale=NOISE_SCALE,
                   n_boot=N_BOOT)
MODELS = ch.models
texts = pipeline.load_texts(n=N, seed=SEED)
rng = np.random.default_rng(SEED)
pick = np.sort(rng.choice(len(texts), size=min(N_JACOBIAN, len(texts)), replace=False))
jac_texts = [texts[i] for i in pick]

# %% [markdown]
# ## 1. Jacobians of every sublayer, three ways
# For each model: the trained model on `N_JACOBIAN` WikiText rows (a seeded subset of the N), the same model
# on the same rows with their tokens shuffled (BOS kept first: the paper's control), and a model with the
# same config and random weights (`from_config` under `SEED`) on the original rows. Each row of the table is
# one (model, reference): the largest relative error with which the sublayer maps reproduce the captured RS
# (a wrong map would be off by order 1), and the time taken.

# %%
R, lm_ = {}, {}
rows = []
for m in MODELS:
    lm, tok = pipeline.load_model(m, cache_dir=CACHE_DIR)
    lm_[m] = (lm, tok)
    rand = dy.random_init_model(lm, seed=SEED)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    for ref, model, cond in (("trained", lm, "original"), ("shuffled", lm, "shuffled"),
                             ("random init", rand, "original")):
        ids = dy.text_token_ids(tok, jac_texts, condition=cond, seed=SEED)
        t0 = time.perf_counter()
        R[m, ref] = dy.local_dynamics(model, ids, batch_size=BATCH_SIZE, context=CONTEXT,
                                      k=LYAPUNOV_K, pad_token_id=pad, seed=SEED)
        rows.append({"model": m, "reference": ref, "texts": len(ids),
                     "sublayers": R[m, ref]["norms"].shape[1] - 1,
                     "d_model": lm.config.hidden_size,
                     "max map error": R[m, ref].get("map_error", np.array([np.nan])).max(),
                     "seconds": time.perf_counter() - t0})
    del rand
map_table = pd.DataFrame(rows).set_index(["model", "reference"])
map_table

# %%
labels = {m: sublayer_labels((R[m, "trained"]["norms"].shape[1] - 1) // 2) for m in MODELS}


def panel(measure, ylabel, title, **kw):
    """Figure: one row per model, one panel per model, the three references in each."""
    data = {(m, measure): {ref: R[m, ref][measure] for ref in REFERENCES} for m in MODELS}
    rows = {m: {"labels": labels[m]} for m in MODELS}
    return grid(pd_.plot_measure, data, row_kwargs=rows, ylabel=ylabel, title=title,
                width=6.5, **kw)

# %% tags=["remove-input"]
if CONTEXT == "frozen":  # the single-token map is a different function: nothing to check it against
    for m in MODELS:
        ch.ledger.record("dyn_max_map_error", float(map_table.loc[m]["max map error"].max()),
                         model=m, figure="beyond",
                         claim="largest relative error of the last-token sublayer maps against the "
                               "captured RS (all references)")

# %% [markdown]
# ## 2. Spectral geometry over depth
# **Rotation dominance**: the fraction of $J_s$'s eigenvalues in complex-conjugate pairs (the same for the
# update $J_s - I$: the residual connection shifts every eigenvalue by 1). Attention sublayers solid, MLP
# sublayers dashed; line: median over texts, band: interquartile range.

# %% mystnb={"figure": {"caption": "Rotation dominance: the fraction of each sublayer Jacobian's eigenvalues in complex-conjugate pairs, median over texts with the interquartile band, trained, shuffled-text and random-init references; one row per model ({models}).", "name": "fig-07-rotation-dominance"}, "image": {"alt": "Line plots of the fraction of complex eigenvalues of the sublayer Jacobians against sublayer for trained, shuffled-text and random-init references; one row per model: {models}"}}
panel("rotation_dominance", "fraction of eigenvalues in complex pairs",
      "rotation dominance");

# %% [markdown]
# **Non-normality**: Henrici's departure from normality $\sqrt{\|J\|_F^2 - \sum|\lambda_i|^2}/\|J\|_F$ (0 for a
# normal matrix). Of $J$ itself the identity of the residual connection dilutes it; the second figure shows
# the update $J - I$, normalised by its own norm.

# %% mystnb={"figure": {"caption": "Non-normality of the sublayer Jacobians J (Henrici's departure over the norm), trained, shuffled-text and random-init references; one row per model ({models}).", "name": "fig-07-non-normality"}, "image": {"alt": "Line plots of the departure from normality of J against sublayer for three references; one row per model: {models}"}}
panel("departure", "departure / ‖J‖_F", "non-normality of J");

# %% mystnb={"figure": {"caption": "Non-normality of the update J \u2212 I, normalised by its own norm; three references; one row per model ({models}).", "name": "fig-07-non-normality-update"}, "image": {"alt": "Line plots of the departure from normality of the update J minus I against sublayer for three references; one row per model: {models}"}}
panel("departure_update", "departure / ‖J − I‖_F", "non-normality of the update J − I");

# %% [markdown]
# **Symmetry**: the antisymmetric share $\|(J - J^T)/2\|_F / \|J\|_F$ of $J$ and of the update. Near 0: the
# map is near-symmetric (a gradient-like, rotation-free map).

# %% mystnb={"figure": {"caption": "Antisymmetric share of the sublayer Jacobians J; three references; one row per model ({models}).", "name": "fig-07-antisymmetric"}, "image": {"alt": "Line plots of the antisymmetric share of J against sublayer for three references; one row per model: {models}"}}
panel("antisymmetric_share", "‖(J − Jᵀ)/2‖ / ‖J‖", "antisymmetric share of J");

# %% mystnb={"figure": {"caption": "Antisymmetric share of the update J \u2212 I; three references; one row per model ({models}).", "name": "fig-07-antisymmetric-update"}, "image": {"alt": "Line plots of the antisymmetric share of the update J minus I against sublayer for three references; one row per model: {models}"}}
panel("antisymmetric_share_update", "‖(A − Aᵀ)/2‖ / ‖A‖, A = J − I",
      "antisymmetric share of the update");

# %% [markdown]
# Eigenvalues of the update $J_s - I$ in the complex plane, pooled over texts, at an attention and an MLP
# sublayer in the first, middle and last third of depth (trained model).

# %% mystnb={"figure": {"caption": "Eigenvalues of the update J \u2212 I in the complex plane, pooled over texts, at attention (left) and MLP (right) sublayers in the first, middle and last third of depth, trained model; one row per model ({models}).", "name": "fig-07-eigenvalues"}, "image": {"alt": "Scatter plots of eigenvalues of the update J minus I in the complex plane at three depths; columns: attention and MLP sublayers; one row per model: {models}"}}
def depth_picks(n_sub):
    """An attention and an MLP sublayer at 1/6, 1/2 and 5/6 of depth."""
    layers = [int(f * (n_sub // 2 - 1)) for f in (1 / 6, 1 / 2, 5 / 6)]
    return {f"{labels_[2 * l + j]}": 2 * l + j for l in layers for j in (0, 1)
            for labels_ in [sublayer_labels(n_sub // 2)]}


fig, axes = plt.subplots(len(MODELS), 2, figsize=(10, 4.2 * len(MODELS)),
                         layout="constrained", squeeze=False)
for i, m in enumerate(MODELS):
    n_sub = R[m, "trained"]["norms"].shape[1] - 1
    picks = depth_picks(n_sub)
    for j, kind in enumerate(("attn", "mlp")):
        ev = {name: R[m, "trained"]["eigenvalues"][:, s].ravel()
              for name, s in picks.items() if name.endswith(kind)}
        pd_.plot_eigenvalues(ev, ax=axes[i, j])
        axes[i, j].set_title(f"{axes[i, j].get_title()} — {m}, {kind}")

# %% [markdown]
# ## 3. The bottleneck
# Effective rank (Roy & Vetterli: $\exp$ of the entropy of the normalised singular values) of each $J_s$, and
# of the product $J_{S-1} \cdots J_s$ from sublayer $s$ to the last layer's output: the end-to-end last-token
# Jacobian. A product whose effective rank falls far below $D$ funnels perturbations into few directions.

# %% mystnb={"figure": {"caption": "Effective rank of each sublayer Jacobian; three references; one row per model ({models}).", "name": "fig-07-effective-rank"}, "image": {"alt": "Line plots of the effective rank of each sublayer Jacobian against sublayer for three references; one row per model: {models}"}}
panel("effective_rank", "effective rank of J_s", "effective rank per sublayer");

# %% mystnb={"figure": {"caption": "Effective rank of the product of the Jacobians from each sublayer to the end; three references; one row per model ({models}).", "name": "fig-07-cumulative-rank"}, "image": {"alt": "Line plots of the effective rank of the end-to-end Jacobian product against starting sublayer for three references; one row per model: {models}"}}
panel("cumulative_effective_rank", "effective rank of J_{S-1} ⋯ J_s",
      "cumulative effective rank (to the end)");

# %% [markdown]
# ## 4. Finite-time Lyapunov exponents
# The top exponent $\lambda_1(s) = \log \sigma_1(J_{S-1}\cdots J_s) / (S - s)$ per sublayer, exact from the
# products' singular values. Absolute exponents measure how a perturbation's *norm* grows; the RS itself grows
# over depth (its norm rises by orders of magnitude), so the second figure subtracts the RS's own log-norm
# growth rate: below 0, a perturbation shrinks *relative to the state*, which is what chapter 5's recovery
# measures.

# %% mystnb={"figure": {"caption": "Top finite-time Lyapunov exponent per sublayer, absolute (left) and relative to the residual stream's own growth (right); three references; one row per model ({models}).", "name": "fig-07-lyapunov"}, "image": {"alt": "Line plots of the top finite-time Lyapunov exponent against sublayer, absolute and relative to the state's growth, for three references; one row per model: {models}"}}
lam1 = {m: {ref: R[m, ref]["exponents"][..., 0] for ref in REFERENCES} for m in MODELS}
lam1_rel = {}
for m in MODELS:
    n_sub = R[m, "trained"]["norms"].shape[1] - 1
    lam1_rel[m] = {ref: dy.relative_exponents(R[m, ref]["exponents"][..., :1],
                                              R[m, ref]["norms"], np.arange(n_sub))[..., 0]
                   for ref in REFERENCES}
grid(pd_.plot_exponents,
     {(m, "absolute"): lam1[m] for m in MODELS}
     | {(m, "relative"): lam1_rel[m] for m in MODELS},
     row_kwargs={m: {"labels": labels[m]} for m in MODELS}, width=6.5);

# %% [markdown]
# The exponents above come from full matrices, which fit at these widths. At Llama 3.1 8B's $D = 4096$ the same
# numbers come from Benettin's method through Jacobian-vector products only (`dynamics.lyapunov` with
# `dynamics.jvp_steps`: $k$ vectors pushed through the sublayers, re-orthonormalised by QR, after
# `LYAPUNOV_ITER` rounds of subspace iteration). A cross-check on the first text, from the first perturbed
# layer:

# %%
bench = []
for m in MODELS:
    lm, tok = lm_[m]
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    ctx = dy.frozen_context(lm, dy.text_token_ids(tok, jac_texts[:1]), mode=CONTEXT,
                            pad_token_id=pad)
    s0 = 2 * perturb.paper_layers(ctx.n_sublayers // 2)[1]
    lam = dy.lyapunov(dy.jvp_steps(lm, ctx), k=LYAPUNOV_K, starts=[s0],
                      n_iter=LYAPUNOV_ITER, seed=SEED, n_texts=1,
                      d_model=ctx.h.shape[-1])[0, 0]
    exact = R[m, "trained"]["exponents"][0, s0]
    bench.append({"model": m, "start sublayer": s0,
                  "max |Benettin − exact|": np.abs(lam - exact).max(),
                  "λ₁ exact": exact[0], "λ_k exact": exact[-1]})
bench = pd.DataFrame(bench).set_index("model")
bench

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("dyn_benettin_max_abs_error", float(bench.loc[m, "max |Benettin − exact|"]),
                     model=m, figure="beyond", start=int(bench.loc[m, "start sublayer"]),
                     claim=f"top-{LYAPUNOV_K} exponents by JVPs + QR (Benettin, {LYAPUNOV_ITER} subspace "
                           "rounds) against the exact ones from the full product: largest absolute "
                           "difference")

# %% [markdown]
# ### Does the local picture predict where perturbations recover?
# Chapter 5 adds noise of norm `NOISE_SCALE`·‖h‖ at the input of the paper's five layers (mapped by depth) and
# measures the relative distance to the unperturbed run at the last sublayer over that at the perturbed point
# (recomputed here on `N_NOISE` texts). The Jacobians predict it to first order: a random unit direction $u$ at
# sublayer $s$ grows on average by $\|J_{S-2}\cdots J_s\|_F / \sqrt{D}$, so the predicted ratio is that times
# $\|h_s\| / \|h_{S-1}\|$. Below 1: the perturbation is damped (attractor-like).

# %%
cmp_rows = []
for m in MODELS:
    lm, tok = lm_[m]
    n_layers = len(models.layer_modules(lm))
    layers = perturb.paper_layers(n_layers)
    names = perturb.depth_names(layers)
    noise = perturb.noise_sweep(lm, tok, texts[:N_NOISE], layers=layers,
                                scales=[NOISE_SCALE], seed=SEED)
    r = R[m, "trained"]
    S = r["norms"].shape[1] - 1
    for name, l, res in zip(names, layers, noise):
        s = 2 * l
        pred = r["growth_to_last"][:, s] * r["norms"][:, s] / r["norms"][:, S - 1]
        rel = dy.relative_exponents(r["exponents"][:, [s], :1], r["norms"], [s])[:, 0, 0]
        cmp_rows.append({"model": m, "depth": name, "layer": l, "sublayer": s,
                         "λ₁": np.median(r["exponents"][:, s, 0]),
                         "λ₁ relative": np.median(rel),
                         "predicted recovery": np.nanmedian(pred),
                         "measured recovery": np.median(res.recovery)})
cmp = pd.DataFrame(cmp_rows).set_index(["model", "depth"])
cmp

# %% mystnb={"figure": {"caption": "Noise recovery predicted by the Jacobians against the recovery measured as in chapter 5, at the paper's five layers; one panel per model ({models}).", "name": "fig-07-recovery"}, "image": {"alt": "Scatter plot of predicted against measured noise recovery at five depths with the identity line, one panel per model: {models}"}}
fig, axes = plt.subplots(1, len(MODELS), figsize=(4.6 * len(MODELS), 4.0),
                         layout="constrained", squeeze=False)
for ax, m in zip(axes[0], MODELS):
    c = cmp.loc[m]
    pd_.plot_exponents_vs_recovery(list(c.index), c["predicted recovery"].to_numpy(),
                                   c["measured recovery"].to_numpy(), ax=ax, title=m)

# %% tags=["hide-input"]
for m in MODELS:
    c = cmp.loc[m]
    kw = dict(model=m, figure="beyond", depths=list(c.index), layers=c["layer"].tolist())
    ch.ledger.record("dyn_top_exponent_at_depths", c["λ₁"].tolist(), unit="per sublayer", **kw,
                     claim="median top Lyapunov exponent from the input of the paper's five layers to the end")
    ch.ledger.record("dyn_relative_exponent_at_depths", c["λ₁ relative"].tolist(), unit="per sublayer", **kw,
                     paper="attractor-like dynamics in the lower layers (section 3.4)",
                     claim="the same minus the RS's own log-norm growth rate (< 0: perturbations shrink relative to "
                           "the state)")
    ch.ledger.record("dyn_predicted_noise_recovery", c["predicted recovery"].tolist(), **kw,
                     claim="noise recovery predicted by the Jacobians (random-direction gain times the RS norm ratio)")
    ch.ledger.record("dyn_measured_noise_recovery", c["measured recovery"].tolist(), **kw,
                     claim=f"noise recovery measured as in chapter 5 (scale {NOISE_SCALE:g}, {N_NOISE} texts)")
    first = c.iloc[:2]  # the first and early layers: the paper's "lower layers"
    est, lo, hi = dy.lower_layers_exponent(R[m, "trained"], first["sublayer"].tolist(), n_boot=N_BOOT, seed=SEED)
    ch.ledger.claim("attractor_lower_exponents", est, ci=(lo, hi), model=m)
    ch.ledger.record("dyn_lower_layers_noise_recovery", float(first["measured recovery"].max()), **kw,
                     paper="attractor-like dynamics in the lower layers (section 3.4)",
                     claim="largest measured noise recovery at the first and early perturbed layers (< 1: damped)")

# %% [markdown]
# ## 5. jPCA: rotational planes of the population trajectory
# jPCA treats each text as a condition and the sublayers as time: the cross-text mean at each sublayer is
# removed, units are soft-normalised (range + 5 × the median range, so the RS's few massive units do not make
# the whole PCA), the trajectories are projected on their top `JPCA_K` PCs, and $dX/ds = M X$ is fitted once
# with $M$ unconstrained and once skew-symmetric (pure rotation). The R² ratio (skew / unconstrained) near 1
# means the dynamics in that subspace are mostly rotational. The control permutes the sublayer order
# (`N_SHUFFLES` permutations, the same for every text); jPCA runs on all N captured texts, original and
# token-shuffled.

# %%
J_rows, JP, JZ, JC = [], {}, {}, {}
for m in MODELS:
    for cond in ("original", "shuffled"):
        rs = pipeline.residual_stream(m, n=N, seed=SEED, condition=cond,
                                      cache_dir=CACHE_DIR)
        # one PCA for the fit and its control
        JZ[m, cond], _, explained = dy.jpca_projection(rs, JPCA_K)
        res = dy.jpca(JZ[m, cond], projected=True)
        ctrl = dy.jpca_shuffled(JZ[m, cond], n_shuffles=N_SHUFFLES, seed=SEED,
                                projected=True)
        JP[m, cond], JC[m, cond] = res, ctrl
        omega = res.frequencies[0] if len(res.frequencies) else np.nan
        J_rows.append({"model": m, "texts": cond, "variance in the PCs": explained.sum(),
                       "R² skew": res.r2_skew, "R² unconstrained": res.r2_full,
                       "ratio": res.ratio,
                       "ratio, layer-shuffled (median)": np.median(ctrl[:, 2]),
                       "fraction of shuffles with ratio ≥ observed":
                           np.mean(ctrl[:, 2] >= res.ratio),
                       "ω of the fastest plane (rad/sublayer)": omega,
                       "period (sublayers)": 2 * np.pi / omega})
        del rs
jpca_table = pd.DataFrame(J_rows).set_index(["model", "texts"])
jpca_table

# %% mystnb={"figure": {"caption": "jPCA: the texts' trajectories in the fastest rotational plane, original (left) and token-shuffled texts (middle), and the skew-symmetric fit's R\u00b2 ratio against the layer-shuffle control (right); one row per model ({models}).", "name": "fig-07-jpca"}, "image": {"alt": "Trajectories in the top jPCA plane for original and shuffled-token texts, and histograms of the R squared ratio against the layer-shuffle control; one row per model: {models}"}}
fig, axes = plt.subplots(len(MODELS), 3, figsize=(14, 4.2 * len(MODELS)),
                         layout="constrained", squeeze=False)
for i, m in enumerate(MODELS):
    for j, cond in enumerate(("original", "shuffled")):
        res = JP[m, cond]
        if len(res.planes):
            pd_.plot_jpca_plane(JZ[m, cond], res.planes[0], frequency=res.frequencies[0],
                                ax=axes[i, j], title=f"{m}, {cond}")
    pd_.plot_jpca_ratio({c: JP[m, c].ratio for c in ("original", "shuffled")},
                        {c: JC[m, c][:, 2] for c in ("original", "shuffled")},
                        ax=axes[i, 2], title=m)

# %% tags=["remove-input"]
for m in MODELS:
    for cond in ("original", "shuffled"):
        row = jpca_table.loc[(m, cond)]
        ch.record(m, "jpca_r2_ratio", float(row["ratio"]), figure="beyond", condition=cond,
                  claim=f"jPCA R² ratio (skew-symmetric / unconstrained) on the top {JPCA_K} PCs")
        ch.record(m, "jpca_r2_ratio_layer_shuffled", float(row["ratio, layer-shuffled (median)"]),
                  figure="beyond", condition=cond,
                  p=float(row["fraction of shuffles with ratio ≥ observed"]),
                  claim=f"jPCA R² ratio with the sublayer order shuffled (median of {N_SHUFFLES})")
        ch.record(m, "jpca_top_frequency", float(row["ω of the fastest plane (rad/sublayer)"]),
                  unit="rad/sublayer", figure="beyond", condition=cond,
                  claim="angular frequency of jPCA's fastest rotational plane")

# %% [markdown]
# ## 6. The sequel's claims on these models
# Each claim is a contrast between thirds of depth (by layer; all sublayers) of a per-text measure, with a 95%
# bootstrap interval over the `N_JACOBIAN` texts (`dynamics.depth_contrast`, `dynamics.learned_difference`):
#
# | claim | statistic | supports the claim when |
# |---|---|---|
# | early layers rotation-dominated | early − late rotation dominance | interval above 0 |
# | early layers non-normal | early − late departure (of the update $J - I$) | interval above 0 |
# | late layers near-symmetric | late − early antisymmetric share (of the update) | interval below 0 |
# | a low-rank bottleneck | effective rank of the end-to-end product from sublayer 0, / D | well below 1 |
# | learned, not architectural | trained − random-init contrast (paired texts) | interval away from 0, same sign |
#
# Each row is also computed for the token-shuffled texts and the random-init model.

# %% tags=["hide-input"]
COND = {"trained": "original", "shuffled": "shuffled", "random init": "random_init"}  # ledger conditions
claim_rows = []
for m in MODELS:
    for key, c in dy.SEQUEL_CLAIMS.items():
        row = {"model": m, "claim": c.sentence, "registry": c.registry}
        for ref in REFERENCES:
            row[ref] = dy.sequel_statistic(key, R[m, ref], n_boot=N_BOOT, seed=SEED)
            ch.ledger.claim(c.registry, row[ref][0], ci=row[ref][1:], model=m, condition=COND[ref])
        row["trained − random init"] = dy.sequel_statistic(key, R[m, "trained"], random=R[m, "random init"],
                                                          n_boot=N_BOOT, seed=SEED)
        ch.ledger.claim(c.registry, row["trained − random init"][0], ci=row["trained − random init"][1:], model=m,
                        reading="learned")
        claim_rows.append(row)
    row = {"model": m, "claim": "a low-rank bottleneck (effective rank of the whole product / D)",
           "registry": "dyn_bottleneck"}
    for ref in REFERENCES:
        row[ref] = dy.bottleneck_statistic(R[m, ref], n_boot=N_BOOT, seed=SEED)
        ch.ledger.claim("dyn_bottleneck", row[ref][0], ci=row[ref][1:], model=m, condition=COND[ref])
    claim_rows.append(row)


def fmt(t):
    return "" if not isinstance(t, tuple) else f"{t[0]:.3g} [{t[1]:.3g}, {t[2]:.3g}]"


claim_table = pd.DataFrame(claim_rows).drop(columns="registry").set_index(["model", "claim"]).map(fmt)
claim_table

# %% tags=["remove-input"]
seconds = time.perf_counter() - T0
for m in MODELS:
    ch.ledger.record("dyn_chapter_seconds", seconds, unit="s", model=m, figure="beyond",
                     claim="wall time of this chapter (all models, all references)")

# %% [markdown]
# ## Closing note
# Computed from the tables above (per model: the profiles over depth as early / middle / late means of the
# trained model, with the two references; the exponents and recovery at the five perturbed depths; jPCA).

# %% tags=["remove-input"]
def thirds(values):
    th = dy.depth_thirds(values.shape[1])
    return " / ".join(f"{values[:, th[t]].mean():.3f}" for t in ("early", "middle", "late"))


lines = []
for i, m in enumerate(MODELS):
    rows_m = [r for r in claim_rows if r["model"] == m]
    c = cmp.loc[m]
    jp = jpca_table.loc[(m, "original")]
    lines.append(f"**{m}** ({len(pick)} texts; early / middle / late thirds):")
    for ref in REFERENCES:
        lines.append(f"- {ref}: rotation dominance {thirds(R[m, ref]['rotation_dominance'])}; "
                     f"non-normality of the update {thirds(R[m, ref]['departure_update'])}; "
                     f"antisymmetric share of the update {thirds(R[m, ref]['antisymmetric_share_update'])}.")
    lines.append("- Exponents at the five depths (" + ", ".join(c.index) + "): λ₁ "
                 + ", ".join(f"{v:.3f}" for v in c["λ₁"]) + "; relative to the RS's growth "
                 + ", ".join(f"{v:.3f}" for v in c["λ₁ relative"]) + "; predicted recovery "
                 + ", ".join(f"{v:.2f}" for v in c["predicted recovery"]) + " against measured "
                 + ", ".join(f"{v:.2f}" for v in c["measured recovery"]) + ".")
    lines.append(f"- jPCA R² ratio {jp['ratio']:.3f} against {jp['ratio, layer-shuffled (median)']:.3f} with the "
                 f"sublayers shuffled (fraction of shuffles at least as rotational: "
                 f"{jp['fraction of shuffles with ratio ≥ observed']:.2f}).")
    learned = {"holds": "learned", "fails": "stronger at random init", "undecided": "not shown to be learned"}
    for r in rows_m:
        # the registry's verdicts, as recorded in the ledger above
        v = {ref: ch.ledger.entries[m, r["registry"] + (f"@{COND[ref]}" if COND[ref] != "original" else "")].verdict
                   for ref in REFERENCES}
        if "trained − random init" in r:
            v["trained − random init"] = ch.ledger.entries[m, r["registry"] + ":learned"].verdict
        text = (f"- *{r['claim']}*: {v['trained']} on the trained model, {v['shuffled']} on shuffled texts, "
                f"{v['random init']} at random init")
        if "trained − random init" in r:
            text += (f"; trained − random init {fmt(r['trained − random init'])} "
                     f"({learned[v['trained − random init']]})")
        lines.append(text + ".")
    lines.append("")
lines.append(f"The chapter ran in {seconds / 60:.1f} minutes.")
Markdown("\n".join(lines))
