"""The runner's warm rebuild: a chapter executes again only when its notebook, parameters, package source or
environment changed, or its published outputs are missing or damaged; ``--force`` executes every chapter. Stub
chapters in tmp_path (a parameters cell, a ledger file written by hand, a line appended per execution), not the
book's."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from transformer_dynamics.build import runner
from transformer_dynamics.build.__main__ import _parser

STUB = '''# %% [markdown]
# # {title}

# %% tags=["parameters"]
N = 1
LEDGER_DIR = None

# %%
import json, pathlib
pathlib.Path(LEDGER_DIR, "{stem}.json").write_text(json.dumps({{"notebook": "{stem}", "entries": [N]}}))
with open("../executions.txt", "a") as fh:
    fh.write("{stem}\\n")
print("ran {stem}", N)
'''


def _stub_book(root: Path) -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    for stem, title in (("01_a", "A"), ("02_b", "B")):
        (root / "notebooks" / f"{stem}.py").write_text(STUB.format(stem=stem, title=title))
    (root / "p.yml").write_text("defaults:\n  N: 3\n")
    return root


def _run(root: Path, **kw) -> list[str]:
    """``build run`` of the stub book under profile p -> the chapters that executed (in order)."""
    log = root / "executions.txt"
    log.unlink(missing_ok=True)
    rec = runner.run_notebooks(str(root / "p.yml"), root, progress=False, **kw)
    assert not rec["failures"], rec["failures"]
    return log.read_text().split() if log.is_file() else []


def test_warm_rebuild_executes_only_what_changed(tmp_path, monkeypatch):
    root = _stub_book(tmp_path)
    out = root / "_build"
    nb, led = out / "executed" / "p" / "01_a.ipynb", out / "ledger" / "p"
    assert _run(root) == ["01_a", "02_b"]                               # cold: everything
    assert _run(root) == []                                             # warm, nothing changed: nothing
    timings = json.loads((out / "timings-p.json").read_text())["notebooks"]
    assert all(e["reused"] and e["ok"] and e["seconds"] > 0 for e in timings.values())
    assert runner.incomplete_chapters(out, "p") == {}
    # a chapter's prose edited: only that chapter
    src = root / "notebooks" / "02_b.py"
    src.write_text(src.read_text().replace("# # B", "# # B, reworded"))
    assert _run(root) == ["02_b"]
    # half-written output (a notebook cut short, as a crash mid-copy would leave it): executed again
    nb.write_bytes(nb.read_bytes()[:100])
    assert _run(root) == ["01_a"]
    nbformat.read(nb, as_version=4)                                     # whole again
    assert (led / "01_a.json").is_file()                                # (a damaged ledger: test_reuse_blocker_*)
    # the package's source changed: executed again
    monkeypatch.setattr(runner, "package_source_hash", lambda *a: "0" * 64)
    assert _run(root, only=["01"]) == ["01_a"]
    monkeypatch.undo()
    # a parameter changed: executed again, under the new value
    (root / "p.yml").write_text("defaults:\n  N: 4\n")
    assert _run(root, only=["01"]) == ["01_a"] and json.loads((led / "01_a.json").read_text())["entries"] == [4]
    assert _run(root, only=["01"]) == []
    # --force: executed although nothing changed
    assert _run(root, only=["02"], force=True) == ["02_b"]
    assert json.loads((out / "timings-p.json").read_text())["notebooks"]["02_b"]["reused"] is False


def _entry(tmp_path: Path) -> tuple[dict, dict, Path, Path]:
    """A complete last run of one chapter, made by hand: (its timings entry, its inputs, notebook, ledger dir)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A"), nbformat.v4.new_code_cell("1")])
    inputs = runner.chapter_inputs(nb, {"N": 3}, "p" * 64, {"env": {}})
    executed, led = tmp_path / "01_a.ipynb", tmp_path / "ledger"
    led.mkdir()
    nbformat.write(nb, executed)
    (led / "01_a.json").write_text('{"entries": []}')
    outputs = {"notebook": runner._file_sha256(executed),
               "ledger": {"01_a.json": runner._file_sha256(led / "01_a.json")}}
    entry = {"seconds": 2.0, "ok": True, "state": "ok", "inputs": inputs, "outputs": outputs}
    return entry, inputs, executed, led


def test_reuse_blocker_names_each_reason(tmp_path):
    entry, inputs, executed, led = _entry(tmp_path)
    assert runner.reuse_blocker(entry, inputs, executed, led) is None
    # the last run did not finish (killed: still "running"; interrupted; failed), or there is none
    for bad in ({**entry, "state": "running"}, {**entry, "state": "interrupted", "ok": False},
                {**entry, "ok": False, "state": "failed"}, None, {**entry, "inputs": None}):
        assert runner.reuse_blocker(bad, inputs, executed, led) is not None
    # an input changed: named
    for key in inputs:
        assert runner.reuse_blocker(entry, {**inputs, key: "x"}, executed, led) == f"changed: {key}"
    # outputs missing or damaged
    good = executed.read_bytes()
    executed.write_bytes(good[:-10])
    assert "executed notebook" in runner.reuse_blocker(entry, inputs, executed, led)
    executed.write_bytes(good)
    (led / "01_a.json").write_text('{"entries": [1]}')
    assert "ledger 01_a.json" in runner.reuse_blocker(entry, inputs, executed, led)
    (led / "01_a.json").unlink()
    assert "ledger 01_a.json" in runner.reuse_blocker(entry, inputs, executed, led)


