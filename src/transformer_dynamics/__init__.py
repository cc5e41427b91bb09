"""transformer_dynamics: the residual stream of a transformer as a dynamical system.

An executable reproduction of Fernando & Guitchounts (2025), *Transformer Dynamics: A neuroscientific
approach to interpretability of large language models* (arXiv 2502.12131).

Arrays are ``(n_samples, n_sublayers, d_model)`` everywhere: sublayer ``2l`` is the residual stream
entering decoder layer ``l``'s pre-attention norm (TransformerLens's ``hook_resid_pre``), sublayer
``2l + 1`` the residual stream entering its pre-MLP norm (``hook_resid_mid``).
"""

__version__ = "0.1.0"
