"""One module per analysis room, with the same name; one function per figure panel (arrays in, figure out).

- :mod:`.metrics`  Figure 1 B–H (means, correlations, cosine, velocity, mutual information)
- :mod:`.phase`    Figure 2 A–C (phase portraits, rotation counts against the shuffle null)
- :mod:`.reduce`   Figure 3 B–D and Figure 4 A–C (autoencoder and PCA trajectories)
- :mod:`.perturb`  Figure 4 D (teleport quivers, recovery) and the noise / swap experiments
- :mod:`.dynamics` chapter 7 (sublayer Jacobians' measures over depth, exponents, jPCA) and chapter 9's Benettin runs
- :mod:`.attractors` chapter 11 (basins, spectra and next-token effects of perturbations)
- :mod:`.robustness` chapters 6 and 8 (the curves of several models on relative depth, precision, first transitions)
- :mod:`.verdicts` chapters 6 and 8 (the claims' values with their intervals, against N, verdicts under each choice)
- :mod:`.calibration` chapter 10 (false-decision rates on the nulls and power on planted effects, per claim)
- :mod:`.overview` chapter 1's first look at a capture
- :mod:`.style`    colours (within-layer vs cross-layer transitions), ticks, grids and the book's seaborn theme
"""
