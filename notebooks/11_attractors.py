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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/11_attractors.ipynb)
#
# **Running this in Google Colab?** The notebook asks for a GPU runtime: on a CPU one the next code cell stops before
# installing anything and says how to switch (*Runtime > Change runtime type > T4 GPU*), or set `PROFILE = "ci"` for
# the small offline models on the CPU. The cell installs the package from the GitHub branch, tag or commit this
# notebook was opened at, then applies the run profile: `PROFILE = "auto"` takes the `colab` profile in Colab and
# `full` elsewhere; a value you change in the parameters cell is kept, and `PROFILE = None` keeps them all. This
# chapter runs the two small open models at full precision in either profile (their random initialisations need
# the trained weights unquantised), so it needs no token. Chapters 1–5 run the paper's Llama 3.1 8B in Colab, a
# **gated** model: accept its licence at https://huggingface.co/meta-llama/Llama-3.1-8B, create a read token at
# https://huggingface.co/settings/tokens and add it as a Colab **secret named `HF_TOKEN`** (key icon in the left
# bar, notebook access on). The `colab` profile keeps the captures on your Google Drive (`CACHE_DIR = "drive"`:
# Colab asks for permission once), shared by every chapter.

# %% [markdown]
# # 11. Attractors measured (beyond the paper)
#
# The paper's fifth contribution is self-correction: teleported trajectories find their way back, and it
# speaks of "attractor-like dynamics in the lower layers". Chapter 5 tests its sentences over prompts from
# the teleports of Fig. 4 D; chapter 7's Lyapunov exponents, taken relative to the stream's own growth, say
# the opposite of an attractor: every exponent is above zero, some direction always grows. Both read one
# kind of move at one scale. Here the attractor is measured the way dynamical systems measure one, for
# every model in `MODELS`, the **prompt** being the sampling unit (`N_PROMPTS`: the paper's and WikiText
# rows, chapter 5's first ones):
#
# 1. **The basin profile.** At the input of each of the paper's five layers (mapped by depth, as in chapter
#    5) the last token's vector $x$ is moved by $s\,\|x\|\,u$, for sizes $s$ from 0.01 to beyond the
#    texts' own spread (log-spaced, `SIZES_PER_DECADE` per decade) and unit directions $u$ of three kinds:
#    in the plane of the stream's first two principal components (**plane**, the teleport's kind of move),
#    uniformly random in the whole space (**random**, norm-matched: every kind moves by the same amount) and
#    towards another prompt's vector (**swap**: at the distance between the two, the perturbation *is* an
#    activation swap). Each perturbed run is followed over the same window for every layer (chapter 5's:
#    one decoder layer, as many points as the last layer has). Its **recovery ratio** is its distance to the
#    clean run, relative to the stream's norm, after the window over that at the perturbation (below 1: the
#    run is pulled back relative to the stream, the scale chapter 7's exponents use); the **inward-flow
#    fraction** is the share of perturbations whose ratio is below 1.
# 2. **Basin stability** {cite:p}`menck2013basin`: the share of perturbations of a given size that end the
#    window within a tolerance of the clean run (`claims.BASIN_TOLERANCE` of the stream's norm), with a
#    bootstrap interval over prompts.
# 3. **The linearisation's validity radius.** The Jacobian predicts a perturbation's displacement
#    $s\,\|x\|\,Ju$; $Ju$ comes from central differences at a tiny size through the same one-token
#    extension (equal to the frozen-context Jacobian of chapter 7 to float precision, tested). The radius is
#    the size at which the prediction's relative error first exceeds `attractors.LINEAR_TOLERANCE`.
# 4. **Does recovery predict what matters?** The next-token distribution's KL divergence from the clean run
#    under each perturbation, under deleting the layer and under swapping it with its neighbour, next to
#    the published layer-deletion results {cite:p}`lad2024remarkable`.
# 5. **Architecture versus learning.** Everything again on the same architecture at random initialisation
#    (`REFERENCE_INITS` × `REFERENCE_SEEDS`, `transformer_dynamics.random_init`, on `N_PROMPTS_REFERENCE`
#    prompts), including the spectra of the window map's Jacobian and of its update: a measure that random
#    weights reproduce belongs to the architecture, not to training.
#
# Every perturbed run reuses its prompt's clean keys and values (`perturb.extend`): one token per
# perturbation, from the edited layer on.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts of the stream whose PCA plane gives the "plane" directions
SEED: int = 0                    # random seed: which texts are sampled, the directions, the bootstrap
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
PROMPT: str = "I'm sorry, Dave. I'm afraid I can't do that."  # the paper's prompt, the first of the prompts
N_PROMPTS: int = 16              # prompts, the sampling unit: PROMPT and WikiText rows
N_PROMPTS_REFERENCE: int = 6     # prompts of each random-init reference
SIZES_PER_DECADE: int = 3        # perturbation sizes per decade, from 0.01 to 2.15 times the stream's norm
N_DIRECTIONS: int = 4            # directions per prompt, layer, kind and size
KL_EVERY: int = 2                # next-token KL at every KL_EVERY-th size from the claims' size up
N_SPECTRA: int = 2               # texts whose window Jacobians' spectra are computed (trained model)
N_SPECTRA_REFERENCE: int = 1     # ... per random-init reference
WINDOW: Optional[int] = None     # points followed after a perturbation, every layer alike (None: chapter 5's)
N_BOOT: int = 1000               # bootstrap resamples of the prompts
N_REFERENCE: int = 200           # texts of each random-init reference's stream (its PCA plane)
REFERENCE_SEEDS: list[int] = [0, 1, 2]  # random-init seeds
REFERENCE_INITS: list[str] = ["default", "matched"]  # random-init kinds (transformer_dynamics.random_init)
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
colab.setup(globals(), "11_attractors")

