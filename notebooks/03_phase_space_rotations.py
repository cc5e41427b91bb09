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
# # 3. Rotations of single units in activation-gradient space (Figure 2)
#
# Section 3.2 of the paper draws each residual-stream (RS) unit as a path in the plane of its activation
# $a_l$ and the activation's gradient over the sublayers $\nabla a_l$, and finds "rotational dynamics
# characteristic of unstable periodic orbits" (2A): a mean of **10.74 rotations** per unit over the 64
# sublayers of Llama 3.1 8B, against **~0** when the layer order of each unit is shuffled 1000 times
# (2B), for most of the 4096 units (2C).
#
# We follow the methods (§2.6) exactly (`transformer_dynamics.phase`): the gradient is
# `numpy.gradient` over sublayers (central differences), the portrait is centred at sublayer 0,
# $\theta_l = \mathrm{atan2}(\Delta y_l, \Delta x_l)$ are the angles of the tangent steps, and
# $R = \frac{1}{2\pi}\sum_l \Delta\theta_l$ with $\Delta\theta_l$ wrapped into $(-\pi, \pi]$. $R$ is signed,
# counter-clockwise positive. Three things the paper leaves open, and what we do:
#
# - **Whose trajectory?** A unit's mean over texts (`mode="mean"`, our primary choice: one portrait and
#   one count per unit, as in Fig 2A/2C) or each text's own trajectory, counts averaged over texts
#   (`mode="per_sample"`). We report both.
# - **Which shuffle?** Permuting a unit's activations and recomputing the gradient (`what="sublayers"`,
#   the literal reading), or permuting the portrait's points $(a_l, \nabla a_l)$ (`what="points"`).
#   They give very different nulls (below), so we report both.
# - **Which sign?** The paper reports a positive mean without saying which way it counts. In this plane
#   oscillations run clockwise (where the gradient is positive the activation grows), so we also report
#   the mean of $|R|$.

# %% tags=["parameters"]
MODEL = "smollm2-135m"   # short name, Hugging Face id or local path
N = 1000                 # texts
SEED = 0
CACHE_DIR = None         # None: $TRANSFORMER_DYNAMICS_CACHE or the user cache dir
LEDGER_DIR = None        # None: ./ledger
QUANTIZATION = None      # None, "8bit" or "4bit" (the Colab profile loads Llama 3.1 8B in 4-bit)
N_SHUFFLES = 1000        # layer-order shuffles per unit (paper §2.6)
N_PORTRAITS = 16         # units drawn in Fig 2A
PER_SAMPLE_SHUFFLES = 10     # shuffles for the per-sample null (each costs N times a mean-mode shuffle)
PER_SAMPLE_MAX_TEXTS = 200   # texts used in the per-sample null

# %% tags=["remove-cell"]
# In Colab: install the package and take the GPU profile (Llama 3.1 8B in 4-bit). Does nothing elsewhere.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "transformer-dynamics[quant] @ git+https://github.com/transformer-dynamics/transformer-dynamics"], check=True)
    from transformer_dynamics.profiles import load_profile
    globals().update(load_profile("colab", "03_phase_space_rotations"))

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from transformer_dynamics import phase, pipeline
from transformer_dynamics.capture import sublayer_labels
from transformer_dynamics.ledger import Ledger
from transformer_dynamics.plots import portraits

CONDITIONS = ("original", "shuffled")
NULLS = ("sublayers", "points")
PAPER_MEAN, PAPER_SUBLAYERS = 10.74, 64
led = Ledger("03_phase_space_rotations", directory=LEDGER_DIR, model=MODEL, n=N, seed=SEED,
             n_shuffles=N_SHUFFLES, per_sample_shuffles=PER_SAMPLE_SHUFFLES,
             per_sample_max_texts=PER_SAMPLE_MAX_TEXTS)
