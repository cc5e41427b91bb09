"""Time residual-stream capture against the plain forward and against nnsight / TransformerLens.

Every method runs in this one process, one after another, on the same model (``smollm2-135m``, fp32, CPU),
the same WikiText texts (``pipeline.load_texts(n, seed=0)``), BOS added as :func:`capture.tokenize` does,
right-padded batches of ``--batch-size`` texts, and — except for the "unsorted" row — the same batch
composition (texts sorted by length, longest first, as :func:`capture.iter_residual_stream` forms them),
so that only the method differs. Each method gets one warm-up batch before it is timed. Timing is
interleaved: batch k of every method runs back to back (the order rotating with k), each call timed on
its own, so a change in the machine's load hits every method alike (``--no-interleave`` times whole runs
in turn instead; ours is then one ``residual_stream`` call on all texts). Each method's captured
values are compared with ours (``max_abs_diff``: largest absolute difference over every text, sublayer
and unit it captures). ``ratio_vs_forward`` is ``forward seconds / method seconds``: above 1 is faster
than a plain ``model(**batch)`` forward that computes the logits.

Methods

* ``ours``: ``capture.residual_stream(model, tok, texts, batch_size=16)`` (interleaved: called on each
  batch's texts, so hook setup and tokenisation are paid per batch) — forward pre-hooks on the two norms
  of each layer, only the last token's vectors copied, the forward stops after the last layer's
  hook, the LM head never runs; each batch packed into one padding-free row (``capture``'s default).
* ``ours (no length sorting)``: the same capture with batches in input order
  (``iter_residual_stream(..., chunk_size=batch_size)``: each chunk is one batch, so sorting never
  moves a text to another batch) — what sorting by length buys.
* ``HF forward (logits)``: ``model(input_ids, attention_mask)``: the reference; captures nothing.
* ``HF output_hidden_states``: ``model(..., output_hidden_states=True)`` and a gather of the last token.
  Hidden states give only the layer inputs (``hook_resid_pre``, 30 of the 60 points): the pre-MLP points
  need hooks, so its diff covers the even sublayers only.
* ``nnsight``: ``nnsight.LanguageModel`` wrapping (a copy of) the loaded model; one ``trace`` per batch
  saving ``layer.input_layernorm.input`` and ``layer.post_attention_layernorm.input`` at the last token.
* ``TransformerLens``: ``TransformerBridge.boot_transformers(..., hf_model=copy)`` (TransformerLens 4.x;
  ``HookedTransformer`` was removed in 4.0), ``run_with_cache`` with a ``names_filter`` on
  ``hook_resid_pre`` / ``hook_resid_mid``, then the last token gathered. The bridge switches the model to
  eager attention (its documented behaviour, so attention patterns can be hooked).
* ``nnsight, batches in input order`` / ``TransformerLens, batches in input order``: the same peers on
  batches of consecutive texts (no length sorting), as they are usually driven; the other peer rows
  get ours's sorted batches.

The peers are installed only in ``benchmarks/.venv-peers`` (see ``requirements-peers.txt``); run there
to include them, otherwise their rows say "not installed"::

    benchmarks/.venv-peers/bin/python benchmarks/bench_capture.py            # all methods, N = 256
    .venv/bin/python benchmarks/bench_capture.py --n 1000 --methods ours,forward,unsorted

Against the machine's limit (``--roofline``): this machine's float32 and bfloat16 matmul peak (torch, square
matmuls, best of several, at the start, the end and between batches) and the rate of the capture's own
matmul shapes, measured in the same run as the capture's achieved rate, 2 x parameters touched (every
layer's matrices, the last layer's MLP excepted: the forward stops before it; embeddings are a lookup) x
real tokens (padding excluded) / seconds, and the fraction; the levers (:data:`LEVERS`: padded vs packed
batches, ``torch.compile``, bf16 autocast, at each of ``--threads-list``) interleaved batch by batch, each
with its max abs / rel difference to the fp32 padded capture; a ``torch.profiler`` split per thread count::

    .venv/bin/python benchmarks/bench_capture.py --roofline --n 48    # -> results/capture_roofline.json

OpenMP's wait policy (``--wait-policy-ab K``): spinning (default) vs sleeping (``OMP_WAIT_POLICY=PASSIVE``)
threads at the end of each parallel region, which OpenMP reads only when it loads, so each policy runs in
child processes, alternated K times::

    .venv/bin/python benchmarks/bench_capture.py --wait-policy-ab 4 --n 32   # -> results/capture_threads.json

Writes ``benchmarks/results/capture.json`` (``--out``) and prints a table. Goals: ours >= 1.2x the plain
forward (issue 2), >= 2x each peer (issue 8).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transformer_dynamics import capture, models, pipeline, residual

RESULTS = Path(__file__).resolve().parent / "results" / "capture.json"
METHODS = ("ours", "unsorted", "forward", "hidden_states", "nnsight", "transformerlens", "nnsight_input_order",
           "transformerlens_input_order")
#: Methods run on batches of texts in input order (no length sorting), as the peers are usually driven.
INPUT_ORDER = {"unsorted", "nnsight_input_order", "transformerlens_input_order"}
LABELS = {
    "ours": "ours (capture.residual_stream)",
    "unsorted": "ours, no length sorting",
    "forward": "HF forward (logits), reference",
    "hidden_states": "HF output_hidden_states + gather",
    "nnsight": "nnsight trace + save",
    "transformerlens": "TransformerLens run_with_cache",
    "nnsight_input_order": "nnsight, batches in input order",
    "transformerlens_input_order": "TransformerLens, batches in input order",
}


# --------------------------------------------------------------------------------------------------
# Batches: the same composition for every method
# --------------------------------------------------------------------------------------------------
def sorted_batches(ids: list[list[int]], batch_size: int) -> list[np.ndarray]:
    """Index arrays of the batches ``iter_residual_stream`` forms: texts by length, longest first."""
    order = np.argsort([-len(s) for s in ids], kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(ids), batch_size)]


def padded(ids: list[list[int]], sel: np.ndarray, pad_id: int):
    """Right-padded ``(input_ids, attention_mask, last)`` for the texts ``sel``: (B, T), (B, T), (B,)."""
    lengths = [len(ids[i]) for i in sel]
    width = max(lengths)
    input_ids = torch.full((len(sel), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sel), width), dtype=torch.long)
    for r, i in enumerate(sel):
        input_ids[r, :lengths[r]] = torch.tensor(ids[i])
        mask[r, :lengths[r]] = 1
    return input_ids, mask, torch.tensor(lengths) - 1


# --------------------------------------------------------------------------------------------------
# Methods. Each: setup(model, tok) -> state; run(state, batch list) -> rs (n, 2L, D) with NaN where it
# captures nothing. ``batches`` holds pre-padded tensors so padding is not timed twice.
# --------------------------------------------------------------------------------------------------
def run_ours(model, tok, texts, n_sub, d, *, batches, per_batch=False, **_):
    if per_batch:  # interleaved timing: one batch per call (hooks set up and removed each call)
        return capture.residual_stream(model, tok, [texts[i] for i in batches[0]], batch_size=ARGS.batch_size,
                                       progress=False)
    return capture.residual_stream(model, tok, texts, batch_size=ARGS.batch_size, progress=False)


def run_unsorted(model, tok, texts, n_sub, d, *, batches, per_batch=False, **_):
    if per_batch:
        return capture.residual_stream(model, tok, [texts[i] for i in batches[0]], batch_size=ARGS.batch_size,
                                       progress=False)
    parts = [c for _, c in capture.iter_residual_stream(
        model, tok, texts, batch_size=ARGS.batch_size, chunk_size=ARGS.batch_size, progress=False)]
    return np.concatenate(parts)


def run_forward(model, tok, texts, n_sub, d, *, ids, batches, per_batch=False, **_):
    pad = residual.pad_token(tok)
    sink = 0.0
    with torch.inference_mode():
        for sel in batches:
            input_ids, mask, _ = padded(ids, sel, pad)
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
            sink += float(logits[0, 0, 0])  # touch the output
    return None


def _out(ids, batches, n_sub, d, fill=None, per_batch=False):
    """Output array and per-batch destination rows: local rows when timing one batch of many."""
    if per_batch:
        dest = [np.arange(len(batches[0]))]
        n = len(batches[0])
    else:
        dest, n = batches, len(ids)
    out = np.full((n, n_sub, d), np.nan, dtype=np.float32) if fill else np.empty((n, n_sub, d), dtype=np.float32)
    return out, dest


def run_hidden_states(model, tok, texts, n_sub, d, *, ids, batches, per_batch=False, **_):
    pad = residual.pad_token(tok)
    out, dest = _out(ids, batches, n_sub, d, fill=True, per_batch=per_batch)
    with torch.inference_mode():
        for sel, rows_out in zip(batches, dest):
            input_ids, mask, last = padded(ids, sel, pad)
            hs = model(input_ids=input_ids, attention_mask=mask, use_cache=False,
                       output_hidden_states=True).hidden_states  # n_layers + 1 of (B, T, D)
            rows = torch.arange(len(sel))
            out[rows_out, 0::2] = torch.stack([h[rows, last] for h in hs[:n_sub // 2]], 1).numpy()
    return out


def setup_nnsight(model, tok):
    from nnsight import LanguageModel  # noqa: PLC0415

    return LanguageModel(copy.deepcopy(model), tokenizer=tok)


def run_nnsight(lm, tok, texts, n_sub, d, *, ids, batches, per_batch=False, **_):
    pad = residual.pad_token(tok)
    out, dest = _out(ids, batches, n_sub, d, per_batch=per_batch)
    layers = lm.model.layers
    for sel, rows_out in zip(batches, dest):
        input_ids, mask, last = padded(ids, sel, pad)
        rows = torch.arange(len(sel))
        saved = []
        with lm.trace({"input_ids": input_ids, "attention_mask": mask}):
            for layer in layers:
                saved.append(layer.input_layernorm.input[rows, last].save())
                saved.append(layer.post_attention_layernorm.input[rows, last].save())
        out[rows_out] = torch.stack([getattr(s, "value", s) for s in saved], 1).numpy()
    return out


def setup_transformerlens(model, tok):
    from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415

    return TransformerBridge.boot_transformers(model.config._name_or_path or "smollm2-135m",
                                               hf_model=copy.deepcopy(model), tokenizer=tok,
                                               device="cpu", dtype=torch.float32)


def run_transformerlens(bridge, tok, texts, n_sub, d, *, ids, batches, per_batch=False, **_):
    pad = residual.pad_token(tok)
    out, dest = _out(ids, batches, n_sub, d, per_batch=per_batch)
    names = capture.hook_names(n_sub // 2)
    wanted = set(names)
    with torch.inference_mode():
        for sel, rows_out in zip(batches, dest):
            input_ids, mask, last = padded(ids, sel, pad)
            rows = torch.arange(len(sel))
            _, cache = bridge.run_with_cache(input_ids, attention_mask=mask, names_filter=lambda n: n in wanted)
            out[rows_out] = torch.stack([cache[n][rows, last] for n in names], 1).numpy()
    return out


RUNNERS = {"ours": run_ours, "unsorted": run_unsorted, "forward": run_forward,
           "hidden_states": run_hidden_states, "nnsight": run_nnsight, "transformerlens": run_transformerlens,
           "nnsight_input_order": run_nnsight, "transformerlens_input_order": run_transformerlens}
SETUPS = {"nnsight": setup_nnsight, "transformerlens": setup_transformerlens,
          "nnsight_input_order": setup_nnsight, "transformerlens_input_order": setup_transformerlens}
PEER_PACKAGES = {"nnsight": "nnsight", "transformerlens": "transformer_lens",
                 "nnsight_input_order": "nnsight", "transformerlens_input_order": "transformer_lens"}


def max_abs_diff(rs, ref) -> float | None:
    if rs is None:
        return None
    ok = ~np.isnan(rs)
    return float(np.abs(rs[ok] - ref[ok]).max())


def version_of(pkg: str) -> str | None:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version(pkg)
    except Exception:  # noqa: BLE001
        return None


def profile_ours(model, tok, texts, batch_size: int, top: int = 15) -> str:
    """torch.profiler table of ours on ``texts`` (operator self CPU time)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        capture.residual_stream(model, tok, texts, batch_size=batch_size, progress=False)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5, inner: int = 4) -> float:
    """Best FLOP/s of ``size x size`` matmuls in ``dtype`` with the current torch threads (``repeats``
    timings of ``inner`` products each, after one untimed)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        best = max(best, inner * 2 * size**3 / (time.perf_counter() - t0))
    return best


def shaped_peak(model, tokens: int, repeats: int = 3) -> float:
    """Best FLOP/s of the capture's own matmuls: ``F.linear`` of ``(tokens, in)`` activations with every
    weight of one decoder layer (fp32, current threads): the rate the capture's matmuls can reach at a
    packed batch's token count."""
    weights = [m.weight for m in residual.of(model).layers[0].modules() if isinstance(m, torch.nn.Linear)]
    xs = [torch.randn(tokens, w.shape[1]) for w in weights]
    flops = sum(2 * tokens * w.numel() for w in weights)
    best = 0.0
    with torch.inference_mode():
        for x, w in zip(xs, weights):
            torch.nn.functional.linear(x, w)
        for _ in range(repeats):
            t0 = time.perf_counter()
            for x, w in zip(xs, weights):
                torch.nn.functional.linear(x, w)
            best = max(best, flops / (time.perf_counter() - t0))
    return best