def test_chapter_inputs_see_prose_metadata_and_parameters():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A"), nbformat.v4.new_code_cell("1")])
    base = runner.chapter_inputs(nb, {"N": 3}, "p" * 64, {"env": {}})
    assert runner.chapter_inputs(nb, {"N": 3}, "p" * 64, {"env": {}}) == base   # deterministic
    nb.cells[0].source = "# A, reworded"
    assert runner.chapter_inputs(nb, {"N": 3}, "p" * 64, {"env": {}})["notebook"] != base["notebook"]
    nb.cells[0].source = "# A"
    nb.cells[1].metadata["tags"] = ["remove-cell"]
    assert runner.chapter_inputs(nb, {"N": 3}, "p" * 64, {"env": {}})["notebook"] != base["notebook"]
    changed = runner.chapter_inputs(nb, {"N": 4}, "q" * 64, {"env": {"TRANSFORMER_DYNAMICS_DATA": "/x"}})
    assert all(changed[k] != base[k] for k in ("parameters", "package", "environment"))


def test_package_source_hash_sees_every_source_byte(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "k.c").write_text("int f(void) { return 1; }\n")
    h = runner.package_source_hash(pkg)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert runner.package_source_hash(pkg) == h                          # byte code is not source
    (pkg / "sub" / "k.c").write_text("int f(void) { return 2; }\n")
    assert runner.package_source_hash(pkg) != h                          # the C kernel's source is
    assert len(runner.package_source_hash()) == 64                       # the installed package


@pytest.mark.parametrize("command", ["run", "all"])
def test_force_flag(command):
    assert _parser().parse_args([command, "--force"]).force is True
    assert _parser().parse_args([command]).force is False


def _bench_book():
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        return importlib.import_module("bench_book")
    finally:
        sys.path.pop(0)


def test_bench_book_goals_are_issue_27s_and_judged():
    bb = _bench_book()
    rec = {"profile": "full", "complete": True, "idle_wall_estimate_s": [1000.0, 2000.0],
           "warm_complete": True, "warm_total_wall_s": 150.0, "capture_floor": {"floor_s": 1048.0}}
    bb.set_goals(rec, "full")
    assert (rec["goal_s"], rec["goal_warm_s"], rec["goal_make_test_s"], rec["goal_kde_mi_paper_scale_s"],
            rec["goal_capture_floor_s"]) == (1800, 180, 600, 10, 524)
    bb.judge(rec)
    assert rec["meets_goal"] is None and rec["meets_goal_warm"] is True  # 2 busy cores make it, 1 would not
    assert rec["capture_floor"]["meets_goal"] is False and rec["capture_floor_share_of_goal"] == 0.582
    rec.update(warm_total_wall_s=200.0, idle_wall_estimate_s=[1900.0, 3800.0])
    bb.judge(rec)
    assert rec["meets_goal"] is False and rec["meets_goal_warm"] is False
    ci = {}
    bb.set_goals(ci, "ci")  # the book's goals are the full profile's
    assert ci["goal_s"] is None and ci["goal_warm_s"] is None and ci["goal_make_test_s"] == 600


def test_bench_book_eigen_floor_counts_chapter_7_s_problems_and_joins_the_capture_floor():
    bb = _bench_book()
    from transformer_dynamics import dynamics, profiles

    p = profiles.load_profile("full", "07_local_dynamics")
    shapes = {m: (60, 576) for m in p["MODELS"]}
    floor = bb.eigen_floor("full", shapes, seconds=lambda d: 0.5)
    runs = len(p["CONDITIONS"]) + len(p["REFERENCE_INITS"]) * len(p["REFERENCE_SEEDS"])
    per_model = runs * p["N_JACOBIAN"] * len(dynamics.claim_sublayers(60, layer_stride=p["LAYER_STRIDE"]))
    assert [r["problems"] for r in floor["models"]] == [per_model] * len(p["MODELS"])
    assert floor["floor_s"] == round(len(p["MODELS"]) * per_model * 0.5 / floor["cores"], 1)
    rec = {"goal_s": 1800, "goal_capture_floor_s": 524, "capture_floor": {"floor_s": 1000.0},
           "eigen_floor": {"floor_s": 900.0}}
    bb.judge(rec)
    assert rec["book_floor_s"] == 1900.0 and rec["book_floor_share_of_goal"] == 1.056
    assert 0 < bb.eig_seconds(32, repeats=1) < 1


