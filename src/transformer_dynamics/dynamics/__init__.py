"""The residual stream's local dynamics: per-sublayer Jacobians at the last token, their spectral geometry,
finite-time Lyapunov exponents, and jPCA (beyond the paper; the questions of the authors' sequel,
arXiv 2605.14258). Chapter 7 calls :func:`reference_runs` and decides the registry's claims from
:func:`run_evidence` and :func:`jpca_evidence`.

Sublayer ``s`` of the residual stream (RS) is mapped to ``s + 1`` by one block of a decoder layer (even
``s = 2l``: layer ``l``'s attention block, odd: its MLP block). At a text's last token, with the keys and
values of the earlier positions held at their values for that text (by causality they do not depend on the
last token's RS), the map is an exact function of the last token's RS alone, and its Jacobian
``J_s = d h_{s+1} / d h_s: (D, D)`` is the exact last-token Jacobian with the context fixed.

=====================  ======================================================================================
module                 what
=====================  ======================================================================================
:mod:`.maps`           :func:`frozen_context` (one forward per batch: linearisation points, the prefix's
                       keys/values), :func:`sublayer_map` ``f_s: (B, D) -> (B, D)`` (or its update alone),
                       :func:`check_maps`; the input :func:`text_token_ids`
:mod:`.derivatives`    :func:`jacobians` ``J: (B, n, D, D)`` (or ``J - I``); :func:`matrix_steps`,
                       :func:`jvp_steps` (linear steps on ``(B, k, D)`` vectors, the latter without a matrix)
:mod:`.spectral`       :func:`spectra` of ``(..., D, D)`` matrices, :func:`update_spectra` of ``J = I + A`` from
                       the updates ``A`` (rotation dominance, Henrici departure, antisymmetric share...),
                       :func:`effective_rank`, :func:`cumulative_products`
:mod:`.exponents`      :func:`lyapunov` (Benettin: top-k finite-time exponents from every start),
                       :func:`relative_exponents`
:mod:`.rotational`     :func:`jpca` (Churchland et al. 2012) on trajectories over sublayers, its projection, its
                       sublayer-shuffled control and :func:`jpca_resampled` (the control on every resample)
:mod:`.local`          :func:`local_dynamics` (a :class:`LocalDynamics` for a list of texts, streamed) and what
                       is read off it (:func:`predicted_recovery`, :func:`by_reference`, :func:`runs_table`...)
:mod:`.evidence`       the registry's dynamics claims: the sublayers they read (:func:`claim_sublayers`), the
                       runs computing them (:func:`reference_runs`: trained, token-shuffled, random init;
                       :func:`jpca_runs`), their curves per resample, :func:`verdict_table`
:mod:`.known`          every estimator here (and chapter 3's rotation count) on systems with a known answer:
                       the Lorenz flow, the Henon map, rotations, non-normal matrices (:func:`known_answers`;
                       the book's appendix)
=====================  ======================================================================================

``from transformer_dynamics import dynamics as dy; dy.jacobians(...)`` and every other public name work from
here. The claims themselves (sentence, statistic, test) are declared once, in :mod:`transformer_dynamics.claims`.
"""

from .derivatives import jacobians, jvp_steps, matrix_steps
from .evidence import (JPCARun, claim_curves, claim_pairs, claim_sublayers, depth_thirds, exponent_starts,
                       jpca_evidence, jpca_by_reference, jpca_planes, jpca_runs, jpca_table, lower_starts,
                       recovery_table, reference_runs, run_evidence, run_workers, thirds_table, verdict_table,
                       verdict_tables)
from .exponents import lyapunov, relative_exponents
from .known import KnownAnswer, known_answers
from .local import (REFERENCE_LABELS, LocalDynamics, benettin_check, by_reference, local_dynamics, picked_eigenvalues,
                    predicted_recovery, runs_table)
from .maps import CONTEXTS, Context, check_maps, frozen_context, sublayer_map, text_token_ids
from .rotational import JPCAResamples, JPCAResult, jpca, jpca_projection, jpca_resampled, jpca_shuffled
from .spectral import MEASURES, cumulative_products, effective_rank, product_measures, spectra, update_spectra

__all__ = [
    "CONTEXTS",
    "MEASURES",
    "REFERENCE_LABELS",
    "Context",
    "JPCAResamples",
    "JPCAResult",
    "KnownAnswer",
    "LocalDynamics",
    "benettin_check",
    "by_reference",
    "check_maps",
    "claim_curves",
    "claim_pairs",
    "claim_sublayers",
    "cumulative_products",
    "depth_thirds",
    "effective_rank",
    "exponent_starts",
    "frozen_context",
    "jacobians",
    "jpca",
    "jpca_evidence",
    "jpca_projection",
    "jpca_resampled",
    "jpca_by_reference",
    "jpca_planes",
    "jpca_runs",
    "JPCARun",
    "jpca_table",
    "jpca_shuffled",
    "jvp_steps",
    "known_answers",
    "local_dynamics",
    "lower_starts",
    "lyapunov",
    "matrix_steps",
    "product_measures",
    "picked_eigenvalues",
    "predicted_recovery",
    "recovery_table",
    "reference_runs",
    "relative_exponents",
    "run_evidence",
    "run_workers",
    "runs_table",
    "spectra",
    "sublayer_map",
    "text_token_ids",
    "thirds_table",
    "update_spectra",
    "verdict_table",
    "verdict_tables",
]
