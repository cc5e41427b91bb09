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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/06_models_and_robustness.ipynb)
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
# # 6. Models side by side, precision and statistics (beyond the paper)
#
# The paper measures one model (Llama 3.1 8B) once, at one precision, with N = 1000 texts and no error bars.
# Here we ask how much of what it reports is a property of transformers and how much of that one run:
#
# 1. **Models side by side.** The key panels of Figures 1, 2 and 4 for every model in `MODELS`, on a common
#    *relative depth* axis (sublayer / number of sublayers) so that models of different depth line up, and every
#    claim's value with its bootstrap interval over texts, per model.
# 2. **Precision.** The claims' values from captures of the same texts in float32, bfloat16 and 4-bit (NF4),
#    and how far the residual stream itself moves.
# 3. **Statistics.** How each claim's value depends on the number of texts N (nested subsamples of one
#    capture).
#
# Each claim's value is its statistic in the claim registry (`transformer_dynamics.claims`), computed from the
# residual stream `rs: (texts, sublayers, units)` by `robustness.claim_evidence`; the curves drawn are
# `robustness.stream_curves`. This chapter shows values and intervals only: the verdicts are decided in the
# chapters of the paper's sections (2-5), and chapter 8 says, per claim and model, whether a verdict survives
# every open choice (precision and N among them).

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
PRECISIONS: list[str] = ["float32", "bfloat16", "4bit"]  # the first is the reference; "4bit"/"8bit" use bitsandbytes
N_PRECISION: int = 100           # texts for the precision comparison (4-bit runs slowly on a CPU)
N_VALUES: list[int] = [100, 250, 500, 1000]  # N-dependence: nested subsamples of the N texts (values > N are dropped)
N_BOOT: int = 1000               # bootstrap resamples of the texts (r, cosine, velocity, magnitudes, density)
N_BOOT_SLOW: int = 200           # ... of which MI, rotations and PCA are recomputed on this many
MI_UNITS: Optional[int] = 64     # MI on a random subset of this many units (chapter 2's MI_COMPARE_UNITS)
N_SHUFFLES: int = 20             # surrogates per unit for the rotation claims (chapter 3's N_SHUFFLES_RESAMPLE)
PCA_COMPONENTS: int = 100        # components kept for the PCA claims (as chapter 4)
VARIANCE_THRESHOLD: float = 0.9  # "components for 90% of the variance"
QUANTIZATION: Optional[str] = None  # None, "8bit" or "4bit": how section 1 loads MODELS (the Colab profile: 4bit)
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
colab.setup(globals(), "06_models_and_robustness")

# %%
import numpy as np
import pandas as pd

from transformer_dynamics import chapter, claims, formats, metrics, pipeline, robustness
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import robustness as plot_robustness
from transformer_dynamics.plots import verdicts as plot_verdicts
from transformer_dynamics.plots.style import side_by_side

pd.set_option("display.max_colwidth", 90)
N_VALUES = sorted({int(v) for v in N_VALUES if int(v) <= N} | {N})
# the statistics' keywords; the evidence's add the bootstrap
curve_kwargs = dict(mi_units=MI_UNITS, n_shuffles=N_SHUFFLES, variance=VARIANCE_THRESHOLD,
                    pca_components=PCA_COMPONENTS)
evidence_kwargs = dict(curve_kwargs, n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW, seed=SEED,
                       cache_dir=CACHE_DIR)
ch = chapter.setup("06_models_and_robustness", models=MODELS, n=N, seed=SEED,
                   cache_dir=CACHE_DIR, ledger_dir=LEDGER_DIR, quantization=QUANTIZATION,
                   context_quantization=True, n_precision=N_PRECISION,
                   precisions=PRECISIONS, n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW,
                   mi_units=MI_UNITS, n_shuffles=N_SHUFFLES, pca_components=PCA_COMPONENTS)
MODELS, CONDITIONS, rs = ch.models, ch.conditions, ch.rs
MODEL = MODELS[0]  # section 2 (precision) uses the first model

