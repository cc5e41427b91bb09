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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/04_reduced_trajectories.ipynb)
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
# # 4. Reduced-dimensional trajectories (Figure 3 B–D, Figure 4 A–C)
#
# Section 3.3 of the paper reduces the residual stream (RS) two ways, treating the RS vector of every
# sublayer of every text as one sample. A **compressing autoencoder** (CAE) squeezes each vector through a
# 2-D bottleneck: the mean bottleneck trajectory curves, then straightens over the layers with growing
# distance between successive sublayers (3B, 3C), and the reconstruction's explained variance jumps after
# the early layers, then rises slowly (3D). **PCA** of all sublayer vectors shows a consistent path in the
# first two components (4A) and that later layers need fewer principal components than early ones for the
# same share of their variance (4B, 4C).
#
# We train the CAE and fit the PCA on the original texts and, as a control, on texts whose tokens are
# shuffled, for every model in `MODELS`, and record every statement's number in the ledger once per model;
# the table at the end sets them beside the paper's. Each figure has one row per model (its columns: the
# conditions, or two views of one panel); a figure whose panel already overlays the conditions has one
# column per model instead. Models differ in depth, so the sublayer axes differ in length.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
QUANTIZATION: Optional[str] = None  # None, "8bit" or "4bit" (the Colab profile loads Llama 3.1 8B in 4-bit)
CAE_LAYERS: int = 10             # k: layers of units per half, input and bottleneck included (paper Fig 3A: 10)
CAE_EPOCHS: int = 100            # at most this many epochs (paper §2.7) ...
CAE_PATIENCE: int = 10           # ... early stopping on the validation loss with this patience
CAE_SCALING: str = "standard"    # input scaling fitted on the training texts: "standard", "global" or "none"
CAE_THREADS: Optional[int] = 1   # torch threads for CAE training (1: fastest on a small, busy CPU; None: torch's)
PCA_COMPONENTS: int = 100        # components for the per-sublayer explained variance (paper Fig 4C: 100)
VARIANCE_THRESHOLD: float = 0.9  # "PCs needed for this share of a sublayer's variance"
N_BOOT: int = 1000               # bootstrap resamples of the (test) texts for the CAE claims' intervals
N_BOOT_SLOW: int = 200           # bootstrap resamples of the texts (PCA refitted on each) for the PCA claims
CAE_SEEDS: list[int] = [0, 1, 2]  # CAE training seeds on the original texts (the spread is reported)
N_REFERENCE: int = 200           # texts of each random-init reference
REFERENCE_SEEDS: list[int] = [0, 1, 2]  # random-init seeds (each kind) for the PCA claims
REFERENCE_INITS: list[str] = ["default", "matched"]  # transformers' init; each tensor at the trained scale
CAE_REFERENCE_SEEDS: list[int] = [0]  # random-init seeds with their own CAE (one CAE each)
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
colab.setup(globals(), "04_reduced_trajectories")

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown

from transformer_dynamics import cae_cache, chapter, metrics, reduce, robustness, verdicts
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import reduce as plot_reduce
from transformer_dynamics.plots.style import grid

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ch = chapter.setup("04_reduced_trajectories", models=MODELS, n=N, seed=SEED,
                   cache_dir=CACHE_DIR, ledger_dir=LEDGER_DIR, quantization=QUANTIZATION,
                   reference_n=N_REFERENCE, reference_seeds=REFERENCE_SEEDS,
                   reference_inits=REFERENCE_INITS, cae_layers=CAE_LAYERS,
                   cae_epochs=CAE_EPOCHS,
                   cae_patience=CAE_PATIENCE, cae_scaling=CAE_SCALING, cae_seeds=CAE_SEEDS,
                   pca_components=PCA_COMPONENTS, n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW)
rs, RUNS, CONDITIONS = ch.rs, ch.runs, ch.conditions
Markdown(ch.summary() + f"\n\nThe CAEs train on the {DEVICE}.")

