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
# # 8. How robust are the verdicts? (beyond the paper)
#
# Every verdict in this book comes from one place, the claim registry `transformer_dynamics.claims`: each
# sentence of the paper once, with its statistic, the test a value must pass and the uncertainty the test
# needs (a bootstrap interval over texts, or a permutation / sign test for trends and orderings). A verdict
# is **holds**, **fails** or **undecided**. Here every claim computable from the residual stream is
# recomputed, for every model, under each choice the paper leaves open:
#
# - the **last token**: rows as given (`strip=False`; every WikiText row ends in a newline) or stripped
#   (`strip=True`), with or without a BOS token (`add_bos`);
# - the claim's **readings** (which transition "the earliest layers" means; which MI estimator: kde, ksg,
#   gcmi; ...);
# - the number of texts **N** (nested subsamples of one capture) and the numerical **precision**;
# - the **shuffled control**, as the paper writes it (every token but BOS permuted) or with the last token
#   kept in place too, so that only the order changes.
#
# For each claim and model one line: **robust ✓** (holds under every choice), **robust ✗** (fails under
# every choice), or **hinges on X**, naming the choices that flip the verdict, with the values.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
N_BOOT: int = 1000               # bootstrap resamples (r, cosine, velocity, means, rotations)
N_BOOT_SLOW: int = 20            # ... of which MI and PCA are recomputed on this many
MI_UNITS: int = 64               # MI on a random subset of this many units (chapter 2's MI_COMPARE_UNITS)
MI_METHODS: list[str] = ["kde", "ksg", "gcmi"]  # readings of the MI claims; the first is the paper's
N_SHUFFLES: int = 1000           # layer-order shuffles for the rotation null (as chapter 3)
PCA_COMPONENTS: int = 100        # components kept for the PCA claim (as chapter 4)
VARIANCE_THRESHOLD: float = 0.9  # "components for 90% of the variance"
N_VALUES: list[int] = [100, 250, 500]  # nested subsamples of the N texts (only those below N)
PRECISIONS: list[str] = ["float32", "bfloat16", "4bit"]  # chapter 6's captures (same texts, same cache)
N_PRECISION: int = 200           # texts per precision (as chapter 6)
N_FIRST: int = 4                 # transitions in the last-token figure
PROFILE: Optional[str] = "colab" # in Colab: this run profile replaces the values above (None: keep yours)

# %% tags=["remove-cell"]
# Lists given as text become lists; in Colab: install the package (pinned), apply PROFILE, HF_TOKEN, CACHE_DIR.
import os, subprocess, sys  # noqa: E401
if "google.colab" in sys.modules:
    SPEC = os.environ.get("TRANSFORMER_DYNAMICS_SPEC", "transformer-dynamics[quant,hub] @ git+https://github.com/transformer-dynamics/transformer-dynamics@v0.1.0")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", SPEC], check=True)
from transformer_dynamics import colab
colab.setup(globals(), "08_verdict_robustness")

# %%
import pandas as pd
from IPython.display import Markdown, display

from transformer_dynamics import chapter, claims, pipeline, robustness
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import robustness as pr

N_VALUES = sorted(int(v) for v in N_VALUES if int(v) < N)
# the ledger only: the captures below vary the tokenisation, N and the precision
ch = chapter.setup("08_verdict_robustness", models=MODELS, n=N, seed=SEED,
                   ledger_dir=LEDGER_DIR, capture=False, n_boot=N_BOOT,
                   n_boot_slow=N_BOOT_SLOW, mi_units=MI_UNITS, mi_methods=list(MI_METHODS),
                   n_values=N_VALUES, precisions=list(PRECISIONS), n_precision=N_PRECISION)
MODELS = ch.models
KW = dict(pca_components=PCA_COMPONENTS, n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW, seed=SEED,
          mi_units=MI_UNITS, n_shuffles=N_SHUFFLES, variance=VARIANCE_THRESHOLD)