def params_touched(model) -> int:
    """Parameters the capture multiplies by: every layer's, but the last layer's MLP (never reached)."""
    layers = residual.of(model).layers
    last = sum(p.numel() for name, p in layers[-1].named_parameters() if "mlp" not in name)
    return sum(p.numel() for layer in layers[:-1] for p in layer.parameters()) + last


#: Levers of the roofline run: capture arguments and settings (packed: ``capture``'s padding-free batches;
#: compile: ``capture``'s ``compile=True``, ``torch.compile(dynamic=True)`` of every layer's MLP and norm
#: forwards, the norms' pre-hooks staying eager; bf16: ``torch.autocast("cpu", torch.bfloat16)``).
LEVERS = {
    "fp32 padded": {"pack": False},
    "fp32 packed": {"pack": True},
    "fp32 packed + torch.compile": {"pack": True, "compile": True},
    "bf16 autocast padded": {"pack": False, "bf16": True},
    "bf16 autocast packed": {"pack": True, "bf16": True},
}


def op_shares(model, tok, texts, batch_size: int, pack: bool) -> dict:
    """torch.profiler self-CPU shares of one capture call: matmul (mm/addmm/bmm), attention (sdpa kernels),
    the packing's gathers/scatters, and everything else (norms, activations, rotary, copies)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        capture.residual_stream(model, tok, texts, batch_size=batch_size, progress=False, pack=pack)
    groups = {"matmul": 0.0, "attention": 0.0, "packing (index/index_put)": 0.0, "other": 0.0}
    for e in prof.key_averages():
        name = e.key
        if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
            g = "matmul"
        elif "scaled_dot_product" in name or "flash_attention" in name:
            g = "attention"
        elif name in ("aten::index", "aten::_index_put_impl_", "aten::index_put_"):
            g = "packing (index/index_put)"
        else:
            g = "other"
        groups[g] += e.self_cpu_time_total
    total = sum(groups.values())
    return {k: round(v / total, 4) for k, v in groups.items()} | {"seconds": round(total / 1e6, 2)}


@dataclass
class Texts:
    """The model, the texts and their sorted batches every benchmark of this file times on."""

    model: Any
    tok: Any
    texts: list[str]
    ids: list[list[int]]
    batches: list[np.ndarray]
    load0: tuple[float, float, float]

    @classmethod
    def load(cls, args) -> "Texts":
        load0 = os.getloadavg()
        model, tok = models.load_model(args.model, dtype="float32", device="cpu")
        texts = pipeline.load_texts(args.n, seed=0)
        ids = capture.tokenize(tok, texts)
        return cls(model, tok, texts, ids, sorted_batches(ids, args.batch_size), load0)

    @property
    def real_tokens(self) -> int:
        return sum(len(s) for s in self.ids)

    @property
    def padded_tokens(self) -> int:
        return sum(len(b) * max(len(self.ids[i]) for i in b) for b in self.batches)

    def texts_of(self, batch: np.ndarray) -> list[str]:
        return [self.texts[i] for i in batch]


def _peaks(model, thread_list: list[int], median_tokens: int, tag: str) -> dict:
    """The matmul peaks (float32, bfloat16, the capture's shapes) at each thread count, printed."""
    out = {}
    for th in thread_list:
        torch.set_num_threads(th)
        out[th] = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16),
                   "capture_shaped_fp32": shaped_peak(model, median_tokens)}
        print(f"peak {tag}, {th} threads: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in out[th].items())
              + " GFLOP/s", flush=True)
    return out


