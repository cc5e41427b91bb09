"""One function per figure panel, each returning a matplotlib figure (arrays in, figure out).

- :mod:`.activity`  Figure 1 B–H (means, correlations, cosine, velocity, mutual information)
- :mod:`.portraits` Figure 2 A–C (phase portraits, rotation counts against the shuffle null)
- :mod:`.reduced`   Figure 3 B–D and Figure 4 A–C (autoencoder and PCA trajectories)
- :mod:`.perturbation` Figure 4 D (teleport quivers, recovery) and the noise / swap experiments
- :mod:`.style`     shared colours (within-layer vs cross-layer transitions) and helpers
"""
