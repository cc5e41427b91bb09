"""Command line of the book build (run in a checkout of the repository; ``make book`` calls ``all``)::

    python -m transformer_dynamics.build run     --profile ci [--only 02] [--set N=200] [--out _build] [--verbose]
    python -m transformer_dynamics.build run     --profile ci --force   # every chapter, also the unchanged ones
    python -m transformer_dynamics.build html    --profile ci [--set N=200]
    python -m transformer_dynamics.build check   [--only 02]
    python -m transformer_dynamics.build all     --profile full
    python -m transformer_dynamics.build browser   # setup: find or install Chromium for the check

``run`` (and ``all``) executes only the chapters whose notebook, parameters, package source or environment changed
since their last complete run, or whose published outputs are missing or damaged; ``--force`` executes them all.
Each subcommand has its own ``--help``. ``--set NAME=VALUE`` (repeatable; VALUE in YAML: ``N=200``,
``MODELS=[smollm2-135m]``) overrides a parameter in every chapter that declares it: the build runs under a profile
written to ``<out>/profiles/<profile>+NAME=VALUE.yml``, named for what it changes (its executed notebooks,
ledgers and timings live under that name; give ``html`` the same flags).

``all`` exits non-zero when a notebook fails, the HTML does not build or the browser check finds a broken page;
when the check cannot run (no Chromium, or $TRANSFORMER_DYNAMICS_NO_BROWSER set) it says so loudly, with how to
run it, and does not fail the work already done. ``check`` alone fails without Chromium. Every error is one line
(``--traceback`` shows the whole of it); nothing is created before the flags, the profile and the folders check out.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .. import profiles
from ..cli import Parser, add_common, folder, guarded, parse, seconds
from ..parameters import check_count
from .browser import (INSTALL_HINT, OPT_OUT_ENV, can_install_chromium, check_html, ensure_chromium, find_chromium,
                      opted_out)
from .layout import BuildError, find_root, log, out_dir, timings_path
from .notebooks import declared_parameters, notebook_stems, read_notebook
from .runner import run_notebooks
from .site import build_html

PROG = "python -m transformer_dynamics.build"
_SET = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$", re.S)
NO_CHECKOUT = ("the book is built from a checkout of the repository (the installed package has the builder, not the "
               "notebooks): git clone the repository, cd into it and run this again, or pass --root")


def _setting(text: str) -> tuple[str, Any]:
    """An argparse type for ``--set NAME=VALUE``: ``("N", 200)``, ``("MODELS", ["a", "b"])`` (VALUE read as YAML)."""
    m = _SET.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"give NAME=VALUE with an upper-case parameter name (N=200), got {text!r}")
    name, raw = m[1], m[2]
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"--set {name}: not valid YAML ({getattr(exc, 'problem', exc)}): "
                                         f"{raw!r}") from None
    try:
        return name, check_count(name, profiles._coerce(value), "--set ")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _slug(name: str, value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9._,=-]+", "-", f"{name}={text}")


def set_profile(profile: str, settings: dict[str, Any], out: Path) -> Path:
    """``profile`` with ``settings`` put into its defaults and into every block that sets them, written to
    ``<out>/profiles/<profile name>+NAME=VALUE....yml`` (the same path for the same settings); returns it."""
    data = profiles.read_profile(profile)
    data.setdefault(profiles.DEFAULTS_KEY, {})
    for name, value in settings.items():
        data[profiles.DEFAULTS_KEY][name] = value
        for block in data.values():
            if name in block:
                block[name] = value
    base = Path(str(profile)).stem if Path(str(profile)).suffix in (".yml", ".yaml") else str(profile)
    stem = "+".join([base, *(_slug(k, v) for k, v in settings.items())])
    path = out / "profiles" / f"{stem}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# {profile} with {', '.join(f'{k}={v!r}' for k, v in settings.items())} (build --set)\n" \
           + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("::")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p, traceback=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,html,check,all,browser}")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--out", type=folder, default="_build", help="build folder (default _build)")
    where.add_argument("--root", type=folder, default=None,
                       help="repository root (default: found from the working directory)")
    where.add_argument("--traceback", action="store_true", help="on an error, show the whole traceback")
    only = argparse.ArgumentParser(add_help=False)
    only.add_argument("--only", action="append", metavar="NN",
                      help="only these notebooks (two-digit prefix or stem; repeat or separate with commas)")
    prof = argparse.ArgumentParser(add_help=False)
    prof.add_argument("--profile", default="full",
                      help="run profile: full, ci, colab or a path to a .yml (default full)")
    prof.add_argument("--set", type=_setting, action="append", default=[], metavar="NAME=VALUE", dest="settings",
                      help="override a parameter in every chapter that declares it (VALUE in YAML: N=200, "
                           "MODELS=[smollm2-135m]); repeat for several")
    execute = argparse.ArgumentParser(add_help=False)
    execute.add_argument("--cache-dir", type=folder, default=None,
                         help="activation cache passed as CACHE_DIR (default $TRANSFORMER_DYNAMICS_CACHE, else the "
                              "notebooks' own default: the user cache dir)")
    execute.add_argument("--timeout", type=seconds, default=None, help="per-cell timeout in seconds (default none)")
    execute.add_argument("--verbose", action="store_true",
                         help="stream the notebooks' outputs (the package's progress bars included) to the terminal")
    execute.add_argument("--no-progress", action="store_true", help="no progress bar over each chapter's cells")
    execute.add_argument("--force", action="store_true",
                         help="execute every chapter, also those whose notebook, parameters, package source and "
                              "environment are unchanged since their last complete run (default: reuse those)")
    helps = {"run": "execute the chapter notebooks with papermill under a profile",
             "html": "stage the executed notebooks and build the HTML book with Jupyter Book",
             "check": "check the built HTML in headless Chromium (every page, image, error output)",
             "all": "run, html and check",
             "browser": "find Chromium for the check, or install it (Debian, as root)"}
    publish = argparse.ArgumentParser(add_help=False)
    publish.add_argument("--publish-incomplete", action="store_true",
                         help="stage a chapter whose last run did not finish (killed, interrupted or failed) "
                              "instead of refusing (its last complete notebook and ledger are what is staged)")
    parents = {"run": [prof, only, execute, where], "html": [prof, publish, where], "check": [only, where],
               "all": [prof, only, execute, publish, where], "browser": []}
    for name, parts in parents.items():
        sp = sub.add_parser(name, parents=parts, help=helps[name], description=helps[name],
                            prog=f"{PROG} {name}")
        if not parts:
            sp.add_argument("--traceback", action="store_true", help="on an error, show the whole traceback")
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


def _prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """Check the flags against the checkout before anything is created: the root, ``--out`` (not a file), the
    profile (readable), ``--only`` and ``--set`` (names some chapter declares). Returns ``(root, out)`` and puts the
    profile to run under into ``args.profile``."""
    try:
        root = find_root(args.root)
    except BuildError as exc:
        raise BuildError(f"{exc}; {NO_CHECKOUT}" if args.root is None else str(exc)) from None
    out = out_dir(root, args.out)
    for d in (out, *out.parents):
        if d.exists() and not d.is_dir():
            raise BuildError(f"--out {args.out}: {d} is a file, not a folder; give a folder")
    nb_dir = root / "notebooks"
    if args.command in ("run", "all"):  # (check's --only selects built pages)
        notebook_stems(nb_dir, args.only)
    if hasattr(args, "profile"):
        profiles.read_profile(args.profile)  # a missing file, a bad name, a YAML error: here, before any folder
        settings = dict(args.settings)
        if settings:
            declared: set[str] = set()
            for stem in notebook_stems(nb_dir):
                declared |= set(declared_parameters(read_notebook(nb_dir, stem)))
            unknown = sorted(set(settings) - declared)
            if unknown:
                raise BuildError(f"--set: no chapter declares {', '.join(unknown)}; the parameters are those of the "
                                 "notebooks' parameters cells (papermill --help-notebook notebooks/NN_name.ipynb)")
            args.profile = str(set_profile(args.profile, settings, out))
            log(f"profile {args.profile} (with --set {', '.join(f'{k}={v!r}' for k, v in settings.items())})")
        _check_timings(timings_path(out, args.profile))
    return root, out


def _check_timings(path: Path) -> None:
    """A timings file the build wrote (``{"notebooks": {stem: {"seconds": float, "ok": bool, ...}}}``) or none;
    anything else (truncated, edited) is a BuildError naming it: it feeds the progress estimate and the
    benchmarks page."""
    if not path.is_file():
        return
    fix = "delete it (it only holds the previous run's times) and run again"
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BuildError(f"{path} is not readable JSON ({exc}); {fix}") from None
    entries = rec.get("notebooks", {}) if isinstance(rec, dict) else None
    if not isinstance(entries, dict):
        raise BuildError(f"{path} is not a timings file (no 'notebooks' mapping); {fix}")
    for stem, e in entries.items():
        ok = isinstance(e, dict) and (e.get("seconds") is None or (isinstance(e.get("seconds"), (int, float))
                                                                   and not isinstance(e.get("seconds"), bool)))
        if not ok or not isinstance(e.get("ok", False), bool):
            raise BuildError(f"{path}: the entry of {stem!r} is not {{'seconds': number, 'ok': true/false, ...}}; "
                             f"{fix}")


def _build(args: argparse.Namespace) -> int:
    if args.command == "browser":
        return _browser_setup()
    status = 0
    root, out = _prepare(args)
    if args.command in ("run", "all"):
        rec = run_notebooks(args.profile, root, out, args.only, args.cache_dir, args.timeout,
                            verbose=args.verbose, progress=not args.no_progress, force=args.force)
        if rec["failures"]:
            status = 1
            print("\n" + "=" * 100 + f"\n{len(rec['failures'])} notebook(s) failed:\n", file=sys.stderr)
            for msg in rec["failures"]:
                print(msg + "\n", file=sys.stderr)
    if args.command in ("html", "all"):
        build_html(args.profile, root, out, publish_incomplete=args.publish_incomplete)
    if args.command == "all" and (opted_out() or (find_chromium() is None and not can_install_chromium())):
        why = f"{OPT_OUT_ENV} is set" if opted_out() else "no Chromium on this machine"
        _loud([f"THE BROWSER CHECK DID NOT RUN ({why}); the HTML is built in {out}/html.",
               INSTALL_HINT if not opted_out() else f"unset {OPT_OUT_ENV} and run `make check-book`"])
    elif args.command in ("check", "all"):
        rep = check_html(root, out, args.only, install=True)
        if rep["failures"]:
            status = 1
            print("\nbrowser check failed:\n  " + "\n  ".join(rep["failures"]), file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(_parser(), argv)
    if isinstance(args, int):
        return args
    return guarded(lambda: _build(args), traceback=args.traceback, full=(BuildError,))


if __name__ == "__main__":
    sys.exit(main())
