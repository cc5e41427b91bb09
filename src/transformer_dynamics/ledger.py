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

import html as _html
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import claims as _claims
from . import verdicts as _verdicts
from .formats import format_value

__all__ = ["Entry", "Ledger", "load", "load_all", "default_directory", "to_table", "to_markdown",
           "summary", "models_of", "by_claim", "claim_rows", "contributions", "contribution_counts", "md_cell",
           "Markup", "link", "html_table", "Table", "show_table", "to_csv", "other_fields", "verdict_text"]

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
#
# Tables in the book are HTML, always: a notebook's text/markdown output is parsed by myst-nb as CommonMark
# (no tables) unless configured otherwise, and the typographic replacements then turn a pipe table's `|---|`
# into `|—|` text; an HTML table with escaped cells renders the same in Jupyter, Colab and every book.
# Notebooks display tables with :func:`show_table`; the ledger page is built from :func:`html_table`.

#: the notebook whose entries carry each claim's robustness line (``extra["status"]``)
ROBUSTNESS_NOTEBOOK = "08_verdict_robustness"
#: the entry fields the tables place in their own columns; any other field an entry carries (e.g. a corrected
#: verdict, a reference value) gets a column of its own, named after the field
PLACED_FIELDS = ("key", "value", "claim", "paper", "holds", "ci", "figure", "unit", "model", "registry", "reading",
                 "condition", "p", "verdict", "reason", "line", "refs", "n", "n_boot", "q", "verdict_bh", "extra")


def verdict_text(verdict: Any) -> str:
    """``"holds"`` -> ``"✓ holds"``; None -> ``"–"`` (a plain value); anything else as it is."""
    if verdict is None or verdict == "":
        return "–"
    if verdict in _claims.VERDICTS:
        return f"{_claims.MARKS[verdict]} {verdict}"
    return format_value(verdict)


