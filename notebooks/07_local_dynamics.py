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
#    attention block and the MLP block of every layer (norms included; Gemma 3's output norms too), on
#    `N_JACOBIAN` texts for the trained model, for the same texts with their tokens shuffled, and for the same
#    architecture at random initialisation (`REFERENCE_INITS` × `REFERENCE_SEEDS`: transformers' default init,
#    and every weight tensor drawn at the trained tensor's mean and standard deviation).
# 2. **Spectral geometry over depth**: rotation dominance, Henrici's departure from normality, the
#    antisymmetric share, in the early and the late third of depth (what the sequel's claims compare), and the
#    effective rank of the end-to-end product (the bottleneck).
# 3. **Finite-time Lyapunov exponents** from the paper's five perturbed layers to the end, next to chapter 5's
#    noise recovery there.
# 4. **jPCA** (Churchland et al. 2012, the motor-cortex method the paper borrows its rotation language
#    from) on the population trajectories over sublayers, against the layer-shuffled control.
#
# Every claim is decided by the claim registry from an interval over texts (`transformer_dynamics.claims`):
# the sequel's claims as contrasts between thirds of depth of per-text measures, and whether they are
# *learned* by setting the trained model's value against the random-init references' (the verdict line says
# "holds, beyond random init" or "holds, but so does random init").
#
# **The frozen-context linearisation.** At the last token, attention reads the keys and values of the
# earlier positions. By causality they do not depend on the last token's RS, so with them held at their
# values for that text, the last token's sublayer map is a function of its own RS alone and $J_s$ is its exact
# Jacobian; products of them are exact end-to-end last-token Jacobians *with the context fixed*. They do not
# describe what happens when the context itself changes. The maps call the model's own modules and weights,
# and are checked to reproduce the captured RS (section 1). Computation: `transformer_dynamics.dynamics`
# (each block's own factorisation, batched over texts, float32; spectra in float64 norms).

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts (jPCA on the captured RS of all of them)
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
N_JACOBIAN: int = 32             # texts (the first of the N) whose Jacobians are computed, per model and reference
BATCH_SIZE: int = 8              # texts per Jacobian batch (memory: a few D x D matrices per text)
LAYER_STRIDE: int = 2            # spectra at every k-th layer of the early and late thirds (1: every layer)
CONDITIONS: list[str] = ["original", "shuffled"]  # texts of the trained model's runs ("shuffled": the control)
REFERENCE_INITS: list[str] = ["default", "matched"]  # random-init references (transformer_dynamics.random_init)
REFERENCE_SEEDS: list[int] = [0, 1, 2]               # ... and their seeds
N_REFERENCE: int = 200           # texts of the random-init residual streams jPCA is compared with
CONTEXT: str = "frozen"          # "frozen": the prefix's keys/values held fixed; "single": the last token alone
LYAPUNOV_K: int = 10             # top-k Lyapunov exponents
LYAPUNOV_ITER: int = 2           # subspace-iteration rounds of the Benettin cross-check (through JVPs)
JPCA_K: int = 6                  # jPCA on the top-k PCs (even)
N_SHUFFLES: int = 100            # layer-order shuffles for jPCA's control
N_NOISE: int = 16                # texts for the noise-recovery comparison (chapter 5's experiment, recomputed)
NOISE_SCALE: float = 0.1         # noise norm / RS norm at the perturbed point
N_BOOT: int = 1000               # bootstrap resamples over texts (every claim's interval)
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

import pandas as pd
from IPython.display import Markdown, display

from transformer_dynamics import chapter, perturb, pipeline, verdicts
from transformer_dynamics import dynamics as dy
from transformer_dynamics.ledger import show_table
from transformer_dynamics.capture import sublayer_labels
from transformer_dynamics.plots import dynamics as dynplots
from transformer_dynamics.plots.style import grid, side_by_side

