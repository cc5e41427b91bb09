"""Every chapter notebook executed by papermill on the ``ci`` profile (default model, small parameters), its
recorded ledger values checked, then the book built and checked in headless Chromium.

This is the CI path: one run of all notebooks (module-scoped) serves every assertion. The browser part is never
skipped unless the user opts out explicitly (``TRANSFORMER_DYNAMICS_NO_BROWSER=1``, which CI never sets).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import nbformat
import pytest

from transformer_dynamics import build, claims, ledger, profiles

from conftest import ci_book

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STEMS = build.notebook_stems(ROOT / "notebooks") if (ROOT / "notebooks").is_dir() else []
PROFILE = "ci"
RUN_TIMEOUT = int(os.environ.get("TRANSFORMER_DYNAMICS_NOTEBOOK_TIMEOUT", "1800"))


@pytest.fixture(scope="module")
def ci_build(request):
    """The ci book, ``book run --profile ci`` into a fresh build folder then ``book html``, started in the
    background when collection ended (``conftest.pytest_collection_modifyitems``); waits for it and returns
    (out_dir, completed ``run``: its return code and log)."""
    if not STEMS:
        pytest.skip("no notebooks in notebooks/ yet")
    started = ci_book(request.config)
    assert started, "the ci book was not started (conftest.pytest_collection_modifyitems)"
    out, proc = started
    try:
        proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and the build under it (its own session)
        pytest.fail(f"the ci book did not finish in {RUN_TIMEOUT} s "
                    "($TRANSFORMER_DYNAMICS_NOTEBOOK_TIMEOUT sets the limit)")
    return out, _finished(out, "run")


def _finished(out: Path, name: str) -> subprocess.CompletedProcess:
    """The background step ``name``'s exit status and log (a step that never ran has return code None)."""
    rc, log = out / f"{name}.rc", out / f"{name}.log"
    code = int(rc.read_text()) if rc.is_file() else None
    return subprocess.CompletedProcess(name, code, stdout=log.read_text() if log.is_file() else "", stderr="")


def _fail_log(proc) -> str:
    return "\n".join(((proc.stdout or "") + "\n" + (proc.stderr or "")).splitlines()[-80:])


def test_all_notebooks_run(ci_build):
    out, proc = ci_build
    assert proc.returncode == 0, "notebooks failed on the ci profile:\n" + _fail_log(proc)
    timings = json.loads((out / f"timings-{PROFILE}.json").read_text())
    assert set(timings["notebooks"]) == set(STEMS)
    assert all(t["ok"] for t in timings["notebooks"].values())
    print({k: v["seconds"] for k, v in timings["notebooks"].items()}, "total", timings["total_seconds"])


