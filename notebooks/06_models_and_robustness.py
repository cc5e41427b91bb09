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
# # 6. Models side by side, precision and statistics (beyond the paper)
#
# The paper measures one model (Llama 3.1 8B) once, at one precision, with N = 1000 texts and no error bars.
# Here we ask how much of what it reports is a property of transformers and how much of that one run:
#
# 1. **Models side by side.** The key panels of Figures 1, 2 and 4 for every model in `MODELS`, on a common
#    *relative depth* axis (sublayer / number of sublayers) so that models of different depth line up, with a
#    table of the headline numbers and their bootstrap intervals.
# 2. **Precision.** The same headline numbers from captures of the same texts in float32, bfloat16 and 4-bit
#    (NF4), and how far the residual stream itself moves.
# 3. **Statistics.** Bootstrap intervals (over texts) of every headline number for the first model, and how
#    each number depends on the number of texts N (nested subsamples of one capture).
#
# The headline numbers are defined once, in `transformer_dynamics.robustness` (table in its docstring);
# each one is a statistic of the residual stream `rs: (texts, sublayers, units)` and nothing else. Whether
# a number supports the paper is decided in one place, the claim registry (`transformer_dynamics.claims`),
# in the chapters of the paper's sections; chapter 8 varies every open choice (precision and N among
# them) and says, per claim and model, whether the verdict survives.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
PRECISIONS: list[str] = ["float32", "bfloat16", "4bit"]  # the first is the reference; "4bit"/"8bit" use bitsandbytes
N_PRECISION: int = 200           # texts for the precision comparison (4-bit runs slowly on a CPU)
N_VALUES: list[int] = [100, 250, 500, 1000]  # N-dependence: nested subsamples of the N texts (values > N are dropped)
N_BOOT: int = 1000               # bootstrap resamples (r, cosine, velocity, rotations: all of them)
N_BOOT_SLOW: int = 20            # ... of which MI, PCA and the rotation null are recomputed on this many
MI_UNITS: Optional[int] = 256    # KDE mutual information on a random subset of this many units (None: all)
N_SHUFFLES: int = 100            # layer-order shuffles for the rotation null
VARIANCE_THRESHOLD: float = 0.9  # "components for 90% of the variance"
QUANTIZATION: Optional[str] = None  # None, "8bit" or "4bit": how section 1 loads MODELS (the Colab profile: 4bit)
PROFILE: Optional[str] = "colab" # in Colab: this run profile replaces the values above (None: keep yours)

# %% tags=["remove-cell"]
# Lists given as text become lists; in Colab: install the package (pinned), apply PROFILE, HF_TOKEN, CACHE_DIR.
import os, subprocess, sys  # noqa: E401
if "google.colab" in sys.modules:
    SPEC = os.environ.get("TRANSFORMER_DYNAMICS_SPEC", "transformer-dynamics[quant,hub] @ git+https://github.com/transformer-dynamics/transformer-dynamics@v0.1.0")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", SPEC], check=True)
from transformer_dynamics import colab
colab.setup(globals(), "06_models_and_robustness")

# %%
import functools

import numpy as np
import pandas as pd

from transformer_dynamics import chapter, models, pipeline, robustness
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import robustness as pc
from transformer_dynamics.plots.style import side_by_side

pd.set_option("display.max_colwidth", 90)
N_VALUES = sorted({int(v) for v in N_VALUES if int(v) <= N} | {N})
KW = dict(mi_units=MI_UNITS, n_shuffles=N_SHUFFLES, variance=VARIANCE_THRESHOLD)
ch = chapter.setup("06_models_and_robustness", models=MODELS, n=N, seed=SEED,
                   cache_dir=CACHE_DIR, ledger_dir=LEDGER_DIR, quantization=QUANTIZATION,
                   context_quantization=True, n_precision=N_PRECISION,
                   precisions=PRECISIONS, n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW,
                   mi_units=MI_UNITS, n_shuffles=N_SHUFFLES)
