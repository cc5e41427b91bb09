"""The book machinery: run profiles, parameter filtering, the notebooks' shape, the table of contents, the
generated pages, and a small end-to-end run (papermill -> Jupyter Book -> browser) on a throwaway notebook."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import jupytext
import nbformat
import pytest
from conftest import record_claim
import yaml

from transformer_dynamics import build, ledger, profiles
from transformer_dynamics.build import pages, runner, site
from transformer_dynamics.build.__main__ import main as build_main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STEMS = build.notebook_stems(NOTEBOOKS) if NOTEBOOKS.is_dir() else []
COMMON = {"MODELS", "N", "SEED", "CACHE_DIR", "LEDGER_DIR", "PROFILE"}
OFFLINE_MODELS = ["smollm2-135m", "gemma-3-270m"]
PAPER_CHAPTERS = ["01_data_and_capture", "02_activation_statistics", "03_phase_space_rotations",
                  "04_reduced_trajectories", "05_perturbation_attractors"]


# ----------------------------------------------------------------------------------------------------------
# profiles


def test_shipped_profiles():
    assert set(profiles.available_profiles()) >= {"full", "ci", "colab"}
    full = profiles.read_profile("full")
    assert full["defaults"]["MODELS"] == OFFLINE_MODELS and full["defaults"]["N"] == 1000
    # the paper's schedules
    assert profiles.load_profile("full", "03_phase_space_rotations")["N_SHUFFLES"] == 1000
    p4 = profiles.load_profile("full", "04_reduced_trajectories")
    assert (p4["CAE_EPOCHS"], p4["CAE_PATIENCE"]) == (100, 10)
    assert profiles.load_profile("full", "05_perturbation_attractors")["GRID_N"] == 10
    for stem in PAPER_CHAPTERS:  # the paper's model on a Colab GPU
        colab = profiles.load_profile("colab", stem)
        assert colab["MODELS"] == ["meta-llama/Llama-3.1-8B"] and colab["QUANTIZATION"] == "4bit"
        assert colab["N"] == 1000
    for stem in STEMS:  # both offline models go through every chapter
        assert profiles.load_profile("full", stem)["MODELS"] == OFFLINE_MODELS, stem


def test_ci_profile_is_smaller_than_full():
    for stem in sorted(set(PAPER_CHAPTERS) | set(STEMS)):
        ci, full = profiles.load_profile("ci", stem), profiles.load_profile("full", stem)
        assert ci["MODELS"] == full["MODELS"] and set(ci) == set(full), stem
        for key, value in ci.items():
            if full[key] is None:  # None = everything (e.g. all units)
                continue
            # LAYER_STRIDE: a larger stride is less work
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("SEED", "N_FOLLOWING",
                                                                                           "LAYER_STRIDE"):
                assert value <= full[key], (stem, key)
        assert ci["N"] < full["N"]


def test_load_profile_merges_and_validates(tmp_path):
    p = tmp_path / "mine.yml"
    p.write_text("defaults:\n  MODEL: m\n  N: 5\n02:\n  X: 1\n02_stats:\n  N: 7\nempty:\n")
    assert profiles.load_profile(p, "02_stats") == {"MODEL": "m", "N": 7, "X": 1}
    assert profiles.load_profile(p, "notebooks/02_stats.ipynb") == {"MODEL": "m", "N": 7, "X": 1}
    assert profiles.load_profile(p, "09_other") == {"MODEL": "m", "N": 5}
    assert profiles.load_profile(p, "empty") == {"MODEL": "m", "N": 5}
    with pytest.warns(UserWarning, match=r"does not declare \['X'\]"):
        assert profiles.load_profile(p, "02_stats", declared={"MODEL", "N"}) == {"MODEL": "m", "N": 7}
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        profiles.load_profile("nope", "02_stats")
    with pytest.raises(ValueError, match="does not exist"):
        profiles.load_profile(tmp_path / "missing.yml", "x")
    bad = tmp_path / "bad.yml"
    bad.write_text("defaults: [1, 2]\n")
    with pytest.raises(ValueError, match="block 'defaults' must be a mapping"):
        profiles.load_profile(bad, "x")


def _nb(params_src: str, tags=("parameters",)):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 9. Title"),
                nbformat.v4.new_code_cell(params_src, metadata={"tags": list(tags)}),
                nbformat.v4.new_code_cell("print(N)")]
    return nb


def test_declared_parameters_and_filtering():
    nb = _nb('MODELS = ["smollm2-135m"]  # names\nN: int = 1000\nA, B = 1, 2\n%matplotlib inline\n'
             'import os\nSEED = 0\nCACHE_DIR = None\nLEDGER_DIR = None\n')
    declared = build.declared_parameters(nb)
    assert set(declared) == {"MODELS", "N", "A", "B", "SEED", "CACHE_DIR", "LEDGER_DIR"}
    assert declared["N"] == "1000" and declared["MODELS"] == '["smollm2-135m"]'
    params, dropped = build.notebook_parameters("ci", nb, "02_activation_statistics", {"LEDGER_DIR": "/x"})
    # the ci profile sets them; this notebook does not declare them
    assert dropped == ["MI_COMPARE_UNITS", "MI_UNITS", "N_BOOT", "N_BOOT_SLOW", "N_REFERENCE", "QUANTIZATION",
                       "REFERENCE_INITS", "REFERENCE_SEEDS"]
    assert params == {"MODELS": ["smollm2-135m", "gemma-3-270m"], "N": 96, "SEED": 0, "CACHE_DIR": None,
                      "LEDGER_DIR": "/x"}
    with pytest.raises(ValueError, match="tagged 'parameters'"):
        build.declared_parameters(_nb("N = 1", tags=()))


def test_notebook_stems_and_only(tmp_path):
    for name in ("01_a.py", "01_a.ipynb", "02_b.ipynb", "helper.py", "3_c.py"):
        (tmp_path / name).write_text("")
    assert build.notebook_stems(tmp_path) == ["01_a", "02_b"]
    assert build.notebook_stems(tmp_path, ["02"]) == ["02_b"]
    assert build.notebook_stems(tmp_path, ["01,02_b"]) == ["01_a", "02_b"]
    with pytest.raises(build.BuildError, match="matches none"):
        build.notebook_stems(tmp_path, ["07"])


# ----------------------------------------------------------------------------------------------------------
# the repository's notebooks, table of contents and configuration


def test_config():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert build.repository_url(ROOT / "_config.yml") == "https://github.com/transformer-dynamics/transformer-dynamics"
    # sphinx-book-theme joins path_to_book + "/" + page: it must not produce ".../blob/main/./notebooks/..."
    assert str(cfg["repository"].get("path_to_book", "")).strip("/") in ("",)
    for bib in cfg["bibtex_bibfiles"]:
        assert (ROOT / bib).is_file()
    assert "sphinxcontrib.bibtex" in cfg["sphinx"]["extra_extensions"]


def test_toc_entries_resolve():
    files = build.toc_files(ROOT / "_toc.yml")
    assert files[0] == "book/intro"
    for entry in files:
        if entry.startswith("notebooks/"):
            assert (ROOT / f"{entry}.ipynb").is_file() or (ROOT / f"{entry}.py").is_file(), entry
        else:
            assert (ROOT / f"{entry}.md").is_file(), entry
    assert {"book/methods", "book/ledger", "book/benchmarks", "book/references"} <= set(files)
    assert (ROOT / "book" / "ledger.md").read_text().count(build.LEDGER_MARKER) == 1
    assert (ROOT / "book" / "benchmarks.md").read_text().count(build.BENCHMARKS_MARKER) == 1


def test_every_chapter_is_a_notebook_and_every_notebook_a_chapter():
    chapters = [Path(f).name for f in build.toc_files(ROOT / "_toc.yml") if f.startswith("notebooks/")]
    assert chapters[:5] == PAPER_CHAPTERS  # one chapter per section of the paper, in order
    assert STEMS == chapters, "notebooks/ and the chapters in _toc.yml differ"


def test_citations_resolve():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,\s]+),", bib))
    assert "fernando2025transformer" in keys and len(keys) >= 24
    cited = set()
    for md in (ROOT / "book").glob("*.md"):
        for group in re.findall(r"\{cite[tp]?\}`([^`]+)`", md.read_text()):
            cited.update(k.strip() for k in group.split(","))
    assert cited and cited <= keys, sorted(cited - keys)


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_pair_in_sync_without_outputs(stem):
    py, ipynb = NOTEBOOKS / f"{stem}.py", NOTEBOOKS / f"{stem}.ipynb"
    assert py.is_file() and ipynb.is_file(), f"pair {stem}: `jupytext --set-formats ipynb,py:percent {py.name}`"
    a, b = jupytext.read(py), jupytext.read(ipynb)
    cells = lambda nb: [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]  # noqa
    assert cells(a) == cells(b), f"{stem}.py and .ipynb differ: run `jupytext --sync notebooks/{stem}.py`"
    raw = json.loads(ipynb.read_text())
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, \
                f"{ipynb.name} carries outputs; clear them (the book is built from executed copies)"


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_parameters_cell_declares_every_profile_parameter(stem):
    nb = build.read_notebook(NOTEBOOKS, stem)
    declared = build.declared_parameters(nb)
    assert COMMON <= set(declared), f"{stem}: parameters cell lacks {sorted(COMMON - set(declared))}"
    for name in profiles.available_profiles():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, dropped = build.notebook_parameters(name, nb, stem)
        assert not dropped, f"profile {name} sets {dropped}, which {stem}'s parameters cell does not declare"


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_colab_cell_and_metadata(stem):
    url = build.repository_url(ROOT / "_config.yml")
    nb = build.read_notebook(NOTEBOOKS, stem)
    assert nb.metadata.get("accelerator") == "GPU", f"{stem}: the metadata must ask Colab for a GPU runtime"
    raw = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
    assert raw["metadata"]["accelerator"] == "GPU" and raw["metadata"]["colab"]["gpuType"]
    colab = [c for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source]
    assert len(colab) == 1, f"{stem}: expected one Colab cell"
    cell = colab[0]
    # the package from the notebook's own ref, else the repository's default branch; then one call into it
    # (tests/test_colab.py runs the cell: the ref it installs, the CPU stop)
    assert "transformer-dynamics[quant,hub] @ git+https://github.com/" in cell.source, stem
    assert url.removeprefix("https://github.com/") in cell.source and "@v" not in cell.source, stem
    assert cell.source.rstrip().endswith(f'colab.setup(globals(), "{stem}")')
    assert "remove-cell" in cell.metadata.get("tags", [])
    params_at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert nb.cells.index(cell) == params_at + 1, "the Colab cell must come right after the parameters cell"
    first = nb.cells[0]  # a visible first cell explains the token (hidden in the book only)
    assert first.cell_type == "markdown" and "HF_TOKEN" in first.source and "licence" in first.source


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_defaults_equal_the_full_profile(stem):
    """A plain papermill run (or Jupyter) reproduces the published book: every parameter the full profile sets has
    that value as its default in the parameters cell, and PROFILE defaults to "auto" (full outside Colab)."""
    import ast

    nb = build.read_notebook(NOTEBOOKS, stem)
    declared = build.declared_parameters(nb)
    full = profiles.load_profile("full", stem)
    differ = {k: (ast.literal_eval(declared[k]), v) for k, v in full.items() if ast.literal_eval(declared[k]) != v}
    assert not differ, f"{stem}: (notebook default, full profile) differ for {differ}"
    assert ast.literal_eval(declared["PROFILE"]) == "auto"


@pytest.mark.parametrize("stem", STEMS)
def test_papermill_documents_every_parameter(stem):
    """`papermill --help-notebook` shows a type and a one-line comment for every parameter."""
    import papermill

    inferred = papermill.inspect_notebook(str(NOTEBOOKS / f"{stem}.ipynb"))
    declared = build.declared_parameters(build.read_notebook(NOTEBOOKS, stem))
    assert set(inferred) == set(declared), f"{stem}: papermill misses {sorted(set(declared) - set(inferred))}"
    for name, p in inferred.items():
        assert p["inferred_type_name"] not in ("None", ""), f"{stem}: {name} has no type annotation"
        assert p["help"], f"{stem}: {name} has no one-line comment"


# ----------------------------------------------------------------------------------------------------------
# generated pages


def test_render_ledger_page(tmp_path):
    record_claim(ledger.Ledger("02_x", directory=tmp_path, model="m", n=3), "r_early", 0.9, model="m", ci=(0.85, 0.95))
    page = build.render_ledger_page(f"# L\n\n{build.LEDGER_MARKER}\n\nend\n", tmp_path, profile="ci",
                                   titles={"02_x": "2. X"}, hrefs={"02_x": "../notebooks/02_x.html"},
                                   docs={"02_x": "../notebooks/02_x"}, figures={"02_x": {"1c": "fig-02-1c"}},
                                   downloads={"02_x": "ledger-data/02_x.csv"})
    assert page.startswith("# L\n") and page.rstrip().endswith("end") and build.LEDGER_MARKER not in page
    assert "## 2. X" in page and "From {doc}`../notebooks/02_x`." in page
    assert "{download}`All 1 recorded values as CSV <ledger-data/02_x.csv>`" in page
    # every table is HTML (one raw block: no blank line inside), the claim linked to its chapter's figure
    assert "|---|" not in page and '<a href="../notebooks/02_x.html#fig-02-1c">1C</a>' in page
    for table in re.findall(r"<table.*?</table>", page, re.S):
        assert "\n\n" not in table
    assert "<td>2. X</td>" not in page and '<a href="../notebooks/02_x.html">2. X</a>' in page
    assert "No ledger was found" in build.render_ledger_page("# L\n", tmp_path / "none", profile="ci")


def test_json_to_markdown_shapes():
    md = build.json_to_markdown({"machine": "cpu", "threads": 2,
                                "results": [{"n": 100, "seconds": 0.5, "err": {"max": 1e-9}},
                                            {"n": 1000, "seconds": 4.25, "note": "x|y"}],
                                "by_method": {"kde": {"s": 1.0}, "ksg": {"s": 2.0}}})
    assert "<tr><td>machine</td><td>cpu</td></tr>" in md and "<tr><td>threads</td><td>2</td></tr>" in md
    assert "<th>n</th><th>seconds</th><th>err.max</th><th>note</th>" in md
    assert "<tr><td>1000</td><td>4.25</td><td></td><td>x|y</td></tr>" in md
    assert "<th>name</th><th>s</th>" in md and "<tr><td>ksg</td><td>2</td></tr>" in md
    assert build.json_to_markdown([{"a": 1}, {"a": 2, "b": [1, 2]}]).count("<th>") == 2


def test_render_benchmarks_page(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "mi_speed.json").write_text(json.dumps([{"method": "kde", "seconds": 1.5,
                                                    "python": "/home/someone/venv/bin/python"}]))
    (res / "capture.json").write_text(json.dumps({"ours_vs_nnsight": 1.26, "ours_vs_forward": 1.25,
                                                  "goal_ours_vs_forward": 1.2, "goal_ours_vs_each_peer": 2.0}))
    (res / "book.json").write_text(json.dumps({"goal_s": 1500, "meets_goal": False, "floor_s": 1050,
                                               "rows": [{"step": "01_a", "wall_s": 565.3}]}))
    (res / "broken.json").write_text("{")
    timings = {"profile": "ci", "notebooks": {"01_a": {"seconds": 3.2, "ok": True}}}
    figs = tmp_path / "figs"
    page = build.render_benchmarks_page(f"# B\n{build.BENCHMARKS_MARKER}\n", res, timings,
                                        titles={"01_a": "1. A"}, figures_dir=figs)
    # time per chapter: this build and the recorded cold run, a table and a chart
    assert "## Time per chapter" in page and "<th>this build (ci) (s)</th><th>book (s)</th>" in page
    assert "<tr><td>1. A</td><td>3.2</td><td>565</td></tr>" in page
    assert (figs / "chapter-times.png").read_bytes()[:4] == b"\x89PNG" and ":::{figure} figs/chapter-times.png" in page
    # ratios against peers with their goals, and the goals and floors
    assert "<tr><td>capture</td><td>ours vs nnsight</td><td>1.26</td><td>≤ 2 (each peer)</td></tr>" in page
    assert "<tr><td>capture</td><td>ours vs forward</td><td>1.25</td><td>≤ 1.2</td></tr>" in page
    assert "<tr><td>book</td><td>floor s</td><td>1050</td></tr>" in page
    assert "<tr><td>book</td><td>meets goal</td><td>no</td></tr>" in page
    # every result folded, as recorded; a file that does not read says so
    assert ":::{dropdown} mi_speed" in page and "<tr><td>kde</td><td>1.5</td><td>.../python</td></tr>" in page
    assert "could not be read" in page and "|---|" not in page
    assert "/home/someone" not in page  # no folder of the machine that measured it
    assert "No benchmark results yet" in build.render_benchmarks_page("# B\n", tmp_path / "none")


# ----------------------------------------------------------------------------------------------------------
# end to end on a throwaway book: papermill, staging, Jupyter Book, browser


DUMMY = '''# %% [markdown]
# # 1. A throwaway chapter

# %% tags=["parameters"]
MODEL = "smollm2-135m"
N = 1000
SEED = 0
CACHE_DIR = None
LEDGER_DIR = None

# %% tags=["remove-cell"]
import sys
if "google.colab" in sys.modules:
    raise RuntimeError("not in Colab")

# %%
from IPython.display import Markdown, display
from transformer_dynamics.ledger import Ledger, show_table
led = Ledger("01_dummy", directory=LEDGER_DIR, model=MODEL, n=N)
led.record("n_seen", N * 2, claim="twice N", figure="1A")
display(Markdown("| a | b |\\n|---|---|\\n| 1 | mean \\\\|x\\\\| |"))

# %% mystnb={"figure": {"caption": "A line, {models}.", "name": "fig-01-1a"}, "image": {"alt": "Line of N, {models}"}}
import matplotlib.pyplot as plt
plt.plot(range(N))
plt.show()

# %%
show_table(led)
'''

FAILING = '''# %% tags=["parameters"]
N = 1
LEDGER_DIR = None

# %%
raise ValueError(f"deliberate {N}")
'''


@pytest.fixture(scope="module")
def dummy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dummybook")
    (root / "notebooks").mkdir()
    (root / "book").mkdir()
    (root / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    for name in ("CITATION.cff", "LICENSE"):
        (root / name).write_text((ROOT / name).read_text())
    for name in ("intro.md", "ledger.md", "benchmarks.md", "references.md", "references.bib"):
        (root / "book" / name).write_text((ROOT / "book" / name).read_text())
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n- file: notebooks/01_dummy\n"
                                   "- file: notebooks/02_failing\n- file: book/ledger\n- file: book/benchmarks\n"
                                   "- file: book/references\n")
    (root / "notebooks" / "01_dummy.py").write_text(DUMMY)
    (root / "notebooks" / "02_failing.py").write_text(FAILING)
    (root / "profile.yml").write_text("defaults:\n  N: 7\n  MODEL: tiny\n  SEED: 3\n  TYPO: 1\n")
    return root


def test_end_to_end_on_a_throwaway_notebook(dummy_root, capsys):
    root = dummy_root
    before = sorted(p.name for p in (root / "notebooks").iterdir())
    status = build_main(["run", "--profile", str(root / "profile.yml"), "--root", str(root)])
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert status == 1, "a failing notebook must fail the run"
    assert "02_failing" in err and "ValueError: deliberate 7" in err and 'raise ValueError(f"deliberate {N}")' in err
    # progress: the chapter (k/n) on stdout, papermill's bar over its cells on stderr
    assert "[1/2] 01_dummy: not timed before" in out and "[2/2] 02_failing" in out
    assert re.search(r"01_dummy \(cells\): 100%.*\d+/\d+", err)
    assert sorted(p.name for p in (root / "notebooks").iterdir()) == before  # nothing written into notebooks/
    timings = json.loads((root / "_build" / "timings-profile.json").read_text())
    assert timings["notebooks"]["01_dummy"]["ok"] and not timings["notebooks"]["02_failing"]["ok"]
    assert timings["notebooks"]["01_dummy"]["dropped"] == ["TYPO"]
    assert timings["notebooks"]["02_failing"]["parameters"]["N"] == 7
    led = ledger.load(root / "_build" / "ledger" / "profile" / "01_dummy.json")
    assert led["context"] == {"model": "tiny", "n": 7} and led["entries"][0]["value"] == 14
    executed = nbformat.read(root / "_build" / "executed" / "profile" / "01_dummy.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "N = 7" in injected[0].source and "TYPO" not in injected[0].source
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in executed.cells if c.cell_type == "code" for o in c.outputs)

    with pytest.raises(build.BuildError, match=r"incomplete chapter\(s\) not published \(02_failing: its last run "
                                               r"failed\)"):
        build.build_html(str(root / "profile.yml"), root)  # a failed chapter is not published by default
    html = build.build_html(str(root / "profile.yml"), root, publish_incomplete=True)  # its partial run, loudly
    # the banner and the footer on every page: profile, models and N of what this build shows (from the
    # ledger's context); how to cite and the licence
    for name in ("notebooks/01_dummy.html", "book/intro.html", "book/ledger.html"):
        text = (html / name).read_text()
        assert "This build shows the <b>profile</b> profile" in text and "models tiny" in text and "N = 7" in text
        assert "How to cite" in text and "Licence" in text
    assert (html / "notebooks" / "01_dummy.html").is_file() and (html / "book" / "ledger.html").is_file()
    page = (html / "notebooks" / "01_dummy.html").read_text()
    assert ("https://colab.research.google.com/github/transformer-dynamics/transformer-dynamics/blob/main/"
            "notebooks/01_dummy.ipynb") in page
    assert "not in Colab" not in page  # the remove-cell tag is honoured
    # tables render as tables: a Markdown output (myst-nb told to parse it as MyST) and show_table's HTML
    assert "|—|" not in page and page.count("<table") == 2 and "twice N" in page
    # the figure: numbered caption and alt text with the models filled in
    assert 'alt="Line of N, tiny"' in page and "A line, tiny." in page
    assert re.search(r'<span class="caption-number">Fig\. \d+ </span>', page) and 'id="fig-01-1a"' in page
    # papermill's injected cell: folded, the build machine's folders left out of the page and the downloads
    staged = nbformat.read(root / "_build" / "src" / "notebooks" / "01_dummy.ipynb", as_version=4)
    injected = next(c for c in staged.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "hide-cell" in injected.metadata["tags"] and "N = 7" in injected.source
    assert "LEDGER_DIR" in injected.source and "_build" not in injected.source
    assert str(root) not in page and str(root) not in (html / "_sources" / "notebooks" / "01_dummy.ipynb").read_text()
    # a .py beside the .ipynb in the download menu
    script = html / "_static" / "notebooks" / "01_dummy.py"
    assert script.is_file() and str(root) not in script.read_text() and "# %%" in script.read_text()
    assert 'href="../_static/notebooks/01_dummy.py"' in page
    ledger_page = (html / "book" / "ledger.html").read_text()
    assert "twice N" in ledger_page and "tiny" in ledger_page and "01_dummy.csv" in ledger_page
    assert '<a href="../notebooks/01_dummy.html#fig-01-1a">1A</a>' in ledger_page

    if build.opted_out():
        pytest.skip(f"{build.OPT_OUT_ENV} is set: the browser check was opted out explicitly")
    build.ensure_chromium(install=True)  # installs it on Debian as root; otherwise fails, saying what to install
    report = build.check_html(root)
    assert not report["pages"]["notebooks/01_dummy"]["failures"]
    assert report["pages"]["notebooks/01_dummy"]["figures"] >= 1
    fails = report["pages"]["notebooks/02_failing"]["failures"]
    assert any("error output" in f for f in fails) and any("no figure" in f for f in fails)
    shot = root / "_build" / "screenshots" / "01_dummy.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a missing image is caught
    for img in (html / "_images").glob("*.png"):
        img.unlink()
    report = build.check_html(root, only=["01"])
    assert any("broken image" in f for f in report["pages"]["notebooks/01_dummy"]["failures"])


# ----------------------------------------------------------------------------------------------------------
# progress, banner, API page


def test_docstrings_have_no_markup_errors(tmp_path, monkeypatch):
    """What would show as red "problematic" spans on the API pages; a constructed module is caught first."""
    (tmp_path / "td_broken_doc.py").write_text(
        'def f():\n    """mean |R| per unit; p = #{|rho_perm| >= |rho|}; see mean_ and ``open."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    found = site.docstring_problems(["td_broken_doc"])
    assert any("substitution" in f and f.startswith("td_broken_doc.f") for f in found)
    assert any("literal" in f for f in found)
    assert site.docstring_problems(site.api_modules()) == []


