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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/03_phase_space_rotations.ipynb)
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
# # 3. Rotations of single units in activation-gradient space (Figure 2)
#
# Section 3.2 of the paper draws each residual-stream (RS) unit as a path in the plane of its activation
# $a_l$ and the activation's gradient over the sublayers $\nabla a_l$, and finds "rotational dynamics
# characteristic of unstable periodic orbits" (2A): a mean of **10.74 rotations** per unit over the 64
# sublayers of Llama 3.1 8B, against **~0** when the layer order of each unit is shuffled 1000 times
# (2B), for most of the 4096 units (2C).
#
# The chapter runs its whole analysis for every model in `MODELS` (by default SmolLM2-135M and
# Gemma-3-270M); each figure has one row per model, and the tables and the ledger give every number once
# per model. The models differ in depth and width, so each has its own sublayer axis and units.
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
#   They can give very different nulls (compare them below), so we report both.
# - **Which sign?** The paper reports a positive mean without saying which way it counts. In this plane
#   oscillations run clockwise (where the gradient is positive the activation grows), so we also report
#   the mean of $|R|$.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
QUANTIZATION: Optional[str] = None  # None, "8bit" or "4bit" (the Colab profile loads Llama 3.1 8B in 4-bit)
N_SHUFFLES: int = 1000           # layer-order shuffles per unit (paper §2.6)
N_PORTRAITS: int = 16            # units drawn in Fig 2A
PER_SAMPLE_SHUFFLES: int = 10    # shuffles for the per-sample null (each costs N times a mean-mode shuffle)
PER_SAMPLE_MAX_TEXTS: int = 200  # texts used in the per-sample null
N_BOOT: int = 200                # bootstrap resamples of the texts (the counts and surrogates recomputed on each)
N_SHUFFLES_RESAMPLE: int = 20    # surrogates per unit in each resample (the claims' nulls)
N_REFERENCE: int = 200           # texts of each random-init reference
REFERENCE_SEEDS: list[int] = [0, 1, 2]  # random-init seeds (each kind)
REFERENCE_INITS: list[str] = ["default", "matched"]  # transformers' init; each tensor at the trained scale
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
colab.setup(globals(), "03_phase_space_rotations")

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown

from transformer_dynamics import chapter, paper, phase, verdicts
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import phase as plot_phase
from transformer_dynamics.plots.style import grid

NULLS = ("sublayers", "points")
ch = chapter.setup("03_phase_space_rotations", models=MODELS, n=N, seed=SEED,
                   cache_dir=CACHE_DIR, ledger_dir=LEDGER_DIR, quantization=QUANTIZATION,
                   reference_n=N_REFERENCE, reference_seeds=REFERENCE_SEEDS,
                   reference_inits=REFERENCE_INITS, n_shuffles=N_SHUFFLES,
                   per_sample_shuffles=PER_SAMPLE_SHUFFLES,
                   per_sample_max_texts=PER_SAMPLE_MAX_TEXTS,
                   n_boot=N_BOOT, n_shuffles_resample=N_SHUFFLES_RESAMPLE)
rs, CONDITIONS = ch.rs, ch.conditions
Markdown(ch.summary())

# %% [markdown]
# ## Rotation counts and their nulls
# For each model and condition (original texts, and the paper's control with each text's tokens
# shuffled): the count of every unit's mean trajectory with both shuffle nulls (`N_SHUFFLES` each), and
# every text's own count. The per-sample null is `N` times costlier, so it uses `PER_SAMPLE_SHUFFLES`
# shuffles of the first `PER_SAMPLE_MAX_TEXTS` texts (one permutation per unit and shuffle, shared by the
# texts). The structureless references have as many sublayers as each model.

# %%
counts, reference = {}, {}
for m, c in ch.runs:
    x = rs[m, c]
    counts[m, c] = {
        "traj": x.mean(0),  # (n_sublayers, d_model)
        "mean": phase.rotations_per_unit(x, "mean"),  # (d_model,)
        "samples": phase.rotations_per_sample(x),  # (n_samples, d_model)
        "null": {w: phase.null_per_unit(x, "mean", N_SHUFFLES, seed=SEED, what=w)
                 for w in NULLS},
        "null_ps": {w: phase.null_per_unit(x, "per_sample", PER_SAMPLE_SHUFFLES, seed=SEED,
                                           what=w, max_samples=PER_SAMPLE_MAX_TEXTS)
                    for w in NULLS},
    }
    counts[m, c]["per_sample"] = counts[m, c]["samples"].mean(0)
for m in ch.models:
    reference[m] = {k: phase.reference_counts(ch.n_sublayers[m], k, seed=SEED)
                    for k in ("random_walk", "iid")}

