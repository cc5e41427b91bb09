"""Attractors measured (chapter 11): do perturbations of the residual stream shrink back towards the clean run,
how far does that hold, where does the linearisation stop predicting it, and does it matter for the next token?

Every perturbation is written at the input of one of the paper's layers (point ``p = 2l``) at the last token of a
prompt and followed over a fixed window of ``W`` points (:func:`transformer_dynamics.perturb.equal_window`: the
same for every layer, one decoder layer with the paper's layers). The runs reuse the clean run's keys and values
(:func:`~transformer_dynamics.perturb.prefix_cache`, :func:`~transformer_dynamics.perturb.extend`): one token per
perturbation, from the edited layer on.

**Sizes and distances are relative to the stream's norm**, as chapter 5's noise and chapter 7's exponents
("relative to the stream's growth"): a perturbation of size ``s`` moves the prompt's vector ``x_p`` by
``s * ||x_p|| * u`` (``u`` a unit direction); the distance of a perturbed run to its clean run at point ``q`` is
``rho_q = ||x~_q - x_q|| / ||x_q||``. Sizes run log-spaced from 0.01 to above 1 (:data:`SIZE_RANGE`), beyond the
texts' own spread (which is below the norm); :func:`perturbation_sizes` always includes the size the claims read,
:data:`~transformer_dynamics.claims.ATTRACTOR_SIZE`.

Directions (:data:`KINDS`): ``"plane"``, a random direction in the plane of the stream's first two principal
components (the teleport's kind of move, chapter 5); ``"random"``, a uniformly random direction of the whole
space (norm-matched: every kind moves by the same ``s * ||x_p||``); ``"swap"``, towards another prompt's vector
at the same point (at ``s = ||x_j - x_p|| / ||x_p||`` the perturbation *is* the activation swap).

Per perturbation (:class:`AttractorSweep`): the **recovery ratio** ``rho_{p+W} / rho_p`` (below 1: the run is
pulled back, relative to the stream) and its raw version ``||x~ - x||`` after over at; the **inward-flow
fraction**, the share of ratios below 1; **basin stability**, the share whose ``rho_{p+W}`` is within
:data:`~transformer_dynamics.claims.BASIN_TOLERANCE` (finite-time basin stability, Menck et al. 2013, with the
clean run as the attractor); the **linearisation's error** ``||D(s) - s ||x_p|| J u|| / ||s ||x_p|| J u||``, ``D(s)``
the measured displacement at the window's end and ``J u`` the follow-up map's Jacobian-vector product at the
clean point by central differences through the same one-token extension (step :data:`FD_STEP`), and the
**validity radius**, the size at which that error first exceeds :data:`LINEAR_TOLERANCE` (log-log interpolated); the
**next-token KL** ``KL(clean || perturbed)`` at the last token of perturbations run to the output, of deleting
the layer and of swapping it with its neighbour (both at the last token only, like every edit here: the earlier
tokens run the intact model). :func:`window_spectra`: the singular values of the window map's Jacobian and of
its update (``J - I``), scaled by the stream's norm (``||x_p|| / ||x_{p+W}||``), on a few texts
(:mod:`transformer_dynamics.dynamics`' Jacobians).

:func:`attractor_sweep` measures one model; :func:`attractor_runs` the trained model and its random
initialisations (:mod:`transformer_dynamics.random_init`), each in its own PCA plane. :meth:`AttractorSweep.curves`
gives the per-prompt curves the claims of source ``"attractors"`` read (:data:`CURVES`).
"""

from .probes import (CURVES, FD_STEP, INTERVENTIONS, KINDS, LINEAR_TOLERANCE, SIZE_RANGE, intervention_outputs,
                     kl_divergence, kl_grid, next_token_kl, next_token_logprobs, perturbation_sizes, plane_basis,
                     swapped_layers, unit_directions, validity_radius, window_spectra)
from .summary import SUMMARY_CURVES, basin_reach, chapter_ledger, layer_summary, ledger_entry, spectra_summary
from .sweep import AttractorSweep, attractor_runs, attractor_sweep, disjoint_halves

__all__ = ["KINDS", "INTERVENTIONS", "CURVES", "FD_STEP", "LINEAR_TOLERANCE", "SIZE_RANGE", "AttractorSweep",
           "perturbation_sizes", "kl_grid", "unit_directions", "plane_basis", "next_token_logprobs", "kl_divergence",
           "next_token_kl", "swapped_layers", "intervention_outputs", "validity_radius", "window_spectra",
           "attractor_sweep", "attractor_runs", "disjoint_halves", "chapter_ledger", "ledger_entry", "SUMMARY_CURVES",
           "basin_reach", "spectra_summary", "layer_summary"]