def _figures_shown_twice(nb) -> list[str]:
    """The code cells whose figure is both the cell's result and drawn by the inline backend (a plotting call
    left as the last line without ``;`` or an assignment): the book shows it twice."""
    out = []
    for c in nb.cells:
        kinds = [o.get("output_type") for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        if "execute_result" in kinds and "display_data" in kinds:
            out.append(c.source.strip().splitlines()[-1][:80])
    return out


#: How the ledger writes a non-finite number (ledger._plain: str(float)).
_NON_FINITE = {"nan", "inf", "-inf"}


def _finite_rectangular(value) -> bool:
    """A finite number, a (nested) list of finite numbers with a rectangular shape, or a dict of those; or a word
    recorded as a plain value (chapter 1's "BOS first"), never the ledger's spelling of NaN or inf."""
    if isinstance(value, str):
        return bool(value.strip()) and value.strip().lower() not in _NON_FINITE
    if isinstance(value, dict):
        return bool(value) and all(_finite_rectangular(v) for v in value.values())
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, list) and value:
        if all(isinstance(v, list) for v in value):
            return len({len(v) for v in value}) == 1 and all(_finite_rectangular(v) for v in value)
        return all(not isinstance(v, list) and _finite_rectangular(v) for v in value)
    return False


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_executed_and_ledger_values_finite(ci_build, stem):
    out, proc = ci_build
    executed = out / "executed" / PROFILE / f"{stem}.ipynb"
    assert executed.is_file(), f"{stem} was not executed:\n" + _fail_log(proc)
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{stem}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {})]
    assert images, f"{stem} drew no figure"
    twice = _figures_shown_twice(nb)
    assert not twice, f"{stem}: a figure shown twice (returned by the cell's last line and drawn inline): {twice}"

    path = out / "ledger" / PROFILE / f"{stem}.json"
    assert path.is_file(), f"{stem} recorded nothing in the ledger"
    data = ledger.load(path)
    params = profiles.load_profile(PROFILE, stem)
    assert data["notebook"] == stem
    assert data["context"].get("models") == params["MODELS"] and data["context"].get("n") == params["N"]
    assert data["entries"], f"{stem}: empty ledger"
    keys = [(e.get("model", ""), e["key"]) for e in data["entries"]]
    assert len(keys) == len(set(keys))
    # every model of the profile went through the chapter and recorded its numbers (a chapter that runs no
    # model, such as the known-answer appendix, records its values without one)
    if ledger.models_of(data) != [""]:
        assert set(params["MODELS"]) <= set(ledger.models_of(data)), (stem, ledger.models_of(data))
    bad = [(e["key"], e["value"]) for e in data["entries"]
           if not _finite_rectangular(e["value"]) and not (e.get("verdict") and e["value"] == "nan")]
    assert not bad, f"{stem}: non-finite or ragged ledger values {bad}"
    for e in data["entries"]:
        assert e["holds"] in (True, False, None), e["key"]
        if e.get("ci") is not None:
            lo, hi = e["ci"]
            assert isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo <= hi, (e["key"], e["ci"])
        if e["holds"] is not None:
            assert e["claim"], f"{stem}/{e['key']}: a yes/no entry needs its claim"
    _verdicts_come_from_the_registry(stem, data["entries"])


def _verdicts_come_from_the_registry(stem, entries):
    """Every verdict in a ledger JSON is the registry's verdict on the recorded value and interval, and the
    corrected verdicts are Benjamini-Hochberg over the chapter's rows."""
    from transformer_dynamics import verdicts

    rows = [e for e in entries if e.get("verdict") is not None or e["holds"] is not None]
    for e in rows:
        assert e.get("registry") in claims.REGISTRY, f"{stem}/{e['key']}: a verdict not from the registry"
        assert verdicts.rederive(e)[0] == e["verdict"], (stem, e["key"], verdicts.rederive(e), e["verdict"])
    _, corrected = verdicts.corrected([e["verdict"] for e in rows],
                                      [float("nan") if e.get("p") is None else float(e["p"]) for e in rows])
    assert corrected == [e.get("verdict_bh") for e in rows], stem


@pytest.fixture(scope="module")
def ci_html(ci_build):
    out, proc = ci_build
    if proc.returncode != 0:
        pytest.fail("notebooks failed; no book to build:\n" + _fail_log(proc))
    html = _finished(out, "html")
    assert html.returncode == 0, "the HTML did not build:\n" + _fail_log(html)
    return out / "html"


def test_book_builds_and_passes_the_browser_check(ci_build, ci_html):
    out, _ = ci_build
    assert (ci_html / "index.html").is_file()
    ledger_html = (ci_html / "book" / "ledger.html").read_text()
    for stem in STEMS:
        assert (ci_html / "notebooks" / f"{stem}.html").is_file()
    assert "No ledger was found" not in ledger_html
    if build.opted_out():
        pytest.skip(f"browser check opted out ({build.OPT_OUT_ENV}); CI never sets it")
    report_file = out / "check-report.json"
    if _finished(out, "check").returncode is not None and report_file.is_file():
        report = json.loads(report_file.read_text())  # the background check's (conftest.ci_book_command)
    else:  # it could not run there (no Chromium yet): install it and check here
        build.ensure_chromium(install=True)
        report = build.check_html(ROOT, out)
    assert not report["failures"], "browser check failed:\n" + "\n".join(report["failures"])
    for stem in STEMS:
        assert report["pages"][f"notebooks/{stem}"]["figures"] >= 1
    assert report["screenshots"] and all(Path(p).is_file() for p in report["screenshots"])
