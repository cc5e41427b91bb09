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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/02_activation_statistics.ipynb)
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
# # 2. Activation statistics of the residual stream (Figure 1 B–H)
#
# Section 3.1 of the paper claims that the residual stream (RS) at the last token grows in magnitude
# over the layers while units keep their sign (1B); that each unit's activation is highly correlated
# from one sublayer to the next, already above r = 0.8 in the first layers and rising, more within a
# layer (attn → mlp) than across layers (mlp → next attn) (1C, 1D); that the cosine similarity of
# successive RS vectors rises, again higher within layers (1E); that the RS accelerates, most steeply
# in the last third, with faster cross-layer steps (1F); and that the mutual information (MI) of each
# unit between successive sublayers drops sharply in the early layers, most at cross-layer
# transitions, while correlations rise (1G, 1H).
#
# We compute every panel for every model in `MODELS`, on the original texts and on the paper's control
# in which the tokens of each text are shuffled, and record each statement's number per model, with a
# bootstrap interval over texts where it is cheap, in the ledger. **Each figure has one row per model**
# (columns: original and shuffled texts). The models differ in depth and width, so each row has its own
# sublayer axis. The table at the end puts the paper's statements next to ours, the models' rows of one
# claim together.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
QUANTIZATION: Optional[str] = None  # None, "8bit" or "4bit" (the Colab profile loads Llama 3.1 8B in 4-bit)
MI_METHODS: list[str] = ["kde", "kde_exact", "ksg", "gcmi"]  # "kde": the paper's (gridded sums)
MI_UNITS: Optional[int] = None   # None: all units; an int: a random subset of that many units (Fig 1G/H)
MI_COMPARE_UNITS: int = 64       # the estimator comparison and the MI claims use this many of them
N_BOOT: int = 1000               # bootstrap resamples of the texts for the intervals
N_BOOT_SLOW: int = 200           # ... of which the MI claims are recomputed on this many (MI_COMPARE_UNITS units)
N_REFERENCE: int = 200           # texts of each random-init reference
REFERENCE_SEEDS: list[int] = [0, 1, 2]  # random-init seeds (each kind)
REFERENCE_INITS: list[str] = ["default", "matched", "permuted"]  # random inits; trained weights permuted
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
colab.setup(globals(), "02_activation_statistics")

# %%
import numpy as np
from IPython.display import Markdown, display

from transformer_dynamics import chapter, metrics, mutual_info, robustness, verdicts
from transformer_dynamics.plots import robustness as plot_robustness
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import metrics as plot_metrics
from transformer_dynamics.plots.style import grid

ch = chapter.setup("02_activation_statistics", models=MODELS, n=N, seed=SEED,
                   cache_dir=CACHE_DIR, ledger_dir=LEDGER_DIR, quantization=QUANTIZATION,
                   reference_n=N_REFERENCE, reference_seeds=REFERENCE_SEEDS,
                   reference_inits=REFERENCE_INITS, mi_units=MI_UNITS,
                   mi_compare_units=MI_COMPARE_UNITS, mi_methods=list(MI_METHODS),
                   n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW)
rs, RUNS = ch.rs, ch.runs  # {(model, condition): (texts, sublayers, units)}; figure order
Markdown(ch.summary())

# %% [markdown]
# ## Computing the statistics
# In `transformer_dynamics.metrics`: means per unit and sublayer, each unit's Pearson r between
# successive sublayers (and between all pairs l < m), the cosine similarity and the velocity of
# successive RS vectors per text; in `transformer_dynamics.mutual_info`: each unit's MI between successive
# sublayers with every estimator in `MI_METHODS`.

# %%
main_mi = "kde" if "kde" in MI_METHODS else MI_METHODS[0]
units = {m: metrics.subsample_units(ch.d_model[m], MI_UNITS, seed=SEED) for m in ch.models}
compare = {m: np.sort(units[m][metrics.subsample_units(units[m].size, MI_COMPARE_UNITS,
                                                       seed=SEED)])
           for m in ch.models}
