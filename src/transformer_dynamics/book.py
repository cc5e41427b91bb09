"""Build the book: execute the notebooks under a run profile, assemble the Jupyter Book, check it in a browser.

Command line (run from the repository root; ``make book`` calls ``all``)::

    python -m transformer_dynamics.book run   --profile ci [--only 02] [--out _build]
    python -m transformer_dynamics.book html  --profile ci
    python -m transformer_dynamics.book check [--install]
    python -m transformer_dynamics.book all   --profile full

``run``
    Executes every ``notebooks/NN_*.ipynb`` (from its paired ``.py`` when that is newer) with papermill into
    ``<out>/executed/<profile>/NN_*.ipynb`` - the committed notebooks are never written - with the profile's
    parameters (:mod:`transformer_dynamics.profiles`, filtered against the notebook's ``parameters`` cell),
    ``LEDGER_DIR=<out>/ledger/<profile>`` and the cache dir. Kernel ``python3``, working directory
    ``notebooks/`` (as when a reader opens the notebook in Jupyter). Every notebook runs; the failures are
    reported together at the end (notebook, failing cell, error) and make the exit status non-zero.
    Timings go to ``<out>/timings-<profile>.json``.
``html``
    Stages ``<out>/src`` (``_config.yml``, ``_toc.yml``, ``book/``, the executed notebooks under
    ``notebooks/``, the generated ledger and benchmarks pages) and runs ``jupyter-book build`` with execution
    off; the site lands in ``<out>/html``.
``check``
    Opens every page of ``<out>/html`` in headless Chromium (DevTools protocol, no extra Python package) and
    fails on missing or broken images, a chapter without a figure, an error output in a notebook cell, or a
    chapter whose Colab button does not point at its notebook in the repository. Screenshots of the chapters go
    to ``<out>/screenshots/``, the findings to ``<out>/check-report.json``.
"""

from __future__ import annotations

import argparse
import ast
import base64
import functools
import http.server
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from . import ledger as ledger_mod
from .profiles import filter_parameters, load_profile

__all__ = [
    "find_root", "notebook_stems", "read_notebook", "parameters_cell", "declared_parameters",
    "notebook_parameters", "run_notebooks", "toc_files", "repository_url", "render_ledger_page",
    "render_benchmarks_page", "json_to_markdown", "stage", "build_html", "find_chromium", "ensure_chromium",
    "check_html", "main",
]

NOTEBOOK_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_]+$")
LEDGER_MARKER = "<!-- ledger-tables -->"
BENCHMARKS_MARKER = "<!-- benchmark-tables -->"
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class BookError(RuntimeError):
    """A step of the book build failed (the message says which and what to do)."""