MODELS, CONDITIONS, rs = ch.models, ch.conditions, ch.rs
MODEL = MODELS[0]  # sections 2 and 3 (precision, N-dependence) use the first model
record_first = functools.partial(ch.ledger.record, model=MODEL)  # sections 2 and 3

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
C = {(m, c): robustness.curves(rs[m, c], seed=SEED, **KW) for m, c in ch.runs}
arch = []
for m in MODELS:
    lm, _ = pipeline.load_model(m, cache_dir=CACHE_DIR, quantization=QUANTIZATION)
    a, blocks = models.architecture(lm), models.layer_modules(lm)
    arch.append({"model": m, "model_type": lm.config.model_type, "layers": len(blocks),
                 "d_model": lm.config.hidden_size,
                 "RS before attention": f"input of {a.attn_norm}",
                 "RS before MLP": f"input of {a.mlp_norm}",
                 "norms in a layer": ", ".join(n for n, _ in blocks[0].named_children()
                                               if "norm" in n)})
pd.DataFrame(arch).set_index("model")

# %% [markdown]
# Below, every panel puts the models on one relative-depth axis; within-layer transitions (attn → mlp) are
# solid with circles, cross-layer (mlp → next attn) dashed with squares. Left: original texts; right: the
# paper's control with the tokens of every text shuffled.

# %% mystnb={"figure": {"caption": "Fig. 1C across models: median correlation between successive sublayers on relative depth, within-layer solid, cross-layer dashed; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-1c"}, "image": {"alt": "Line plots of the median successive-sublayer correlation against relative depth, one line per model ({models}) and transition type, Fig 1C; panels: original texts, shuffled-token control"}}
cur = {c: {m: C[m, c] for m in MODELS} for c in CONDITIONS}
side_by_side(pc.plot_successive_r, cur);

# %% mystnb={"figure": {"caption": "Fig. 1E across models: cosine similarity of successive vectors on relative depth; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-1e"}, "image": {"alt": "Line plots of the cosine similarity between successive sublayers against relative depth, one line per model ({models}), Fig 1E; panels: original texts, shuffled-token control"}}
side_by_side(pc.plot_cosine, cur);

# %% [markdown]
# Velocity: each model's curve divided by its own mean (their activation scales differ by orders of
# magnitude).

# %% mystnb={"figure": {"caption": "Fig. 1F across models: velocity divided by each model's mean, on relative depth; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-1f"}, "image": {"alt": "Line plots of the normalised velocity against relative depth, one line per model ({models}), Fig 1F; panels: original texts, shuffled-token control"}}
side_by_side(pc.plot_velocity, cur);

# %% [markdown]
# Mean mutual information over `MI_UNITS` random units (the paper's Gaussian-KDE estimator).

# %% mystnb={"figure": {"caption": "Fig. 1H across models: mean KDE mutual information over units on relative depth; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-1h"}, "image": {"alt": "Line plots of the mean KDE mutual information against relative depth, one line per model ({models}), Fig 1H; panels: original texts, shuffled-token control"}}
side_by_side(pc.plot_mutual_information, cur);

# %% [markdown]
# Rotation counts per unit, divided by the number of sublayers (solid), against the layer-order shuffle
# null (dotted).

# %% mystnb={"figure": {"caption": "Fig. 2B across models: rotation counts per unit divided by the number of sublayers (solid) against the layer-order shuffle null (dotted); models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-2b"}, "image": {"alt": "Histograms of rotation counts per sublayer for each model ({models}) with the shuffle null dotted, Fig 2B; panels: original texts, shuffled-token control"}}
side_by_side(pc.plot_rotations, cur);

# %% mystnb={"figure": {"caption": "Fig. 4B across models: cumulative explained variance over principal components; models {models}; left: original texts, right: shuffled-token control.", "name": "fig-06-4b"}, "image": {"alt": "Line plots of cumulative explained variance against principal components, one line per model ({models}), Fig 4B; panels: original texts, shuffled-token control"}}
side_by_side(pc.plot_cumulative_ev, cur, threshold=VARIANCE_THRESHOLD);

# %% [markdown]
# ### Headline numbers per model
# Estimate and 95% bootstrap interval over texts (`robustness.bootstrap_headlines`): r, cosine, velocity and
# rotation counts on all `N_BOOT` resamples, MI, PCA and the rotation null on the first `N_BOOT_SLOW` of
# them. A resample repeats some texts, which by itself raises the KDE MI (a repeated point is its own
# nearest neighbour) and lowers the PCA counts (fewer distinct texts span fewer directions); for those
# numbers the interval is the replicates' spread re-centred on the estimate (column `interval` of
# `boot`), and section 3 shows how they move with N. The last columns are the token-shuffled control
# (no interval). The verdicts on the paper's claims are in chapters 2-5 and chapter 8.

