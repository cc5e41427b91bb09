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
# error (MSE) to the control trajectory.
#
# We repeat the experiment for every model in `MODELS` (same prompt, grid, following sublayers; the paper's
# layers mapped by depth fraction to each model and named by depth position: first, early, middle, late,
# last) and check those claims with computed numbers. Then we ask the question the paper leaves to future
# work, without the 2-D projection: how do runs recover from **noise** added to the RS, and from
# **swapping** in another text's RS vector?
#
# Each figure has one row (or, for single-panel figures, one column) per model; every ledger number is
# recorded once per model, and the tables at the end show the models' rows of one claim together.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts for the PCA fit
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
QUANTIZATION: Optional[str] = None  # None, "8bit" or "4bit" (the Colab profile loads Llama 3.1 8B in 4-bit)
GRID_N: int = 10                 # n x n teleport grid (paper §2.8: typically 10)
GRID_PERCENTILES: list[float] = [1, 99]  # grid range [r_min, r_max]: these percentiles of the projected trajectories
LAYERS: Optional[list[int]] = None  # layers of the paper's 32-layer Llama, mapped by depth; None: 0, 7, 15, 23, 31
N_FOLLOWING: int = 12            # sublayers followed after the teleport (paper Fig. 4D: 12)
PROMPT: str = "I'm sorry, Dave. I'm afraid I can't do that."  # the text whose residual stream is teleported (Fig. 4D)
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

from transformer_dynamics import chapter, perturb, pipeline, reduce, robustness
from transformer_dynamics.ledger import show_table
from transformer_dynamics.models import layer_modules
from transformer_dynamics.plots import perturb as plots
from transformer_dynamics.plots.style import grid

PAPER_LAYERS = perturb.PAPER_LAYERS if LAYERS is None else sorted({int(l) for l in LAYERS})
# the ledger only: each model's RS is read in turn below (one array in memory at a time)
ch = chapter.setup("05_perturbation_attractors", models=MODELS, n=N, seed=SEED,
                   ledger_dir=LEDGER_DIR, capture=False, grid_n=GRID_N,
                   n_following=N_FOLLOWING, n_swap=N_SWAP, paper_layers=PAPER_LAYERS)
MODELS = ch.models
loaded, layers, names, pca = {}, {}, {}, {}
for m in MODELS:
    loaded[m] = pipeline.load_model(m, quantization=QUANTIZATION, cache_dir=CACHE_DIR)
    n_layers = len(layer_modules(loaded[m][0]))  # loaded[m]: (model, tokenizer)
    layers[m] = perturb.paper_layers(n_layers, PAPER_LAYERS)
    names[m] = perturb.depth_names(layers[m])
    print(f"{m}: {n_layers} layers; teleport layers {dict(zip(names[m], layers[m]))}")

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("teleport_layers", layers[m], figure="4D", model=m, names=names[m],
                     claim=f"perturbed layers: the paper's {list(PAPER_LAYERS)} of "
                           f"{perturb.PAPER_N_LAYERS} mapped by depth fraction")

# %% [markdown]
# ## The PCA plane and the grid
# As in §2.8 the PCA is fitted, per model, on every sublayer vector of every text (the array flattened to
# `(N · 2L, d_model)`); a grid point $\mathbf z$ becomes $\mathbf x = \mathbf z V[:, :2]^\top + \boldsymbol\mu$
# (`perturb.unproject`, first two components only). The paper does not give $[r_{min}, r_{max}]$; we take
# the `GRID_PERCENTILES` of the projected trajectories (both coordinates pooled: a square grid as in the
# paper).

