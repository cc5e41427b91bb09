"""The reproduction ledger: round trip, atomic overwrite, NaN handling, rendering for the book."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import record_claim as claim

from transformer_dynamics import ledger
from transformer_dynamics.ledger import Ledger


def test_round_trip(tmp_path):
    led = Ledger("02_activation_statistics", directory=tmp_path, model="smollm2-135m", n=np.int64(96))
    out = claim(led, "r_early", np.float32(0.8125), ci=(np.float64(0.81), 0.875))
    assert out is None  # nothing for a notebook cell to display
    led.record("mi_by_layer", np.array([1.5, 0.25, 0.125]), claim="MI drops", method="kde")
    data = ledger.load(tmp_path / "02_activation_statistics.json")
    assert data["notebook"] == "02_activation_statistics"
    assert data["context"] == {"model": "smollm2-135m", "n": 96}
    e0, e1 = data["entries"]
    assert e0["key"] == "r_early" and e0["value"] == pytest.approx(0.8125)
    assert e0["verdict"] == "holds" and e0["ci"] == [0.81, 0.875] and e0["figure"] == "1C"
    assert e0["verdict_bh"] == "holds" and e0["q"] == pytest.approx(e0["p"])
    assert e0["registry"] == "r_early" and e0["reading"] == "first_each_kind" and e0["paper"] == "r > 0.8"
    assert e1["value"] == [1.5, 0.25, 0.125] and e1["holds"] is None and e1["extra"] == {"method": "kde"}
    # numpy scalars became plain JSON types
    assert isinstance(e0["value"], float) and isinstance(data["context"]["n"], int)


def test_rerecord_replaces_and_overwrite_is_atomic(tmp_path):
    led = Ledger("nb", directory=tmp_path)
    led.record("a", 1.0)
    led.record("b", 2.0)
    led.record("a", 3.0)  # same key: replaced, not appended
    data = ledger.load(led.path)
    assert [(e["key"], e["value"]) for e in data["entries"]] == [("a", 3.0), ("b", 2.0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.json"]  # no temporary files left
    # a value that cannot be written: clear error, previous file and entries intact, no temp file
    with pytest.raises(ValueError, match="cannot be written as JSON"):
        led.record("c", object())
    assert ledger.load(led.path) == data
    assert ("", "c") not in led.entries and len(led.entries) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.json"]
    # a new Ledger for the same notebook starts empty and overwrites on its first record
    Ledger("nb", directory=tmp_path).record("z", 0)
    assert [e["key"] for e in ledger.load(led.path)["entries"]] == ["z"]


def test_nan_and_inf_are_stored_as_strings(tmp_path):
    led = Ledger("nb", directory=tmp_path)
    led.record("nan", float("nan"))
    led.record("arr", np.array([1.0, np.nan, np.inf]), ci=(np.nan, 2.0))
    text = (tmp_path / "nb.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    e = {x["key"]: x["value"] for x in ledger.load(led.path)["entries"]}
    assert e["nan"] == "nan" and e["arr"] == [1.0, "nan", "inf"]
    assert ledger.format_value(e["arr"]) == "[1, nan, inf]"
    assert ledger.load(led.path)["entries"][1]["ci"] == ["nan", 2.0]


def test_load_rejects_other_json_and_load_all_sorts(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(ValueError, match="not a ledger file"):
        ledger.load(tmp_path / "x.json")
    d = tmp_path / "led"
    Ledger("03_b", directory=d).record("k", 1)
    Ledger("01_a", directory=d).record("k", 2)
    (d / ".01_a.partial.json").write_text("{")  # a stray hidden file is ignored
    assert [x["notebook"] for x in ledger.load_all(d)] == ["01_a", "03_b"]


def test_default_directory_env(monkeypatch, tmp_path):
    monkeypatch.setenv(ledger.LEDGER_ENV, str(tmp_path / "L"))
    assert Ledger("nb").directory == tmp_path / "L"


@pytest.mark.parametrize("value, expected", [
    (0.123456, "0.123"), (12345.678, "12346"), (1280.4, "1280"), (2.5e6, "2.50e+06"), (1e-7, "1.00e-07"), (0.0, "0"),
    (3, "3"), (True, "yes"),
    (None, "–"), ("nan", "nan"), (float("-inf"), "-inf"), (list(range(8)), "[0, 1, 2, 3, 4, 5, … (8 values)]"),
])
def test_format_value(value, expected):
    assert ledger.format_value(value) == expected


def _sample(tmp_path):
    led = Ledger("02_activation_statistics", directory=tmp_path, model="smollm2-135m", n=96, profile="ci")
    claim(led, "r_early", 0.91, ci=(0.85, 0.95))
    claim(led, "mi_early_drop", 0.1, ci=(0.05, 0.2))
    led.record("mean_rot", float("nan"), claim="rotations | mean", unit="nats")
    return ledger.load(led.path)


def test_to_table_markdown(tmp_path):
    md = ledger.to_table(_sample(tmp_path))
    lines = md.strip().splitlines()
    assert lines[0] == "*model = smollm2-135m, N = 96, profile = ci*"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["Figure", "Claim", "Paper", "Ours", "95% CI / p", "Verdict", "Corrected",
                      "Against the references"]
    rows = lines[4:]
    assert len(rows) == 3
    # a pipe inside a claim is escaped, so every row keeps 8 cells
    for row in rows:
        assert len([c for c in row.replace("\\|", "").strip("|").split("|")]) == 8
    cells = [[c.strip() for c in row.replace("\\|", "").strip("|").split("|")] for row in rows]
    assert cells[0][3:6] == ["0.91", "[0.85, 0.95]", "✓ holds"] and cells[0][6] == "✓ holds"
    assert cells[1][3:6] == ["0.1", "[0.05, 0.2]", "✗ fails"] and cells[1][7] == "fails"
    assert "nan nats" in rows[2] and cells[2][5:] == ["–", "–", "–"]


def test_to_table_html_escapes(tmp_path):
    data = _sample(tmp_path)
    data["entries"][0]["claim"] = "a < b & c"
    html = ledger.to_table(data, fmt="html")
    assert html.count("<tr>") == 4 and "a &lt; b &amp; c" in html and "<caption>" in html
    assert "<td>rotations | mean</td>" in html  # a pipe is nothing special in HTML
    # the verdict's reason is its tooltip
    assert '<span title="interval [0.85, 0.95] &gt; 0.8">✓ holds</span>' in html
    with pytest.raises(ValueError, match="fmt"):
        ledger.to_table(data, fmt="latex")


def test_html_table_one_block_and_rows_as_wide_as_the_header():
    html = ledger.html_table(["a", "b|c"], [[1.23456, "x\ny <z>"], [ledger.link("go", "p.html#f"), None]],
                             caption="c")
    assert "\n\n" not in html and "<th>b|c</th>" in html and "<td>1.23</td>" in html
    assert "<td>x<br>y &lt;z&gt;</td>" in html and '<td><a href="p.html#f">go</a></td><td>–</td>' in html
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        ledger.html_table(["a", "b"], [[1]])


def test_show_table_displays_html_for_frames_and_ledgers(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"r": [0.5, float("nan")], "note": ["a|b", None]},
                      index=pd.MultiIndex.from_tuples([("m", 0), ("m", 1)], names=["model", "t"]))
    t = ledger.show_table(df, caption="Median r")
    html = t._repr_html_()
    assert "<th>model</th><th>t</th><th>r</th><th>note</th>" in html and "<caption>Median r</caption>" in html
    assert "<td>m</td><td>1</td><td>nan</td><td>–</td>" in html and "<td>a|b</td>" in html
    assert not hasattr(t, "_repr_markdown_")  # the book renders text/html as it is; no Markdown to misparse
    assert repr(t).splitlines()[1].split() == ["model", "t", "r", "note"]
    # a frame with the default index shows no index column; a column that is also an index name is fine
    assert "<th>x</th>" in ledger.show_table(pd.DataFrame({"x": [1]}))._repr_html_()
    pivot = pd.DataFrame({"t": [0, 1], "variant": ["t", "s"], "v": [1.0, 2.0]}).pivot_table(
        index="t", columns="variant", values="v")
    assert ledger.show_table(pivot)._repr_html_().count("<th>t</th>") == 2
    data = _sample(tmp_path)
    paper = ledger.show_table(data, paper=True)._repr_html_()
    assert paper.count("<tr>") == 3 and "rotations | mean" not in paper
    plain = ledger.show_table(data, paper=False)._repr_html_()
    assert plain.count("<tr>") == 2 and "rotations | mean" in plain
    assert "<th>Paper</th>" not in plain and "<th>95% CI / p</th>" not in plain  # columns empty on every row go
    led = Ledger("x", directory=tmp_path, n=1)
    led.record("k", 1.0, claim="c")
    assert "<td>c</td>" in ledger.show_table(led)._repr_html_()
    with pytest.raises(TypeError, match="show_table takes"):
        ledger.show_table(3)


def test_fields_a_table_does_not_place_get_columns(tmp_path):
    """Entries may gain fields (a corrected verdict, a reference value): rendered, not dropped."""
    data = _sample(tmp_path)
    data["entries"][0]["effect_size"] = "large"
    data["entries"][1]["reference"] = 0.25
    header, rows, _ = ledger._ledger_rows(data, html=True)
    assert header[-2:] == ["effect size", "reference"]
    assert rows[0][-2:] == ["large", "–"] and rows[1][-1] == "0.25"
    csv = ledger.to_csv(data).splitlines()
    assert "effect_size" in csv[0] and "reference" in csv[0] and "verdict_bh" in csv[0] and len(csv) == 4


def test_to_markdown_summary_and_empty(tmp_path):
    data = _sample(tmp_path)
    md = ledger.to_markdown([data], profile="ci", titles={"02_activation_statistics": "2. Statistics"})
    assert "<tr><td>2. Statistics</td><td>smollm2-135m</td><td>96</td><td>2</td><td>1</td><td>1</td><td>0</td>" \
           "<td>1</td></tr>" in md
    assert "## 2. Statistics" in md
    assert ledger.summary([data])[0] == {"notebook": "02_activation_statistics", "model": "smollm2-135m",
                                         "n": 96, "values": 3, "holds": 1, "fails": 1, "undecided": 0, "open": 1}
    # the page leads with the five contributions, then every claim once per model; plain values are folded
    assert md.index("five contributions") < md.index("Every claim, once per model") < md.index("## 2. Statistics")
    # claims, holds, of which beyond the references, fails, undecided, flips, loses power
    assert ("<tr><td>1</td><td>individual RS units keep strong correlations across layers</td><td>smollm2-135m</td>"
            "<td>1</td><td>1</td><td>0</td><td>0</td><td>0</td><td>0</td><td>0</td></tr>") in md
    assert ":::{dropdown} Plain values (1 row)" in md
    assert md.index(":::{dropdown} Plain values") > md.index("MI showed a sharp decline")
    empty = ledger.to_markdown([], profile="ci")
    assert "No ledger was found for profile `ci`" in empty and "make notebooks PROFILE=ci" in empty
    assert math.isnan(float(data["entries"][2]["value"]))


def test_several_models_side_by_side(tmp_path):
    led = Ledger("02_x", directory=tmp_path, models=["smollm2-135m", "gemma-3-270m"], n=96)
    for m, r in [("smollm2-135m", 0.5), ("gemma-3-270m", 0.9)]:
        claim(led, "r_early", r, ci=(r - 0.05, r + 0.05), model=m)
    for m in ("smollm2-135m", "gemma-3-270m"):
        led.record("vel", 2.0, claim="velocity", model=m)
    claim(led, "r_early", 0.6, ci=(0.55, 0.65), model="smollm2-135m")  # replaces that model's value only
    data = ledger.load(led.path)
    assert ledger.models_of(data) == ["smollm2-135m", "gemma-3-270m"]
    assert [(e["key"], e["model"], e["value"]) for e in data["entries"]] == [
        ("r_early", "smollm2-135m", 0.6), ("r_early", "gemma-3-270m", 0.9), ("vel", "smollm2-135m", 2.0),
        ("vel", "gemma-3-270m", 2.0)]
    lines = ledger.to_table(data).strip().splitlines()
    assert lines[0] == "*models = smollm2-135m, gemma-3-270m, N = 96*"
    assert [c.strip() for c in lines[2].strip("|").split("|")][2] == "Model"
    assert "smollm2-135m" in lines[4] and "| ✗ fails |" in lines[4]
    assert "gemma-3-270m" in lines[5] and "| ✓ holds |" in lines[5]
    rows = ledger.summary([data])
    assert [(s["model"], s["values"], s["holds"], s["fails"], s["open"]) for s in rows] == [
        ("smollm2-135m", 2, 0, 1, 1), ("gemma-3-270m", 2, 1, 0, 1)]


def test_rows_of_one_claim_stand_together():
    entries = [{"key": "a", "model": "x"}, {"key": "b", "model": "x"}, {"key": "a", "model": "y"},
               {"key": "b", "model": "y"}]
    assert [(e["key"], e["model"]) for e in ledger.by_claim(entries)] == [("a", "x"), ("a", "y"), ("b", "x"),
                                                                          ("b", "y")]


def test_claims_take_everything_from_the_registry(tmp_path):
    led = Ledger("02_activation_statistics", directory=tmp_path)
    for bad in (dict(holds=True), dict(p=0.01), dict(verdict="holds")):
        with pytest.raises(ValueError, match="verdict-like"):
            led.record("r0", 0.9, **bad)
    with pytest.raises(ValueError, match="yes/no value is a verdict"):
        led.record("mid_beats_ends", True)
    with pytest.raises(ValueError, match="yes/no value is a verdict"):
        led.record("per_layer", [True, False])
    with pytest.raises(KeyError, match="not a claim"):
        claim(led, "r0", 0.9)
    claim(led, "r_early", float("nan"), reading="first_transition", model="m")
    claim(led, "mi_early_drop", 0.7, ci=(0.6, 0.8), model="m", condition="shuffled")
    led.record("r_first", 0.5, model="m", condition="shuffled", claim="r")
    e = {x["key"]: x for x in ledger.load(led.path)["entries"]}
    assert e["r_early:first_transition"]["verdict"] == "undecided"
    assert e["r_early:first_transition"]["reason"] == "value undefined"
    assert e["r_early:first_transition"]["ci"] is None and e["r_early:first_transition"]["value"] == "nan"
    assert e["mi_early_drop@shuffled"]["condition"] == "shuffled"
    assert "[shuffled-token control]" in e["mi_early_drop@shuffled"]["claim"]
    assert e["r_first@shuffled"]["claim"] == "r [shuffled-token control]"     # one key grammar for both verbs


def test_benjamini_hochberg_over_the_chapter(tmp_path):
    """A verdict that stands alone can fall once the chapter's other verdicts are counted."""
    led = Ledger("02_activation_statistics", directory=tmp_path)
    claim(led, "r_increases_within", 0.1, ci=(0.001, 0.2), model="m")      # p just under 0.05
    e = {x["key"]: x for x in ledger.load(led.path)["entries"]}
    assert e["r_increases_within"]["verdict_bh"] == "holds"
    for k in ("r_increases_cross", "cos_increases", "vel_increases"):
        claim(led, k, 0.0, ci=(-0.5, 0.5), model="m")                      # undecided, p near 1
    e = {x["key"]: x for x in ledger.load(led.path)["entries"]}
    assert e["r_increases_within"]["verdict"] == "holds" and e["r_increases_within"]["verdict_bh"] == "undecided"