# %% tags=["hide-input"]
boot = {m: robustness.bootstrap_headlines(rs[m, "original"], N_BOOT, SEED,
                                         n_boot_slow=N_BOOT_SLOW, **KW)
        for m in MODELS}
shuffled = {m: robustness.headlines_from_curves(C[m, "shuffled"]) for m in MODELS}


def fmt(row):
    if not np.isfinite(row["low"]):
        return f"{row['estimate']:.3g}"
    return f"{row['estimate']:.3g} [{row['low']:.3g}, {row['high']:.3g}]"


table = pd.DataFrame({m: boot[m].apply(fmt, axis=1) for m in MODELS})
for m in MODELS:
    table[f"{m} (shuffled)"] = pd.Series(shuffled[m]).map(lambda v: f"{v:.3g}")
table.insert(0, "statistic", [robustness.STATISTICS[k].description for k in table.index])
table.insert(0, "figure", [robustness.STATISTICS[k].figure for k in table.index])
table

# %% mystnb={"figure": {"caption": "Every headline number with its 95% bootstrap interval over texts, per model ({models}), the token-shuffled control beside it.", "name": "fig-06-intervals"}, "image": {"alt": "Dot-and-whisker plots of each headline number with its 95 percent bootstrap interval, one colour per model: {models}"}}
pc.plot_headline_intervals(boot);

# %% tags=["remove-input"]
for m in MODELS:
    ch.record_headlines(m, boot[m], condition="original")
    ch.record_headlines(m, shuffled[m], suffix="_shuffled", condition="shuffled")

# %% [markdown]
# ## 2. Precision sensitivity
# The first model's residual stream for the same `N_PRECISION` texts at each precision in `PRECISIONS`. The
# shipped weights are a 4-bit GGUF dequantised to float32, so "float32" here is float32 arithmetic on those
# weights; "bfloat16" casts them (8 bits of mantissa); "4bit" re-quantises the linear layers to NF4 with
# bitsandbytes (float32 compute). Relative error per sublayer: $\|b_s - a_s\|_F / \|a_s\|_F$ over texts and
# units, against the first precision.

# %% mystnb={"figure": {"caption": "Relative error of the first model's residual stream per sublayer at each numeric precision against the first one.", "name": "fig-06-precision"}, "image": {"alt": "Line plot of the relative error of the residual stream against sublayer, one line per numeric precision, first model of {models}"}}
rs_p = {p: pipeline.residual_stream(MODEL, n=N_PRECISION, seed=SEED, condition="original",
                                    cache_dir=CACHE_DIR, **robustness.precision_kwargs(p))
        for p in PRECISIONS}
ref = PRECISIONS[0]
diff = {p: robustness.precision_difference(rs_p[ref], rs_p[p]) for p in PRECISIONS[1:]}
pc.plot_relative_error({p: diff[p]["rel_error"] for p in diff},
                       title=f"Relative error of the RS against {ref}");

# %% tags=["hide-input"]
H_p = {p: robustness.headline_numbers(rs_p[p], seed=SEED, **KW) for p in PRECISIONS}
boot_ref = robustness.bootstrap_headlines(rs_p[ref], N_BOOT, SEED, n_boot_slow=N_BOOT_SLOW, **KW)
change = {p: robustness.headline_change(H_p[ref], H_p[p]) for p in PRECISIONS[1:]}
for p in change:
    v = change[p]["other"]
    change[p]["inside_ref_ci"] = (v >= boot_ref["low"].reindex(v.index)) & (
        v <= boot_ref["high"].reindex(v.index)
    )
ptable = pd.concat({p: change[p][["other", "change", "inside_ref_ci"]] for p in change}, axis=1)
ptable.insert(
    0, (ref, "95% CI"), boot_ref.apply(lambda r: f"[{r['low']:.3g}, {r['high']:.3g}]", axis=1)
)
ptable.insert(0, (ref, "value"), pd.Series(H_p[ref]))
ptable

