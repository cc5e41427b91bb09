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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/08_verdict_robustness.ipynb)
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
# # 8. How robust are the verdicts? (beyond the paper)
#
# Every verdict in this book comes from one place, the claim registry `transformer_dynamics.claims`: each
# sentence of the paper once, with its statistic and the test a value must pass. The value's uncertainty is a
# bootstrap interval over texts, and a verdict is **holds** (the whole interval on the claim's side of its
# threshold), **fails** (wholly on the other side) or **undecided**. Here every claim computable from the
# residual stream is recomputed, for every model, under each choice the paper leaves open:
#
# - the **last token**: the book's headline uses stripped rows with a BOS token (`strip=True`, `add_bos=True`,
#   `pipeline.STRIP`); the other settings are the rows as given (`strip=False`: every WikiText row ends in a
#   newline, and begins with a space that stripping removes too, so the first word's token differs as well)
#   and the captures without BOS;
# - the claim's **readings** (which transition "the earliest layers" means; which MI estimator: kde, ksg,
#   gcmi; ...), each on the headline capture;
# - the number of texts **N** (nested subsamples of the headline capture);
# - the numerical **precision**, compared at equal N: every precision capture has `N_PRECISION` texts, and
#   each is set against the float32 capture of the same texts, never against the N-text headline;
# - the **shuffled control**, as the paper writes it (every token but BOS permuted) or with the last token
#   kept in place too.
#
# A setting can do three different things to a verdict, and the lines below keep them apart:
#
# - a **flip**: holds ↔ fails. Only a flip makes a claim **hinge on** a choice;
# - **loses significance**: holds or fails → undecided, with the value still defined (a smaller N, a noisier
#   setting): the data say less there, not the opposite;
# - **undefined**: the statistic has no value there (with the rows as given the first sublayer is the same
#   vector for every text, so the first transition's r is undefined), or the claim's premise does not hold, so
#   the claim is not asked.
#
# Each claim and model gets one status: **robust** (decided at the headline and the same wherever defined),
# **hinges** (a flip), **loses power** (no flip, but undecided somewhere), or undecided / undefined at the
# headline.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
N_BOOT: int = 1000               # bootstrap resamples of the texts (r, cosine, velocity, magnitudes, density)
N_BOOT_SLOW: int = 200           # ... of which MI, rotations and PCA are recomputed on this many
MI_UNITS: int = 64               # MI on a random subset of this many units (chapter 2's MI_COMPARE_UNITS)
MI_METHODS: list[str] = ["kde", "ksg", "gcmi"]  # readings of the MI claims; the first is the paper's
N_SHUFFLES: int = 20             # surrogates per unit for the rotation claims (chapter 3's N_SHUFFLES_RESAMPLE)
PCA_COMPONENTS: int = 100        # components kept for the PCA claims (as chapter 4)
VARIANCE_THRESHOLD: float = 0.9  # "components for 90% of the variance"
N_VALUES: list[int] = [100, 250, 500]  # nested subsamples of the N texts (only those below N)
PRECISIONS: list[str] = ["float32", "bfloat16", "4bit"]  # the first is the reference (chapter 6's captures)
N_PRECISION: int = 100           # texts per precision (as chapter 6)
N_FIRST: int = 4                 # transitions in the last-token figure
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
colab.setup(globals(), "08_verdict_robustness")

# %%
import pandas as pd
from IPython.display import Markdown, display

from transformer_dynamics import chapter, claims, pipeline, robustness
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import robustness as plot_robustness
from transformer_dynamics.plots import verdicts as plot_verdicts

pd.set_option("display.max_colwidth", None)
N_VALUES = sorted(int(v) for v in N_VALUES if int(v) < N)
# the ledger only: the captures below vary the tokenisation, N and the precision
ch = chapter.setup("08_verdict_robustness", models=MODELS, n=N, seed=SEED,
                   ledger_dir=LEDGER_DIR, capture=False, n_boot=N_BOOT,
                   n_boot_slow=N_BOOT_SLOW, mi_units=MI_UNITS, mi_methods=list(MI_METHODS),
                   n_values=N_VALUES, precisions=list(PRECISIONS), n_precision=N_PRECISION)
MODELS = ch.models
# the evidence's keywords: chapters 2-4's (their headline numbers are these headline rows)
evidence_kwargs = dict(n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW, seed=SEED, mi_units=MI_UNITS,
                       mi_methods=MI_METHODS, n_shuffles=N_SHUFFLES, cache_dir=CACHE_DIR,
                       variance=VARIANCE_THRESHOLD, pca_components=PCA_COMPONENTS)
# the four last-token captures: setting -> keywords; the headline: pipeline.STRIP with BOS
TOKENS = {f"strip={s}, add_bos={b}": dict(strip=s, add_bos=b)
          for s in (True, False) for b in (True, False)}
