"""The browser check on constructed pages: it passes a good chapter and fails on a broken image and on an error
cell. Never skipped unless $TRANSFORMER_DYNAMICS_NO_BROWSER opts out explicitly (CI never sets it): without
Chromium the test fails, saying what to install (on Debian as root, Chromium is installed here)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from transformer_dynamics import build
from transformer_dynamics.build.__main__ import main as build_main

# a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
REPO = "https://github.com/owner/repo"


def _page(doc: str, body: str) -> str:
    colab = f'<a href="https://colab.research.google.com/github/owner/repo/blob/main/{doc}.ipynb">Colab</a>'
    return f"<!doctype html><html><head><title>{doc}</title></head><body>{colab}<main>{body}</main></body></html>"


GOOD = '<div class="cell_output"><img src="../_images/fig.png"></div>'
BROKEN = '<div class="cell_output"><img src="../_images/fig.png"><img src="../_images/missing.png"></div>'
CORRUPT = '<div class="cell_output"><img src="../_images/corrupt.png"></div>'
ERROR = (GOOD + '<div class="cell_output"><div class="output traceback highlight-ipythontb"><pre>'
         'Traceback (most recent call last):\n  File "x", line 1\nValueError: deliberate</pre></div></div>')


@pytest.fixture
def site(tmp_path):
    """A repository with a built (hand-written) book: a good chapter, one with a missing image, one with an image
    that does not decode, one with an error cell."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_config.yml").write_text(f"title: t\nrepository:\n  url: {REPO}\n")
    chapters = {"01_good": GOOD, "02_broken": BROKEN, "03_corrupt": CORRUPT, "04_error": ERROR}
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                       + "".join(f"- file: notebooks/{c}\n" for c in chapters))
    html = tmp_path / "_build" / "html"
    (html / "_images").mkdir(parents=True)
    (html / "notebooks").mkdir()
    (html / "book").mkdir()
    (html / "_images" / "fig.png").write_bytes(PNG)
    (html / "_images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    (html / "index.html").write_text(_page("index", "<p>home</p>"))
    (html / "book" / "intro.html").write_text(_page("book/intro", "<p>intro</p>"))
    for stem, body in chapters.items():
        (html / "notebooks" / f"{stem}.html").write_text(_page(f"notebooks/{stem}", body))
    return tmp_path


@pytest.fixture
def chromium():
    if build.opted_out():
        pytest.skip(f"{build.OPT_OUT_ENV} is set: the browser check was opted out explicitly")
    return build.ensure_chromium(install=True)  # fails (not skips) with the install command where it cannot


def test_check_passes_a_good_page_and_fails_broken_ones(site, chromium):
    report = build.check_html(site)
    pages = report["pages"]
    assert pages["notebooks/01_good"]["failures"] == [] and pages["notebooks/01_good"]["figures"] == 1
    assert pages["book/intro"]["failures"] == []
    assert any("missing or broken image" in f and "missing.png" in f for f in pages["notebooks/02_broken"]["failures"])
    assert any("missing or broken image" in f and "corrupt.png" in f for f in pages["notebooks/03_corrupt"]["failures"])
    errs = pages["notebooks/04_error"]["failures"]
    assert len(errs) == 1 and errs[0].startswith("error output:") and "ValueError: deliberate" in errs[0]
    assert len(report["failures"]) == 3
    # a full-page screenshot of every page, kept under <out>/screenshots
    shots = [Path(p) for p in report["screenshots"]]
    assert {p.name for p in shots} == {"intro.png", "01_good.png", "02_broken.png", "03_corrupt.png", "04_error.png"}
    assert all(p.parent == site / "_build" / "screenshots" and p.read_bytes()[:4] == b"\x89PNG" for p in shots)
    assert json.loads((site / "_build" / "check-report.json").read_text())["failures"] == report["failures"]


def test_check_command_fails_on_a_broken_page(site, chromium, capsys):
    assert build_main(["check", "--root", str(site), "--only", "01"]) == 0
    assert build_main(["check", "--root", str(site), "--only", "04"]) == 1
    assert "ValueError: deliberate" in capsys.readouterr().err


def test_check_without_chromium_fails_saying_what_to_install(site, monkeypatch):
    monkeypatch.setattr(build.browser, "find_chromium", lambda: None)
    monkeypatch.setattr(build.browser, "can_install_chromium", lambda: False)
    with pytest.raises(build.BuildError, match="apt-get install -y chromium"):
        build.check_html(site)
    assert build_main(["check", "--root", str(site)]) == 1


def test_all_without_chromium_says_so_loudly_and_keeps_the_work(site, monkeypatch, capsys):
    """`make book` must not fail after its work is done because Chromium is missing."""
    monkeypatch.setattr(build.browser, "find_chromium", lambda: None)
    monkeypatch.setattr(build.browser, "can_install_chromium", lambda: False)
    import transformer_dynamics.build.__main__ as cli
    monkeypatch.setattr(cli, "find_chromium", lambda: None)
    monkeypatch.setattr(cli, "can_install_chromium", lambda: False)
    monkeypatch.setattr(cli, "run_notebooks", lambda *a, **k: {"failures": []})
    monkeypatch.setattr(cli, "build_html", lambda *a, **k: site / "_build" / "html")
    assert build_main(["all", "--root", str(site), "--profile", "ci"]) == 0
    err = capsys.readouterr().err
    assert "THE BROWSER CHECK DID NOT RUN" in err and "apt-get install -y chromium" in err
    monkeypatch.setenv(build.OPT_OUT_ENV, "1")
    assert build_main(["all", "--root", str(site), "--profile", "ci"]) == 0
    assert f"{build.OPT_OUT_ENV} is set" in capsys.readouterr().err