# %% [markdown]
# Agreement of the underlying statistics (Pearson correlation between their values at the two precisions:
# all activations; each unit's successive r; each text's cosine and velocity per transition; each unit's
# rotation count):

# %%
pd.DataFrame({p: diff[p]["corr"] for p in diff})

# %% tags=["remove-input"]
for p in diff:
    d = diff[p]
    record_first(f"precision_{p}:max_rel_error", d["max_rel_error"], figure="",
               claim=f"largest per-sublayer relative L2 error of the RS, {p} vs {ref} ({N_PRECISION} texts)")
    record_first(f"precision_{p}:rel_error_last", d["rel_error"][-1],
               claim=f"relative L2 error of the RS at the last sublayer, {p} vs {ref}")
    for stat, r in d["corr"].items():
        record_first(f"precision_{p}:corr_{stat}", r, claim=f"correlation of the {stat} values, {p} vs {ref}")
    chg = change[p]
    inside = chg["inside_ref_ci"]
    record_first(f"precision_{p}:headlines_inside_ci", float(inside.mean()),
               claim=f"fraction of headline numbers whose {p} value lies inside the {ref} bootstrap interval "
                     f"({N_PRECISION} texts)", outside=list(chg.index[~inside]))
    for k in chg.index[np.isfinite(chg["other"]).to_numpy()]:
        record_first(f"precision_{p}:{k}", chg.loc[k, "other"], figure=robustness.STATISTICS[k].figure,
                   claim=f"{robustness.STATISTICS[k].description} ({p}; {ref}: {chg.loc[k, 'reference']:.4g})",
                   change=chg.loc[k, "change"], inside_ref_ci=bool(chg.loc[k, "inside_ref_ci"]))

# %% [markdown]
# ## 3. Statistics: bootstrap intervals and N-dependence
# The intervals of the first model at N texts (section 1's table, drawn below), then every headline number
# recomputed on nested subsamples of the same capture — the first n texts of one random permutation, for n
# in `N_VALUES` — with the N-text interval as a grey band. A number whose curve is still moving at the
# largest N is not settled by N texts.

# %% mystnb={"figure": {"caption": "The first model's headline numbers at N texts with their 95% bootstrap intervals.", "name": "fig-06-intervals-first"}, "image": {"alt": "Dot-and-whisker plot of the first model's headline numbers with 95 percent bootstrap intervals, first model of {models}"}}
rs_default, boot_default = rs[MODEL, "original"], boot[MODEL]
pc.plot_headline_intervals(
    {MODEL: boot_default}, title=f"{MODEL}, N = {N}: 95% bootstrap intervals"
);

# %% mystnb={"figure": {"caption": "Each headline number of the first model recomputed on nested subsamples of n texts, with the N-text interval as a grey band.", "name": "fig-06-n-dependence"}, "image": {"alt": "Grid of line plots of each headline number against the number of texts, with the full-N bootstrap interval as a grey band, first model of {models}"}}
nd = robustness.n_dependence(rs_default, N_VALUES, seed=SEED, **KW)
pc.plot_n_dependence(nd, intervals=boot_default);

# %%
nd.T

# %% tags=["remove-input"]
half = max(v for v in N_VALUES if v <= N // 2) if any(v <= N // 2 for v in N_VALUES) else N_VALUES[0]
at_half = nd.loc[half]
inside = (at_half >= boot_default["low"]) & (at_half <= boot_default["high"])
record_first("n_half_inside_ci", float(inside.mean()),
           claim=f"fraction of headline numbers whose value from {half} texts lies inside the N = {N} interval",
           outside=list(inside.index[~inside]))
for k in nd.columns[np.isfinite(nd).all().to_numpy()]:
    record_first(f"n_dependence:{k}", nd[k].to_numpy(), figure=robustness.STATISTICS[k].figure,
               claim=f"{robustness.STATISTICS[k].description}, at N = {N_VALUES}")
width = (boot_default["high"] - boot_default["low"]).dropna().to_dict()
record_first("ci_width", list(width.values()),
           claim=f"width of the 95% bootstrap interval of each headline number at N = {N}",
           keys=list(width));

# %% [markdown]
# ## Recorded values
# Every number above, as the ledger holds it.

# %% tags=["remove-input"]
show_table(ch.ledger)
