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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/05_perturbation_attractors.ipynb)
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
# # 5. Perturbing the residual stream: attractor-like dynamics? (Figure 4 D)
#
# Section 3.4 of the paper asks whether the residual stream (RS) returns to its usual path when pushed off
# it. It "teleports" the RS of a fixed prompt ("I'm sorry, Dave. I'm afraid I can't do that.") at its last
# token to each point of a 10 × 10 grid in the plane of the first two principal components, at the input of
# layers 0, 7, 15, 23 and 31 of Llama 3.1 8B, and follows the next 12 sublayers (Fig. 4D). Its claims:
# perturbations at layer 0 give highly variable dynamics ending far from the control, at the penultimate
# layer even more so; mid-layer perturbations recover best, with lower variance and lower mean squared
# error (MSE) to the control trajectory; and, in the discussion, self-correction is most robust in the lower
# layers.
#
# One prompt is one sample: the paper's grid points all share it, so they cannot tell a property of the model
# from one of the prompt. We repeat the teleport over `N_PROMPTS` prompts (the paper's, then WikiText rows), for
# every model in `MODELS` (the paper's layers mapped by depth fraction and named by depth position: first, early,
# middle, late, last), and decide each claim from its uncertainty over prompts, against the same experiment on
# the same architecture at random initialisation. Then we ask the question the paper leaves to future work,
# without the 2-D projection: how do runs recover from **noise** added to the RS, and from **swapping** in
# another text's RS vector?
#
# Every perturbed run reuses its prompt's clean keys and values: only the last token is edited, so each grid
# point costs one token's forward through the layers it needs (`perturb.extend`; equal to rerunning the edited
# prompt to float round-off, tested).

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts for the PCA fit
SEED: int = 0                    # random seed: which texts are sampled, the bootstrap
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
QUANTIZATION: Optional[str] = None  # None, "8bit" or "4bit" (the Colab profile loads Llama 3.1 8B in 4-bit)
GRID_N: int = 10                 # n x n teleport grid (paper §2.8: typically 10)
GRID_PERCENTILES: list[float] = [1, 99]  # grid range [r_min, r_max]: these percentiles of the projected trajectories
LAYERS: Optional[list[int]] = None  # layers of the paper's 32-layer Llama, mapped by depth; None: 0, 7, 15, 23, 31
N_FOLLOWING: int = 12            # sublayers after the teleport drawn in Fig. 4D (paper: 12)
WINDOW: Optional[int] = None     # sublayers after the teleport the claims read, the same for every layer (None: as many as the last layer has)
PROMPT: str = "I'm sorry, Dave. I'm afraid I can't do that."  # the paper's prompt (Fig. 4D), the first of the prompts
N_PROMPTS: int = 32              # prompts, the sampling unit of the teleport claims: PROMPT and WikiText rows
N_PROMPTS_REFERENCE: int = 16    # prompts of each random-init reference
N_BOOT: int = 1000               # bootstrap resamples of the prompts
N_REFERENCE: int = 200           # texts of each random-init reference's stream (its PCA plane and grid)
REFERENCE_SEEDS: list[int] = [0, 1, 2]  # random-init seeds
REFERENCE_INITS: list[str] = ["default", "matched"]  # random-init kinds (transformer_dynamics.random_init)
NOISE_SCALES: list[float] = [0.1, 0.5, 1.0]  # noise norm / RS norm at the perturbed point
N_SWAP: int = 32                 # text pairs for noise injection and activation swap
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
colab.setup(globals(), "05_perturbation_attractors")

# %%
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown

from transformer_dynamics import chapter, claims, perturb, pipeline, robustness, verdicts
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import perturb as plots

PAPER_LAYERS = perturb.PAPER_LAYERS if LAYERS is None else sorted({int(l) for l in LAYERS})
# the ledger only: each model's RS is read in turn below (one array in memory at a time)
ch = chapter.setup("05_perturbation_attractors", models=MODELS, n=N, seed=SEED,
                   cache_dir=CACHE_DIR, ledger_dir=LEDGER_DIR, capture=False,
                   reference_n=N_REFERENCE, reference_seeds=REFERENCE_SEEDS,
                   reference_inits=REFERENCE_INITS, grid_n=GRID_N, n_following=N_FOLLOWING,
                   window=WINDOW, n_prompts=N_PROMPTS, n_boot=N_BOOT, n_swap=N_SWAP,
                   n_prompts_reference=N_PROMPTS_REFERENCE, paper_layers=PAPER_LAYERS)
