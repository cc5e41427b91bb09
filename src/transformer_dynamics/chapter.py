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
...      row_kwargs=ch.row_labels)                                                   # doctest: +SKIP
>>> ch.record("smollm2-135m", "r_first", 0.83, condition="shuffled", claim="...")   # doctest: +SKIP
>>> show_table(ch.ledger, paper=True)    # the paper's statements next to ours       # doctest: +SKIP

Chapters that run the models themselves (1, 5, 7, 8) take only the ledger (``capture=False``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import pipeline, random_init
from .residual import sublayer_labels
from .ledger import Ledger

__all__ = ["Chapter", "model_list", "setup"]


@dataclass
class Chapter:
    """What a chapter works with after :func:`setup`.

    models: model names in figure-row order; conditions: e.g. ``("original", "shuffled")``;
    runs: ``[(model, condition), ...]`` in figure order; rs: ``{(model, condition): (n, n_sublayers,
    d_model)}`` float32 (empty when ``capture=False``); n_sublayers, d_model: ``{model: int}``;
    labels: ``{model: ["L0.attn", "L0.mlp", ...]}``; row_labels: ``{model: {"labels": ...}}``, the
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
    seed: int = 0
    cache_dir: str | os.PathLike | None = None
    reference_n: int = 200
    reference_seeds: tuple[int, ...] = random_init.SEEDS
    reference_inits: tuple[str, ...] = ("default", "matched")
    _refs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def runs(self) -> list[tuple[str, str]]:
        return [(m, c) for m in self.models for c in self.conditions]

    @property
    def labels(self) -> dict[str, list[str]]:
        return {m: sublayer_labels(s // 2) for m, s in self.n_sublayers.items()}

    @property
    def row_labels(self) -> dict[str, dict[str, Any]]:
        """Each model's sublayer labels as a figure row's keywords: ``{model: {"labels": [...]}}``, the
        ``row_kwargs`` of :func:`transformer_dynamics.plots.style.grid` (one row per model)."""
        return {m: {"labels": lab} for m, lab in self.labels.items()}

    def record(self, model: str, key: str, value: Any, *, condition: str = "original", claim: str = "",
               **kwargs: Any) -> None:
        """A plain value (no verdict) for ``model`` on ``condition``: :meth:`Ledger.record
        <transformer_dynamics.ledger.Ledger.record>` (key ``key@condition`` off the original texts)."""
        self.ledger.record(key, value, claim=claim, condition=condition, model=model, **kwargs)

    def reference_streams(self, model: str) -> dict[str, np.ndarray]:
        """The random-init references of ``model``: ``{"default:<seed>" / "matched:<seed>": rs}``, captured through
        the cache on ``reference_n`` texts drawn with the chapter's seed, one per init in
        ``reference_inits`` and seed in ``reference_seeds`` (:mod:`transformer_dynamics.random_init`)."""
        if model not in self._refs:
            self._refs[model] = {
                f"{kind}:{s}": pipeline.residual_stream(model, n=self.reference_n, seed=self.seed, init=kind,
                                                        init_seed=s, cache_dir=self.cache_dir)
                for kind in self.reference_inits for s in self.reference_seeds}
        return self._refs[model]

    def decide(self, claims: Sequence[str] | None = None, *, conditions: Sequence[str] | None = None,
               references: bool = True, control_readings: str = "headline", **evidence: Any):
        """Decide the residual-stream claims of this chapter (``claims``: keys; None: every ``"rs"`` claim whose
        chapter this is) on every model and condition, record them in the ledger and return the verdict table.

        On the reference condition (the first) each claim is set against the residual-accumulation null of the same
        texts and the random-init references (:meth:`reference_streams`), unless ``references=False``; controls
        are decided on their own, on the headline readings (``control_readings="all"``: every reading). Keywords go to
        :func:`transformer_dynamics.robustness.stream_verdicts` (n_boot, n_boot_slow, mi_units, mi_methods, n_shuffles,
        variance, pca_components...). -> DataFrame: the :func:`transformer_dynamics.verdicts.judge` rows with ``model``,
        ``condition``, and the chapter's Benjamini-Hochberg ``q`` and ``verdict_bh`` (over every claim row recorded so
        far).
        """
        from . import claims as _claims, robustness  # noqa: PLC0415

        keys = _claims.claims_of(source="rs", chapter=self.name) if claims is None else list(claims)
        tables = []
        for m in self.models:
            for c in (self.conditions if conditions is None else conditions):
                ref = references and c == self.conditions[0]
                table, _ = robustness.stream_verdicts(
                    self.rs[m, c], self.reference_streams(m) if ref else {}, keys, null=ref, seed=self.seed,
                    readings="all" if c == self.conditions[0] else control_readings,
                    **{"cache_dir": self.cache_dir, **evidence})
                self.ledger.claims(table, model=m, condition=c)
                tables.append(table.assign(model=m, condition=c))
        import pandas as pd  # noqa: PLC0415

        out = pd.concat(tables, ignore_index=True)
        # the corrected verdicts over the whole chapter so far, as the ledger holds them
        corrected = {(e.model, e.registry, e.reading, e.condition): (e.q, e.verdict_bh)
                     for e in self.ledger.entries.values() if e.verdict}
        qv = [corrected.get((r.model, r.claim, r.reading, r.condition), (None, None)) for r in out.itertuples()]
        return out.assign(q=[q for q, _ in qv], verdict_bh=[v for _, v in qv])

    def summary(self) -> str:
        """One Markdown line per model: the array's shape, layers and units."""
        return "\n".join(f"- **{m}**: residual stream {self.rs[m, self.conditions[0]].shape} (texts, sublayers, "
                         f"units): {self.n_sublayers[m] // 2} layers, {self.d_model[m]} units"
                         for m in self.models if (m, self.conditions[0]) in self.rs)