stats = {}
for m, c in RUNS:
    x = rs[m, c]
    stats[m, c] = {
        "mean": metrics.mean_activations(x),
        "order": metrics.unit_order(x),
        "r": metrics.successive_correlation(x),
        "r_pairs": metrics.pairwise_correlation(x),
        "cos": metrics.cosine_similarity(x),
        "ccos": metrics.centered_cosine_similarity(x),
        "vel": metrics.velocity(x),
        "mi_main": mutual_info.mutual_information(x, main_mi, units=units[m]),
    }
    in_compare = np.isin(units[m], compare[m])
    stats[m, c]["mi"] = {est: stats[m, c]["mi_main"][:, in_compare] if est == main_mi
                     else mutual_info.mutual_information(x, est, units=compare[m])
                     for est in MI_METHODS}
    stats[m, c]["hist"] = metrics.correlation_histogram(stats[m, c]["r"])
    stats[m, c]["hist_pairs"] = metrics.correlation_histogram(stats[m, c]["r_pairs"])
# MI units in the Fig 1B order of each model
mi_order = {m: np.argsort(np.argsort(stats[m, "original"]["order"])[units[m]])
            for m in ch.models}

# %% [markdown]
# ## Figure 1B: mean activations
# Units (rows) sorted by their mean at the last sublayer, $\pi = \mathrm{argsort}(\bar h^{2L})$; the
# colour scale of each panel is clipped at the 99th percentile of its |mean| so that the few massive
# units (below) do not wash out the rest.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1B: mean activation of every unit (rows, sorted by the last sublayer) per sublayer; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1b"}, "image": {"alt": "Heatmaps of the mean activation of each unit (rows) over sublayers (columns), Fig 1B; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_mean_activations,
     {(m, c): (stats[m, c]["mean"], stats[m, c]["order"]) for m, c in RUNS},
     row_kwargs=ch.row_labels);

# %% tags=["remove-input"]
for m in ch.models:
    mean = stats[m, "original"]["mean"]
    ch.ledger.record("mean_abs_first", np.abs(mean[0]).mean(), model=m, figure="1B",
               claim="mean |activation| over units at the first sublayer")
    ch.ledger.record("mean_abs_last", np.abs(mean[-1]).mean(), model=m, figure="1B",
               claim="mean |activation| over units at the last sublayer")

# %% [markdown]
# ## Figure 1C: correlation of each unit between successive sublayers
# Pearson r of unit u between sublayer t and t + 1 over the N texts (`successive_correlation`): faint
# lines are individual units, thick lines the median over units with the interquartile band,
# within-layer transitions (attn → mlp) green, cross-layer (mlp → next attn) blue.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1C: Pearson r of each unit between successive sublayers, units faint, median and interquartile band thick, within-layer green, cross-layer blue; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1c"}, "image": {"alt": "Line plots of the correlation of each unit between successive sublayers against transition, median and interquartile band, Fig 1C; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(
    plot_metrics.plot_successive_correlation,
    {(m, c): stats[m, c]["r"] for m, c in RUNS},
    row_kwargs=ch.row_labels,
);

# %% [markdown]
# A unit that is constant over the texts at a sublayer has no correlation there (NaN). If every text
# ends in the same token, the first sublayer (that token's embedding) is constant for all units and the
# first transition is undefined; "the first layer" below is then the first transition of each kind
# whose correlation is defined.

# %% tags=["remove-input"]
for m, c in RUNS:
    ch.record(m, "r_undefined_first", float(np.mean(np.isnan(stats[m, c]["r"][0]))), figure="1C",
              condition=c, claim="fraction of units whose r is undefined (constant) at the first transition")

# %% [markdown]
# ## Figure 1D: per-unit distribution of correlations
# For each unit, the density of its correlations binned on [0, 1]. The results section and the figure
# caption speak of the distribution "over the 63 layer transitions" (the paper's model has 64 sublayers;
# successive pairs, the values of Fig 1C); the methods define it over all pairs l < m. We show the
# successive version as Fig 1D and the all-pairs version below it. Rows sorted by each unit's median
# correlation; the white line is the density pooled over units.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1D: per-unit density of the correlations between successive sublayers, units sorted by their median; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1d"}, "image": {"alt": "Heatmaps of each unit's distribution of successive-sublayer correlations on 0 to 1, Fig 1D; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_correlation_histogram,
     {(m, c): stats[m, c]["hist"] for m, c in RUNS});

