"""Calibration: the claim registry run on constructed residual streams whose right answer is known.

Every residual-stream claim of :mod:`.claims` is decided by :func:`.verdicts.decide` from bootstrap replicates over
texts (:func:`.robustness.claim_evidence`). Here that rule meets streams built so that the answer is known:

- **nulls** (:data:`NULLS`): a depth-stationary stream (:func:`stationary`: AR(1) over the sublayers with
  ``phi`` in {0, 0.5, 0.9}, started from its stationary distribution, a nonzero mean, a per-text scale that
  varies slowly over depth); the same with **one outlier text** (:func:`with_outlier`: one text of 200 whose effect
  grows with depth, with a +,+,-,- sublayer pattern); and one stream per level claim whose true value sits **at its
  threshold** (:data:`MECHANISMS` at amplitude 0). Where the true value sits at the threshold, or the construction
  has no effect at all (no trend, ordering or shape over depth in a stationary stream), any decision is a false
  decision; where it has a side (``phi = 0.9``: r = 0.9 kappa > 0.8), the other side is.
- **the random walk** (:func:`random_walk`: updates of variance 0.3 on an embedding of variance 1): its
  residual-accumulation null (:func:`.nulls.accumulation_null`) is the same process, so "beyond the null"
  (:func:`.verdicts.compare` through :func:`.robustness.stream_verdicts`) is a false decision there.
- **planted effects** (:data:`MECHANISMS`): for each claim and reading, a stream whose value lies on the trained
  models' side of the threshold by as many standard errors (of the value at the calibration's number of texts) as
  the trained models' own value (:func:`effect_sizes`, read from the book's ledgers, or
  :func:`sizes_from_evidence`), at most :data:`Z_MAX`. The readings' verdicts of one simulation are corrected
  together (Benjamini-Hochberg, as a chapter's are) before power is counted.

The streams are small (a few hundred texts, 16 units, 18-36 sublayers; :class:`Settings`): the rule's calibration
depends on the texts' number and the curves' shape over depth, not on the width. A planted effect's size is counted
in standard errors, so an effect as clear as the trained models' is planted whatever the calibration's N.

:func:`calibrate` (:mod:`.run`) runs it all side by side (:func:`.workers.map_jobs`); :func:`table` gives, per claim and
reading, the false-decision rate on each null and the power, with the number of simulations and a binomial
(Clopper-Pearson) interval; :func:`worst` the largest false-decision rate.
"""

from .run import Calibration, Settings, calibrate
from .sizes import effect_sizes, planted_sizes, sizes_from_evidence
from .streams import (
                      ALPHA,
                      MECHANISMS,
                      NULLS,
                      Z_MAX,
                      Z_POWER,
                      Mechanism,
                      Null,
                      null_truth,
                      random_walk,
                      scale_correlation,
                      stationary,
                      with_outlier,
)
from .tables import binomial_interval, book_table, markdown, rates, summary, summary_sentence, table, worst

__all__ = ["ALPHA", "Z_MAX", "Z_POWER", "stationary", "random_walk", "with_outlier", "scale_correlation", "Null",
           "NULLS", "Mechanism", "MECHANISMS", "null_truth", "effect_sizes", "sizes_from_evidence", "Settings",
           "calibrate", "Calibration", "planted_sizes", "rates", "table", "book_table", "markdown", "worst", "summary",
           "summary_sentence", "binomial_interval"]