# %% [markdown]
# ## Figure 2A: phase portraits
# `N_PORTRAITS` units of each model drawn at random (seed `SEED`); each panel is the unit's mean
# trajectory over the texts in the plane (activation, gradient over sublayers), both centred at sublayer
# 0, coloured from the first sublayer (dark) to the last (yellow), the start circled; the title gives the
# unit's count $R$. One figure per condition, one row of portraits per model.

# %% mystnb={"figure": {"caption": "Paper's Fig. 2A: phase portraits (activation against its gradient over sublayers) of the mean trajectory over texts of randomly drawn units, coloured from the first sublayer to the last, the unit's rotation count in each title; one figure per condition (original texts, then the shuffled-token control), one row per model ({models})."}, "image": {"alt": "Grids of phase portraits, activation against gradient over sublayers, of randomly drawn units, Fig 2A; one figure per condition, original then shuffled-token; one row per model: {models}"}}
shown = {
    m: np.sort(
        np.random.default_rng(SEED).choice(
            ch.d_model[m], size=min(N_PORTRAITS, ch.d_model[m]), replace=False
        )
    )
    for m in ch.models
}
for c in CONDITIONS:
    plot_phase.plot_phase_portraits_by_model(
        {m: counts[m, c]["traj"] for m in ch.models},
        shown,
        rotations={m: counts[m, c]["mean"] for m in ch.models},
        labels=ch.labels,
        suptitle=f"Mean trajectories over {N} texts — {c}",
    );

# %% [markdown]
# The same units in the first text alone (the `per_sample` reading): single-text trajectories are rougher.

# %% mystnb={"figure": {"caption": "The same units as Fig. 2A in the first text alone (one text's trajectory), original texts; one row per model ({models}).", "name": "fig-03-2a-one-text"}, "image": {"alt": "Grid of phase portraits of the same units in a single text, Fig 2A per-sample reading, original texts; one row per model: {models}"}}
plot_phase.plot_phase_portraits_by_model(
    {m: rs[m, "original"][0] for m in ch.models},
    shown,
    labels=ch.labels,
    suptitle="One text's trajectories — original",
);

# %% [markdown]
# ## Figure 2B: rotations per unit against the shuffle nulls
# Counts of the units' mean trajectories (red) and the pooled null over all units and shuffles (grey);
# one figure per condition, one row per model; left: activations shuffled and the gradient recomputed;
# right: portrait points shuffled.

# %% mystnb={"figure": {"caption": "Paper's Fig. 2B: histogram of the rotation counts of the units' mean trajectories (red) against the pooled layer-order shuffle null (grey), left: activations shuffled, right: portrait points shuffled; one figure per condition (original, then shuffled-token), one row per model ({models})."}, "image": {"alt": "Histograms of rotation counts per unit against the layer-shuffle null, Fig 2B; columns: the two nulls; one figure per condition, original then shuffled-token; one row per model: {models}"}}
null_cols = {w: f"null: shuffled {w}" for w in NULLS}
for c in CONDITIONS:
    grid(plot_phase.plot_rotation_histogram,
         {(m, null_cols[w]): (counts[m, c]["mean"], counts[m, c]["null"][w])
          for m in ch.models for w in NULLS},
         col_kwargs={null_cols[w]: {"null_label": f"null (shuffled {w})"} for w in NULLS},
         title=f"{c} texts", height=4.0);

# %% [markdown]
# ## Figure 2C: every unit with its own null band
# Units sorted by their count; the grey band is each unit's 2.5–97.5 percentile over its shuffles. One
# figure per condition, one row per model.

# %% mystnb={"figure": {"caption": "Paper's Fig. 2C: every unit's rotation count, units sorted by count, with its own 2.5\u201397.5 percentile band over its shuffles (grey); one figure per condition (original, then shuffled-token), one row per model ({models})."}, "image": {"alt": "Sorted rotation counts per unit with each unit's shuffle-null band, Fig 2C; columns: the two nulls; one figure per condition, original then shuffled-token; one row per model: {models}"}}
for c in CONDITIONS:
    grid(plot_phase.plot_rotations_sorted,
         {(m, null_cols[w]): (counts[m, c]["mean"], counts[m, c]["null"][w])
          for m in ch.models for w in NULLS},
         title=f"{c} texts", width=6.0, height=4.0);

# %% [markdown]
# ## How the headline number depends on the choices
# One row per model, condition, trajectory mode and null: the mean count $R$ and mean $|R|$ per unit, the
# null's mean, the fraction of units whose $|R|$ exceeds the 95th percentile of their own null's $|R|$,
# and the counts per sublayer (a model's number of sublayers may differ from Llama 3.1 8B's 64). The last
# rows of each model are structureless references with the same number of sublayers: Gaussian random
# walks and i.i.d. Gaussian values (the count ignores scale and offset, so these need no fitting).