#: the book's headline capture and the three other last-token variants:
#: (choice, setting) -> keywords
TOKENS = {
    ("baseline", "strip=False, add_bos=True"): dict(strip=False, add_bos=True),
    ("strip", "True"): dict(strip=True, add_bos=True),
    ("add_bos", "False"): dict(strip=False, add_bos=False),
    ("strip & add_bos", "True & False"): dict(strip=True, add_bos=False),
}


def capture(model, n=N, condition="original", **kw):
    """One capture through the cache (a second identical call is a read)."""
    return pipeline.residual_stream(
        model, n=n, seed=SEED, condition=condition, cache_dir=CACHE_DIR, **kw
    )


def evidence(runs, every_mi=()):
    """Every rs-computable claim's value and uncertainty for each run
    {(model, choice, setting): rs}, side by side (one process per core);
    the runs in ``every_mi`` with every MI estimator."""
    every_mi = {k: {"mi_methods": MI_METHODS} for k in every_mi}
    return robustness.claim_evidence_runs(runs, names=("model", "choice", "setting"),
                                          mi_methods=MI_METHODS[:1], per_run=every_mi, **KW)


# %% [markdown]
# ## The runs
# Per model: the four last-token captures (the baseline with every MI estimator, so that the MI claims'
# readings are covered), nested subsamples of the baseline capture, chapter 6's precision captures
# (`N_PRECISION` texts each, float32 among them so that N and precision are not confounded), and the two
# shuffled controls. Every capture goes through the cache; the evidence of the runs is computed side by
# side, one process per CPU core (`robustness.claim_evidence_runs`).

# %%
runs, rs_tokens = {}, {}
for m in MODELS:
    for (choice, setting), kw in TOKENS.items():
        runs[m, choice, setting] = rs_tokens[m, setting] = capture(m, **kw)
    base = rs_tokens[m, "strip=False, add_bos=True"]
    for n, idx in zip(N_VALUES, robustness.nested_subsamples(N, N_VALUES, seed=SEED)):
        runs[m, "N", str(n)] = base[idx]
    for p in PRECISIONS:
        rs_p = capture(m, n=min(N_PRECISION, N), **robustness.precision_kwargs(p))
        runs[m, "precision", f"{p} (N={rs_p.shape[0]})"] = rs_p
verdicts = robustness.verdict_table(evidence(runs, [k for k in runs if k[1] == "baseline"]))
lines = robustness.robustness_lines(verdicts)

# %% [markdown]
# ## One line per claim and model
# The headline verdict (the book's capture, the claim's headline reading, N texts, float32) and whether it
# survives every open choice.

# %% tags=["remove-input"]
for _, r in lines.iterrows():
    c = claims.get(r["claim"])
    ch.ledger.record(f"robustness:{r['claim']}", r["flips"], model=r["model"], registry=r["claim"],
                     status=r["status"], headline=r["headline"], hinges_on=r["hinges_on"], line=r["line"],
                     settings=r["settings"], figure=c.figure, claim=f"{c.quote}: {r['line']} (value: settings "
                     f"whose verdict differs from the headline, of {r['settings']})")
table = lines.assign(figure=lines["claim"].map(lambda k: claims.get(k).figure),
                     contribution=lines["claim"].map(lambda k: claims.get(k).contribution))
show_table(table[["contribution", "figure", "claim", "model", "headline", "line"]], index=False)

# %% [markdown]
# The same verdicts as a grid: a row per claim, a column per choice (headline first); green holds, red
# fails, grey undecided.

# %% mystnb={"figure": {"caption": "Every claim's verdict under each open choice (headline first): green holds, red fails, grey undecided; one figure per model ({models})."}, "image": {"alt": "Grid of coloured cells, one row per claim and one column per open choice, green holds, red fails, grey undecided; one figure per model: {models}"}}
for m in MODELS:
    pr.plot_verdict_grid(verdicts, model=m)