HEADLINE = f"strip={pipeline.STRIP}, add_bos=True"
# every capture goes through the cache (a second identical call is a read)
CAPTURE = dict(seed=SEED, cache_dir=CACHE_DIR)


# %% [markdown]
# ## The runs
# Per model: the four last-token captures (the headline with every MI estimator, so that the MI claims'
# readings are covered), nested subsamples of the headline capture, and chapter 6's precision captures
# (`N_PRECISION` texts each; the first precision, float32, is the reference the others are compared with at
# that N). Every capture goes through the cache; the evidence of the runs is computed side by side, one process
# per CPU core (`robustness.claim_evidence_runs`), and each row is decided on its own
# (`robustness.choice_frame`).

# %%
runs, rs_tokens = {}, {}
for m in MODELS:
    for setting, kw in TOKENS.items():
        rs_tokens[m, setting] = pipeline.residual_stream(m, n=N, **CAPTURE, **kw)
        choice = robustness.HEADLINE if setting == HEADLINE else "last token"
        runs[m, choice, setting] = rs_tokens[m, setting]
    head = rs_tokens[m, HEADLINE]
    for n, idx in zip(N_VALUES, robustness.nested_subsamples(N, N_VALUES, seed=SEED)):
        runs[m, robustness.N_CHOICE, str(n)] = head[idx]
    for p in PRECISIONS:
        rs_p = pipeline.residual_stream(m, n=min(N_PRECISION, N), **CAPTURE,
                                        **robustness.precision_kwargs(p))
        runs[m, "precision", f"{p} (N={rs_p.shape[0]})"] = rs_p
references = [("precision", f"{PRECISIONS[0]} (N={min(N_PRECISION, N)})")]
frame = robustness.choice_frame(robustness.choice_evidence(runs, **evidence_kwargs),
                                references=references)
changes = robustness.setting_changes(frame)
lines = robustness.robustness_lines(frame)
counts = robustness.robustness_counts(lines)

# %% [markdown]
# ## How many verdicts survive
# Per model, the claims (headline reading) by what the open choices do to their verdict, and the choices the
# flips come from (a claim that flips under two choices counts for both):

# %% tags=["remove-input"]
display(Markdown(robustness.counts_sentence(counts)))
display(show_table(counts))
show_table(robustness.hinge_counts(lines))

# %% tags=["remove-input"]
for m in MODELS:
    for status in robustness.STATUSES:
        ch.ledger.record(f"claims_{status.replace(' ', '_')}", int(counts.loc[m, status]), model=m,
                         claim=f"claims whose status under the open choices is '{status}'",
                         of=int(counts.loc[m, "claims"]))

# %% [markdown]
# ## One line per claim and model
# The headline verdict (the claim's headline reading on the headline capture, N texts, float32) and what each
# other setting does to it. Values are the claim's statistic with its 95% interval over texts.

# %% tags=["remove-input"]
heads = lines[lines["headline_reading"]]
for _, r in heads.iterrows():
    c = claims.get(r["claim"])
    ch.ledger.record(f"robustness:{r['claim']}", r["flips"], model=r["model"], registry=r["claim"],
                     status=r["status"], hinges_on=r["hinges_on"], compared=r["compared"],
                     losses=r["losses"], undefined=r["undefined"], line=r["line"], figure=c.figure,
                     claim=f"{c.quote}: settings that flip the verdict, of {r['compared']} ({r['line']})")
heads.assign(figure=heads["claim"].map({k: c.figure for k, c in claims.REGISTRY.items()}))[
    ["figure", "claim", "model", "status", "line"]].set_index(["claim", "model"])

# %% [markdown]
# The same as a grid per model: a row per claim, a column per setting (the headline first, then the claim's
# other readings on the headline capture, the last token, N and precision). Green holds, red fails, grey
# undecided, white undefined; the mark says what the setting did against its reference (outlined): **F** a
# flip, **↓** lost significance, **↑** decided where the reference is not, **–** undefined.

# %% mystnb={"figure": {"caption": "Every claim's verdict under each open choice (headline first): green holds, red fails, grey undecided, white undefined; F a flip, \u2193 lost significance, \u2191 decided where the reference is not, \u2013 undefined; outlined: the reference; one figure per model ({models}).", "name": "fig-08-grid"}, "image": {"alt": "Grid of coloured cells, one row per claim and one column per open choice, marked F for a flip and arrows for lost or gained significance, one grid per model: {models}"}}
plot_verdicts.plot_verdict_grids(changes, MODELS);

# %% [markdown]
# The claims' other readings, each over the settings it was computed under (the MI estimators other than the
# paper's only on the headline capture, where they appear as the headline reading's "reading" column above):

