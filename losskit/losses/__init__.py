"""The losses, one file per family; each file holds its functions, Modules and registry records.

=======================  ====================================================================
family                   losses
=======================  ====================================================================
regression               MSE, L1, Huber, smooth L1
binary                   BCE on probabilities, BCE with logits
classification           cross-entropy, NLL, focal
divergence               KL divergence
ranking                  margin ranking, hinge and cosine embedding, triplet margin
likelihood               Poisson NLL, Gaussian NLL
segmentation             soft Dice
sequence                 CTC
linear_cross_entropy     cross-entropy of a linear head without the logits
margin                   soft margin, multi-label soft margin, multi-label and multi-class hinge
contrastive              InfoNCE / NT-Xent, CLIP, supervised contrastive (chunked, multi-rank)
=======================  ====================================================================

The public paths are :mod:`losskit.functional` (functions) and :mod:`losskit` (Modules); both
re-export what the family files list in their ``__all__``.
"""

from losskit.losses.binary import *  # noqa: F403
from losskit.losses.classification import *  # noqa: F403
from losskit.losses.contrastive import *  # noqa: F403
from losskit.losses.divergence import *  # noqa: F403
from losskit.losses.likelihood import *  # noqa: F403
from losskit.losses.linear_cross_entropy import *  # noqa: F403
from losskit.losses.margin import *  # noqa: F403
from losskit.losses.ranking import *  # noqa: F403
from losskit.losses.regression import *  # noqa: F403
from losskit.losses.segmentation import *  # noqa: F403
from losskit.losses.sequence import *  # noqa: F403
