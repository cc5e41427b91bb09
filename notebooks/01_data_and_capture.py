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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/01_data_and_capture.ipynb)
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
# # 1. Data and residual-stream capture
#
# The paper (§2.1) feeds WikiText-2 rows of 100–500 characters to Llama 3.1 8B and records, at the
# **last token**, the residual stream (RS) at two points of every decoder layer: the input of the
# pre-attention norm ($\mathbf{h}_l^{\text{Attn}}$) and the input of the pre-MLP norm
# ($\mathbf{h}_l^{\text{MLP}}$), interleaved into $2L$ "sublayers". In TransformerLens's names these are
# `blocks.l.hook_resid_pre` and `blocks.l.hook_resid_mid`. The shuffled-token control permutes every
# token but the first (BOS).
#
# This chapter loads the data, shows what the filter keeps, makes the two tokenisation choices explicit
# (BOS and the rows' trailing `" \n"`), and captures the RS for both conditions into the on-disk cache
# that every later chapter reads. It does all of this for every model in `MODELS`: each figure has one
# panel per model, side by side (models may differ in depth and width, so each panel has its own
# sublayer axis), tables have a row or column per model, and the ledger records every number once per model.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # side by side: short names, Hugging Face ids or local paths
N: int = 1000                    # texts
SEED: int = 0                    # random seed: which texts are sampled
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
QUANTIZATION: Optional[str] = None  # None, "4bit" or "8bit" (bitsandbytes)
BATCH_SIZE: int = 16             # texts per forward pass
ADD_BOS: bool = True             # put BOS first (the paper's t_0)
STRIP: bool = True               # strip the rows' leading " " and trailing " \n" (the headline; False: as given)
N_VARIANTS: int = 64             # texts used to show the effect of ADD_BOS / STRIP
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
colab.setup(globals(), "01_data_and_capture")

# %%
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from transformer_dynamics import capture, chapter, data, metrics, pipeline
from transformer_dynamics.plots import overview
from transformer_dynamics.plots.style import grid

# the ledger only: this chapter shows the capture itself (timed, below)
ch = chapter.setup("01_data_and_capture", models=MODELS, n=N, seed=SEED,
                   ledger_dir=LEDGER_DIR, capture=False)
MODELS, CONDITIONS = ch.models, ch.conditions
capture_kw = dict(cache_dir=CACHE_DIR, quantization=QUANTIZATION, batch_size=BATCH_SIZE,
                  add_bos=ADD_BOS, strip=STRIP)

# %% [markdown]
# ## The data and the paper's length filter
# Rows come exactly as `datasets.load_dataset("wikitext", "wikitext-2-raw-v1")` yields them: each keeps
# its trailing newline and blank rows are `""`. Offline, they are read from the raw files
# (`$TRANSFORMER_DYNAMICS_DATA` or `../shared/data/wikitext-2-raw`). The test split alone has too few rows
# for the paper's N = 1000 (see the table), so the default samples from test + validation together. The data
# are the same for every model.

# %%
counts = []
for split in data.DEFAULT_SPLITS:
    rows, source = data.load_rows([split])
    kept = data.filter_rows(rows)
    counts.append({"split": split, "rows": len(rows),
                   "non-blank": sum(r != "" for r in rows),
                   f"{data.L_MIN} < len < {data.L_MAX}": len(kept)})
counts = pd.DataFrame(counts).set_index("split")
counts.loc["together"] = counts.sum()
display(counts)
n_available = int(counts.loc["together"].iloc[-1])
folder = source.location.rstrip("/").rsplit("/", 1)[-1]  # its name: no path of this machine
print(source.describe().replace(source.location, folder))

texts = pipeline.load_texts(N, seed=SEED)
ends = pd.Series([repr(t[-3:]) for t in texts]).value_counts().head(3)
display(Markdown(f"Sampled **{len(texts)}** rows (seed {SEED}) of the **{n_available}** "
                 "that pass the filter. The most common row endings:"))
display(ends.to_frame("rows"))

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("rows_after_filter", n_available, claim="rows of 100-500 characters available",
                     figure="data", model=m)

