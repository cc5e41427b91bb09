"""The ledger as tables: the one table writer of the book (:func:`html_table`, :class:`Table`, :func:`show_table`)
and one notebook's ledger as a table (:func:`to_table`, HTML or Markdown) or as CSV (:func:`to_csv`).

Tables in the book are HTML, always: a notebook's text/markdown output is parsed by myst-nb as CommonMark (no
tables) unless configured otherwise, and the typographic replacements then turn a pipe table's ``|---|`` into
``|—|`` text; an HTML table with escaped cells renders the same in Jupyter, Colab and every book. Numbers are
written by :mod:`transformer_dynamics.formats`. Every name here is reached as ``transformer_dynamics.ledger.<name>``
(:mod:`~transformer_dynamics.ledger` records; :mod:`~transformer_dynamics.ledger_page` builds the ledger page).
"""

from __future__ import annotations

import html as _html
import json
import re
from typing import Any

import numpy as np

from . import claims as _claims
from . import verdicts as _verdicts
from .formats import finite, format_value, p_value

__all__ = ["PLACED_FIELDS", "verdict_text", "md_cell", "Markup", "link", "html_table", "Table", "show_table",
           "models_of", "by_claim", "other_fields", "to_table", "to_csv"]

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
    from .ledger import Ledger  # noqa: PLC0415 - the recording half imports this module at its end

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
        return f"p = {p_value(p)}" if isinstance(p, (int, float)) else f"p = {p}"
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
        q = f"Benjamini-Hochberg q = {p_value(e['q'])} over the chapter's verdicts" if finite(e.get("q")) else ""
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
