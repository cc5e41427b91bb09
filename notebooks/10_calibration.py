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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/10_calibration.ipynb)
#
# **Running this in Google Colab?** This appendix runs no model: it reads the effect sizes the chapters recorded in
# their ledgers (run chapters 2–4 first, in the same session or with the same `LEDGER_DIR`). The next code cell
# installs the package from the GitHub branch, tag or commit this notebook was opened at, then applies the run
# profile (`PROFILE = "auto"`: the `colab` profile in Colab, `full` elsewhere; `PROFILE = None` keeps your values).
# The chapters themselves need a Hugging Face read token for the gated Llama 3.1 8B (accept its licence, add the
# token as a Colab secret named `HF_TOKEN`); this notebook does not.

# %% [markdown]
# # 10. How often is a verdict wrong? (appendix)
#
# Every verdict in this book comes from the claim registry (`transformer_dynamics.claims`): a claim's value on all
# texts, a bootstrap interval over texts, and the rule of `verdicts.decide` (**holds** / **fails** when the
# interval lies wholly on one side of the claim's threshold, **undecided** otherwise). Here that rule meets
# residual streams built so that the right answer is known (`transformer_dynamics.calibration`):
#
# - **nulls**: a stream with nothing over depth (an AR(1) over the sublayers with φ = 0, 0.5 or 0.9, started from
#   its stationary distribution, a nonzero mean and a per-text scale that varies slowly over depth); the same with
#   **one outlier text** of 200 whose effect grows with depth with a +,+,−,− sublayer pattern; one stream per claim
#   whose value sits **at its threshold**. No effect, or a value at the threshold: any decision is false; a value on
#   one side of the threshold (r = 0.9 κ > 0.8): the other decision is;
# - the **random walk**: residual accumulation and nothing else. Its residual-accumulation null is the same
#   process, so "beyond the null" is a false decision there;
# - **planted effects**: each claim's effect as many standard errors from its threshold as the trained models'
#   value in chapters 2–4 (read from their ledgers; at most 8), the readings of one simulation corrected together
#   (Benjamini–Hochberg, as a chapter's verdicts are). Power: the share decided on the planted side.
#
# A calibrated rule decides falsely at most α = 0.05 of the time; the book asks at most 2α.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # whose recorded effect sizes are planted
N: int = 1000                    # texts of the chapters (their effect sizes are read from the ledgers)
SEED: int = 0                    # random seed of every constructed stream
CACHE_DIR: Optional[str] = None  # unused: this appendix captures nothing
LEDGER_DIR: Optional[str] = None  # None: ./ledger (the chapters' ledgers are read from here)
N_TEXTS: int = 200               # texts per constructed stream
N_SIMS: int = 100                # simulations per null of the claims whose curves are means over texts
N_SIMS_SLOW: int = 20            # ... of the claims recomputed per resample (MI, rotations, PCA)
N_SIMS_POWER: int = 20           # simulations of the planted effects
N_BOOT: int = 200                # bootstrap resamples per verdict
N_BOOT_SLOW: int = 50            # ... for the statistics recomputed per resample
N_SHUFFLES: int = 16             # layer-order shuffles for the rotation surrogates
N_PILOT: int = 16                # draws per amplitude tried when a planted effect is sized
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
colab.setup(globals(), "10_calibration")

# %%
from IPython.display import Markdown

from transformer_dynamics import calibration, chapter
from transformer_dynamics.ledger import show_table
from transformer_dynamics.plots import calibration as plot_calibration

cost = dict(n_sims=N_SIMS, n_sims_slow=N_SIMS_SLOW, n_sims_power=N_SIMS_POWER,
            n_boot=N_BOOT, n_boot_slow=N_BOOT_SLOW, n_shuffles=N_SHUFFLES, n_pilot=N_PILOT)
ch = chapter.setup("10_calibration", models=MODELS, n=N, seed=SEED, ledger_dir=LEDGER_DIR,
                   capture=False, n_texts=N_TEXTS, **cost)
settings = calibration.Settings(n=N_TEXTS, seed=SEED, **cost)

# %% [markdown]
# ## The trained models' effect sizes
# Each residual-stream claim's value and interval as chapters 2–4 recorded them (original texts), and `z`, its
# distance from the threshold in standard errors. A claim is planted at the weaker model's `z` (at most 8), on
# the side both models show; where they disagree, or a value is undefined, nothing is planted.

# %%
sizes = calibration.effect_sizes(directory=ch.ledger.directory, models=ch.models)
(show_table(sizes, index=False) if len(sizes) else
 Markdown("_No chapter ledger found: every effect is planted at 8 standard errors._"))

# %% [markdown]
# ## The calibration table
# False-decision rates on the nulls (the stationary column: the largest over φ), the worst of them with its 95 %
# binomial (Clopper–Pearson) interval, and the power after Benjamini–Hochberg. `N_TEXTS` texts per stream, `N_BOOT`
# resamples per verdict (`N_BOOT_SLOW` for MI, rotations and PCA): a planted effect carries the trained models'
# size in standard errors, so the power is that of an effect as clear as the trained one.

# %%
run = calibration.calibrate(settings, sizes=sizes if len(sizes) else None)
book = calibration.book_table(run)
show_table(book, index=False)

# %% mystnb={"figure": {"caption": "Per claim and reading: the worst false-decision rate over the nulls with its 95 % binomial interval, against \u03b1 and 2\u03b1 (left), and the power after Benjamini\u2013Hochberg on effects planted at the trained models' size, against 0.8 (right).", "name": "fig-10-calibration"}, "image": {"alt": "Two dot plots with interval bars sharing one row per claim reading: false-decision rates near zero against dashed lines at alpha and two alpha, and power near one against a dashed line at 0.8"}}
plot_calibration.plot_calibration(calibration.table(run));

# %% tags=["remove-input"]
s = calibration.summary(run)
worst = s["worst"]
ch.record("", "worst_false_rate", worst["rate"], ci=(worst["low"], worst["high"]), events=worst["events"],
          sims=worst["sims"], on=f"{worst['claim']}:{worst['reading']} ({worst['scenario']})",
          claim="the largest false-decision rate of any claim and reading on any null")
ch.record("", "above_2_alpha", len(s["above_2_alpha"]), of=s["readings"], readings=s["above_2_alpha"],
          claim="claim readings whose false-decision rate exceeds 2 alpha on some null")
ch.record("", "below_power", len(s["below_power"]), of=s["strong"], readings=s["below_power"],
          claim=f"claim readings planted at {calibration.Z_POWER} or more standard errors with power below 0.8")
Markdown(calibration.summary_sentence(s))
