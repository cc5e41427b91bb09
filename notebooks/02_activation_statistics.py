# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
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
# We compute every panel for the original texts and for the paper's control in which the tokens of
# each text are shuffled, and record each statement's number, with a bootstrap interval over texts
# where it is cheap, in the ledger. The table at the end puts the paper's statements next to ours.

# %% tags=["parameters"]
MODEL = "smollm2-135m"   # short name, Hugging Face id or local path
N = 1000                 # texts
SEED = 0
CACHE_DIR = None         # None: $TRANSFORMER_DYNAMICS_CACHE or the user cache dir
LEDGER_DIR = None        # None: ./ledger
QUANTIZATION = None      # None, "8bit" or "4bit" (the Colab profile loads Llama 3.1 8B in 4-bit)
MI_METHODS = ["kde", "ksg", "gcmi"]  # "kde" is the paper's estimator
MI_UNITS = None          # None: all units; an int: a random subset of that many units (Fig 1G/H)
MI_COMPARE_UNITS = 64    # the estimator comparison runs every method in MI_METHODS on this many of them
N_BOOT = 1000            # bootstrap resamples of the texts for the intervals

# %% tags=["remove-cell"]
# In Colab: install the package and take the GPU profile (Llama 3.1 8B in 4-bit). Does nothing elsewhere.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "transformer-dynamics[quant] @ git+https://github.com/transformer-dynamics/transformer-dynamics"], check=True)
    from transformer_dynamics.profiles import load_profile
    globals().update(load_profile("colab", "02_activation_statistics"))

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from transformer_dynamics import metrics, pipeline
from transformer_dynamics.capture import sublayer_labels
from IPython.display import Markdown

from transformer_dynamics.ledger import Ledger, to_table
from transformer_dynamics.plots import activity
from transformer_dynamics.plots.style import side_by_side
from transformer_dynamics.stats import bootstrap, bootstrap_correlation

CONDITIONS = ("original", "shuffled")
led = Ledger("02_activation_statistics", directory=LEDGER_DIR, model=MODEL, n=N, seed=SEED,
             mi_units=MI_UNITS, mi_compare_units=MI_COMPARE_UNITS, mi_methods=list(MI_METHODS))
rs = {c: pipeline.residual_stream(MODEL, n=N, seed=SEED, condition=c, cache_dir=CACHE_DIR,
                                  quantization=QUANTIZATION)
      for c in CONDITIONS}
