"""Perturbing the residual stream (paper section 2.8, Figure 4 D) and two perturbations the paper leaves to future
work (section 4): noise injection and activation swapping.

Every perturbation is written at the **input of decoder layer** ``l`` (the residual stream entering the layer:
sublayer ``2l``, the paper's "input to the attention layer") at each text's last real token; the residual stream is
then read at every later point (:mod:`transformer_dynamics.residual`'s ``2L + 1`` points: the sublayers and the
decoder stack's output).

=====================  ==============================================================================
module                 what
=====================  ==============================================================================
:mod:`.layers`         which layers (:func:`paper_layers`, :func:`depth_names`) and which points after them
                       (:func:`equal_window`)
:mod:`.rerun`          the edited runs: :func:`run_with_edit` (the full rerun, the reference),
                       :func:`prefix_cache` and :func:`extend` (one token from the clean run's keys and values)
:mod:`.teleportation`  the paper's teleport: :func:`teleport`, :func:`teleport_sweep`, :func:`teleport_runs`,
                       the PCA plane and its grid
:mod:`.sweeps`         noise injection and activation swap: :func:`noise_sweep`, :func:`swap_sweep`
=====================  ==============================================================================

Functions that take a model and its tokenizer accept the model as loaded or its
:class:`~transformer_dynamics.residual.ResidualModel` (resolved once: ``residual.of(model, tokenizer)``); the runs
of :mod:`.rerun` take the ``ResidualModel``. Layers are mapped from the paper's Llama 3.1 8B
(:data:`PAPER_N_LAYERS` layers; perturbed at :data:`PAPER_LAYERS`) to another depth by :func:`paper_layers`.
``from transformer_dynamics import perturb; perturb.teleport(...)``: every public name is reached from here.
"""

from ..paper import DEPTH_NAMES
from ..paper import N_LAYERS as PAPER_N_LAYERS
from ..paper import TELEPORT_LAYERS as PAPER_LAYERS
from .layers import check_layer, depth_names, equal_window, following, paper_layers
from .rerun import Edit, PrefixCache, check_ids, extend, prefix_cache, run_with_edit
from .sweeps import PerturbationResult, inject_noise, noise_sweep, swap, swap_sweep
from .teleportation import (CURVES, DEFAULT_PROMPT, TeleportPlane, TeleportResult, TeleportSweep, controls_spread,
                            grid_range, make_grid, plane_and_grid, project, prompt_counts, teleport, teleport_runs,
                            teleport_sweep)

__all__ = ["CURVES", "DEFAULT_PROMPT", "DEPTH_NAMES", "PAPER_LAYERS", "PAPER_N_LAYERS", "Edit", "PerturbationResult",
           "PrefixCache", "TeleportResult", "TeleportSweep", "check_ids", "check_layer", "controls_spread",
           "depth_names", "equal_window", "extend", "following", "grid_range", "inject_noise", "make_grid",
           "noise_sweep", "paper_layers", "TeleportPlane", "plane_and_grid", "prefix_cache", "project", "prompt_counts",
           "run_with_edit", "swap", "swap_sweep", "teleport", "teleport_runs", "teleport_sweep"]
