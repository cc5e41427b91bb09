"""Dimensionality reduction of the residual stream: :mod:`.pca` (Figure 4 A–C) and :mod:`.cae`, the
compressing autoencoder (Figure 3; its network in :mod:`.autoencoder`). Both treat every sublayer vector as one sample;
explained variance per sublayer has one definition for both (:func:`explained_variance_from_reconstruction`).

``from transformer_dynamics import reduce; reduce.PCA(...)`` and every other public name work from here.
"""

from ._common import CENTERS, explained_variance_from_reconstruction
from .autoencoder import CompressingAutoencoder, Standardizer, geometric_widths
from .cae import (CAEResult, bottleneck_trajectories, explained_variance_per_sublayer_cae, fit_cae, reconstruct,
                  split_by_sample)
from .pca import (PCA, components_for_variance, cumulative_explained_variance,
                  explained_variance_curve_per_sublayer, explained_variance_per_sublayer, pca_trajectories,
                  sublayer_explained_variance_ratio)

__all__ = [
    "PCA",
    "pca_trajectories",
    "cumulative_explained_variance",
    "explained_variance_curve_per_sublayer",
    "explained_variance_per_sublayer",
    "components_for_variance",
    "sublayer_explained_variance_ratio",
    "explained_variance_from_reconstruction",
    "CENTERS",
    "Standardizer",
    "geometric_widths",
    "CompressingAutoencoder",
    "CAEResult",
    "split_by_sample",
    "fit_cae",
    "bottleneck_trajectories",
    "reconstruct",
    "explained_variance_per_sublayer_cae",
]