# %% [markdown]
# ## Training the compressing autoencoder (Figure 3A)
# `reduce.fit_cae` follows §2.7: encoder widths in the geometric progression $d_i = d_{in} r^i$,
# $r = (d_{bottle}/d_{in})^{1/(k-1)}$ down to a 2-D bottleneck, a mirrored decoder, Linear → LayerNorm →
# ReLU except at the bottleneck and the output, Adam (lr $10^{-3}$) on the MSE, early stopping on a
# validation split. Every sublayer vector is a training sample; texts are split 75 / 10 / 15 % into
# train / validation / test (all sublayers of a text on one side; the paper used 85k / 15k texts). Inputs are
# standardised per feature with statistics of the training texts (one map for every sublayer, so the
# bottleneck trajectory remains the image of the RS trajectory; this keeps the few "massive" units from
# owning the loss). Reconstructions and explained variance are in raw RS units. Each model gets its own CAE
# (its width sets the encoder's).
#
# `cae_cache.trained_caes` trains each CAE once (those missing side by side, one per CPU core) and caches it
# next to the activations, keyed by the capture and every training argument; a rerun (say after a prose
# change) loads it. The training time shown is that of the run that trained it. On the original texts one CAE
# per training seed in `CAE_SEEDS` (the figures show the first; the claims pool them and report their spread);
# on the shuffled control the first seed; and one CAE per random-init reference (`REFERENCE_INITS` x
# `CAE_REFERENCE_SEEDS`, on `N_REFERENCE` texts).

# %%
SEEDED = [(m, c, s) for m, c in RUNS
          for s in (CAE_SEEDS if c == CONDITIONS[0] else CAE_SEEDS[:1])]
CAE_REFS = [(m, CONDITIONS[0], f"{kind}:{s}") for m in ch.models for kind in REFERENCE_INITS
            for s in CAE_REFERENCE_SEEDS]
trained = cae_cache.trained_caes(  # those not cached yet train side by side, one per core
    SEEDED + CAE_REFS, n=N, seed=SEED, cache_dir=CACHE_DIR, quantization=QUANTIZATION,
    k=CAE_LAYERS, epochs=CAE_EPOCHS, patience=CAE_PATIENCE, scaling=CAE_SCALING,
    device=DEVICE, num_threads=CAE_THREADS,
    per_run={**{r: {"cae_seed": r[2]} for r in SEEDED},
             **{r: {"n": ch.reference_n, "init": r[2].split(":")[0],
                    "init_seed": int(r[2].split(":")[1])} for r in CAE_REFS}})
cae = {(m, c): trained[m, c, CAE_SEEDS[0]] for m, c in RUNS}
for m, c in RUNS:
    if c == CONDITIONS[0]:
        print(f"{m}: encoder widths", reduce.geometric_widths(ch.d_model[m], 2, CAE_LAYERS))
    r = cae[m, c]
    print(f"  {c}: {len(r.history['train_loss'])} epochs (best {r.best_epoch}), "
          f"{r.train_time_s:.0f} s, test MSE (scaled) {r.test_loss:.4f}, "
          f"test EV {r.test_ev:.3f}")

# %% mystnb={"figure": {"caption": "Training and validation loss of the compressing autoencoder per epoch, original texts and the shuffled-token control; one panel per model ({models}).", "name": "fig-04-3a-training"}, "image": {"alt": "Line plots of the autoencoder's training and validation loss against epoch for original and shuffled-token texts, one panel per model: {models}"}}
grid(plot_reduce.plot_training_history,
     {("", m): {c: cae[m, c].history for c in CONDITIONS} for m in ch.models}, height=3.5);