def test_footer_says_how_to_cite_and_the_licence():
    footer = site.site_footer(ROOT, "https://github.com/o/r")
    assert "<b>How to cite</b>" in footer and "version 0.1.0" in footer and "arXiv:2502.12131" in footer
    assert "Fernando &amp; Guitchounts (2025)" in footer
    assert 'href="https://github.com/o/r/blob/main/CITATION.cff"' in footer
    assert "<b>Licence</b>: MIT" in footer and 'href="https://github.com/o/r/blob/main/LICENSE"' in footer
    assert site.site_footer(ROOT / "book") == ""


def test_progress_estimate_from_previous_timings(tmp_path):
    path = tmp_path / "timings-ci.json"
    path.write_text(json.dumps({"notebooks": {"01_a": {"seconds": 100, "ok": True},
                                              "02_b": {"seconds": 50.5, "ok": True},
                                              "03_c": {"seconds": 7, "ok": False}}}))
    prev = runner.previous_timings(path)
    assert prev == {"01_a": 100.0, "02_b": 50.5}  # a failed run is no estimate
    assert runner.estimate_left(["02_b", "03_c"], prev) == (50.5, ["03_c"])
    assert runner.previous_timings(tmp_path / "none.json") == {}
    line = runner._progress_line(1, ["01_a", "02_b", "03_c"], prev, 130)
    assert line.startswith("[2/3] 02_b: last run 50 s;") and "~50 s left" in line and "1 chapter(s) never timed" in line
    assert runner.format_duration(3725) == "1 h 02 min" and runner.format_duration(95) == "1 min 35 s"