MODELS = ch.models
loaded, layers, names = {}, {}, {}
for m in MODELS:
    loaded[m] = pipeline.load_model(m, quantization=QUANTIZATION, cache_dir=CACHE_DIR)
    n_layers = loaded[m][0].n_layers  # loaded[m]: (its ResidualModel, tokenizer)
    layers[m] = perturb.paper_layers(n_layers, PAPER_LAYERS)
    names[m] = perturb.depth_names(layers[m])
    print(f"{m}: {n_layers} layers; teleport layers {dict(zip(names[m], layers[m]))}")
texts = pipeline.load_texts(n=max(N, 2 * N_SWAP, N_PROMPTS), seed=SEED)
prompts = [PROMPT, *texts[: N_PROMPTS - 1]]

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("teleport_layers", layers[m], figure="4D", model=m, names=names[m],
                     claim=f"perturbed layers: the paper's {list(PAPER_LAYERS)} of "
                           f"{perturb.PAPER_N_LAYERS} mapped by depth fraction")

# %% [markdown]
# ## The runs: prompts, planes, grids and an equal window
# As in §2.8 the PCA is fitted, per model, on every sublayer vector of `N` texts (the array flattened to
# `(N · 2L, d_model)`); a grid point $\mathbf z$ becomes $\mathbf x = \mathbf z V[:, :2]^\top + \boldsymbol\mu$
# (first two components only). The paper does not give $[r_{min}, r_{max}]$; we take
# the `GRID_PERCENTILES` of the projected trajectories (both coordinates pooled: a square grid).
#
# The prompts are the paper's and `N_PROMPTS − 1` WikiText rows (stripped, as every capture of the book), each
# teleported over the whole grid at every teleport layer. Each random-init reference (`REFERENCE_INITS` ×
# `REFERENCE_SEEDS`, `transformer_dynamics.random_init`) gets its own plane and grid from its own stream of
# `N_REFERENCE` texts, and runs the first `N_PROMPTS_REFERENCE` prompts (fewer than the trained model: it is a
# yardstick, not the measurement).
#
# **An equal window.** The paper follows 12 sublayers, but its last layer has only its own two sublayers left
# before the model ends; comparing a 12-sublayer recovery with a 1-sublayer one says more about the windows than
# about the layers. Every claim below therefore reads the same number of points after the teleport for every
# layer: as many as the deepest teleport layer has, counting the stack's output (the RS after the last layer) as a
# point. With the paper's layers that is **2: one whole decoder layer, its attention and its MLP** (`WINDOW`
# overrides it, within that bound). Figure 4 D below still draws the paper's 12.

# %%
sweeps = {}  # model -> {run: TeleportSweep}, runs "trained", "default:0", ..., "matched:2"
for m in MODELS:
    rs = pipeline.residual_stream(m, n=N, seed=SEED, cache_dir=CACHE_DIR,
                                  quantization=QUANTIZATION)
    sweeps[m] = perturb.teleport_runs(
        *loaded[m], {"trained": rs, **ch.reference_streams(m)}, prompts=prompts,
        layers=layers[m], grid_n=GRID_N, percentiles=GRID_PERCENTILES, n_prompts=N_PROMPTS,
        n_reference_prompts=N_PROMPTS_REFERENCE, window=WINDOW, n_following=N_FOLLOWING,
        strip=pipeline.STRIP)
    del rs
    t = sweeps[m]["trained"]
    refs = [s.seconds for r, s in sweeps[m].items() if r != "trained"]
    ev = t.pca.explained_variance_ratio_[:2].round(3)
    print(f"{m}: explained variance of PC1, PC2 {ev};"
          f" grid {GRID_N}x{GRID_N} over [{t.grid_range[0]:.1f}, {t.grid_range[1]:.1f}];"
          f" window {t.window}; {t.n_prompts} prompts in {t.seconds:.1f} s;"
          f" {len(refs)} references in {sum(refs):.1f} s")

