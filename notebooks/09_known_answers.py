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
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/notebooks/09_known_answers.ipynb)
#
# **Running this in Google Colab?** This appendix runs no language model: it needs no GPU, no Hugging Face token
# (`HF_TOKEN`) and no model licence, and runs in seconds on a CPU runtime. The next code cell installs the package
# from the GitHub branch, tag or commit this notebook was opened at, then applies the run profile (`PROFILE =
# "auto"`: the `colab` profile in Colab, `full` elsewhere; none of its values changes the numbers here).

# %% [markdown]
# # 9. Known answers: the dynamics estimators on textbook systems (appendix)
#
# Chapters 3 and 7 read rotations, exponents and non-normality off the residual stream with estimators of
# their own: the rotation count of a unit's activation-gradient portrait, Benettin's method for finite-time
# Lyapunov exponents, jPCA, and the spectral measures of Jacobians and of their products. Here each of them
# is run, through the same package functions, on a system whose answer is known, and its error is
# reported:
#
# 1. **Lyapunov exponents** (`dynamics.lyapunov`, chapter 7's routine after {cite:t}`benettin1980lyapunov`,
#    on the Jacobians along a trajectory): the Lorenz flow {cite:p}`lorenz1963deterministic` ($\sigma = 10$, $\rho = 28$, $\beta = 8/3$) and the Hénon map
#    ($a = 1.4$, $b = 0.3$) {cite:p}`henon1976two`, against their largest exponents in the literature {cite:p}`sprott2003chaos`
#    (kept with their citation in `dynamics.known`); the exponents' sums, which are known in closed form
#    (the flow's divergence $-(\sigma + 1 + \beta)$, and $\ln b$ for the map, whose Jacobian has determinant
#    $-b$ at every step). The flow is integrated by fourth-order Runge–Kutta with a fixed step; the Benettin
#    step is the Jacobian of one RK4 step (the RK4 scheme applied to the variational equation), and the
#    estimate is the mean over several trajectories of the finite-time exponent. Tolerance: 2 % (relative).
#    The sums need the whole spectrum, which the routine resolves only while $n(\lambda_1 - \lambda_i)$ stays
#    within float64's range (about 700; see its docstring): the Lorenz sum is taken over 30 time units, the
#    Hénon sum over 300 iterations. Chapter 7's products, one step per sublayer, are far inside.
# 2. **Rotations**: the rotation count (`phase.count_rotations`, `phase.rotations_per_unit`, chapter 3) of
#    a cosine $\cos(\theta t + \varphi)$, one coordinate of a planar rotation by $\theta$ per step, and of the
#    units of a block-diagonal rotation map; jPCA (`dynamics.jpca`, {cite:t}`churchland2012neural`) of $x_{t+1} = e^{\Delta t M} x_t$ with
#    $M$ skew-symmetric. Neither returns the naive value, and each is exact for what it does return
#    (derived in `dynamics.known`): the rotation count is taken in activation-gradient space, where the
#    cosine traces an ellipse of axes 1 and $\sin\theta$ with one-sided differences at its ends, so over
#    $T$ steps it counts about $-\theta T / 2\pi$ (clockwise) but not exactly; jPCA fits steps on midpoints,
#    which maps the rotation by $\omega \Delta t$ to the skew-symmetric Cayley transform with frequency
#    $2 \tan(\omega \Delta t / 2)$ per step and an R² ratio of exactly 1. Tolerance: $10^{-6}$.
# 3. **Non-normal matrices** (`dynamics.spectra`, `dynamics.cumulative_products`, `dynamics.product_measures`,
#    chapter 7's per-sublayer and cumulative measures): $A = \begin{pmatrix}-1 & a\\ 0 & -2\end{pmatrix}$,
#    a scaled rotation beside a Jordan-type block, and the transient growth of $\lVert e^{tA} \rVert$ (both
#    eigenvalues decay, yet the norm first grows: {cite:t}`trefethen2005spectra`) built as products of steps $e^{hA}$, each measure
#    against its closed form. Tolerance: $10^{-6}$.
#
# The errors are plain values in the ledger: they check the instruments, not a claim of the paper.

