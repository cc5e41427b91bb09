"""Time the local-dynamics computations of chapter 7: on SmolLM2-135M (60 sublayers, D = 576), and one Jacobian
at the paper's width (one Llama-3-8B-shaped layer with random weights), float32 on CPU.

    .venv/bin/python benchmarks/bench_dynamics.py              # both parts; SmolLM2: 8 texts timed, extrapolated to 64
    .venv/bin/python benchmarks/bench_dynamics.py --n 64        # all 64 texts timed
    .venv/bin/python benchmarks/bench_dynamics.py --only paper  # the paper-width row alone (a few minutes)

Writes ``benchmarks/results/dynamics.json`` (SmolLM2) and ``benchmarks/results/dynamics_paper_width.json`` and prints
tables.

**Paper width** (``--only paper``): one decoder layer shaped as Llama 3 8B's (hidden 4096, intermediate 14336, 32
heads, 8 key/value heads, head_dim 128), random weights, one text of ``--paper-tokens`` tokens. Per sublayer
(attention, MLP): time and peak resident memory above the baseline of one last-token Jacobian by
``dynamics.jacobians`` (the block's own structure: ``structured``; and the generic ``replicate`` for attention and
``rev`` for the MLP), against autograd's row-by-row loop on the same sublayer map (one ``torch.autograd.grad`` per
output unit through one retained graph; ``--paper-rows`` rows timed and extrapolated to 4096), with the largest
relative difference of the loop's rows from ours.

**SmolLM2**, what is timed:

- ``ours``: every sublayer's last-token Jacobian by ``dynamics.jacobians`` (frozen prefix keys/values computed
  once per text by one forward; one vjp per output unit, vmapped over the D basis vectors and batched over
  texts; the attention with the prefix as a constant operand);
- ``module attention``: the same, but calling the model's attention module with the prefix as its cache
  (``fast=False``): the speed lever of the grouped, constant-prefix attention;
- ``prefix recomputed``: ``torch.func.jacrev`` of the whole text's forward through the sublayer with the last
  token's input as the variable: the prefix's keys and values are recomputed, and differentiated through,
  inside every call;
- ``naive loop``: D backward passes per Jacobian (``torch.autograd.grad`` of each output unit, the graph of
  one forward of the text through the model retained), timed on ``--naive-rows`` rows and extrapolated to D.

The goal is >= 10x over the naive loop for all Jacobians of 64 texts. Lyapunov exponents (top 10 from every
sublayer): exact from the products' singular values, Benettin with explicit matrices, and Benettin by
Jacobian-vector products (no matrix; timed from ``--jvp-starts`` starts, extrapolated to all 60).
Peak memory: the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, write_result

from transformer_dynamics import dynamics as dy
from transformer_dynamics import pipeline
from transformer_dynamics.capture import StopForward
from transformer_dynamics import residual

RESULTS = Path(__file__).resolve().parent / "results" / "dynamics.json"
PAPER_RESULTS = Path(__file__).resolve().parent / "results" / "dynamics_paper_width.json"
#: Llama 3 8B's layer (config.json of meta-llama/Meta-Llama-3-8B)
PAPER_LAYER = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
               "head_dim": 128, "rope_theta": 500000.0, "rms_norm_eps": 1e-5}


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive_rows(model, ids, s: int, rows: int) -> tuple[torch.Tensor, float, float]:
    """``rows`` rows of text ``ids``'s Jacobian at sublayer ``s`` by one backward pass each, through the graph
    of one forward of the text (stopped after sublayer ``s + 1``, retained). Returns (rows, forward seconds,
    backward seconds)."""
    rm = residual.of(model)
    arch, layers = rm.architecture, rm.layers
    l, kind = divmod(s, 2)
    nxt = getattr(layers[l], arch.mlp_norm)
    last = len(ids) - 1
    state = {}

    def pre_in(module, args, kwargs):
        x = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        leaf = x[:, last].clone().requires_grad_(True)
        state["x"] = leaf
        x = torch.cat([x[:, :last], leaf[:, None]], dim=1)
        if args:
            return (x,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    if kind != 0:
        raise ValueError("the naive loop is timed on attention sublayers (the input of a decoder layer)")
    h_in = layers[l].register_forward_pre_hook(pre_in, with_kwargs=True)
    def stop(module, args):
        state["y"] = args[0][:, last]
        raise StopForward

    h_out = nxt.register_forward_pre_hook(stop)
    t0 = time.perf_counter()
    with torch.enable_grad():
        try:
            rm.base(input_ids=torch.tensor([ids]), use_cache=False)
        except StopForward:
            pass
        finally:
            for h in (h_in, h_out):
                h.remove()
        t_forward = time.perf_counter() - t0
        y, x = state["y"][0], state["x"]
        t0 = time.perf_counter()
        out = torch.stack([torch.autograd.grad(y[i], x, retain_graph=True)[0][0] for i in range(rows)])
    return out, t_forward, time.perf_counter() - t0


def prefix_recomputed(model, ids, s: int) -> tuple[torch.Tensor, float]:
    """jacrev of the attention sublayer of layer ``s // 2`` run on the whole text, the last token's input free."""
    rm = residual.of(model)
    layers = rm.layers
    l = s // 2
    rotary = rm.base.rotary_emb
    ctx = dy.frozen_context(model, [ids])
    # the whole text's input to layer l, all positions: one more forward with a hook
    grab = {}
    h = layers[l].register_forward_pre_hook(lambda m, a: grab.__setitem__("x", a[0].detach()))
    with torch.no_grad():
        rm.base(input_ids=torch.tensor([ids]), use_cache=False)
    h.remove()
    X = grab["x"]
    T = X.shape[1]
    pos = torch.arange(T)[None]
    pe = rotary(X, pos)
    mask = torch.full((T, T), torch.finfo(X.dtype).min).triu(1)[None, None]
    arch = rm.architecture
    layer = layers[l]
    norm = getattr(layer, arch.attn_norm)

    def f(x):
        Z = torch.cat([X[:, :-1], x[None, None]], dim=1)
        out = layer.self_attn(hidden_states=norm(Z), position_embeddings=pe, attention_mask=mask)[0]
        return x + out[0, -1]

    config = layer.self_attn.config
    before, config._attn_implementation = config._attn_implementation, "eager"  # SDPA has no vmap rule on CPU
    try:
        t0 = time.perf_counter()
        J = torch.func.jacrev(f)(X[0, -1])
    finally:
        config._attn_implementation = before
    del ctx
    return J, time.perf_counter() - t0