# %% [markdown]
# ## The shuffled control: every token but BOS, or every token but BOS and the last
# The paper permutes every token after BOS. With rows as given, every original text ends in the same
# newline token while a shuffled text ends in a random one of its tokens, so the control differs from the
# original in the last token's identity as well as in word order. Keeping the last token in place leaves
# only the order changed. The claims recomputed on both controls (headline: the paper's control):

# %%
control = {(m, choice, setting): capture(m, condition=cond) for m in MODELS
           for cond, (choice, setting) in {
               "shuffled": ("baseline", "paper: all but BOS"),
               "shuffled_keep_last": ("shuffle", "all but BOS and the last")}.items()}
control_verdicts = robustness.verdict_table(evidence(control))
control_lines = robustness.robustness_lines(control_verdicts)

# %% tags=["remove-input"]
for _, r in control_lines.iterrows():
    ch.ledger.record(f"control:{r['claim']}", r["flips"], model=r["model"], status_control=r["status"],
                     headline=r["headline"], line=r["line"],
                     claim=f"{claims.get(r['claim']).quote} [shuffled-token control]: {r['line']}")
show_table(control_lines[["claim", "model", "headline", "line"]], index=False)

# %% [markdown]
# ## The last token, decided by evidence
# Median r over units and mean KDE MI over units at the first transitions, under the four BOS / strip
# variants. With rows as given every text ends in the same newline token, so sublayer 0 (that token's
# embedding) is the same vector for every text: the first transition's r and MI are undefined (marked x on
# the axis). Stripping the rows makes the last token a word that varies from text to text.

# %% mystnb={"figure": {"caption": "Median r over units and mean KDE mutual information at the first transitions under the four BOS / strip variants (x on the axis: undefined); models {models}.", "name": "fig-08-1c-first-transitions"}, "image": {"alt": "Line plots of median correlation and mean KDE mutual information at the first transitions, one line per BOS and strip variant, for the models {models}"}}
first = {m: robustness.first_transitions_table(
                {f"strip={kw['strip']}, add_bos={kw['add_bos']}": rs_tokens[m, s]
                 for (_, s), kw in TOKENS.items()},
                n_first=N_FIRST, mi_units=MI_UNITS, seed=SEED)
         for m in MODELS}
pr.plot_first_transitions(first);

# %% tags=["remove-input"]
ft = pd.concat(first, names=["model"]).reset_index(level=0)
for m in MODELS:
    for s in dict.fromkeys(first[m]["variant"]):
        d = first[m][first[m]["variant"] == s]
        ch.ledger.record(f"first_transitions:{s}", int(d["r_median"].notna().sum()), model=m, figure="1C",
                         claim=f"of the first {len(d)} transitions, those with a defined median r ({s})",
                         r_median=d["r_median"].to_numpy(), mi_mean=d["mi_mean"].to_numpy())
for col, title in (("r_median", "Median r over units"), ("mi_mean", "Mean KDE MI over units (nats)")):
    display(show_table(ft.pivot_table(index=["model", "transition", "kind"], columns="variant", values=col,
                                      dropna=False), caption=title))

# %% [markdown]
# ## Closing note
# Per model: the claims that are robust ✓, robust ✗, undecided throughout, and those that hinge (with what
# they hinge on and the values).

# %% tags=["remove-input"]
note = []
for m in MODELS:
    ls = lines[lines["model"] == m]
    note.append(f"**{m}**")
    for status, label in (("robust", "robust"), ("undecided", "undecided under every choice")):
        sel = ls[ls["status"] == status]
        if status == "robust":
            for mark in ("✓", "✗"):
                keys = sel.loc[sel["line"].str.endswith(mark), "claim"]
                note.append(f"- robust {mark}: {', '.join(keys) or 'none'}")
        else:
            note.append(f"- {label}: {', '.join(sel['claim']) or 'none'}")
    for _, r in ls[ls["status"] == "hinges"].iterrows():
        note.append(f"- `{r['claim']}` {r['line']}")
    note.append("")
Markdown("\n".join(note))