def test_build_context_and_banner(tmp_path):
    ctx = pages.build_context("ci")  # no ledgers: the profile's defaults
    assert ctx == {"profile": "ci", "models": ["smollm2-135m", "gemma-3-270m"], "n": [96]}
    assert "<b>ci</b> profile (a small test build" in pages.banner(ctx) and "N = 96" in pages.banner(ctx)
    ledger.Ledger("02_x", directory=tmp_path, models=["a", "b"], n=10).record("k", 1.0)
    ledger.Ledger("03_y", directory=tmp_path, model="c", n=20).record("k", 1.0)
    ctx = pages.build_context(tmp_path / "full.yml", tmp_path)  # what was run wins over the profile
    assert ctx == {"profile": "full", "models": ["a", "b", "c"], "n": [10, 20]}
    assert "N = 10 / 20" in pages.banner(ctx)


def test_api_page_lists_every_public_module():
    mods = site.api_modules()
    assert "transformer_dynamics.ledger" in mods and "transformer_dynamics.build.runner" in mods
    assert not any(m.endswith("__main__") for m in mods)
    # an index page linking one page per module, each with the module's first sentence
    page = site.render_api_page(f"# API\n\n{site.API_MARKER}\n", ["transformer_dynamics.ledger"])
    assert "- [`transformer_dynamics.ledger`](api/transformer_dynamics.ledger.md): The reproduction ledger" in page
    assert site.API_MARKER not in page
    assert ".. automodule:: transformer_dynamics.ledger" in site.render_api_module("transformer_dynamics.ledger")
    toc = site._api_toc(yaml.safe_load((ROOT / "_toc.yml").read_text()), ["a.b", "a.c"])
    assert {"file": "book/api", "sections": [{"file": "book/api/a.b"}, {"file": "book/api/a.c"}]} in \
        [c for part in toc["parts"] for c in part["chapters"]]
    assert (ROOT / "book" / "api.md").read_text().count(site.API_MARKER) == 1
    assert "book/api" in build.toc_files(ROOT / "_toc.yml")