def md_cell(text: Any) -> str:
    """Escape a value for a markdown table cell (pipes, newlines)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


class Markup(str):
    """A table cell that is HTML already (a link, a span with a tooltip): :func:`html_table` writes it as it
    is. Every other cell is text and is escaped."""


def link(text: str, href: str | None, title: str = "") -> Markup:
    """``<a href=...>text</a>`` as a :class:`Markup` cell (``text`` escaped); plain escaped text if no href."""
    t = f' title="{_html.escape(title)}"' if title else ""
    if not href:
        return Markup(f"<span{t}>{_html.escape(text)}</span>" if t else _html.escape(text))
    return Markup(f'<a href="{_html.escape(href)}"{t}>{_html.escape(text)}</a>')


def _cell_html(value: Any) -> str:
    if isinstance(value, Markup):
        return str(value)
    text = value if isinstance(value, str) else format_value(value)
    return _html.escape(text).replace("\n", "<br>")


def html_table(header: list[str], rows: list[list[Any]], caption: str = "", classes: str = "") -> str:
    """An HTML table: ``header`` (column names) and ``rows`` (lists of cells, as many as the header; each cell
    escaped unless it is :class:`Markup`, numbers through :func:`format_value`), with an optional caption.

    One line per row and no blank line, so that a Markdown page keeps it one raw HTML block; wrapped in a
    horizontally scrolling ``div``. ValueError if a row has another number of cells than the header."""
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} cells for {len(header)} columns: {row!r}")
    cls = " ".join(["table", "td-table", classes]).strip()
    out = [f'<div class="td-table-wrap" style="overflow-x:auto"><table class="{cls}">']
    if caption:
        out.append(f"<caption>{_html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_html.escape(str(h))}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    out += ["<tr>" + "".join(f"<td>{_cell_html(c)}</td>" for c in row) + "</tr>" for row in rows]
    out.append("</tbody></table></div>")
    return "\n".join(out) + "\n"


def _text_table(header: list[str], rows: list[list[Any]], caption: str = "", width: int = 40) -> str:
    """The same table as plain text (a terminal, papermill's log): columns padded, long cells cut."""
    def cut(v: Any) -> str:
        s = _html.unescape(re.sub(r"<[^>]+>", "", v)) if isinstance(v, Markup) else (
            v if isinstance(v, str) else format_value(v))
        s = " ".join(s.split())
        return s if len(s) <= width else s[:width - 1] + "…"

    cells = [[cut(h) for h in header]] + [[cut(c) for c in row] for row in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(([caption] if caption else []) + lines)


class Table:
    """A table a notebook displays: HTML in Jupyter, Colab and the book (``text/html``, which the book passes
    through as it is), plain text in a terminal. Made by :func:`show_table`."""

    def __init__(self, header: list[str], rows: list[list[Any]], caption: str = ""):
        self.header, self.rows, self.caption = [str(h) for h in header], [list(r) for r in rows], caption

    def _repr_html_(self) -> str:
        return html_table(self.header, self.rows, self.caption)

    def __repr__(self) -> str:
        return _text_table(self.header, self.rows, self.caption)


def _frame_table(frame: Any, index: bool | None) -> tuple[list[str], list[list[Any]]]:
    """A pandas DataFrame (or Series) -> ``(header, rows)``; the index becomes leading columns when ``index``
    (None: unless it is the default 0..n-1 range), column levels are joined with " / "."""
    import pandas as pd

    df = frame.to_frame() if isinstance(frame, pd.Series) else frame
    default_index = isinstance(df.index, pd.RangeIndex) and df.index.name is None
    with_index = bool(index) or (index is None and not default_index)
    names = [n if n is not None else ("" if df.index.nlevels == 1 else f"level {i}")
             for i, n in enumerate(df.index.names)] if with_index else []
    header = [str(n) for n in names] + [" / ".join(str(x) for x in c if str(x)) if isinstance(c, tuple) else str(c)
                                        for c in df.columns]

    def plain(v: Any, numeric: bool) -> Any:  # missing values as "–", except NaN in a numeric column: "nan"
        if isinstance(v, (list, tuple, np.ndarray, dict)) or (numeric and isinstance(v, (float, np.floating))):
            return v
        return None if pd.isna(v) else v

    numeric = [pd.api.types.is_numeric_dtype(t) for t in df.dtypes]
    index_levels = ([df.index.get_level_values(i) for i in range(df.index.nlevels)] if with_index else [])
    index_numeric = [pd.api.types.is_numeric_dtype(lv.dtype) for lv in index_levels]
    keys = df.index.tolist() if with_index else [()] * len(df)
    rows = [[plain(x, nm) for x, nm in zip((k if isinstance(k, tuple) else (k,)) if with_index else (), index_numeric)]
            + [plain(v, nm) for v, nm in zip(r, numeric)]
            for k, r in zip(keys, df.itertuples(index=False, name=None))]
    return header, rows


def show_table(obj: Any, *, paper: bool | None = None, caption: str = "", index: bool | None = None) -> Table:
    """The one way a notebook shows a table (returns a :class:`Table`; end a cell with it, or ``display`` it).

    ``obj``: a pandas DataFrame or Series (the index shown as leading columns unless it is the default range;
    ``index`` forces either way), a list of dicts (a row each), a :class:`Ledger` or a loaded ledger (its
    table, :func:`to_table`; ``paper=True`` only the rows with a paper's value, ``False`` only the others).
    ``caption``: a line above the table. Cells are escaped; numbers are shown by :func:`format_value`."""
    if isinstance(obj, Ledger):
        obj = obj.to_dict()
    if isinstance(obj, dict) and "entries" in obj:
        if paper is not None:
            obj = {**obj, "entries": [e for e in obj["entries"] if bool(e.get("paper")) == paper]}
        header, rows, context = _ledger_rows(obj, html=True)
        return Table(header, rows, caption or context)
    if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        cols = list(dict.fromkeys(k for r in obj for k in r))
        return Table(cols, [[r.get(c) for c in cols] for r in obj], caption)
    if hasattr(obj, "columns") or hasattr(obj, "to_frame"):
        header, rows = _frame_table(obj, index)
        return Table(header, rows, caption)
    raise TypeError(f"show_table takes a DataFrame, a list of dicts or a ledger, not {type(obj).__name__}")


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


def other_fields(entries: list[dict[str, Any]]) -> list[str]:
    """The fields of ``entries`` that no column of the tables places (:data:`PLACED_FIELDS`) and that some
    entry fills: each gets a column of its own, in order of first appearance."""
    return list(dict.fromkeys(k for e in entries for k, v in e.items()
                              if k not in PLACED_FIELDS and v not in (None, "", [], {})))


def _ours(e: dict[str, Any]) -> str:
    ours = format_value(e.get("value"))
    if e.get("verdict") and ours in ("nan", "–"):
        ours = "undefined"
    return ours + (f" {e['unit']}" if e.get("unit") else "")


def _interval(e: dict[str, Any]) -> str:
    ci = e.get("ci")
    if ci:
        return f"[{format_value(ci[0])}, {format_value(ci[1])}]"
    p = e.get("p")
    if p is not None:
        return f"p = {p:.2g}" if isinstance(p, (int, float)) else f"p = {p}"
    return ""


def _refs_text(refs: Any) -> str:
    """The references of a claim row in one line (a tooltip): each one's value, interval and verdict."""
    if not isinstance(refs, dict):
        return ""
    names = {"null": "accumulation null", "default": "random init", "matched": "matched-scale random init",
             "permuted": "permuted weights"}
    parts = []
    for k, r in refs.items():
        if isinstance(r, dict):
            ci = (f" [{format_value(r.get('low'))}, {format_value(r.get('high'))}]"
                  if r.get("low") is not None else "")
            parts.append(f"{names.get(k, k)}: {format_value(r.get('value'))}{ci}, {r.get('verdict', '')}")
    return "; ".join(parts)


def _other_cell(value: Any) -> str:
    return verdict_text(value) if value in _claims.VERDICTS else format_value(value)


def _ledger_rows(ledger: dict[str, Any], profile: str | None = None, html: bool = False,
                 figure_href: Any = None) -> tuple[list[str], list[list[Any]], str]:
    """``(header, rows, context line)`` of one ledger's table (see :func:`to_table`). ``html``: the verdict
    cell carries its reason as a tooltip; ``figure_href(figure) -> href | None`` links the figure cell."""
    entries = ledger.get("entries", [])
    with_model = any(models_of(ledger))
    others = other_fields(entries)
    header = (["Figure", "Claim"] + (["Model"] if with_model else []) + ["Paper", "Ours", "95% CI / p", "Verdict",
                                                                     "Corrected", "Against the references"]
              + [f.replace("_", " ") for f in others])
    rows = []
    for e in by_claim(entries) if with_model else entries:
        stored = e.get("verdict") or {True: "holds", False: "fails"}.get(e.get("holds"))
        derived, why = _verdicts.rederive(e)
        if derived is not None and derived != stored:  # a row edited by hand: never shown with a stale verdict
            e = {**e, "reason": f"{why} (re-derived from the value and interval; recorded: {stored})",
                 "verdict_bh": None, "line": ""}
            stored = derived
        verdict = verdict_text(stored)
        corrected = verdict_text(e.get("verdict_bh")) if e.get("verdict_bh") else "–"
        q = f"Benjamini-Hochberg q = {e['q']:.2g} over the chapter's verdicts" if _claims_finite(e.get("q")) else ""
        line = e.get("line") or "–"
        fig = e.get("figure", "")
        rows.append([link(fig, figure_href(fig) if figure_href and fig else None) if html else fig,
                     e.get("claim") or e.get("key", "")] + ([e.get("model", "")] if with_model else [])
                    + [e.get("paper", ""), _ours(e), _interval(e),
                       link(verdict, None, e.get("reason", "")) if html and e.get("reason") else verdict,
                       link(corrected, None, q) if html and q else corrected,
                       link(line, None, _refs_text(e.get("refs"))) if html and e.get("refs") else line]
                    + [_other_cell(e.get(f)) for f in others])
    if html:  # columns empty on every row (no paper's value, no interval, no verdict among plain values) go
        keep = [j for j, h in enumerate(header) if h in ("Figure", "Claim", "Model", "Ours")
                or any(str(r[j]) not in ("", "–") for r in rows)]
        header, rows = [header[j] for j in keep], [[r[j] for j in keep] for r in rows]
    return header, rows, _context_line(ledger.get("context", {}), profile)


def to_table(ledger: dict[str, Any], fmt: str = "markdown", profile: str | None = None) -> str:
    """One notebook's ledger (as :func:`load` returns it) as a table with a row per recorded value:
    figure, claim, the paper's value, ours (± unit), the confidence interval or p-value if any, and the verdict
    (✓ holds / ✗ fails / ? undecided, from the claim registry; – a plain value); a Model column, the rows of one
    claim side by side, when values were recorded for several models; a column per other field the entries
    carry (:func:`other_fields`). ``fmt`` is ``"html"`` (what the book shows: :func:`html_table`) or
    ``"markdown"`` (a pipe table, for a terminal or a README; the book's notebooks do not render those)."""
    if fmt not in ("markdown", "html"):
        raise ValueError(f"fmt must be 'markdown' or 'html', got {fmt!r}")
    header, rows, caption = _ledger_rows(ledger, profile, html=fmt == "html")
    if fmt == "html":
        return html_table(header, rows, caption)
    lines = [f"*{md_cell(caption)}*", ""] if caption else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(ledger: dict[str, Any]) -> str:
    """One notebook's ledger as CSV, a row per entry and every field a column: the interval as ``ci_low``,
    ``ci_high``; ``extra`` fields as ``extra.<name>``; lists as JSON."""
    import csv
    import io

    entries = ledger.get("entries", [])
    fields = list(dict.fromkeys([f for f in PLACED_FIELDS if f not in ("ci", "extra", "holds")]
                                + other_fields(entries)))
    extra = list(dict.fromkeys(k for e in entries for k in (e.get("extra") or {})))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["notebook"] + fields + ["ci_low", "ci_high"] + [f"extra.{k}" for k in extra])

    def cell(v: Any) -> Any:
        return json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v)

    for e in entries:
        ci = e.get("ci") or [None, None]
        w.writerow([ledger.get("notebook", "")] + [cell(e.get(f)) for f in fields] + [cell(ci[0]), cell(ci[1])]
                   + [cell((e.get("extra") or {}).get(k)) for k in extra])
    return buf.getvalue()


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
    "value", "robustness", "status", "entry"}]`` in registry order (``entry``: the chapter's whole entry,
    ``{}`` when only the robustness chapter has the claim)."""
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
                robust[reg, e.get("model", "")] = (e.get("value"), e["extra"]["status"], e["extra"].get("line", ""))
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
            value, status, line = robust.get((key, m), ("", "", ""))
            verdict = _verdicts.rederive(e)[0] if e else None
            rows.append({"key": key, "contribution": c.contribution, "model": m, "verdict": verdict,
                         "verdict_bh": e.get("verdict_bh") if e.get("verdict") == verdict else verdict,
                         "line": e.get("line", ""), "value": e.get("value"), "robustness": line or value,
                         "status": status, "entry": e})
    return rows


def contribution_counts(ledgers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per contribution of the paper (section 1) and model: ``{"contribution", "text", "model", "claims",
    "holds", "fails", "undecided", "beyond", "hinges", "loses power"}``, from :func:`claim_rows`: the verdicts
    corrected for their number (Benjamini-Hochberg over each chapter), how many hold beyond every reference (the
    null and random init), and how many flip with an open choice or only lose significance (chapter 8)."""
    rows = claim_rows(ledgers)
    out = []
    for k, text in _claims.CONTRIBUTIONS.items():
        for m in dict.fromkeys(r["model"] for r in rows):
            rs = [r for r in rows if r["contribution"] == k and r["model"] == m]
            if rs:
                out.append({"contribution": k, "text": text, "model": m, "claims": len(rs),
                            **{v: sum((r["verdict_bh"] or r["verdict"]) == v for r in rs) for v in _claims.VERDICTS},
                            "beyond": sum((r["verdict_bh"] or r["verdict"]) == "holds"
                                          and str(r["line"]).startswith("holds, beyond") for r in rs),
                            "hinges": sum(r["status"] == "hinges" for r in rs),
                            "loses power": sum(r["status"] == "loses power" for r in rs)})
    return out


