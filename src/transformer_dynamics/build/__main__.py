"""Command line of the book build (run from the repository root; ``make book`` calls ``all``)::

    python -m transformer_dynamics.build run     --profile ci [--only 02] [--out _build] [--verbose]
    python -m transformer_dynamics.build html    --profile ci
    python -m transformer_dynamics.build check   [--only 02]
    python -m transformer_dynamics.build all     --profile full
    python -m transformer_dynamics.build browser   # setup: find or install Chromium for the check

``all`` exits non-zero when a notebook fails, the HTML does not build or the browser check finds a broken page;
when the check cannot run (no Chromium, or $TRANSFORMER_DYNAMICS_NO_BROWSER set) it says so loudly, with how to
run it, and does not fail the work already done. ``check`` alone fails without Chromium.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .browser import INSTALL_HINT, OPT_OUT_ENV, can_install_chromium, check_html, ensure_chromium, find_chromium, opted_out
from .layout import BuildError, find_root, log
from .runner import run_notebooks
from .site import build_html


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m transformer_dynamics.build", description=__doc__.split("::")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "html", "check", "all", "browser"])
    p.add_argument("--profile", default="full", help="run profile: full, ci, colab or a path to a .yml (default full)")
    p.add_argument("--only", action="append", metavar="NN",
                   help="only these notebooks (two-digit prefix or stem; repeat or separate with commas)")
    p.add_argument("--out", default="_build", help="build folder (default _build)")
    p.add_argument("--root", default=None, help="repository root (default: found from the working directory)")
    p.add_argument("--cache-dir", default=None,
                   help="activation cache passed as CACHE_DIR (default $TRANSFORMER_DYNAMICS_CACHE, else the "
                        "notebooks' own default: the user cache dir)")
    p.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds (default none)")
    p.add_argument("--verbose", action="store_true",
                   help="run: stream the notebooks' outputs (the package's progress bars included) to the terminal")
    p.add_argument("--no-progress", action="store_true", help="run: no progress bar over each chapter's cells")
    return p


def _loud(lines: list[str]) -> None:
    bar = "!" * 100
    print("\n".join(["", bar, *("!! " + ln for ln in lines), bar, ""]), file=sys.stderr, flush=True)


def _browser_setup() -> int:
    """``make browser``: find Chromium or install it (Debian + root); elsewhere say what to do. Never fails:
    the check itself (and the tests) fail later if it is still missing."""
    if opted_out():
        log(f"{OPT_OUT_ENV} is set: no Chromium needed, the browser check will be skipped")
        return 0
    try:
        log(f"Chromium for the browser check: {ensure_chromium(install=True)}")
    except BuildError as exc:
        _loud(["NO CHROMIUM: the browser check (and its tests) cannot run on this machine.", str(exc)])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "browser":
        return _browser_setup()
    status = 0
    try:
        root = find_root(args.root)
        if args.command in ("run", "all"):
            rec = run_notebooks(args.profile, root, args.out, args.only, args.cache_dir, args.timeout,
                                verbose=args.verbose, progress=not args.no_progress)
            if rec["failures"]:
                status = 1
                print("\n" + "=" * 100 + f"\n{len(rec['failures'])} notebook(s) failed:\n", file=sys.stderr)
                for msg in rec["failures"]:
                    print(msg + "\n", file=sys.stderr)
        if args.command in ("html", "all"):
            build_html(args.profile, root, args.out)
        if args.command == "all" and (opted_out() or (find_chromium() is None and not can_install_chromium())):
            why = f"{OPT_OUT_ENV} is set" if opted_out() else "no Chromium on this machine"
            _loud([f"THE BROWSER CHECK DID NOT RUN ({why}); the HTML is built in {args.out}/html.",
                   INSTALL_HINT if not opted_out() else f"unset {OPT_OUT_ENV} and run `make check-book`"])
        elif args.command in ("check", "all"):
            rep = check_html(root, args.out, args.only, install=True)
            if rep["failures"]:
                status = 1
                print("\nbrowser check failed:\n  " + "\n  ".join(rep["failures"]), file=sys.stderr)
    except BuildError as exc:
        print(f"[book] ERROR: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