# %%
grids, ranges = {}, {}
for m in MODELS:
    rs = pipeline.residual_stream(m, n=N, seed=SEED, condition="original",
                                  cache_dir=CACHE_DIR, quantization=QUANTIZATION)
    pca[m] = reduce.PCA(n_components=2).fit(rs)
    z = perturb.project(pca[m], rs)  # (N, 2L, 2)
    ranges[m] = r_min, r_max = perturb.grid_range(z, tuple(GRID_PERCENTILES))
    grids[m] = perturb.make_grid(r_min, r_max, GRID_N)
    print(f"{m}: rs {rs.shape} (texts, sublayers, units); explained variance of PC1, PC2: "
          f"{pca[m].explained_variance_ratio_[:2].round(3)}; "
          f"grid {GRID_N}x{GRID_N} over [{r_min:.1f}, {r_max:.1f}]")
    del rs, z

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("pca_ev_pc1_pc2", pca[m].explained_variance_ratio_[:2], figure="4D", model=m,
                     claim="explained variance ratio of the two components the grid lives in")
    ch.ledger.record("grid_range", list(ranges[m]), figure="4D", model=m,
                     claim=f"teleport grid range: percentiles {GRID_PERCENTILES} of the projected "
                           "trajectories")

# %% [markdown]
# ## Teleporting (Figure 4 D)
# At each layer the prompt is repeated once per grid point and run as one batch; a forward pre-hook on the
# decoder layer replaces the RS entering it (sublayer $2l$, before the attention norm) at the last token with
# the grid point's vector. The following sublayers are projected on the same two components. Each arrow
# goes from a teleport point to where its trajectory is `N_FOLLOWING` sublayers later (the paper's 12; fewer
# at the last layers: the model ends; at the last layer only its own MLP input follows, as at the paper's
# layer 31 of 32), coloured by *recovery*, the distance to the control at the end over that at the teleport
# point (blue: pulled back; one colour scale for all panels). The grey line is the control (unperturbed)
# trajectory of the prompt over all sublayers; the star marks it at the teleport sublayer, the circle where
# the control is at the end of the arrows. Rows: teleport layers by depth position; columns: models.

# %% mystnb={"figure": {"caption": "Paper's Fig. 4D: the prompt's residual stream teleported to a grid of points of the PCA plane at five layers; each arrow goes from a teleport point to where its trajectory is some sublayers later, coloured by recovery (blue: pulled back), the grey line the control trajectory; rows: teleport layers by depth; columns: models ({models}).", "name": "fig-05-4d"}, "image": {"alt": "Grid of PCA-plane panels with arrows from teleport points to where the perturbed trajectories end, coloured by recovery, Fig 4D; rows: five teleport layers from first to last; columns: models {models}"}}
tele, seconds = {}, {}  # (model, depth position) -> TeleportResult; model -> s per layer
for m in MODELS:
    model, tokenizer = loaded[m]
    seconds[m] = []
    for name, l in zip(names[m], layers[m]):
        t0 = time.perf_counter()
        tele[m, name] = perturb.teleport(model, tokenizer, pca[m], layer=l, grid=grids[m],
                                         prompt=PROMPT, n_following=N_FOLLOWING)
        seconds[m].append(time.perf_counter() - t0)
        sub = tele[m, name].sublayers
        print(f"{m} layer {l:2d} ({name}): {len(grids[m])} grid points, "
              f"sublayers {sub[0]}–{sub[-1]}, {seconds[m][-1]:.1f} s")
results = {m: [tele[m, name] for name in names[m]] for m in MODELS}  # in depth order
fig = plots.plot_teleport_grid(tele)

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("teleport_seconds_per_layer", seconds[m], unit="s", figure="4D", model=m,
                     layers=layers[m],
                     claim=f"wall time of one layer's {GRID_N}x{GRID_N} teleport (batched)")

# %% [markdown]
# The same panels with every perturbed trajectory drawn (orange) instead of the net arrows only:

# %% mystnb={"figure": {"caption": "Fig. 4D with every perturbed trajectory drawn (orange); rows: teleport layers by depth; columns: models ({models}).", "name": "fig-05-4d-paths"}, "image": {"alt": "Grid of PCA-plane panels with every perturbed trajectory drawn in orange and the control in grey, Fig 4D; rows: five teleport layers; columns: models {models}"}}
fig = plots.plot_teleport_grid(tele, color_by=None, show_paths=True)