# %% tags=["remove-input"]
others = lines[~lines["headline_reading"]]
for _, r in others.iterrows():
    ch.ledger.record(f"robustness:{r['claim']}:{r['reading']}", r["flips"], model=r["model"],
                     registry=r["claim"], reading=r["reading"], reading_status=r["status"], line=r["line"],
                     claim=f"{claims.get(r['claim']).quote} [{r['reading']}]: settings that flip the "
                           f"verdict, of {r['compared']} ({r['line']})")
others[["claim", "reading", "model", "status", "line"]].set_index(["claim", "reading", "model"])

# %% [markdown]
# ## The shuffled control: every token but BOS, or every token but BOS and the last
# The paper permutes every token after BOS, so a shuffled text ends in a random one of its tokens. Keeping
# the last token in place too leaves only the order changed. The claims recomputed on both controls (headline:
# the paper's control), with the same lines:

# %%
CONTROLS = {"shuffled": (robustness.HEADLINE, "paper: all but BOS"),
            "shuffled_keep_last": ("control", "all but BOS and the last")}
control = {(m, *choice): pipeline.residual_stream(m, n=N, condition=cond, **CAPTURE)
           for m in MODELS for cond, choice in CONTROLS.items()}
control_lines = robustness.robustness_lines(
    robustness.choice_frame(robustness.choice_evidence(control, **evidence_kwargs)))
control_heads = control_lines[control_lines["headline_reading"]]

# %% tags=["remove-input"]
for _, r in control_heads.iterrows():
    ch.ledger.record(f"control:{r['claim']}", r["flips"], model=r["model"], status_control=r["status"],
                     line=r["line"], claim=f"{claims.get(r['claim']).quote} [shuffled-token control]: "
                     f"flips with the last token kept ({r['line']})")
display(show_table(robustness.robustness_counts(control_lines)))
show_table(control_heads[["claim", "model", "verdict", "status", "line"]].set_index(["claim", "model"]))

# %% [markdown]
# ## The last token, decided by evidence
# Median r over units and mean KDE MI over units at the first transitions, under the four BOS / strip
# variants. With rows as given every text ends in the same newline token, so sublayer 0 (that token's
# embedding) is the same vector for every text: the first transition's r and MI are undefined (marked x on
# the axis). Stripping the rows makes the last token a word that varies from text to text.

# %% mystnb={"figure": {"caption": "Median r over units and mean KDE mutual information at the first transitions under the four BOS / strip variants (x on the axis: undefined); models {models}.", "name": "fig-08-1c-first-transitions"}, "image": {"alt": "Line plots of median correlation and mean KDE mutual information at the first transitions, one line per BOS and strip variant, for the models {models}"}}
first = {m: robustness.first_transitions_table(
                {s: rs_tokens[m, s] for s in TOKENS}, n_first=N_FIRST, mi_units=MI_UNITS,
                seed=SEED)
         for m in MODELS}
plot_robustness.plot_first_transitions(first);

# %% tags=["remove-input"]
ft = pd.concat(first, names=["model"]).reset_index(level=0)
for m in MODELS:
    for s in dict.fromkeys(first[m]["variant"]):
        d = first[m][first[m]["variant"] == s]
        ch.ledger.record(f"first_transitions:{s}", int(d["r_median"].notna().sum()), model=m, figure="1C",
                         claim=f"of the first {len(d)} transitions, those with a defined median r ({s})",
                         r_median=d["r_median"].to_numpy(), mi_mean=d["mi_mean"].to_numpy())
for col, title in (("r_median", "Median r over units"), ("mi_mean", "Mean KDE MI over units (nats)")):
    display(Markdown(f"**{title}**"))
    display(show_table(ft.set_index(["model", "transition", "kind", "variant"])[col]
                       .unstack("variant")))

# %% [markdown]
# ## Closing note
# Per model: the claims that are robust (✓ holds, ✗ fails), those that only lose significance somewhere, those
# undecided or undefined at the headline, and those that hinge on a choice, with the flips' values.

# %% tags=["remove-input"]
note = [robustness.counts_sentence(counts), ""]
for m in MODELS:
    ls = heads[heads["model"] == m]
    note.append(f"**{m}**")
    for verdict, mark in (("holds", "✓"), ("fails", "✗")):
        keys = ls.loc[(ls["status"] == "robust") & (ls["verdict"] == verdict), "claim"]
        note.append(f"- robust {mark}: {', '.join(keys) or 'none'}")
    for status, label in (("loses power", "only lose significance"), ("undecided", "undecided at the headline"),
                          ("undefined", "undefined at the headline")):
        sel = ls[ls["status"] == status]
        where = [f"{k} ({w})" if w else k for k, w in zip(sel["claim"], sel["loses_power_at"])]
        note.append(f"- {label}: {', '.join(where if status == 'loses power' else sel['claim']) or 'none'}")
    for _, r in ls[ls["status"] == "hinges"].iterrows():
        note.append(f"- `{r['claim']}` {r['line']}")
    note.append("")
Markdown("\n".join(note))
