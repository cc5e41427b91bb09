"""The browser check: every page of the built book opened in headless Chromium, driven by Playwright.

Playwright launches the *system* Chromium (``executable_path``; no browser download, never
``playwright install``). The check fails on a page that does not load, an image that does not decode, an error
output in a notebook cell, a chapter without a figure and a chapter whose Colab button does not point at its
notebook in the repository. Full-page screenshots go to ``<out>/screenshots/``, the findings to
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
from .notebooks import repository_url, toc_files

__all__ = ["OPT_OUT_ENV", "INSTALL_HINT", "opted_out", "find_chromium", "can_install_chromium",
           "ensure_chromium", "check_html", "PAGE_PROBE"]

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
  return {title: document.title, images: imgs.length, broken, figures, errors: Array.from(new Set(errors)), colab};
}
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _page_failures(doc: str, found: dict[str, Any], status: int | None, org_repo: str,
                   chapters_need_figures: bool) -> list[str]:
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
    return fails


def check_html(root: str | os.PathLike | None = None, out: str | os.PathLike = "_build",
               only: Iterable[str] | None = None, install: bool = True, chapters_need_figures: bool = True,
               timeout_s: float = 60.0) -> dict[str, Any]:
    """Load every page of ``<out>/html`` (in ``_toc.yml`` order) in headless Chromium and check it (see the module
    docstring).

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
            for doc in toc_files(root / "_toc.yml"):
                is_chapter = doc.startswith("notebooks/")
                if is_chapter and not selected(Path(doc).name, sel):
                    continue
                if not (html_dir / f"{doc}.html").is_file():
                    report["failures"].append(f"{doc}: page {doc}.html was not built")
                    continue
                try:
                    resp = page.goto(f"{base}/{doc}.html", wait_until="load")
                    found = page.evaluate(PAGE_PROBE) or {}
                    status = resp.status if resp is not None else None
                except PlaywrightError as exc:
                    found, status = {"errors": []}, None
                    report["failures"].append(f"{doc}: page did not load: {str(exc).splitlines()[0]}")
                fails = _page_failures(doc, found, status, org_repo, chapters_need_figures)
                shot = shots / f"{Path(doc).name}.png"
                try:
                    page.screenshot(path=str(shot), full_page=True)
                    report["screenshots"].append(str(shot))
                except PlaywrightError as exc:
                    fails.append(f"no screenshot: {str(exc).splitlines()[0]}")
                found["failures"] = fails
                report["pages"][doc] = found
                report["failures"] += [f"{doc}: {f}" for f in fails]
                log(f"check {doc}: {found.get('images', 0)} images, {found.get('figures', 0)} figures"
                    + (" - " + "; ".join(fails) if fails else " - ok"))
            browser.close()
    finally:
        server.shutdown()
    (out / "check-report.json").write_text(json.dumps(report, indent=1))
    n_ok = sum(not p["failures"] for p in report["pages"].values())
    log(f"browser check: {n_ok}/{len(report['pages'])} pages ok; screenshots in {shots}")
    return report
