"""A chapter's setup in one call: parameters -> residual streams per (model, condition), sublayer labels,
the ledger.

Every notebook opened with the same dozen lines (model list, conditions, ledger, one capture per model and
condition, labels, per-row plot arguments, a ``record`` that suffixes the shuffled control's keys). Here
they are once:

>>> ch = chapter.setup("02_activation_statistics", models=MODELS, n=N, seed=SEED,     # doctest: +SKIP
...                    cache_dir=CACHE_DIR, ledger_dir=LEDGER_DIR, quantization=QUANTIZATION,
...                    mi_units=MI_UNITS)                   # extra keywords: run context for the ledger
>>> ch.rs["smollm2-135m", "original"].shape                                          # doctest: +SKIP
(1000, 60, 576)
>>> grid(plots.metrics.plot_velocity, {k: metrics.velocity(ch.rs[k]) for k in ch.runs},
...      row_kwargs=ch.per_model)                                                    # doctest: +SKIP
>>> ch.record("smollm2-135m", "r_first", 0.83, condition="shuffled", claim="...")   # doctest: +SKIP
>>> Markdown(ch.table(paper=True))      # the paper's statements next to ours       # doctest: +SKIP

Chapters that run the models themselves (1, 5, 7, 8) take only the ledger (``capture=False``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import pipeline
from .capture import sublayer_labels
from .ledger import Ledger, control_note, to_table

__all__ = ["Chapter", "setup"]


@dataclass
class Chapter:
    """What a chapter works with after :func:`setup`.

    models: model names in figure-row order; conditions: e.g. ``("original", "shuffled")``;
    runs: ``[(model, condition), ...]`` in figure order; rs: ``{(model, condition): (n, n_sublayers,
    d_model)}`` float32 (empty when ``capture=False``); n_sublayers, d_model: ``{model: int}``;
    labels: ``{model: ["L0.attn", "L0.mlp", ...]}``; per_model: ``{model: {"labels": ...}}``, the
    ``row_kwargs`` of :func:`transformer_dynamics.plots.style.grid`; ledger: the chapter's
    :class:`~transformer_dynamics.ledger.Ledger`.
    """

    name: str
    models: list[str]
    conditions: tuple[str, ...]
    ledger: Ledger
    rs: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    n_sublayers: dict[str, int] = field(default_factory=dict)
    d_model: dict[str, int] = field(default_factory=dict)

    @property
    def runs(self) -> list[tuple[str, str]]:
        return [(m, c) for m in self.models for c in self.conditions]

    @property
    def labels(self) -> dict[str, list[str]]:
        return {m: sublayer_labels(s // 2) for m, s in self.n_sublayers.items()}

    @property
    def per_model(self) -> dict[str, dict[str, Any]]:
        return {m: {"labels": lab} for m, lab in self.labels.items()}

    def key(self, key: str, condition: str) -> str:
        """The ledger key of ``key`` on ``condition``: as it is on the reference condition (the first),
        ``{key}_{condition}`` on a control, so that the original and the control never share a row."""
        return key if condition == self.conditions[0] else f"{key}_{condition}"

    def record(self, model: str, key: str, value: Any, *, condition: str = "original", claim: str = "",
               **kwargs: Any) -> None:
        """``ledger.record`` for ``model`` with the condition stored; a control condition's key gets the
        suffix ``_{condition}`` (:meth:`key`) and its claim says so."""
        if condition != self.conditions[0]:
            claim = claim + control_note(condition)
        self.ledger.record(self.key(key, condition), value, claim=claim, condition=condition, model=model,
                           **kwargs)

    def record_headlines(self, model: str, table: Any, *, suffix: str = "", **extra: Any) -> None:
        """One ledger row per headline number of ``model``: ``table`` is a
        :func:`robustness.bootstrap_headlines` frame (index: keys; columns ``estimate``, ``low``, ``high``)
        or a plain ``{key: value}`` dict (:func:`robustness.headlines_from_curves`). The row's key is
        ``{key}{suffix}``; its sentence, figure and unit come from ``robustness.STATISTICS``; the interval
        is kept where finite; an undefined (non-finite) number is not a value and is skipped."""
        from . import robustness  # noqa: PLC0415 (the claims' statistics; only chapter 6 needs them here)

        rows = table.iterrows() if hasattr(table, "iterrows") else (
            (k, {"estimate": v}) for k, v in table.items())
        for key, row in rows:
            if not np.isfinite(row["estimate"]):
                continue
            h = robustness.STATISTICS[key]
            ci = (row["low"], row["high"]) if "low" in row and np.isfinite(row["low"]) else None
            self.ledger.record(f"{key}{suffix}", row["estimate"], ci=ci, claim=h.description, figure=h.figure,
                               unit=h.unit, model=model, **extra)

    def table(self, paper: bool | None = None) -> str:
        """The ledger so far as a Markdown table (:func:`~transformer_dynamics.ledger.to_table`: the rows of one
        claim together): ``paper=True`` only the rows with a paper's value, ``False`` only the others, None
        all. The one way a chapter shows "the paper's statements next to ours"."""
        led = self.ledger.to_dict()
        if paper is not None:
            led["entries"] = [e for e in led["entries"] if bool(e["paper"]) == paper]
        return to_table(led)

    def summary(self) -> str:
        """One Markdown line per model: the array's shape, layers and units."""
        return "\n".join(f"- **{m}**: residual stream {self.rs[m, self.conditions[0]].shape} (texts, sublayers, "
                         f"units): {self.n_sublayers[m] // 2} layers, {self.d_model[m]} units"
                         for m in self.models if (m, self.conditions[0]) in self.rs)


def setup(name: str, *, models: str | Sequence[str], n: int, seed: int = 0,
          conditions: Sequence[str] = pipeline.CONDITIONS, cache_dir: str | os.PathLike | None = None,
          ledger_dir: str | os.PathLike | None = None, quantization: str | None = None, capture: bool = True,
          context_quantization: bool = False, **context: Any) -> Chapter:
    """Set a chapter up from its parameters cell.

    name: the notebook's name (``"02_activation_statistics"``), the ledger's file; models: the ``MODELS``
    parameter (one name or several, :func:`pipeline.model_list`); n, seed: texts and sampling seed;
    conditions: the capture conditions, the first is the reference (``pipeline.CONDITIONS``); cache_dir,
    quantization: as :func:`pipeline.residual_stream`; ledger_dir: the ledger's folder; capture: False to
    skip the captures (chapters that run the model themselves); context_quantization: also write
    ``quantization`` into the ledger's run context (after ``seed``; chapter 6, which compares precisions);
    context: more run context for the ledger (its notebook-specific parameters). Returns a :class:`Chapter`.
    """
    models = pipeline.model_list(models)
    conditions = tuple(conditions)
    if not conditions:
        raise ValueError(f"conditions is empty: give at least one, e.g. {pipeline.CONDITIONS}")
    if "quantization" in context:
        raise ValueError("quantization is setup's own argument; pass context_quantization=True to record it")
    if context_quantization:
        context = {"quantization": quantization, **context}
    ledger = Ledger(name, directory=ledger_dir, models=models, n=n, seed=seed, **context)
    ch = Chapter(name=name, models=models, conditions=conditions, ledger=ledger)
    if capture:
        for m in models:
            for c in conditions:
                ch.rs[m, c] = pipeline.residual_stream(m, n=n, seed=seed, condition=c, cache_dir=cache_dir,
                                                       quantization=quantization)
            ch.n_sublayers[m], ch.d_model[m] = (int(v) for v in ch.rs[m, conditions[0]].shape[1:])
    return ch