# ----------------------------------------------------------------------------------------------------------
# CI and publishing


def test_workflows_build_the_full_book_and_test_pull_requests():
    book_wf = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = book_wf["jobs"]["build"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "make book PROFILE=full" in runs
    # a cache saved on every run (run-specific key, even after a failure), restored from the newest
    saves = [s for s in steps if str(s.get("uses", "")).startswith("actions/cache/save")]
    restores = [s for s in steps if str(s.get("uses", "")).startswith("actions/cache/restore")]
    assert any(".td-cache" in s["with"]["path"] and "github.run_id" in s["with"]["key"] and s.get("if") == "always()"
               for s in saves)
    assert any(".td-cache" in s["with"]["path"] and s["with"].get("restore-keys") for s in restores)
    test_wf = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    assert "pull_request" in test_wf[True]  # YAML reads the key `on` as True
    assert any(s.get("run") == ".ci/run" for s in test_wf["jobs"]["test"]["steps"])
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for wf in (ROOT / ".github" / "workflows").glob("*.yml"):  # CI never opts out of the browser check
        assert "TRANSFORMER_DYNAMICS_NO_BROWSER:" not in wf.read_text() and "NO_BROWSER=1" not in wf.read_text()


def test_makefile_sets_up_chromium_for_test_and_book():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: venv browser$", text, re.M) and re.search(r"^book: venv browser$", text, re.M)
    assert "-m transformer_dynamics.build browser" in text and "transformer_dynamics.book" not in text
