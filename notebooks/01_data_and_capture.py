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
# that every later chapter reads.

# %% tags=["parameters"]
MODEL = "smollm2-135m"   # short name, Hugging Face id or local path
N = 1000                 # texts
SEED = 0
CACHE_DIR = None         # None: $TRANSFORMER_DYNAMICS_CACHE or the user cache dir
LEDGER_DIR = None        # None: ./ledger
QUANTIZATION = None      # None, "4bit" or "8bit" (bitsandbytes)
BATCH_SIZE = 16
ADD_BOS = True           # put BOS first (the paper's t_0)
STRIP = False            # keep the rows' trailing " \n" (rows as the dataset gives them)
N_VARIANTS = 64          # texts used to show the effect of ADD_BOS / STRIP

# %% tags=["remove-cell"]
# In Colab: install the package and take the GPU profile (Llama 3.1 8B in 4-bit). Does nothing elsewhere.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "transformer-dynamics[quant] @ git+https://github.com/transformer-dynamics/transformer-dynamics"], check=True)
    from transformer_dynamics.profiles import load_profile
    globals().update(load_profile("colab", "01_data_and_capture"))

# %%
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from transformer_dynamics import capture, data, metrics, models, pipeline
from transformer_dynamics.ledger import Ledger
from transformer_dynamics.plots import overview

led = Ledger("01_data_and_capture", directory=LEDGER_DIR, model=MODEL, n=N, seed=SEED)
capture_kw = dict(cache_dir=CACHE_DIR, quantization=QUANTIZATION, batch_size=BATCH_SIZE, add_bos=ADD_BOS,
                  strip=STRIP)

# %% [markdown]
# ## The data and the paper's length filter
# Rows come exactly as `datasets.load_dataset("wikitext", "wikitext-2-raw-v1")` yields them: each keeps
# its trailing newline and blank rows are `""`. Offline, they are read from the raw files
# (`$TRANSFORMER_DYNAMICS_DATA` or `../shared/data/wikitext-2-raw`). The test split alone has too few rows
# for N = 1000, so the default uses test + validation.

# %%
counts = []
for split in data.DEFAULT_SPLITS:
    rows, source = data.load_rows([split])
    kept = data.filter_rows(rows)
    counts.append({"split": split, "rows": len(rows), "non-blank": sum(r != "" for r in rows),
                   f"{data.L_MIN} < len < {data.L_MAX}": len(kept)})
counts = pd.DataFrame(counts).set_index("split")
counts.loc["together"] = counts.sum()
display(counts)
n_available = int(counts.loc["together"].iloc[-1])
led.record("rows_after_filter", n_available, claim="rows of 100-500 characters available", figure="data")
print(source.describe())

texts = pipeline.load_texts(N, seed=SEED)
ends = pd.Series([repr(t[-3:]) for t in texts]).value_counts().head(3)
display(Markdown(f"Sampled **{len(texts)}** rows (seed {SEED}). The most common row endings:"))
display(ends.to_frame("rows"))

# %% [markdown]
# ## Two explicit tokenisation choices
# * **BOS.** The paper writes the tokenised text as $[t_0, t_1, \dots, t_n]$ with $t_0$ = BOS, and the
#   shuffle control keeps it in place. Llama 3's tokenizer adds BOS by itself; SmolLM2's does not. We add it
#   explicitly (`ADD_BOS`), exactly once, whatever the tokenizer's default.
# * **The trailing `" \n"`.** Every WikiText row ends in a space and a newline, so without stripping "the
#   last token" is a newline token. The paper does not say it stripped; we keep rows as the dataset gives
#   them (`STRIP = False`) and show below what changes when they are stripped.

# %%
model, tok = pipeline.load_model(MODEL, quantization=QUANTIZATION, cache_dir=CACHE_DIR)
n_layers = len(models.layer_modules(model))
labels = capture.sublayer_labels(n_layers)
example = texts[0]
tokenizer_default = tok(example)["input_ids"]
rows = []
for add_bos in (True, False):
    for strip in (False, True):
        ids = capture.tokenize(tok, [example], add_bos=add_bos, strip=strip)[0]
        rows.append({"add_bos": add_bos, "strip": strip, "tokens": len(ids),
                     "first token": tok.convert_ids_to_tokens(ids[0]),
                     "last token": repr(tok.decode(ids[-1:]))})
display(pd.DataFrame(rows))
display(Markdown(
    f"The tokenizer's own default adds BOS: **{tokenizer_default[0] == tok.bos_token_id}**. "
    f"Model: `{MODEL}`, {n_layers} layers, d_model = {model.config.hidden_size}, "
    f"so the RS array has {2 * n_layers} sublayers."))

# %% [markdown]
# ## Capture, both conditions
# `pipeline.residual_stream` tokenises, sorts texts by length to cut padding, runs the decoder stack only
# (the LM head never runs; the forward stops after the last layer's hooks) and keeps only the last
# token's vectors. Results go to the cache (sharded safetensors with a metadata file naming the model's
# weight fingerprint, the rows' hash, N, seed, condition, dtype and tokenisation), so later chapters and
# reruns read them from disk.

# %%
rs, seconds = {}, {}
for condition in ("original", "shuffled"):
    t0 = time.perf_counter()
    store = pipeline.residual_stream_store(MODEL, n=N, seed=SEED, condition=condition, **capture_kw)
    rs[condition] = store.to_numpy()
    seconds[condition] = time.perf_counter() - t0
    print(f"{condition:9s} {rs[condition].shape}  {seconds[condition]:.1f} s  {store.path}")
led.record("rs_shape", list(rs["original"].shape), claim="RS array (N, 2L, D)", figure="1A")
assert rs["original"].shape == (N, 2 * n_layers, model.config.hidden_size)

# %%
fig = overview.rs_norm(rs, labels)
growth = float(np.linalg.norm(rs["original"][:, -1], axis=-1).mean()
               / np.linalg.norm(rs["original"][:, 0], axis=-1).mean())
led.record("norm_growth_last_over_first", growth, claim="RS activations grow in magnitude over the layers",
           paper="increase in magnitude over the layers", holds=growth > 1, figure="1B")
display(Markdown(f"The RS norm at the last sublayer is **{growth:.1f}×** that at the first."))

# %% [markdown]
# ## What the tokenisation choices change
# The same texts captured with the four combinations of `ADD_BOS` and `STRIP`: cosine similarity, per
# sublayer, between each variant's RS vector and the default's (mean over texts). Stripping changes the
# last token itself (a word or punctuation instead of a newline), so the vectors differ from the first
# sublayer on; BOS changes the context that every later token attends to (the attention sink).

# %%
n_var = min(N_VARIANTS, N)
variants = {}
for add_bos in (True, False):
    for strip in (False, True):
        variants[(add_bos, strip)] = pipeline.residual_stream(
            MODEL, n=n_var, seed=SEED, cache_dir=CACHE_DIR, quantization=QUANTIZATION, batch_size=BATCH_SIZE,
            add_bos=add_bos, strip=strip)
ref = variants[(ADD_BOS, STRIP)]
similarity = {f"add_bos={b}, strip={s}": metrics.paired_cosine(v, ref) for (b, s), v in variants.items()}
fig = overview.similarity_to_reference(similarity, labels)
effect = {name: float(np.nanmean(sim[:, -1])) for name, sim in similarity.items()}
led.record("tokenisation_effect_last_sublayer_cosine", effect,
           claim="mean cosine to the default at the last sublayer, per tokenisation variant", figure="methods")
display(pd.Series(effect, name="cosine at the last sublayer").to_frame())