# %% tags=["hide-input"]
rows, summary = [], {}
for m in ch.models:
    for c in CONDITIONS:
        for mode, obs, nulls in (
            ("mean", counts[m, c]["mean"], counts[m, c]["null"]),
            ("per_sample", counts[m, c]["per_sample"], counts[m, c]["null_ps"]),
        ):
            for w in NULLS:
                s = phase.rotation_summary(obs, nulls[w], n_sublayers=ch.n_sublayers[m])
                summary[m, c, mode, w] = s
                rows.append(
                    {
                        "model": m,
                        "condition": c,
                        "mode": mode,
                        "null": w,
                        "shuffles": nulls[w].shape[0],
                        **s,
                    }
                )
    for k, v in reference[m].items():
        rows.append(
            {
                "model": m,
                "condition": f"reference: {k}",
                "mode": "-",
                "null": "-",
                "mean": v.mean(),
                "mean_abs": np.abs(v).mean(),
                "sd": v.std(),
                "mean_per_sublayer": v.mean() / ch.n_sublayers[m],
            }
        )
table = pd.DataFrame(rows)
cols = [
    "model",
    "condition",
    "mode",
    "null",
    "shuffles",
    "mean",
    "mean_abs",
    "null_mean",
    "null_mean_abs",
    "frac_exceeds",
    "frac_negative",
    "mean_per_sublayer",
]
show_table(table[cols], index=False)

# %% [markdown]
# ## The paper's statements, decided
# Three claims of the registry (`transformer_dynamics.claims`), on the mean trajectory of the texts:
# `rotations_beat_null` (mean |R| of the units minus that of a surrogate), `rotations_majority` (the share of
# units whose |R| exceeds their own surrogate's 95th percentile) and `rotations_spiral_out` (the portrait's
# gradient amplitude over the last third of the sublayers against the first third, median over units). Each
# is read against three surrogates: the paper's layer-order shuffle of the activations, the shuffled portrait
# points, and a random walk of the unit's own steps in shuffled order. The surrogates are nulls to compare
# against; the uncertainty of the comparison comes from the texts: on each of `N_BOOT` bootstrap resamples of
# the texts the mean trajectory, its counts and `N_SHUFFLES_RESAMPLE` surrogates per unit are recomputed, and
# the 95% interval decides (two-sided: a unit that turns less than its surrogate counts against the claim).
# Each claim is also measured on the residual-accumulation null and at random initialisation (`N_REFERENCE`
# texts, `REFERENCE_SEEDS`): the line says whether the trained model lies beyond them.

# %% tags=["remove-input"]
decided = ch.decide(n_boot=N_BOOT, n_boot_slow=N_BOOT, n_shuffles=N_SHUFFLES_RESAMPLE)
show_table(verdicts.summary_table(decided), index=False)

# %% [markdown]
# ## Recorded values
# Our primary number is the mean-trajectory count of the original texts; every value is recorded once per model.