def _log(msg: str) -> None:
    print(f"[book] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------------------
# Locating things


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root: the first of ``start`` (default: the working directory) and its parents that holds
    ``_config.yml`` and ``notebooks/``."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "_config.yml").is_file() and (d / "notebooks").is_dir():
            return d
    raise BookError(f"no repository root (a folder with _config.yml and notebooks/) at or above {here}; "
                    "run from the repository root or pass --root")


def _parse_only(only: Iterable[str] | None) -> set[str] | None:
    if not only:
        return None
    out = set()
    for item in only:
        out.update(s.strip() for s in str(item).split(",") if s.strip())
    return out


def _selected(stem: str, only: set[str] | None) -> bool:
    return only is None or stem in only or stem[:2] in only or any(stem.startswith(o) for o in only)


def notebook_stems(notebooks_dir: str | os.PathLike, only: Iterable[str] | None = None) -> list[str]:
    """Stems ``NN_name`` of the chapter notebooks in ``notebooks_dir`` (from ``.py`` or ``.ipynb``), sorted.
    ``only``: two-digit prefixes or stems to keep (``["02", "05"]`` or ``["02,05"]``)."""
    d = Path(notebooks_dir)
    stems = {p.stem for p in d.glob("[0-9][0-9]_*") if p.suffix in (".py", ".ipynb") and NOTEBOOK_RE.match(p.stem)}
    sel = _parse_only(only)
    out = sorted(s for s in stems if _selected(s, sel))
    if sel is not None and not out:
        raise BookError(f"--only {sorted(sel)} matches none of the notebooks {sorted(stems)} in {d}")
    return out


def read_notebook(notebooks_dir: str | os.PathLike, stem: str):
    """The notebook ``stem`` as an ``nbformat`` node, read from the newer of its ``.py`` (jupytext percent) and
    ``.ipynb`` files; outputs are cleared, so nothing committed leaks into an execution."""
    import jupytext

    d = Path(notebooks_dir)
    py, ipynb = d / f"{stem}.py", d / f"{stem}.ipynb"
    candidates = [p for p in (py, ipynb) if p.is_file()]
    if not candidates:
        raise BookError(f"notebook {stem} not found in {d} (neither .py nor .ipynb)")
    src = max(candidates, key=lambda p: (p.stat().st_mtime, p.suffix == ".py"))
    nb = jupytext.read(src)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    return nb


def parameters_cell(nb) -> Any:
    """The code cell tagged ``parameters`` (papermill's convention); ValueError if there is none."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("the notebook has no code cell tagged 'parameters'; add `# %% tags=[\"parameters\"]` "
                     "before the cell that assigns MODELS, N, ...")


def declared_parameters(nb) -> dict[str, str]:
    """Names assigned at the top level of the ``parameters`` cell, mapped to the source of their default."""
    cell = parameters_cell(nb)
    src = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
    tree = ast.parse(src)
    out: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for t in targets:
            names = t.elts if isinstance(t, ast.Tuple) else [t]
            for n in names:
                if isinstance(n, ast.Name):
                    out[n.id] = ast.get_source_segment(src, node.value) or ""
    return out


def notebook_parameters(profile: str, nb, stem: str, extra: dict[str, Any] | None = None
                        ) -> tuple[dict[str, Any], list[str]]:
    """The profile's parameters for notebook ``stem`` plus ``extra`` (LEDGER_DIR, CACHE_DIR), kept only where the
    notebook's parameters cell declares them: returns ``(parameters, dropped_names)``."""
    params = load_profile(profile, stem)
    params.update(extra or {})
    declared = declared_parameters(nb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return filter_parameters(params, declared, notebook=stem)


# ----------------------------------------------------------------------------------------------------------
# run


def _executed_dir(out: Path, profile: str) -> Path:
    return out / "executed" / _profile_name(profile)


def _ledger_dir(out: Path, profile: str) -> Path:
    return out / "ledger" / _profile_name(profile)


def _profile_name(profile: str) -> str:
    p = Path(str(profile))
    return p.stem if p.suffix in (".yml", ".yaml") else str(profile)


def _format_failure(stem: str, exc: BaseException) -> str:
    lines = [f"notebook {stem} FAILED"]
    src = getattr(exc, "source", None)
    if src is not None:
        lines.append(f"  in cell {getattr(exc, 'cell_index', '?')} (execution count {getattr(exc, 'exec_count', '?')}):")
        lines += ["    | " + s for s in str(src).splitlines()]
        tb = getattr(exc, "traceback", None) or []
        tb_text = ANSI_RE.sub("", "\n".join(tb))
        tail = tb_text.splitlines()[-25:]
        lines.append("  traceback (last lines):")
        lines += ["    " + s for s in tail]
        lines.append(f"  error: {getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}")
    else:
        lines.append(f"  error: {type(exc).__name__}: {ANSI_RE.sub('', str(exc))}")
    return "\n".join(lines)


def run_notebooks(profile: str = "full", root: str | os.PathLike | None = None, out: str | os.PathLike = "_build",
                  only: Iterable[str] | None = None, cache_dir: str | os.PathLike | None = None,
                  timeout: float | None = None, kernel: str = "python3", log_output: bool = False
                  ) -> dict[str, Any]:
    """Execute the chapter notebooks with papermill under ``profile`` (see the module docstring).

    Returns the timings record ``{"profile", "notebooks": {stem: {"seconds", "ok", "error", "parameters",
    "dropped"}}, "failures": [messages]}``; it is also written to ``<out>/timings-<profile>.json``.
    """
    import nbformat
    import papermill as pm

    root = find_root(root)
    out = (root / out) if not Path(out).is_absolute() else Path(out)
    nb_dir = root / "notebooks"
    pname = _profile_name(profile)
    exe_dir, led_dir = _executed_dir(out, pname), _ledger_dir(out, pname)
    inputs = out / "executed" / ".inputs" / pname
    for d in (exe_dir, led_dir, inputs):
        d.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or os.environ.get("TRANSFORMER_DYNAMICS_CACHE")
    extra: dict[str, Any] = {"LEDGER_DIR": str(led_dir)}
    if cache_dir:
        extra["CACHE_DIR"] = str(Path(cache_dir).resolve())

    timings_path = out / f"timings-{pname}.json"
    record: dict[str, Any] = {"profile": pname, "notebooks": {}}
    if timings_path.is_file() and only:
        try:
            record["notebooks"] = json.loads(timings_path.read_text()).get("notebooks", {})
        except (OSError, ValueError):
            pass
    failures: list[str] = []
    stems = notebook_stems(nb_dir, only)
    if not stems:
        raise BookError(f"no notebooks NN_*.py / NN_*.ipynb in {nb_dir}")

    env_backup = dict(os.environ)
    os.environ["TRANSFORMER_DYNAMICS_LEDGER"] = str(led_dir)   # for notebooks that leave LEDGER_DIR to the default
    os.environ["TRANSFORMER_DYNAMICS_PROFILE"] = pname
    os.environ.setdefault("TQDM_DISABLE", "1")                 # progress bars are noise in a book
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                          "ignore:IProgress not found"]))
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    os.environ.pop("MPLBACKEND", None)                         # keep the inline backend: figures must be outputs
    t_all = time.perf_counter()
    try:
        for stem in stems:
            entry: dict[str, Any] = {"seconds": None, "ok": False, "error": None}
            record["notebooks"][stem] = entry
            try:
                nb = read_notebook(nb_dir, stem)
                params, dropped = notebook_parameters(profile, nb, stem, extra)
                entry.update(parameters=params, dropped=dropped)
                if dropped:
                    _log(f"{stem}: WARNING: profile {pname} sets {dropped}, which its parameters cell does not "
                         "declare; not passed")
                in_path = inputs / f"{stem}.ipynb"
                nbformat.write(nb, in_path)
                (led_dir / f"{stem}.json").unlink(missing_ok=True)
                _log(f"{stem}: running ({pname}: {', '.join(f'{k}={v!r}' for k, v in params.items() if k not in extra)})")
                t0 = time.perf_counter()
                try:
                    pm.execute_notebook(str(in_path), str(exe_dir / f"{stem}.ipynb"), parameters=params,
                                        kernel_name=kernel, cwd=str(nb_dir), progress_bar=False, log_output=log_output,
                                        execution_timeout=timeout)
                finally:
                    entry["seconds"] = round(time.perf_counter() - t0, 2)
                entry["ok"] = True
                _log(f"{stem}: ok in {entry['seconds']:.1f} s")
            except Exception as exc:  # one failing notebook must not stop the others
                msg = _format_failure(stem, exc)
                entry["error"] = msg
                failures.append(msg)
                _log(msg)
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    record["total_seconds"] = round(time.perf_counter() - t_all, 2)
    record["failures"] = failures
    timings_path.parent.mkdir(parents=True, exist_ok=True)
    timings_path.write_text(json.dumps(record, indent=1, default=str))
    _log(f"{len(stems) - len(failures)}/{len(stems)} notebooks ok in {record['total_seconds']:.0f} s "
         f"(timings: {timings_path})")
    return record


