"""Every loss as a function, with torch.nn.functional's names, signatures and numerics.

Each function runs losskit's guardrails (:mod:`losskit.checks`) and then computes the loss. Where
torch's own kernel already computes exactly the torch semantics at full speed (the pointwise
losses, BCE, NLL, KL, cross-entropy with class probabilities), losskit calls it: re-deriving the
same arithmetic could only lose accuracy or speed. Cross-entropy with class indices goes through
:mod:`losskit.kernels` (fused, never stores the softmax). The functions live in
:mod:`losskit.losses`, one file per family; this module re-exports them.

Deliberate differences from torch (docs/torch-semantics.md): shapes that would broadcast in a
regression loss raise instead of warning; NaN/Inf inputs raise (value checks); a mean over nothing
(every target ignored) is 0 with zero gradient and a :class:`~losskit.LossWarning`, not NaN;
out-of-range class indices raise a :class:`~losskit.checks.LossIndexError` naming the value.
"""

from losskit import registry
from losskit.losses import *  # noqa: F403

__all__ = sorted(record.name for record in registry.records())