# %% tags=["parameters"]
from typing import Optional

MODELS: list[str] = ["smollm2-135m", "gemma-3-270m"]  # the book's models (this appendix runs none of them)
N: int = 1000                    # the book's number of texts (this appendix uses no text)
SEED: int = 0                    # random seed: starting points, phases and Benettin's first vectors
CACHE_DIR: Optional[str] = None  # None: $TRANSFORMER_DYNAMICS_CACHE or user cache; "drive": Google Drive
LEDGER_DIR: Optional[str] = None  # None: ./ledger
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
colab.setup(globals(), "09_known_answers")

# %%
import time

from IPython.display import Markdown

from transformer_dynamics import chapter
from transformer_dynamics.dynamics import known, systems
from transformer_dynamics.plots import dynamics as plot_dynamics
from transformer_dynamics.plots.style import side_by_side

T0 = time.perf_counter()
# the ledger only: no model and no text in this appendix
ch = chapter.setup("09_known_answers", models=MODELS, n=N, seed=SEED,
                   ledger_dir=LEDGER_DIR, capture=False)

# %% [markdown]
# ## Every estimator against its known value
# One row per check: the package's estimate, the known value, their difference (relative, in %, for the
# chaotic systems' exponents; absolute otherwise) and the tolerance. Where a check covers several values
# (units, lengths of a product) the row shows the worst. The systems in full, the run lengths and the
# sources are the columns `system`, `quantity`, `setup` and `source` of `table`.

# %%
table = known.known_answers(seed=SEED)
known.summary_table(table, styled=True)

# %% tags=["remove-input"]
for _, r in table.iterrows():
    ch.ledger.record(f"known:{r['key']}", float(r["error"]), figure="appendix",
                     claim=f"{r['estimator']}: {r['quantity']}, {r['system']} (estimate − known)",
                     estimate=float(r["estimate"]), known=float(r["known"]),
                     tolerance=float(r["tolerance"]), relative=bool(r["relative"]),
                     source=r["source"])

# %% [markdown]
# ## Benettin's estimate converging to the literature value
# The largest exponent over the first part of each run, for growing lengths (each point a separate call of
# `dynamics.lyapunov` on the Jacobians so far), as its deviation from the literature value; thin lines:
# single trajectories, thick: their mean (the table's estimate at the full length), band: ±2 %.

# %% mystnb={"figure": {"caption": "Benettin's largest exponent over growing lengths of the run as its deviation from the literature value (%), Lorenz flow (left) and H\u00e9non map (right): thin lines single trajectories, thick their mean, grey band the tolerance.", "name": "fig-09-benettin"}, "image": {"alt": "Two line plots of the deviation of the largest Lyapunov exponent from its literature value against the length of the run, Lorenz and H\u00e9non, converging into a band of plus or minus 2 percent"}}
convergence = systems.benettin_convergence(seed=SEED)   # per system: lengths, estimates
side_by_side(plot_dynamics.plot_benettin_convergence, convergence,
             tolerance=known.RELATIVE_TOLERANCE, width=5.0, height=3.6);

# %% tags=["remove-input"]
seconds = time.perf_counter() - T0
ch.ledger.record("known_chapter_seconds", seconds, unit="s", figure="appendix",
                 claim="wall time of this appendix")

# %% [markdown]
# ## Closing note
# Computed from the table above.

# %% tags=["remove-input"]
bad = table[~table["within"]]
worst = table.loc[table["relative"], ["estimator", "system", "quantity", "relative error"]]
lines = [f"**{int(table['within'].sum())} of {len(table)}** estimates are within their tolerance"
         + ("." if bad.empty else "; outside: " + ", ".join(bad["key"]) + ".")]
lines += [f"- {r['system']}, {r['quantity']} by `{r['estimator']}`: relative error "
          f"{100 * r['relative error']:+.2g} %." for _, r in worst.iterrows()]
exact = table.loc[~table["relative"], "error"].abs().max()
lines.append(f"- Largest absolute error of the exact checks: {exact:.1e}.")
lines.append(f"\nThe appendix ran in {seconds:.0f} s.")
Markdown("\n".join(lines))