# %%
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown

from transformer_dynamics import attractors, chapter, claims, perturb, pipeline, robustness
from transformer_dynamics import formats, verdicts
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import attractors as plots

t_chapter = time.perf_counter()
ch = chapter.setup("11_attractors", models=MODELS, n=N, seed=SEED, cache_dir=CACHE_DIR,
                   ledger_dir=LEDGER_DIR, capture=False, reference_n=N_REFERENCE,
                   reference_seeds=REFERENCE_SEEDS, reference_inits=REFERENCE_INITS,
                   n_prompts=N_PROMPTS, n_prompts_reference=N_PROMPTS_REFERENCE,
                   sizes_per_decade=SIZES_PER_DECADE, n_directions=N_DIRECTIONS,
                   kl_every=KL_EVERY, n_spectra=N_SPECTRA, window=WINDOW, n_boot=N_BOOT)
MODELS = ch.models
loaded, layers, names = {}, {}, {}
for m in MODELS:
    loaded[m] = pipeline.load_model(m, cache_dir=CACHE_DIR)  # (ResidualModel, tokenizer)
    layers[m] = perturb.paper_layers(loaded[m][0].n_layers)
    names[m] = perturb.depth_names(layers[m])
    print(f"{m}: perturbed layers {dict(zip(names[m], layers[m]))}")
texts = pipeline.load_texts(n=max(N, N_PROMPTS), seed=SEED)
prompts = [PROMPT, *texts[: N_PROMPTS - 1]]
sizes = attractors.perturbation_sizes(SIZES_PER_DECADE)
kl_sizes = attractors.kl_grid(sizes, KL_EVERY)
print("sizes (× the stream's norm):", formats.numbers(sizes))
print("next-token KL at:", formats.numbers(kl_sizes))

# %% [markdown]
# ## The runs
# Per model, the trained network and each random initialisation perturb their prompts at the five layers:
# every size × direction kind × `N_DIRECTIONS` directions, followed over the window, plus the central
# differences for the Jacobian-vector products; the first direction of each kind at the sizes above is run
# on to the output for the next-token KL (the random initialisations: at the claims' size only), and each
# layer is deleted and swapped at the last token. The plane of each run is its own stream's (chapter 5's:
# `N` texts for the trained model, `N_REFERENCE` for each random initialisation).

# %%
runs = {}  # model -> {run: AttractorSweep}; runs "trained", "default:0", ..., "matched:2"
for m in MODELS:
    rs = pipeline.residual_stream(m, n=N, seed=SEED, cache_dir=CACHE_DIR)
    runs[m] = attractors.attractor_runs(
        *loaded[m], {"trained": rs, **ch.reference_streams(m)}, prompts=prompts,
        layers=layers[m], sizes=sizes, n_prompts=N_PROMPTS,
        n_reference_prompts=N_PROMPTS_REFERENCE, kl_sizes=kl_sizes, n_spectra=N_SPECTRA,
        n_reference_spectra=N_SPECTRA_REFERENCE, n_directions=N_DIRECTIONS, window=WINDOW,
        seed=SEED, strip=pipeline.STRIP)
    del rs
    t = runs[m]["trained"]
    refs = [s.seconds for r, s in runs[m].items() if r != "trained"]
    print(f"{m}: window {t.window}; {t.n_prompts} prompts in {t.seconds:.1f} s; "
          f"{len(refs)} random initialisations in {sum(refs):.1f} s")