# %% mystnb={"figure": {"caption": "Fig. 1D by the methods' definition: per-unit density of the correlations over all sublayer pairs l < m; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1d-pairs"}, "image": {"alt": "Heatmaps of each unit's distribution of correlations over all sublayer pairs, Fig 1D all-pairs version; one row per model ({models}); columns: original texts, shuffled-token control"}}
fig = grid(plot_metrics.plot_correlation_histogram,
           {(m, c): stats[m, c]["hist_pairs"] for m, c in RUNS})
fig.suptitle("all sublayer pairs l < m (the methods' definition)");

# %% tags=["remove-input"]
for m, c in RUNS:
    frac_pairs = float(np.mean(np.nanmedian(stats[m, c]["r_pairs"], axis=0) > 0.5))
    ch.record(m, "units_median_pair_r_above_0.5", frac_pairs, figure="1D", condition=c,
              claim="fraction of units whose median r over all sublayer pairs l < m exceeds 0.5")

# %% [markdown]
# ## Figure 1E: cosine similarity of successive RS vectors
# The raw cosine (as in the paper) is inflated by the large mean direction the RS shares across texts
# (and by the massive units); the centred cosine subtracts each sublayer's mean vector over texts
# first and measures whether the text-specific part keeps its direction.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1E: cosine similarity of successive residual-stream vectors, raw (as in the paper) and centred; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1e"}, "image": {"alt": "Line plots of raw and centred cosine similarity between successive sublayers against transition, Fig 1E; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(
    plot_metrics.plot_cosine_similarity,
    {(m, c): {"raw": stats[m, c]["cos"], "centred": stats[m, c]["ccos"]} for m, c in RUNS},
    row_kwargs=ch.row_labels,
);

# %% [markdown]
# ## Figure 1F: velocity
# $\|h_{t+1} - h_t\|_2$ per text; median over texts with the interquartile band. In a pre-norm
# transformer the within-layer step is the attention block's output and the cross-layer step the MLP's.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1F: velocity, the distance between successive residual-stream vectors per text, median over texts with the interquartile band; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1f"}, "image": {"alt": "Line plots of the velocity between successive sublayers against transition, median and interquartile band, Fig 1F; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_velocity, {(m, c): stats[m, c]["vel"] for m, c in RUNS},
     row_kwargs=ch.row_labels);

# %% [markdown]
# ## Figure 1G, 1H: mutual information between successive sublayers
# The paper's estimator is the Gaussian-KDE plug-in (`"kde"`: Scott's bandwidth, densities evaluated at
# the samples themselves, 1e-10 added before the logs); it is biased upwards and depends on the
# activation scale through that 1e-10. For comparison: the Kraskov k-NN estimator (`"ksg"`, k = 3) and
# the bias-corrected Gaussian-copula MI (`"gcmi"`, a lower bound). G: per unit (rows in the Fig 1B
# order), H: mean over units.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1G: mutual information (Gaussian KDE, the paper's estimator) of each unit between successive sublayers, units in the Fig. 1B order; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1g"}, "image": {"alt": "Heatmaps of each unit's KDE mutual information between successive sublayers, Fig 1G; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_mi_units,
     {(m, c): (stats[m, c]["mi_main"], mi_order[m]) for m, c in RUNS},
     row_kwargs=ch.row_labels);

# %% mystnb={"figure": {"caption": "Paper's Fig. 1H: mean mutual information over units between successive sublayers (Gaussian KDE); one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1h"}, "image": {"alt": "Line plots of the mean KDE mutual information over units against transition, Fig 1H; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_mi_mean, {(m, c): stats[m, c]["mi_main"] for m, c in RUNS},
     row_kwargs=ch.row_labels);

# %% [markdown]
# ### The estimators side by side
# Mean MI over units per transition for every estimator in `MI_METHODS`, on the same `MI_COMPARE_UNITS`
# units (the k-NN estimator costs far more than the others at large N). The ledger rows below are
# per estimator on these units; the paper's estimator on all `MI_UNITS` units is recorded as `mi_main_*`.
# `kde` and `kde_exact` are the same estimate: the first sums the kernels on a fine grid (each point set
# checked against the exact sum), the second exactly; their largest relative difference is recorded as
# `mi_kde_grid_max_rel_diff`.