def _lever_run(t: Texts, args, lever: str, sel_texts: list[str]) -> np.ndarray:
    cfg = LEVERS[lever]
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.get("bf16") else torch.autocast("cpu", enabled=False)
    with ctx:
        return capture.residual_stream(t.model, t.tok, sel_texts, batch_size=args.batch_size, progress=False,
                                       pack=cfg["pack"], compile=cfg.get("compile", False))


def _roofline_warm_up(t: Texts, args, combos: list[tuple[int, str]]) -> dict:
    """Each (threads, lever) once on the shortest batch; torch.compile gets a second, longer one (it specialises on
    the first shape, then recompiles once with dynamic shapes). -> compile seconds per thread count."""
    compile_seconds = {}
    for th, lv in combos:
        torch.set_num_threads(th)
        t0 = time.perf_counter()
        for b in ((t.batches[-1], t.batches[-2]) if LEVERS[lv].get("compile") and len(t.batches) > 1
                  else t.batches[-1:]):
            _lever_run(t, args, lv, t.texts_of(b))
        if LEVERS[lv].get("compile"):
            compile_seconds[th] = round(time.perf_counter() - t0, 1)
    print("warm-up done" + (f"; compile + 2 warm-up batches: {compile_seconds} s" if compile_seconds else ""),
          flush=True)
    return compile_seconds


