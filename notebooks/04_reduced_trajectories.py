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
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] tags=["remove-cell"]
# **Running this in Google Colab?** The notebook asks for a GPU runtime (if Colab opened a CPU one: *Runtime >
# Change runtime type > GPU*). The next code cells install the package and, with `PROFILE = "colab"`, take the
# Colab profile's values (chapters 1–5: the paper's Llama 3.1 8B in 4-bit); `PROFILE = None` keeps your own.
# Llama 3.1 8B is a **gated** model: accept its licence at https://huggingface.co/meta-llama/Llama-3.1-8B, create
# a read token at https://huggingface.co/settings/tokens and add it as a Colab **secret named `HF_TOKEN`** (key
# icon in the left bar, notebook access on). Without it the setup stops and says so. `CACHE_DIR = "drive"` keeps
# the model download and the captures on your Google Drive, shared by every chapter.

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
CAE_THREADS: Optional[int] = 1   # torch CPU threads for CAE training (1: fastest on a small, busy CPU; None: torch's default)
PCA_COMPONENTS: int = 100        # components for the per-sublayer explained variance (paper Fig 4C: 100)
VARIANCE_THRESHOLD: float = 0.9  # "PCs needed for this share of a sublayer's variance"
N_BOOT_SLOW: int = 10            # bootstrap resamples of the texts (PCA refitted on each) for the PCA claim
PROFILE: Optional[str] = "colab" # in Colab: this run profile replaces the values above (None: keep yours)

# %% tags=["remove-cell"]
# Lists given as text become lists; in Colab: install the package (pinned), apply PROFILE, HF_TOKEN, CACHE_DIR.
import os, subprocess, sys  # noqa: E401
if "google.colab" in sys.modules:
    SPEC = os.environ.get("TRANSFORMER_DYNAMICS_SPEC", "transformer-dynamics[quant,hub] @ git+https://github.com/transformer-dynamics/transformer-dynamics@v0.1.0")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", SPEC], check=True)
from transformer_dynamics import colab
colab.setup(globals(), "04_reduced_trajectories")

# %%
import numpy as np
import torch
from IPython.display import Markdown

from transformer_dynamics import chapter, metrics, pipeline, reduce, robustness
from transformer_dynamics.ledger import show_table
from transformer_dynamics.bootstrap import trend_test
from transformer_dynamics.plots import reduce as plot_reduce
from transformer_dynamics.plots.style import grid

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ch = chapter.setup("04_reduced_trajectories", models=MODELS, n=N, seed=SEED,
                   cache_dir=CACHE_DIR, ledger_dir=LEDGER_DIR, quantization=QUANTIZATION,
                   cae_layers=CAE_LAYERS, cae_epochs=CAE_EPOCHS, cae_patience=CAE_PATIENCE,
                   cae_scaling=CAE_SCALING, pca_components=PCA_COMPONENTS)
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
# `pipeline.trained_caes` trains each CAE once (those missing side by side, one per CPU core) and caches it
# next to the activations, keyed by the capture and every training argument; a rerun (say after a prose
# change) loads it. The training time shown is that of the run that trained it.

# %%
cae = pipeline.trained_caes(  # those not cached yet train side by side, one per CPU core
    RUNS, n=N, seed=SEED, cache_dir=CACHE_DIR, quantization=QUANTIZATION, k=CAE_LAYERS,
    epochs=CAE_EPOCHS, patience=CAE_PATIENCE, scaling=CAE_SCALING, device=DEVICE,
    num_threads=CAE_THREADS)
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
    ch.ledger.record(ch.key("cae_train_time_s", c), r.train_time_s, unit="s", figure="3", model=m,
                     claim=f"CAE training wall time ({c}, {DEVICE}, {len(r.history['train_loss'])} "
                           "epochs)")
    ch.ledger.record(ch.key("cae_test_ev", c), r.test_ev, figure="3D", model=m,
                     claim=f"CAE explained variance of all test vectors pooled ({c})")
    ch.ledger.record(ch.key("cae_best_epoch", c), r.best_epoch, figure="3", model=m,
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
    rho, p = trend_test(ang, seed=SEED)
    ch.ledger.claim("cae_straighten", rho, p=p, model=m, condition=c)
    ch.ledger.record(ch.key("cae_turning_angle_first_last_third", c),
                     metrics.first_last_third(ang, n=ch.n_sublayers[m], trim=2), unit="degrees",
                     figure="3B", model=m,
                     claim=f"mean turning angle of the mean trajectory, first vs last third of "
                           f"sublayers ({c})")

# %% [markdown]
# ## Figure 3C: distance between successive sublayers in the bottleneck

# %% mystnb={"figure": {"caption": "Paper's Fig. 3C: distance between successive sublayers in the bottleneck, original texts and the shuffled-token control; one panel per model ({models}).", "name": "fig-04-3c"}, "image": {"alt": "Line plots of the distance between successive sublayers in the autoencoder's bottleneck against transition, Fig 3C, original and shuffled-token texts, one panel per model: {models}"}}
dist = {(m, c): metrics.velocity(traj[m, c]) for m, c in RUNS}
grid(plot_reduce.plot_successive_distance,
     {("", m): {c: dist[m, c] for c in CONDITIONS} for m in ch.models},
     title="CAE: distance between successive sublayers", height=3.8);

# %% tags=["remove-input"]
for m, c in RUNS:
    rho, p = trend_test(dist[m, c].mean(0), seed=SEED)
    ch.ledger.claim("cae_distance_increases", rho, p=p, model=m, condition=c)

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
     row_kwargs=ch.per_model, ylim=(-1, 1.02), title="CAE: test-set EV", height=3.8);