# %% [markdown]
# ## The models, and two explicit tokenisation choices
# * **BOS.** The paper writes the tokenised text as $[t_0, t_1, \dots, t_n]$ with $t_0$ = BOS, and the
#   shuffle control keeps it in place. Tokenizers differ here: some put BOS first by themselves (Llama 3's
#   does), others do not. We add it explicitly (`ADD_BOS`), exactly once, whatever the tokenizer's default;
#   the first table shows each model's default and its BOS token.
# * **The trailing `" \n"`.** Every WikiText row ends in a space and a newline, so without stripping "the
#   last token" is a newline token, the same for every text. The paper does not say it stripped, but its
#   figures imply a last token that varies from text to text (the methods page), so the book strips the rows
#   (`STRIP = True`) and shows below what changes when they are kept as the dataset gives them. Every row also
#   begins with a space, which stripping removes too: the first word's token differs as well (the second table).
#
# The second table tokenises the first sampled row with each model's tokenizer in the four combinations of
# the two choices.

# %%
n_layers, d_model, labels, default_bos = {}, {}, {}, {}
facts, token_rows = {}, []
example = texts[0]
for m in MODELS:
    # rm: the model's residual-stream facts (layers, norms, width, pad id, hook names)
    rm, tok = pipeline.load_model(m, quantization=QUANTIZATION, cache_dir=CACHE_DIR)
    arch = rm.architecture
    n_layers[m], d_model[m], labels[m] = rm.n_layers, rm.d_model, rm.labels
    default_ids = tok(example)["input_ids"]
    default_bos[m] = tok.bos_token_id is not None and default_ids[0] == tok.bos_token_id
    facts[m] = {"model type": rm.config.model_type, "decoder layers": n_layers[m],
                "d_model": d_model[m], "sublayers (2L)": rm.n_sublayers,
                "pre-attention norm": arch.attn_norm, "pre-MLP norm": arch.mlp_norm,
                "BOS token": tok.bos_token, "tokenizer adds BOS by itself": default_bos[m]}
    bos = tok.bos_token_id
    for add_bos in (True, False):
        for strip in (False, True):
            ids = capture.tokenize(tok, [example], add_bos=add_bos, strip=strip)[0]
            token_rows.append({"model": m, "add_bos": add_bos, "strip": strip,
                               "tokens": len(ids),
                               "BOS count": ids.count(bos) if bos is not None else 0,
                               "first token": tok.convert_ids_to_tokens(ids[0]),
                               "last token": repr(tok.decode(ids[-1:]))})
display(pd.DataFrame(facts))
display(pd.DataFrame(token_rows).set_index(["model", "add_bos", "strip"]))
adds = ", ".join(f"`{m}`" for m in MODELS if default_bos[m]) or "none"
no_adds = ", ".join(f"`{m}`" for m in MODELS if not default_bos[m]) or "none"
display(Markdown(
    f"Tokenizers that put BOS first by themselves: {adds}; that do not: {no_adds}. "
    f"With `ADD_BOS = {ADD_BOS}` every sequence starts with "
    f"{'exactly one BOS' if ADD_BOS else 'no added BOS'} for every model "
    "(the BOS count column)."))

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("tokenizer_default_bos", "BOS first" if default_bos[m] else "no BOS",
                     claim="what the tokenizer's own default puts first (we add BOS explicitly either way)",
                     figure="methods", model=m)

# %% [markdown]
# ## Capture, both conditions
# `pipeline.residual_stream` tokenises, sorts texts by length to cut padding, runs the decoder stack only
# (the LM head never runs; the forward stops after the last layer's hooks) and keeps only the last
# token's vectors. Results go to the cache (sharded safetensors with a metadata file naming the model's
# weight fingerprint, the rows' hash, N, seed, condition, dtype and tokenisation), so later chapters and
# reruns read them from disk.