def _roofline_time(t: Texts, args, combos, thread_list) -> tuple[dict, dict, dict, list]:
    """Every (threads, lever) batch by batch, the order rotating with the batch, and the matmul peak sampled
    between batches (one 2048^2 product per thread count and dtype: under load the machine's limit moves, and the
    fraction is reported against what the run itself could get). -> (seconds, outputs, peak samples, loads)."""
    seconds = {c: 0.0 for c in combos}
    rm = residual.of(t.model, t.tok)
    outs = {c: np.empty((len(t.ids), rm.n_sublayers, rm.d_model), np.float32) for c in combos}
    loads = []
    samples: dict = {(th, kind): [] for th in thread_list for kind in ("fp32", "bf16")}
    for k, b in enumerate(t.batches):
        loads.append(os.getloadavg()[0])
        for th in thread_list:
            torch.set_num_threads(th)
            for kind, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                samples[(th, kind)].append(matmul_peak(dtype, repeats=1, inner=2))
        for th, lv in combos[k % len(combos):] + combos[:k % len(combos)]:
            torch.set_num_threads(th)
            t0 = time.perf_counter()
            rs = _lever_run(t, args, lv, t.texts_of(b))
            seconds[(th, lv)] += time.perf_counter() - t0
            outs[(th, lv)][b] = rs
        print(f"  batch {k + 1}/{len(t.batches)}, load {loads[-1]:.1f}", flush=True)
    return seconds, outs, samples, loads