def contributions(ledgers: list[dict[str, Any]]) -> str:
    """The ledger page's lead: per contribution of the paper (section 1) and model, how many of its claims
    hold, fail or are undecided (headline reading, as each chapter decides it, corrected for the number of
    verdicts), how many of those that hold lie beyond the null and random init, and how many flip with an open
    choice or only lose significance (the verdict-robustness chapter), as an HTML table."""
    header = ["#", "Contribution", "Model", "Claims", "✓ holds", "of which beyond the references", "✗ fails",
              "? undecided", "flips (hinges)", "loses power"]
    return html_table(header, [[r["contribution"], r["text"], r["model"], r["claims"], r["holds"], r["beyond"],
                                r["fails"], r["undecided"], r["hinges"], r["loses power"]]
                               for r in contribution_counts(ledgers)])


def _is_claim(e: dict[str, Any]) -> bool:
    return bool(e.get("verdict")) or e.get("holds") is not None


def _is_headline(e: dict[str, Any]) -> bool:
    c = _claims.REGISTRY.get(e.get("registry") or "")
    reading_ok = c is None or not e.get("reading") or e.get("reading") == c.headline
    return reading_ok and (e.get("condition") or "original") == "original"


def _section(title: str, n: int, body: str) -> list[str]:
    """A folded part of the page: a sphinx-design dropdown (HTML ``<details>``) titled with its row count."""
    return [f":::{{dropdown}} {title} ({n} {'row' if n == 1 else 'rows'})", body, ":::", ""]