# %% [markdown]
# ## 1. Models side by side
# Each model's residual stream for the same N WikiText texts, original and token-shuffled, captured at the
# input of the two norms of every decoder layer. For Llama-like models (SmolLM2) these are `input_layernorm`
# (before attention) and `post_attention_layernorm` (before the MLP). Gemma 3 has four norms per layer: it
# also normalises the *outputs* of attention and of the MLP (`post_attention_layernorm`,
# `post_feedforward_layernorm`) before adding them to the stream, so its pre-MLP norm is
# `pre_feedforward_layernorm`; capture reads the inputs of `input_layernorm` and `pre_feedforward_layernorm`,
# which are the residual stream in both cases. The table below is read from the loaded models.

# %%
arch = []
for m in MODELS:
    # rm: the model's residual-stream facts
    rm, _ = pipeline.load_model(m, cache_dir=CACHE_DIR, quantization=QUANTIZATION)
    a, blocks = rm.architecture, rm.layers
    arch.append({"model": m, "model_type": rm.config.model_type, "layers": rm.n_layers,
                 "d_model": rm.d_model,
                 "RS before attention": f"input of {a.attn_norm}",
                 "RS before MLP": f"input of {a.mlp_norm}",
                 "norms in a layer": ", ".join(n for n, _ in blocks[0].named_children()
                                               if "norm" in n)})
show_table(pd.DataFrame(arch).set_index("model"))

# %% [markdown]
# The curves behind the claims (`robustness.stream_curves`), for every model and condition. Below, every
# panel puts the models on one relative-depth axis; within-layer transitions (attn → mlp) are solid with
# circles, cross-layer (mlp → next attn) dashed with squares. Left: original texts; right: the paper's control
# with the tokens of every text shuffled.

# %% mystnb={"figure": {"caption": "Fig. 1C across models: median correlation between successive sublayers on relative depth, within-layer solid, cross-layer dashed; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-1c"}, "image": {"alt": "Line plots of the median successive-sublayer correlation against relative depth, one line per model ({models}) and transition type, Fig 1C; panels: original texts, shuffled-token control"}}
units = {m: metrics.subsample_units(ch.d_model[m], MI_UNITS, seed=SEED) for m in MODELS}
curves = {(m, c): robustness.stream_curves(
              rs[m, c], robustness.GROUPS, mi_units=units[m], seed=SEED,
              n_shuffles=N_SHUFFLES, variance=VARIANCE_THRESHOLD,
              pca_components=PCA_COMPONENTS)
          for m, c in ch.runs}
by_condition = {c: {m: curves[m, c] for m in MODELS} for c in CONDITIONS}
side_by_side(plot_robustness.plot_successive_r, by_condition);

# %% mystnb={"figure": {"caption": "Fig. 1E across models: cosine similarity of successive vectors on relative depth; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-1e"}, "image": {"alt": "Line plots of the cosine similarity between successive sublayers against relative depth, one line per model ({models}), Fig 1E; panels: original texts, shuffled-token control"}}
side_by_side(plot_robustness.plot_cosine, by_condition);

# %% [markdown]
# Velocity and magnitude: each model's curve divided by its own mean (their activation scales differ by orders
# of magnitude).

# %% mystnb={"figure": {"caption": "Fig. 1F across models: velocity divided by each model's mean, on relative depth; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-1f"}, "image": {"alt": "Line plots of the normalised velocity against relative depth, one line per model ({models}), Fig 1F; panels: original texts, shuffled-token control"}}
side_by_side(plot_robustness.plot_velocity, by_condition);

# %% mystnb={"figure": {"caption": "Fig. 1B across models: mean |activation| over units on relative depth, each model divided by its own mean; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-1b"}, "image": {"alt": "Line plots of the mean absolute activation against relative depth, one line per model ({models}), Fig 1B; panels: original texts, shuffled-token control"}}
side_by_side(plot_robustness.plot_magnitude, by_condition);

# %% [markdown]
# Mean mutual information over `MI_UNITS` random units (the paper's Gaussian-KDE estimator).

