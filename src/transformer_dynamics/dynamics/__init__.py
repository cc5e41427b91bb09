"""The residual stream's local dynamics: per-sublayer Jacobians at the last token, their spectral geometry,
finite-time Lyapunov exponents, and jPCA (beyond the paper; the questions of the authors' sequel,
arXiv 2605.14258). Chapter 7 calls :func:`local_dynamics`.

Sublayer ``s`` of the residual stream (RS) is mapped to ``s + 1`` by one block of a decoder layer (even
``s = 2l``: layer ``l``'s attention block, odd: its MLP block). At a text's last token, with the keys and
values of the earlier positions held at their values for that text (by causality they do not depend on the
last token's RS), the map is an exact function of the last token's RS alone, and its Jacobian
``J_s = d h_{s+1} / d h_s: (D, D)`` is the exact last-token Jacobian with the context fixed.

=====================  ======================================================================================
module                 what
=====================  ======================================================================================
:mod:`.maps`           :func:`frozen_context` (one forward per batch: linearisation points, the prefix's
                       keys/values), :func:`sublayer_map` ``f_s: (B, D) -> (B, D)``, :func:`check_maps`; the
                       inputs :func:`text_token_ids`, :func:`random_init_model`
:mod:`.derivatives`    :func:`jacobians` ``J: (B, n, D, D)``; :func:`matrix_steps`, :func:`jvp_steps` (linear
                       steps on ``(B, k, D)`` vectors, the latter without a full matrix)
:mod:`.spectral`       :func:`spectra` of ``(..., D, D)`` matrices (rotation dominance, Henrici departure,
                       antisymmetric share, effective rank), :func:`cumulative_products`
:mod:`.exponents`      :func:`lyapunov` (Benettin: top-k finite-time exponents from every start),
                       :func:`relative_exponents`
:mod:`.rotational`     :func:`jpca` (Churchland et al. 2012) on trajectories over sublayers, its projection and
                       its sublayer-shuffled control
:mod:`.sequel`         the sequel's claims (:data:`SEQUEL_CLAIMS`) as depth contrasts with bootstrap intervals
                       over texts, trained-minus-random-init differences, the bottleneck, the lower layers'
                       exponent
:mod:`.local`          :func:`local_dynamics`: all of the above for a list of texts, streamed
:mod:`.known`          every estimator here (and chapter 3's rotation count) on systems with a known answer:
                       the Lorenz flow, the Henon map, rotations, non-normal matrices (:func:`known_answers`;
                       the book's appendix)
=====================  ======================================================================================

``from transformer_dynamics import dynamics as dy; dy.jacobians(...)`` and every other public name work from
here. Nothing here imports :mod:`transformer_dynamics.claims` (the registry imports these statistics).
"""

from .derivatives import jacobians, jvp_steps, matrix_steps
from .exponents import lyapunov, relative_exponents
from .known import KnownAnswer, known_answers
from .local import local_dynamics
from .maps import (CONTEXTS, Context, _eager, check_maps, frozen_context, random_init_model,  # noqa: F401
                   sublayer_map, text_token_ids)
from .rotational import JPCAResult, jpca, jpca_projection, jpca_shuffled
from .sequel import (SEQUEL_CLAIMS, SequelClaim, bottleneck_fraction, bottleneck_statistic, depth_contrast,
                     depth_thirds, learned_difference, lower_layers_exponent, sequel_statistic)
from .spectral import cumulative_products, effective_rank, product_measures, spectra

# ``_eager`` is private to .maps; benchmarks/bench_dynamics.py reaches it as ``dy._eager``
__all__ = [
    "CONTEXTS",
    "SEQUEL_CLAIMS",
    "Context",
    "SequelClaim",
    "bottleneck_fraction",
    "JPCAResult",
    "KnownAnswer",
    "check_maps",
    "cumulative_products",
    "depth_contrast",
    "depth_thirds",
    "effective_rank",
    "frozen_context",
    "jacobians",
    "jpca",
    "jpca_projection",
    "jpca_shuffled",
    "jvp_steps",
    "known_answers",
    "learned_difference",
    "local_dynamics",
    "lyapunov",
    "matrix_steps",
    "product_measures",
    "random_init_model",
    "relative_exponents",
    "spectra",
    "sublayer_map",
    "sequel_statistic",
    "text_token_ids",
    "bottleneck_statistic",
    "lower_layers_exponent",
]