rs = {c: pipeline.residual_stream(MODEL, n=N, seed=SEED, condition=c, cache_dir=CACHE_DIR,
                                  quantization=QUANTIZATION)
      for c in CONDITIONS}
n_samples, n_sublayers, d_model = rs["original"].shape
labels = sublayer_labels(n_sublayers // 2)
print(f"{MODEL}: rs {rs['original'].shape} (texts, sublayers, units)")

# %% [markdown]
# ## Rotation counts and their nulls
# For each condition (original texts, and the paper's control with each text's tokens shuffled): the count
# of every unit's mean trajectory with both shuffle nulls (`N_SHUFFLES` each), and every text's own
# count. The per-sample null is `N` times costlier, so it uses `PER_SAMPLE_SHUFFLES` shuffles of the first
# `PER_SAMPLE_MAX_TEXTS` texts (one permutation per unit and shuffle, shared by the texts).

# %%
R = {}
for c in CONDITIONS:
    x = rs[c]
    R[c] = {
        "traj": x.mean(0),                                   # (n_sublayers, d_model)
        "mean": phase.rotations_per_unit(x, "mean"),         # (d_model,)
        "samples": phase.rotations_per_sample(x),            # (n_samples, d_model)
        "null": {w: phase.null_per_unit(x, "mean", N_SHUFFLES, seed=SEED, what=w) for w in NULLS},
        "null_ps": {w: phase.null_per_unit(x, "per_sample", PER_SAMPLE_SHUFFLES, seed=SEED, what=w,
                                           max_samples=PER_SAMPLE_MAX_TEXTS) for w in NULLS},
    }
    R[c]["per_sample"] = R[c]["samples"].mean(0)
reference = {k: phase.reference_counts(n_sublayers, k, seed=SEED) for k in ("random_walk", "iid")}

# %% [markdown]
# ## Figure 2A: phase portraits
# `N_PORTRAITS` units drawn at random (seed `SEED`); each panel is the unit's mean trajectory over the texts
# in the plane (activation, gradient over sublayers), both centred at sublayer 0, coloured from the first
# sublayer (dark) to the last (yellow), the start circled; the title gives the unit's count $R$.

# %%
rng = np.random.default_rng(SEED)
shown = np.sort(rng.choice(d_model, size=min(N_PORTRAITS, d_model), replace=False))
for c in CONDITIONS:
    portraits.plot_phase_portraits(R[c]["traj"], shown, rotations=R[c]["mean"], labels=labels,
                                   suptitle=f"Mean trajectories over {n_samples} texts — {c}");

# %% [markdown]
# The same units in the first text alone (the `per_sample` reading): single-text trajectories are rougher.

# %%
portraits.plot_phase_portraits(rs["original"][0], shown, labels=labels,
                               suptitle="One text's trajectories — original");

# %% [markdown]
# ## Figure 2B: rotations per unit against the shuffle nulls
# Counts of the units' mean trajectories (red) and the pooled null over all units and shuffles (grey);
# left: activations shuffled and the gradient recomputed; right: portrait points shuffled.

# %%
for c in CONDITIONS:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, w in zip(axes, NULLS):
        portraits.plot_rotation_histogram(R[c]["mean"], R[c]["null"][w], ax=ax, null_label=f"null ({w})",
                                          title=f"{c}: null = shuffled {w}")

# %% [markdown]
# ## Figure 2C: every unit with its own null band
# Units sorted by their count; the grey band is each unit's 2.5–97.5 percentile over its shuffles.

# %%
for c in CONDITIONS:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    for ax, w in zip(axes, NULLS):
        portraits.plot_rotations_sorted(R[c]["mean"], R[c]["null"][w], ax=ax,
                                        title=f"{c}: null = shuffled {w}")

# %% [markdown]
# ## How the headline number depends on the choices
# One row per condition, trajectory mode and null: the mean count $R$ and mean $|R|$ per unit, the null's
# mean, the fraction of units whose $|R|$ exceeds the 95th percentile of their own null's $|R|$, and the
# counts per sublayer (this model has a different number of sublayers than Llama 3.1 8B's 64). The last
# rows are structureless references with the same number of sublayers: Gaussian random walks and i.i.d.
# Gaussian values (the count ignores scale and offset, so these need no fitting).

# %%
rows, summary = [], {}
for c in CONDITIONS:
    for mode, obs, nulls in (("mean", R[c]["mean"], R[c]["null"]),
                             ("per_sample", R[c]["per_sample"], R[c]["null_ps"])):
        for w in NULLS:
            s = phase.rotation_summary(obs, nulls[w], n_sublayers=n_sublayers)
            summary[c, mode, w] = s
            rows.append({"condition": c, "mode": mode, "null": w, "shuffles": nulls[w].shape[0], **s})
for k, v in reference.items():
    rows.append({"condition": f"reference: {k}", "mode": "-", "null": "-", "mean": v.mean(),
                 "mean_abs": np.abs(v).mean(), "sd": v.std(), "mean_per_sublayer": v.mean() / n_sublayers})
table = pd.DataFrame(rows)
cols = ["condition", "mode", "null", "shuffles", "mean", "mean_abs", "null_mean", "null_mean_abs",
        "frac_exceeds", "frac_negative", "mean_per_sublayer"]
table[cols].round(3)

# %% [markdown]
# ## Recorded values
# Our primary number is the mean-trajectory count of the original texts. The paper's claim that units
# rotate "compared to approximately zero rotations in shuffle controls" holds for a null when (i) the
# mean |R| of the units exceeds the null's mean |R| and (ii) most units (> 50 %) exceed their own null's
# 95th percentile of |R|.

# %%
led.record("n_sublayers", n_sublayers, claim="sublayers of this model (the paper's Llama 3.1 8B has 64)",
           paper=str(PAPER_SUBLAYERS), figure="2A")
o = summary["original", "mean", "sublayers"]
led.record("rotations_mean", o["mean"],
           claim="mean signed rotation count R per unit (mean trajectory over texts; counter-clockwise > 0)",
           paper=f"{PAPER_MEAN} (sign convention not stated)", figure="2B", unit="rotations")
led.record("rotations_mean_abs", o["mean_abs"], claim="mean |R| per unit (mean trajectory over texts)",
           paper=str(PAPER_MEAN), figure="2B", unit="rotations")
led.record("rotations_mean_abs_per_sublayer", o["mean_abs_per_sublayer"],
           claim="mean |R| per unit divided by the number of sublayers",
           paper=f"{PAPER_MEAN / PAPER_SUBLAYERS:.3f} (10.74 / 64)", figure="2B", unit="rotations per sublayer")
led.record("rotations_frac_clockwise", o["frac_negative"], claim="fraction of units turning clockwise (R < 0)",
           figure="2C")
ps = summary["original", "per_sample", "sublayers"]
led.record("rotations_per_sample_mean", ps["mean"],
           claim="mean signed R per unit, each text's own trajectory, averaged over texts",
           paper=str(PAPER_MEAN), figure="2B", unit="rotations")
led.record("rotations_per_sample_mean_abs", float(np.abs(R["original"]["samples"]).mean()),
           claim="mean |R| over units and texts (each text's own trajectory)", paper=str(PAPER_MEAN),
           figure="2B", unit="rotations")
for w in NULLS:
    s = summary["original", "mean", w]
    led.record(f"null_{w}_mean", s["null_mean"],
               claim=f"mean R of the layer-shuffle null (shuffled {w}, {N_SHUFFLES} shuffles per unit)",
               paper="~0", holds=abs(s["null_mean"]) < 0.1 * abs(s["mean"]), figure="2B", unit="rotations")
    led.record(f"null_{w}_mean_abs", s["null_mean_abs"], claim=f"mean |R| of the null (shuffled {w})",
               figure="2B", unit="rotations")
    led.record(f"frac_units_below_null_{w}", s["frac_below"],
               claim=f"fraction of units whose |R| is below their own null's 5th percentile, i.e. units that "
                     f"turn less than their shuffles (shuffled {w})", figure="2C")
    led.record(f"frac_units_exceed_null_{w}", s["frac_exceeds"],
               claim=f"fraction of units whose |R| exceeds their own null's 95th percentile (shuffled {w})",
               paper="the majority of the 4096 units", holds=s["frac_exceeds"] > 0.5, figure="2C")
    led.record(f"rotations_exceed_null_{w}", s["mean_abs"] - s["null_mean_abs"],
               claim=f"units rotate more than shuffle controls: mean |R| minus the null's (shuffled {w})",
               paper=f"{PAPER_MEAN} vs ~0", holds=(s["mean_abs"] > s["null_mean_abs"]) and s["frac_exceeds"] > 0.5,
               figure="2B", unit="rotations")
sh = summary["shuffled", "mean", "sublayers"]
led.record("rotations_mean_abs_token_shuffled", sh["mean_abs"],
           claim="mean |R| per unit for the token-shuffled texts (mean trajectory)", figure="2B", unit="rotations")
for k, v in reference.items():
    led.record(f"reference_{k}_mean_abs", np.abs(v).mean(),
               claim=f"mean |R| of {k.replace('_', ' ')} trajectories with the same number of sublayers",
               figure="2B", unit="rotations")
rw_abs = np.abs(reference["random_walk"]).mean()
led.record("rotations_minus_random_walk", o["mean_abs"] - rw_abs,
           claim="units rotate more than structureless paths: mean |R| of the units minus that of Gaussian "
                 "random walks with as many sublayers (our check; not in the paper)",
           paper="rotations reflect 'a systematic organizational principle'", holds=o["mean_abs"] > rw_abs,
           figure="2B", unit="rotations")
pd.DataFrame([{k: e.value for k, e in led.entries.items()}]).T.rename(columns={0: "value"})

# %% [markdown]
# ## What we find
# The cell below prints our numbers next to the paper's; the table above has every choice. Read them with
# two facts in mind. The count is a property of the *shape* of a path (it ignores scale and offset), and
# rough paths turn a lot in this plane by themselves (the clockwise drift of $(a, \nabla a)$), so the
# random-walk reference with as many sublayers is the yardstick for "many rotations". And the two nulls
# answer different questions: shuffled points keep each point's pair $(a_l, \nabla a_l)$ and is centred at
# 0 by symmetry, like the paper's control; shuffled activations (gradient recomputed) makes the paths
# rougher, so it is the fairer test of whether the layer order adds turning.

# %%
print(f"{MODEL}, {n_sublayers} sublayers, N = {n_samples} texts")
print(f"  mean R  (mean trajectory)        {o['mean']:+.2f}   mean |R| {o['mean_abs']:.2f}   "
      f"paper {PAPER_MEAN} over {PAPER_SUBLAYERS} sublayers")
print(f"  mean R  (per text)               {ps['mean']:+.2f}")
print(f"  per sublayer: ours {o['mean_abs_per_sublayer']:.3f}, paper {PAPER_MEAN / PAPER_SUBLAYERS:.3f}")
for w in NULLS:
    s = summary["original", "mean", w]
    print(f"  null (shuffled {w:9s}) mean R {s['null_mean']:+.2f}, mean |R| {s['null_mean_abs']:.2f}; "
          f"units beyond their null's 95th pct of |R|: {s['frac_exceeds']:.1%}")
    print(f"  {'':28s} units turning less than their null (|R| below its 5th pct): {s['frac_below']:.1%}")
print(f"  random-walk reference mean R {reference['random_walk'].mean():+.2f}, mean |R| {rw_abs:.2f}")
print(f"  token-shuffled texts: mean |R| {sh['mean_abs']:.2f}")