curves = {(m, r): s.curves() for m in MODELS for r, s in runs[m].items()}
boot = {k: robustness.mean_curves(c, n_boot=N_BOOT, seed=SEED) for k, c in curves.items()}
data = {m: {r: (curves[m, r], boot[m, r].boot) for r in runs[m]} for m in MODELS}

# %% [markdown]
# ## The basin profile: inward flow against size
# Each panel is one layer of one model: the share of perturbations whose distance to the clean run, relative
# to the stream's norm, has shrunk one layer later, against the perturbation's size. Lines: the trained
# model's three direction kinds (mean over prompts, 95 % bootstrap band); dashed and dotted: the plane
# directions at random initialisation (mean over seeds, their range shaded). Vertical marks: the claims'
# size (dotted), how far apart the prompts' own vectors lie there (the texts' spread over their norm,
# dashed), and the median size of a full activation swap (dash-dotted). An attractor pulls back every small
# perturbation (fraction 1 at the left); its basin ends where the fraction falls.

# %% mystnb={"figure": {"caption": "The basin profile: inward-flow fraction against perturbation size at the paper's five layers, for plane, random and swap directions (trained, mean over prompts with 95% bootstrap band) and the plane directions at random initialisation; rows: models ({models}); columns: layers by depth.", "name": "fig-11-flow"}, "image": {"alt": "Grid of line plots of the inward-flow fraction against log perturbation size, one panel per model and layer, lines for three direction kinds and random-init references; models {models}"}}
spread = {m: runs[m]["trained"].spread for m in MODELS}
swap_size = {m: np.nanmedian(runs[m]["trained"].swap_size, axis=(0, 2)) for m in MODELS}
fig = plots.plot_size_profiles(data, sizes={m: sizes for m in MODELS}, names=names,
                               key="flow_size", spread=spread, swap_size=swap_size,
                               claim_size=claims.ATTRACTOR_SIZE)

# %% [markdown]
# The recovery ratio itself (median over directions, then mean over prompts; log scale): below the grey
# line at 1 a perturbation shrinks relative to the stream over the window, above it grows. Where it is flat
# the response is linear in the size; the bend is where the linearisation fails (below).

# %% mystnb={"figure": {"caption": "Recovery ratio (relative distance after over at the perturbation, one layer later) against perturbation size at the paper's five layers, for the three direction kinds (trained) and the plane directions at random initialisation; rows: models ({models}); columns: layers by depth.", "name": "fig-11-recovery"}, "image": {"alt": "Grid of log-log line plots of the recovery ratio against perturbation size, one panel per model and layer, with random-init references; models {models}"}}
fig = plots.plot_size_profiles(data, sizes={m: sizes for m in MODELS}, names=names,
                               key="recovery_size", spread=spread, swap_size=swap_size,
                               claim_size=claims.ATTRACTOR_SIZE, log_y=True)

# %% [markdown]
# ## Basin stability
# Of the plane perturbations of each size, the share that end the window within
# `claims.BASIN_TOLERANCE` of the stream's norm of the clean run, per layer, with the 95 % bootstrap band
# over prompts. A perturbation smaller than the tolerance has "returned" unless it grows; the size at which
# the curve falls through one half is the basin's reach at that layer (table below, trained and random
# initialisations).

# %% mystnb={"figure": {"caption": "Basin stability of the plane perturbations against their size, one line per perturbed layer with its 95% bootstrap band over prompts; one panel per model ({models}).", "name": "fig-11-basin"}, "image": {"alt": "Line plots of basin stability against log perturbation size, one line per layer with bootstrap bands, one panel per model: {models}"}}
panels = {(m, "basin stability"): (plots.plot_by_layer,
                                   (curves[m, "trained"]["basin_size:plane"],
                                    boot[m, "trained"].boot["basin_size:plane"], sizes),
                                   dict(names=names[m], key="basin_size", hline=0.5))
          for m in MODELS}
fig = plots.plot_mixed_grid(panels, width=4.6)

