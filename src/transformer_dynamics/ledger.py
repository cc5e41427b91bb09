"""The reproduction ledger: each notebook records its headline values as it runs; the book reads them back.

A notebook makes one :class:`Ledger` and records every number it states: a claim of the paper by its key in
the registry (:mod:`transformer_dynamics.claims`), which supplies the sentence, the paper's value and the
verdict; any other number as a plain value, without a verdict::

    led = Ledger("02_activation_statistics", directory=LEDGER_DIR, models=MODELS, n=N)
    led.claims(verdict_table, model="smollm2-135m")   # claims: verdicts.judge's table (the registry decides)
    led.record("mean_abs_first", m0, claim="mean |activation| at sublayer 0", figure="1B")  # no verdict

Each call rewrites ``<directory>/<notebook>.json`` atomically, so a notebook that fails half-way leaves
what it recorded so far. Nothing in the ledger is typed in: values come from the computation.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import claims as _claims
from .formats import format_value

__all__ = ["Entry", "Ledger", "load", "load_all", "default_directory", "to_table", "to_markdown",
           "summary", "models_of", "by_claim", "claim_rows", "contributions", "md_cell"]

LEDGER_ENV = "TRANSFORMER_DYNAMICS_LEDGER"


def default_directory() -> Path:
    """``$TRANSFORMER_DYNAMICS_LEDGER`` if set, else ``./ledger`` in the working directory."""
    return Path(os.environ.get(LEDGER_ENV, "ledger"))


def _plain(value: Any) -> Any:
    """Turn numpy scalars/arrays into JSON-friendly Python values (NaN/inf become strings)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    return value


@dataclass
class Entry:
    """One recorded value.

    key: short identifier, unique within a notebook; value: a number (or a short list of numbers);
    claim: the paper's claim in words; paper: the paper's value or statement (text, as the paper has it);
    holds: True / False / None from ``verdict`` (holds / fails / undecided or no claim), never set by hand;
    ci: optional (low, high) bootstrap interval; figure: the paper's panel, e.g. "1C"; unit: e.g. "nats";
    model: the model the value was computed on ("" when the notebook ran one model).
    """

    key: str
    value: Any
    claim: str = ""
    paper: str = ""
    holds: bool | None = None
    ci: tuple[float, float] | None = None
    figure: str = ""
    unit: str = ""
    model: str = ""
    #: set by :meth:`Ledger.claims` only: the registry key, the reading, the condition, the test's p-value, and
    #: the verdict ("holds" / "fails" / "undecided") with its reason
    registry: str = ""
    reading: str = ""
    condition: str = ""
    p: float | None = None
    verdict: str | None = None
    reason: str = ""
    #: set by :meth:`Ledger.claims` only: the verdict line against the references ("holds, but so does random
    #: init"...), each reference's value, interval, verdict and difference, the sampling units and resamples, and
    #: the Benjamini-Hochberg q-value and corrected verdict over the chapter's claim rows
    line: str = ""
    refs: dict[str, Any] = field(default_factory=dict)
    n: int | None = None
    n_boot: int | None = None
    q: float | None = None
    verdict_bh: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: how a control condition is named in a ledger row's sentence (others: the condition's own name)
CONTROL_NAMES = {"shuffled": "shuffled-token", "shuffled_keep_last": "shuffled-token, last kept",
                 "random_init": "random-init"}


def _claims_finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _verdict_like(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, (list, tuple, np.ndarray)):
        return any(_verdict_like(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value))
    return False


def control_note(condition: str) -> str:
    """The suffix a control condition's row adds to its sentence: ``""`` for the original texts, else e.g.
    ``" [shuffled-token control]"``. The one wording for claims (:meth:`Ledger.claims`) and plain values
    (:meth:`Ledger.record`)."""
    return "" if condition == "original" else f" [{CONTROL_NAMES.get(condition, condition)} control]"