def to_markdown(ledgers: list[dict[str, Any]], profile: str | None = None,
                titles: dict[str, str] | None = None, hrefs: dict[str, str] | None = None,
                figures: dict[str, dict[str, str]] | None = None, downloads: dict[str, str] | None = None,
                docs: dict[str, str] | None = None) -> str:
    """All ledgers as the ledger page's body (MyST with HTML tables): the five contributions
    (:func:`contributions`); every claim once per model with its verdict, robustness and a link to its
    chapter's figure (:func:`claim_rows`); a summary per chapter; then per chapter its claims under the
    headline reading, other readings and controls and its plain values folded (dropdowns), and its data as CSV.

    ``titles``: notebook -> section title (default: the notebook name); ``hrefs``: notebook -> URL of its page
    relative to the ledger page; ``figures``: notebook -> {panel in lower case ("1c") -> the figure's HTML id};
    ``downloads``: notebook -> path of its CSV relative to the page; ``docs``: notebook -> the document to
    cite with ``{doc}``."""
    titles, hrefs, figures = titles or {}, hrefs or {}, figures or {}
    downloads, docs = downloads or {}, docs or {}
    if not ledgers:
        where = f" for profile `{profile}`" if profile else ""
        return (f":::{{warning}}\nNo ledger was found{where}. Run the notebooks first "
                f"(`make notebooks PROFILE={profile or 'full'}`).\n:::\n")

    def fig_href(stem: str) -> Any:
        def href(fig: str) -> str | None:
            base = hrefs.get(stem)
            if not base:
                return None
            anchor = figures.get(stem, {}).get(str(fig).lower())
            return f"{base}#{anchor}" if anchor else base
        return href

    lines = ["## The paper's five contributions", "",
             "Per contribution and model: the claims of the registry (`transformer_dynamics.claims`) that hold, "
             "fail or stay undecided under the book's headline choices, and how many hinge on an open choice "
             "(the verdict-robustness chapter).", "", contributions(ledgers)]
    rows = claim_rows(ledgers)
    if rows:
        lines += ["## Every claim, once per model", "",
                  "The verdict each claim's chapter records under the headline reading on the original texts, "
                  "and whether it survives every open choice (chapter 8: robust, or the choices it hinges on). "
                  "The figure links to the chapter's figure; hover over the verdict for its reason and over the "
                  "robustness for the verdict under each choice.", ""]
        entries = [r["entry"] for r in rows]
        others = other_fields(entries)
        header = (["#", "Figure", "Claim", "Model", "Paper", "Ours", "95% CI / p", "Verdict", "Robustness"]
                  + [f.replace("_", " ") for f in others])
        table = []
        for r in rows:
            c, e = _claims.REGISTRY[r["key"]], r["entry"]
            table.append([r["contribution"], link(c.figure, fig_href(c.chapter)(c.figure)),
                          link(c.quote, None, r["key"]), r["model"], c.paper, _ours(e) if e else "",
                          _interval(e) if e else "", link(verdict_text(r["verdict"]), None, e.get("reason", "")),
                          link(r["status"] or "–", None, str(r["robustness"] or ""))]
                         + [_other_cell(e.get(f)) for f in others])
        lines.append(html_table(header, table))
    lines += ["## Per chapter", ""]
    table = []
    for s in summary(ledgers):
        stem = s["notebook"]
        table.append([link(titles.get(stem, stem), hrefs.get(stem)), s["model"] or "",
                      "" if s["n"] is None else s["n"], s["holds"] + s["fails"] + s["undecided"], s["holds"],
                      s["fails"], s["undecided"], s["open"]])
    lines.append(html_table(["Chapter", "Model", "N", "Claims", "✓", "✗", "?", "Plain values"], table))
    for led in ledgers:
        stem = led.get("notebook", "")
        entries = led.get("entries", [])
        lines += [f"## {titles.get(stem, stem)}", ""]
        where = [f"From {{doc}}`{docs[stem]}`." if stem in docs else ""]
        ctx = _context_line(led.get("context", {}), profile)
        if ctx:
            where.append(f"Run with {ctx}.")
        if stem in downloads:
            where.append(f"{{download}}`All {len(entries)} recorded values as CSV <{downloads[stem]}>`.")
        lines += [" ".join(w for w in where if w), ""]
        claims_ = [e for e in entries if _is_claim(e)]
        head = [e for e in claims_ if _is_headline(e)]
        rest = [e for e in claims_ if not _is_headline(e)]
        plain = [e for e in entries if not _is_claim(e)]
        for part, title in ((head, None), (rest, "Other readings and controls"), (plain, "Plain values")):
            if not part:
                continue
            header, trows, _ = _ledger_rows({**led, "entries": part}, profile, html=True, figure_href=fig_href(stem))
            body = html_table(header, trows)
            lines += [body] if title is None else _section(title, len(part), body)
    return "\n".join(lines)