# %% mystnb={"figure": {"caption": "Fig. 1H across models: mean KDE mutual information over units on relative depth; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-1h"}, "image": {"alt": "Line plots of the mean KDE mutual information against relative depth, one line per model ({models}), Fig 1H; panels: original texts, shuffled-token control"}}
side_by_side(plot_robustness.plot_mutual_information, by_condition);

# %% [markdown]
# Rotations of each unit's mean trajectory (Fig 2): the mean |R| per unit, divided by the number of sublayers,
# against three surrogates made from each unit's own trajectory (its sublayers in shuffled order, the paper's
# control; its phase-space points in shuffled order; a random walk of its own steps in shuffled order), and the
# share of units whose |R| exceeds their own surrogate's 95th percentile.

# %% mystnb={"figure": {"caption": "Fig. 2B across models: mean |R| per unit divided by the number of sublayers against three surrogates (shuffled sublayers, shuffled points, a random walk of the unit's own steps); models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-2b"}, "image": {"alt": "Bar charts of the mean rotation count per unit per sublayer against three surrogates, one group per model ({models}), Fig 2B; panels: original texts, shuffled-token control"}}
side_by_side(plot_robustness.plot_rotations, by_condition);

# %% mystnb={"figure": {"caption": "Fig. 2C across models: share of units whose |R| exceeds their own surrogate's 95th percentile, per surrogate; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-2c"}, "image": {"alt": "Bar charts of the share of units beyond their surrogate's 95th percentile, one group per model ({models}), Fig 2C; panels: original texts, shuffled-token control"}}
side_by_side(plot_robustness.plot_rotation_exceed, by_condition);

# %% [markdown]
# One PCA of all sublayer vectors (Fig 4B), and the components of that PCA each sublayer needs for
# `VARIANCE_THRESHOLD` of its variance (Fig 4C; a triangle at the top: not reached with `PCA_COMPONENTS`).

# %% mystnb={"figure": {"caption": "Fig. 4B across models: cumulative explained variance over principal components; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-4b"}, "image": {"alt": "Line plots of cumulative explained variance against principal components, one line per model ({models}), Fig 4B; panels: original texts, shuffled-token control"}}
side_by_side(plot_robustness.plot_cumulative_ev, by_condition,
             threshold=VARIANCE_THRESHOLD);

# %% mystnb={"figure": {"caption": "Fig. 4C across models: the global principal components each sublayer needs for the variance threshold, on relative depth (a triangle at the top: not reached with the kept components); models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-4c"}, "image": {"alt": "Line plots of the principal components needed per sublayer against relative depth, one line per model ({models}), Fig 4C; panels: original texts, shuffled-token control"}}
side_by_side(plot_robustness.plot_pcs, by_condition, variance=VARIANCE_THRESHOLD);

# %% [markdown]
# ### The claims' values per model
# Each residual-stream claim's value (its headline reading) with the 95% bootstrap interval over texts
# (`robustness.claim_evidence`: `N_BOOT` resamples; MI, rotations and PCA recomputed on `N_BOOT_SLOW` of them,
# their replicates re-centred on the value, since a resample's repeated texts shift those statistics
# themselves). `test` is the side of the threshold that supports the claim. The shuffled control is computed the
# same way.

# %%
evidence = robustness.claim_evidence_runs({(m, c): rs[m, c] for m, c in ch.runs},
                                          headline_only=True, **evidence_kwargs)
values = pd.concat([robustness.evidence_frame(ev, model=m, condition=c)
                    for (m, c), ev in evidence.items()], ignore_index=True)
show_table(robustness.value_table(values, ["model", "condition"]))

# %% mystnb={"figure": {"caption": "Every residual-stream claim's value with its 95% interval over texts and its threshold, per model ({models}) and condition.", "name": "fig-06-intervals"}, "image": {"alt": "Dot-and-whisker plots of each claim's value with its 95 percent interval and threshold, one row per model and condition: {models}"}}
of = {(m, c): g for (m, c), g in values.groupby(["model", "condition"], sort=False)}
plot_verdicts.plot_claim_intervals({f"{m}, {c}": of[m, c] for m, c in ch.runs});