def _roofline_row(th: int, lv: str, dt: float, rs: np.ndarray, ref: np.ndarray | None, flops: float, peak: dict,
                  during: float, base: float | None) -> dict:
    kind = "bf16" if LEVERS[lv].get("bf16") else "fp32"
    rate = flops / dt
    diff = None if ref is None else np.abs(rs - ref)
    return {
        "threads": th, "lever": lv, "seconds": round(dt, 2), "gflops": round(rate / 1e9, 2),
        "peak_gflops": round(peak[kind] / 1e9, 1), "fraction_of_peak": round(rate / peak[kind], 3),
        "mean_peak_during_run_gflops": round(during / 1e9, 1),
        "fraction_of_peak_during_run": round(rate / during, 3),
        "fraction_of_capture_shaped_peak": (round(rate / peak["capture_shaped_fp32"], 3) if kind == "fp32"
                                            else None),
        "speedup_vs_fp32_padded_same_threads": None if base is None else round(base / dt, 3),
        "max_abs_diff_vs_fp32": None if diff is None else float(diff.max()),
        "max_rel_diff_vs_fp32": None if diff is None else float(diff.max() / np.abs(ref).max()),
        "bit_identical_to_fp32": None if ref is None else bool(np.array_equal(rs, ref)),
    }


def _levers(args) -> list[str]:
    levers = [x.strip() for x in args.levers.split(",")] if args.levers else list(LEVERS)
    unknown = sorted(set(levers) - set(LEVERS))
    if unknown:
        raise ValueError(f"unknown lever(s) {unknown}; choose from {', '.join(LEVERS)}")
    return levers


def roofline(args) -> dict:
    """The capture's achieved FLOP rate against this machine's measured matmul peak, per lever and thread
    count, all interleaved batch by batch in one run (same texts, same sorted batches)."""
    out_path = args.out if args.out != RESULTS else RESULTS.with_name("capture_roofline.json")
    t = Texts.load(args)
    n_params = params_touched(t.model)
    flops = 2.0 * n_params * t.real_tokens
    thread_list = [int(x) for x in args.threads_list.split(",")]
    levers = _levers(args)
    median_tokens = int(np.median([sum(len(t.ids[i]) for i in b) for b in t.batches]))
    peak_start = _peaks(t.model, thread_list, median_tokens, "start")
    other = [x.strip() for x in args.levers_other_threads.split(",") if x.strip()]
    combos = [(th, lv) for th in thread_list for lv in levers if th == thread_list[0] or lv in other]
    compile_seconds = _roofline_warm_up(t, args, combos)
    seconds, outs, samples, loads = _roofline_time(t, args, combos, thread_list)
    peak_end = _peaks(t.model, thread_list, median_tokens, "end")
    shares = {}
    if args.profile_shares:
        for th in thread_list:
            torch.set_num_threads(th)
            shares[th] = op_shares(t.model, t.tok, t.texts_of(t.batches[len(t.batches) // 2]), args.batch_size,
                                   pack=True)
            print(f"op shares, {th} threads (packed, one batch): {shares[th]}", flush=True)
    ref = outs[(thread_list[0], "fp32 padded")] if "fp32 padded" in levers else None
    rows = []
    for th, lv in combos:
        peak = {key: max(peak_start[th][key], peak_end[th][key], *samples.get((th, key), []))
                for key in peak_start[th]}
        during = float(np.mean(samples[(th, "bf16" if LEVERS[lv].get("bf16") else "fp32")]))
        rows.append(_roofline_row(th, lv, seconds[(th, lv)], outs[(th, lv)], ref, flops, peak, during,
                                  seconds.get((th, "fp32 padded"))))
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "capture_roofline", "model": args.model, "n": args.n, "batch_size": args.batch_size,
              "timing": "interleaved per batch over every (threads, lever), order rotating with the batch",
              "params_touched": n_params, "real_tokens": t.real_tokens, "padded_tokens": t.padded_tokens,
              "padding_share": round(1 - t.real_tokens / t.padded_tokens, 4), "flops_per_run": flops,
              "median_batch_tokens": median_tokens,
              "peaks_gflops": {str(th): {"start": {k: round(v / 1e9, 1) for k, v in peak_start[th].items()},
                                         "end": {k: round(v / 1e9, 1) for k, v in peak_end[th].items()}}
                               for th in thread_list},
              "peak_samples_between_batches_gflops": {f"{th} {kind}": [round(v / 1e9, 1) for v in vals]
                                                      for (th, kind), vals in samples.items()},
              "compile_seconds": {str(k): v for k, v in compile_seconds.items()},
              "op_shares": {str(k): v for k, v in shares.items()},
              "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                          "torch": torch.__version__, "load_average_start": t.load0,
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                          "load_average_per_batch": [round(x, 2) for x in loads],
                          "load_average_end": os.getloadavg()},
              "rows": rows}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"padding share {result['padding_share']:.1%}; wrote {out_path}")
    return result


