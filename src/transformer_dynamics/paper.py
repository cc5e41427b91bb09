"""The paper's own facts: what it measured, on what, and the numbers it reports (Fernando & Guitchounts 2025,
"Transformer Dynamics", arXiv 2502.12131). Chapters and modules read them from here and never type them again;
each comes with where the paper states it.

The paper measures one model once: Llama 3.1 8B (32 layers, so 64 sublayers: the residual stream before each
layer's attention and before its MLP, of 4096 units), at the last token of N = 1000 WikiText-2 rows of 100 to
500 characters. Another model's layers are compared with its layers by depth fraction
(:func:`transformer_dynamics.perturb.paper_layers`).
"""

__all__ = ["ARXIV", "MODEL", "HUB_ID", "N_LAYERS", "N_SUBLAYERS", "D_MODEL", "N_TEXTS", "TEXT_CHARS",
           "ROTATION_MEAN", "ROTATION_NULL_MEAN", "N_SHUFFLES", "TELEPORT_LAYERS", "TELEPORT_FOLLOWING",
           "DEPTH_NAMES"]

ARXIV = "2502.12131"
#: The model it measures (section 2.1) and its Hugging Face id.
MODEL = "Llama 3.1 8B"
HUB_ID = "meta-llama/Llama-3.1-8B"
#: That model's depth and width: 32 layers, 64 sublayers (Fig 1A: "64 x 4096 'layers' by 'units'").
N_LAYERS = 32
N_SUBLAYERS = 2 * N_LAYERS
D_MODEL = 4096
#: Texts behind every statistic (Fig 1B: "N = 1000 samples") and their length filter in characters (section 2.1:
#: l_min = 100, l_max = 500).
N_TEXTS = 1000
TEXT_CHARS = (100, 500)
#: Fig 2B: "the mean number of rotations over the layers is 10.74 for the RS units and ~ 0 for the shuffle
#: controls", each unit's layer order "shuffled 1000 times".
ROTATION_MEAN = 10.74
ROTATION_NULL_MEAN = 0.0
N_SHUFFLES = 1000
#: Fig 4D: the layers whose residual stream is teleported, and the sublayers followed after each teleport.
TELEPORT_LAYERS = (0, 7, 15, 23, 31)
TELEPORT_FOLLOWING = 12
#: Names of k perturbed layers by depth position (k = 5: the paper's five teleport layers), so that the columns
#: of models of different depth line up.
DEPTH_NAMES = {1: ("first",), 2: ("first", "last"), 3: ("first", "middle", "last"),
               4: ("first", "early", "late", "last"), 5: ("first", "early", "middle", "late", "last")}