# %% tags=["remove-input"]
for m, c in RUNS:
    r = cae[m, c]
    ch.record(m, "cae_train_time_s", r.train_time_s, condition=c, unit="s", figure="3",
                     claim=f"CAE training wall time ({c}, {DEVICE}, {len(r.history['train_loss'])} "
                           "epochs)")
    ch.record(m, "cae_test_ev", r.test_ev, condition=c, figure="3D",
                     claim=f"CAE explained variance of all test vectors pooled ({c})")
    ch.record(m, "cae_best_epoch", r.best_epoch, condition=c, figure="3",
                     claim=f"epoch with the lowest validation loss (0-based, {c})")

# %% [markdown]
# ## Figure 3B: the mean bottleneck trajectory
# Each test text's sublayer vectors are encoded to 2-D; the panels show the mean over test texts, points
# coloured by sublayer, within-layer steps (attn → mlp) solid green, cross-layer steps (mlp → next attn)
# dashed blue. "Straightening" is measured by the angle between successive steps of the mean trajectory.

# %% mystnb={"figure": {"caption": "Paper's Fig. 3B: the mean trajectory over test texts in the autoencoder's 2-D bottleneck, points coloured by sublayer, within-layer steps solid green, cross-layer steps dashed blue; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-04-3b"}, "image": {"alt": "Scatter-and-line plots of the mean bottleneck trajectory in two dimensions coloured by sublayer, Fig 3B; one row per model ({models}); columns: original texts, shuffled-token control"}}
traj = {(m, c): reduce.bottleneck_trajectories(cae[m, c], rs[m, c][cae[m, c].test_idx])
        for m, c in RUNS}
grid(plot_reduce.plot_bottleneck_trajectory, traj);

# %% tags=["remove-input"]
for m, c in RUNS:
    ang = metrics.turning_angle(traj[m, c].mean(0))  # (n_sublayers - 2,)
    ch.record(m, "cae_turning_angle_first_last_third",
              metrics.first_last_third(ang, n=ch.n_sublayers[m], trim=2), unit="degrees",
              figure="3B", condition=c,
              claim="mean turning angle of the mean trajectory, first vs last third of sublayers")

# %% [markdown]
# ## Figure 3C: distance between successive sublayers in the bottleneck

# %% mystnb={"figure": {"caption": "Paper's Fig. 3C: distance between successive sublayers in the bottleneck, original texts and the shuffled-token control; one panel per model ({models}).", "name": "fig-04-3c"}, "image": {"alt": "Line plots of the distance between successive sublayers in the autoencoder's bottleneck against transition, Fig 3C, original and shuffled-token texts, one panel per model: {models}"}}
dist = {(m, c): metrics.velocity(traj[m, c]) for m, c in RUNS}
grid(plot_reduce.plot_successive_distance,
     {("", m): {c: dist[m, c] for c in CONDITIONS} for m in ch.models},
     title="CAE: distance between successive sublayers", height=3.8);

# %% [markdown]
# ## Figure 3D: explained variance per sublayer on the test texts
# For each sublayer $s$: $EV_s = 1 - \sum_i \lVert x_{is} - \hat x_{is}\rVert^2 / \sum_i \lVert x_{is} -
# \bar x_s\rVert^2$, the share of that sublayer's variance across test texts (about its own mean) that the
# CAE's reconstruction keeps (`reduce.explained_variance_per_sublayer_cae`; the same definition as the PCA
# panel 4C below). Where texts barely differ at a sublayer (WikiText rows all end with the same newline, so
# the first sublayers can hold almost the same vector for every text) this is low or negative, and undefined
# (gap) where there is no variance at all; values below −1 sit as triangles on the bottom edge. The right
# column measures against the mean of all vectors instead, so a sublayer's offset from it counts too.

# %% mystnb={"figure": {"caption": "Paper's Fig. 3D: the autoencoder's explained variance per sublayer on the test texts, about each sublayer's mean (left) and about the global mean (right); one row per model ({models}), original and shuffled-token texts in each panel.", "name": "fig-04-3d"}, "image": {"alt": "Line plots of the autoencoder's test-set explained variance against sublayer, Fig 3D; columns: two centrings; one row per model: {models}; original and shuffled-token lines"}}
CENTERS = {"sublayer": "about each sublayer's mean", "global": "about the global mean"}
ev_cae = {(m, c, k): reduce.explained_variance_per_sublayer_cae(
              cae[m, c], rs[m, c][cae[m, c].test_idx], center=k)
          for m, c in RUNS for k in CENTERS}