class Ledger:
    """Values recorded by one notebook run (one JSON file per notebook).

    Parameters
    ----------
    notebook: name of the notebook, e.g. ``"02_activation_statistics"``; names the JSON file.
    directory: where to write; default :func:`default_directory`.
    **context: run context stored with every entry (models, n, seed, profile, condition…).

    A notebook that runs several models records each value once per model (``model=``); the same key may
    then appear once per model, and the book's table shows a Model column.
    """

    def __init__(self, notebook: str, directory: str | os.PathLike | None = None, **context: Any):
        self.notebook = notebook
        self.directory = Path(directory) if directory is not None else default_directory()
        self.context = _plain(context)
        self.entries: dict[tuple[str, str], Entry] = {}  # (model, key) -> entry

    @property
    def path(self) -> Path:
        return self.directory / f"{self.notebook}.json"

    def record(self, key: str, value: Any, *, claim: str = "", paper: str = "",
               ci: tuple[float, float] | None = None, figure: str = "", unit: str = "", model: str | None = None,
               condition: str = "original", **extra: Any) -> None:
        """Record a plain ``value`` (a number, a short list of numbers, or text) under ``key`` for ``model``, with
        no verdict: claims of the paper go through :meth:`claims`. The stored key is ``key@condition`` off the
        original texts. A plain value is never verdict-like: booleans, ``holds=``/``verdict=`` and a test's ``p=``
        are refused (decide through the registry instead). Replaces an earlier value of the same key and model.

        Returns None, so a notebook cell ending in ``led.record(...)`` shows nothing extra in the book."""
        bad = sorted({"holds", "verdict", "p", "p_value"} & set(extra))
        if bad:
            raise ValueError(f"{key!r}: {', '.join(bad)} is verdict-like; a claim's verdict and p come from the "
                             "registry (transformer_dynamics.claims, recorded with ch.decide / Ledger.claims)")
        if _verdict_like(value):
            raise ValueError(f"{key!r}: a yes/no value is a verdict; decide it through the claim registry or record "
                             "the number it is decided from")
        name = key + ("" if condition == "original" else f"@{condition}")
        self._put(Entry(key=name, value=_plain(value), claim=claim + control_note(condition), paper=paper,
                        ci=None if ci is None else (float(ci[0]), float(ci[1])), figure=figure, unit=unit,
                        model="" if model is None else str(model), condition=condition, extra=_plain(extra)))

    def claims(self, table, *, model: str | None = None, condition: str = "original", **extra: Any) -> None:
        """Record every row of a verdict table (:func:`transformer_dynamics.verdicts.judge`: ``claim``,
        ``reading``, ``value``, ``low``, ``high``, ``p``, ``n``, ``n_boot``, ``verdict``, ``reason``, ``line``,
        ``refs``) for ``model`` on ``condition``. The key is ``claim``, ``claim:reading`` off the headline reading
        and ``...@condition`` off the original texts; sentence, figure, paper's value and unit come from the
        registry. After each write the chapter's verdicts are corrected for their number (Benjamini-Hochberg over
        every claim row of this ledger: ``q`` and ``verdict_bh``)."""
        model = "" if model is None else str(model)
        for _, r in table.iterrows():
            c = _claims.get(r["claim"])
            rd = c.reading(r["reading"])
            name = (r["claim"] + ("" if rd.name == c.headline else f":{rd.name}")
                    + ("" if condition == "original" else f"@{condition}"))
            ci = (r["low"], r["high"]) if _claims_finite(r["low"]) and _claims_finite(r["high"]) else None
            text = c.quote + ("" if rd.name == c.headline else f" [{rd.description}]") + control_note(condition)
            self.entries[model, name] = Entry(
                key=name, value=_plain(r["value"]), claim=text, paper=c.paper, holds=None,
                ci=None if ci is None else (float(ci[0]), float(ci[1])), figure=c.figure, unit=c.unit, model=model,
                registry=c.key, reading=rd.name, condition=condition,
                p=float(r["p"]) if _claims_finite(r["p"]) else None, verdict=r["verdict"], reason=r["reason"],
                line=r.get("line", r["verdict"]), refs=_plain(r.get("refs") or {}),
                n=int(r["n"]) if _claims_finite(r.get("n")) else None,
                n_boot=int(r["n_boot"]) if _claims_finite(r.get("n_boot")) else None,
                extra=_plain({**extra, **({"seeds": list(r["seeds"])} if r.get("seeds") is not None else {})}))
        self._correct()
        self.save()

    def _correct(self) -> None:
        """Benjamini-Hochberg over the ledger's claim rows: each entry's ``q`` and ``verdict_bh``."""
        from .verdicts import corrected  # noqa: PLC0415

        rows = [e for e in self.entries.values() if e.verdict]
        q, bh = corrected([e.verdict for e in rows], [np.nan if e.p is None else e.p for e in rows])
        for e, qi, v in zip(rows, q, bh):
            e.q = float(qi) if np.isfinite(qi) else None
            e.verdict_bh = v

    def _put(self, entry: Entry) -> None:
        if not entry.key or not isinstance(entry.key, str):
            raise ValueError("ledger key must be a non-empty string")
        slot = (entry.model, entry.key)
        key = entry.key
        previous = self.entries.get(slot)
        self.entries[slot] = entry
        try:
            self.save()
        except (TypeError, ValueError) as exc:
            if previous is None:
                del self.entries[slot]
            else:
                self.entries[slot] = previous
            raise ValueError(f"ledger value {key!r} cannot be written as JSON ({exc}); record numbers, lists of "
                             "numbers or strings (convert tensors with .item() / .tolist())") from exc

    def to_dict(self) -> dict[str, Any]:
        # _plain: a non-finite bound of ``ci`` is written as a string, like values (standard JSON)
        return {"notebook": self.notebook, "context": self.context,
                "entries": [_plain(asdict(e)) for e in self.entries.values()]}

    def save(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{self.notebook}.", suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_dict(), fh, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            # a value that cannot be written leaves the previous file as it was, and no temporary file behind
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read one notebook's ledger JSON: ``{"notebook", "context", "entries": [...]}``."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}); delete it and rerun its notebook") from None
    if not isinstance(data, dict) or "entries" not in data:
        raise ValueError(f"{path} is not a ledger file (no 'entries'); delete it and rerun its notebook")
    return data


def load_all(directory: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every ledger in ``directory`` (sorted by notebook name)."""
    directory = Path(directory) if directory is not None else default_directory()
    return [load(p) for p in sorted(directory.glob("*.json")) if not p.name.startswith(".")]


# ----------------------------------------------------------------------------------------------------------
# Rendering for the book (the ledger page is generated from the JSON files at build time).

HOLDS_MARKS = {True: "✓", False: "✗", None: "–"}
#: the notebook whose entries carry each claim's robustness line (``extra["status"]``)
ROBUSTNESS_NOTEBOOK = "08_verdict_robustness"


def _mark(entry: dict[str, Any]) -> str:
    if entry.get("verdict"):
        return _claims.MARKS.get(entry["verdict"], "–")
    return HOLDS_MARKS.get(entry.get("holds"), "–")


def md_cell(text: Any) -> str:
    """Escape a value for a markdown table cell (pipes, newlines)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _context_line(context: dict[str, Any], profile: str | None) -> str:
    parts = []
    for key, label in (("model", "model"), ("models", "models"), ("n", "N"), ("seed", "seed")):
        if context.get(key) is not None:
            value = context[key]
            parts.append(f"{label} = {', '.join(map(str, value)) if isinstance(value, list) else value}")
    prof = context.get("profile", profile)
    if prof:
        parts.append(f"profile = {prof}")
    for key, val in context.items():
        if key not in ("model", "models", "n", "seed", "profile"):
            parts.append(f"{key} = {format_value(val)}")
    return ", ".join(parts)


def models_of(ledger: dict[str, Any]) -> list[str]:
    """The models a ledger's entries were recorded for, in order of first appearance ("" for entries
    recorded without a model)."""
    return list(dict.fromkeys(e.get("model", "") or "" for e in ledger.get("entries", [])))


def by_claim(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries grouped by key in order of first appearance, so that the rows of one claim for several
    models stand together (order within a key: as recorded)."""
    first: dict[str, int] = {}
    for i, e in enumerate(entries):
        first.setdefault(e.get("key", ""), i)
    return sorted(entries, key=lambda e: first[e.get("key", "")])


def to_table(ledger: dict[str, Any], fmt: str = "markdown", profile: str | None = None) -> str:
    """One notebook's ledger (as :func:`load` returns it) as a table with a row per recorded value:
    figure, claim, the paper's value, ours (± unit), the confidence interval if any, and whether it holds
    (✓ holds / ✗ fails / ? undecided, from the claim registry; – a plain value); with a Model column, the rows
    of one claim side by side, when values were recorded for
    several models. ``fmt`` is ``"markdown"`` (a MyST/GFM pipe table) or ``"html"``."""
    if fmt not in ("markdown", "html"):
        raise ValueError(f"fmt must be 'markdown' or 'html', got {fmt!r}")
    with_model = any(models_of(ledger))
    header = ["Figure", "Claim"] + (["Model"] if with_model else []) + ["Paper", "Ours", "95% CI / p", "Holds"]
    rows = []
    entries = by_claim(ledger.get("entries", [])) if with_model else ledger.get("entries", [])
    for e in entries:
        ours = format_value(e.get("value"))
        if e.get("verdict") and ours in ("nan", "–"):
            ours = "undefined"
        if e.get("unit"):
            ours += f" {e['unit']}"
        ci = e.get("ci")
        ci_text = f"[{format_value(ci[0])}, {format_value(ci[1])}]" if ci else ""
        if not ci and e.get("p") is not None:
            p = e["p"]
            ci_text = f"p = {p:.2g}" if isinstance(p, (int, float)) else f"p = {p}"
        claim = e.get("claim") or e.get("key", "")
        rows.append([e.get("figure", ""), claim] + ([e.get("model", "")] if with_model else [])
                    + [e.get("paper", ""), ours, ci_text, _mark(e)])
    caption = _context_line(ledger.get("context", {}), profile)
    if fmt == "markdown":
        lines = []
        if caption:
            lines += [f"*{md_cell(caption)}*", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * (len(header) - 1) + [":---:"]) + "|")
        lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    import html as _html
    out = ["<table class=\"ledger\">"]
    if caption:
        out.append(f"<caption>{_html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead><tbody>")
    out += ["<tr>" + "".join(f"<td>{_html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
    out.append("</tbody></table>")
    return "\n".join(out) + "\n"


def summary(ledgers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per notebook and model: ``{"notebook", "model", "n", "values", "holds", "fails", "undecided", "open"}``
    (counts of ✓ ✗ ? and plain values). Entries recorded without a model count for the context's ``model``
    (or its models, joined)."""
    out = []
    for led in ledgers:
        ctx = led.get("context", {})
        default = ctx.get("model") or (", ".join(ctx["models"]) if isinstance(ctx.get("models"), list) else None)
        for model in models_of(led) or [""]:
            es = [e for e in led.get("entries", []) if (e.get("model", "") or "") == model]
            verdicts = [e.get("verdict") or {True: "holds", False: "fails"}.get(e.get("holds")) for e in es]
            out.append({"notebook": led.get("notebook", ""), "model": model or default, "n": ctx.get("n"),
                        "values": len(es), "holds": verdicts.count("holds"), "fails": verdicts.count("fails"),
                        "undecided": sum(bool(e.get("verdict")) and v == "undecided" for e, v in zip(es, verdicts)),
                        "open": sum(v is None for v in verdicts)})
    return out


def claim_rows(ledgers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The headline verdict of every registered claim, once per model: the entry its own chapter
    (``Claim.chapter``) recorded for the headline reading on the original texts, with the robustness line
    of :data:`ROBUSTNESS_NOTEBOOK` when there is one. -> ``[{"key", "contribution", "model", "verdict",
    "value", "robustness", "status"}]`` in registry order."""
    decided, robust = {}, {}
    for led in ledgers:
        ctx = led.get("context", {})
        default = ctx.get("model") or ""
        for e in led.get("entries", []):
            e = {**e, "model": e.get("model") or default}
            reg = e.get("registry") or e.get("extra", {}).get("registry")
            if not reg or reg not in _claims.REGISTRY:
                continue
            c = _claims.REGISTRY[reg]
            if led.get("notebook") == ROBUSTNESS_NOTEBOOK and "status" in e.get("extra", {}):
                robust[reg, e.get("model", "")] = (e.get("value"), e["extra"]["status"])
            elif (led.get("notebook") == c.chapter and e.get("verdict") and e.get("reading") == c.headline
                  and e.get("condition", "original") == "original"):
                decided[reg, e.get("model", "")] = e
    rows = []
    models = list(dict.fromkeys([m for _, m in decided] + [m for _, m in robust]))
    for key, c in _claims.REGISTRY.items():
        for m in models:
            if (key, m) not in decided and (key, m) not in robust:
                continue
            e = decided.get((key, m), {})
            line, status = robust.get((key, m), ("", ""))
            rows.append({"key": key, "contribution": c.contribution, "model": m, "verdict": e.get("verdict"),
                         "value": e.get("value"), "robustness": line, "status": status})
    return rows


def contributions(ledgers: list[dict[str, Any]]) -> str:
    """The ledger page's lead: per contribution of the paper (section 1) and model, how many of its claims
    hold, fail or are undecided (headline reading, as each chapter decides it) and how many hinge on an open
    choice (the verdict-robustness chapter), as a markdown table."""
    rows = claim_rows(ledgers)
    lines = ["| # | Contribution | Model | Claims | ✓ holds | ✗ fails | ? undecided | hinges |",
             "|---|---|---|---|---|---|---|---|"]
    for k, text in _claims.CONTRIBUTIONS.items():
        for m in dict.fromkeys(r["model"] for r in rows):
            rs = [r for r in rows if r["contribution"] == k and r["model"] == m]
            if not rs:
                continue
            count = {v: sum(r["verdict"] == v for r in rs) for v in _claims.VERDICTS}
            hinge = sum(r["status"] == "hinges" for r in rs)
            lines.append(f"| {k} | {md_cell(text)} | {md_cell(m)} | {len(rs)} | {count['holds']} | "
                         f"{count['fails']} | {count['undecided']} | {hinge} |")
    return "\n".join(lines) + "\n"


def to_markdown(ledgers: list[dict[str, Any]], profile: str | None = None,
                titles: dict[str, str] | None = None) -> str:
    """All ledgers as a MyST page body: the five contributions (:func:`contributions`), a summary table per
    notebook, then one section and table per notebook.

    ``titles`` maps notebook names to section titles (default: the notebook name)."""
    titles = titles or {}
    if not ledgers:
        where = f" for profile `{profile}`" if profile else ""
        return (f":::{{warning}}\nNo ledger was found{where}. Run the notebooks first "
                f"(`make notebooks PROFILE={profile or 'full'}`).\n:::\n")
    lines = ["## The paper's five contributions", "",
             "Per contribution and model: the claims of the registry (`transformer_dynamics.claims`) that hold, "
             "fail or stay undecided under the book's headline choices, and how many hinge on an open choice "
             "(the verdict-robustness chapter).", "", contributions(ledgers), "## Per chapter", "",
             "| Notebook | Model | N | Values | ✓ | ✗ | ? | – |", "|---|---|---|---|---|---|---|---|"]
    for s in summary(ledgers):
        lines.append(f"| {md_cell(titles.get(s['notebook'], s['notebook']))} | {md_cell(s['model'] or '')} | "
                     f"{s['n'] if s['n'] is not None else ''} | {s['values']} | {s['holds']} | {s['fails']} | "
                     f"{s['undecided']} | {s['open']} |")
    lines.append("")
    for led in ledgers:
        name = led.get("notebook", "")
        lines += [f"## {titles.get(name, name)}", "", to_table(led, "markdown", profile), ""]
    return "\n".join(lines)
