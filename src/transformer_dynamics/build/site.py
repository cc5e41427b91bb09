"""The site: stage the book's sources in ``<out>/src`` and build them with Jupyter Book into ``<out>/html``.

Staging copies ``_config.yml`` (with the build's banner: profile, models, N; and the footer every page carries:
how to cite, the licence, both read from ``CITATION.cff`` and ``LICENSE``), ``_toc.yml``, ``book/`` (its
``_static``, the book's CSS, as ``_static``) and the *executed* notebooks under ``notebooks/``, made fit for
readers: papermill's injected-parameters cell folded and without the build machine's folders
(:func:`~.notebooks.clean_injected_cell`), the ``{models}`` placeholders of the figures' captions and alt texts
filled in, and each chapter's ``.py`` (jupytext percent) written next to the ``.ipynb`` the theme offers for
download (``_static/notebooks/``; this module is also the small Sphinx extension that adds it to the download
menu). It renders the generated pages: the ledger (with a CSV per chapter), the benchmarks, and the API
reference, one page per module (listed under ``book/api`` in the staged ``_toc.yml``). ``jupyter-book build``
then runs with execution off.
"""

from __future__ import annotations

import html as _html
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .layout import ANSI_RE, BuildError, executed_dir, find_root, ledger_dir, log, out_dir, profile_name, timings_path
from .notebooks import (clean_injected_cell, figure_names, figure_panels, fill_placeholders, injected_parameters,
                        notebook_title, repository_url, scrub_paths, toc_files)
from .pages import banner, build_context, render_benchmarks_page, render_ledger_page
from .runner import check_complete, executed_copy

__all__ = ["API_MARKER", "PY_DOWNLOADS", "LEDGER_DATA", "api_modules", "module_summary", "docstring_problems",
           "render_api_page",
           "render_api_module", "site_footer", "stage", "build_html", "setup"]

API_MARKER = "<!-- api-modules -->"
#: where staging writes each chapter's ``.py`` (relative to the staged source; Sphinx copies ``_static`` as is)
PY_DOWNLOADS = "_static/notebooks"
#: where staging writes each chapter's ledger as CSV (relative to the staged source)
LEDGER_DATA = "book/ledger-data"


def api_modules(package: str = "transformer_dynamics") -> list[str]:
    """Every public module of ``package`` (names without a leading underscore, ``__main__`` left out), sorted."""
    pkg = __import__(package, fromlist=["__path__"])
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names)


def module_summary(name: str) -> str:
    """The first sentence of a module's docstring as plain text (reST roles and literals unwrapped)."""
    import importlib

    try:
        doc = importlib.import_module(name).__doc__ or ""
    except Exception:  # noqa: BLE001 - a module that does not import says so on its own page
        return ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    first = re.sub(r":[\w:]+:`~?([^`]+)`", r"\1", first).replace("``", "`")
    m = re.match(r"(.+?\.)(\s|$)", first)
    return m.group(1) if m else first


def docstring_problems(modules: list[str]) -> list[str]:
    """reST errors and warnings in the public docstrings of ``modules`` as the API pages would show them (after
    napoleon, parsed by docutils): ``["module.name: message", ...]``. An undefined substitution (``|R|``), an
    unknown target (``mean_``) or an unclosed literal becomes a red "problematic" span on the page. Sphinx's
    own roles and directives are not errors here."""
    import importlib
    import inspect
    import io

    from docutils.core import publish_doctree
    from sphinx.ext.napoleon import Config
    from sphinx.ext.napoleon.docstring import NumpyDocstring

    cfg = Config(napoleon_numpy_docstring=True)
    sphinx_only = ("Unknown interpreted text role", "No role entry", "Unknown directive type", "No directive entry")
    out: list[str] = []

    def check(name: str, obj: Any, what: str) -> None:
        doc = inspect.getdoc(obj)
        if not doc:
            return
        err = io.StringIO()
        publish_doctree(str(NumpyDocstring(doc, cfg, what=what)),
                        settings_overrides={"warning_stream": err, "report_level": 2, "halt_level": 5})
        out.extend(f"{name}: {ln.split(': ', 1)[-1]}" for ln in err.getvalue().splitlines()
                   if ("ERROR" in ln or "WARNING" in ln) and not any(x in ln for x in sphinx_only))

    for mod in modules:
        m = importlib.import_module(mod)
        check(mod, m, "module")
        for n, o in vars(m).items():
            if n.startswith("_") or getattr(o, "__module__", None) != mod:
                continue
            if inspect.isfunction(o):
                check(f"{mod}.{n}", o, "function")
            elif inspect.isclass(o):
                check(f"{mod}.{n}", o, "class")
                for mn, mo in vars(o).items():
                    if not mn.startswith("_") and inspect.isfunction(mo):
                        check(f"{mod}.{n}.{mn}", mo, "method")
    return out