grid(plot_reduce.plot_cae_explained_variance,
     {(m, name): {c: ev_cae[m, c, k] for c in CONDITIONS}
      for m in ch.models for k, name in CENTERS.items()},
     row_kwargs=ch.row_labels, ylim=(-1, 1.02), title="CAE: test-set EV", height=3.8);

# %% tags=["remove-input"]
for m, c in RUNS:
    ev, lab = ev_cae[m, c, "sublayer"], ch.labels[m]
    jump_at = int(np.nanargmax(np.diff(ev)))
    first = int(np.flatnonzero(np.isfinite(ev))[0])  # sublayer 0: no variance if every text ends alike
    ch.record(m, "cae_ev_first_last", [ev[first], ev[first + 1], ev[-1]], figure="3D", condition=c,
              first_sublayer=first,
              claim=f"CAE explained variance at the first two sublayers with variance (from {lab[first]}) and "
                    "the last")
    ch.record(m, "cae_ev_below_zero", int(np.sum(ev < 0)), figure="3D", unit="sublayers", condition=c,
              claim=f"sublayers whose CAE explained variance is negative (of {ch.n_sublayers[m]})")
    ev_global = ev_cae[m, c, "global"]
    ch.record(m, "cae_ev_global_first_last", [ev_global[0], ev_global[-1]], figure="3D", condition=c,
              claim="CAE explained variance about the global mean, first and last sublayer")
    ch.record(m, "cae_ev_largest_jump_at", jump_at, figure="3D", unit="transition", condition=c,
              claim=f"transition t (sublayer t -> t+1) with the largest rise in explained variance (first "
                    f"third: t < {len(metrics.thirds(ch.n_sublayers[m])[0])})")

# %% [markdown]
# ## Figure 4A: PCA trajectories
# PCA of all $N \cdot 2L$ sublayer vectors of a model (§2.8, `reduce.PCA`: SVD / covariance eigendecomposition
# in float64, checked against scikit-learn in the tests). Thin grey lines: every text's trajectory in the
# first two components; coloured: the mean per sublayer.

# %% mystnb={"figure": {"caption": "Paper's Fig. 4A: every text's trajectory in the first two principal components (grey) and the per-sublayer mean coloured by depth; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-04-4a"}, "image": {"alt": "Plots of PCA trajectories in the first two components, each text grey and the mean coloured by sublayer, Fig 4A; one row per model ({models}); columns: original texts, shuffled-token control"}}
# components: at most the vectors (texts x sublayers) and the units
k_pca = {m: min(PCA_COMPONENTS, len(rs[m, "original"]) * ch.n_sublayers[m], ch.d_model[m])
         for m in ch.models}
pca = {(m, c): reduce.PCA(n_components=k_pca[m]).fit(rs[m, c]) for m, c in RUNS}
ptraj = {(m, c): reduce.pca_trajectories(pca[m, c], rs[m, c], n_components=2)
         for m, c in RUNS}
grid(plot_reduce.plot_pca_trajectories, ptraj);

# %% tags=["remove-input"]
for m, c in RUNS:
    ch.record(m, "pca_ev_two_components", pca[m, c].explained_variance_ratio_[:2].sum(), condition=c,
                     figure="4A",
                     claim=f"share of the total variance in the first two principal components ({c})")

# %% [markdown]
# ## Figure 4B: cumulative explained variance over components