# %% tags=["remove-input"]
for _, r in values[np.isfinite(values["value"])].iterrows():   # undefined values: shown, not recorded
    c = claims.get(r["claim"])
    ci = (r["low"], r["high"]) if np.isfinite([r["low"], r["high"]]).all() else None
    ch.record(r["model"], f"value:{r['claim']}", r["value"], ci=ci,
              condition=r["condition"], figure=c.figure, unit=c.unit, n_boot=r["n_boot"],
              claim=f"{c.quote}: the value of its statistic (verdict: chapter {c.chapter[:2]})")

# %% [markdown]
# ## 2. Precision sensitivity
# The first model's residual stream for the same `N_PRECISION` texts at each precision in `PRECISIONS`. The
# shipped weights are a 4-bit GGUF dequantised to float32, so "float32" here is float32 arithmetic on those
# weights; "bfloat16" casts them (8 bits of mantissa); "4bit" re-quantises the linear layers to NF4 with
# bitsandbytes (float32 compute). Relative error per sublayer: $\|b_s - a_s\|_F / \|a_s\|_F$ over texts and
# units, against the first precision.

# %% mystnb={"figure": {"caption": "Relative error of the first model's residual stream per sublayer at each numeric precision against the first one.", "name": "fig-06-precision"}, "image": {"alt": "Line plot of the relative error of the residual stream against sublayer, one line per numeric precision, first model of {models}"}}
rs_p = {p: pipeline.residual_stream(MODEL, n=min(N_PRECISION, N), seed=SEED,
                                    cache_dir=CACHE_DIR, **robustness.precision_kwargs(p))
        for p in PRECISIONS}
ref = PRECISIONS[0]
diff = {p: robustness.precision_difference(rs_p[ref], rs_p[p]) for p in PRECISIONS[1:]}
plot_robustness.plot_relative_error({p: diff[p]["rel_error"] for p in diff},
                                    title=f"Relative error of the RS against {ref}");

# %% [markdown]
# Agreement of the underlying statistics (Pearson correlation between their values at the two precisions:
# all activations; each unit's successive r; each text's cosine and velocity per transition; each unit's
# rotation count):

# %%
show_table(pd.DataFrame({p: diff[p]["corr"] for p in diff}))

# %% [markdown]
# The claims' values at each precision, on the same `N_PRECISION` texts (so the intervals are wider than
# section 1's N-text ones; the comparison is between precisions at equal N):

# %%
ev_p = robustness.claim_evidence_runs(rs_p, headline_only=True, **evidence_kwargs)
by_precision = pd.concat([robustness.evidence_frame(ev_p[p], precision=p)
                          for p in PRECISIONS], ignore_index=True)
show_table(robustness.value_table(by_precision, "precision"))

# %% mystnb={"figure": {"caption": "The first model's claims at each numeric precision on the same texts, with their 95% intervals and thresholds.", "name": "fig-06-precision-claims"}, "image": {"alt": "Dot-and-whisker plots of each claim's value at each numeric precision with 95 percent intervals, first model of {models}"}}
plot_verdicts.plot_claim_intervals(
    dict(tuple(by_precision.groupby("precision", sort=False))),
    title=f"{MODEL}, {min(N_PRECISION, N)} texts, per precision");