# %% tags=["remove-input"]
for m in MODELS:
    t, kw = sweeps[m]["trained"], dict(figure="4D", model=m)
    ch.ledger.record("pca_ev_pc1_pc2", t.pca.explained_variance_ratio_[:2], **kw,
                     claim="explained variance ratio of the two components the grid lives in")
    ch.ledger.record("grid_range", list(t.grid_range), **kw,
                     claim=f"teleport grid range: percentiles {GRID_PERCENTILES} of the projected trajectories")
    ch.ledger.record("teleport_window", t.window, unit="sublayers", **kw,
                     claim="points followed after the teleport by every claim, the same for every layer")
    ch.ledger.record("teleport_seconds", [s.seconds for s in sweeps[m].values()], unit="s", **kw,
                     runs=list(sweeps[m]), claim=f"wall time of the teleport over the prompts ({GRID_N}x{GRID_N} "
                                                 "grid, every layer), per run")

# %% [markdown]
# ## Teleporting (Figure 4 D)
# The paper's prompt. At each layer a forward pre-hook replaces the RS entering it (sublayer $2l$, before the
# attention norm) at the last token with the grid point's vector. Each arrow goes from a teleport point to where
# its trajectory is `N_FOLLOWING` sublayers later (fewer at the last layers: the model ends; the last point is
# the stack's output), coloured by the *recovery in the plane*, the distance to the control at the end over that
# at the teleport point (blue: pulled back; one colour scale for all panels). The grey line is the control
# (unperturbed) trajectory of the prompt; the star marks it at the teleport sublayer, the circle where the
# control is at the end of the arrows. Rows: models; columns: teleport layers by depth position.

# %% mystnb={"figure": {"caption": "Paper's Fig. 4D: the prompt's residual stream teleported to a grid of points of the PCA plane at five layers; each arrow goes from a teleport point to where its trajectory is some sublayers later, coloured by the recovery in the plane (blue: pulled back), the grey line the control trajectory; rows: teleport layers by depth; columns: models ({models}).", "name": "fig-05-4d"}, "image": {"alt": "Grid of PCA-plane panels with arrows from teleport points to where the perturbed trajectories end, coloured by recovery, Fig 4D; rows: five teleport layers from first to last; columns: models {models}"}}
fig = plots.plot_teleport_grid({(m, name): r for m in MODELS
                                for name, r in zip(names[m], sweeps[m]["trained"].results)})

# %% [markdown]
# The same panels with every perturbed trajectory drawn (orange) instead of the net arrows only:

# %% mystnb={"figure": {"caption": "Fig. 4D with every perturbed trajectory drawn (orange); rows: teleport layers by depth; columns: models ({models}).", "name": "fig-05-4d-paths"}, "image": {"alt": "Grid of PCA-plane panels with every perturbed trajectory drawn in orange and the control in grey, Fig 4D; rows: five teleport layers; columns: models {models}"}}
fig = plots.plot_teleport_grid({(m, name): r for m in MODELS
                                for name, r in zip(names[m], sweeps[m]["trained"].results)},
                               color_by=None, show_paths=True)

# %% [markdown]
# ## What the claims read: per-prompt curves
# Per prompt and teleport layer, over the grid and the equal window, in the full RS (not the plane): the
# **recovery ratio** (distance to the control after the window over the distance at the teleport point, median
# over the grid; below 1: pulled back), the **relative MSE** (mean squared distance to the control over the
# window, over the controls' squared spread there), the **end-point spread** (how far the grid's trajectories end
# from their own mean: the paper's "variance on the perturbed trajectories") and the **end distance** from the
# control (median over the grid). The last two are divided by the *controls' spread*, how far the prompts'
# unperturbed runs lie from their mean at that point (`perturb.controls_spread`), so that layers whose RS differs
# in scale compare, and so that "far" has a yardstick: above 1, farther than unperturbed texts lie apart. Thin
# grey lines: prompts; black: their mean with its 95 % bootstrap band over prompts (the curve every claim reads);
# coloured: the random-init references (mean over seeds, the seeds' range shaded).
#
# One thing the design fixes before any dynamics: the grid is sized by the projection of *every* sublayer, so it
# spans the late layers' large vectors. Teleported to it, the first layers' small vectors move by many times the
# texts' own spread there, and the end distance and spread at those layers measure the size of the push as much as
# what the layers do with it. The recovery ratio divides the push out.

# %% mystnb={"figure": {"caption": "What the teleport claims read: per prompt (thin grey) and teleport layer, the recovery ratio, the relative MSE, the end-point spread and the end distance in the full residual stream, their mean over prompts with its 95% bootstrap band (black) and the random-init references (coloured); one row per model ({models}).", "name": "fig-05-curves"}, "image": {"alt": "Line plots of four per-prompt teleport curves against teleport layer, with the mean and its bootstrap band and the random-init references, one row per model: {models}"}}
boot = {(m, run): robustness.mean_curves(s.curves, n_boot=N_BOOT, seed=SEED)
        for m in MODELS for run, s in sweeps[m].items()}
