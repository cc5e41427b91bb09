"""The site: stage the book's sources in ``<out>/src`` and build them with Jupyter Book into ``<out>/html``.

Staging copies ``_config.yml`` (with the build's banner: profile, models, N), ``_toc.yml``, ``book/`` and the
*executed* notebooks under ``notebooks/``, and renders the generated pages (ledger, benchmarks, API reference).
``jupyter-book build`` then runs with execution off.
"""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .layout import ANSI_RE, BuildError, executed_dir, find_root, ledger_dir, log, out_dir, profile_name, timings_path
from .notebooks import notebook_title, toc_files
from .pages import banner, build_context, render_benchmarks_page, render_ledger_page
from .runner import check_complete, executed_copy

__all__ = ["API_MARKER", "api_modules", "render_api_page", "stage", "build_html"]

API_MARKER = "<!-- api-modules -->"


def api_modules(package: str = "transformer_dynamics") -> list[str]:
    """Every public module of ``package`` (names without a leading underscore, ``__main__`` left out), sorted."""
    pkg = __import__(package, fromlist=["__path__"])
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names)


def render_api_page(template: str, modules: list[str]) -> str:
    """The API reference page: ``template`` (book/api.md) with its marker replaced by an autosummary table of
    ``modules`` and an autodoc section per module (Sphinx ``automodule`` with its members)."""
    table = "```{eval-rst}\n.. autosummary::\n\n" + "".join(f"   {name}\n" for name in modules) + "```\n"
    parts = [f"## `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n   :members:\n```\n" for name in modules]
    body = table + "\n" + "\n".join(parts)
    return template.replace(API_MARKER, body) if API_MARKER in template else template.rstrip() + "\n\n" + body


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def stage(profile: str = "full", root: str | os.PathLike | None = None, out: str | os.PathLike = "_build",
          publish_incomplete: bool = False) -> Path:
    """Assemble the book's source in ``<out>/src`` and return it (see the module docstring). Chapters without
    an executed copy get the committed notebook (no outputs) and a warning; the browser check then fails on them.
    A chapter whose last run did not finish is refused (:func:`.runner.check_complete`) unless
    ``publish_incomplete``."""
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
    cfg = yaml.safe_load((root / "_config.yml").read_text()) or {}
    cfg.setdefault("html", {})["announcement"] = banner(build_context(profile, led_dir))
    (src / "_config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    shutil.copy2(root / "_toc.yml", src / "_toc.yml")
    if (root / "book").is_dir():
        shutil.copytree(root / "book", src / "book")
    exe = executed_dir(out, pname)
    (src / "notebooks").mkdir()
    titles: dict[str, str] = {}
    missing = []
    for entry in toc_files(root / "_toc.yml"):
        if not entry.startswith("notebooks/"):
            continue
        stem = Path(entry).name
        executed = executed_copy(out, pname, stem, publish_incomplete)
        if executed.is_file():
            shutil.copy2(executed, src / "notebooks" / f"{stem}.ipynb")
        elif (root / "notebooks" / f"{stem}.ipynb").is_file():
            missing.append(stem)
            shutil.copy2(root / "notebooks" / f"{stem}.ipynb", src / "notebooks" / f"{stem}.ipynb")
        else:
            missing.append(stem)
            continue
        titles[stem] = notebook_title(src / "notebooks" / f"{stem}.ipynb") or stem
    if missing:
        log(f"WARNING: no executed copy under {exe} for {missing}; run `python -m transformer_dynamics.build run "
            f"--profile {pname}` first (staged without outputs)")
    book_dir = src / "book"
    book_dir.mkdir(exist_ok=True)
    template = (root / "book" / "ledger.md").read_text() if (root / "book" / "ledger.md").is_file() \
        else "# Reproduction ledger\n"
    page = render_ledger_page(template, led_dir, profile=pname, titles=titles)
    for stem, title in titles.items():  # the ledger holds notebook stems; point each section at its chapter
        page = page.replace(f"## {title}\n", f"## {title}\n\nFrom {{doc}}`../notebooks/{stem}`.\n", 1)
    _write_if_changed(book_dir / "ledger.md", page)
    template = (root / "book" / "benchmarks.md").read_text() if (root / "book" / "benchmarks.md").is_file() \
        else "# Benchmarks\n"
    tpath = timings_path(out, pname)
    timings = json.loads(tpath.read_text()) if tpath.is_file() else None
    _write_if_changed(book_dir / "benchmarks.md",
                      render_benchmarks_page(template, root / "benchmarks" / "results", timings))
    if (root / "book" / "api.md").is_file():
        _write_if_changed(book_dir / "api.md", render_api_page((root / "book" / "api.md").read_text(), api_modules()))
    return src


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
