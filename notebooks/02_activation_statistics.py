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
MI_COMPARE_UNITS: int = 64       # the estimator comparison runs every method in MI_METHODS on this many of them
N_BOOT: int = 1000               # bootstrap resamples of the texts for the intervals
N_BOOT_SLOW: int = 10           # ... of which the MI claims are recomputed on this many (MI_COMPARE_UNITS units)
PROFILE: Optional[str] = "colab" # in Colab: this run profile replaces the values above (None: keep yours)

# %% tags=["remove-cell"]
# Lists given as text become lists; in Colab: install the package (pinned), apply PROFILE, HF_TOKEN, CACHE_DIR.
import os, subprocess, sys  # noqa: E401
if "google.colab" in sys.modules:
    SPEC = os.environ.get("TRANSFORMER_DYNAMICS_SPEC", "transformer-dynamics[quant,hub] @ git+https://github.com/transformer-dynamics/transformer-dynamics@v0.1.0")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", SPEC], check=True)
from transformer_dynamics import colab
colab.setup(globals(), "02_activation_statistics")

# %%
import numpy as np
from IPython.display import Markdown, display

from transformer_dynamics import chapter, metrics, robustness
from transformer_dynamics.bootstrap import bootstrap, bootstrap_correlation
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import metrics as plot_metrics
from transformer_dynamics.plots.style import grid

ch = chapter.setup("02_activation_statistics", models=MODELS, n=N, seed=SEED,
                   cache_dir=CACHE_DIR, ledger_dir=LEDGER_DIR, quantization=QUANTIZATION,
                   mi_units=MI_UNITS, mi_compare_units=MI_COMPARE_UNITS,
                   mi_methods=list(MI_METHODS), n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW)
rs, RUNS = ch.rs, ch.runs  # {(model, condition): (texts, sublayers, units)}; figure order
Markdown(ch.summary())

# %% [markdown]
# ## Computing the statistics
# All in `transformer_dynamics.metrics`: means per unit and sublayer, each unit's Pearson r between
# successive sublayers (and between all pairs l < m), the cosine similarity and the velocity of
# successive RS vectors per text, and each unit's MI between successive sublayers with every estimator
# in `MI_METHODS`.

# %%
main_mi = "kde" if "kde" in MI_METHODS else MI_METHODS[0]
units = {m: metrics.subsample_units(ch.d_model[m], MI_UNITS, seed=SEED) for m in ch.models}
compare = {m: np.sort(units[m][metrics.subsample_units(units[m].size, MI_COMPARE_UNITS,
                                                       seed=SEED)])
           for m in ch.models}
S = {}
for m, c in RUNS:
    x = rs[m, c]
    S[m, c] = {
        "mean": metrics.mean_activations(x),
        "order": metrics.unit_order(x),
        "r": metrics.successive_correlation(x),
        "r_pairs": metrics.pairwise_correlation(x),
        "cos": metrics.cosine_similarity(x),
        "ccos": metrics.centered_cosine_similarity(x),
        "vel": metrics.velocity(x),
        "mi_main": metrics.mutual_information(x, main_mi, units=units[m]),
    }
    in_compare = np.isin(units[m], compare[m])
    S[m, c]["mi"] = {est: S[m, c]["mi_main"][:, in_compare] if est == main_mi
                     else metrics.mutual_information(x, est, units=compare[m])
                     for est in MI_METHODS}
    S[m, c]["hist"] = metrics.correlation_histogram(S[m, c]["r"])
    S[m, c]["hist_pairs"] = metrics.correlation_histogram(S[m, c]["r_pairs"])
# MI units in the Fig 1B order of each model
mi_order = {m: np.argsort(np.argsort(S[m, "original"]["order"])[units[m]])
            for m in ch.models}

# %% [markdown]
# ## Figure 1B: mean activations
# Units (rows) sorted by their mean at the last sublayer, $\pi = \mathrm{argsort}(\bar h^{2L})$; the
# colour scale of each panel is clipped at the 99th percentile of its |mean| so that the few massive
# units (below) do not wash out the rest.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1B: mean activation of every unit (rows, sorted by the last sublayer) per sublayer; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1b"}, "image": {"alt": "Heatmaps of the mean activation of each unit (rows) over sublayers (columns), Fig 1B; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_mean_activations,
     {(m, c): (S[m, c]["mean"], S[m, c]["order"]) for m, c in RUNS},
     row_kwargs=ch.per_model);

# %% tags=["remove-input"]
for m in ch.models:
    mean = S[m, "original"]["mean"]
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
    {(m, c): S[m, c]["r"] for m, c in RUNS},
    row_kwargs=ch.per_model,
);