def model_list(models: str | Sequence[str]) -> list[str]:
    """A chapter's ``MODELS`` parameter as a list: one name (short name, hub id or folder) or several,
    duplicates dropped, order kept. An empty list is an error (a chapter needs a model)."""
    names = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    names = [str(m) for m in dict.fromkeys(names)]
    if not names:
        raise ValueError("MODELS is empty: give at least one model, e.g. MODELS = ['smollm2-135m']")
    return names


def setup(name: str, *, models: str | Sequence[str], n: int, seed: int = 0,
          conditions: Sequence[str] = pipeline.CONDITIONS, cache_dir: str | os.PathLike | None = None,
          ledger_dir: str | os.PathLike | None = None, quantization: str | None = None, capture: bool = True,
          context_quantization: bool = False, reference_n: int = 200,
          reference_seeds: Sequence[int] = random_init.SEEDS,
          reference_inits: Sequence[str] = ("default", "matched"), **context: Any) -> Chapter:
    """Set a chapter up from its parameters cell.

    name: the notebook's name (``"02_activation_statistics"``), the ledger's file; models: the ``MODELS``
    parameter (one name or several, :func:`model_list`); n, seed: texts and sampling seed;
    conditions: the capture conditions, the first is the reference (``pipeline.CONDITIONS``); cache_dir,
    quantization: as :func:`pipeline.residual_stream`; ledger_dir: the ledger's folder; capture: False to
    skip the captures (chapters that run the model themselves); context_quantization: also write
    ``quantization`` into the ledger's run context (after ``seed``; chapter 6, which compares precisions);
    reference_n, reference_seeds, reference_inits: the random-init references of :meth:`Chapter.decide` (texts,
    seeds, kinds of :mod:`transformer_dynamics.random_init`); context: more run context for the ledger (its
    notebook-specific parameters). Returns a :class:`Chapter`.
    """
    models = model_list(models)
    conditions = tuple(conditions)
    if not conditions:
        raise ValueError(f"conditions is empty: give at least one, e.g. {pipeline.CONDITIONS}")
    if "quantization" in context:
        raise ValueError("quantization is setup's own argument; pass context_quantization=True to record it")
    if context_quantization:
        context = {"quantization": quantization, **context}
    ledger = Ledger(name, directory=ledger_dir, models=models, n=n, seed=seed, **context)
    for kind in reference_inits:
        random_init.check_kind(kind)
    if isinstance(reference_n, bool) or int(reference_n) != reference_n or reference_n < 4:
        raise ValueError(f"reference_n must be an integer >= 4 (texts of the random-init references); got "
                         f"{reference_n!r}")
    ch = Chapter(name=name, models=models, conditions=conditions, ledger=ledger, seed=seed, cache_dir=cache_dir,
                 reference_n=min(int(reference_n), int(n)), reference_seeds=tuple(int(s) for s in reference_seeds),
                 reference_inits=tuple(reference_inits))
    if capture:
        for m in models:
            for c in conditions:
                ch.rs[m, c] = pipeline.residual_stream(m, n=n, seed=seed, condition=c, cache_dir=cache_dir,
                                                       quantization=quantization)
            ch.n_sublayers[m], ch.d_model[m] = (int(v) for v in ch.rs[m, conditions[0]].shape[1:])
    return ch
