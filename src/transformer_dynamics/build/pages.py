"""Pages generated at build time: the ledger's tables, the benchmark results and notebook run times, and the
banner every page carries (which profile, models and N the book shows)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import ledger as ledger_mod
from ..profiles import read_profile

__all__ = ["LEDGER_MARKER", "BENCHMARKS_MARKER", "render_ledger_page", "json_to_markdown",
           "render_benchmarks_page", "build_context", "banner"]

LEDGER_MARKER = "<!-- ledger-tables -->"
BENCHMARKS_MARKER = "<!-- benchmark-tables -->"


def render_ledger_page(template: str, ledger_dir: str | os.PathLike, profile: str | None = None,
                       titles: dict[str, str] | None = None) -> str:
    """The ledger page: ``template`` (book/ledger.md) with its marker replaced by the tables of every ledger
    JSON in ``ledger_dir`` (appended when the template has no marker)."""
    d = Path(ledger_dir)
    ledgers = ledger_mod.load_all(d) if d.is_dir() else []
    body = ledger_mod.to_markdown(ledgers, profile=profile, titles=dict(titles or {}))
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


def _is_records(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _cell(v: Any) -> str:
    return ledger_mod.md_cell(v if isinstance(v, str) else ledger_mod.format_value(v))


def _records_table(records: list[dict[str, Any]], first: str | None = None) -> list[str]:
    rows = [_flatten(r) for r in records]
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    if first:
        cols = [first] + [c for c in cols if c != first]
    lines = ["| " + " | ".join(ledger_mod.md_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines + [""]


def json_to_markdown(obj: Any, level: int = 3, _depth: int = 0) -> str:
    """Render arbitrary benchmark JSON as markdown tables: scalars of a dict as a key/value table, a list of
    dicts (or a dict of dicts) as a table with a row per item, nested structures as sub-sections."""
    if _depth > 4:
        return f"`{ledger_mod.md_cell(json.dumps(obj)[:200])}`\n"
    if _is_records(obj):
        return "\n".join(_records_table(obj)) + "\n"
    if not isinstance(obj, dict):
        return _cell(obj) + "\n"
    lines: list[str] = []
    scalars = {k: v for k, v in obj.items() if not isinstance(v, (dict, list)) or
               (isinstance(v, list) and not _is_records(v) and all(not isinstance(x, (dict, list)) for x in v))}
    if scalars:
        lines += ["| key | value |", "|---|---|"]
        lines += [f"| {ledger_mod.md_cell(k)} | {_cell(v)} |" for k, v in scalars.items()]
        lines.append("")
    for k, v in obj.items():
        if k in scalars:
            continue
        lines += [f"{'#' * min(level, 6)} {k}", ""]
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()) and \
                all(not isinstance(y, (dict, list)) for x in v.values() for y in _flatten(x).values()):
            lines += _records_table([{"name": name, **row} for name, row in v.items()], first="name")
        else:
            lines.append(json_to_markdown(v, level + 1, _depth + 1))
    return "\n".join(lines) + "\n"


def render_benchmarks_page(template: str, results_dir: str | os.PathLike,
                           timings: dict[str, Any] | None = None) -> str:
    """The benchmarks page: every ``*.json`` in ``results_dir`` as tables (one section per file), then the
    notebook run times of this build."""
    d = Path(results_dir)
    parts: list[str] = []
    files = sorted(d.glob("*.json")) if d.is_dir() else []
    if not files:
        parts.append(":::{note}\nNo benchmark results yet: run `make benchmarks` (writes "
                     "`benchmarks/results/*.json`).\n:::\n")
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            parts.append(f"## {f.stem}\n\n:::{{warning}}\n`{f.name}` could not be read: {exc}\n:::\n")
            continue
        parts.append(f"## {f.stem}\n\n*From `benchmarks/results/{f.name}`.*\n\n{json_to_markdown(data)}")
    if timings and timings.get("notebooks"):
        parts.append(f"## Notebook run times (profile `{timings.get('profile', '')}`)\n")
        rows = [{"notebook": k, "seconds": v.get("seconds"), "ok": "✓" if v.get("ok") else "✗"}
                for k, v in timings["notebooks"].items()]
        parts.append("\n".join(_records_table(rows)))
    body = "\n".join(parts)
    if BENCHMARKS_MARKER in template:
        return template.replace(BENCHMARKS_MARKER, body)
    return template.rstrip() + "\n\n" + body


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