# %% [markdown]
# ## Does the middle of the network recover best?
# The paper compares the MSE between perturbed and control trajectories over the following sublayers. We
# compute it in the PC plane (`mse_pc`, the figure's space) and in the full RS (`mse_full`). Both grow with
# the RS's norm, which grows with depth, so we also show two scale-free versions: the full-space MSE over the
# control's mean square (`rel_mse_full`) and the recovery ratio (distance at the end / at the teleport
# point; below 1 = pulled back towards the control). One panel per model.

# %% mystnb={"figure": {"caption": "Mean squared error between perturbed and control trajectories in the PC plane over the following sublayers, per teleport layer; one panel per model ({models}).", "name": "fig-05-4d-mse"}, "image": {"alt": "Box plots with points of the MSE to the control in the PC plane per teleport layer, Fig 4D recovery, one panel per model: {models}"}}
per_model = {("", m): results[m] for m in MODELS}
col_names = {m: {"names": names[m]} for m in MODELS}
fig = grid(plots.plot_teleport_mse, per_model, col_kwargs=col_names, width=6.0, height=3.8,
           metric="mse_pc", ylabel="MSE to control (PC plane)")

# %% mystnb={"figure": {"caption": "The same MSE in the full residual stream relative to the control's mean square, per teleport layer; one panel per model ({models}).", "name": "fig-05-4d-relative-mse"}, "image": {"alt": "Box plots with points of the relative MSE to the control in the full residual stream per teleport layer, Fig 4D recovery, one panel per model: {models}"}}
fig = grid(plots.plot_teleport_mse, per_model, col_kwargs=col_names, width=6.0, height=3.8,
           metric="rel_mse_full", ylabel="MSE / control mean square (full RS)")

# %% mystnb={"figure": {"caption": "Recovery ratio, the distance to the control at the end over that at the teleport point in the PC plane (below 1: pulled back), per teleport layer; one panel per model ({models}).", "name": "fig-05-4d-recovery"}, "image": {"alt": "Box plots with points of the recovery ratio per teleport layer, Fig 4D recovery, one panel per model: {models}"}}
fig = grid(plots.plot_teleport_mse, per_model, col_kwargs=col_names, width=6.0, height=3.8,
           metric="recovery", log=False, ylabel="distance at end / at teleport (PC plane)")

# %% tags=["hide-input"]
METRICS = ("mse_pc", "mse_full", "rel_mse_full", "recovery")
cmp = {(m, k): perturb.compare_layers(results[m], metric=k) for m in MODELS for k in METRICS}
pd.concat(
    {
        m: pd.DataFrame(
            {k: cmp[m, k]["median"] for k in METRICS}
            | {
                "end_variance": cmp[m, "mse_pc"]["end_variance"],
                "n_following": [r.n_following for r in results[m]],
            },
            index=pd.MultiIndex.from_arrays([names[m], layers[m]], names=["position", "layer"]),
        )
        for m in MODELS
    },
    names=["model"],
)

# %% [markdown]
# The paper's sentence "mid-layer perturbations exhibited a more robust recovery ... and lower mean
# squared error" is the registry's claim `teleport_mid_recovers`: the fraction of the middle layers' grid
# points whose MSE (PC plane) is below the smaller of the first and the last layer's medians, with a sign
# test over the points (`robustness.teleport_evidence`).