def render_api_module(name: str) -> str:
    """One module's API page: its name as the title and Sphinx ``automodule`` with its members."""
    return f"# `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n   :members:\n```\n"


def render_api_page(template: str, modules: list[str], folder: str = "api") -> str:
    """The API reference's index page: ``template`` (book/api.md) with its marker replaced by a list of
    ``modules``, each a link to its own page (``<folder>/<module>.md``, :func:`render_api_module`) and the first
    sentence of its docstring."""
    body = "\n".join(f"- [`{name}`]({folder}/{name}.md): {module_summary(name)}" for name in modules) + "\n"
    return template.replace(API_MARKER, body) if API_MARKER in template else template.rstrip() + "\n\n" + body


def site_footer(root: Path, repository: str | None = None) -> str:
    """The footer of every page (HTML): how to cite the book and the paper, and the licence, read from
    ``CITATION.cff`` and ``LICENSE`` (linked in the repository); empty without them."""
    root = Path(root)
    parts = []
    cff_path = root / "CITATION.cff"
    cff = yaml.safe_load(cff_path.read_text()) if cff_path.is_file() else {}
    blob = f"{repository}/blob/main" if repository else ""
    e = _html.escape
    if cff:
        authors = ", ".join(a.get("name") or f"{a.get('given-names', '')} {a.get('family-names', '')}".strip()
                            for a in cff.get("authors", []))
        cite = f"{e(authors)}. <i>{e(str(cff.get('title', '')))}</i>"
        if cff.get("version"):
            cite += f", version {e(str(cff['version']))}"
        if cff.get("url"):
            cite += f', <a href="{e(cff["url"])}">{e(cff["url"])}</a>'
        pref = cff.get("preferred-citation") or {}
        paper = ""
        if pref:
            names = [a.get("family-names", a.get("name", "")) for a in pref.get("authors", [])]
            who = " & ".join(names) if len(names) <= 2 else f"{names[0]} et al."
            ids = ", ".join(str(i.get("value")) for i in pref.get("identifiers", []) if i.get("value"))
            paper = (f" Please cite the paper it reproduces too: {e(who)} ({e(str(pref.get('year', '')))}), "
                     f"<i>{e(str(pref.get('title', '')))}</i>" + (f", {e(ids)}" if ids else "") + ".")
        link = f' (<a href="{e(blob)}/CITATION.cff">CITATION.cff</a>)' if blob else ""
        parts.append(f"<p><b>How to cite</b>: {cite}{link}.{paper}</p>")
    licence = str(cff.get("license", "")) if cff else ""
    lic_path = root / "LICENSE"
    if lic_path.is_file():
        first = lic_path.read_text().strip().splitlines()[0].strip()
        licence = licence or first
        holder = next((ln.strip() for ln in lic_path.read_text().splitlines() if ln.strip().startswith("Copyright")),
                      "")
        link = f' (<a href="{e(blob)}/LICENSE">LICENSE</a>)' if blob else ""
        parts.append(f"<p><b>Licence</b>: {e(licence)}{link}. {e(holder.rstrip('.'))}.</p>")
    return "".join(parts)


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _models_text(models: Any) -> str:
    ms = [models] if isinstance(models, str) else [str(m) for m in models or []]
    return ms[0] if len(ms) == 1 else ", ".join(ms[:-1]) + " and " + ms[-1] if ms else "the models"


def _stage_notebook(path: Path, src: Path, paths: list[str], context_models: list[str]) -> list[str]:
    """Make one staged chapter fit for readers (see the module docstring); returns its figures' names."""
    import jupytext
    import nbformat

    nb = nbformat.read(path, as_version=4)
    params = injected_parameters(nb)
    clean_injected_cell(nb, paths)
    scrub_paths(nb.metadata, paths)
    models = params.get("MODELS") or params.get("MODEL") or context_models
    fill_placeholders(nb, {"models": _models_text(models)})
    nbformat.write(nb, path)
    py = src / PY_DOWNLOADS / f"{path.stem}.py"
    py.parent.mkdir(parents=True, exist_ok=True)
    py.write_text(jupytext.writes(nb, fmt="py:percent"))
    return figure_names(nb)


def _api_toc(toc: dict[str, Any], modules: list[str]) -> dict[str, Any]:
    """``_toc.yml`` with the API pages (``book/api/<module>``) as the sections of ``book/api``."""
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("file") == "book/api":
                node["sections"] = [{"file": f"book/api/{m}"} for m in modules]
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)
    walk(toc)
    return toc


