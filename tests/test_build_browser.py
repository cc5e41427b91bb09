"""The browser check on constructed pages: it passes a good chapter and fails on each kind of broken page (an
image, an error cell, a raw pipe table, a short table row, a hash for alt text, a docstring markup error, a
missing #id, a path of the build machine, a figure without a numbered caption). Never skipped unless
$TRANSFORMER_DYNAMICS_NO_BROWSER opts out explicitly (CI never sets it): without Chromium the test fails, saying
what to install (on Debian as root, Chromium is installed here)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from transformer_dynamics import build
from transformer_dynamics.build.__main__ import main as build_main

# a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
                       "rkJggg==")
REPO = "https://github.com/owner/repo"


def _page(doc: str, body: str) -> str:
    colab = f'<a href="https://colab.research.google.com/github/owner/repo/blob/main/{doc}.ipynb">Colab</a>'
    head = f'<head><meta charset="utf-8"><title>{doc}</title></head>'
    return f"<!doctype html><html>{head}<body>{colab}<main>{body}</main></body></html>"


CAPTION = '<figcaption><p><span class="caption-number">Fig. 1 </span>Mean activation.</p></figcaption>'
GOOD = ('<figure><div class="cell_output"><img src="../_images/fig.png" alt="Fig 1B: mean activation per sublayer, '
        f'smollm2-135m, original texts"></div>{CAPTION}</figure>'
        # a table the check must accept: pipes inside cells, a rowspan (a pandas MultiIndex), and `|---|` as code
        '<table><thead><tr><th>model</th><th>t</th><th>mean |activation|</th></tr></thead><tbody>'
        '<tr><th rowspan="2">a</th><td>0</td><td>x|y</td></tr><tr><td>1</td><td>2</td></tr></tbody></table>'
        '<p>a separator row is written <code>|---|</code>; mean |R| and |rho| are fine in prose.</p>'
        '<p><a href="#top" id="top">top</a> <a href="01_good.html#top">the same, by its page</a></p>')
BROKEN = ('<figure><div class="cell_output"><img src="../_images/fig.png" alt="a figure of panels">'
          f'<img src="../_images/missing.png" alt="a second figure here"></div>{CAPTION}</figure>')
CORRUPT = ('<figure><div class="cell_output"><img src="../_images/corrupt.png" alt="a figure of panels"></div>'
           f'{CAPTION}</figure>')
ERROR = (GOOD + '<div class="cell_output"><div class="output traceback highlight-ipythontb"><pre>'
         'Traceback (most recent call last):\n  File "x", line 1\nValueError: deliberate</pre></div></div>')
# what the book showed before tables were HTML: a pipe table parsed as one paragraph, its separator typographic
RAW_TABLE = GOOD + "<p>| Figure | Claim | Holds |\n|—|—|—|\n| 1C | mean |activation| grows | ✓ |</p>"
SHORT_TABLE = GOOD + ("<table><thead><tr><th>a</th><th>b</th><th>c</th></tr></thead>"
                      "<tbody><tr><td>1</td><td>2</td><td>3</td></tr><tr><td>1</td><td>2</td></tr></tbody></table>")
HASH_ALT = ('<figure><div class="cell_output"><img src="../_images/fig.png" '
            f'alt="../_images/3f2a9c1b7e4d5a6b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2.png"></div>{CAPTION}</figure>')
NO_CAPTION = '<div class="cell_output"><img src="../_images/fig.png" alt="Fig 1C: correlation per transition, m"></div>'
PROBLEMATIC = GOOD + '<p>p = (1 + #{<a class="problematic" href="#id1">|rho_perm|</a> &gt;= 1})</p>'
MISSING_ANCHOR = GOOD + '<p><a href="01_good.html#no-such-figure">Fig 1C</a></p>'


def _path_page(root: Path) -> str:
    """papermill's injected cell as the book showed it: the build machine's folders in it."""
    return GOOD + f'<div class="cell_input"><pre>LEDGER_DIR = "{root}/_build/ledger/ci"</pre></div>'


@pytest.fixture
def site(tmp_path):
    """A repository with a built (hand-written) book: a good chapter, then one broken page per thing the check
    catches (a missing image, an image that does not decode, an error cell, a raw pipe table, a table row
    shorter than its header, a figure whose alt text is its file's hash, a docstring's markup error, a link to a
    missing #id, an absolute path of the build machine in the page and in its downloadable notebook, a figure
    without a numbered caption)."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_config.yml").write_text(f"title: t\nrepository:\n  url: {REPO}\n")
    chapters = {"01_good": GOOD, "02_broken": BROKEN, "03_corrupt": CORRUPT, "04_error": ERROR,
                "05_raw_table": RAW_TABLE, "06_short_table": SHORT_TABLE, "07_hash_alt": HASH_ALT,
                "08_problematic": PROBLEMATIC, "09_missing_anchor": MISSING_ANCHOR, "10_path": _path_page(tmp_path),
                "11_no_caption": NO_CAPTION}
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
    sources = html / "_sources" / "notebooks"
    sources.mkdir(parents=True)
    (sources / "01_good.ipynb").write_text(json.dumps({"cells": [{"source": "N = 96"}]}))
    (sources / "10_path.ipynb").write_text(json.dumps({"cells": [{"source": f'CACHE_DIR = "{tmp_path}/cache"'}]}))
    return tmp_path