# %% mystnb={"figure": {"caption": "Paper's Fig. 4B: cumulative explained variance over principal components, original texts and the shuffled-token control; one panel per model ({models}).", "name": "fig-04-4b"}, "image": {"alt": "Line plots of cumulative explained variance against number of principal components, Fig 4B, original and shuffled-token texts, one panel per model: {models}"}}
grid(plot_reduce.plot_cumulative_explained_variance,
     {("", m): {c: pca[m, c].explained_variance_ratio_ for c in CONDITIONS}
      for m in ch.models},
     threshold=VARIANCE_THRESHOLD, height=3.5);

# %% tags=["remove-input"]
for m, c in RUNS:
    k_max = pca[m, c].n_components_
    k = reduce.components_for_variance(reduce.cumulative_explained_variance(pca[m, c]),
                                       VARIANCE_THRESHOLD, not_reached=k_max + 1)
    ch.record(m, f"pca_components_for_{int(VARIANCE_THRESHOLD * 100)}", k, condition=c, figure="4B",
                     claim=f"principal components for {VARIANCE_THRESHOLD:.0%} of the total "
                                    f"variance ({c}; {k_max + 1} means more than the {k_max} kept)")

# %% [markdown]
# ## Figure 4C: explained variance per sublayer with the first components
# Each sublayer reconstructed from the first `PCA_COMPONENTS` global components of its model (same definition
# of explained variance as 3D). Below it, the number of global components each sublayer needs for
# `VARIANCE_THRESHOLD` of its variance, and, as a check that does not depend on the global fit (which the
# large late-layer vectors dominate), the same count from each sublayer's **own** PCA. The ledger holds both
# counts at 50 % and at `VARIANCE_THRESHOLD`: the paper's statement is about the global components, and the
# own-PCA count says whether the late sublayers are intrinsically lower-dimensional or merely closer to the
# directions that the global fit picks.

# %% mystnb={"figure": {"caption": "Paper's Fig. 4C: explained variance per sublayer from the global principal components, original texts and the shuffled-token control; one panel per model ({models}).", "name": "fig-04-4c"}, "image": {"alt": "Line plots of explained variance per sublayer from the global PCA against sublayer, Fig 4C, original and shuffled-token texts, one panel per model: {models}"}}
curve = {(m, c): reduce.explained_variance_curve_per_sublayer(pca[m, c], rs[m, c])
         for m, c in RUNS}
k_use = {m: pca[m, CONDITIONS[0]].n_components_ for m in ch.models}
grid(plot_reduce.plot_pca_explained_variance_per_sublayer,
     {("", m): {c: curve[m, c][:, -1] for c in CONDITIONS} for m in ch.models},
     col_kwargs={m: {"n_components": k_use[m], "labels": ch.labels[m]} for m in ch.models},
     ylim=(-1, 1.02), height=3.8);

# %% mystnb={"figure": {"caption": "Principal components each sublayer needs for 50 % and for the chapter's threshold of its variance: from the global PCA (left) and from each sublayer's own PCA (right); one row per model ({models}).", "name": "fig-04-4c-components"}, "image": {"alt": "Step plots of the number of principal components needed per sublayer at two variance thresholds; columns: global PCA and each sublayer's own PCA; one row per model: {models}"}}
thresholds = sorted({0.5, VARIANCE_THRESHOLD})
PCA_KINDS = {"global": "global PCA", "own": "each sublayer's own PCA"}
own = {(m, c): np.cumsum(reduce.sublayer_explained_variance_ratio(rs[m, c]), axis=1)
       for m, c in RUNS}
n_pcs = {(m, kind, th, c): reduce.components_for_variance(cv[m, c], th, not_reached=np.inf)
         for m in ch.models for kind, cv in (("global", curve), ("own", own))
         for th in thresholds for c in CONDITIONS}
grid(plot_reduce.plot_components_for_variance,
     {(m, name): ({f"{c}, {th:.0%}": n_pcs[m, kind, th, c]
                   for c in CONDITIONS for th in thresholds},
                  k_use[m] if kind == "global" else None)
      for m in ch.models for kind, name in PCA_KINDS.items()},
     row_kwargs=ch.row_labels, threshold=None, title="PCs per sublayer", height=3.8);