# %% tags=["remove-input"]
for m, c in RUNS:
    ev, lab = ev_cae[m, c, "sublayer"], ch.labels[m]
    jump_at = int(np.nanargmax(np.diff(ev)))
    first = int(np.flatnonzero(np.isfinite(ev))[0])  # sublayer 0: no variance if every text ends alike
    ch.ledger.record(ch.key("cae_ev_first_last", c), [ev[first], ev[first + 1], ev[-1]], figure="3D",
                     first_sublayer=first, model=m,
                     claim=f"CAE explained variance at the first two sublayers with variance (from "
                           f"{lab[first]}) and the last ({c})")
    ch.ledger.record(ch.key("cae_ev_below_zero", c), int(np.sum(ev < 0)), figure="3D", unit="sublayers",
                     model=m, claim=f"sublayers whose CAE explained variance is negative ({c}; of "
                                    f"{ch.n_sublayers[m]})")
    ev_global = ev_cae[m, c, "global"]
    ch.ledger.record(ch.key("cae_ev_global_first_last", c), [ev_global[0], ev_global[-1]], figure="3D",
                     model=m, claim=f"CAE explained variance about the global mean, first and last "
                                    f"sublayer ({c})")
    rho, p = trend_test(ev, seed=SEED)
    ch.ledger.claim("cae_ev_increases", rho, p=p, model=m, condition=c)
    ch.ledger.record(ch.key("cae_ev_largest_jump_at", c), jump_at, figure="3D", unit="transition",
                     model=m, claim=f"transition t (sublayer t -> t+1) with the largest rise in explained "
                                    f"variance ({c}; first third: t < "
                                    f"{len(metrics.thirds(ch.n_sublayers[m])[0])})")
    ch.ledger.record(ch.key("cae_ev_steepest_third", c), metrics.steepest_segment(ev) + 1, figure="3D",
                     unit="third", model=m,
                     claim=f"third of the sublayers with the steepest mean rise in explained variance "
                           f"({c})")

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
    ch.ledger.record(ch.key("pca_ev_two_components", c), pca[m, c].explained_variance_ratio_[:2].sum(),
                     figure="4A", model=m,
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
    ch.ledger.record(ch.key(f"pca_components_for_{int(VARIANCE_THRESHOLD * 100)}", c), k, figure="4B",
                     model=m, claim=f"principal components for {VARIANCE_THRESHOLD:.0%} of the total "
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
     row_kwargs=ch.per_model, threshold=None, title="PCs per sublayer", height=3.8);

# %% tags=["remove-input"]
for m, c in RUNS:
    ch.ledger.record(ch.key("pca_ev_first_last_third", c), metrics.first_last_third(curve[m, c][:, -1]),
                     figure="4C", model=m,
                     claim=f"mean per-sublayer explained variance with {k_use[m]} PCs, first vs last "
                           f"third ({c})")
    for kind, th in ((kind, th) for kind in PCA_KINDS for th in thresholds):
        # not reached with the kept components counts as one more than kept (a lower bound, so medians stay
        # finite); NaN (a sublayer without variance) is left out
        kept = (curve if kind == "global" else own)[m, c].shape[1]
        n_pc = np.where(np.isposinf(n_pcs[m, kind, th, c]), kept + 1, n_pcs[m, kind, th, c])
        which = "the global" if kind == "global" else "each sublayer's own"
        ch.ledger.record(ch.key(f"pca_{kind}_pcs_for_{int(th * 100)}_first_last_third", c),
                         metrics.first_last_third(n_pc, "median"), figure="4C", model=m,
                         claim=f"median PCs for {th:.0%} of a sublayer's variance, first vs last third "
                               f"of sublayers ({which} PCA, {c}; "
                               f"{k_use[m] + 1 if kind == 'global' else 'one more than all'}: not reached "
                               f"with {k_use[m] if kind == 'global' else 'all'} PCs)")

# %% [markdown]
# The paper's sentence "later layers requiring fewer principal components" is the registry's claim
# `pcs_fewer_later`: the mean over the last third of the sublayers minus the mean over the first third of
# the global components a sublayer needs for `VARIANCE_THRESHOLD` of its variance ("not reached" counted
# as one more than kept), with a bootstrap interval over texts (the PCA refitted on `N_BOOT_SLOW`
# resamples; `robustness.claim_evidence`).

# %% tags=["remove-input"]
evidence = robustness.claim_evidence_runs(  # the runs side by side, one process per core
    {(m, c): rs[m, c] for m, c in RUNS}, names=("model", "condition"), groups=("pca",),
    n_boot=N_BOOT_SLOW, n_boot_slow=N_BOOT_SLOW, seed=SEED, variance=VARIANCE_THRESHOLD,
    pca_components=PCA_COMPONENTS)
for (m, c), ev in evidence.groupby(["model", "condition"], sort=False):
    ch.ledger.claim_table(ev, model=m, condition=c)

# %% [markdown]
# ## The paper's statements next to ours
# Every row is a ledger entry written above, one row per model, the rows of one statement together
# (original texts unless the claim ends in "[shuffled-token control]"). The last column comes from the
# claim registry (✓ holds, ✗ fails, ? undecided); – where the row is a plain value.

# %% tags=["remove-input"]
show_table(ch.ledger, paper=True)

# %% tags=["remove-input"]
show_table(ch.ledger, paper=False)