# %% tags=["hide-input"]
summary = {m: attractors.layer_summary(runs[m], names[m]) for m in MODELS}
show_table(pd.concat({m: s["basin reach"].unstack("run", sort=False) for m, s in summary.items()},
                     names=["model"]),
           caption="The basin's reach: the size (× the stream's norm) at which basin stability falls "
                   "below one half, from the mean over prompts (seeds averaged).")

# %% [markdown]
# ## Where the linearisation stops holding
# Left: the relative error of the Jacobian's prediction of the displacement at the window's end, against the
# size (random directions, median over directions, mean over prompts; dotted: the tolerance). It grows in
# proportion to the size at first, as a first-order prediction's error must. Right: the validity radius per
# layer (log10 of the size where the error crosses the tolerance, censored at the grid's ends), trained
# against the random initialisations.

# %% mystnb={"figure": {"caption": "The linearisation's relative error against perturbation size per layer (left) and its validity radius per layer, trained against random initialisation (right); rows: models ({models}).", "name": "fig-11-linear"}, "image": {"alt": "Per model, line plots of the linearisation error against log size per layer, and of the log validity radius per layer with random-init references; models {models}"}}
panels = {}
for m in MODELS:
    panels[m, "error"] = (plots.plot_by_layer, (curves[m, "trained"]["error_size:random"],
                          boot[m, "trained"].boot["error_size:random"], sizes),
                          dict(names=names[m], key="error_size", log_y=True,
                               hline=attractors.LINEAR_TOLERANCE))
    panels[m, "radius"] = (plots.plot_layer_measure,
                           ({r: (c["validity:random"], b["validity:random"])
                             for r, (c, b) in data[m].items()},),
                           dict(key="validity", names=names[m], layers=layers[m]))
fig = plots.plot_mixed_grid(panels, width=4.6)

# %% [markdown]
# ## The Jacobian's view: architecture versus learning
# The singular values of the window map's Jacobian (solid) and of its update $J - I$ (dashed), each times
# $\|x_p\| / \|x_{p+W}\|$ so that 1 means "as fast as the stream grows", in decreasing order, mean over
# `N_SPECTRA` texts (`N_SPECTRA_REFERENCE` per random initialisation). Values below the dotted line are
# directions that shrink relative to the stream; the share of them is the linear inward-flow fraction of
# uniformly random directions, and the top value is what a positive top exponent (chapter 7) needs.

# %% mystnb={"figure": {"caption": "Scaled singular values of the window map's Jacobian (solid) and of its update (dashed) at the paper's five layers, trained (black) against random initialisation (coloured); rows: models ({models}); columns: layers by depth.", "name": "fig-11-spectra"}, "image": {"alt": "Grid of log plots of sorted scaled singular values against rank over width, map and update, trained and random-init, one panel per model and layer; models {models}"}}
spectra = {m: {r: s.spectra for r, s in runs[m].items()} for m in MODELS}
fig = plots.plot_spectra_grid(spectra, names=names)

# %% tags=["hide-input"]
spectra_cols = ["spectrum top", "spectrum rms", "spectrum share_below_1", "spectrum rms_update"]
show_table(pd.concat({m: s[spectra_cols].dropna() for m, s in summary.items()},
                     names=["model"]),
           caption="Scaled singular values per layer, mean over texts (and seeds): the largest and the "
                   "RMS of the window map's, the share below 1, and the RMS of its update's.")

# %% [markdown]
# ## Does recovery predict what matters?
# First two panels: the next-token KL divergence from the clean run when the layer is deleted, and when it
# is swapped with its neighbour (the next layer; the previous one for the last), both at the last token
# only, like every edit here (earlier tokens run the intact model; {cite:t}`lad2024remarkable` intervene at
# every position of larger models, and report 72–95 % of top-1 accuracy kept, with the first and last
# layers fragile). Third: the KL of the plane perturbations against their size, per layer. Last: each
# layer's recovery ratio of the plane perturbations at the claims' size against the next-token KL of the
# same perturbations, with 95 % bootstrap intervals over prompts.