POLICIES = ("default", "PASSIVE")


def wait_policy_child(args) -> None:
    """In a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` when it loads): seconds of the default (packed)
    capture of ``args.n`` texts at each of ``--threads-list``, printed as one JSON line."""
    model, tok = models.load_model(args.model, dtype="float32", device="cpu")
    texts = pipeline.load_texts(args.n, seed=0)
    out = {"policy": os.environ.get("OMP_WAIT_POLICY", "default"), "load_average": os.getloadavg()[0]}
    for th in (int(t) for t in args.threads_list.split(",")):
        torch.set_num_threads(th)
        capture.residual_stream(model, tok, texts[-4:], batch_size=args.batch_size, progress=False)  # warm-up
        t0 = time.perf_counter()
        capture.residual_stream(model, tok, texts, batch_size=args.batch_size, progress=False)
        out[str(th)] = round(time.perf_counter() - t0, 2)
    print("RESULT " + json.dumps(out), flush=True)


def wait_policy(args) -> dict:
    """OpenMP's wait policy (how a thread waits at the end of a parallel region: spinning by default,
    sleeping with ``OMP_WAIT_POLICY=PASSIVE``) as a thread-settings lever: ``--wait-policy-ab K`` runs K
    alternations of a child process per policy (A B A B ...), each timing the same capture at every thread
    count; reports every time and the median per (policy, threads)."""
    import subprocess  # noqa: PLC0415

    out_path = args.out if args.out != RESULTS else RESULTS.with_name("capture_threads.json")
    runs = []
    for k in range(args.wait_policy_ab):
        for policy in (POLICIES if k % 2 == 0 else POLICIES[::-1]):
            env = {**os.environ, "OMP_NUM_THREADS": str(max(int(t) for t in args.threads_list.split(",")))}
            env.pop("OMP_WAIT_POLICY", None)
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            cmd = [sys.executable, __file__, "--wait-policy-child", "--n", str(args.n), "--batch-size",
                   str(args.batch_size), "--model", args.model, "--threads-list", args.threads_list]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT "))
            runs.append(json.loads(line[len("RESULT "):]))
            print(runs[-1], flush=True)
    threads = args.threads_list.split(",")
    medians = {f"{p} {th} threads": round(float(np.median([r[th] for r in runs if r["policy"] == p])), 2)
               for p in POLICIES for th in threads}
    result = {"benchmark": "capture_wait_policy", "model": args.model, "n": args.n, "batch_size": args.batch_size,
              "capture": "capture.residual_stream defaults (packed), one warm-up call, then all n texts",
              "alternations": args.wait_policy_ab, "median_seconds": medians, "runs": runs,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(medians), f"wrote {out_path}")
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="texts (1000 = the paper's N)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--model", default=models.DEFAULT_MODEL)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads (default: cores; use 1 on a machine loaded by other jobs)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (ours and forward always run)")
    p.add_argument("--no-interleave", dest="interleave", action="store_false",
                   help="time each method's whole run in turn (ours: one residual_stream call on all texts) "
                        "instead of interleaving the methods batch by batch")
    p.add_argument("--repeats", type=int, default=1,
                   help="with --no-interleave: passes per method, round-robin; the fastest is kept")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of ours")
    p.add_argument("--roofline", action="store_true", help="matmul peak vs the capture's FLOP rate, levers")
    p.add_argument("--levers", default="", help=f"with --roofline: comma-separated subset of {', '.join(LEVERS)}")
    p.add_argument("--threads-list", default=",".join(str(t) for t in sorted({1, os.cpu_count() or 1})),
                   help="with --roofline: thread counts, interleaved")
    p.add_argument("--levers-other-threads", default="fp32 padded,fp32 packed,fp32 packed + torch.compile",
                   help="with --roofline: the levers also run at the thread counts after the first")
    p.add_argument("--no-profile-shares", dest="profile_shares", action="store_false",
                   help="with --roofline: skip the torch.profiler op shares")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--wait-policy-ab", type=int, default=0,
                   help="K > 0: OMP_WAIT_POLICY default vs PASSIVE, K alternations of child processes "
                        "(-> results/capture_threads.json)")
    p.add_argument("--wait-policy-child", action="store_true", help=argparse.SUPPRESS)
    return p