n_samples, n_sublayers, d_model = rs["original"].shape
labels = sublayer_labels(n_sublayers // 2)
kinds = metrics.transition_kind(n_sublayers)
print(f"{MODEL}: rs {rs['original'].shape} (texts, sublayers, units)")


def record(key, value, *, condition="original", claim="", **kwargs):
    """Ledger record; rows of the shuffled control get a key suffix and say so in their claim."""
    if condition != "original":
        key, claim = f"{key}_{condition}", f"{claim} [{condition}-token control]"
    led.record(key, value, claim=claim, condition=condition, **kwargs)


# %% [markdown]
# ## Computing the statistics
# All in `transformer_dynamics.metrics`: means per unit and sublayer, each unit's Pearson r between
# successive sublayers (and between all pairs l < m), the cosine similarity and the velocity of
# successive RS vectors per text, and each unit's MI between successive sublayers with every estimator
# in `MI_METHODS`.

# %%
units = metrics.subsample_units(d_model, MI_UNITS, seed=SEED)
compare = np.sort(units[metrics.subsample_units(units.size, MI_COMPARE_UNITS, seed=SEED)])
main_mi = "kde" if "kde" in MI_METHODS else MI_METHODS[0]
S = {}
for c in CONDITIONS:
    x = rs[c]
    S[c] = {
        "mean": metrics.mean_activations(x),
        "order": metrics.unit_order(x),
        "r": metrics.successive_correlation(x),
        "r_pairs": metrics.pairwise_correlation(x),
        "cos": metrics.cosine_similarity(x),
        "ccos": metrics.centered_cosine_similarity(x),
        "vel": metrics.velocity(x),
        "mi_main": metrics.mutual_information(x, main_mi, units=units),
    }
    in_compare = np.isin(units, compare)
    S[c]["mi"] = {m: S[c]["mi_main"][:, in_compare] if m == main_mi else
                  metrics.mutual_information(x, m, units=compare) for m in MI_METHODS}
    S[c]["hist"] = metrics.correlation_histogram(S[c]["r"])
    S[c]["hist_pairs"] = metrics.correlation_histogram(S[c]["r_pairs"])
mi_order = np.argsort(np.argsort(S["original"]["order"])[units])  # MI units in the Fig 1B order

# %% [markdown]
# ## Figure 1B: mean activations
# Units (rows) sorted by their mean at the last sublayer, $\pi = \mathrm{argsort}(\bar h^{2L})$; the
# colour scale is clipped at the 99th percentile of |mean| so that the few massive units (below) do not
# wash out the rest.

# %%
side_by_side(activity.plot_mean_activations,
             {c: (S[c]["mean"], S[c]["order"]) for c in CONDITIONS}, labels=labels);

# %%
m = S["original"]["mean"]
abs_first, abs_last = np.abs(m[0]).mean(), np.abs(m[-1]).mean()
led.record("mean_abs_first", abs_first, claim="mean |activation| over units at the first sublayer",
           figure="1B")
led.record("mean_abs_last", abs_last, claim="mean |activation| over units at the last sublayer",
           figure="1B")
led.record("magnitude_trend", metrics.depth_trend(np.abs(m).mean(1)),
           claim="activations increase in magnitude over the layers (Spearman rho of mean |activation| "
                 "with depth)", paper="increase over the layers", holds=metrics.depth_trend(np.abs(m).mean(1)) > 0,
           figure="1B")
sign = metrics.sign_agreement(m)
led.record("sign_agreement_second_half", sign[n_sublayers // 2:-1].mean(),
           claim="units preserve their sign over the layers (fraction of units with the last sublayer's "
                 "sign, averaged over the second half of the sublayers; chance 0.5)",
           paper="units tend to preserve their sign", holds=sign[n_sublayers // 2:-1].mean() > 0.5,
           figure="1B")

# %% [markdown]
# ## Figure 1C: correlation of each unit between successive sublayers
# Pearson r of unit u between sublayer t and t + 1 over the N texts (`successive_correlation`): faint
# lines are individual units, thick lines the median over units with the interquartile band,
# within-layer transitions (attn → mlp) green, cross-layer (mlp → next attn) blue.

# %%
side_by_side(activity.plot_successive_correlation, {c: S[c]["r"] for c in CONDITIONS}, labels=labels);

# %% [markdown]
# A unit that is constant over the texts at a sublayer has no correlation there (NaN). If every text
# ends in the same token, the first sublayer (that token's embedding) is constant for all units and the
# first transition is undefined; "the first layer" below is then the first transition of each kind
# whose correlation is defined.

# %%
for c in CONDITIONS:
    med = metrics.median_by_transition(S[c]["r"])["all"]
    record(f"r_undefined_first", float(np.mean(np.isnan(S[c]["r"][0]))), figure="1C",
               condition=c, claim="fraction of units whose r is undefined (constant) at the first transition")
    defined = np.flatnonzero(np.isfinite(med))
    first = {k: defined[kinds[defined] == k][0] for k in ("within", "cross")}
    last = {k: defined[kinds[defined] == k][-1] for k in ("within", "cross")}
    for name, t in [("within_first", first["within"]), ("cross_first", first["cross"]),
                    ("within_last", last["within"]), ("cross_last", last["cross"])]:
        est, lo, hi = bootstrap_correlation(rs[c][:, t], rs[c][:, t + 1], n_boot=N_BOOT, seed=SEED)
        record(f"r_{name}", est, ci=(lo, hi), figure="1C", condition=c, transition=int(t),
                   claim=f"median r over units, {kinds[t]}-layer transition {labels[t]} → {labels[t + 1]}")
    r_first = min(med[first["within"]], med[first["cross"]])
    record(f"r_first_above_0.8", r_first, paper="r > 0.8 even in the earliest layers",
               claim="median r of the first within- and cross-layer transitions (the smaller) > 0.8",
               holds=r_first > 0.8, figure="1C", condition=c)
    med_w, med_c = metrics.split_transitions(med)
    for kind, series in [("within", med_w), ("cross", med_c)]:
        rho = metrics.depth_trend(series)
        record(f"r_trend_{kind}", rho, paper="correlation increases over layers",
                   claim=f"Spearman rho of median r with depth, {kind}-layer transitions",
                   holds=rho > 0, figure="1C", condition=c)
    frac = metrics.within_above_cross(med)
    record(f"r_within_above_cross", frac, paper="within-layer r consistently higher than cross-layer",
               claim="fraction of layers whose within-layer median r exceeds the cross-layer one",
               holds=frac > 0.5, figure="1C", condition=c)

# %% [markdown]
# ## Figure 1D: per-unit distribution of correlations
# For each unit, the density of its correlations binned on [0, 1]. The results section and the figure
# caption speak of the distribution "over the 63 layer transitions" (successive pairs, the values of
# Fig 1C); the methods define it over all pairs l < m. We show the successive version as Fig 1D and the
# all-pairs version below it. Rows sorted by each unit's median correlation; the white line is the
# density pooled over units.

# %%
side_by_side(activity.plot_correlation_histogram, {c: S[c]["hist"] for c in CONDITIONS});

# %%
fig = side_by_side(activity.plot_correlation_histogram, {c: S[c]["hist_pairs"] for c in CONDITIONS})
fig.suptitle("all sublayer pairs l < m (the methods' definition)");

# %%
for c in CONDITIONS:
    frac_high = float(np.mean(np.nanmedian(S[c]["r"], axis=0) > 0.8))
    record(f"units_median_r_above_0.8", frac_high, figure="1D", condition=c,
               paper="most units maintain strong correlations throughout the network",
               claim="fraction of units whose median successive r exceeds 0.8", holds=frac_high > 0.5)
    frac_pairs = float(np.mean(np.nanmedian(S[c]["r_pairs"], axis=0) > 0.5))
    record(f"units_median_pair_r_above_0.5", frac_pairs, figure="1D", condition=c,
               claim="fraction of units whose median r over all sublayer pairs l < m exceeds 0.5")

# %% [markdown]
# ## Figure 1E: cosine similarity of successive RS vectors
# The raw cosine (as in the paper) is inflated by the large mean direction the RS shares across texts
# (and by the massive units); the centred cosine subtracts each sublayer's mean vector over texts
# first and measures whether the text-specific part keeps its direction.

# %%
side_by_side(activity.plot_cosine_similarity,
             {c: {"raw": S[c]["cos"], "centred": S[c]["ccos"]} for c in CONDITIONS}, labels=labels);

# %%
for c in CONDITIONS:
    for name, key in [("cos", "cos"), ("ccos", "ccos")]:
        est, lo, hi = bootstrap("mean", S[c][key], n_boot=N_BOOT, seed=SEED)  # per transition
        w, x = metrics.split_transitions(est)
        (w_lo, x_lo), (w_hi, x_hi) = metrics.split_transitions(lo), metrics.split_transitions(hi)
        what = "raw" if key == "cos" else "centred"
        record(f"{name}_within_mean", np.nanmean(w), figure="1E", condition=c,
                   ci=(np.nanmean(w_lo), np.nanmean(w_hi)), claim=f"mean {what} cosine, within-layer transitions")
        record(f"{name}_cross_mean", np.nanmean(x), figure="1E", condition=c,
                   ci=(np.nanmean(x_lo), np.nanmean(x_hi)), claim=f"mean {what} cosine, cross-layer transitions")
        frac = metrics.within_above_cross(est)
        record(f"{name}_within_above_cross", frac, figure="1E", condition=c,
                   paper="within-layer transitions more similar than cross-layer",
                   claim=f"fraction of layers whose within-layer mean {what} cosine exceeds the cross-layer one",
                   holds=frac > 0.5)
        rho = metrics.depth_trend(est)
        record(f"{name}_trend", rho, figure="1E", condition=c,
                   paper="cosine similarity increases as a function of layers",
                   claim=f"Spearman rho of mean {what} cosine with depth", holds=rho > 0)

# %% [markdown]
# ## Figure 1F: velocity
# $\|h_{t+1} - h_t\|_2$ per text; median over texts with the interquartile band. In a pre-norm
# transformer the within-layer step is the attention block's output and the cross-layer step the MLP's.

# %%
side_by_side(activity.plot_velocity, {c: S[c]["vel"] for c in CONDITIONS}, labels=labels);

# %%
for c in CONDITIONS:
    est, lo, hi = bootstrap("mean", S[c]["vel"], n_boot=N_BOOT, seed=SEED)
    w, x = metrics.split_transitions(est)
    for kind, series in [("within", w), ("cross", x)]:
        seg = metrics.steepest_segment(series)
        record(f"vel_steepest_third_{kind}", seg + 1, figure="1F", condition=c, unit="third",
                   paper="steepest acceleration in the last third of the model",
                   claim=f"third of the model (1-3) with the largest mean velocity increase, {kind}-layer",
                   holds=seg == 2)
        rho = metrics.depth_trend(series)
        record(f"vel_trend_{kind}", rho, figure="1F", condition=c,
                   paper="velocity increases (accelerates) over the layers",
                   claim=f"Spearman rho of mean velocity with depth, {kind}-layer", holds=rho > 0)
    frac = 1.0 - metrics.within_above_cross(est)
    record(f"vel_cross_above_within", frac, figure="1F", condition=c,
               paper="cross-layer transitions consistently showed higher velocities",
               claim="fraction of layers whose cross-layer mean velocity exceeds the within-layer one",
               holds=frac > 0.5)
    record(f"vel_last_over_first", est[-1] / est[0], figure="1F", condition=c,
               claim="mean velocity at the last transition / at the first")

# %% [markdown]
# ## Figure 1G, 1H: mutual information between successive sublayers
# The paper's estimator is the Gaussian-KDE plug-in (`"kde"`: Scott's bandwidth, densities evaluated at
# the samples themselves, 1e-10 added before the logs); it is biased upwards and depends on the
# activation scale through that 1e-10. For comparison: the Kraskov k-NN estimator (`"ksg"`, k = 3) and
# the bias-corrected Gaussian-copula MI (`"gcmi"`, a lower bound). G: per unit (rows in the Fig 1B
# order), H: mean over units.

# %%
side_by_side(activity.plot_mi_units, {c: (S[c]["mi_main"], mi_order) for c in CONDITIONS},
             labels=labels);

# %%
side_by_side(activity.plot_mi_mean, {c: S[c]["mi_main"] for c in CONDITIONS}, labels=labels);

# %% [markdown]
# ### The estimators side by side
# Mean MI over units per transition for every estimator in `MI_METHODS`, on the same `MI_COMPARE_UNITS`
# units (the k-NN estimator costs far more than the others at large N). The ledger rows below are
# per estimator on these units; the paper's estimator on all `MI_UNITS` units is recorded as `mi_main_*`.

# %%
side_by_side(activity.plot_mi_mean, {c: S[c]["mi"] for c in CONDITIONS}, labels=labels);

# %%
early = max(4, (n_sublayers - 1) // 3)  # the first third of the transitions
for c in CONDITIONS:
    for m, mi, cols in [("main", S[c]["mi_main"], units)] + [(m, S[c]["mi"][m], compare) for m in MI_METHODS]:
        name = f"{main_mi}, all MI units" if m == "main" else f"{m}, {len(compare)} units"
        med_r = metrics.median_by_transition(S[c]["r"][:, cols])["all"]
        with np.errstate(all="ignore"):
            mean_mi = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in mi])
        rho = metrics.depth_trend(mean_mi[:early])
        record(f"mi_{m}_early_trend", rho, figure="1H", condition=c, estimator=name,
                   paper="sharp decline of MI in early layers",
                   claim=f"Spearman rho of mean MI ({name}) with depth over the first third of transitions",
                   holds=rho < 0)
        t0 = int(np.flatnonzero(np.isfinite(mean_mi))[0])
        record(f"mi_{m}_first", mean_mi[t0], figure="1H", condition=c, unit="nats",
                   estimator=name, transition=t0,
                   claim=f"mean MI ({name}) at the first defined transition {labels[t0]} → {labels[t0 + 1]}")
        record(f"mi_{m}_min_early", np.nanmin(mean_mi[:early]), figure="1H", condition=c,
                   unit="nats", estimator=name, claim=f"smallest mean MI ({name}) in the first third")
        t = metrics.largest_drop(mean_mi, stop=early)
        record(f"mi_{m}_steepest_drop_cross", t, figure="1H", condition=c, estimator=name,
                   paper="steepest drops at cross-layer transitions",
                   claim=f"the largest early drop of mean MI ({name}) is into a cross-layer transition "
                         f"(here {labels[t]} → {labels[t + 1]}, {kinds[t]}-layer)",
                   holds=kinds[t] == "cross")
        corr = float(pd.Series(mean_mi).corr(pd.Series(med_r), method="spearman"))
        record(f"mi_{m}_vs_r", corr, figure="1G", condition=c, estimator=name,
                   paper="MI falls while linear correlations rise",
                   claim=f"Spearman rho over transitions between mean MI ({name}) and median r", holds=corr < 0)

# %% [markdown]
# ## Massive units
# A handful of units carry activations orders of magnitude above the rest ("massive activations",
# Sun et al. 2024). They dominate the RS vector's norm, hence the raw cosine and the velocity; per-unit
# statistics (r, MI) of the other units are untouched by them. Below: Fig 1B, 1E and 1F without them.

# %%
massive = metrics.massive_units(rs["original"])
led.record("n_massive_units", len(massive), claim="units whose magnitude exceeds 20x the median unit's",
           units=massive[:16])
print("massive units:", massive)
rs_wo = {c: metrics.without_units(rs[c], massive) for c in CONDITIONS}
S_wo = {c: {"cos": metrics.cosine_similarity(rs_wo[c]), "vel": metrics.velocity(rs_wo[c]),
            "mean": metrics.mean_activations(rs_wo[c]), "order": metrics.unit_order(rs_wo[c])}
        for c in CONDITIONS}
side_by_side(activity.plot_mean_activations, {c: (S_wo[c]["mean"], S_wo[c]["order"]) for c in CONDITIONS},
             labels=labels, title="Mean activation, massive units removed");

# %%
side_by_side(activity.plot_cosine_similarity,
             {c: {"all units": S[c]["cos"], "without massive": S_wo[c]["cos"]} for c in CONDITIONS},
             labels=labels);

# %%
side_by_side(activity.plot_velocity,
             {c: {"all units": S[c]["vel"], "without massive": S_wo[c]["vel"]} for c in CONDITIONS},
             labels=labels);

# %%
cos_wo = metrics.split_transitions(S_wo["original"]["cos"].mean(0))
led.record("cos_within_mean_no_massive", np.nanmean(cos_wo[0]), figure="1E",
           claim="mean raw cosine, within-layer, without massive units")
led.record("cos_cross_mean_no_massive", np.nanmean(cos_wo[1]), figure="1E",
           claim="mean raw cosine, cross-layer, without massive units")
seg = metrics.steepest_segment(S_wo["original"]["vel"].mean(0)[1::2])
led.record("vel_steepest_third_cross_no_massive", seg + 1, figure="1F", unit="third", holds=seg == 2,
           paper="steepest acceleration in the last third",
           claim="third with the largest cross-layer velocity increase, without massive units")

# %% [markdown]
# ## The paper's statements next to ours
# Every row is a ledger entry written above (original texts unless the key ends in `_shuffled`).
# ✓ / ✗: whether our number supports the paper's statement.

# %%
record = led.to_dict()
Markdown(to_table({**record, "entries": [e for e in record["entries"] if e["paper"]]}))

# %% [markdown]
# The other recorded values:

# %%
Markdown(to_table({**record, "entries": [e for e in record["entries"] if not e["paper"]]}))