# %% tags=["remove-input"]
PAPER_R = str(paper.ROTATION_MEAN)  # the paper's mean count, as its ledger column shows it
for m in ch.models:
    ch.ledger.record("n_sublayers", ch.n_sublayers[m],
                     claim=f"sublayers of this model (the paper's {paper.MODEL} has {paper.N_SUBLAYERS})",
                     paper=str(paper.N_SUBLAYERS), figure="2A", model=m)
    o = summary[m, "original", "mean", "sublayers"]
    ch.ledger.record("rotations_mean", o["mean"],
                     claim="mean signed rotation count R per unit (mean trajectory over texts; counter-clockwise > 0)",
                     paper=f"{PAPER_R} (sign convention not stated)", figure="2B", unit="rotations", model=m)
    ch.ledger.record("rotations_mean_abs", o["mean_abs"], claim="mean |R| per unit (mean trajectory over texts)",
                     paper=PAPER_R, figure="2B", unit="rotations", model=m)
    ch.ledger.record("rotations_mean_abs_per_sublayer", o["mean_abs_per_sublayer"],
                     claim="mean |R| per unit divided by the number of sublayers",
                     paper=f"{paper.ROTATION_MEAN / paper.N_SUBLAYERS:.3f} ({PAPER_R} / {paper.N_SUBLAYERS})",
                     figure="2B", unit="rotations per sublayer", model=m)
    ch.ledger.record("rotations_frac_clockwise", o["frac_negative"],
                     claim="fraction of units turning clockwise (R < 0)", figure="2C", model=m)
    ps = summary[m, "original", "per_sample", "sublayers"]
    ch.ledger.record("rotations_per_sample_mean", ps["mean"],
                     claim="mean signed R per unit, each text's own trajectory, averaged over texts",
                     paper=PAPER_R, figure="2B", unit="rotations", model=m)
    ch.ledger.record("rotations_per_sample_mean_abs", float(np.abs(counts[m, "original"]["samples"]).mean()),
                     claim="mean |R| over units and texts (each text's own trajectory)", paper=PAPER_R,
                     figure="2B", unit="rotations", model=m)
    for w in NULLS:
        s = summary[m, "original", "mean", w]
        ch.ledger.record(f"null_{w}_mean", s["null_mean"],
                         claim=f"mean R of the layer-shuffle null (shuffled {w}, {N_SHUFFLES} shuffles per unit)",
                         paper=f"~{paper.ROTATION_NULL_MEAN:g}", figure="2B", unit="rotations", model=m)
        ch.ledger.record(f"null_{w}_mean_abs", s["null_mean_abs"], claim=f"mean |R| of the null (shuffled {w})",
                         figure="2B", unit="rotations", model=m)
        ch.ledger.record(f"frac_units_below_null_{w}", s["frac_below"],
                         claim=f"fraction of units whose |R| is below their own null's 5th percentile, i.e. units that "
                               f"turn less than their shuffles (shuffled {w})", figure="2C", model=m)
    sh = summary[m, "shuffled", "mean", "sublayers"]
    ch.ledger.record("rotations_mean_abs_token_shuffled", sh["mean_abs"],
                     claim="mean |R| per unit for the token-shuffled texts (mean trajectory)", figure="2B",
                     unit="rotations", model=m)
    for k, v in reference[m].items():
        ch.ledger.record(f"reference_{k}_mean_abs", np.abs(v).mean(),
                         claim=f"mean |R| of {k.replace('_', ' ')} trajectories with the same number of sublayers",
                         figure="2B", unit="rotations", model=m)
    rw_abs = np.abs(reference[m]["random_walk"]).mean()
    ch.ledger.record("rotations_minus_random_walk", o["mean_abs"] - rw_abs,
                     claim="units rotate more than structureless paths: mean |R| of the units minus that of "
                           "Gaussian random walks with as many sublayers (our check; not in the paper)",
                     figure="2B", unit="rotations", model=m)
show_table(pd.DataFrame({m: {k: e.value for (mm, k), e in ch.ledger.entries.items() if mm == m}
                         for m in ch.models}))

# %% [markdown]
# ## What we find
# The cell below prints our numbers next to the paper's, one block per model; the table above has every
# choice. Read them with two facts in mind. The count is a property of the *shape* of a path (it ignores
# scale and offset), and rough paths turn a lot in this plane by themselves (the clockwise drift of
# $(a, \nabla a)$), so the random-walk reference with as many sublayers is the yardstick for "many
# rotations". And the two nulls answer different questions: shuffled points keep each point's pair
# $(a_l, \nabla a_l)$ and is centred at 0 by symmetry, like the paper's control; shuffled activations
# (gradient recomputed) makes the paths rougher, so it is the fairer test of whether the layer order adds
# turning.

# %% tags=["hide-input"]
for m in ch.models:
    o = summary[m, "original", "mean", "sublayers"]
    ps = summary[m, "original", "per_sample", "sublayers"]
    sh = summary[m, "shuffled", "mean", "sublayers"]
    rw = reference[m]["random_walk"]
    print(f"{m}, {ch.n_sublayers[m]} sublayers, N = {len(rs[m, 'original'])} texts")
    print(
        f"  mean R  (mean trajectory)        {o['mean']:+.2f}   mean |R| {o['mean_abs']:.2f}   "
        f"paper {paper.ROTATION_MEAN} over {paper.N_SUBLAYERS} sublayers"
    )
    print(f"  mean R  (per text)               {ps['mean']:+.2f}")
    print(
        f"  per sublayer: ours {o['mean_abs_per_sublayer']:.3f}, paper {paper.ROTATION_MEAN / paper.N_SUBLAYERS:.3f}"
    )
    for w in NULLS:
        s = summary[m, "original", "mean", w]
        print(
            f"  null (shuffled {w:9s}) mean R {s['null_mean']:+.2f}, mean |R| {s['null_mean_abs']:.2f}; "
            f"units beyond their null's 95th pct of |R|: {s['frac_exceeds']:.1%}"
        )
        print(
            f"  {'':28s} units turning less than their null (|R| below its 5th pct): {s['frac_below']:.1%}"
        )
    print(f"  random-walk reference mean R {rw.mean():+.2f}, mean |R| {np.abs(rw).mean():.2f}")
    print(f"  token-shuffled texts: mean |R| {sh['mean_abs']:.2f}")
    print()