def _methods(args) -> list[str]:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return [m for m in METHODS if m in set(methods) | {"ours", "forward"}]


def _error(err: Exception) -> str:
    return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"


def _warm_up(t: Texts, methods: list[str], n_sub: int, d: int, args) -> tuple[dict, dict, dict]:
    """Set up each method once (peers wrap a copy of the model), then warm it up on one batch.
    -> (state per method, notes, failures)."""
    states, notes, failed = {}, {}, {}
    mid = t.batches[len(t.batches) // 2]
    warm_texts, warm_ids = t.texts_of(mid), [t.ids[i] for i in mid]
    warm_batches = sorted_batches(warm_ids, args.batch_size)
    for m in methods:
        if m in PEER_PACKAGES:
            try:
                __import__(PEER_PACKAGES[m])
            except ImportError as err:
                failed[m] = (f"not installed in {sys.executable} ({err}); run with "
                             "benchmarks/.venv-peers/bin/python (see requirements-peers.txt)")
                continue
        try:
            t0 = time.perf_counter()
            shared = m.removesuffix("_input_order")
            if shared != m and shared in states:  # the same wrapped model, other batches
                states[m] = states[shared]
            else:
                states[m] = SETUPS[m](t.model, t.tok) if m in SETUPS else t.model
            if m in SETUPS:
                notes[m] = f"setup {time.perf_counter() - t0:.1f}s (not timed)"
            RUNNERS[m](states[m], t.tok, warm_texts, n_sub, d, ids=warm_ids, batches=warm_batches[:1], per_batch=True)
        except Exception as err:  # noqa: BLE001 - a peer that cannot load this model is a result
            traceback.print_exc()
            failed[m] = _error(err)
            states.pop(m, None)
    print("warm-up done: " + ", ".join(states), flush=True)
    return states, notes, failed


def _time_interleaved(t: Texts, states: dict, failed: dict, unsorted: list, n_sub: int, d: int
                      ) -> tuple[dict, dict]:
    """Batch k of every method back to back (the method order rotating with k), each call timed on its own: a
    change in the machine's load hits every method alike. "unsorted" runs its own batch k. -> (seconds, outputs)."""
    seconds = {m: 0.0 for m in states}
    outputs = {m: None if m == "forward" else np.full((len(t.ids), n_sub, d), np.nan, dtype=np.float32)
               for m in states}
    order = list(states)
    for k in range(len(t.batches)):
        if k % max(1, len(t.batches) // 8) == 0:
            print(f"  batch {k + 1}/{len(t.batches)}, load {os.getloadavg()[0]:.1f}", flush=True)
        for m in order[k % len(order):] + order[:k % len(order)]:
            if m not in states:
                continue
            sel = unsorted[k] if m in INPUT_ORDER else t.batches[k]
            t0 = time.perf_counter()
            try:
                out = RUNNERS[m](states[m], t.tok, t.texts, n_sub, d, ids=t.ids, batches=[sel], per_batch=True)
            except Exception as err:  # noqa: BLE001
                traceback.print_exc()
                failed[m] = f"failed: {type(err).__name__}: {str(err)[:300]}"
                states.pop(m)
                seconds.pop(m, None)
                outputs.pop(m, None)
                continue
            seconds[m] += time.perf_counter() - t0
            if out is not None:
                outputs[m][sel] = out
    return seconds, outputs


def _time_whole(t: Texts, states: dict, failed: dict, unsorted: list, n_sub: int, d: int, repeats: int
                ) -> tuple[dict, dict]:
    """Each method's whole run in turn, ``repeats`` passes round-robin, the fastest kept. -> (seconds, outputs)."""
    seconds: dict[str, float] = {}
    outputs: dict[str, np.ndarray | None] = {}
    for rep in range(repeats):
        order = list(states)
        for m in order[rep % len(order):] + order[:rep % len(order)]:
            gc.collect()
            t0 = time.perf_counter()
            try:
                out = RUNNERS[m](states[m], t.tok, t.texts, n_sub, d, ids=t.ids,
                                 batches=unsorted if m in INPUT_ORDER else t.batches)
            except Exception as err:  # noqa: BLE001
                traceback.print_exc()
                failed[m] = f"failed: {type(err).__name__}: {str(err)[:300]}"
                states.pop(m)
                continue
            dt = time.perf_counter() - t0
            seconds[m] = min(dt, seconds.get(m, np.inf))
            outputs[m] = out
            print(f"  pass {rep + 1}: {LABELS[m]:36s} {dt:8.2f} s", flush=True)
    return seconds, outputs


def _rows(t: Texts, methods, seconds, outputs, failed, notes, pad_input: int, n: int) -> list[dict]:
    ref, t_fwd, n_tokens = outputs["ours"], seconds.get("forward"), t.real_tokens
    rows = []
    for m in (m for m in METHODS if m in methods):
        s = seconds.get(m)
        note = failed.get(m, notes.get(m, ""))
        if m == "hidden_states":
            note = "resid_pre only (30 of 60 points; diff over those)" + (f"; {note}" if note else "")
        if m in INPUT_ORDER and s is not None:
            note = (note + "; " if note else "") + f"{pad_input} padded positions vs {t.padded_tokens} sorted"
        if m.startswith("transformerlens") and s is not None:
            note = (note + "; " if note else "") + "bridge forces eager attention"
        if m == "forward":
            note = f"{n_tokens / s:.0f} real tokens/s" if s else note
        rows.append({
            "method": LABELS[m],
            "seconds": None if s is None else round(s, 3),
            "texts_per_s": None if s is None else round(n / s, 3),
            "ratio_vs_forward": None if (s is None or t_fwd is None) else round(t_fwd / s, 3),
            "max_abs_diff": None if m == "forward" or m not in outputs else max_abs_diff(outputs[m], ref),
            "note": note,
        })
    return rows


def _print_table(rows: list[dict]) -> None:
    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    print(f"\n{'method':36s} {'seconds':>9s} {'texts/s':>8s} {'vs fwd':>7s} {'max|diff|':>10s}  note")
    for r in rows:
        print(f"{r['method']:36s} {f(r['seconds'], '9.2f')} {f(r['texts_per_s'], '8.2f')} "
              f"{f(r['ratio_vs_forward'], '7.2f')} {f(r['max_abs_diff'], '10.2e')}  {r['note']}")


def main(argv=None):
    global ARGS
    ARGS = args = _parser().parse_args(argv)
    if args.wait_policy_child:
        return wait_policy_child(args)
    if args.wait_policy_ab:
        return wait_policy(args)
    if args.roofline:
        return roofline(args)
    methods = _methods(args)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    t = Texts.load(args)
    t_load = time.perf_counter() - t0
    rm = residual.of(t.model, t.tok)
    n_layers, n_sub, d = rm.n_layers, rm.n_sublayers, rm.d_model
    unsorted = [np.arange(i, min(i + args.batch_size, len(t.ids))) for i in range(0, len(t.ids), args.batch_size)]
    pad_input = sum(len(b) * max(len(t.ids[i]) for i in b) for b in unsorted)
    print(f"{args.model}: {n_layers} layers, d_model {d}; N = {args.n} texts, {t.real_tokens} tokens "
          f"({t.padded_tokens} padded positions sorted, {pad_input} unsorted); threads {args.threads}, "
          f"load {t.load0}; model loaded in {t_load:.1f}s", flush=True)
    states, notes, failed = _warm_up(t, methods, n_sub, d, args)
    seconds, outputs = (_time_interleaved(t, states, failed, unsorted, n_sub, d) if args.interleave
                        else _time_whole(t, states, failed, unsorted, n_sub, d, args.repeats))
    rows = _rows(t, methods, seconds, outputs, failed, notes, pad_input, args.n)
    t_fwd = seconds.get("forward")
    speedups = {f"ours_vs_{m}": round(seconds[m] / seconds["ours"], 3)
                for m in ("nnsight", "transformerlens", "nnsight_input_order", "transformerlens_input_order",
                          "hidden_states", "unsorted") if m in seconds}
    result = {
        "model": args.model, "n_texts": args.n, "n_tokens": t.real_tokens, "batch_size": args.batch_size,
        "threads": args.threads,
        "timing": "interleaved per batch" if args.interleave else f"whole runs, best of {args.repeats}",
        "ours_vs_forward": round(t_fwd / seconds["ours"], 3) if t_fwd else None,
        "goal_ours_vs_forward": 1.2,
        "goal_ours_vs_each_peer": 2.0,
        **speedups,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": [round(x, 2) for x in t.load0],
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                    "python": sys.executable, "torch": torch.__version__,
                    "transformers": version_of("transformers"), "nnsight": version_of("nnsight"),
                    "transformer_lens": version_of("transformer-lens")},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    _print_table(rows)
    print({k: v for k, v in result.items() if k.startswith("ours_vs")})
    print(f"wrote {args.out}")
    if args.profile:
        print(profile_ours(t.model, t.tok, t.texts[:min(64, len(t.texts))], args.batch_size))


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