# %% tags=["remove-input"]
for m in MODELS:
    frac, p = robustness.teleport_evidence([r.mse_pc for r in results[m]])
    ch.ledger.claim("teleport_mid_recovers", frac, p=p, model=m)
    c, kw = cmp[m, "mse_pc"], dict(figure="4D", model=m)
    best = names[m][layers[m].index(c["best_layer"])]
    ch.ledger.record("teleport_median_mse_pc", c["median"], layers=layers[m], **kw,
               claim="median MSE to the control over the following sublayers (PC plane), per teleport layer "
                     f"({', '.join(names[m])})")
    ch.ledger.record("teleport_best_layer_mse_pc", c["best_layer"], position=best, **kw,
               claim="teleport layer with the lowest median MSE (PC plane)")
    ch.ledger.record("teleport_mid_beats_ends_mse_pc", c["mid_beats_ends"], **kw,
               claim="every middle layer's median MSE (PC plane) is below both the first and the "
                     "last layer's")
    ch.ledger.record("teleport_last_worst_mse_pc", c["last_worst"], **kw,
               claim="the last teleport layer has the highest median MSE (PC plane)")
    ch.ledger.record("teleport_end_variance", c["end_variance"], layers=layers[m], **kw,
               claim="variance of the trajectories' end points across the grid (PC plane), per layer")
    ch.ledger.record("teleport_mid_spread_below_ends", c["mid_spread_below_ends"], **kw,
               claim="every middle layer's end-point variance is below the first and last layer's")
    for k in ("mse_full", "rel_mse_full", "recovery"):
        c = cmp[m, k]
        ch.ledger.record(f"teleport_median_{k}", c["median"], layers=layers[m], **kw,
                   claim=f"median {k} per teleport layer")
        ch.ledger.record(f"teleport_mid_beats_ends_{k}", c["mid_beats_ends"], **kw,
                   claim=f"every middle layer's median {k} is below the first and last layer's")
    ch.ledger.record("teleport_median_recovery_below_one", [bool(v < 1) for v in cmp[m, "recovery"]["median"]],
               layers=layers[m], **kw, claim="per layer: is the median grid point closer to the control after the "
                                            "following sublayers than at the teleport point?")

# %% [markdown]
# ## Beyond the paper: noise injection
# The paper's discussion suggests subtler perturbations. Here Gaussian noise with norm `scale · ‖h‖` is
# added to the RS vector $h$ entering each layer at the last token of `N_SWAP` WikiText rows (the same rows
# for every model), and the run is compared with its unperturbed self, in the full RS, at every later
# sublayer. At the perturbed point the relative distance equals the scale (dotted line); below it afterwards
# means the network damps the noise, above it that it amplifies it. Rows: models; columns: noise scales.

# %% mystnb={"figure": {"caption": "Beyond the paper: Gaussian noise added to the residual stream entering each of the five layers; relative distance to the unperturbed run at every later sublayer (dotted: the noise scale); rows: models ({models}); columns: noise scales.", "name": "fig-05-noise"}, "image": {"alt": "Line plots of the relative distance to the unperturbed run against sublayer after noise injection at five layers; rows: models {models}; columns: noise scales"}}
texts = pipeline.load_texts(n=max(N, 2 * N_SWAP), seed=SEED)
n_pairs = min(N_SWAP, len(texts) // 2)
texts_a, texts_b = texts[:n_pairs], texts[n_pairs : 2 * n_pairs]
noise = {}
for m in MODELS:
    t0 = time.perf_counter()
    noise[m] = perturb.noise_sweep(*loaded[m], texts_a, layers=layers[m],
                                   scales=NOISE_SCALES, seed=SEED)
    print(f"{m} noise: {len(noise[m])} (layer, scale) runs of {n_pairs} texts "
          f"in {time.perf_counter() - t0:.0f} s")
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
noise_table

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
# columns: distance to the own run and to the donor's run. The texts are captured as the pipeline does (not
# stripped), so WikiText rows tend to end in the same newline token: at the first layer, the token
# embedding, a swap may then exchange identical vectors (see the last column of the table and the line below
# it).

# %% mystnb={"figure": {"caption": "Beyond the paper: the last token's vector swapped between two texts at each of the five layers; relative distance of the run to its own unperturbed run and to the donor's at every later sublayer; rows: models ({models}).", "name": "fig-05-swap"}, "image": {"alt": "Line plots of the relative distance to the own run and to the donor run against sublayer after an activation swap at five layers; rows: models {models}; columns: distance to own, distance to donor"}}
swaps = {}
for m in MODELS:
    t0 = time.perf_counter()
    swaps[m] = perturb.swap_sweep(*loaded[m], texts_a, texts_b, layers=layers[m])
    print(f"{m} swap: {len(swaps[m])} layers x {n_pairs} pairs "
          f"in {time.perf_counter() - t0:.0f} s")
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
swap_table

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