def _peak_reset() -> None:
    """Reset the process's peak resident set (Linux: VmHWM), so that the next reading is the peak since now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # pragma: no cover - not Linux, or not allowed
        pass


def _rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover


def measured(fn, *args, **kwargs):
    """``(result, seconds, peak MiB above the resident set before the call)``."""
    import gc  # noqa: PLC0415

    gc.collect()
    base = _rss_mib()
    _peak_reset()
    out, seconds = timed(fn, *args, **kwargs)
    return out, seconds, _rss_mib("VmHWM") - base


def paper_layer_model(tokens: int):
    """One Llama-3-8B-shaped decoder layer with random weights (float32, eval, no gradients), a small vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

    cfg = LlamaConfig(vocab_size=512, num_hidden_layers=1, max_position_embeddings=max(tokens, 256),
                      tie_word_embeddings=True, **PAPER_LAYER)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval().requires_grad_(False)


def naive_loop(model, ctx, s: int, rows: int) -> tuple[torch.Tensor, float]:
    """``rows`` rows of the last-token Jacobian of sublayer ``s``'s update, one ``torch.autograd.grad`` per output unit
    through one retained graph of the same sublayer map. Returns ``(rows, seconds)`` (the forward included)."""
    f = dy.sublayer_map(model, ctx, s, branch=True)
    t0 = time.perf_counter()
    with torch.enable_grad():
        x = ctx.h[:, s].clone().requires_grad_(True)
        y = f(x)[0]
        out = torch.stack([torch.autograd.grad(y[i], x, retain_graph=True)[0][0] for i in range(rows)])
    return out, time.perf_counter() - t0