# %% tags=["remove-input"]
for m, c in RUNS:
    ch.record(m, "pca_ev_first_last_third", metrics.first_last_third(curve[m, c][:, -1]), condition=c,
                     figure="4C",
                     claim=f"mean per-sublayer explained variance with {k_use[m]} PCs, first vs last "
                           f"third ({c})")
    for kind, th in ((kind, th) for kind in PCA_KINDS for th in thresholds):
        # not reached with the kept components counts as one more than kept (a lower bound, so medians stay
        # finite); NaN (a sublayer without variance) is left out
        kept = (curve if kind == "global" else own)[m, c].shape[1]
        n_pc = np.where(np.isposinf(n_pcs[m, kind, th, c]), kept + 1, n_pcs[m, kind, th, c])
        which = "the global" if kind == "global" else "each sublayer's own"
        ch.record(m, f"pca_{kind}_pcs_for_{int(th * 100)}_first_last_third",
                  metrics.first_last_third(n_pc, "median"), figure="4C", condition=c,
                  claim=f"median PCs for {th:.0%} of a sublayer's variance, first vs last third "
                        f"of sublayers ({which} PCA; "
                        f"{k_use[m] + 1 if kind == 'global' else 'one more than all'}: not reached "
                        f"with {k_use[m] if kind == 'global' else 'all'} PCs)")

# %% [markdown]
# ## The paper's statements, decided
# The autoencoder's four sentences (`cae_straighten`, `cae_distance_increases`, `cae_ev_increases`,
# `cae_ev_early_jump`) and the PCA's two (`pcs_fewer_later`, `low_dimensional`) are claims of the registry
# (`transformer_dynamics.claims`), each an effect size (a trend: the mean over the last third of the sublayers
# minus the first third; the "jump": the early rise per step minus the later one). The autoencoder's are
# resampled over its test texts (`N_BOOT` resamples; the mean trajectory, the distances and the explained
# variance recomputed on each) and pooled over the `CAE_SEEDS` training seeds (the seeds' own values are
# listed); the PCA's over all texts (the PCA refitted on each of `N_BOOT_SLOW` resamples). Each is set against
# the same architecture at random initialisation (the PCA's also against the residual-accumulation null; the
# autoencoder's against one CAE per random-init kind): the line says whether the trained model lies beyond
# them. Controls (shuffled tokens) are decided on their own.

# %% tags=["remove-input"]
cae_tables = []
for m, c in RUNS:
    seeds = [s for (mm, cc, s) in SEEDED if (mm, cc) == (m, c)]
    refs = ({run: (trained[m, c, run], ch.reference_streams(m)[run][trained[m, c, run].test_idx])
             for (mm, cc, run) in CAE_REFS if mm == m} if c == CONDITIONS[0] else {})
    table, _ = robustness.cae_verdicts(
        {s: (trained[m, c, s], rs[m, c][trained[m, c, s].test_idx]) for s in seeds}, refs,
        n_boot=N_BOOT, seed=SEED)
    ch.ledger.claims(table, model=m, condition=c)
    cae_tables.append(table.assign(model=m, condition=c))
pca_table = ch.decide(n_boot=N_BOOT_SLOW, n_boot_slow=N_BOOT_SLOW, variance=VARIANCE_THRESHOLD,
                      pca_components=PCA_COMPONENTS)
show_table(verdicts.summary_table(pd.concat(cae_tables + [pca_table], ignore_index=True)), index=False)

# %% [markdown]
# ## The paper's statements next to ours
# Every row is a ledger entry written above, one row per model, the rows of one statement together
# (original texts unless the claim ends in "[shuffled-token control]"). The last column comes from the
# claim registry (✓ holds, ✗ fails, ? undecided); – where the row is a plain value.

# %% tags=["remove-input"]
show_table(ch.ledger, paper=True)

# %% tags=["remove-input"]
show_table(ch.ledger, paper=False)
