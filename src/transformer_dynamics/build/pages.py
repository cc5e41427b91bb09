"""Pages generated at build time: the ledger's tables, the benchmark results and notebook run times, and the
banner every page carries (which profile, models and N the book shows)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .. import ledger as ledger_mod
from ..formats import format_value
from ..profiles import read_profile

__all__ = ["LEDGER_MARKER", "BENCHMARKS_MARKER", "render_ledger_page", "json_to_markdown",
           "render_benchmarks_page", "build_context", "banner"]

LEDGER_MARKER = "<!-- ledger-tables -->"
BENCHMARKS_MARKER = "<!-- benchmark-tables -->"


def render_ledger_page(template: str, ledger_dir: str | os.PathLike, profile: str | None = None,
                       titles: dict[str, str] | None = None, **links: Any) -> str:
    """The ledger page: ``template`` (book/ledger.md) with its marker replaced by the page body of every ledger
    JSON in ``ledger_dir`` (:func:`transformer_dynamics.ledger.to_markdown`; appended when the template has no
    marker). ``links``: its ``hrefs``, ``docs``, ``figures`` and ``downloads`` (chapter pages, figure ids, CSVs)."""
    d = Path(ledger_dir)
    ledgers = ledger_mod.load_all(d) if d.is_dir() else []
    body = ledger_mod.to_markdown(ledgers, profile=profile, titles=dict(titles or {}), **links)
    if LEDGER_MARKER in template:
        return template.replace(LEDGER_MARKER, body)
    return template.rstrip() + "\n\n" + body


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(not isinstance(x, (dict, list)) for x in v.values()):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _scalars(d: Any, prefix: str = "") -> dict[str, Any]:
    """Every scalar of nested dicts (lists left out), keys joined with dots."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(_scalars(v, f"{prefix}{k}."))
            elif not isinstance(v, list):
                out[f"{prefix}{k}"] = v
    return out


def _is_records(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _records_table(records: list[dict[str, Any]], first: str | None = None) -> str:
    rows = [_flatten(r) for r in records]
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    if first:
        cols = [first] + [c for c in cols if c != first]
    return ledger_mod.html_table(cols, [[r.get(c, "") for c in cols] for r in rows])


def json_to_markdown(obj: Any, level: int = 3, _depth: int = 0) -> str:
    """Render arbitrary benchmark JSON as HTML tables in a Markdown page: scalars of a dict as a key/value table,
    a list of dicts (or a dict of dicts) as a table with a row per item, nested structures under a bold label."""
    if _depth > 4:
        return f"`{json.dumps(obj)[:200].replace('`', '')}`\n"
    if _is_records(obj):
        return _records_table(obj) + "\n"
    if not isinstance(obj, dict):
        return ledger_mod.html_table(["value"], [[obj]]) + "\n"
    lines: list[str] = []
    scalars = {k: v for k, v in obj.items() if not isinstance(v, (dict, list)) or
               (isinstance(v, list) and not _is_records(v) and all(not isinstance(x, (dict, list)) for x in v))}
    if scalars:
        lines += [ledger_mod.html_table(["key", "value"], [[k, v] for k, v in scalars.items()])]
    for k, v in obj.items():
        if k in scalars:
            continue
        lines += [f"**{k}**", ""]
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()) and \
                all(not isinstance(y, (dict, list)) for x in v.values() for y in _flatten(x).values()):
            lines.append(_records_table([{"name": name, **row} for name, row in v.items()], first="name"))
        else:
            lines.append(json_to_markdown(v, level + 1, _depth + 1))
    return "\n".join(lines) + "\n"


#: a key comparing ours with something else: ``ours_vs_nnsight`` (ours' time over theirs: lower is better) or
#: ``speedup_vs_loop`` (their time over ours: higher is better)
RATIO_KEY = re.compile(r"(^|\.)(ours_vs_|speedup_vs_|speedup$)")
#: keys of goals, floors and peaks
LIMIT_KEY = re.compile(r"goal|meets|floor|peak|fraction_of|share", re.I)


