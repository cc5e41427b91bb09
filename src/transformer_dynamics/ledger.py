"""The reproduction ledger: each notebook records its headline values as it runs; the book reads them back.

A notebook makes one :class:`Ledger` and records every number it states: a claim of the paper by its key in
the registry (:mod:`transformer_dynamics.claims`), which supplies the sentence, the paper's value and the
verdict; any other number as a plain value, without a verdict::

    led = Ledger("02_activation_statistics", directory=LEDGER_DIR, models=MODELS, n=N)
    led.claims(verdict_table, model="smollm2-135m")   # claims: verdicts.judge's table (the registry decides)
    led.record("mean_abs_first", m0, claim="mean |activation| at sublayer 0", figure="1B")  # no verdict

Each call rewrites ``<directory>/<notebook>.json`` atomically, so a notebook that fails half-way leaves
what it recorded so far. Nothing in the ledger is typed in: values come from the computation.

This module records and reads ledgers back (:func:`load`, :func:`load_all`). The book's side is in two modules
whose names are reached from here too (``ledger.show_table``, ``ledger.to_markdown``): the tables
(:mod:`~transformer_dynamics.ledger_tables`: :func:`show_table`, :func:`html_table`, :func:`to_table`,
:func:`to_csv`) and the ledger page (:mod:`~transformer_dynamics.ledger_page`: :func:`to_markdown`,
:func:`claim_rows`, :func:`contributions`).
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
from .formats import format_value  # noqa: F401 - ledger.format_value: how a recorded value is written

__all__ = ["Entry", "Ledger", "load", "load_all", "default_directory", "control_note", "LEDGER_ENV",
           # the book's side (ledger_tables, ledger_page), reached from here
           "to_table", "to_markdown", "summary", "models_of", "by_claim", "claim_rows", "contributions",
           "contribution_counts", "md_cell", "Markup", "link", "html_table", "Table", "show_table", "to_csv",
           "other_fields", "verdict_text", "PLACED_FIELDS", "ROBUSTNESS_NOTEBOOK"]

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


#: Set by the book's runner while a chapter runs: the file where every ledger that chapter reads is noted (path
#: and sha256, one JSON line each), so that a warm rebuild runs the chapter again when what it read has changed.
READS_ENV = "TRANSFORMER_DYNAMICS_READS"


def _note_read(path: str | os.PathLike, raw: bytes) -> None:
    target = os.environ.get(READS_ENV)
    if not target:
        return
    import hashlib  # noqa: PLC0415

    line = json.dumps({"path": str(Path(path).resolve()), "sha256": hashlib.sha256(raw).hexdigest()})
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read one notebook's ledger JSON: ``{"notebook", "context", "entries": [...]}``."""
    try:
        raw = Path(path).read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}); delete it and rerun its notebook") from None
    _note_read(path, raw)
    if not isinstance(data, dict) or "entries" not in data:
        raise ValueError(f"{path} is not a ledger file (no 'entries'); delete it and rerun its notebook")
    return data


def load_all(directory: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every ledger in ``directory`` (sorted by notebook name)."""
    directory = Path(directory) if directory is not None else default_directory()
    return [load(p) for p in sorted(directory.glob("*.json")) if not p.name.startswith(".")]


def book_directory(directory: str | os.PathLike) -> Path:
    """Where the finished chapters' ledgers are, for a chapter recording into ``directory``: inside a book build a
    running chapter records into ``<out>/ledger/.partial/<profile>/<stem>`` and the finished ones are in
    ``<out>/ledger/<profile>``; anywhere else, ``directory`` itself. What a chapter reads of another chapter's
    numbers is read from here."""
    d = Path(directory)
    if d.parent.parent.name == ".partial":
        return d.parents[2] / d.parent.name
    return d


# The book's side of the ledger (imported last: those modules read ledgers, this one records them).
from .ledger_page import (ROBUSTNESS_NOTEBOOK, claim_rows, contribution_counts, contributions,  # noqa: E402
                          summary, to_markdown)
from .ledger_tables import (PLACED_FIELDS, Markup, Table, by_claim, html_table, link, md_cell,  # noqa: E402
                            models_of, other_fields, show_table, to_csv, to_table, verdict_text)
from .ledger_tables import _ledger_rows  # noqa: E402, F401 - one ledger's rows, read by the tests