# %% [markdown]
# A unit that is constant over the texts at a sublayer has no correlation there (NaN). If every text
# ends in the same token, the first sublayer (that token's embedding) is constant for all units and the
# first transition is undefined; "the first layer" below is then the first transition of each kind
# whose correlation is defined.

# %% tags=["remove-input"]
for m, c in RUNS:
    med = metrics.median_by_transition(S[m, c]["r"])["all"]
    ch.record(m, "r_undefined_first", float(np.mean(np.isnan(S[m, c]["r"][0]))), figure="1C",
              condition=c, claim="fraction of units whose r is undefined (constant) at the first transition")
    lab, x = ch.labels[m], rs[m, c]
    for name, t in metrics.first_last_defined(med).items():  # within_first, cross_first, ..._last
        est, lo, hi = bootstrap_correlation(x[:, t], x[:, t + 1], n_boot=N_BOOT, seed=SEED)
        ch.record(m, f"r_{name}", est, ci=(lo, hi), figure="1C", condition=c, transition=t,
                  claim=f"median r over units, {name.split('_')[0]}-layer transition "
                        f"{lab[t]} → {lab[t + 1]}")

# %% [markdown]
# ## Figure 1D: per-unit distribution of correlations
# For each unit, the density of its correlations binned on [0, 1]. The results section and the figure
# caption speak of the distribution "over the 63 layer transitions" (the paper's model has 64 sublayers;
# successive pairs, the values of Fig 1C); the methods define it over all pairs l < m. We show the
# successive version as Fig 1D and the all-pairs version below it. Rows sorted by each unit's median
# correlation; the white line is the density pooled over units.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1D: per-unit density of the correlations between successive sublayers, units sorted by their median; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1d"}, "image": {"alt": "Heatmaps of each unit's distribution of successive-sublayer correlations on 0 to 1, Fig 1D; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_correlation_histogram, {(m, c): S[m, c]["hist"] for m, c in RUNS});

# %% mystnb={"figure": {"caption": "Fig. 1D by the methods' definition: per-unit density of the correlations over all sublayer pairs l < m; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1d-pairs"}, "image": {"alt": "Heatmaps of each unit's distribution of correlations over all sublayer pairs, Fig 1D all-pairs version; one row per model ({models}); columns: original texts, shuffled-token control"}}
fig = grid(plot_metrics.plot_correlation_histogram,
           {(m, c): S[m, c]["hist_pairs"] for m, c in RUNS})
fig.suptitle("all sublayer pairs l < m (the methods' definition)");

# %% tags=["remove-input"]
for m, c in RUNS:
    frac_pairs = float(np.mean(np.nanmedian(S[m, c]["r_pairs"], axis=0) > 0.5))
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
    {(m, c): {"raw": S[m, c]["cos"], "centred": S[m, c]["ccos"]} for m, c in RUNS},
    row_kwargs=ch.per_model,
);

# %% tags=["remove-input"]
for m, c in RUNS:
    for name in ("cos", "ccos"):
        est, lo, hi = bootstrap("mean", S[m, c][name], n_boot=N_BOOT, seed=SEED)  # per transition
        w, x = metrics.split_transitions(est)
        (w_lo, x_lo), (w_hi, x_hi) = metrics.split_transitions(lo), metrics.split_transitions(hi)
        what = "raw" if name == "cos" else "centred"
        ch.record(m, f"{name}_within_mean", np.nanmean(w), figure="1E", condition=c,
                  ci=(np.nanmean(w_lo), np.nanmean(w_hi)),
                  claim=f"mean {what} cosine, within-layer transitions")
        ch.record(m, f"{name}_cross_mean", np.nanmean(x), figure="1E", condition=c,
                  ci=(np.nanmean(x_lo), np.nanmean(x_hi)),
                  claim=f"mean {what} cosine, cross-layer transitions")

# %% [markdown]
# ## Figure 1F: velocity
# $\|h_{t+1} - h_t\|_2$ per text; median over texts with the interquartile band. In a pre-norm
# transformer the within-layer step is the attention block's output and the cross-layer step the MLP's.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1F: velocity, the distance between successive residual-stream vectors per text, median over texts with the interquartile band; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1f"}, "image": {"alt": "Line plots of the velocity between successive sublayers against transition, median and interquartile band, Fig 1F; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_velocity, {(m, c): S[m, c]["vel"] for m, c in RUNS},
     row_kwargs=ch.per_model);