# %% mystnb={"figure": {"caption": "Does recovery predict what matters: next-token KL of deleting each layer and of swapping it with its neighbour, trained against random initialisation; the KL of the plane perturbations against their size per layer; each layer's recovery ratio against the next-token KL of the same perturbations; rows: models ({models}).", "name": "fig-11-next-token"}, "image": {"alt": "Per model, line plots of the next-token KL of layer deletion and of layer swaps per layer with random-init references, of the KL against perturbation size per layer, and a scatter of recovery ratio against KL per layer; models {models}"}}
panels = {}
for m in MODELS:
    for key in ("kl_delete", "kl_swap"):
        panels[m, key] = (plots.plot_layer_measure,
                          ({r: (c[key], b[key]) for r, (c, b) in data[m].items()},),
                          dict(key=key, names=names[m], layers=layers[m], log=True))
    panels[m, "KL against size"] = (plots.plot_by_layer,
                                    (curves[m, "trained"]["kl_size:plane"],
                                     boot[m, "trained"].boot["kl_size:plane"], kl_sizes),
                                    dict(names=names[m], key="kl_size", log_y=True))
    panels[m, "recovery vs KL"] = (plots.plot_recovery_vs_kl, (data[m],),
                                   dict(names=names[m]))
fig = plots.plot_mixed_grid(panels)

# %% tags=["hide-input"]
show_table(pd.concat({m: s[list(attractors.SUMMARY_CURVES)] for m, s in summary.items()},
                     names=["model"]),
           caption=f"Per layer at the claims' size {claims.ATTRACTOR_SIZE:g}: means over prompts (and "
                   "seeds). validity: log10 radius; top1: share of prompts whose most likely next token "
                   "survives the intervention.")

# %% [markdown]
# ## The claims, decided
# Two sentences enter the registry (`transformer_dynamics.claims`, source "attractors"), each read from the
# per-prompt curves at the claims' size (`claims.ATTRACTOR_SIZE` of the stream's norm):
# `attractor_lower_flow`, the paper's "attractor-like dynamics in the lower layers", as the inward-flow
# fraction of the lower half of the five layers (first, early) minus the upper half's (late, last), > 0;
# readings for the plane (headline), random and swap directions and for basin stability; and
# `recovery_predicts_robustness`, the rank correlation over the five layers between the recovery ratio and
# the next-token KL of the same perturbations (> 0: layers that pull perturbations back more move the next
# token less), with deletion and swap KLs as other readings. Each value comes with its bootstrap interval
# over prompts (`N_BOOT` resamples); the line compares it with the random initialisations.

# %%
PAIRS = claims.readings(claims.claims_of(source="attractors", chapter=ch.name))
tables = {}
for m in MODELS:
    evidence = [e for r, s in runs[m].items() for e in robustness.evidence_from_curves(
        boot[m, r], PAIRS, run=r, n=s.n_prompts)]
    tables[m] = verdicts.judge(evidence, seed=SEED)
    ch.ledger.claims(tables[m], model=m)
show_table(verdicts.summary_table(pd.concat([t.assign(model=m) for m, t in tables.items()],
                                            ignore_index=True)), index=False)

# %% tags=["remove-input"]
for m in MODELS:
    kw = dict(figure="beyond", model=m, layers=layers[m], depths=names[m])
    t = summary[m].xs("trained", level="run")
    for key, text in (("flow:plane", "inward-flow fraction, plane directions"),
                      ("flow:random", "inward-flow fraction, random directions"),
                      ("flow:swap", "inward-flow fraction, swap directions"),
                      ("basin:plane", "basin stability, plane directions"),
                      ("recovery:plane", "recovery ratio, plane directions"),
                      ("validity:plane", "log10 validity radius of the linearisation, plane directions"),
                      ("kl_delete", "next-token KL of deleting the layer (last token)"),
                      ("kl_swap", "next-token KL of swapping the layer with its neighbour (last token)"),
                      ("top1_delete", "share of prompts whose top-1 next token survives deleting the layer"),
                      ("top1_swap", "share of prompts whose top-1 next token survives the swap")):
        ch.ledger.record(f"attr_{key.replace(':', '_')}_by_layer", t[key].tolist(), **kw,
                         claim=f"{text} at size {claims.ATTRACTOR_SIZE:g}, mean over "
                               f"{runs[m]['trained'].n_prompts} prompts, per perturbed layer")
    ch.ledger.record("attr_basin_reach_by_layer", t["basin reach"].tolist(), **kw,
                     claim="size (× the stream's norm) at which basin stability of the plane "
                           "perturbations falls below one half")
    ch.ledger.record("attr_spectrum_top_by_layer", t["spectrum top"].tolist(), **kw,
                     claim="largest singular value of the window map's Jacobian times the stream's "
                           "norm ratio (> 1: some direction grows relative to the stream)")
    ch.ledger.record("attr_spectrum_share_below_1_by_layer", t["spectrum share_below_1"].tolist(), **kw,
                     claim="share of the window map's scaled singular values below 1")
    ch.ledger.record("attr_seconds", [r.seconds for r in runs[m].values()], unit="s",
                     figure="beyond", model=m, runs=list(runs[m]),
                     claim="wall time of the perturbations per run (trained, random inits)")