T0 = time.perf_counter()
# the ledger only: this chapter runs the models itself (Jacobians of the sublayer maps)
ch = chapter.setup("07_local_dynamics", models=MODELS, n=N, seed=SEED, cache_dir=CACHE_DIR,
                   ledger_dir=LEDGER_DIR, capture=False, conditions=CONDITIONS,
                   reference_n=N_REFERENCE, reference_seeds=REFERENCE_SEEDS,
                   reference_inits=REFERENCE_INITS, n_jacobian=N_JACOBIAN,
                   layer_stride=LAYER_STRIDE, context=CONTEXT, lyapunov_k=LYAPUNOV_K,
                   jpca_k=JPCA_K, n_shuffles=N_SHUFFLES, n_noise=N_NOISE,
                   noise_scale=NOISE_SCALE, n_boot=N_BOOT)
MODELS = ch.models
texts = pipeline.load_texts(n=N, seed=SEED)

# %% [markdown]
# ## 1. Jacobians of every sublayer, for every reference
# For each model: the trained model on the first `N_JACOBIAN` of the N WikiText rows (a random subset: the rows
# are drawn in random order), the same model on the same rows with their tokens shuffled (BOS kept first: the
# paper's control), and each random initialisation on the original rows. Each row of the table is one (model,
# run, texts): the sublayers whose spectra were computed (the early and late thirds, every `LAYER_STRIDE`-th
# layer), the largest relative error with which the sublayer maps reproduce the captured RS (a wrong map would
# be off by order 1), and the time taken.

# %%
jacobians, loaded = {}, {}
for m in MODELS:
    loaded[m] = pipeline.load_model(m, cache_dir=CACHE_DIR)
    jacobians[m] = dy.reference_runs(*loaded[m], texts[:N_JACOBIAN], inits=REFERENCE_INITS,
                             seeds=REFERENCE_SEEDS, conditions=CONDITIONS,
                             layer_stride=LAYER_STRIDE, seed=SEED, strip=pipeline.STRIP,
                             k=LYAPUNOV_K, batch_size=BATCH_SIZE, context=CONTEXT)
