"""The browser check: every page of the built book opened in headless Chromium, driven by Playwright.

Playwright launches the *system* Chromium (``executable_path``; no browser download, never
``playwright install``). The check fails on a page that does not load, an image that does not decode, an error
output in a notebook cell, a chapter without a figure and a chapter whose Colab button does not point at its
notebook in the repository, and on what a reader should never see: a pipe table left as raw text (a separator
row ``|---|`` or its typographic ``|—|`` outside a table, or lines of table rows), a table with a row shorter
than its header, a chapter's figure without a numbered caption, a figure whose alt text is missing, a file name
or hash, or too short to say what it shows, a
docutils "problematic" span (a docstring's markup error), a link to an ``#id`` that the target page lacks, and
an absolute path of the build machine (:func:`machine_paths`) in a page or a downloadable file. Full-page
screenshots go to ``<out>/screenshots/``, the findings to
``<out>/check-report.json``.

Chromium comes from the project's setup (``make browser``, which ``make test`` and ``make book`` run):
:func:`ensure_chromium` installs Debian's ``chromium`` with apt-get when the machine is Debian and the user is
root, and otherwise says what to install. Setting ``TRANSFORMER_DYNAMICS_NO_BROWSER=1`` opts out explicitly
(the check and its tests are then skipped, saying so); CI never sets it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .layout import BuildError, find_root, log, out_dir, parse_only, selected
from .notebooks import NOTEBOOK_RE, repository_url, toc_files

__all__ = ["OPT_OUT_ENV", "INSTALL_HINT", "opted_out", "find_chromium", "can_install_chromium",
           "ensure_chromium", "check_html", "machine_paths", "PAGE_PROBE"]

OPT_OUT_ENV = "TRANSFORMER_DYNAMICS_NO_BROWSER"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
INSTALL_HINT = ("the browser check needs Chromium: `sudo apt-get install -y chromium` (Debian/Ubuntu; `make "
                "browser` does it when run as root on Debian), `brew install --cask chromium` (macOS), or set "
                "$CHROMIUM to a Chrome/Chromium binary; then `make check-book`. To skip the check explicitly, "
                f"set {OPT_OUT_ENV}=1")


def opted_out() -> bool:
    """Whether the user opted out of the browser check (``$TRANSFORMER_DYNAMICS_NO_BROWSER`` set, not 0)."""
    return os.environ.get(OPT_OUT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$CHROMIUM``, else the first of chromium, chromium-browser,
    google-chrome on PATH (or in /usr/bin); None if there is none."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CHROMIUM_NAMES:
        p = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if p:
            return p
    return None


def _is_debian() -> bool:
    try:
        text = Path("/etc/os-release").read_text().lower()
    except OSError:
        return False
    return bool(re.search(r"^(id|id_like)=.*\b(debian|ubuntu)\b", text, re.M)) and shutil.which("apt-get") is not None


def can_install_chromium() -> bool:
    """True on Debian/Ubuntu as root (where :func:`ensure_chromium` installs it with apt-get)."""
    return _is_debian() and hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_chromium(install: bool = True) -> str:
    """A Chromium binary: the one found, else (``install`` and :func:`can_install_chromium`) Debian's
    ``chromium`` installed with apt-get. Raises :class:`BuildError` saying what to install otherwise."""
    found = find_chromium()
    if found:
        return found
    if not install or not can_install_chromium():
        why = "" if install else "not installing (install=False); "
        if install and not can_install_chromium():
            why = "no Chromium found and this is not Debian/Ubuntu as root; "
        raise BuildError(why + INSTALL_HINT)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("installing Debian's chromium with apt-get (the browser check needs it) ...")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}\n" + INSTALL_HINT)
    found = find_chromium()
    if not found:
        raise BuildError("apt-get installed chromium but no binary was found; " + INSTALL_HINT)
    return found


# Run in every page: waits for the images, then reports what the check asserts.
PAGE_PROBE = r"""
async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const main = document.querySelector('main') || document.body;
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                     .map(i => i.getAttribute('src') || '(no src)');
  const figs = Array.from(main.querySelectorAll('.cell_output img, .cell_output svg, figure img, .cell_output canvas'))
      .filter(e => !e.closest('button, .copybtn, .headerbtn, .dropdown-menu'))
      .filter(e => !(e.tagName === 'IMG' && (e.getAttribute('src') || '').includes('_static/')));
  const figures = figs.length;
  const alts = figs.filter(e => e.tagName === 'IMG')
                   .map(e => ({src: e.getAttribute('src') || '', alt: e.getAttribute('alt')}));
  const uncaptioned = figs.filter(e => !(e.closest('figure') &&
                                         e.closest('figure').querySelector('figcaption .caption-number')))
                          .map(e => e.getAttribute('src') || e.tagName);
  const errors = Array.from(main.querySelectorAll('.output.traceback, .cell_output .traceback, .output.error'))
                      .map(e => e.innerText.slice(-600));
  Array.from(main.querySelectorAll('.cell_output, .output')).forEach(e => {
      const t = e.innerText;
      if (/Traceback \(most recent call last\)/.test(t) && !errors.some(x => t.endsWith(x)))
          errors.push(t.slice(-600)); });
  if (/An Exception was encountered at/.test(main.innerText) || document.getElementById('papermill-error-cell'))
      errors.push('papermill: an exception was encountered while executing this notebook');
  const colab = Array.from(document.querySelectorAll('a[href*="colab.research.google.com"]')).map(a => a.href);
  // text a reader sees outside tables and outside code cells' inputs (where a pipe table would be raw text)
  const prose = main.cloneNode(true);
  prose.querySelectorAll('table, script, style, .cell_input, nav, .bd-toc').forEach(e => e.remove());
  prose.querySelectorAll('.highlight, code').forEach(e => { if (!e.closest('.cell_output, .output')) e.remove(); });
  const text = prose.textContent;
  // every table: the columns of each body row (colspan and rowspan counted) against its header's
  const tables = Array.from(main.querySelectorAll('table')).map((t, ti) => {
      const rows = Array.from(t.rows);
      const carry = [];   // rowspans still open: remaining rows per column slot
      const widths = rows.map(r => {
          let w = carry.filter(x => x > 0).length;
          for (let k = 0; k < carry.length; k++) if (carry[k] > 0) carry[k] -= 1;
          Array.from(r.cells).forEach(c => {
              const span = Math.max(1, c.colSpan || 1);
              for (let k = 0; k < span; k++) if ((c.rowSpan || 1) > 1) carry.push(c.rowSpan - 1);
              w += span; });
          return {w, head: !!r.closest('thead') || Array.from(r.cells).every(c => c.tagName === 'TH')}; });
      const header = Math.max(0, ...widths.filter(x => x.head).map(x => x.w));
      const short = widths.map((x, i) => ({i, w: x.w, head: x.head})).filter(x => !x.head && x.w < header);
      return {index: ti, rows: rows.length, header, short: short.slice(0, 3).map(x => `row ${x.i}: ${x.w}`),
              n_short: short.length}; });
  const problematic = Array.from(document.querySelectorAll('.problematic')).map(e => e.textContent.slice(0, 80));
  const ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id);
  const here = location.href.split('#')[0];
  const anchors = Array.from(document.querySelectorAll('a[href*="#"]'))
      .filter(a => a.href.startsWith(location.origin) && !a.closest('.dropdown-menu'))
      .map(a => a.href).filter(h => h.split('#')[1]);
  return {title: document.title, images: imgs.length, broken, figures, alts, uncaptioned,
          errors: Array.from(new Set(errors)),
          colab, text, tables, problematic, ids, anchors: Array.from(new Set(anchors)), here,
          html: document.documentElement.outerHTML};
}
"""

#: a separator row of a pipe table (``|---|``, ``| :---: |``, or its typographic ``|—|``) left as text
RAW_SEPARATOR = re.compile(r"\|\s*:?[-—–]+:?\s*\|")
#: a line of a pipe table left as text: starts and ends with a pipe, with at least two cells
RAW_ROW = re.compile(r"^\s*\|[^|\n]*\|[^|\n]*\|.*\|?\s*$", re.M)
#: a run of hex digits as long as a hash (an image named by its hash, used as its alt text)
HASH = re.compile(r"[0-9a-f]{32,}", re.I)
#: a ``{placeholder}`` left unfilled in a caption or alt text
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def machine_paths(root: Path, out: Path, extra: Iterable[str] = ()) -> list[str]:
    """Absolute paths of the machine that built the book, none of which may appear in a page or a download:
    the repository, the build folder, the home folder (with its trailing slash), the Python environment
    (when it is a virtual environment), the package's folders named in ``$TRANSFORMER_DYNAMICS_*`` (cache, data,
    ledger) and ``extra``."""
    import sys

    paths = {str(root.resolve()), str(out.resolve())}
    home = str(Path.home())
    if home not in ("", "/"):
        paths.add(home.rstrip("/") + "/")
    if sys.prefix != sys.base_prefix:
        paths.add(str(Path(sys.prefix).resolve()))
        paths.add(sys.prefix)
    for key, value in os.environ.items():  # the package's folders: cache, data, ledger
        if key.startswith("TRANSFORMER_DYNAMICS_") and os.path.isabs(value) and value.rstrip("/"):
            paths.update({value.rstrip("/"), str(Path(value).resolve())})
    paths.update(str(p) for p in extra if str(p) not in ("", "/"))
    return sorted(paths, key=len, reverse=True)


def _paths_in(text: str, paths: list[str]) -> list[str]:
    """The ``paths`` found in ``text``, leaving out those inside another one found (the build folder in the
    repository)."""
    hits = [p for p in paths if p in text]
    return [p for p in hits if not any(q != p and p.startswith(q) for q in hits)]


def _raw_tables(text: str) -> list[str]:
    """Raw pipe-table text a reader sees: a separator row, or two or more lines that are table rows."""
    found = [m.group(0) for m in RAW_SEPARATOR.finditer(text)]
    rows = RAW_ROW.findall(text)
    if len(rows) >= 2:
        found.append(rows[0].strip())
    return found


def _alt_failures(alts: list[dict[str, Any]]) -> list[str]:
    fails = []
    for a in alts:
        alt, src = (a.get("alt") or "").strip(), a.get("src", "")
        name = Path(src).name
        if not alt:
            fails.append(f"a figure without alt text ({name})")
        elif HASH.search(alt) or alt == src or (name and name in alt):
            fails.append(f"a figure whose alt text is its file name or hash ({alt[:80]!r})")
        elif PLACEHOLDER.search(alt):
            fails.append(f"a figure whose alt text has an unfilled placeholder ({alt[:80]!r})")
        elif len(alt.split()) < 3:
            fails.append(f"a figure whose alt text does not say what it shows ({alt!r})")
    return fails


def _download_failures(html_dir: Path, paths: list[str], keep: Any = lambda stem: True) -> list[str]:
    """Machine paths in the book's downloadable files: the notebooks and page sources (``_sources``), the
    chapters' scripts (``_static/notebooks``) and the downloads (``_downloads``: CSVs). ``keep(stem)``: whether
    to look at a chapter's files (``--only``)."""
    fails = []
    for sub in ("_sources", "_static/notebooks", "_downloads"):
        for f in sorted((html_dir / sub).rglob("*")) if (html_dir / sub).is_dir() else []:
            if not (f.is_file() and f.suffix in (".ipynb", ".py", ".csv", ".md", ".txt", ".json")):
                continue
            stem = f.name.split(".")[0]
            if NOTEBOOK_RE.match(stem) and not keep(stem):
                continue
            found = _paths_in(f.read_text(errors="replace"), paths)
            if found:
                fails.append(f"{f.relative_to(html_dir)}: absolute path(s) of the build machine: {found[:3]}")
    return fails


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _page_failures(doc: str, found: dict[str, Any], status: int | None, org_repo: str,
                   chapters_need_figures: bool, paths: list[str] | None = None) -> list[str]:
    is_chapter = doc.startswith("notebooks/")
    fails: list[str] = []
    if status is not None and status >= 400:
        fails.append(f"page did not load (HTTP {status})")
    if found.get("broken"):
        fails.append(f"{len(found['broken'])} missing or broken image(s): {found['broken'][:5]}")
    if is_chapter and chapters_need_figures and not found.get("figures"):
        fails.append("no figure in the cell outputs (was the notebook executed?)")
    fails += ["error output: " + " ".join(err.split())[-300:] for err in found.get("errors", [])]
    if is_chapter:
        want = f"colab.research.google.com/github/{org_repo}/blob/"
        links = found.get("colab", [])
        if not any(want in u and u.endswith(f"/{doc}.ipynb") and "/./" not in u for u in links):
            fails.append(f"no Colab button pointing at {doc}.ipynb in {org_repo} (found {links})")
    raw = _raw_tables(found.get("text", ""))
    if raw:
        fails.append(f"raw table text outside a table ({len(raw)} place(s)), e.g. {raw[0][:80]!r}")
    for t in found.get("tables", []):
        if t.get("n_short"):
            fails.append(f"table {t['index'] + 1} has {t['n_short']} row(s) with fewer columns than its header "
                         f"({t['header']}): {t['short']}")
    fails += _alt_failures(found.get("alts", []))
    if is_chapter and found.get("uncaptioned"):
        fails.append(f"{len(found['uncaptioned'])} figure(s) without a numbered caption: {found['uncaptioned'][:3]}")
    if found.get("problematic"):
        fails.append(f"{len(found['problematic'])} docstring/markup error(s) (\"problematic\"): "
                     f"{found['problematic'][:3]}")
    if paths:
        hits = _paths_in(found.get("html", ""), paths)
        if hits:
            fails.append(f"absolute path(s) of the build machine in the page: {hits[:3]}")
    return fails