# %% tags=["remove-input"]
for m, c in RUNS:
    est = S[m, c]["vel"].mean(0)
    ch.record(m, "vel_last_over_first", est[-1] / est[0], figure="1F", condition=c,
              claim="mean velocity at the last transition / at the first")

# %% [markdown]
# ## Figure 1G, 1H: mutual information between successive sublayers
# The paper's estimator is the Gaussian-KDE plug-in (`"kde"`: Scott's bandwidth, densities evaluated at
# the samples themselves, 1e-10 added before the logs); it is biased upwards and depends on the
# activation scale through that 1e-10. For comparison: the Kraskov k-NN estimator (`"ksg"`, k = 3) and
# the bias-corrected Gaussian-copula MI (`"gcmi"`, a lower bound). G: per unit (rows in the Fig 1B
# order), H: mean over units.

# %% mystnb={"figure": {"caption": "Paper's Fig. 1G: mutual information (Gaussian KDE, the paper's estimator) of each unit between successive sublayers, units in the Fig. 1B order; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1g"}, "image": {"alt": "Heatmaps of each unit's KDE mutual information between successive sublayers, Fig 1G; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_mi_units,
     {(m, c): (S[m, c]["mi_main"], mi_order[m]) for m, c in RUNS}, row_kwargs=ch.per_model);

# %% mystnb={"figure": {"caption": "Paper's Fig. 1H: mean mutual information over units between successive sublayers (Gaussian KDE); one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1h"}, "image": {"alt": "Line plots of the mean KDE mutual information over units against transition, Fig 1H; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_mi_mean, {(m, c): S[m, c]["mi_main"] for m, c in RUNS},
     row_kwargs=ch.per_model);

# %% [markdown]
# ### The estimators side by side
# Mean MI over units per transition for every estimator in `MI_METHODS`, on the same `MI_COMPARE_UNITS`
# units (the k-NN estimator costs far more than the others at large N). The ledger rows below are
# per estimator on these units; the paper's estimator on all `MI_UNITS` units is recorded as `mi_main_*`.
# `kde` and `kde_exact` are the same estimate: the first sums the kernels on a fine grid (each point set
# checked against the exact sum), the second exactly; their largest relative difference is recorded as
# `mi_kde_grid_max_rel_diff`.

# %% mystnb={"figure": {"caption": "Fig. 1H with every estimator: mean mutual information over the compared units per transition, one line per estimator; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1h-estimators"}, "image": {"alt": "Line plots of the mean mutual information against transition for the KDE, KSG and Gaussian-copula estimators, Fig 1H; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_mi_mean, {(m, c): S[m, c]["mi"] for m, c in RUNS},
     row_kwargs=ch.per_model);

# %% tags=["remove-input"]
for m, c in RUNS:
    if {"kde", "kde_exact"} <= set(MI_METHODS):
        ch.record(m, "mi_kde_grid_max_rel_diff", metrics.max_relative_difference(
            S[m, c]["mi"]["kde"], S[m, c]["mi"]["kde_exact"]), figure="1H", condition=c,
            claim="largest relative difference of MI, gridded vs exact kernel sums (same estimate)")
    lab, kind = ch.labels[m], metrics.transition_kind(ch.n_sublayers[m])
    early = metrics.early_stop(ch.n_sublayers[m] - 1)  # the first third of the transitions
    for est, mi in ([("main", S[m, c]["mi_main"])] + [(e, S[m, c]["mi"][e]) for e in MI_METHODS]):
        name = f"{main_mi}, all MI units" if est == "main" else f"{est}, {len(compare[m])} units"
        mean_mi = metrics.mean_by_transition(mi)["all"]
        t0 = int(metrics.defined_transitions(mean_mi)[0])
        ch.record(m, f"mi_{est}_first", mean_mi[t0], figure="1H", condition=c, unit="nats",
                  estimator=name, transition=t0,
                  claim=f"mean MI ({name}) at the first defined transition {lab[t0]} → {lab[t0 + 1]}")
        ch.record(m, f"mi_{est}_min_early", np.nanmin(mean_mi[:early]), figure="1H", condition=c,
                  unit="nats", estimator=name, claim=f"smallest mean MI ({name}) in the first third")
        t = metrics.largest_drop(mean_mi, stop=early)
        ch.record(m, f"mi_{est}_steepest_drop_at", t, figure="1H", condition=c, estimator=name,
                  claim=f"transition of the largest early drop of mean MI ({name}): "
                        f"{lab[t]} → {lab[t + 1]}, {kind[t]}-layer")