def stage(profile: str = "full", root: str | os.PathLike | None = None, out: str | os.PathLike = "_build",
          publish_incomplete: bool = False) -> Path:
    """Assemble the book's source in ``<out>/src`` and return it (see the module docstring). Chapters without
    an executed copy get the committed notebook (no outputs) and a warning; the browser check then fails on them.
    A chapter whose last run did not finish is refused (:func:`.runner.check_complete`) unless
    ``publish_incomplete``."""
    from .. import ledger as ledger_mod

    root = find_root(root)
    out = out_dir(root, out)
    pname = profile_name(profile)
    check_complete(out, pname, [Path(e).name for e in toc_files(root / "_toc.yml") if e.startswith("notebooks/")],
                   publish_incomplete)
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    led_dir = ledger_dir(out, pname)
    context = build_context(profile, led_dir)
    modules = api_modules() if (root / "book" / "api.md").is_file() else []
    _stage_config(root, src, context, modules)
    ledgers = {led.get("notebook"): led for led in (ledger_mod.load_all(led_dir) if led_dir.is_dir() else [])}
    titles, figures = _stage_notebooks(root, out, src, pname, ledgers, context["models"], publish_incomplete)
    _stage_pages(root, out, src, pname, ledgers, titles, figures, modules)
    return src


def _stage_config(root: Path, src: Path, context: dict[str, Any], modules: list[str]) -> None:
    """The staged ``_config.yml`` (the build's banner, the footer, this module as a Sphinx extension), the
    ``_toc.yml`` (with the API pages of ``modules``) and the ``book/`` folder with its static files."""
    cfg = yaml.safe_load((root / "_config.yml").read_text()) or {}
    cfg.setdefault("html", {})["announcement"] = banner(context)
    try:
        repo = repository_url(root / "_config.yml")
    except ValueError:
        repo = None
    footer = site_footer(root, repo)
    if footer:
        cfg["html"]["extra_footer"] = footer
    exts = cfg.setdefault("sphinx", {}).setdefault("extra_extensions", [])
    if __name__ not in exts:
        exts.append(__name__)
    (src / "_config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    toc = _api_toc(yaml.safe_load((root / "_toc.yml").read_text()), modules)
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False, allow_unicode=True))
    if (root / "book").is_dir():
        shutil.copytree(root / "book", src / "book", ignore=shutil.ignore_patterns("_static"))
    if (root / "book" / "_static").is_dir():  # Jupyter Book loads the CSS of <source>/_static on every page
        shutil.copytree(root / "book" / "_static", src / "_static")