def test_a_hand_edited_value_is_shown_with_its_re_derived_verdict(tmp_path):
    led = Ledger("02_activation_statistics", directory=tmp_path)
    claim(led, "r_early", 0.9, ci=(0.85, 0.95), model="m")
    data = ledger.load(led.path)
    data["entries"][0]["ci"] = [0.5, 0.6]                      # edited by hand: the stored verdict is now stale
    header, rows, _ = ledger._ledger_rows(data, html=False)
    assert rows[0][header.index("Verdict")] == "✗ fails" and rows[0][header.index("Corrected")] == "–"
    assert ledger.claim_rows([data])[0]["verdict"] == "fails"


def test_contributions_count_hinges(tmp_path):
    claim(Ledger("02_activation_statistics", directory=tmp_path), "r_early", 0.9, ci=(0.85, 0.95), model="m")
    Ledger("08_verdict_robustness", directory=tmp_path).record(
        "robustness:r_early", "hinges on strip (True: fails, 0.09)", model="m", registry="r_early",
        status="hinges")
    md = ledger.contributions(ledger.load_all(tmp_path))
    assert ("<tr><td>1</td><td>individual RS units keep strong correlations across layers</td><td>m</td><td>1</td>"
            "<td>1</td><td>0</td><td>0</td><td>0</td><td>1</td><td>0</td></tr>") in md
    row = ledger.claim_rows(ledger.load_all(tmp_path))[0]
    assert row["robustness"] == "hinges on strip (True: fails, 0.09)" and row["entry"]["value"] == 0.9