def paper_width(tokens: int, rows: int, out: Path) -> dict:
    """The paper-width rows (see the module docstring) -> the result written to ``out``."""
    load = os.getloadavg()
    model, t_build = timed(paper_layer_model, tokens)
    D = PAPER_LAYER["hidden_size"]
    ids = torch.randint(4, 512, (tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    ctx, t_ctx = timed(dy.frozen_context, model, [ids])
    print(f"paper width: D = {D}, one layer, {tokens} tokens; layer built in {t_build:.1f} s, context {t_ctx:.2f} s; "
          f"cpus {os.cpu_count()}, threads {torch.get_num_threads()}, load {load}")
    table = []
    for s, kind, generic in ((0, "attention", "replicate"), (1, "MLP", "rev")):
        J, t_ours, m_ours = measured(dy.jacobians, model, ctx, [s], update=True, method="structured")
        J = J[0, 0]
        _, t_gen, m_gen = measured(dy.jacobians, model, ctx, [s], update=True, method=generic, chunk_size=512)
        (Jn, t_naive), _, m_naive = measured(naive_loop, model, ctx, s, rows)
        per_row = t_naive / rows
        diff = float(((Jn - J[:rows]).norm() / J[:rows].norm()).item())
        row = {"sublayer": kind, "ours_method": "structured", "ours_s": round(t_ours, 2),
               "ours_peak_mib": round(m_ours, 1), "generic_method": generic, "generic_s": round(t_gen, 2),
               "generic_peak_mib": round(m_gen, 1), "naive_rows_timed": rows, "naive_s_per_row": round(per_row, 4),
               "naive_s": round(per_row * D, 1), "naive_peak_mib": round(m_naive, 1),
               "speedup_vs_naive": round(per_row * D / t_ours, 1), "naive_rows_rel_diff": diff}
        table.append(row)
        print(f"{kind:9s} ours {t_ours:7.2f} s ({m_ours:6.0f} MiB)   {generic} {t_gen:7.2f} s ({m_gen:6.0f} MiB)   "
              f"row-by-row {per_row * D:8.1f} s ({1e3 * per_row:.0f} ms x {D} rows; {m_naive:.0f} MiB)   "
              f"{per_row * D / t_ours:6.1f}x; rows differ by {diff:.1e}")
        del J, Jn
    result = {"benchmark": "dynamics_paper_width", "layer": {"n_layers": 1, **PAPER_LAYER}, "tokens": tokens,
              "dtype": "float32", "device": "cpu", "threads": torch.get_num_threads(),
              "rows": table, "machine": machine(load, torch=torch.__version__)}
    return write_result(out, result)


class Rows(list):
    """The timed steps: ``add(name, seconds, note, per_jacobian)`` appends a row and prints it."""

    def add(self, name, seconds, note="", per_jacobian=None):
        self.append({"step": name, "seconds": round(seconds, 3), "per_jacobian_ms": per_jacobian and
                     round(1e3 * per_jacobian, 2), "note": note})
        print(f"{name:58s} {seconds:9.2f} s  {note}")


def time_ours(lm, ids, pad, S, args, rows: Rows) -> tuple[torch.Tensor, float, float]:
    """Ours: the frozen context and every Jacobian, batched; then the two attention routes on 4 sublayers.
    -> (Jacobians (n, S, D, D), seconds per Jacobian, seconds per attention Jacobian)."""
    t_ctx = t_jac = 0.0
    Js = []
    for b0 in range(0, args.n, args.batch_size):
        ctx, t = timed(dy.frozen_context, lm, ids[b0:b0 + args.batch_size], pad_token_id=pad)
        t_ctx += t
        J, t = timed(dy.jacobians, lm, ctx)
        t_jac += t
        Js.append(J)
    J = torch.cat(Js)
    per_ours = (t_ctx + t_jac) / (args.n * S)
    rows.add(f"ours: contexts ({args.n} texts)", t_ctx)
    rows.add(f"ours: all Jacobians ({args.n} x {S})", t_jac, per_jacobian=per_ours,
             note=f"-> {per_ours * args.target * S:.0f} s for {args.target} texts")
    attn_subs = list(range(0, S, 2))
    ctx = dy.frozen_context(lm, ids[:args.batch_size], pad_token_id=pad)
    _, t_fast = timed(dy.jacobians, lm, ctx, attn_subs[:4])
    _, t_mod = timed(dy.jacobians, lm, ctx, attn_subs[:4], fast=False)
    rows.add("attention Jacobians, grouped constant prefix (4 sublayers)", t_fast)
    rows.add("attention Jacobians, module + prefix as cache (4 sublayers)", t_mod,
             note=f"{t_mod / t_fast:.1f}x slower")
    return J, per_ours, t_fast / (4 * min(args.batch_size, args.n))


def time_slower_routes(lm, ids, J, S, D, args, rows: Rows, per_ours: float, per_fast_attn: float
                       ) -> tuple[float, float]:
    """The prefix recomputed inside jacrev (one text, 2 attention sublayers) and the naive loop of D backward
    passes per Jacobian, each checked against ours. -> (seconds per naive Jacobian, per recomputed one)."""
    t_re = 0.0
    for s in list(range(0, S, 2))[:2]:
        Jr, t = prefix_recomputed(lm, ids[0], s)
        t_re += t
        err = ((Jr - J[0, s]).norm() / J[0, s].norm()).item()
    per_re = t_re / 2
    rows.add("prefix recomputed in jacrev (1 text, 2 attn sublayers)", t_re, per_jacobian=per_re,
             note=f"{per_re / per_fast_attn:.1f}x ours per attention Jacobian; rel. diff {err:.1e}")
    Jn, t_fwd, t_naive = naive_rows(lm, ids[0], 2, args.naive_rows)
    err = ((Jn - J[0, 2, :args.naive_rows]).norm() / J[0, 2, :args.naive_rows].norm()).item()
    per_naive = t_fwd + t_naive / args.naive_rows * D
    rows.add(f"naive loop: forward + {args.naive_rows} of {D} backward passes", t_fwd + t_naive,
             per_jacobian=per_naive, note=f"forward {t_fwd:.2f} s, {1e3 * t_naive / args.naive_rows:.0f} ms per "
                                          f"row; rel. diff of the rows {err:.1e}")
    print(f"  -> ours {1e3 * per_ours:.1f} ms vs naive {1e3 * per_naive:.0f} ms per Jacobian: "
          f"{per_naive / per_ours:.0f}x")
    return per_naive, per_re


def time_spectra_and_exponents(lm, ids, pad, J, S, D, args, rows: Rows) -> None:
    """Spectra of 8 Jacobians; the Lyapunov exponents exactly (products + SVD), by Benettin with the matrices
    and by Benettin with JVPs, each against the exact ones."""
    _, t_spec = timed(dy.spectra, J[:1, :8].double(), update=True)
    rows.add("spectra of 8 Jacobians (eigen + singular values)", t_spec,
             note=f"-> {t_spec / 8 * args.target * S:.0f} s for {args.target} x {S}")
    Jd = J[:min(2, args.n)].double()
    P, t_p = timed(dy.cumulative_products, Jd)
    sv, t_sv = timed(torch.linalg.svdvals, P)
    exact = torch.log(sv[..., :args.k]).numpy() / (S - np.arange(S))[None, :, None]
    rows.add(f"exact exponents: products + SVD ({Jd.shape[0]} texts)", t_p + t_sv)
    lam, t_ben = timed(dy.lyapunov, dy.matrix_steps(Jd), args.k, n_iter=2, n_texts=Jd.shape[0], d_model=D)
    rows.add(f"Benettin, matrices, top-{args.k} from all {S} starts ({Jd.shape[0]} texts)", t_ben,
             note=f"|diff| to exact: max {np.abs(lam - exact).max():.1e}, median "
                  f"{np.median(np.abs(lam - exact)):.1e} (clustered singular values of near-identity products "
                  "converge slowly)")
    ctx1 = dy.frozen_context(lm, ids[:1], pad_token_id=pad)
    starts = list(range(S - args.jvp_starts, S))
    lam_j, t_jvp = timed(dy.lyapunov, dy.jvp_steps(lm, ctx1), args.k, starts=starts, n_iter=2, n_texts=1, d_model=D)
    steps_timed = sum(S - s for s in starts)
    rows.add(f"Benettin by JVPs, {len(starts)} starts (1 text)", t_jvp,
             note=f"-> {t_jvp / steps_timed * (S * (S + 1) // 2):.0f} s from all {S} starts; max |diff| "
                  f"{np.abs(lam_j[0] - exact[0, starts]).max():.1e}")


def smollm(args) -> None:
    """The SmolLM2 rows (see the module docstring), written to ``args.out``."""
    (lm, tok), t_load = timed(pipeline.load_model, args.model)
    texts = pipeline.load_texts(args.n, seed=0)
    ids = dy.text_token_ids(tok, texts)
    pad = lm.pad_id  # lm: the ResidualModel (pipeline.load_model)
    S, D = lm.n_sublayers, lm.d_model
    print(f"{args.model}: S = {S}, D = {D}, {args.n} texts of {min(map(len, ids))}-{max(map(len, ids))} tokens; "
          f"cpus {os.cpu_count()}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    rows = Rows()
    J, per_ours, per_fast_attn = time_ours(lm, ids, pad, S, args, rows)
    per_naive, per_re = time_slower_routes(lm, ids, J, S, D, args, rows, per_ours, per_fast_attn)
    time_spectra_and_exponents(lm, ids, pad, J, S, D, args, rows)
    speedup = per_naive / per_ours
    result = {"model": args.model, "shape": {"n_texts_timed": args.n, "n_texts_target": args.target,
                                             "n_sublayers": S, "d_model": D},
              "speedup_vs_naive_loop": round(speedup, 1), "goal_speedup": 10, "meets_goal": bool(speedup >= 10),
              "speedup_vs_prefix_recomputed": round(per_re / per_fast_attn, 1),
              "all_jacobians_target_s": round(per_ours * args.target * S, 1),
              "naive_all_jacobians_target_s": round(per_naive * args.target * S, 1),
              "peak_rss_mib": round(peak_mib(), 1),
              "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                          "platform": platform.platform(), "torch": torch.__version__,
                          "loadavg": os.getloadavg()},
              "rows": list(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"peak RSS {peak_mib():.0f} MiB; wrote {args.out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=8, help="texts timed (extrapolated to --target)")
    p.add_argument("--target", type=int, default=64, help="texts the totals are stated for")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--naive-rows", type=int, default=24, help="rows of the naive loop timed (of D)")
    p.add_argument("--jvp-starts", type=int, default=2, help="Benettin-by-JVP starts timed (of all sublayers)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--only", choices=("smollm", "paper"), default=None, help="one part only (default: both)")
    p.add_argument("--paper-tokens", type=int, default=128, help="paper width: tokens of the text (the prefix)")
    p.add_argument("--paper-rows", type=int, default=8, help="paper width: rows of the row-by-row loop timed")
    p.add_argument("--paper-out", type=Path, default=PAPER_RESULTS)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.only != "smollm":
        paper_width(args.paper_tokens, args.paper_rows, args.paper_out)
        if args.only == "paper":
            return

    smollm(args)


if __name__ == "__main__":
    main()