@pytest.fixture
def chromium():
    if build.opted_out():
        pytest.skip(f"{build.OPT_OUT_ENV} is set: the browser check was opted out explicitly")
    return build.ensure_chromium(install=True)  # fails (not skips) with the install command where it cannot


def test_check_passes_a_good_page_and_fails_broken_ones(site, chromium):
    report = build.check_html(site)
    pages = report["pages"]
    fails = {doc.split("/")[-1]: p["failures"] for doc, p in pages.items()}
    assert fails["01_good"] == [] and pages["notebooks/01_good"]["figures"] == 1
    assert fails["intro"] == []
    assert any("missing or broken image" in f and "missing.png" in f for f in fails["02_broken"])
    assert any("missing or broken image" in f and "corrupt.png" in f for f in fails["03_corrupt"])
    errs = fails["04_error"]
    assert len(errs) == 1 and errs[0].startswith("error output:") and "ValueError: deliberate" in errs[0]
    assert len(fails["05_raw_table"]) == 1 and fails["05_raw_table"][0].startswith("raw table text outside a table")
    assert "'|—|'" in fails["05_raw_table"][0]
    assert len(fails["06_short_table"]) == 1 and "fewer columns than its header (3)" in fails["06_short_table"][0]
    assert len(fails["07_hash_alt"]) == 1 and "alt text is its file name or hash" in fails["07_hash_alt"][0]
    # docutils links a "problematic" span to its system message, which the page does not show: both are caught
    assert len(fails["08_problematic"]) == 2 and "|rho_perm|" in fails["08_problematic"][0]
    assert fails["08_problematic"][1] == "1 link(s) to a missing #id: ['08_problematic.html#id1']"
    assert fails["09_missing_anchor"] == ["1 link(s) to a missing #id: ['01_good.html#no-such-figure']"]
    assert len(fails["10_path"]) == 1 and "absolute path(s) of the build machine in the page" in fails["10_path"][0]
    assert f"['{site}']" in fails["10_path"][0]
    # the downloadable notebook of that page carries the path too; the good one does not
    downloads = [f for f in report["failures"] if f.startswith("downloads:")]
    assert len(downloads) == 1 and "_sources/notebooks/10_path.ipynb" in downloads[0]
    assert fails["11_no_caption"] == ["1 figure(s) without a numbered caption: ['../_images/fig.png']"]
    assert len(report["failures"]) == 12
    # a full-page screenshot of every page, kept under <out>/screenshots
    shots = [Path(p) for p in report["screenshots"]]
    assert {p.name for p in shots} == {"intro.png"} | {f"{c}.png" for c in fails if c != "intro"}
    assert all(p.parent == site / "_build" / "screenshots" and p.read_bytes()[:4] == b"\x89PNG" for p in shots)
    assert json.loads((site / "_build" / "check-report.json").read_text())["failures"] == report["failures"]


def test_alt_text_and_raw_table_rules():
    """The rules behind the page checks, on their own (no browser)."""
    from transformer_dynamics.build import browser

    ok = {"src": "../_images/ab12.png", "alt": "Fig 2A: phase portrait of unit 7, smollm2-135m, original texts"}
    assert browser._alt_failures([ok]) == []
    for alt in ("", "../_images/ab12.png", "ab12.png", "figure", "Fig 1B for {models}", "x " + "a" * 64):
        assert len(browser._alt_failures([{**ok, "alt": alt}])) == 1, alt
    assert browser._raw_tables("| a | b |\n|---|---|\n| 1 | 2 |") and browser._raw_tables("x |:---:| y")
    assert browser._raw_tables("| a | b | c |\n| 1 | 2 | 3 |")
    assert not browser._raw_tables("mean |activation| and |R| over units; int | None")
    assert browser._paths_in("see /home/u/x", ["/home/u/"]) == ["/home/u/"]


def test_machine_paths_name_the_package_folders(tmp_path, monkeypatch):
    from transformer_dynamics.build import browser

    monkeypatch.setenv("TRANSFORMER_DYNAMICS_DATA", "/srv/wikitext/")
    monkeypatch.setenv("TRANSFORMER_DYNAMICS_PROFILE", "ci")  # not a folder
    paths = browser.machine_paths(tmp_path, tmp_path / "_build")
    assert "/srv/wikitext" in paths and str(tmp_path) in paths and "ci" not in paths
    assert browser._paths_in("wikitext-2-raw-v1 test (local: /srv/wikitext)", paths) == ["/srv/wikitext"]


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
