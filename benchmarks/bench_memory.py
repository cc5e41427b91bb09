"""Peak memory of capturing N texts in memory vs streaming shards to the cache.

Each case runs in its own subprocess (so one case's peak cannot hide another's). The child loads the model
(``pipeline.load_model``), reads every weight (they are memory-mapped and join RSS only when read) and runs a
16-text warm-up capture, records its resident set (``VmRSS``), resets the peak counter (``VmHWM``, via
``/proc/self/clear_refs``; elsewhere the whole-process ``ru_maxrss`` is used) and then captures:

* ``in_memory``: ``capture.residual_stream(model, tok, texts)`` — the whole ``(N, 2L, D)`` float32 array is
  built in memory;
* ``streaming``: ``pipeline.residual_stream_store(n=N, shard_size=S, cache_dir=tmp)`` — shards of S texts
  written to a temporary cache folder; the whole array is never materialised.

Predicted peak of the in-memory mode: RSS after the warm-up + ``N x 2L x D x 4`` bytes (the rows also
show the bare model size + that array, the lower bound); of the streaming mode: RSS after the warm-up + two
shards (the array and its serialised bytes). Streaming's peak should stay flat in N (one shard at a time), which
is what makes N = 100 000 possible. Results go to ``benchmarks/results/memory.json``::

    .venv/bin/python benchmarks/bench_memory.py                    # N = 128, 512, 1000, full texts
    .venv/bin/python benchmarks/bench_memory.py --max-tokens 16    # same memory story, ~5x quicker

``--max-tokens K`` keeps the first K tokens of every text (BOS included): the output arrays, and so the
memory this benchmark is about, are the same size; only the forward's compute (and its small per-batch
activations) shrink.

N beyond the corpus (the paper's CAE saw 100 000 texts; WikiText-2 test + validation have 1 246 usable rows):
``--cycle-texts`` repeats the rows in order up to N and streams them through the same writer the pipeline
uses (``capture.iter_residual_stream`` into ``cache.ShardWriter``), in a temporary cache folder::

    .venv/bin/python benchmarks/bench_memory.py --ns 1000,10000,100000 --modes streaming --cycle-texts \
        --max-tokens 8 --shard-size 1024 --batch-size 64 --out benchmarks/results/memory_streaming_100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"
MiB = 2 ** 20


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child(mode: str, n: int, shard_size: int, cache_dir: str, model_name: str, threads: int,
          max_tokens: int | None, cycle_texts: bool = False, batch_size: int = 16) -> dict:
    """One case, in this process: returns RSS figures in bytes and the capture time."""
    import torch  # noqa: PLC0415

    from transformer_dynamics import capture, pipeline  # noqa: PLC0415

    torch.set_num_threads(threads)
    if max_tokens is not None:
        tokenize = capture.tokenize

        def truncated(*args, **kwargs):
            return [s[:max_tokens] for s in tokenize(*args, **kwargs)]

        capture.tokenize = capture.stream.tokenize = truncated
    model, tok = pipeline.load_model(model_name, cache_dir=cache_dir)  # model: its ResidualModel
    if cycle_texts:  # every usable row, in order, repeated up to n (n may exceed the corpus)
        from transformer_dynamics import data  # noqa: PLC0415
        rows = data.filter_rows(data.load_rows(data.DEFAULT_SPLITS)[0])
        texts = [rows[i % len(rows)] for i in range(n)]
    else:
        texts = pipeline.load_texts(n, seed=0)
    n_sub, d = model.n_sublayers, model.d_model
    n_params = sum(p.numel() * p.element_size() for p in model.model.parameters())
    # Warm up first. safetensors memory-maps the weights, so a page joins RSS only when first read: without
    # this, RSS would grow during the capture as new token ids read new rows of the (49152 x 576)
    # embedding matrix (up to its 108 MiB), which is loading, not capturing. So read every parameter,
    # then run one batch; the peak is reset only after that.
    with torch.inference_mode():
        for param in model.model.parameters():
            param.sum()
    capture.residual_stream(model, tok, texts[:16], progress=False)
    rss_loaded = _status_kib("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    if mode == "in_memory":
        rs = capture.residual_stream(model, tok, texts, progress=False)
        shape = list(rs.shape)
    elif mode == "streaming" and cycle_texts:
        from transformer_dynamics import cache  # noqa: PLC0415
        identity = {"benchmark": "bench_memory", "model": model_name, "n": n, "max_tokens": max_tokens}
        with cache.ShardWriter(cache_dir, identity) as writer:
            for start, chunk in capture.iter_residual_stream(model, tok, texts, chunk_size=shard_size,
                                                             batch_size=batch_size, progress=False):
                writer.write(start, chunk)
        shape = list(writer.store.shape)
        shutil.rmtree(writer.store.path)  # 13.8 GB at N = 100 000: do not keep it
    elif mode == "streaming":
        store = pipeline.residual_stream_store(model_name, n=n, seed=0, cache_dir=cache_dir, shard_size=shard_size,
                                               recompute=True, progress=False)
        shape = list(store.shape)
    else:
        raise ValueError(f"mode must be in_memory or streaming, got {mode!r}")
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM") if reset else None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"mode": mode, "n": n, "shape": shape, "seconds": seconds,
            "rss_after_load": rss_loaded * 1024 if rss_loaded else None,
            "peak_during_capture": (peak if peak is not None else maxrss) * 1024,
            "peak_process": maxrss * 1024, "peak_reset": reset,
            "model_bytes": n_params, "array_bytes": n * n_sub * d * 4}


def link_model(cache_dir: Path, model_name: str) -> None:
    """Make the converted model visible in the temporary cache (no second GGUF conversion)."""
    from transformer_dynamics import models  # noqa: PLC0415

    if models.resolve(model_name).kind != "packaged":
        return
    src = models.convert_gguf(model_name)
    dst = cache_dir / "models" / model_name
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        dst.symlink_to(src, target_is_directory=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ns", default="128,512,1000", help="comma-separated N values")
    p.add_argument("--shard-size", type=int, default=64, help="texts per shard in the streaming mode")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--max-tokens", type=int, default=None, help="truncate every text to this many tokens")
    p.add_argument("--modes", default="in_memory,streaming")
    p.add_argument("--cycle-texts", action="store_true",
                   help="repeat the corpus's rows up to N (N may exceed the 1 246 rows)")
    p.add_argument("--batch-size", type=int, default=16, help="texts per forward pass (--cycle-texts runs)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    return p


def run_case(args, mode: str, n: int, cache_dir: str) -> dict:
    """One capture of ``n`` texts in ``mode`` measured in a child process -> its row (with the predicted peak:
    in memory, the whole array on top of the warmed-up process; streaming, one shard's array and its serialised
    bytes at a time)."""
    cmd = [sys.executable, __file__, "--child", mode, str(n), "--cache-dir", cache_dir,
           "--shard-size", str(args.shard_size), "--model", args.model, "--threads", str(args.threads)]
    if args.max_tokens:
        cmd += ["--max-tokens", str(args.max_tokens)]
    if args.cycle_texts:
        cmd += ["--cycle-texts", "--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"case {mode} N={n} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(line[len("RESULT "):])
    row_bytes = r["array_bytes"] / n
    extra = r["array_bytes"] if mode == "in_memory" else 2 * min(n, args.shard_size) * row_bytes
    return {"mode": mode, "n": n, "rss_after_load_mib": round(r["rss_after_load"] / MiB, 1),
            "peak_mib": round(r["peak_during_capture"] / MiB, 1),
            "growth_mib": round((r["peak_during_capture"] - r["rss_after_load"]) / MiB, 1),
            "predicted_peak_mib": round((r["rss_after_load"] + extra) / MiB, 1),
            "array_mib": round(r["array_bytes"] / MiB, 1),
            "model_mib": round(r["model_bytes"] / MiB, 1),
            "model_plus_array_mib": round((r["model_bytes"] + r["array_bytes"]) / MiB, 1),
            "seconds": round(r["seconds"], 2), "peak_reset": r["peak_reset"],
            "note": f"shards of {args.shard_size}" if mode == "streaming" else "whole array in memory"}


def slope(rows: list[dict], mode: str) -> float | None:
    """MiB of extra peak per 1000 extra texts in ``mode``, least squares over N (None below two points)."""
    pts = [(r["n"], r["growth_mib"]) for r in rows if r["mode"] == mode]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return round(1000 * sum((x - mx) * (y - my) for x, y in pts) / sxx, 1) if sxx else None


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.child:
        res = child(args.child[0], int(args.child[1]), args.shard_size, args.cache_dir, args.model, args.threads,
                    args.max_tokens, args.cycle_texts, args.batch_size)
        print("RESULT " + json.dumps(res), flush=True)
        return
    load0 = os.getloadavg()
    rows = []
    print(f"{'mode':10s} {'N':>6s} {'after load MiB':>15s} {'peak MiB':>9s} {'predicted MiB':>14s} "
          f"{'array MiB':>10s} {'seconds':>8s}", flush=True)
    with tempfile.TemporaryDirectory(prefix="td-bench-memory-") as tmp:
        link_model(Path(tmp), args.model)
        for n in (int(x) for x in args.ns.split(",")):
            for mode in (m.strip() for m in args.modes.split(",")):
                row = run_case(args, mode, n, tmp)
                rows.append(row)
                print(f"{mode:10s} {n:6d} {row['rss_after_load_mib']:15.1f} {row['peak_mib']:9.1f} "
                      f"{row['predicted_peak_mib']:14.1f} {row['array_mib']:10.1f} {row['seconds']:8.1f}",
                      flush=True)
    per_text = rows[0]["array_mib"] / rows[0]["n"] * 1000 if rows else None
    result = {
        "model": args.model,
        "shard_size": args.shard_size,
        "max_tokens": args.max_tokens,
        "texts": "corpus rows repeated in order up to N" if args.cycle_texts else "WikiText rows sampled with seed 0",
        "threads": args.threads,
        "batch_size": args.batch_size,
        "array_mib_per_1000_texts": None if per_text is None else round(per_text, 1),
        "in_memory_growth_mib_per_1000_texts": slope(rows, "in_memory"),
        "streaming_growth_mib_per_1000_texts": slope(rows, "streaming"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": [round(x, 2) for x in load0],
                    "peak_measure": "VmHWM, reset after the model is loaded" if rows and all(
                        r["peak_reset"] for r in rows) else "ru_maxrss (includes loading)"},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print({k: v for k, v in result.items() if "growth" in k or "per_1000" in k})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