def _anchor_failures(pages: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Links ``page.html#id`` between the checked pages whose target has no element with that id."""
    ids = {p["here"]: set(p.get("ids", [])) for p in pages.values() if p.get("here")}
    out: dict[str, list[str]] = {}
    for doc, p in pages.items():
        bad = []
        for href in p.get("anchors", []):
            url, frag = href.split("#", 1)
            from urllib.parse import unquote
            if url in ids and unquote(frag) not in ids[url]:
                bad.append(href.rsplit("/", 1)[-1])
        if bad:
            out[doc] = [f"{len(bad)} link(s) to a missing #id: {sorted(set(bad))[:5]}"]
    return out


def check_html(root: str | os.PathLike | None = None, out: str | os.PathLike = "_build",
               only: Iterable[str] | None = None, install: bool = True, chapters_need_figures: bool = True,
               timeout_s: float = 60.0, extra_paths: Iterable[str] = ()) -> dict[str, Any]:
    """Load every page of ``<out>/html`` (in the order of the staged ``<out>/src/_toc.yml``, else the repository's
    ``_toc.yml``) in headless Chromium and check it (see the module docstring); ``extra_paths``: more absolute
    paths that no page or download may contain (:func:`machine_paths`).

    Returns ``{"chromium", "pages": {doc: findings}, "failures": [messages], "screenshots": [paths]}`` (also
    written to ``<out>/check-report.json``); raises :class:`BuildError` if Chromium is missing (saying how to
    install it) or the book was not built.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    root = find_root(root)
    out = out_dir(root, out)
    html_dir = out / "html"
    if not (html_dir / "index.html").is_file():
        raise BuildError(f"no built book in {html_dir}; run `python -m transformer_dynamics.build html` first")
    binary = ensure_chromium(install)
    repo = repository_url(root / "_config.yml")
    m = re.match(r"https?://github\.com/([^/]+)/([^/]+?)(?:\.git)?$", repo)
    org_repo = f"{m.group(1)}/{m.group(2)}" if m else repo
    sel = parse_only(only)
    toc = out / "src" / "_toc.yml" if (out / "src" / "_toc.yml").is_file() else root / "_toc.yml"
    paths = machine_paths(root, out, extra_paths)
    shots = out / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"chromium": binary, "pages": {}, "failures": [], "screenshots": []}
    server, base = _serve(html_dir)
    try:
        with sync_playwright() as pw:
            try:
                browser = pw.chromium.launch(executable_path=binary, headless=True, args=CHROMIUM_ARGS)
            except PlaywrightError as exc:
                raise BuildError(f"Chromium did not start ({binary}): {str(exc)[:1500]}") from None
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(timeout_s * 1000)
            for doc in toc_files(toc):
                if doc.startswith("notebooks/") and not selected(Path(doc).name, sel):
                    continue
                _check_page(page, base, doc, html_dir, shots, report,
                            org_repo=org_repo, chapters_need_figures=chapters_need_figures, paths=paths)
            browser.close()
    finally:
        server.shutdown()
    for doc, fails in _anchor_failures(report["pages"]).items():
        report["pages"][doc]["failures"] += fails
        report["failures"] += [f"{doc}: {f}" for f in fails]
        log(f"check {doc}: " + "; ".join(fails))
    for f in _download_failures(html_dir, paths, keep=lambda stem: selected(stem, sel)):
        report["failures"].append(f"downloads: {f}")
        log(f"check downloads: {f}")
    for p in report["pages"].values():
        for big in ("ids", "anchors"):
            p.pop(big, None)
    (out / "check-report.json").write_text(json.dumps(report, indent=1))
    n_ok = sum(not p["failures"] for p in report["pages"].values())
    log(f"browser check: {n_ok}/{len(report['pages'])} pages ok; screenshots in {shots}")
    return report


def _check_page(page: Any, base: str, doc: str, html_dir: Path, shots: Path, report: dict[str, Any], *,
                org_repo: str, chapters_need_figures: bool, paths: list[str]) -> None:
    """Load one page of the book (``doc``, e.g. ``"notebooks/02_x"``) in the browser ``page``, probe it, take its
    full-page screenshot and add what was found, and its failures, to ``report`` (see :func:`check_html`)."""
    from playwright.sync_api import Error as PlaywrightError

    if not (html_dir / f"{doc}.html").is_file():
        report["failures"].append(f"{doc}: page {doc}.html was not built")
        return
    try:
        resp = page.goto(f"{base}/{doc}.html", wait_until="load")
        found = page.evaluate(PAGE_PROBE) or {}
        status = resp.status if resp is not None else None
    except PlaywrightError as exc:
        found, status = {"errors": []}, None
        report["failures"].append(f"{doc}: page did not load: {str(exc).splitlines()[0]}")
    fails = _page_failures(doc, found, status, org_repo, chapters_need_figures, paths)
    shot = shots / f"{Path(doc).name}.png"
    try:
        page.screenshot(path=str(shot), full_page=True)
        report["screenshots"].append(str(shot))
    except PlaywrightError as exc:
        fails.append(f"no screenshot: {str(exc).splitlines()[0]}")
    found["failures"] = fails
    for big in ("html", "text"):
        found.pop(big, None)
    report["pages"][doc] = found
    report["failures"] += [f"{doc}: {f}" for f in fails]
    log(f"check {doc}: {found.get('images', 0)} images, {found.get('figures', 0)} figures"
        + (" - " + "; ".join(fails) if fails else " - ok"))