# ----------------------------------------------------------------------------------------------------------
# Pages generated at build time


def toc_files(toc_path: str | os.PathLike) -> list[str]:
    """Every document in a Jupyter Book ``_toc.yml`` (root first, then in order), as written (no suffix)."""
    with open(toc_path) as fh:
        toc = yaml.safe_load(fh)
    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    files.append(node[key])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return files


def repository_url(config_path: str | os.PathLike) -> str:
    """``repository.url`` of a Jupyter Book ``_config.yml`` (the one place the repository is named)."""
    with open(config_path) as fh:
        cfg = yaml.safe_load(fh) or {}
    url = (cfg.get("repository") or {}).get("url")
    if not url:
        raise ValueError(f"{config_path} has no repository.url")
    return str(url).rstrip("/")


def _notebook_title(path: Path) -> str | None:
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell.get("source", []))
            m = re.search(r"^#\s+(.+)$", src, re.M)
            if m:
                return m.group(1).strip()
    return None


def render_ledger_page(template: str, ledger_dir: str | os.PathLike, profile: str | None = None,
                       titles: dict[str, str] | None = None) -> str:
    """The ledger page: ``template`` (book/ledger.md) with its marker replaced by the tables of every ledger
    JSON in ``ledger_dir`` (appended when the template has no marker)."""
    d = Path(ledger_dir)
    ledgers = ledger_mod.load_all(d) if d.is_dir() else []
    titles = dict(titles or {})
    body = ledger_mod.to_markdown(ledgers, profile=profile, titles=titles)
    if LEDGER_MARKER in template:
        return template.replace(LEDGER_MARKER, body)
    return template.rstrip() + "\n\n" + body


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(not isinstance(x, (dict, list)) for x in v.values()):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _is_records(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _records_table(records: list[dict[str, Any]], first: str | None = None) -> list[str]:
    rows = [_flatten(r) for r in records]
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    if first:
        cols = [first] + [c for c in cols if c != first]
    cell = lambda v: ledger_mod._md_cell(ledger_mod.format_value(v) if not isinstance(v, str) else v)  # noqa: E731
    lines = ["| " + " | ".join(ledger_mod._md_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines + [""]


def json_to_markdown(obj: Any, level: int = 3, _depth: int = 0) -> str:
    """Render arbitrary benchmark JSON as markdown tables: scalars of a dict as a key/value table, a list of
    dicts (or a dict of dicts) as a table with a row per item, nested structures as sub-sections."""
    if _depth > 4:
        return f"`{ledger_mod._md_cell(json.dumps(obj)[:200])}`\n"
    lines: list[str] = []
    if _is_records(obj):
        return "\n".join(_records_table(obj)) + "\n"
    if not isinstance(obj, dict):
        return ledger_mod._md_cell(ledger_mod.format_value(obj)) + "\n"
    scalars = {k: v for k, v in obj.items() if not isinstance(v, (dict, list)) or
               (isinstance(v, list) and not _is_records(v) and all(not isinstance(x, (dict, list)) for x in v))}
    if scalars:
        lines += ["| key | value |", "|---|---|"]
        for k, v in scalars.items():
            text = v if isinstance(v, str) else ledger_mod.format_value(v)
            lines.append(f"| {ledger_mod._md_cell(k)} | {ledger_mod._md_cell(text)} |")
        lines.append("")
    for k, v in obj.items():
        if k in scalars:
            continue
        lines += [f"{'#' * min(level, 6)} {k}", ""]
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()) and \
                all(not isinstance(y, (dict, list)) for x in v.values() for y in _flatten(x).values()):
            lines += _records_table([{"name": name, **row} for name, row in v.items()], first="name")
        else:
            lines.append(json_to_markdown(v, level + 1, _depth + 1))
    return "\n".join(lines) + "\n"


def render_benchmarks_page(template: str, results_dir: str | os.PathLike,
                           timings: dict[str, Any] | None = None) -> str:
    """The benchmarks page: every ``*.json`` in ``results_dir`` as tables (one section per file), then the
    notebook run times of this build."""
    d = Path(results_dir)
    parts: list[str] = []
    files = sorted(d.glob("*.json")) if d.is_dir() else []
    if not files:
        parts.append(":::{note}\nNo benchmark results yet: run `make benchmarks` (writes "
                     "`benchmarks/results/*.json`).\n:::\n")
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            parts.append(f"## {f.stem}\n\n:::{{warning}}\n`{f.name}` could not be read: {exc}\n:::\n")
            continue
        parts.append(f"## {f.stem}\n\n*From `benchmarks/results/{f.name}`.*\n\n{json_to_markdown(data)}")
    if timings and timings.get("notebooks"):
        parts.append(f"## Notebook run times (profile `{timings.get('profile', '')}`)\n")
        rows = [{"notebook": k, "seconds": v.get("seconds"), "ok": "✓" if v.get("ok") else "✗"}
                for k, v in timings["notebooks"].items()]
        parts.append("\n".join(_records_table(rows)))
    body = "\n".join(parts)
    if BENCHMARKS_MARKER in template:
        return template.replace(BENCHMARKS_MARKER, body)
    return template.rstrip() + "\n\n" + body


# ----------------------------------------------------------------------------------------------------------
# html


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def stage(profile: str = "full", root: str | os.PathLike | None = None, out: str | os.PathLike = "_build"
          ) -> Path:
    """Assemble the book's source in ``<out>/src`` and return it (see the module docstring). Chapters without
    an executed copy get the committed notebook (no outputs) and a warning; ``check`` then fails on them."""
    root = find_root(root)
    out = (root / out) if not Path(out).is_absolute() else Path(out)
    pname = _profile_name(profile)
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, src / name)
    if (root / "book").is_dir():
        shutil.copytree(root / "book", src / "book")
    exe = _executed_dir(out, pname)
    (src / "notebooks").mkdir()
    titles: dict[str, str] = {}
    missing = []
    for entry in toc_files(root / "_toc.yml"):
        if not entry.startswith("notebooks/"):
            continue
        stem = Path(entry).name
        executed = exe / f"{stem}.ipynb"
        if executed.is_file():
            shutil.copy2(executed, src / "notebooks" / f"{stem}.ipynb")
        elif (root / "notebooks" / f"{stem}.ipynb").is_file():
            missing.append(stem)
            shutil.copy2(root / "notebooks" / f"{stem}.ipynb", src / "notebooks" / f"{stem}.ipynb")
        else:
            missing.append(stem)
            continue
        titles[stem] = _notebook_title(src / "notebooks" / f"{stem}.ipynb") or stem
    if missing:
        _log(f"WARNING: no executed copy under {exe} for {missing}; run `book run --profile {pname}` first "
             "(staged without outputs)")
    book_dir = src / "book"
    book_dir.mkdir(exist_ok=True)
    template = (root / "book" / "ledger.md").read_text() if (root / "book" / "ledger.md").is_file() \
        else "# Reproduction ledger\n"
    led_dir = _ledger_dir(out, pname)
    page = render_ledger_page(template, led_dir, profile=pname, titles=titles)
    # the ledger holds notebook stems; point each section at its chapter
    for stem, title in titles.items():
        page = page.replace(f"## {title}\n", f"## {title}\n\nFrom {{doc}}`../notebooks/{stem}`.\n", 1)
    _write_if_changed(book_dir / "ledger.md", page)
    template = (root / "book" / "benchmarks.md").read_text() if (root / "book" / "benchmarks.md").is_file() \
        else "# Benchmarks\n"
    timings_path = out / f"timings-{pname}.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else None
    _write_if_changed(book_dir / "benchmarks.md",
                      render_benchmarks_page(template, root / "benchmarks" / "results", timings))
    return src


def build_html(profile: str = "full", root: str | os.PathLike | None = None, out: str | os.PathLike = "_build"
               ) -> Path:
    """Stage the sources and run ``jupyter-book build`` (execution off); returns ``<out>/html``."""
    root = find_root(root)
    out_p = (root / out) if not Path(out).is_absolute() else Path(out)
    src = stage(profile, root, out)
    jb_out = out_p / "jb"
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(src), "--path-output", str(jb_out), "--builder", "html", "--keep-going"]
    _log("building the HTML: " + " ".join(cmd[3:]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    log = (proc.stdout or "") + (proc.stderr or "")
    (out_p / "jupyter-book.log").write_text(log)
    built = jb_out / "_build" / "html"
    if proc.returncode != 0 or not (built / "index.html").is_file():
        tail = "\n".join(log.splitlines()[-40:])
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}); full log in "
                        f"{out_p / 'jupyter-book.log'}:\n{tail}")
    warnings_ = [ln for ln in log.splitlines() if "WARNING" in ln]
    html_dir = out_p / "html"
    if html_dir.exists():
        shutil.rmtree(html_dir)
    shutil.copytree(built, html_dir)
    _log(f"HTML in {html_dir} ({time.perf_counter() - t0:.0f} s, {len(warnings_)} Sphinx warnings; "
         f"log: {out_p / 'jupyter-book.log'})")
    for ln in warnings_[:20]:
        _log("  " + ANSI_RE.sub("", ln).strip())
    return html_dir