# %% mystnb={"figure": {"caption": "Fig. 1H with every estimator: mean mutual information over the compared units per transition, one line per estimator; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1h-estimators"}, "image": {"alt": "Line plots of the mean mutual information against transition for the KDE, KSG and Gaussian-copula estimators, Fig 1H; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_mi_mean, {(m, c): stats[m, c]["mi"] for m, c in RUNS},
     row_kwargs=ch.row_labels);

# %% tags=["remove-input"]
for m, c in RUNS:
    if {"kde", "kde_exact"} <= set(MI_METHODS):
        ch.record(m, "mi_kde_grid_max_rel_diff", mutual_info.max_relative_difference(
            stats[m, c]["mi"]["kde"], stats[m, c]["mi"]["kde_exact"]), figure="1H", condition=c,
            claim="largest relative difference of MI, gridded vs exact kernel sums (same estimate)")
    mean_mi = metrics.mean_by_transition(stats[m, c]["mi_main"])["all"]
    ch.record(m, "mi_by_transition", mean_mi, figure="1H", condition=c, unit="nats",
              claim=f"mean MI over units per transition ({main_mi}, all MI units)")

# %% [markdown]
# ## Massive units
# Some units can carry activations orders of magnitude above the rest ("massive activations",
# Sun et al. 2024); we call a unit massive when its magnitude exceeds 20 times the median unit's. Such
# units dominate the RS vector's norm, hence the raw cosine and the velocity; per-unit statistics (r, MI)
# of the other units are untouched by them. How many each model has is listed below (and in the table);
# then Fig 1B, 1E and 1F without them.

# %%
massive = {m: metrics.massive_units(rs[m, "original"]) for m in ch.models}
no_massive = {}
for m, c in RUNS:
    x = metrics.without_units(rs[m, c], massive[m])
    no_massive[m, c] = {
        "cos": metrics.cosine_similarity(x),
        "vel": metrics.velocity(x),
        "mean": metrics.mean_activations(x),
        "order": metrics.unit_order(x),
    }
display(
    Markdown(
        "\n".join(
            f"- **{m}**: {len(massive[m])} massive units, largest first: "
            f"{', '.join(map(str, massive[m][:16])) or 'none'}"
            for m in ch.models
        )
    )
)

# %% mystnb={"figure": {"caption": "Fig. 1B without the massive units; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1b-no-massive"}, "image": {"alt": "Heatmaps of the mean activation of each unit over sublayers with the massive units left out, Fig 1B; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(
    plot_metrics.plot_mean_activations,
    {(m, c): (no_massive[m, c]["mean"], no_massive[m, c]["order"]) for m, c in RUNS},
    row_kwargs=ch.row_labels,
    title="Mean activation, no massive units",
);

# %% tags=["remove-input"]
for m in ch.models:
    ch.ledger.record("n_massive_units", len(massive[m]), model=m, units=massive[m][:16],
                     claim="units whose magnitude exceeds 20x the median unit's")

# %% mystnb={"figure": {"caption": "Fig. 1E with and without the massive units (raw cosine); one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1e-no-massive"}, "image": {"alt": "Line plots of the raw cosine similarity between successive sublayers with all units and without the massive units, Fig 1E; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_cosine_similarity,
     {(m, c): {"all units": stats[m, c]["cos"], "without massive": no_massive[m, c]["cos"]}
      for m, c in RUNS},
     row_kwargs=ch.row_labels);

# %% mystnb={"figure": {"caption": "Fig. 1F with and without the massive units; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1f-no-massive"}, "image": {"alt": "Line plots of the velocity between successive sublayers with all units and without the massive units, Fig 1F; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_velocity,
     {(m, c): {"all units": stats[m, c]["vel"], "without massive": no_massive[m, c]["vel"]}
      for m, c in RUNS},
     row_kwargs=ch.row_labels);

