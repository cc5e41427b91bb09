"""The book's ledger page: every chapter's ledger read back and summarised (:func:`to_markdown`): the paper's
five contributions (:func:`contributions`), every claim once per model with its robustness (:func:`claim_rows`),
a summary per chapter (:func:`summary`) and each chapter's rows. Reached as ``transformer_dynamics.ledger.<name>``;
the tables themselves are :mod:`~transformer_dynamics.ledger_tables`'.
"""

from __future__ import annotations

from typing import Any

from . import claims as _claims
from . import verdicts as _verdicts
from .ledger_tables import (_context_line, _interval, _ledger_rows, _other_cell, _ours, html_table, link,
                            models_of, other_fields, verdict_text)

__all__ = ["ROBUSTNESS_NOTEBOOK", "summary", "claim_rows", "contribution_counts", "contributions", "to_markdown"]

#: the notebook whose entries carry each claim's robustness line (``extra["status"]``)
ROBUSTNESS_NOTEBOOK = "08_verdict_robustness"


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
    if not ledgers:
        where = f" for profile `{profile}`" if profile else ""
        return (f":::{{warning}}\nNo ledger was found{where}. Run the notebooks first "
                f"(`make notebooks PROFILE={profile or 'full'}`).\n:::\n")
    links = _FigureLinks(hrefs, figures)
    lines = ["## The paper's five contributions", "",
             "Per contribution and model: the claims of the registry (`transformer_dynamics.claims`) that hold, "
             "fail or stay undecided under the book's headline choices, and how many hinge on an open choice "
             "(the verdict-robustness chapter).", "", contributions(ledgers)]
    lines += _every_claim(ledgers, links)
    lines += ["## Per chapter", "", _chapter_summary(ledgers, titles, hrefs)]
    for led in ledgers:
        lines += _chapter_section(led, profile, titles, links, downloads or {}, docs or {})
    return "\n".join(lines)


class _FigureLinks:
    """``links(stem)(figure) -> href | None``: a chapter's figure on its page (``hrefs[stem]#<figure id>``),
    the page alone when the figure has no id there, None when the chapter has no page."""

    def __init__(self, hrefs: dict[str, str], figures: dict[str, dict[str, str]]):
        self.hrefs, self.figures = hrefs, figures

    def __call__(self, stem: str) -> Any:
        def href(fig: str) -> str | None:
            base = self.hrefs.get(stem)
            if not base:
                return None
            anchor = self.figures.get(stem, {}).get(str(fig).lower())
            return f"{base}#{anchor}" if anchor else base
        return href


def _every_claim(ledgers: list[dict[str, Any]], links: _FigureLinks) -> list[str]:
    """The page's table of every claim once per model (:func:`claim_rows`); no lines when no claim is recorded."""
    rows = claim_rows(ledgers)
    if not rows:
        return []
    lines = ["## Every claim, once per model", "",
             "The verdict each claim's chapter records under the headline reading on the original texts, "
             "and whether it survives every open choice (chapter 8: robust, or the choices it hinges on). "
             "The figure links to the chapter's figure; hover over the verdict for its reason and over the "
             "robustness for the verdict under each choice.", ""]
    others = other_fields([r["entry"] for r in rows])
    header = (["#", "Figure", "Claim", "Model", "Paper", "Ours", "95% CI / p", "Verdict", "Robustness"]
              + [f.replace("_", " ") for f in others])
    table = []
    for r in rows:
        c, e = _claims.REGISTRY[r["key"]], r["entry"]
        table.append([r["contribution"], link(c.figure, links(c.chapter)(c.figure)),
                      link(c.quote, None, r["key"]), r["model"], c.paper, _ours(e) if e else "",
                      _interval(e) if e else "", link(verdict_text(r["verdict"]), None, e.get("reason", "")),
                      link(r["status"] or "–", None, str(r["robustness"] or ""))]
                     + [_other_cell(e.get(f)) for f in others])
    return lines + [html_table(header, table)]


def _chapter_summary(ledgers: list[dict[str, Any]], titles: dict[str, str], hrefs: dict[str, str]) -> str:
    """One row per chapter and model: its claims' verdict counts and its plain values (:func:`summary`)."""
    table = []
    for s in summary(ledgers):
        stem = s["notebook"]
        table.append([link(titles.get(stem, stem), hrefs.get(stem)), s["model"] or "",
                      "" if s["n"] is None else s["n"], s["holds"] + s["fails"] + s["undecided"], s["holds"],
                      s["fails"], s["undecided"], s["open"]])
    return html_table(["Chapter", "Model", "N", "Claims", "✓", "✗", "?", "Plain values"], table)


def _chapter_section(led: dict[str, Any], profile: str | None, titles: dict[str, str], links: _FigureLinks,
                     downloads: dict[str, str], docs: dict[str, str]) -> list[str]:
    """One chapter's part of the page: where it comes from and how it ran, its claims under the headline reading,
    then its other readings and controls and its plain values folded."""
    stem = led.get("notebook", "")
    entries = led.get("entries", [])
    lines = [f"## {titles.get(stem, stem)}", ""]
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
        header, trows, _ = _ledger_rows({**led, "entries": part}, profile, html=True, figure_href=links(stem))
        body = html_table(header, trows)
        lines += [body] if title is None else _section(title, len(part), body)
    return lines