# %% [markdown]
# ## Massive units
# Some units can carry activations orders of magnitude above the rest ("massive activations",
# Sun et al. 2024); we call a unit massive when its magnitude exceeds 20 times the median unit's. Such
# units dominate the RS vector's norm, hence the raw cosine and the velocity; per-unit statistics (r, MI)
# of the other units are untouched by them. How many each model has is listed below (and in the table);
# then Fig 1B, 1E and 1F without them.

# %%
massive = {m: metrics.massive_units(rs[m, "original"]) for m in ch.models}
S_wo = {}
for m, c in RUNS:
    x = metrics.without_units(rs[m, c], massive[m])
    S_wo[m, c] = {
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
    {(m, c): (S_wo[m, c]["mean"], S_wo[m, c]["order"]) for m, c in RUNS},
    row_kwargs=ch.per_model,
    title="Mean activation, no massive units",
);

# %% tags=["remove-input"]
for m in ch.models:
    ch.ledger.record("n_massive_units", len(massive[m]), model=m, units=massive[m][:16],
                     claim="units whose magnitude exceeds 20x the median unit's")

# %% mystnb={"figure": {"caption": "Fig. 1E with and without the massive units (raw cosine); one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1e-no-massive"}, "image": {"alt": "Line plots of the raw cosine similarity between successive sublayers with all units and without the massive units, Fig 1E; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_cosine_similarity,
     {(m, c): {"all units": S[m, c]["cos"], "without massive": S_wo[m, c]["cos"]}
      for m, c in RUNS},
     row_kwargs=ch.per_model);

# %% mystnb={"figure": {"caption": "Fig. 1F with and without the massive units; one row per model ({models}); columns: original texts, shuffled-token control.", "name": "fig-02-1f-no-massive"}, "image": {"alt": "Line plots of the velocity between successive sublayers with all units and without the massive units, Fig 1F; one row per model ({models}); columns: original texts, shuffled-token control"}}
grid(plot_metrics.plot_velocity,
     {(m, c): {"all units": S[m, c]["vel"], "without massive": S_wo[m, c]["vel"]}
      for m, c in RUNS},
     row_kwargs=ch.per_model);

# %% tags=["remove-input"]
for m in ch.models:
    cos_w, cos_x = metrics.split_transitions(S_wo[m, "original"]["cos"].mean(0))
    ch.ledger.record("cos_within_mean_no_massive", np.nanmean(cos_w), model=m, figure="1E",
                     claim="mean raw cosine, within-layer, without massive units")
    ch.ledger.record("cos_cross_mean_no_massive", np.nanmean(cos_x), model=m, figure="1E",
                     claim="mean raw cosine, cross-layer, without massive units")
    vel_cross = metrics.split_transitions(S_wo[m, "original"]["vel"].mean(0))[1]
    ch.ledger.record("vel_steepest_third_cross_no_massive", metrics.steepest_segment(vel_cross) + 1,
                     model=m, figure="1F", unit="third",
                     claim="third with the largest cross-layer velocity increase, without massive units")

# %% [markdown]
# ## The paper's statements, decided
# Each statement of this section is a claim of the registry (`transformer_dynamics.claims`): its value
# and uncertainty come from `robustness.claim_evidence` (bootstrap intervals over texts; permutation
# tests for trends, sign tests over layers for orderings; the MI claims on the `MI_COMPARE_UNITS` units,
# with each estimator in `MI_METHODS` as a reading), and the registry decides: ✓ holds, ✗ fails,
# ? undecided (the interval straddles the threshold, p ≥ 0.05, the value is undefined, or the claim's
# premise does not hold). Chapter 8 varies every open choice.

# %% tags=["remove-input"]
evidence = robustness.claim_evidence_runs(  # the runs side by side, one process per core
    {(m, c): rs[m, c] for m, c in RUNS}, names=("model", "condition"),
    per_run={(m, c): {"mi_units": compare[m]} for m, c in RUNS},
    groups=("mean", "r", "cos", "vel", "mi"), n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW, seed=SEED,
    mi_methods=MI_METHODS)
for (m, c), ev in evidence.groupby(["model", "condition"], sort=False):
    ch.ledger.claim_table(ev, model=m, condition=c)

# %% [markdown]
# The rows, one per model (original texts unless the claim ends in "[shuffled-token control]"); readings other
# than the headline name themselves in brackets.

# %% tags=["remove-input"]
show_table(ch.ledger, paper=True)

# %% [markdown]
# The other recorded values:

# %% tags=["remove-input"]
show_table(ch.ledger, paper=False)