# %% [markdown]
# ## What learning adds
# A residual stream accumulates updates, and that alone shapes Fig 1: the stream grows, so successive sublayers
# grow similar. Each panel puts the trained model's curve beside the same architecture untrained — at transformers'
# own random initialisation, at an initialisation whose every weight tensor has the trained tensor's mean and
# standard deviation ("matched"), and with every weight tensor's trained entries randomly permuted (the trained
# values and scale, no learned arrangement); each the mean over `REFERENCE_SEEDS`, on `N_REFERENCE` texts — and
# beside the architecture's own prediction for a pre-LN stream at initialisation (Xiong et al. 2020, Lemma 2:
# independent updates add their energy, so $E\lVert x_s \rVert^2$ grows linearly in depth, the successive cosine is
# $\sqrt{(a + s)/(a + s + 1)}$ with $a$ the embedding's energy over one update's, measured on the default random
# init, the velocity constant). What the trained curve shares with these, the architecture gives; what it does not,
# training adds. The claims below set each value against the same references.

# %% mystnb={"figure": {"caption": "What learning adds: the trained model's median successive correlation, cosine, norm and velocity (norm and velocity divided by each curve's mean) beside the same architecture at random initialisation (transformers' and matched-scale), with its weights permuted, and the pre-LN prediction at initialisation; one row per model ({models}).", "name": "fig-02-learning"}, "image": {"alt": "Line plots of correlation, cosine, norm and velocity against relative depth for the trained model, random initialisations, permuted weights and the analytic prediction; one row per model ({models})"}}
learning = {m: robustness.learning_curves(rs[m, "original"], ch.reference_streams(m))
            for m in ch.models}
STATS = ("r", "cos", "norm", "vel")
grid(plot_robustness.plot_learning, {(m, k): learning[m] for m in ch.models for k in STATS},
     col_kwargs={k: {"key": k} for k in STATS}, width=4.2, height=3.6);

# %% tags=["remove-input"]
for m in ch.models:
    if robustness.PRELAYERNORM_LABEL in learning[m]:
        ch.record(m, "prelayernorm_a", learning[m][robustness.PRELAYERNORM_LABEL]["a"], figure="1E",
                  claim="the embedding's energy over one update's at random init (a of the pre-LN prediction)")

# %% [markdown]
# ## The paper's statements, decided
# Each statement of this section is a claim of the registry (`transformer_dynamics.claims`), measured by an
# effect size: a trend is the mean over the last third of depth minus the mean over the first third; an
# ordering is the mean over layers of the within-layer minus the cross-layer value; the MI's "sharp decline"
# is the share of the first transition's MI lost in the early layers. Its uncertainty comes from the texts,
# the sampling unit: `N_BOOT` bootstrap resamples of the texts (`N_BOOT_SLOW` of them for the MI, which is
# recomputed on each, on the `MI_COMPARE_UNITS` units, with each estimator of `MI_METHODS` as a reading). The
# registry decides: ✓ holds (the 95% interval lies on the claim's side of its threshold), ✗ fails (wholly on
# the other side), ? undecided (the interval straddles it, the value is undefined, or the claim's premise does
# not hold). The verdicts are then corrected for their number (Benjamini-Hochberg over the chapter).
#
# Each claim is also measured on what any residual stream gives: the **residual-accumulation null** (each
# text keeps its own start and receives, at every sublayer, another text's update: every sublayer's mean and
# every update's norm are kept, so it is only compared where it can move the statistic) and the same
# architecture at **random initialisation** (`REFERENCE_INITS`, `REFERENCE_SEEDS`, `N_REFERENCE` texts each).
# The verdict line says whether the trained model's value lies beyond them: "holds, beyond random init and the
# null", "holds, but so does random init", or the verdict alone. Chapter 8 varies every open choice.

# %% tags=["remove-input"]
decided = ch.decide(n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW, mi_units=MI_COMPARE_UNITS,
                    mi_methods=[m for m in MI_METHODS if m != "kde_exact"])
show_table(verdicts.summary_table(decided), index=False)

# %% [markdown]
# The rows, one per model (original texts unless the claim ends in "[shuffled-token control]"); readings other
# than the headline name themselves in brackets.

# %% tags=["remove-input"]
show_table(ch.ledger, paper=True)

# %% [markdown]
# The other recorded values:

# %% tags=["remove-input"]
show_table(ch.ledger, paper=False)