fig = plots.plot_teleport_curves(
    {m: {run: (s.curves, boot[m, run].boot) for run, s in sweeps[m].items()}
     for m in MODELS},
    names=names, layers=layers)

# %% tags=["remove-input"]
for m in MODELS:
    for k, v in sweeps[m]["trained"].means().items():
        ch.ledger.record(f"teleport_{k}_by_layer", v, figure="4D", model=m, layers=layers[m],
                         claim=f"{k} per teleport layer ({', '.join(names[m])}), mean over "
                               f"{sweeps[m]['trained'].n_prompts} prompts")

# %% [markdown]
# ## The paper's statements, decided
# Each sentence is a claim of the registry (`transformer_dynamics.claims`, source "teleport"), read from the
# curves above: `teleport_mid_recovers` (the middle layers' recovery ratio, or relative MSE, minus the mean of the
# first and last layers': < 0), `teleport_mid_lower_variance` (the same for the end-point spread),
# `teleport_first_far` (the first layer's end distance over the controls' spread: > 1, farther than unperturbed
# texts lie from their mean; an end at an unrelated text's place scores about 1.4), `teleport_last_more_drastic`
# (the last layer's end distance minus the first's: > 0) and `teleport_lower_robust` (the lower half of the
# layers' recovery ratio minus the upper half's: < 0). Each value comes with its bootstrap interval over prompts
# (`N_BOOT` resamples): ✓ holds when the interval lies on the claim's side, ✗ fails on the other, ? undecided. The
# line compares it with the random-init references: "holds, but so does random init" is a property of the
# architecture, not of training.

# %%
PAIRS = claims.readings(claims.claims_of(source="teleport", chapter=ch.name))
tables = {}
for m in MODELS:
    evidence = [e for run, s in sweeps[m].items()
                for e in robustness.evidence_from_curves(boot[m, run], PAIRS, run=run,
                                                         n=s.n_prompts)]
    tables[m] = verdicts.judge(evidence, seed=SEED)
    ch.ledger.claims(tables[m], model=m)
both = pd.concat([t.assign(model=m) for m, t in tables.items()], ignore_index=True)
show_table(verdicts.summary_table(both), index=False)

# %% [markdown]
# ## Beyond the paper: noise injection
# The paper's discussion suggests subtler perturbations. Here Gaussian noise with norm `scale · ‖h‖` is
# added to the RS vector $h$ entering each layer at the last token of `N_SWAP` WikiText rows (the same rows
# for every model), and the run is compared with its unperturbed self, in the full RS, at every later
# sublayer. At the perturbed point the relative distance equals the scale (dotted line); below it afterwards
# means the network damps the noise, above it that it amplifies it. Rows: models; columns: noise scales.