# ----------------------------------------------------------------------------------------------------------
# Browser check: headless Chromium over the DevTools protocol (a minimal stdlib websocket client)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("headless Chromium is needed for the browser check: `sudo apt-get install -y chromium "
                "chromium-driver` (Debian/Ubuntu), or set $CHROMIUM to a Chrome/Chromium binary; "
                "`book check --install` does the apt-get install when run as root")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$CHROMIUM``, else the first of chromium, chromium-browser,
    google-chrome on PATH (or in /usr/bin)."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CHROMIUM_NAMES:
        p = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if p:
            return p
    return None


def ensure_chromium(install: bool = False) -> str:
    """A Chromium binary; installs Debian's ``chromium`` with apt-get when missing and ``install`` is true or
    this runs as root with ``CI=true``. Raises :class:`BookError` with the install command otherwise."""
    found = find_chromium()
    if found:
        return found
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if install or (is_root and os.environ.get("CI", "").lower() == "true"):
        if not shutil.which("apt-get"):
            raise BookError("no apt-get here; " + INSTALL_HINT)
        prefix = [] if is_root else (["sudo", "-n"] if shutil.which("sudo") else None)
        if prefix is None:
            raise BookError("installing Chromium needs root; " + INSTALL_HINT)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _log("installing chromium with apt-get ...")
        for cmd in (prefix + ["apt-get", "update", "-q"],
                    prefix + ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise BookError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}\n" + INSTALL_HINT)
        found = find_chromium()
        if found:
            return found
    raise BookError(INSTALL_HINT)