# %% tags=["remove-input"]
ref_rows = by_precision[by_precision["precision"] == ref].set_index("claim")
for p in diff:
    d = diff[p]
    ch.record(MODEL, f"precision_{p}:max_rel_error", d["max_rel_error"],
              claim=f"largest per-sublayer relative L2 error of the RS, {p} vs {ref} ({N_PRECISION} texts)")
    ch.record(MODEL, f"precision_{p}:rel_error_last", d["rel_error"][-1],
              claim=f"relative L2 error of the RS at the last sublayer, {p} vs {ref}")
    for stat, r in d["corr"].items():
        ch.record(MODEL, f"precision_{p}:corr_{stat}", r, claim=f"correlation of the {stat} values, {p} vs {ref}")
    rows = by_precision[by_precision["precision"] == p].set_index("claim")
    defined = rows.index[np.isfinite(rows["value"]) & np.isfinite(ref_rows["low"].reindex(rows.index))]
    inside = [k for k in defined if ref_rows.loc[k, "low"] <= rows.loc[k, "value"] <= ref_rows.loc[k, "high"]]
    ch.record(MODEL, f"precision_{p}:values_inside_ref_interval", len(inside) / max(len(defined), 1),
              claim=f"share of the claims' values at {p} inside the {ref} interval (same {N_PRECISION} texts)",
              outside=sorted(set(defined) - set(inside)))
    for k, r in rows[np.isfinite(rows["value"])].iterrows():
        c = claims.get(k)
        ci = (r["low"], r["high"]) if np.isfinite([r["low"], r["high"]]).all() else None
        ch.record(MODEL, f"precision_{p}:{k}", r["value"], ci=ci, figure=c.figure,
                  unit=c.unit, claim=f"{c.quote}: the value of its statistic at {p} ({N_PRECISION} texts; "
                  f"{ref}: {formats.number(ref_rows.loc[k, 'value'], 4)})")

# %% [markdown]
# ## 3. Statistics: the claims' values against N
# Every claim's value recomputed on nested subsamples of each model's capture — the first n texts of one
# random permutation, for n in `N_VALUES` — with section 1's N-text interval as a band and the claim's
# threshold dashed. A value still moving at the largest N is not settled by N texts; a value whose band
# straddles the threshold is undecided there.

# %% mystnb={"figure": {"caption": "Each claim's value on nested subsamples of n texts, per model ({models}), with the N-text interval as a band and the claim's threshold dashed.", "name": "fig-06-n-dependence"}, "image": {"alt": "Grid of line plots of each claim's value against the number of texts, one line per model ({models}), with the full-N interval as a band"}}
nd = {m: robustness.n_dependence(rs[m, "original"], N_VALUES, seed=SEED, **curve_kwargs)
      for m in MODELS}
at_n = {m: of[m, "original"] for m in MODELS}
plot_verdicts.plot_n_dependence(nd, intervals=at_n);

# %%
show_table(pd.concat(nd, names=["model"]).T)

# %% tags=["remove-input"]
half = max(v for v in N_VALUES if v <= N // 2) if any(v <= N // 2 for v in N_VALUES) else N_VALUES[0]
for m in MODELS:
    band = at_n[m].set_index("claim")
    ok = [k for k in nd[m].columns if np.isfinite(nd[m].loc[half, k]) and np.isfinite(band.loc[k, "low"])]
    inside = [k for k in ok if band.loc[k, "low"] <= nd[m].loc[half, k] <= band.loc[k, "high"]]
    ch.record(m, "n_half_inside_ci", len(inside) / max(len(ok), 1),
              claim=f"share of the claims' values from {half} texts inside the N = {N} interval",
              outside=sorted(set(ok) - set(inside)))
    for k in nd[m].columns[np.isfinite(nd[m]).all().to_numpy()]:
        c = claims.get(k)
        ch.record(m, f"n_dependence:{k}", nd[m][k].to_numpy(), figure=c.figure, unit=c.unit,
                  claim=f"{c.quote}: the value of its statistic at N = {N_VALUES}")
    for k in band.index[np.isfinite(band["high"] - band["low"]).to_numpy()]:
        c = claims.get(k)
        ch.record(m, f"ci_width:{k}", band.loc[k, "high"] - band.loc[k, "low"], figure=c.figure, unit=c.unit,
                  claim=f"{c.quote}: width of the 95% interval at N = {N}")

# %% [markdown]
# ## Recorded values
# Every number above, as the ledger holds it.

# %% tags=["remove-input"]
show_table(ch.ledger)