labels = {m: sublayer_labels(jacobians[m]["trained", "original"].n_sublayers // 2)
          for m in MODELS}
map_table = dy.runs_table({(m, *key): r for m in MODELS for key, r in jacobians[m].items()})
show_table(map_table)

# %% tags=["remove-input"]
if CONTEXT == "frozen":  # the single-token map is a different function: nothing to check it against
    for m in MODELS:
        ch.record(m, "dyn_max_map_error", float(dy.runs_table(jacobians[m])["max map error"].max()), figure="beyond",
                  claim="largest relative error of the last-token sublayer maps against the captured RS (all runs)")

# %% [markdown]
# ## 2. Spectral geometry over depth
# **Rotation dominance**: the fraction of $J_s$'s eigenvalues in complex-conjugate pairs (the same for the
# update $J_s - I$: the residual connection shifts every eigenvalue by 1). Attention sublayers solid, MLP
# sublayers dashed; line: median over texts, band: interquartile range; the random inits' seeds pooled. The
# middle third is not computed: no claim reads it.

# %% mystnb={"figure": {"caption": "Rotation dominance: the fraction of each sublayer Jacobian's eigenvalues in complex-conjugate pairs over depth, median over texts with the interquartile band; trained model, token-shuffled texts and random initialisations; one row per model ({models}).", "name": "fig-07-rotation"}, "image": {"alt": "Line plots of the share of complex-conjugate eigenvalues per sublayer against depth for the trained model and its references; one row per model ({models})"}}
dynplots.measure_grid({m: dy.by_reference(jacobians[m], "rotation_dominance")
                       for m in MODELS},
                      labels=labels, ylabel="fraction of eigenvalues in complex pairs",
                      title="rotation dominance");

# %% [markdown]
# **Non-normality**: Henrici's departure from normality $\sqrt{\|J\|_F^2 - \sum|\lambda_i|^2}/\|J\|_F$ (0 for a
# normal matrix). Of $J$ itself the identity of the residual connection dilutes it; the second figure shows
# the update $J - I$, normalised by its own norm.

# %% mystnb={"figure": {"caption": "Non-normality of the sublayer Jacobians J (Henrici's departure over the norm); trained model, token-shuffled texts and random initialisations; one row per model ({models}).", "name": "fig-07-non-normal"}, "image": {"alt": "Line plots of the departure from normality of each sublayer Jacobian against depth for the trained model and its references; one row per model ({models})"}}
dynplots.measure_grid({m: dy.by_reference(jacobians[m], "departure") for m in MODELS},
                      labels=labels, ylabel="departure / ‖J‖_F",
                      title="non-normality of J");

# %% mystnb={"figure": {"caption": "Non-normality of the update J \u2212 I, normalised by its own norm; trained model, token-shuffled texts and random initialisations; one row per model ({models}).", "name": "fig-07-non-normal-update"}, "image": {"alt": "Line plots of the departure from normality of each sublayer's update against depth for the trained model and its references; one row per model ({models})"}}
dynplots.measure_grid({m: dy.by_reference(jacobians[m], "departure_update")
                       for m in MODELS},
                      labels=labels, ylabel="departure / ‖J − I‖_F",
                      title="non-normality of the update J − I");

# %% [markdown]
# **Symmetry**: the antisymmetric share $\|(A - A^T)/2\|_F / \|A\|_F$ of the update $A = J - I$. Near 0: the
# map is near-symmetric (a gradient-like, rotation-free map).

# %% mystnb={"figure": {"caption": "Antisymmetric share of the update J \u2212 I over depth; trained model, token-shuffled texts and random initialisations; one row per model ({models}).", "name": "fig-07-antisymmetric-update"}, "image": {"alt": "Line plots of the antisymmetric share of each sublayer's update against depth for the trained model and its references; one row per model ({models})"}}
antisymmetric = {m: dy.by_reference(jacobians[m], "antisymmetric_share_update")
                 for m in MODELS}
dynplots.measure_grid(antisymmetric, labels=labels, ylabel="‖(A − Aᵀ)/2‖ / ‖A‖, A = J − I",
                      title="antisymmetric share of the update");

# %% [markdown]
# Eigenvalues of the update $J_s - I$ in the complex plane, pooled over texts, at an attention and an MLP
# sublayer in the middle of the early and of the late third (trained model).

# %% mystnb={"figure": {"caption": "Eigenvalues of the update J \u2212 I in the complex plane, pooled over texts, at attention and MLP sublayers early, in the middle and late in depth; one row per model ({models}).", "name": "fig-07-eigenvalues"}, "image": {"alt": "Scatter plots of update eigenvalues in the complex plane at six sublayers, attention and MLP; one row per model ({models})"}}
eigenvalues = {m: dy.picked_eigenvalues(jacobians[m]["trained", "original"],
                                        labels=labels[m])
               for m in MODELS}
grid(dynplots.plot_eigenvalues,
     {(m, kind): (ev,) for m in MODELS for kind, ev in eigenvalues[m].items()},
     width=4.8, height=4.4);

# %% [markdown]
# ## 3. The bottleneck
# The effective rank (Roy & Vetterli: $\exp$ of the entropy of the normalised singular values) of the product
# $J_{S-1} \cdots J_0$ from the first sublayer to the last layer's output, the end-to-end last-token Jacobian,
# over the width $D$: one point per text. Far below 1, the product funnels perturbations into few directions;
# the dotted line is the registry's threshold for "low rank".

# %% mystnb={"figure": {"caption": "The cumulative bottleneck: effective rank of the end-to-end last-token Jacobian from sublayer 0 over D, per text, for the trained model and its references; models {models}.", "name": "fig-07-bottleneck"}, "image": {"alt": "Dot plots of the end-to-end Jacobian's effective rank over the width per text for the trained model and its references; models {models}"}}
side_by_side(dynplots.plot_by_reference,
             {m: dy.by_reference(jacobians[m], "bottleneck_fraction") for m in MODELS},
             ylabel="effective rank of J_{S-1} ⋯ J_0 / D", threshold=0.5, width=4.8,
             height=3.8);

# %% [markdown]
# ## 4. Finite-time Lyapunov exponents, and chapter 5's noise recovery
# The top exponent $\lambda_1(s) = \log \sigma_1(J_{S-1}\cdots J_s) / (S - s)$ from the input of each of the
# paper's five perturbed layers (mapped by depth), exact from the products' singular values. Absolute exponents
# measure how a perturbation's *norm* grows; the RS itself grows over depth, so the relative exponent subtracts
# the RS's own log-norm growth rate: below 0, a perturbation shrinks *relative to the state*, which is what
# chapter 5's recovery measures. Chapter 5 adds noise of norm `NOISE_SCALE`·‖h‖ at those layers and measures
# the relative distance to the unperturbed run at the last sublayer over that at the perturbed point
# (recomputed here on `N_NOISE` texts); the Jacobians predict it to first order (a random unit direction at
# $s$ grows on average by $\|J_{S-2}\cdots J_s\|_F / \sqrt{D}$, times $\|h_s\| / \|h_{S-1}\|$). Below 1: the
# perturbation is damped (attractor-like).

# %%
recovery = {}
for m in MODELS:
    lm, tok = loaded[m]
    layers = perturb.paper_layers(len(labels[m]) // 2)
    noise = perturb.noise_sweep(lm, tok, texts[:N_NOISE], layers=layers,
                                scales=[NOISE_SCALE], seed=SEED, strip=pipeline.STRIP)
    recovery[m] = dy.recovery_table(jacobians[m]["trained", "original"],
                                    [res.recovery for res in noise])
show_table(pd.concat(recovery, names=["model"]))

# %% mystnb={"figure": {"caption": "Top finite-time Lyapunov exponent per sublayer, absolute and relative to the residual stream's own growth; trained model and references; one row per model ({models}).", "name": "fig-07-exponents"}, "image": {"alt": "Line plots of the top finite-time Lyapunov exponent per sublayer, absolute and relative to the stream's growth; one row per model ({models})"}}
exponents = {"absolute": "top_exponent",
             "relative to the RS's growth": "top_relative_exponent"}
grid(dynplots.plot_exponents,
     {(m, which): (dy.by_reference(jacobians[m], key),) for m in MODELS
      for which, key in exponents.items()},
     row_kwargs={m: {"names": list(recovery[m].index)} for m in MODELS}, width=5.5);

# %% mystnb={"figure": {"caption": "Noise recovery predicted by the Jacobians against the recovery measured as in chapter 5, at the paper's five layers; models {models}.", "name": "fig-07-recovery"}, "image": {"alt": "Scatter of predicted against measured noise recovery at five depths; models {models}"}}
side_by_side(dynplots.plot_exponents_vs_recovery,
             {m: (list(c.index), c["predicted recovery"].to_numpy(),
                  c["measured recovery"].to_numpy()) for m, c in recovery.items()},
             width=4.6, height=4.0);

# %% [markdown]
# The exponents above come from full matrices, which fit at these widths. At Llama 3.1 8B's $D = 4096$ the same
# numbers come from Benettin's method through Jacobian-vector products only (`dynamics.lyapunov` with
# `dynamics.jvp_steps`: $k$ vectors pushed through the sublayers, re-orthonormalised by QR, after
# `LYAPUNOV_ITER` rounds of subspace iteration). A cross-check on the first text, from the first perturbed
# layer after the first:

# %% tags=["remove-input"]
for m in MODELS:
    start = int(recovery[m]["sublayer"].iloc[1])
    err = dy.benettin_check(*loaded[m], texts[0], jacobians[m]["trained", "original"], start, k=LYAPUNOV_K,
                            n_iter=LYAPUNOV_ITER, seed=SEED, context=CONTEXT, strip=pipeline.STRIP)
    ch.record(m, "dyn_benettin_max_abs_error", err, figure="beyond", start=start,
              claim=f"top-{LYAPUNOV_K} exponents by JVPs + QR (Benettin, {LYAPUNOV_ITER} subspace rounds) against "
                    "the exact ones from the full product: largest absolute difference")
    c = recovery[m]
    kw = dict(figure="beyond", depths=list(c.index), layers=c["layer"].tolist())
    ch.record(m, "dyn_top_exponent_at_depths", c["λ₁"].tolist(), unit="per sublayer", **kw,
              claim="median top Lyapunov exponent from the input of the paper's five layers to the end")
    ch.record(m, "dyn_relative_exponent_at_depths", c["λ₁ relative"].tolist(), unit="per sublayer", **kw,
              claim="the same minus the RS's own log-norm growth rate (< 0: perturbations shrink relative to the "
                    "state)")
    ch.record(m, "dyn_predicted_noise_recovery", c["predicted recovery"].tolist(), **kw,
              claim="noise recovery predicted by the Jacobians (random-direction gain times the RS norm ratio)")
    ch.record(m, "dyn_measured_noise_recovery", c["measured recovery"].tolist(), **kw,
              claim=f"noise recovery measured as in chapter 5 (scale {NOISE_SCALE:g}, {N_NOISE} texts)")
Markdown("\n".join(f"- **{m}**: largest difference {ch.ledger.entries[m, 'dyn_benettin_max_abs_error'].value:.2g} "
                   "per sublayer" for m in MODELS))

# %% [markdown]
# ## 5. jPCA: rotational planes of the population trajectory
# jPCA treats each text as a condition and the sublayers as time: the cross-text mean at each sublayer is
# removed, units are soft-normalised (range + 5 × the median range, so the RS's few massive units do not make
# the whole PCA), the trajectories are projected on their top `JPCA_K` PCs, and $dX/ds = M X$ is fitted once
# with $M$ unconstrained and once skew-symmetric (pure rotation). The R² ratio (skew / unconstrained) near 1
# means the dynamics in that subspace are mostly rotational. The control permutes the sublayer order
# (`N_SHUFFLES` permutations, the same for every text). A shuffled order has almost no linear dynamics (both
# R² near 0, so its ratio means little): the claim compares what a rotation explains, the skew fit's R² in depth
# order minus its median over the shuffles, with an interval from `N_BOOT` resamples of the texts (each refitted,
# the shuffles included). jPCA runs on all N captured texts, original and token-shuffled, and on the random-init
# references' captures (`N_REFERENCE` texts each).

# %%
jpca = {}
for m in MODELS:
    streams = {("trained", c): pipeline.residual_stream(m, n=N, seed=SEED, condition=c,
                                                        cache_dir=CACHE_DIR)
               for c in CONDITIONS}
    streams |= {(run, "original"): rs for run, rs in ch.reference_streams(m).items()}
    jpca[m] = dy.jpca_runs(streams, k=JPCA_K, n_boot=N_BOOT, n_shuffles=N_SHUFFLES,
                           seed=SEED)
    del streams
jpca_table = dy.jpca_table({(m, *key): v for m in MODELS for key, v in jpca[m].items()})
show_table(jpca_table)

# %% mystnb={"figure": {"caption": "jPCA: the texts' trajectories in each model's fastest rotational plane, original and token-shuffled texts; one row per model ({models}).", "name": "fig-07-jpca-plane"}, "image": {"alt": "Trajectories of the texts in the fastest jPCA plane, original and shuffled texts; one row per model ({models})"}}
grid(dynplots.plot_jpca_plane,
     {(m, c): args for m in MODELS for c, args in dy.jpca_planes(jpca[m]).items()},
     width=4.8, height=4.4);

# %% mystnb={"figure": {"caption": "jPCA's rotational fit (skew-symmetric R\u00b2) against its layer-shuffled control, for the trained model and its references; models {models}.", "name": "fig-07-jpca-control"}, "image": {"alt": "Bar or point plot of the jPCA skew-symmetric fit against its layer-shuffled control for the trained model and references; models {models}"}}
side_by_side(dynplots.plot_jpca_control, {m: dy.jpca_by_reference(jpca[m]) for m in MODELS},
             width=5.5, height=4.0);

# %% tags=["remove-input"]
for m in MODELS:
    for c in CONDITIONS:
        row = jpca_table.loc[(m, "trained", c)]
        ch.record(m, "jpca_r2_ratio", float(row["ratio"]), figure="beyond", condition=c,
                  claim=f"jPCA R² ratio (skew-symmetric / unconstrained) on the top {JPCA_K} PCs")
        ch.record(m, "jpca_r2_ratio_layer_shuffled", float(row["ratio, layer-shuffled (median)"]), figure="beyond",
                  condition=c, claim=f"jPCA R² ratio with the sublayer order shuffled (median of {N_SHUFFLES})")
        ch.record(m, "jpca_top_frequency", float(row["ω of the fastest plane (rad/sublayer)"]), unit="rad/sublayer",
                  figure="beyond", condition=c, claim="angular frequency of jPCA's fastest rotational plane")

# %% [markdown]
# ## 6. The claims, decided
# The registry reads each run's curves (means over its texts) and their `N_BOOT` bootstrap resamples:
#
# | claim | statistic | holds when |
# |---|---|---|
# | early layers rotation-dominated | early − late third: rotation dominance | interval above 0 |
# | early layers non-normal | early − late third: departure of the update $J - I$ | interval above 0 |
# | late layers near-symmetric | late − early third: antisymmetric share of the update | interval below 0 |
# | a low-rank bottleneck | effective rank of the end-to-end product / D | interval below 0.5 |
# | attractor-like lower layers | largest median relative exponent at the first two perturbed layers | interval below 0 |
# | rotational population dynamics | jPCA skew fit's R² − its layer-shuffled median | interval above 0 |
#
# "Learned, not architectural" is the comparison with the random-init references (the same texts; the
# difference's interval pairs the resamples, the seeds resampled too): a claim that holds on the trained model
# and beyond every reference reads "holds, beyond random init and random init (matched scale)"; one that holds
# at random init as well reads "holds, but so does …". The token-shuffled texts are decided on their own.

# %%
decided = []
for m in MODELS:
    tables = dy.verdict_tables(jacobians[m], jpca[m], n_boot=N_BOOT, seed=SEED)
    for c, table in tables.items():
        ch.ledger.claims(table, model=m, condition=c)
        decided.append(table.assign(model=m, condition=c))
show_table(verdicts.summary_table(pd.concat(decided, ignore_index=True)), index=False)

# %% tags=["remove-input"]
seconds = time.perf_counter() - T0
for m in MODELS:
    ch.record(m, "dyn_chapter_seconds", seconds, unit="s", figure="beyond",
              claim="wall time of this chapter (all models, all references)")

# %% [markdown]
# ## Closing note
# The measures' means over the early / middle / late thirds per run (the middle third is not measured), then
# this chapter's ledger: every claim with its interval over texts, the random-init references and the verdict
# line, and the plain values recorded above.

# %%
measures = ["rotation_dominance", "departure_update", "antisymmetric_share_update"]
runs = {(m, *key): r for m in MODELS for key, r in jacobians[m].items()}
show_table(dy.thirds_table(runs, measures))

# %% tags=["remove-input"]
display(show_table(ch.ledger))
Markdown(f"The chapter ran in {seconds / 60:.1f} minutes.")