class _WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol on 127.0.0.1: text frames, client masking."""

    def __init__(self, url: str, timeout: float = 30.0):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        if not m:
            raise BookError(f"unexpected DevTools websocket URL {url!r}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BookError("DevTools closed the websocket handshake")
            resp += chunk
        head, self._buf = resp.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise BookError(f"DevTools refused the websocket: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise BookError("DevTools websocket closed")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        head = bytes([0x81])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise BookError("DevTools closed the websocket")
            if opcode == 0x9:  # ping -> pong
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)
                continue
            if opcode in (0x1, 0x2, 0x0):
                parts.append(data)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Chromium:
    """A headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str, width: int = 1280, height: int = 1600, timeout: float = 60.0):
        self.tmp = tempfile.mkdtemp(prefix="td-chromium-")
        self.timeout = timeout
        args = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.tmp}", "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1", f"--window-size={width},{height}", "about:blank"]
        self.stderr = open(Path(self.tmp) / "stderr.log", "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.stderr)
        port_file = Path(self.tmp) / "DevToolsActivePort"
        t0 = time.time()
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.time() - t0 > timeout:
                self.stderr.flush()
                err = (Path(self.tmp) / "stderr.log").read_text()[-2000:]
                self.close()
                raise BookError(f"Chromium did not start ({binary}):\n{err}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        base = f"http://127.0.0.1:{port}"
        targets = json.loads(urllib.request.urlopen(f"{base}/json/list", timeout=timeout).read())
        pages = [t for t in targets if t.get("type") == "page"]
        if not pages:
            req = urllib.request.Request(f"{base}/json/new?about:blank", method="PUT")
            pages = [json.loads(urllib.request.urlopen(req, timeout=timeout).read())]
        self.ws = _WebSocket(pages[0]["webSocketDebuggerUrl"], timeout=timeout)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        mid = self._id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise BookError(f"DevTools {method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.time() + (timeout or self.timeout)
        while True:
            for i, ev in enumerate(self.events):
                if ev["method"] == name:
                    del self.events[: i + 1]
                    return ev
            self.events.clear()
            if time.time() > deadline:
                raise BookError(f"timed out waiting for {name}")
            self.ws.sock.settimeout(max(0.1, deadline - time.time()))
            try:
                msg = json.loads(self.ws.recv())
            except socket.timeout:
                raise BookError(f"timed out waiting for {name}") from None
            finally:
                self.ws.sock.settimeout(self.timeout)
            if "method" in msg:
                self.events.append(msg)

    def navigate(self, url: str) -> None:
        self.events.clear()
        res = self.call("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise BookError(f"could not load {url}: {res['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True, "timeout": int(self.timeout * 1000)})
        if "exceptionDetails" in res:
            raise BookError(f"page script failed: {res['exceptionDetails'].get('text')} "
                            f"{res['exceptionDetails'].get('exception', {}).get('description', '')}")
        return res.get("result", {}).get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


PAGE_PROBE = r"""
(async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => (i.complete && i.naturalWidth > 0) ? null : new Promise(r => {
      i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 15000);
      if (i.complete) r(); })));
  const main = document.querySelector('main') || document.body;
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                     .map(i => i.getAttribute('src') || '(no src)');
  const figures = Array.from(main.querySelectorAll('.cell_output img, .cell_output svg, figure img, .cell_output canvas'))
      .filter(e => !e.closest('button, .copybtn, .headerbtn, .dropdown-menu'))
      .filter(e => !(e.tagName === 'IMG' && (e.getAttribute('src') || '').includes('_static/'))).length;
  const errors = Array.from(main.querySelectorAll('.output.traceback, .cell_output .traceback, .output.error'))
                      .map(e => e.innerText.slice(-600));
  Array.from(main.querySelectorAll('.cell_output, .output')).forEach(e => {
      const t = e.innerText;
      if (/Traceback \(most recent call last\)/.test(t) && !errors.some(x => t.endsWith(x)))
          errors.push(t.slice(-600)); });
  if (/An Exception was encountered at/.test(main.innerText) || document.getElementById('papermill-error-cell'))
      errors.push('papermill: an exception was encountered while executing this notebook');
  const colab = Array.from(document.querySelectorAll('a[href*="colab.research.google.com"]')).map(a => a.href);
  const first = main.querySelector('.cell_output img, figure img');
  if (first) first.scrollIntoView({block: 'center'});
  return {title: document.title, images: imgs.length, broken, figures, errors: Array.from(new Set(errors)), colab};
})()
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def check_html(root: str | os.PathLike | None = None, out: str | os.PathLike = "_build",
               only: Iterable[str] | None = None, install: bool = False,
               chapters_need_figures: bool = True) -> dict[str, Any]:
    """Load every page of the book in headless Chromium and check it (see the module docstring).

    Returns ``{"pages": {doc: findings}, "failures": [messages], "screenshots": [paths]}`` (also written to
    ``<out>/check-report.json``); raises :class:`BookError` if Chromium is missing (with how to install it).
    """
    root = find_root(root)
    out = (root / out) if not Path(out).is_absolute() else Path(out)
    html_dir = out / "html"
    if not (html_dir / "index.html").is_file():
        raise BookError(f"no built book in {html_dir}; run `book html` first")
    binary = ensure_chromium(install)
    repo = repository_url(root / "_config.yml")
    m = re.match(r"https?://github\.com/([^/]+)/([^/]+?)(?:\.git)?$", repo)
    org_repo = f"{m.group(1)}/{m.group(2)}" if m else repo
    sel = _parse_only(only)
    docs = toc_files(root / "_toc.yml")
    shots = out / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"chromium": binary, "pages": {}, "failures": [], "screenshots": []}
    server, base = _serve(html_dir)
    browser = _Chromium(binary)
    try:
        for doc in docs:
            is_chapter = doc.startswith("notebooks/")
            if is_chapter and not _selected(Path(doc).name, sel):
                continue
            page = html_dir / f"{doc}.html"
            fails: list[str] = []
            if not page.is_file():
                report["failures"].append(f"{doc}: page {page} was not built")
                continue
            browser.navigate(f"{base}/{doc}.html")
            found = browser.evaluate(PAGE_PROBE) or {}
            if found.get("broken"):
                fails.append(f"{len(found['broken'])} missing or broken image(s): {found['broken'][:5]}")
            if is_chapter and chapters_need_figures and not found.get("figures"):
                fails.append("no figure in the cell outputs (was the notebook executed?)")
            for err in found.get("errors", []):
                fails.append("error output: " + " ".join(err.split())[-300:])
            if is_chapter:
                want = f"colab.research.google.com/github/{org_repo}/blob/"
                links = found.get("colab", [])
                if not any(want in u and u.endswith(f"/{doc}.ipynb") and "/./" not in u for u in links):
                    fails.append(f"no Colab button pointing at {doc}.ipynb in {repo} (found {links})")
                shot = shots / f"{Path(doc).name}.png"
                browser.screenshot(shot)
                report["screenshots"].append(str(shot))
            found["failures"] = fails
            report["pages"][doc] = found
            report["failures"] += [f"{doc}: {f}" for f in fails]
            _log(f"check {doc}: {found.get('images', 0)} images, {found.get('figures', 0)} figures"
                 + (" - " + "; ".join(fails) if fails else " - ok"))
    finally:
        browser.close()
        server.shutdown()
    (out / "check-report.json").write_text(json.dumps(report, indent=1))
    n_ok = len(report["pages"]) - sum(bool(p["failures"]) for p in report["pages"].values())
    _log(f"browser check: {n_ok}/{len(report['pages'])} pages ok; screenshots in {shots}")
    return report


# ----------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m transformer_dynamics.book", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "html", "check", "all"])
    p.add_argument("--profile", default="full", help="run profile: full, ci, colab or a path to a .yml (default full)")
    p.add_argument("--only", action="append", metavar="NN",
                   help="only these notebooks (two-digit prefix or stem; repeat or separate with commas)")
    p.add_argument("--out", default="_build", help="build folder (default _build)")
    p.add_argument("--root", default=None, help="repository root (default: found from the working directory)")
    p.add_argument("--cache-dir", default=None,
                   help="activation cache passed as CACHE_DIR (default $TRANSFORMER_DYNAMICS_CACHE, else the "
                        "notebooks' own default: the user cache dir)")
    p.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds (default none)")
    p.add_argument("--verbose", action="store_true", help="run: stream the notebooks' outputs to the log")
    p.add_argument("--install", action="store_true", help="check: apt-get install chromium if it is missing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    status = 0
    try:
        root = find_root(args.root)
        if args.command in ("run", "all"):
            rec = run_notebooks(args.profile, root, args.out, args.only, args.cache_dir, args.timeout,
                                log_output=args.verbose)
            if rec["failures"]:
                status = 1
                print("\n" + "=" * 100 + f"\n{len(rec['failures'])} notebook(s) failed:\n", file=sys.stderr)
                for msg in rec["failures"]:
                    print(msg + "\n", file=sys.stderr)
        if args.command in ("html", "all"):
            build_html(args.profile, root, args.out)
        if args.command in ("check", "all"):
            rep = check_html(root, args.out, args.only, install=args.install)
            if rep["failures"]:
                status = 1
                print("\nbrowser check failed:\n  " + "\n  ".join(rep["failures"]), file=sys.stderr)
    except BookError as exc:
        print(f"[book] ERROR: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