def _stage_notebooks(root: Path, out: Path, src: Path, pname: str, ledgers: dict[str, Any],
                     default_models: list[str], publish_incomplete: bool,
                     ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Every chapter of the table of contents staged in ``src/notebooks``: its executed copy, else the committed
    notebook (warned about), prepared by :func:`_stage_notebook` for the models its ledger ran (else
    ``default_models``). -> ``(titles, figures)``: each chapter's title and its figure panels' ids."""
    from .browser import machine_paths

    (src / "notebooks").mkdir()
    paths = machine_paths(root, out)
    titles: dict[str, str] = {}
    figures: dict[str, dict[str, str]] = {}
    missing = []
    for entry in toc_files(root / "_toc.yml"):
        if not entry.startswith("notebooks/"):
            continue
        stem = Path(entry).name
        executed = executed_copy(out, pname, stem, publish_incomplete)
        staged = src / "notebooks" / f"{stem}.ipynb"
        if executed.is_file():
            shutil.copy2(executed, staged)
        elif (root / "notebooks" / f"{stem}.ipynb").is_file():
            missing.append(stem)
            shutil.copy2(root / "notebooks" / f"{stem}.ipynb", staged)
        else:
            missing.append(stem)
            continue
        ctx = (ledgers.get(stem) or {}).get("context", {})
        ctx_models = ctx.get("models") or ([ctx["model"]] if ctx.get("model") else default_models)
        figures[stem] = figure_panels(_stage_notebook(staged, src, paths, ctx_models))
        titles[stem] = notebook_title(staged) or stem
    if missing:
        log(f"WARNING: no executed copy under {executed_dir(out, pname)} for {missing}; run `python -m "
            f"transformer_dynamics.build run --profile {pname}` first (staged without outputs)")
    return titles, figures


def _stage_pages(root: Path, out: Path, src: Path, pname: str, ledgers: dict[str, Any], titles: dict[str, str],
                 figures: dict[str, dict[str, str]], modules: list[str]) -> None:
    """The generated pages in ``src/book``: the ledger page (and each chapter's ledger as CSV), the benchmarks
    page and the API pages of ``modules``."""
    from .. import ledger as ledger_mod

    book_dir = src / "book"
    book_dir.mkdir(exist_ok=True)
    downloads = {}
    for stem, led in ledgers.items():
        _write_if_changed(src / LEDGER_DATA / f"{stem}.csv", ledger_mod.to_csv(led))
        downloads[stem] = f"{Path(LEDGER_DATA).name}/{stem}.csv"
    template = (root / "book" / "ledger.md").read_text() if (root / "book" / "ledger.md").is_file() \
        else "# Reproduction ledger\n"
    page = render_ledger_page(template, ledger_dir(out, pname), profile=pname, titles=titles,
                              hrefs={s: f"../notebooks/{s}.html" for s in titles},
                              docs={s: f"../notebooks/{s}" for s in titles}, figures=figures, downloads=downloads)
    _write_if_changed(book_dir / "ledger.md", page)
    template = (root / "book" / "benchmarks.md").read_text() if (root / "book" / "benchmarks.md").is_file() \
        else "# Benchmarks\n"
    tpath = timings_path(out, pname)
    timings = json.loads(tpath.read_text()) if tpath.is_file() else None
    _write_if_changed(book_dir / "benchmarks.md",
                      render_benchmarks_page(template, root / "benchmarks" / "results", timings,
                                             titles=titles, figures_dir=book_dir / "benchmarks-figures"))
    if modules:
        _write_if_changed(book_dir / "api.md", render_api_page((root / "book" / "api.md").read_text(), modules))
        for name in modules:
            _write_if_changed(book_dir / "api" / f"{name}.md", render_api_module(name))


def _add_py_download(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """html-page-context (after sphinx-book-theme's buttons): a ``.py`` entry beside the ``.ipynb`` in the
    download menu of a page whose script staging wrote (``PY_DOWNLOADS``)."""
    stem = pagename.rsplit("/", 1)[-1]
    if not (Path(app.srcdir) / PY_DOWNLOADS / f"{stem}.py").is_file():
        return
    for group in context.get("header_buttons", []):
        if group.get("label") != "download-buttons":
            continue
        buttons = group.get("buttons", [])
        at = next((i + 1 for i, b in enumerate(buttons) if b.get("label") == "download-notebook-button"), 0)
        buttons.insert(at, {"type": "link", "url": f"{context['pathto'](PY_DOWNLOADS, 1)}/{stem}.py",
                            "text": ".py", "icon": "fas fa-code", "label": "download-script-button",
                            "tooltip": "Download the notebook as a Python script (jupytext percent format)"})


def setup(app: Any) -> dict[str, Any]:
    """The Sphinx extension the staged ``_config.yml`` loads: the ``.py`` download (:func:`_add_py_download`)."""
    app.connect("html-page-context", _add_py_download, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def build_html(profile: str = "full", root: str | os.PathLike | None = None, out: str | os.PathLike = "_build",
               publish_incomplete: bool = False) -> Path:
    """Stage the sources and run ``jupyter-book build`` (execution off); returns ``<out>/html``.
    ``publish_incomplete``: stage chapters whose last run did not finish (see :func:`stage`)."""
    root = find_root(root)
    out_p = out_dir(root, out)
    src = stage(profile, root, out, publish_incomplete)
    jb_out = out_p / "jb"
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(src), "--path-output", str(jb_out), "--builder", "html", "--keep-going"]
    log("building the HTML: jupyter-book " + " ".join(cmd[3:]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    text = (proc.stdout or "") + (proc.stderr or "")
    (out_p / "jupyter-book.log").write_text(text)
    built = jb_out / "_build" / "html"
    if proc.returncode != 0 or not (built / "index.html").is_file():
        tail = "\n".join(text.splitlines()[-40:])
        raise BuildError(f"jupyter-book build failed (exit {proc.returncode}); full log in "
                         f"{out_p / 'jupyter-book.log'}:\n{tail}")
    warnings_ = [ln for ln in text.splitlines() if "WARNING" in ln]
    html_dir = out_p / "html"
    if html_dir.exists():
        shutil.rmtree(html_dir)
    shutil.copytree(built, html_dir)
    log(f"HTML in {html_dir} ({time.perf_counter() - t0:.0f} s, {len(warnings_)} Sphinx warnings; "
        f"log: {out_p / 'jupyter-book.log'})")
    for ln in warnings_[:20]:
        log("  " + ANSI_RE.sub("", ln).strip())
    return html_dir