# %% mystnb={"figure": {"caption": "Beyond the paper: Gaussian noise added to the residual stream entering each of the five layers; relative distance to the unperturbed run at every later sublayer (dotted: the noise scale); rows: models ({models}); columns: noise scales.", "name": "fig-05-noise"}, "image": {"alt": "Line plots of the relative distance to the unperturbed run against sublayer after noise injection at five layers; rows: models {models}; columns: noise scales"}}
n_pairs = min(N_SWAP, len(texts) // 2)
texts_a, texts_b = texts[:n_pairs], texts[n_pairs : 2 * n_pairs]
noise = {}
for m in MODELS:
    t0 = time.perf_counter()
    noise[m] = perturb.noise_sweep(*loaded[m], texts_a, layers=layers[m],
                                   scales=NOISE_SCALES, seed=SEED, strip=pipeline.STRIP)
    print(f"{m} noise: {len(noise[m])} (layer, scale) runs of {n_pairs} texts "
          f"in {time.perf_counter() - t0:.1f} s")
fig = plots.plot_noise_grid(noise)

# %% tags=["hide-input"]
position = {(m, l): name for m in MODELS for name, l in zip(names[m], layers[m])}
noise_table = pd.DataFrame(
    [
        {
            "model": m,
            "position": position[m, r.layer],
            "layer": r.layer,
            "scale": r.scale,
            "median distance at end": np.median(r.distance_own[:, -1]),
            "median end / start": np.median(r.recovery),
        }
        for m in MODELS
        for r in noise[m]
    ]
)
show_table(noise_table, index=False)

# %% tags=["remove-input"]
for m in MODELS:
    for r in noise[m]:
        p = position[m, r.layer]
        ch.ledger.record(
            f"noise_{p}_s{r.scale:g}_end_over_start",
            np.median(r.recovery),
            figure="beyond",
            model=m,
            layer=r.layer,
            claim=f"noise at the {p} layer (scale {r.scale:g}): median relative distance to "
            "the unperturbed run at the last sublayer over that at the perturbed point (< 1: damped)",
        )

# %% [markdown]
# ## Beyond the paper: activation swap
# Text b's RS vector entering a layer (last token) is written into text a's run. Afterwards the run has a's
# context (all earlier tokens) but b's vector at the last token: does it return towards a's own trajectory
# (the context pulls it back), or stay with b's (the vector carries on)? Distances are relative to each
# reference run's norm; the dotted lines show how far apart the two unperturbed runs are. Rows: models;
# columns: distance to the own run and to the donor's run. At the first layer the swapped vectors are token
# embeddings: two rows that end in the same token exchange identical vectors (see the last column of the table
# and the line below it).

# %% mystnb={"figure": {"caption": "Beyond the paper: the last token's vector swapped between two texts at each of the five layers; relative distance of the run to its own unperturbed run and to the donor's at every later sublayer; rows: models ({models}).", "name": "fig-05-swap"}, "image": {"alt": "Line plots of the relative distance to the own run and to the donor run against sublayer after an activation swap at five layers; rows: models {models}; columns: distance to own, distance to donor"}}
swaps = {}
for m in MODELS:
    t0 = time.perf_counter()
    swaps[m] = perturb.swap_sweep(*loaded[m], texts_a, texts_b, layers=layers[m],
                                  strip=pipeline.STRIP)
    print(f"{m} swap: {len(swaps[m])} layers x {n_pairs} pairs "
          f"in {time.perf_counter() - t0:.1f} s")
fig = plots.plot_swap_grid(swaps)

# %% tags=["hide-input"]
swap_table = pd.DataFrame(
    [
        {
            "model": m,
            "position": position[m, r.layer],
            "layer": r.layer,
            "median to own at end": np.median(r.distance_own[:, -1]),
            "median to donor at end": np.median(r.distance_donor[:, -1]),
            "fraction closer to own at end": np.mean(
                r.distance_own[:, -1] < r.distance_donor[:, -1]
            ),
            "median own vs donor at swap": np.median(r.distance_own_donor[:, 0]),
        }
        for m in MODELS
        for r in swaps[m]
    ]
)
show_table(swap_table, index=False)

# %% tags=["hide-input"]
identical = {m: float(np.mean(swaps[m][0].distance_own_donor[:, 0] == 0)) for m in MODELS}
Markdown(
    "Pairs whose swapped vectors are identical at the first layer (same last token): "
    + "; ".join(f"{m}, layer {layers[m][0]}: {identical[m]:.0%} of {n_pairs}" for m in MODELS)
    + "."
)

# %% tags=["remove-input"]
for row in swap_table.to_dict("records"):
    m, p, kw = (
        row["model"],
        row["position"],
        dict(figure="beyond", model=row["model"], layer=row["layer"]),
    )
    ch.ledger.record(
        f"swap_{p}_fraction_closer_to_own",
        row["fraction closer to own at end"],
        **kw,
        claim=f"swap at the {p} layer: fraction of texts whose run ends closer (relative distance) to its "
        "own unperturbed run than to the donor's",
    )
    ch.ledger.record(
        f"swap_{p}_end_distance_own_donor",
        [row["median to own at end"], row["median to donor at end"]],
        **kw,
        claim=f"swap at the {p} layer: median relative distance at the last sublayer to the own run "
        "and to the donor's run",
    )
for m in MODELS:
    ch.ledger.record(
        "swap_first_identical_fraction",
        identical[m],
        figure="beyond",
        model=m,
        layer=layers[m][0],
        claim="fraction of pairs whose swapped vectors are identical at the first swap layer (same last "
        "token, so a swap there changes nothing)",
    )

# %% [markdown]
# ## The paper's statements next to ours
# Every row is a ledger entry written above, one per model, the rows of one statement together; the
# last column comes from the claim registry (✓ holds, ✗ fails, ? undecided; – a plain value).

# %% tags=["remove-input"]
show_table(ch.ledger, paper=True)

# %% tags=["remove-input"]
show_table(ch.ledger, paper=False)