# %%
rs, seconds = {}, {}
for m in MODELS:
    for condition in CONDITIONS:
        t0 = time.perf_counter()
        store = pipeline.residual_stream_store(m, n=N, seed=SEED, condition=condition,
                                               **capture_kw)
        rs[m, condition] = store.to_numpy()
        seconds[m, condition] = time.perf_counter() - t0
        print(f"{m:14s} {condition:9s} {rs[m, condition].shape}  "
              f"{seconds[m, condition]:.1f} s  cache entry {store.path.name}")
    assert rs[m, "original"].shape == (N, 2 * n_layers[m], d_model[m])

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("rs_shape", list(rs[m, "original"].shape), claim="RS array (N, 2L, D)",
                     figure="1A", model=m)

# %% mystnb={"figure": {"caption": "The residual stream's norm at the last token per sublayer, original texts and the shuffled-token control; one panel per model ({models}).", "name": "fig-01-1a-norm"}, "image": {"alt": "Line plot of the mean residual-stream norm at the last token against sublayer, original texts and shuffled-token control, one panel per model: {models}"}}
fig = grid(overview.rs_norm, {("", m): {c: rs[m, c] for c in CONDITIONS} for m in MODELS},
           col_kwargs={m: {"labels": labels[m]} for m in MODELS})

# %%
growth = {}
for m in MODELS:
    growth[m] = float(np.linalg.norm(rs[m, "original"][:, -1], axis=-1).mean()
                      / np.linalg.norm(rs[m, "original"][:, 0], axis=-1).mean())
display(Markdown("The mean RS norm at the last sublayer over that at the first "
                 "(original texts): "
                 + "; ".join(f"`{m}` **{g:.1f}×**" for m, g in growth.items()) + "."))

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("norm_growth_last_over_first", growth[m],
                     claim="RS activations grow in magnitude over the layers",
                     paper="increase in magnitude over the layers (decided in chapter 2: "
                           "magnitude_increases)", figure="1B", model=m)

# %% [markdown]
# ## What the tokenisation choices change
# The same texts captured with the four combinations of `ADD_BOS` and `STRIP`: cosine similarity, per
# sublayer, between each variant's RS vector and the default's (mean over texts; the panels share the
# y axis). Stripping changes the last token itself (a word or punctuation instead of a newline), so the
# vectors differ from the first sublayer on; BOS changes the context that every later token attends to
# (the attention sink).

# %% mystnb={"figure": {"caption": "Cosine similarity per sublayer between each tokenisation variant (BOS added or not, rows stripped or not) and the default, mean over texts; one panel per model ({models}).", "name": "fig-01-tokenisation"}, "image": {"alt": "Line plot of cosine similarity to the default tokenisation against sublayer, one line per BOS/strip variant, one panel per model: {models}"}}
n_var = min(N_VARIANTS, N)
similarity, effect = {}, {}
for m in MODELS:
    variants = {}
    for add_bos in (True, False):
        for strip in (False, True):
            variants[add_bos, strip] = pipeline.residual_stream(
                m, n=n_var, seed=SEED, cache_dir=CACHE_DIR, quantization=QUANTIZATION,
                batch_size=BATCH_SIZE, add_bos=add_bos, strip=strip)
    ref = variants[ADD_BOS, STRIP]
    similarity[m] = {f"add_bos={b}, strip={s}": metrics.paired_cosine(v, ref)
                     for (b, s), v in variants.items()}
    effect[m] = {name: float(np.nanmean(sim[:, -1])) for name, sim in similarity[m].items()}
fig = grid(overview.similarity_to_reference, {("", m): similarity[m] for m in MODELS},
           col_kwargs={m: {"labels": labels[m]} for m in MODELS}, sharey=True)

# %%
display(pd.DataFrame(effect).rename_axis("cosine at the last sublayer"))
furthest = {m: min(e, key=e.get) for m, e in effect.items()}
display(Markdown("The variant furthest from the default at the last sublayer: " + "; ".join(
    f"`{m}`: {v} (cosine {effect[m][v]:.2f})" for m, v in furthest.items()) + "."))

# %% tags=["remove-input"]
for m in MODELS:
    ch.ledger.record("tokenisation_effect_last_sublayer_cosine", effect[m], figure="methods",
                     model=m,
                     claim="mean cosine to the default at the last sublayer, per tokenisation variant")