def test_bench_book_is_complete_only_with_every_step_of_the_book():
    """A run of some chapters (--only, --no-html) measures part of the book: never complete, its missing steps named."""
    bb = _bench_book()
    whole = ["01_a", "02_b", "html", "browser check"]
    part = [{"step": "01_a", "ok": True, "warm_ok": True}, {"step": "02_b", "ok": True, "warm_ok": True}]
    assert bb.completeness(part, whole) == {"complete": False, "missing": ["html", "browser check"]}
    rows = part + [{"step": "html", "ok": True, "warm_ok": True}, {"step": "browser check", "ok": True}]
    assert bb.completeness(rows, whole) == {"complete": True, "missing": []}
    assert bb.completeness(rows, whole, "warm_ok") == {"complete": False, "missing": ["browser check"]}
    rec = {"goal_warm_s": 180, "warm_total_wall_s": 9.0, "warm_complete": False}
    bb.judge(rec)
    assert rec["meets_goal_warm"] is None       # a warm pass over part of the book meets no goal and misses none
    rows[1]["ok"] = False
    assert bb.completeness(rows, whole) == {"complete": False, "missing": ["02_b"]}


def test_bench_book_floor_per_step_and_warm_column(tmp_path):
    bb = _bench_book()
    rec = {"rows": [{"step": "01_a", "wall_s": 100.0, "cpu_s": 150.0, "captures": ["e1", "e2"],
                     "warm_wall_s": 2.0, "warm_cpu_s": 1.5},
                    {"step": "02_b", "wall_s": 50.0, "cpu_s": 60.0, "captures": [], "warm_wall_s": 1.0,
                     "warm_cpu_s": 1.0},
                    {"step": "html", "wall_s": 30.0, "cpu_s": 20.0, "warm_wall_s": 25.0, "warm_cpu_s": 19.0}],
           "capture_floor": {"captures": [{"entry": "e1", "floor_s": 30.0}, {"entry": "e2", "floor_s": 10.0},
                                          {"entry": "e3", "floor_s": None}]}}
    bb.per_step_floor(rec)
    assert (rec["rows"][0]["floor_s"], rec["rows"][0]["floor_share"]) == (40.0, 0.4)
    assert rec["rows"][1]["floor_s"] == 0.0 and "floor_s" not in rec["rows"][2]
    from transformer_dynamics.build import pages

    res = tmp_path / "results"
    res.mkdir()
    (res / "book_cold_full.json").write_text(json.dumps(rec))
    page = pages.render_benchmarks_page("# B\n", res)
    assert "book_cold_full, warm (s)" in page and "book_cold_full (s)" in page
    (res / "book_cold_full.json").write_text(json.dumps({**rec, "complete": False}))
    page = pages.render_benchmarks_page("# B\n", res)   # a run that stopped early is named so
    assert "book_cold_full, incomplete (s)" in page and "book_cold_full (s)" not in page


def test_bench_book_reads_which_chapters_were_reused(tmp_path):
    bb = _bench_book()
    t = tmp_path / "timings-full.json"
    t.write_text(json.dumps({"notebooks": {"01_a": {"ok": True, "reused": True}, "02_b": {"ok": True}}}))
    assert bb.reused_chapters(t) == {"01_a": True, "02_b": False}
    assert bb.reused_chapters(tmp_path / "none.json") == {}


READER = '''# %% [markdown]
# # R

# %% tags=["parameters"]
LEDGER_DIR = None

# %%
import json, pathlib
from transformer_dynamics import ledger
a = ledger.load(ledger.book_directory(LEDGER_DIR) / "01_a.json")
pathlib.Path(LEDGER_DIR, "02_r.json").write_text(json.dumps({"notebook": "02_r", "entries": a["entries"]}))
with open("../executions.txt", "a") as fh:
    fh.write("02_r\\n")
'''


def test_a_chapter_that_read_another_s_ledger_runs_again_when_it_changed(tmp_path):
    """Chapter 10 reads the effect sizes chapters 2-4 recorded, chapter 11 chapter 7's exponents: when the ledger
    a chapter read has changed, reusing the reader would publish numbers made from the old one."""
    root = _stub_book(tmp_path)
    (root / "notebooks" / "02_b.py").unlink()
    (root / "notebooks" / "02_r.py").write_text(READER)
    led = root / "_build" / "ledger" / "p"
    assert _run(root) == ["01_a", "02_r"]
    assert json.loads((led / "02_r.json").read_text())["entries"] == [3]   # read from the finished chapter's ledger
    assert _run(root) == []
    (root / "p.yml").write_text("defaults:\n  N: 4\n")
    assert _run(root, only=["01"]) == ["01_a"]
    assert _run(root) == ["02_r"]                                        # what it read has changed: runs again
    assert json.loads((led / "02_r.json").read_text())["entries"] == [4]
    assert _run(root) == []
    timings = json.loads((root / "_build" / "timings-p.json").read_text())["notebooks"]
    assert list(timings["02_r"]["outputs"]["reads"]) == [str((led / "01_a.json").resolve())]