# %% [markdown]
# ## Closing note
# Computed from the verdicts and tables above, and from chapter 7's ledger when that chapter has run.

# %% tags=["remove-input"]
ch7 = attractors.chapter_ledger("07_local_dynamics", ch.ledger.directory)
lines = []
for m in MODELS:
    tab = tables[m].set_index(["claim", "reading"])
    head = tab.loc["attractor_lower_flow", "plane"]
    t = summary[m].xs("trained", level="run")
    low = t.iloc[:2]  # the first and early layers: the lower half
    readings = "; ".join(f"{r}: {tab.loc['attractor_lower_flow', r]['line']}"
                         for r in ("random", "swap", "basin"))
    lines.append(
        f"**{m}.** *Attractor-like dynamics in the lower layers*, by the inward-flow fraction at size "
        f"{claims.ATTRACTOR_SIZE:g} of the plane perturbations: lower minus upper layers "
        f"{formats.with_interval(head['value'], head['low'], head['high'])}, **{head['line']}** (per "
        f"layer, {', '.join(names[m])}: {formats.numbers(t['flow:plane'])}; other readings: {readings}).")
    rel = attractors.ledger_entry(ch7, "dyn_relative_exponent_at_depths", m)
    exp7 = attractors.ledger_entry(ch7, "attractor_lower_exponents", m)
    if rel is None:
        lines.append("- Chapter 7's exponents are not available in this run (no ledger of chapter 7 with "
                     "relative exponents for this model).")
    else:
        grows = bool((low["spectrum top"] > 1).all())
        lines.append(
            f"- Chapter 7's top exponents relative to the stream's growth at the five depths: "
            f"{formats.numbers(rel['value'])}"
            + (f" (its claim *attractor_lower_exponents*: {exp7['verdict']})" if exp7 else "")
            + f". Their one-layer counterpart, the largest scaled singular value of the window map at "
            f"the first and early layers, is {formats.numbers(low['spectrum top'])} ("
            + ("above 1: some direction outgrows the stream there, as positive exponents say" if grows
               else "not above 1 at both, unlike positive exponents")
            + f"), while {formats.numbers(low['spectrum share_below_1'])} of the directions shrink relative to the "
            "stream. The two read different directions of the same maps: the exponents the most "
            "expanding one, followed to the end of the stack; the inward-flow fraction typical plane "
            f"directions over one layer. By the latter the sentence is **{head['line']}**"
            + (f"; by the former it {exp7['verdict'].replace('undecided', 'is undecided')}."
               if exp7 else "."))
    rp = tab.loc["recovery_predicts_robustness"]
    top1 = t[["top1_delete", "top1_swap"]]
    lines.append(
        f"- *Recovery predicts next-token robustness*: rank correlation over the layers "
        f"{formats.with_interval(*rp.loc['perturbation', ['value', 'low', 'high']])}, "
        f"**{rp.loc['perturbation', 'line']}**; with the deletion "
        f"KL {rp.loc['delete', 'line']}, with the swap KL {rp.loc['swap', 'line']}. Deleting a layer at "
        f"the last token keeps the most likely next token in {top1['top1_delete'].mean():.0%} of prompts, "
        f"swapping it with its neighbour in {top1['top1_swap'].mean():.0%} (mean over the five layers; "
        f"first and last layers {top1.iloc[[0, -1]].mean().mean():.0%}, the middle three "
        f"{top1.iloc[1:-1].mean().mean():.0%}), against the 72–95 % of top-1 accuracy retained and the "
        "fragile first and last layers that Lad et al. report for deletions and swaps at every position "
        "of larger models.")
lines.append(f"The chapter ran in {(time.perf_counter() - t_chapter) / 60:.1f} minutes.")
Markdown("\n\n".join(lines))

# %% [markdown]
# ## The statements next to ours
# Every row is a ledger entry written above, one per model; the claims' rows come from the registry (✓
# holds, ✗ fails, ? undecided), the others are plain values.

# %% tags=["remove-input"]
show_table(ch.ledger, paper=True)

# %% tags=["remove-input"]
show_table(ch.ledger, paper=False)