def _without_paths(v: Any) -> Any:
    """A result with every absolute path (e.g. the Python executable a benchmark ran) cut to its last part,
    ``.../python``: the book shows no folder of the machine that measured it."""
    if isinstance(v, dict):
        return {k: _without_paths(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_without_paths(x) for x in v]
    if isinstance(v, str) and re.fullmatch(r"(/|~/|[A-Za-z]:\\)\S+", v):
        return ".../" + Path(v).name
    return v


def _load_results(results_dir: Path) -> tuple[dict[str, Any], list[str]]:
    data, broken = {}, []
    for f in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        try:
            data[f.stem] = _without_paths(json.loads(f.read_text()))
        except (OSError, ValueError) as exc:
            broken.append(f"`{f.name}` could not be read: {exc}")
    return data, broken


def _goal_for(key: str, flat: dict[str, Any]) -> str:
    """The goal a result states for the ratio ``key`` (``goal_<name>``; for ``ours_vs_*`` else the result's
    ``goal_ours_vs_each_peer``; for ``speedup*`` its ``goal_speedup``), with its direction; "" if none."""
    leaf = key.rsplit(".", 1)[-1]
    sign = "≤" if leaf.startswith("ours_vs_") else "≥"
    if f"goal_{leaf}" in flat:
        return f"{sign} {format_value(flat[f'goal_{leaf}'])}"
    generic = "goal_ours_vs_each_peer" if leaf.startswith("ours_vs_") else "goal_speedup"
    if generic in flat:
        return f"{sign} {format_value(flat[generic])}" + (" (each peer)" if sign == "≤" else "")
    return ""


def _bar_chart(path: Path, labels: list[str], series: dict[str, list[float | None]], xlabel: str,
               line: float | None = None) -> None:
    """A horizontal bar chart (one group per label, one bar per series) written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n, k = len(labels), max(1, len(series))
    fig, ax = plt.subplots(figsize=(8, 0.22 * n * k + 0.25 * n + 1.2))
    height = 0.8 / k
    for j, (name, values) in enumerate(series.items()):
        ys = [i + (j - (k - 1) / 2) * height for i in range(n)]
        ax.barh(ys, [v if isinstance(v, (int, float)) else 0 for v in values], height=height, label=name)
    ax.set_yticks(range(n), labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if line is not None:
        ax.axvline(line, color="k", ls=":", lw=1)
    if k > 1 or line is not None:
        ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(label: str, width: int = 28) -> str:
    """A chart's label: ``"01_data_and_capture"`` -> ``"01 data and capture"``, cut at ``width``."""
    text = label.replace("_", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def _figure(path: str, alt: str, caption: str, name: str) -> str:
    return f":::{{figure}} {path}\n:alt: {alt}\n:name: {name}\n\n{caption}\n:::\n"


def render_benchmarks_page(template: str, results_dir: str | os.PathLike,
                           timings: dict[str, Any] | None = None, titles: dict[str, str] | None = None,
                           figures_dir: str | os.PathLike | None = None) -> str:
    """The benchmarks page: a few readable views of ``results_dir/*.json`` and of this build's ``timings``:
    the time per chapter (this build; the cold full book's steps, from results with ``rows`` of ``step`` and
    ``wall_s``), every ratio against a peer or a reference (keys ``ours_vs_*``, ``speedup_vs_*``) with its goal,
    the goals and floors (keys naming a goal, a floor, a peak or a share), then every result file folded, as it
    is. ``figures_dir``: where the charts are written (PNG; the page refers to them by that folder's name);
    without it, tables only."""
    data, broken = _load_results(Path(results_dir))
    fig_dir = Path(figures_dir) if figures_dir is not None else None
    parts: list[str] = []
    if not data:
        parts.append(":::{note}\nNo benchmark results yet: run `make benchmarks` (writes "
                     "`benchmarks/results/*.json`).\n:::\n")
    parts += _chapter_times(data, timings, titles or {}, fig_dir)
    parts += _ratios(data, fig_dir)
    parts += _limits(data)
    if data or broken:
        parts += ["## Every result, as recorded", ""]
        for name, res in data.items():
            parts += [f":::{{dropdown}} {name}", f"*From `benchmarks/results/{name}.json`.*", "",
                      json_to_markdown(res), ":::", ""]
        for msg in broken:
            parts.append(f":::{{warning}}\n{msg}\n:::\n")
    body = "\n".join(parts)
    if BENCHMARKS_MARKER in template:
        return template.replace(BENCHMARKS_MARKER, body)
    return template.rstrip() + "\n\n" + body


def _chapter_times(data: dict[str, Any], timings: dict[str, Any] | None, titles: dict[str, str],
                   fig_dir: Path | None) -> list[str]:
    """The page's time per chapter: this build's (``timings``) and each recorded cold run's (results with
    ``rows`` of ``step`` and ``wall_s``), as a table and, with ``fig_dir``, a bar chart."""
    series: dict[str, dict[str, Any]] = {}
    if timings and timings.get("notebooks"):
        series[f"this build ({timings.get('profile', '')})"] = {
            k: v.get("seconds") if v.get("ok") else None for k, v in timings["notebooks"].items()}
    for name, res in data.items():
        rows = res.get("rows") if isinstance(res, dict) else None
        if _is_records(rows) and all("step" in r and "wall_s" in r for r in rows):
            # a run that stopped early says so in its column, so its total is not read as the whole book's
            label = f"{name}, incomplete" if res.get("complete") is False else name
            series[label] = {r["step"]: r["wall_s"] for r in rows}
            if any("warm_wall_s" in r for r in rows):  # the same steps again, nothing changed (bench_book)
                series[f"{label}, warm"] = {r["step"]: r.get("warm_wall_s") for r in rows}
    if not series:
        return []
    steps = list(dict.fromkeys(s for v in series.values() for s in v))
    parts = ["## Time per chapter", "",
             "Wall-clock seconds each chapter took to execute: in this build, and in each recorded run of "
             "the book (`benchmarks/bench_book.py`), from an empty cache unless the run's name says what it "
             "found cached; a run that did not do every chapter is marked incomplete.", ""]
    header = ["chapter"] + [f"{n} (s)" for n in series]
    rows_ = [[titles.get(s, s)] + [series[n].get(s) for n in series] for s in steps]
    totals = [sum(v for v in series[n].values() if isinstance(v, (int, float))) for n in series]
    parts.append(ledger_mod.html_table(header, rows_ + [["total"] + totals]))
    if fig_dir is not None:
        _bar_chart(fig_dir / "chapter-times.png", [_short(s) for s in steps],
                   {n: [series[n].get(s) for s in steps] for n in series}, "wall-clock seconds")
        parts.append(_figure(f"{fig_dir.name}/chapter-times.png",
                             "Horizontal bar chart: wall-clock seconds per chapter, one bar per run ("
                             + ", ".join(series) + ")", "Time per chapter, per run.", "fig-bench-chapters"))
    return parts


def _ratios(data: dict[str, Any], fig_dir: Path | None) -> list[str]:
    """The page's ratios against peers and references (keys ``ours_vs_*``, ``speedup_vs_*``) with their goals,
    as a table and, with ``fig_dir``, a bar chart of ours over each peer's time."""
    ratios = []
    for name, res in data.items():
        flat = _scalars(res)
        for key, v in flat.items():
            if RATIO_KEY.search(key) and isinstance(v, (int, float)) and not isinstance(v, bool):
                leaf = key.rsplit(".", 1)[-1]
                ratios.append([name, leaf.replace("_", " "), v, _goal_for(key, flat)])
    if not ratios:
        return []
    parts = ["## Against peers and references", "",
             "Each ratio a result records: `ours vs X` is our time over X's (below 1: faster than X), "
             "`speedup vs X` is X's time over ours (above 1: faster), with the goal the benchmark set.", "",
             ledger_mod.html_table(["result", "comparison", "ratio", "goal"], ratios)]
    ours = [r for r in ratios if r[1].startswith("ours vs")]
    if fig_dir is not None and ours:
        _bar_chart(fig_dir / "ratios.png", [_short(f"{r[0]}: {r[1][len('ours vs '):]}", 40) for r in ours],
                   {"ours / peer time": [r[2] for r in ours]}, "our time / their time (1 = as fast)", line=1.0)
        parts.append(_figure(f"{fig_dir.name}/ratios.png",
                             "Horizontal bar chart: our capture time divided by each peer's, per result, "
                             "with a dotted line at 1 (as fast)",
                             "Our time over each peer's (below the dotted line: faster).", "fig-bench-ratios"))
    return parts


def _limits(data: dict[str, Any]) -> list[str]:
    """The page's goals and floors: every goal, floor, peak or share a result records."""
    limits = []
    for name, res in data.items():
        for key, v in _scalars(res).items():
            if LIMIT_KEY.search(key) and not RATIO_KEY.search(key) and v is not None and not isinstance(v, str):
                limits.append([name, key.replace("_", " "), v])
    if not limits:
        return []
    return ["## Goals and floors", "",
            "Every goal a result was measured against (and whether it was met), and every floor, peak or "
            "share it records: what no change of the code can go below, and how close the code comes.", "",
            ledger_mod.html_table(["result", "measure", "value"], limits)]


def build_context(profile: str | os.PathLike, ledger_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a build shows: ``{"profile", "models": [...], "n": [...]}``, from the chapters' ledgers where they
    exist (what was actually run), else from the profile's ``defaults``."""
    from .layout import profile_name

    models: list[str] = []
    ns: list[int] = []
    d = Path(ledger_dir) if ledger_dir else None
    for led in (ledger_mod.load_all(d) if d and d.is_dir() else []):
        ctx = led.get("context") or {}
        ms = ctx.get("models") or ([ctx["model"]] if ctx.get("model") else [])
        models += [str(m) for m in ms if str(m) not in models]
        if isinstance(ctx.get("n"), int) and ctx["n"] not in ns:
            ns.append(ctx["n"])
    if not models and not ns:
        try:
            defaults = read_profile(profile).get("defaults", {})
        except ValueError:
            defaults = {}
        ms = defaults.get("MODELS") or defaults.get("MODEL") or []
        models = [ms] if isinstance(ms, str) else [str(m) for m in ms]
        ns = [defaults["N"]] if isinstance(defaults.get("N"), int) else []
    return {"profile": profile_name(profile), "models": models, "n": sorted(ns)}


def banner(context: dict[str, Any]) -> str:
    """One line (HTML) for the top of every page: the profile, the models and the N this build shows."""
    models = ", ".join(context.get("models") or []) or "?"
    n = " / ".join(str(x) for x in context.get("n") or []) or "?"
    note = " (a small test build: numbers are noisy)" if context.get("profile") == "ci" else ""
    return (f"This build shows the <b>{context.get('profile', '?')}</b> profile{note}: models {models}; "
            f"N = {n} texts. Each chapter's ledger lists its own parameters.")
